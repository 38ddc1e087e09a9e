"""Real servers for replay tests: production nginx captured by tcpdump on loopback, a shadow
server (helpers/shadow.py) as its own process, and the requests sent to production."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import shadow as shadow_module
from helpers.liveenv import free_port, need_live, stop_process, tcpdump, web_server

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the service imports this tree's code, not an installed one

# (method, path, headers, body): what is sent to production, cycled.
MIX: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/1k.bin", {}, b""),
    ("GET", "/10k.bin", {}, b""),
    ("HEAD", "/100k.bin", {}, b""),
    ("GET", "/100k.bin", {}, b""),
    ("POST", "/1k.bin", {"Content-Type": "text/plain"}, b"p" * 300),
    ("PUT", "/1k.bin", {}, b"u" * 200),
    ("GET", "/1k.bin", {"Authorization": "Basic dTpw"}, b""),
    ("GET", "/10k.bin", {"Cookie": "session=1"}, b""),
]


def send(port: int, plan: list[tuple[str, str, dict[str, str], bytes]], rate: float = 500.0) -> list[int]:
    """The plan over one keep-alive connection at `rate`; the statuses production gave."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    t0 = time.monotonic()
    try:
        for i, (method, path, headers, body) in enumerate(plan):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            if resp.will_close:
                conn.close()
    finally:
        conn.close()
    return statuses


Plan = list[tuple[str, str, dict[str, str], bytes]]


def plan_of(n: int, mix: Plan = MIX) -> Plan:
    return [(m, f"{p}?i={i}", h, b) for i in range(n) for m, p, h, b in [mix[i % len(mix)]]]


def settled(cap: Path, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until tcpdump has written all it received: the file has stopped growing for `quiet` s."""
    size, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = cap.stat().st_size if cap.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


@contextlib.contextmanager
def captured(work: Path, plan: list[tuple[str, str, dict[str, str], bytes]], rate: float = 500.0) -> Iterator[Path]:
    """Production nginx, tcpdump on its port; the plan sent; yields the capture and nginx's www."""
    need_live()
    with web_server(work / "prod") as server:
        cap = work / "prod.pcap"
        with tcpdump(cap, server.port, err_path=work / "tcpdump.err"):
            statuses = send(server.port, plan, rate)
            settled(cap)
        assert len(statuses) == len(plan)
        yield cap


@contextlib.contextmanager
def shadow(work: Path, routes: dict[str, Any] | None = None, port: int | None = None,
           name: str = "shadow") -> Iterator[tuple[int, Path]]:
    port = port or free_port()
    log = work / f"{name}.log"
    cmd = [sys.executable, shadow_module.__file__, str(port), str(log), json.dumps(routes or {}),
           str(work / "prod" / "www")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == str(port).encode()
        yield port, log
    finally:
        stop_process(proc)




def arrived(log: Path) -> list[tuple[str, str, str, int]]:
    """The shadow's log: (method, target, X-Request-ID, body length) per request, in arrival order."""
    if not log.exists():
        return []
    return [(m, t, rid, int(n)) for m, t, rid, n in (line.split() for line in log.read_text().splitlines())]
