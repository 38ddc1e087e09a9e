"""The syslog output against a real rsyslogd the test starts with its own configuration in a tmp dir
(imuxsock on a tmp socket, imudp and imtcp on free loopback ports, every message written to a tmp
file by a template that keeps rsyslog's parse of each RFC 5424 field). rsyslog must write every
record, with the facility, severity, hostname, app-name, procid, msgid, structured data and message
we sent; over TCP, rsyslog stopped and started again loses nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.env import need_tool
from helpers.outputservers import Rsyslog

from watcher.config.model import SyslogOutputConfig
from watcher.sinks import open_sink
from watcher.sinks.base import Backoff, Record
from watcher.sinks.ecs import timestamp
from watcher.sinks.jsontext import encode
from watcher.sinks.syslog import SyslogSink, structured_data

HOSTNAME = "web-1"


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    need_tool("rsyslogd")
    r = Rsyslog(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def record(i: int) -> Record:
    return {"ts": 1700000000.0 + i / 1000, "uid": f"C{i}", "trans_depth": 1, "src_ip": "192.0.2.10",
            "src_port": 40000 + i % 20000, "dst_ip": "192.0.2.80", "dst_port": 80, "method": "POST",
            "host": "shop.test", "uri": f'/cart/{i}?note="a]b"\\x5c', "status_code": (200, 302, 404, 503)[i % 4],
            "duration_ms": 1.5, "flags": [], "anomalies": [], "event_id": f"ev{i:07d}", "tags": ["shop"]}


def expected(r: Record, facility: str = "local3") -> str:
    alert = "level" in r
    return "|".join((facility, "warning" if alert else "info", timestamp(r["ts"]),
                     HOSTNAME, "pcapwatch", str(os.getpid()), "alert" if alert else "http", structured_data(r),
                     encode(r)))


def sink(address: str) -> SyslogSink:
    s = open_sink(SyslogOutputConfig("syslog", "syslog", address, facility="local3", hostname=HOSTNAME))
    assert isinstance(s, SyslogSink)
    s.backoff = Backoff(0.02, 0.2)
    return s


@pytest.mark.parametrize(("transport", "n"), [("unix", 3000), ("udp", 2000), ("tcp", 5000)])
def test_rsyslog_writes_every_record(rsyslog: Rsyslog, transport: str, n: int) -> None:
    address = {"unix": f"unix:{rsyslog.sock}", "udp": f"udp://127.0.0.1:{rsyslog.udp}",
               "tcp": f"tcp://127.0.0.1:{rsyslog.tcp}"}[transport]
    s = sink(address)
    try:
        recs = [record(i) for i in range(n)]
        alert = {"level": "warning", "message": "checkout slow", "rule": "slow", "ts": 1700000100.25}
        for r in recs:
            s.submit(r)
        s.submit(alert)
        assert s.flush(30)
        lines = rsyslog.wait_lines(n + 1)
        # Every record, once; over UDP and unix datagrams rsyslog's threads may interleave, so as a set.
        want = [expected(r) for r in [*recs, alert]]
        assert sorted(lines) == sorted(want)
        if transport == "tcp":
            assert lines == want  # one stream: in order
        assert s.stats() == {"submitted": n + 1, "written": n + 1, "dropped": 0, "retries": 0, "errors": 0,
                             "reconnects": 0, "buffered": 0}
    finally:
        s.close(5)


def test_rsyslog_restart_over_tcp_loses_nothing(rsyslog: Rsyslog) -> None:
    s = sink(f"tcp://127.0.0.1:{rsyslog.tcp}")
    try:
        for i in range(500):
            s.submit(record(i))
        assert s.flush(30)
        assert len(rsyslog.wait_lines(500)) == 500
        rsyslog.stop()
        for i in range(500, 1000):
            s.submit(record(i))
        end = time.monotonic() + 10
        while s.stats()["errors"] < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert s.stats()["buffered"] > 0
        rsyslog.start()
        assert s.flush(30)
        lines = rsyslog.wait_lines(1000)
        assert lines == [expected(record(i)) for i in range(1000)]
        st = s.stats()
        assert (st["written"], st["dropped"], st["buffered"], st["reconnects"]) == (1000, 0, 0, 1)
        assert st["errors"] >= 2 and st["retries"] >= 1
    finally:
        s.close(5)


def test_rsyslog_restart_over_udp_counts_the_lost_records(rsyslog: Rsyslog) -> None:
    s = sink(f"udp://127.0.0.1:{rsyslog.udp}")
    try:
        for i in range(100):
            s.submit(record(i))
        assert s.flush(30)
        assert len(rsyslog.wait_lines(100)) == 100
        rsyslog.stop()
        for i in range(100, 200):  # UDP: nothing to hold them for; each refusal reports one lost
            s.submit(record(i))
        assert s.flush(30)
        rsyslog.start()
        for i in range(200, 300):
            s.submit(record(i))
        assert s.flush(30)
        lines = rsyslog.wait_lines(200)
        assert sorted(lines) == sorted(expected(record(i)) for i in [*range(100), *range(200, 300)])
        # The 100 sent while it was down are known lost (the last one's refusal came with the next send).
        assert s.stats() == {"submitted": 300, "written": 200, "dropped": 100, "retries": 0, "errors": 100,
                             "reconnects": 0, "buffered": 0}
    finally:
        s.close(5)


@pytest.mark.parametrize("transport", ["unix", "udp", "tcp"])
def test_rsyslog_writes_utf8_text_and_the_bom(rsyslog: Rsyslog, transport: str) -> None:
    """A record with UTF-8 text from the wire: rsyslog parses the message (RFC 5424 6.4: a MSG in
    UTF-8 starts with the BOM) and writes the text's UTF-8 bytes in the structured data and the
    message, so a grep of its file finds Köln; an ASCII record's message has no BOM, as before."""
    address = {"unix": f"unix:{rsyslog.sock}", "udp": f"udp://127.0.0.1:{rsyslog.udp}",
               "tcp": f"tcp://127.0.0.1:{rsyslog.tcp}"}[transport]
    s = sink(address)
    try:
        text = {**record(1), "host": "k\u00f6ln.test", "uri": "/st\u00e4dte/K\u00f6ln?q=\u20ac&x=\\xff",
                "user_agent": "\U0001f600 \\xe2\\x80\\xae"}
        plain = record(2)
        s.submit(text)
        s.submit(plain)
        assert s.flush(30)
        assert len(rsyslog.wait_lines(2)) == 2
        data = rsyslog.out.read_bytes()
        want_text = (f"local3|info|{timestamp(text['ts'])}|{HOSTNAME}|pcapwatch|{os.getpid()}|http|"
                     f"{structured_data(text)}|\ufeff{encode(text)}\n").encode()
        want_plain = (expected(plain) + "\n").encode("ascii")
        assert sorted(data.splitlines(keepends=True)) == sorted([want_text, want_plain])
        assert b' host="k\xc3\xb6ln.test" uri="/st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac&x=\\\\xff" ' in data
        assert b'|\xef\xbb\xbf{"ts":' in data and data.count(b"\xef\xbb\xbf") == 1
        assert data.count(b"K\xc3\xb6ln") == 2  # structured data and message: what grep finds
        assert b'"user_agent":"\xf0\x9f\x98\x80 \\\\xe2\\\\x80\\\\xae"' in data  # the bidi override stays \xNN
        assert s.stats()["written"] == 2
    finally:
        s.close(5)
