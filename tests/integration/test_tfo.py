"""TCP Fast Open on a real capture: nginx listening with `fastopen`, curl `--tcp-fastopen`, tcpdump
on loopback. The first connection fetches the cookie; the next ones carry their request on the SYN
(data placed one past the SYN's sequence number: `GET`, not `ET`), and a request too big for the
SYN continues after it without a gap. Linux does TFO on loopback once `net.ipv4.tcp_fastopen` is 3
(client and server); the test sets it and puts the old value back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import pcapgen as g
from helpers.env import need_tool, read_records
from helpers.liveenv import (
    NGINX_CONF,
    START_SECONDS,
    free_port,
    need_live,
    stop_process,
    tcpdump,
    wait_until,
)

from analyzers.tcp.frames import SYN

SYSCTL = Path("/proc/sys/net/ipv4/tcp_fastopen")
BODY = 200_000  # a POST body: more than a SYN can carry, so the request continues after it


@contextlib.contextmanager
def fast_open() -> Iterator[None]:
    old = SYSCTL.read_text()
    SYSCTL.write_text("3\n")
    try:
        yield
    finally:
        SYSCTL.write_text(old)


@contextlib.contextmanager
def nginx_fastopen(work: Path) -> Iterator[int]:
    """nginx on 127.0.0.1:<port> with `listen ... fastopen=16`, serving one file."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    (work / "www").mkdir(parents=True)
    (work / "www" / "a.txt").write_bytes(b"a" * 1000)
    (work / "tmp").mkdir()
    port = free_port()
    conf = NGINX_CONF.format(user="user root;\n" if os.geteuid() == 0 else "", work=work, port=port)
    conf = conf.replace(f"listen 127.0.0.1:{port};", f"listen 127.0.0.1:{port} fastopen=16;\n"
                        "    location = /post {{ return 200 \"ok\\n\"; }}".replace("{{", "{").replace("}}", "}"))
    assert "fastopen=16" in conf
    (work / "nginx.conf").write_text(conf)
    with open(work / "nginx.stderr", "wb") as err:
        proc = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf")], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_until(lambda: (work / "nginx.pid").exists() or proc.poll() is not None, START_SECONDS)
        assert proc.poll() is None, (work / "error.log").read_text(errors="replace")
        yield port
    finally:
        stop_process(proc, signal.SIGQUIT)


def curl(port: int, *args: str, path: str = "/a.txt?tfo") -> str:
    out = subprocess.run(["curl", "-s", "--tcp-fastopen", "-o", "/dev/null", "-w", "%{http_code}", *args,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=20, check=True)
    return out.stdout.decode()


def test_tcp_fast_open_capture(tmp_path: Path) -> None:
    need_live()
    need_tool("nginx")
    need_tool("curl")
    cap = tmp_path / "tfo.pcap"
    body = tmp_path / "body"
    body.write_bytes(b"b" * BODY)
    with fast_open(), nginx_fastopen(tmp_path / "nginx") as port, \
            tcpdump(cap, port, err_path=tmp_path / "tcpdump.err"):
        time.sleep(1.0)  # on a loaded machine tcpdump says "listening" a moment before it captures
        statuses = [curl(port), curl(port), curl(port), curl(port, "--data-binary", f"@{body}", path="/post")]
        assert statuses == ["200"] * 4
        time.sleep(1.0)  # and a moment after, for the last packets to reach the file
    segments = g.read_segments(cap)
    syn_data = [s for s in segments if s.flags & SYN and s.payload]
    assert len(syn_data) >= 2, "no data on a SYN: the kernel did not do TCP Fast Open"
    assert all(s.payload.startswith((b"GET ", b"POST ")) for s in syn_data)
    # nginx answers the POST after its head (on the SYN), and curl may stop sending the body once
    # answered: what the record must count is what the client sent after its head.
    client_port = next(s.sport for s in syn_data if s.payload.startswith(b"POST "))
    sent = sum(len(s.payload) for s in segments if s.sport == client_port)
    head = next(s.payload for s in syn_data if s.sport == client_port)
    assert head.endswith(b"\r\n\r\n") and sent > len(head) + 60_000  # the SYN held the head, the body followed
    body_sent = sent - len(head)
    records, result, err = read_records(cap)
    assert err == ""
    assert [(r["method"], r["uri"], r["status_code"], r["request_body_len"], r["flags"], r["anomalies"])
            for r in records] == [("GET", "/a.txt?tfo", 200, 0, [], [])] * 3 + [
                ("POST", "/post", 200, body_sent, [] if body_sent == BODY else ["truncated"], [])]
    assert result.stats["tcp"]["gaps"] == 0
