"""`pcapwatch demo`: the whole product in a few seconds, on loopback.

It starts a small HTTP server on 127.0.0.1, tcpdump writing a small ring (-C 1 -W 4) into the
configured spool, and the real service (the same code as `pcapwatch run`) on the configured
state and outputs; then it sends requests of different kinds and stops the service cleanly once
they have all been recorded. Needs root (tcpdump) and tcpdump; nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from watcher.capture.access import TCPDUMP_DEFAULT_USER
from watcher.capture.tcpdump import CaptureSupervisor
from watcher.config.load import CaptureConfig, Config
from watcher.run.sdnotify import log
from watcher.run.service import Service

# How long to wait for the last records before stopping anyway.
SETTLE_SECONDS = 8.0
DEMO_FILE = "demo.pcap"


class DemoHandler(BaseHTTPRequestHandler):
    """A handful of responses that exercise the parser: lengths, chunked, no-body statuses."""

    protocol_version = "HTTP/1.1"
    server_version = "pcapwatch-demo"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(201, b'{"received": %d}' % len(body), "application/json")

    def _route(self, head: bool = False) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, b"<html><body>pcapwatch demo</body></html>\n", "text/html", head)
        elif path == "/big.bin":
            self._send(200, os.urandom(100_000), "application/octet-stream", head)
        elif path == "/api/stream":
            self._chunked([b'{"n": %d}\n' % i for i in range(5)])
        elif path == "/old":
            self.send_response(301)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/nocontent":
            self.send_response(204)
            self.end_headers()
        elif path == "/cached":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        else:
            self._send(404, b"not found\n", "text/plain", head)

    def _send(self, status: int, body: bytes, ctype: str, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _chunked(self, parts: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")


def traffic(port: int) -> int:
    """Requests of different kinds; returns how many transactions they make."""
    n = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # keep-alive: one connection
    for method, path, body in [("GET", "/", None), ("GET", "/big.bin", None), ("HEAD", "/big.bin", None),
                               ("GET", "/api/stream", None), ("POST", "/api/items", b'{"name": "demo"}'),
                               ("GET", "/old", None), ("GET", "/nocontent", None), ("GET", "/cached", None),
                               ("GET", "/missing?token=secret", None)]:
        conn.request(method, path, body=body, headers={"User-Agent": "pcapwatch-demo/1.0"})
        conn.getresponse().read()
        n += 1
    conn.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # three requests pipelined
        s.sendall(b"".join(b"GET /?pipelined=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i for i in range(3)))
        s.sendall(b"GET /?last HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
        n += 4
    curl = shutil.which("curl")
    if curl:
        subprocess.run([curl, "-s", "-o", os.devnull, f"http://127.0.0.1:{port}/?from=curl"], timeout=10, check=False)
        n += 1
    return n


def run_demo(config: Config, config_path: str | None) -> int:
    tcpdump = CaptureSupervisor.available()
    if tcpdump is None or os.geteuid() != 0:
        sys.stderr.write("pcapwatch: error: the demo captures loopback traffic with tcpdump, so it needs tcpdump "
                         "(apt-get install tcpdump) and root; `pcapwatch run` itself needs neither\n")
        return 2
    _make_spool(Path(config.spool.dir))
    # Its own corner of the configured spool and state directories, started afresh each time.
    spool = Path(config.spool.dir) / "demo"
    state = Path(config.state.dir) / "demo"
    for d in (spool, state):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    config = dataclasses.replace(config, spool=dataclasses.replace(config.spool, dir=spool),
                                 state=dataclasses.replace(config.state, dir=state))
    server = ThreadingHTTPServer(("127.0.0.1", 0), DemoHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name="demo-server", daemon=True).start()
    capture_cfg = dataclasses.replace(config.capture, file_mb=1, files=4, snaplen=0, bpf=f"tcp port {port}")
    command = _tcpdump_command(tcpdump, str(spool), capture_cfg)
    service = Service(config, config_path, CaptureSupervisor(command, log))
    log("info", f"demo: HTTP server on 127.0.0.1:{port}, tcpdump ring in {spool}, state in {state}; "
                "records follow on stdout")
    done = threading.Event()
    expected = [0]

    def drive() -> None:
        time.sleep(1.0)  # tcpdump is up and the service watching
        try:
            expected[0] = traffic(port)
        except OSError as e:
            log("error", f"demo traffic failed: {e}")
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline and service.counters.records < expected[0]:
            time.sleep(0.1)
        done.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=drive, name="demo-traffic", daemon=True).start()
    code = service.run()
    server.shutdown()
    got = service.counters.records
    log("info", f"demo: {got} of {expected[0]} transactions recorded. Next: point tcpdump at {spool.parent} "
                f"(tcpdump -i eth0 -w {spool.parent}/cap.pcap -C 100 -W 10 -U 'tcp port 80'; its user must be able "
                "to write there: README, 'The spool') and run `pcapwatch run`")
    return code if got >= expected[0] else 1


def _make_spool(directory: Path) -> None:
    """The configured spool, made as the README lays it out when it does not exist yet: owned by
    Debian's tcpdump user (who writes it after dropping root), group the service's, setgid, 2750;
    so the tcpdump command the demo suggests next works as it is."""
    if directory.exists():
        return
    directory.mkdir(parents=True)
    with contextlib.suppress(KeyError):
        os.chown(directory, pwd.getpwnam(TCPDUMP_DEFAULT_USER).pw_uid, os.getegid())
    directory.chmod(0o2750)


def _tcpdump_command(tcpdump: str, spool: str, cfg: CaptureConfig) -> list[str]:
    from watcher.capture.tcpdump import tcpdump_command

    cmd = tcpdump_command("lo", spool, cfg, None, tcpdump)
    cmd[cmd.index("-w") + 1] = os.path.join(spool, DEMO_FILE)
    return cmd
