"""`pcapwatch tail` as a user runs it, against the zmq output driven directly: it receives every record
of a run, in order, while the records are being published; `--json` prints each record's JSON as
published; plain lines are aligned and uncolored on a pipe, colored on a terminal (a pty);
`--filter` picks topics; Ctrl-C and SIGTERM end it with status 0 and nothing on stderr; an
address zmq refuses gets one line and status 2.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from watcher.sinks.base import Record, encode
from watcher.sinks.zmq_sink import ZmqSink, ZmqSinkConfig
from watcher.tailcmd import format_line

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
RUN = 2000  # records in a run
RATE = 2000.0  # records per second while publishing


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


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
    s = ZmqSink(ZmqSinkConfig("tap", "tcp://127.0.0.1:*")).start()
    try:
        wait_for(lambda: s.endpoint is not None)
        yield s
    finally:
        s.close(2)


class Tail:
    """`pcapwatch tail` in a subprocess; its stdout lines gathered by a thread."""

    def __init__(self, *args: str, tty: bool = False) -> None:
        env = {**os.environ, "TZ": "UTC"}
        env.pop("NO_COLOR", None)
        self.lines: list[str] = []
        self.master = -1
        stdout: Any = subprocess.PIPE
        if tty:
            self.master, slave = pty.openpty()
            stdout = slave
        self.proc = subprocess.Popen([*PCAPWATCH, "tail", *args], stdout=stdout, stderr=subprocess.PIPE,
                                     env=env, text=not tty)
        if tty:
            os.close(slave)
        self.reader = threading.Thread(target=self._read_pty if tty else self._read_pipe, daemon=True)
        self.reader.start()

    def _read_pipe(self) -> None:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        for line in out:
            self.lines.append(line.rstrip("\n"))

    def _read_pty(self) -> None:
        buf = b""
        while True:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if not r:
                if self.proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            buf += data
            *done, buf = buf.split(b"\r\n")  # the terminal turns \n into \r\n
            self.lines.extend(d.decode() for d in done)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.master >= 0:
            os.close(self.master)
        return code, err if isinstance(err, str) else err.decode()




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
        wait_for(lambda: tap.stats()["subscriptions"] == subscriptions)  # subscribed: nothing can be missed
        publish(tap, records)
        assert tap.flush(10)
        wait_for(lambda: len(t.lines) >= want)
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
        wait_for(lambda: tap.stats()["subscriptions"] == 1)
        publish(tap, records)
        wait_for(lambda: len(t.lines) >= 60)
    finally:
        code, err = t.stop(signal.SIGTERM)
    assert t.lines == [format_line(f"http.{_cls(r)}", r, color=True) for r in records]
    assert "\033[32m200\033[0m" in t.lines[0] and "\033[1;31m503\033[0m" in t.lines[4]
    assert (code, err) == (0, "")


def test_tail_refuses_a_bad_address() -> None:
    p = subprocess.run([*PCAPWATCH, "tail", "--connect", "nonsense"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("pcapwatch: error: cannot connect to nonsense: ")
    assert len(p.stderr.splitlines()) == 1


def _cls(r: Record) -> str:
    return "none" if r["status_code"] is None else f"{r['status_code'] // 100}xx"
