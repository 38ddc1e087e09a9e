"""`pcapwatch tail` as a user runs it, against the zmq output driven directly: it receives every record
of a run, in order, while the records are being published; `--json` prints each record's JSON as
published; plain lines are aligned and uncolored on a pipe, colored on a terminal (a pty);
`--filter` picks topics; Ctrl-C and SIGTERM end it with status 0 and nothing on stderr; an
address zmq refuses gets one line and status 2.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from helpers.liveenv import PCAPWATCH, wait_until
from helpers.outputservers import Tail

from watcher.config.model import ZmqOutputConfig
from watcher.sinks.base import Record
from watcher.sinks.jsontext import encode, utf8
from watcher.sinks.zmq_sink import ZmqSink
from watcher.sinks.zmq_tail import format_line

RUN = 2000  # records in a run
RATE = 2000.0  # records per second while publishing


def record(i: int) -> Record:
    status = (200, 200, 301, 404, 503, None)[i % 6]
    return {"ts": 1700000000.0 + i / 1000, "uid": f"C{i}", "trans_depth": 1 + i % 3, "src_ip": "192.0.2.10",
            "src_port": 40000 + i % 20000, "dst_ip": "192.0.2.80", "dst_port": 80, "method": ("GET", "POST")[i % 2],
            "host": "shop.test", "uri": f"/item/{i}", "status_code": status,
            "duration_ms": None if status is None else round(1 + i / 7, 3),
            "response_body_len": 0 if status is None else 100 * i,
            "flags": ["no_response"] if status is None else [], "anomalies": [], "event_id": f"ev{i:07d}"}


@pytest.fixture
def tap() -> Iterator[ZmqSink]:
    s = ZmqSink(ZmqOutputConfig("tap", "zmq", "tcp://127.0.0.1:*")).start()
    try:
        assert wait_until(lambda: s.endpoint is not None, 10.0)
        yield s
    finally:
        s.close(2)


def publish(tap: ZmqSink, records: list[Record]) -> None:
    """Submit at RATE records a second: the tail is reading while the run goes on."""
    t0 = time.monotonic()
    for i, r in enumerate(records):
        tap.submit(r)
        ahead = i / RATE - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)


def run_tail(tap: ZmqSink, records: list[Record], *args: str, want: int, subscriptions: int = 1,
             tty: bool = False) -> tuple[list[str], int, str]:
    assert tap.endpoint is not None
    t = Tail("--connect", tap.endpoint, *args, tty=tty)
    try:
        # subscribed: nothing can be missed
        assert wait_until(lambda: tap.stats()["subscriptions"] == subscriptions, 10.0)
        publish(tap, records)
        assert tap.flush(10)
        assert wait_until(lambda: len(t.lines) >= want, 10.0)
        time.sleep(0.2)  # and nothing more
    finally:
        code, err = t.stop()
    return t.lines, code, err


def test_tail_json_receives_every_record_in_order(tap: ZmqSink) -> None:
    records = [record(i) for i in range(RUN)]
    lines, code, err = run_tail(tap, records, "--json", want=RUN)
    assert lines == [encode(r) for r in records]
    assert (code, err) == (0, "")
    assert tap.stats()["written"] == RUN


def test_tail_lines_on_a_pipe_are_plain(tap: ZmqSink, utc: None) -> None:
    records = [record(i) for i in range(300)]
    lines, code, err = run_tail(tap, records, want=300)
    assert lines == [format_line(f"http.{_cls(r)}", r, color=False) for r in records]
    assert "\033" not in "".join(lines)
    assert (code, err) == (0, "")


def test_tail_filters_by_topic(tap: ZmqSink) -> None:
    records = [record(i) for i in range(600)]
    errors = [r for r in records if r["status_code"] in (404, 503)]
    lines, code, _ = run_tail(tap, records, "--json", "--filter", "http.4", "--filter", "http.5",
                              want=len(errors), subscriptions=2)
    assert lines == [encode(r) for r in errors]
    assert code == 0


def test_tail_on_a_terminal_is_colored_and_sigterm_ends_it(tap: ZmqSink, utc: None) -> None:
    records = [record(i) for i in range(60)]
    assert tap.endpoint is not None
    t = Tail("--connect", tap.endpoint, tty=True)
    try:
        assert wait_until(lambda: tap.stats()["subscriptions"] == 1, 10.0)
        publish(tap, records)
        assert wait_until(lambda: len(t.lines) >= 60, 10.0)
    finally:
        code, err = t.stop(signal.SIGTERM)
    assert t.lines == [format_line(f"http.{_cls(r)}", r, color=True) for r in records]
    assert "\033[32m200\033[0m" in t.lines[0] and "\033[1;31m503\033[0m" in t.lines[4]
    assert (code, err) == (0, "")


def test_tail_json_is_utf8_and_lines_follow_the_terminal_encoding(tap: ZmqSink, utc: None) -> None:
    """In a Latin-1 locale: `--json` prints the records as published, UTF-8 (JSON is UTF-8), so a grep
    finds Köln; the plain lines are for that terminal: what Latin-1 has (ö) in it, the rest (東京) as
    escapes, never a traceback."""
    r = {**record(0), "host": "k\u00f6ln.test", "uri": "/K\u00f6ln/\u6771\u4eac"}
    env = {**os.environ, "TZ": "UTC", "PYTHONIOENCODING": "latin-1"}
    cases = [(("--json",), utf8(encode(r)) + b"\n"),
             ((), (format_line("http.2xx", r, color=False) + "\n").encode("latin-1", "backslashreplace"))]
    assert b"K\xc3\xb6ln/\xe6\x9d\xb1\xe4\xba\xac" in cases[0][1]
    assert b"k\xf6ln.test/K\xf6ln/\\u6771\\u4eac" in cases[1][1]
    assert tap.endpoint is not None
    for args, want in cases:
        p = subprocess.Popen([*PCAPWATCH, "tail", "--connect", tap.endpoint, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
        assert p.stdout is not None and p.stderr is not None
        try:
            assert wait_until(lambda: tap.stats()["subscriptions"] == 1, 10.0)
            tap.submit(r)
            assert tap.flush(10)
            got = b""
            end = time.monotonic() + 10
            while not got.endswith(b"\n") and time.monotonic() < end:
                if select.select([p.stdout], [], [], 0.2)[0]:
                    got += os.read(p.stdout.fileno(), 65536)
        finally:
            p.send_signal(signal.SIGINT)
            code = p.wait(10)
        assert got == want
        assert (code, p.stderr.read()) == (0, b"")
        p.stdout.close()
        p.stderr.close()
        assert wait_until(lambda: tap.stats()["subscriptions"] == 0, 10.0)


def test_tail_refuses_a_bad_address() -> None:
    p = subprocess.run([*PCAPWATCH, "tail", "--connect", "nonsense"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("pcapwatch: error: cannot connect to nonsense: ")
    assert len(p.stderr.splitlines()) == 1


def _cls(r: Record) -> str:
    return "none" if r["status_code"] is None else f"{r['status_code'] // 100}xx"
