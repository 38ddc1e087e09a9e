#!/usr/bin/env python3
"""How much a replay rule costs `pcapwatch run`'s capture throughput, with a slow shadow.

Runs the service twice per round on the same capture (alternating, `--repeat` rounds): without
rules, and with a rule replaying every GET to a local shadow server that answers after `--delay`
seconds (so its queue fills and overflows, counted, as it would in production). Each run gets a
fresh spool and state directory; the capture is hard-linked into the spool; the run's time is
from then until the Prometheus output says every byte of it was read
(pcapwatch_capture_bytes_total). Prints MB/s of both, the ratio, and the replay counters.

Usage:
  bench_replay.py --capture FILE [--repeat 3] [--delay 0.05] [--rate 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PCAPWATCH = Path(sys.executable).parent / "pcapwatch"
TIMEOUT = 1800.0  # a run slower than half an hour is broken, not slow


def slow_shadow(delay: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(delay)
            body = b"shadow\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def one_run(capture: Path, target: str | None, rate: float) -> tuple[float, dict[str, float]]:
    size = capture.stat().st_size
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        base = Path(tmp)
        (base / "spool").mkdir()
        prom = free_port()
        rules = ""
        if target:
            rules = (f"replay: {{targets: ['{target}']}}\n"
                     f"rules:\n  - name: shadow\n    match: {{method: GET}}\n"
                     f"    actions: {{replay: {{target: '{target}', rate: {rate}}}}}\n")
        cfg = base / "pcapwatch.yaml"
        cfg.write_text(f"spool: {{dir: {base / 'spool'}, rescan_seconds: 0.2}}\n"
                       f"state: {{dir: {base / 'state'}}}\n"
                       f"outputs:\n  - {{name: records, type: jsonl, path: /dev/null}}\n"
                       f"  - {{name: prom, type: prometheus, listen: '127.0.0.1:{prom}'}}\n" + rules)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([str(PCAPWATCH), "run", "-c", str(cfg)], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(base / "err", "w"))  # noqa: SIM115
        try:
            deadline = time.monotonic() + 30
            while not scrape(prom):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the service did not start: {(base / 'err').read_text()}")
                time.sleep(0.1)
            t0 = time.monotonic()
            try:
                os.link(capture, base / "spool" / "cap.pcap")
            except OSError:
                shutil.copy(capture, base / "spool" / "cap.pcap")
            while True:
                m = scrape(prom)
                if m.get("pcapwatch_capture_bytes_total", 0) >= size:  # read to its end (it stays the
                    break                                               # current file: no newer one)
                if time.monotonic() - t0 > TIMEOUT or proc.poll() is not None:
                    raise SystemExit(f"the service did not finish: {(base / 'err').read_text()[-2000:]}")
                time.sleep(0.05)
            took = time.monotonic() - t0
            return took, {k: v for k, v in m.items() if k.startswith("pcapwatch_replay_")}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.05, help="the shadow's answer time, seconds")
    ap.add_argument("--rate", type=float, default=100.0, help="the replay rule's requests per second")
    args = ap.parse_args()
    size = args.capture.stat().st_size
    shadow = slow_shadow(args.delay)
    target = f"http://127.0.0.1:{shadow.server_address[1]}"
    without: list[float] = []
    with_: list[float] = []
    counters: dict[str, float] = {}
    for i in range(args.repeat):
        t, _ = one_run(args.capture, None, args.rate)
        without.append(t)
        t, counters = one_run(args.capture, target, args.rate)
        with_.append(t)
        print(f"round {i + 1}: without {size / without[-1] / 1e6:.1f} MB/s, with replay "
              f"{size / with_[-1] / 1e6:.1f} MB/s", flush=True)
    a, b = statistics.median(without), statistics.median(with_)
    print(f"capture {args.capture} ({size / 1e6:.0f} MB), shadow answering in {args.delay * 1000:.0f} ms, "
          f"replay rate {args.rate:g}/s")
    print(f"median: without {size / a / 1e6:.1f} MB/s ({a:.2f} s), with a replay rule {size / b / 1e6:.1f} MB/s "
          f"({b:.2f} s)")
    print(f"throughput ratio with/without: {a / b:.3f} (the issue wants >= 0.90)")
    for k, v in sorted(counters.items()):
        if not k.startswith("pcapwatch_replay_latency_ratio_bucket"):
            print(f"  {k} {v:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
