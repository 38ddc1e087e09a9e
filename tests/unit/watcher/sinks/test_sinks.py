"""watcher/sinks: the framework's buffer, worker, retry and counters (with a scripted output), and each
sink against real sockets and files on loopback: jsonl (file mode, reopen, ECS, a full disk), the
ECS mapping, RFC 5424 syslog (exact lines; unix datagram and stream, UDP, TCP octet counting, a
closed connection, an oversized datagram), the zmq publisher's topics and frames, and `tail`'s lines.

Counters are asserted exactly; the invariant submitted == written + dropped + buffered is checked
after every step and, in one test, continuously while the worker fails and retries.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.liveenv import wait_until

from analyzers import Strings
from watcher.config.model import JsonlOutputConfig, SyslogOutputConfig, ZmqOutputConfig
from watcher.sinks import open_sink
from watcher.sinks.base import Backoff, Record, SendError, Sink
from watcher.sinks.ecs import split_host, to_ecs, url_fields
from watcher.sinks.jsonl import JsonlSink
from watcher.sinks.jsontext import encode, utf8
from watcher.sinks.syslog import (
    BOM,
    SyslogSink,
    header_token,
    message,
    parse_address,
    sd_escape,
    structured_data,
)
from watcher.sinks.zmq_sink import Subscriber, ZmqSink, messages, status_class
from watcher.sinks.zmq_tail import format_line


def record(i: int, **kw: Any) -> Record:
    """A flat record as `run` writes it (documentation addresses, a reserved test domain)."""
    r: Record = {
        "ts": 1700000000.0 + i / 1000, "uid": f"C{i:05d}", "trans_depth": 1, "src_ip": "192.0.2.10",
        "src_port": 40000 + i, "dst_ip": "192.0.2.80", "dst_port": 80, "method": "GET", "host": "shop.test",
        "uri": f"/item/{i}?q=1", "version": "1.1", "user_agent": "curl/8.0", "referrer": None,
        "request_body_len": 0, "status_code": 200, "status_msg": "OK", "info_code": None,
        "response_body_len": 1234, "response_content_type": "text/html", "ttfb_ms": 1.25, "duration_ms": 2.5,
        "flags": [], "anomalies": [], "reason": None, "pcap_file": "cap.pcap", "event_id": f"ev{i:06d}",
    }
    r.update(kw)
    return r


def consistent(s: dict[str, int]) -> dict[str, int]:
    assert s["submitted"] == s["written"] + s["dropped"] + s["buffered"], s
    return s


class Logs(list[tuple[str, str]]):
    def __call__(self, level: str, message: str) -> None:
        self.append((level, message))


# -- the framework, with a scripted output -------------------------------------------------------------


class Scripted(Sink):
    """An output whose connects and sends follow a script: None succeeds, an exception is raised, a
    callable decides. `gate` holds every send until set (a stuck output)."""

    kind = "test output"

    def __init__(self, buffer: int = 100, batch: int = 10, sends: list[Any] | None = None,
                 connects: list[Any] | None = None, log: Logs | None = None) -> None:
        super().__init__("t", buffer, batch=batch, log=log if log is not None else Logs())
        self.backoff = Backoff(0.001, 0.004)
        self.sends = list(sends or [])
        self.connects = list(connects or [])
        self.out: list[Record] = []
        self.events: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def _connect(self) -> None:
        self.events.append("connect")
        step = self.connects.pop(0) if self.connects else None
        if isinstance(step, BaseException):
            raise step

    def _disconnect(self) -> None:
        self.events.append("disconnect")

    def _send(self, batch: list[Record]) -> int:
        self.gate.wait()
        step = self.sends.pop(0) if self.sends else None
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            n: int = step(self, batch)
            return n
        self.out.extend(batch)
        return len(batch)


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    low = Backoff(0.1, 1.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    high = Backoff(0.1, 1.0, rng=lambda: 1.0)
    assert [high.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    high.reset()
    assert high.next() == 0.1


def test_records_written_in_order_in_batches() -> None:
    s = Scripted(buffer=1000, batch=7).start()
    recs = [record(i) for i in range(100)]
    for r in recs:
        s.submit(r)
    assert s.flush(5)
    assert s.out == recs
    assert consistent(s.stats()) == {"submitted": 100, "written": 100, "dropped": 0, "retries": 0, "errors": 0,
                                     "reconnects": 0, "buffered": 0}
    s.close(1)
    assert s.events == ["connect", "disconnect"]


def test_submit_never_blocks_on_a_stuck_output_and_drops_past_the_buffer() -> None:
    s = Scripted(buffer=50, batch=10)
    s.gate.clear()
    s.start()
    t0 = time.monotonic()
    for i in range(10_000):
        s.submit(record(i))
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0  # about 10 µs a record; the stuck send is not waited for
    st = consistent(s.stats())
    # Held: the batch in the stuck send plus the queue, exactly the buffer; the rest dropped and counted.
    assert (st["buffered"], st["dropped"], st["written"]) == (50, 9_950, 0)
    s.gate.set()
    assert s.flush(5)
    assert s.out == [record(i) for i in range(50)]
    assert consistent(s.stats())["written"] == 50
    s.close(1)


def test_a_stuck_sink_does_not_hold_up_another() -> None:
    stuck, fine = Scripted(buffer=10), Scripted(buffer=1000)
    stuck.gate.clear()
    stuck.start()
    fine.start()
    for i in range(200):
        stuck.submit(record(i))
        fine.submit(record(i))
    assert fine.flush(5)
    assert len(fine.out) == 200
    assert not stuck.flush(0.05)
    stuck.gate.set()
    for s in (stuck, fine):
        s.close(1)


def test_failures_keep_the_batch_reconnect_and_count_truthfully() -> None:
    logs = Logs()
    refused = ConnectionRefusedError(111, "Connection refused")
    s = Scripted(batch=5, sends=[BrokenPipeError(32, "Broken pipe")], connects=[None, refused, refused],
                 log=logs).start()
    recs = [record(i) for i in range(5)]
    for r in recs:
        s.submit(r)
    assert s.flush(5)
    assert s.out == recs  # nothing lost, nothing twice
    # One failed send, two refused connects: 3 errors; the batch sent again once; one reconnect.
    assert consistent(s.stats()) == {"submitted": 5, "written": 5, "dropped": 0, "retries": 1, "errors": 3,
                                     "reconnects": 1, "buffered": 0}
    assert s.events == ["connect", "disconnect", "connect", "connect", "connect"]
    assert logs[0] == ("warning", "test output t: Broken pipe; buffering and retrying with backoff")
    assert logs[1][0] == "info" and logs[1][1].startswith("test output t: reconnected after ")
    assert len(logs) == 2  # one line per outage, not one per try
    s.close(1)


def test_partial_send_retries_only_the_rest() -> None:
    def two_then_fail(sink: Scripted, batch: list[Record]) -> int:
        sink.out.extend(batch[:2])
        raise SendError(2, ConnectionResetError(104, "Connection reset by peer"))

    s = Scripted(batch=5, sends=[two_then_fail]).start()
    recs = [record(i) for i in range(5)]
    for r in recs:
        s.submit(r)
    assert s.flush(5)
    assert s.out == recs
    st = consistent(s.stats())
    assert (st["written"], st["retries"], st["errors"], st["reconnects"]) == (5, 1, 1, 1)
    s.close(1)


def test_rejected_records_and_a_failing_batch_are_dropped_not_retried() -> None:
    def keep_odd(sink: Scripted, batch: list[Record]) -> int:
        kept = [r for r in batch if r["trans_depth"] % 2]
        sink.out.extend(kept)
        return len(kept)

    logs = Logs()
    s = Scripted(batch=4, sends=[keep_odd, TypeError("not serialisable")], log=logs)
    for i in range(12):
        s.submit(record(i, trans_depth=i))
    s.start()
    assert s.flush(5)
    # Batch 1 (0..3): 1 and 3 written, 0 and 2 refused; batch 2 (4..7) raised: dropped whole; batch 3 written.
    assert [r["trans_depth"] for r in s.out] == [1, 3, 8, 9, 10, 11]
    assert consistent(s.stats()) == {"submitted": 12, "written": 6, "dropped": 6, "retries": 0, "errors": 3,
                                     "reconnects": 0, "buffered": 0}
    assert logs == [("error", "test output t: dropped 4 records: TypeError: not serialisable")]
    s.close(1)


def test_counters_stay_consistent_while_failing_and_retrying() -> None:
    sends = [ConnectionResetError(104, "reset") if i % 3 == 0 else None for i in range(60)]
    s = Scripted(buffer=40, batch=8, sends=sends).start()
    seen: list[dict[str, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(s.stats())

    w = threading.Thread(target=watch)
    w.start()
    for i in range(400):
        s.submit(record(i))
        if i % 50 == 0:
            time.sleep(0.002)
    s.flush(10)
    done.set()
    w.join()
    for st in seen:
        consistent(st)
    assert all(st["buffered"] <= 40 for st in seen)
    final = consistent(s.stats())
    assert final["buffered"] == 0 and final["written"] == len(s.out)
    # Every record written at most once and in submission order, whatever was dropped.
    idx = [r["uid"] for r in s.out]
    assert idx == sorted(set(idx))
    s.close(1)


def test_close_gives_up_on_a_dead_output_within_its_timeout() -> None:
    down = [ConnectionRefusedError(111, "Connection refused")] * 10_000
    s = Scripted(buffer=100, connects=down).start()
    for i in range(30):
        s.submit(record(i))
    t0 = time.monotonic()
    s.close(0.3)
    assert time.monotonic() - t0 < 1.0
    st = consistent(s.stats())
    assert (st["submitted"], st["written"], st["dropped"], st["buffered"]) == (30, 0, 30, 0)
    assert st["errors"] >= 1
    s.submit(record(99))  # after close: dropped, counted
    assert consistent(s.stats())["dropped"] == 31


def test_close_cuts_a_long_backoff_short() -> None:
    s = Scripted(connects=[ConnectionRefusedError(111, "Connection refused")] * 10)
    s.backoff = Backoff(20.0, 20.0)
    s.start()
    s.submit(record(0))
    # now sleeping 10 to 20 s before the next try
    assert wait_until(lambda: s.stats()["errors"] == 1, 5.0, 0.005)
    t0 = time.monotonic()
    s.close(0.2)
    assert time.monotonic() - t0 < 1.0
    assert consistent(s.stats())["dropped"] == 1


def test_close_abandons_a_worker_stuck_in_io() -> None:
    s = Scripted(buffer=100)
    s.gate.clear()
    s.start()
    for i in range(5):
        s.submit(record(i))
    t0 = time.monotonic()
    s.close(0.2)
    assert time.monotonic() - t0 < 2.0  # timeout plus the join's grace second
    assert consistent(s.stats())["dropped"] == 5
    s.gate.set()  # the stuck write completes after we gave up: still counted dropped, once
    time.sleep(0.05)
    assert consistent(s.stats()) == {"submitted": 5, "written": 0, "dropped": 5, "retries": 0, "errors": 0,
                                     "reconnects": 0, "buffered": 0}


def test_close_writes_what_is_buffered() -> None:
    s = Scripted(buffer=1000, batch=10)
    for i in range(100):
        s.submit(record(i))
    s.start()
    s.close(5)
    assert len(s.out) == 100
    assert consistent(s.stats())["written"] == 100


def test_reopen_reconnects_on_the_worker_before_the_next_write() -> None:
    s = Scripted().start()
    s.submit(record(0))
    assert s.flush(5)
    s.reopen()
    assert wait_until(lambda: s.events == ["connect", "disconnect", "connect"], 5.0, 0.005)
    s.submit(record(1))
    assert s.flush(5)
    s.close(1)
    assert s.events == ["connect", "disconnect", "connect", "disconnect"]


def test_flush_without_a_worker_or_on_a_dead_output_times_out() -> None:
    s = Scripted()
    s.submit(record(0))
    assert not s.flush(0.05)  # not started
    s.close(0.1)
    assert consistent(s.stats())["dropped"] == 1


def test_buffer_and_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Scripted(buffer=0)
    with pytest.raises(ValueError):
        Scripted(batch=0)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def test_a_failure_is_logged_once_and_the_recovery_once_after_a_write_succeeds() -> None:
    """The output opens fine but every write fails (a full disk): no "reconnected" between the
    failures, one line when it fails, one when a write gets through."""
    logs = Logs()
    s = Scripted(batch=5, sends=[enospc()] * 6, log=logs).start()
    for i in range(5):
        s.submit(record(i))
    assert s.flush(5)
    assert s.out == [record(i) for i in range(5)]
    assert consistent(s.stats()) == {"submitted": 5, "written": 5, "dropped": 0, "retries": 6, "errors": 6,
                                     "reconnects": 1, "buffered": 0}
    assert s.events == ["connect"] + ["disconnect", "connect"] * 6
    assert logs[0] == ("warning", "test output t: No space left on device; buffering and retrying with backoff")
    assert logs[1][0] == "info" and re.fullmatch(r"test output t: reconnected after \d+\.\d s", logs[1][1])
    assert len(logs) == 2
    s.close(1)


def test_a_long_failure_says_still_failing_with_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import watcher.sinks.episodes as base

    monkeypatch.setattr(base, "STILL_FAILING_SECONDS", 0.0)  # every retry is "a minute later"
    logs = Logs()
    s = Scripted(buffer=3, batch=3, sends=[enospc()] * 3, log=logs)
    for i in range(4):
        s.submit(record(i))  # the fourth dropped: the buffer holds 3
    s.start()
    assert s.flush(5)
    assert [level for level, _ in logs] == ["warning", "warning", "warning", "warning", "info", "warning"]
    assert logs[0][1].startswith("test output t: buffer full (3 records)")
    assert logs[1][1] == "test output t: No space left on device; buffering and retrying with backoff"
    for line in logs[2:4]:
        assert re.fullmatch(r"test output t: still failing after \d+ s \(No space left on device\): 3 records "
                            r"buffered, 1 dropped so far", line[1]), line
    assert logs[4][1].startswith("test output t: reconnected after ")
    assert re.fullmatch(r"test output t: dropped 1 records while its buffer was full \(\d+\.\d s\); 1 dropped in "
                        r"all", logs[5][1])
    assert not any("reconnected" in m for _, m in logs[:4])
    s.close(1)


def test_drops_are_logged_when_the_buffer_fills_every_interval_and_when_it_drains(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import watcher.sinks.episodes as base

    logs = Logs()
    s = Scripted(buffer=5, batch=5, log=logs)
    s.gate.clear()
    s.start()
    monkeypatch.setattr(base, "DROP_LOG_SECONDS", 0.0)  # every drop after the first is "a minute later"
    for i in range(9):
        s.submit(record(i))
    s.gate.set()
    assert s.flush(5)
    assert consistent(s.stats())["dropped"] == 4
    assert logs[0] == ("warning", "test output t: buffer full (5 records): dropping new records until it has room "
                                  "(counted)")
    for n, (level, line) in enumerate(logs[1:4], start=2):
        assert level == "warning" and re.fullmatch(rf"test output t: still dropping: 1 records dropped in the last "
                                                   rf"0 s, {n} since its buffer filled \d+ s ago", line), line
    assert re.fullmatch(r"test output t: dropped 4 records while its buffer was full \(\d+\.\d s\); 4 dropped in "
                        r"all", logs[4][1])
    assert len(logs) == 5
    # A new episode starts over.
    monkeypatch.setattr(base, "DROP_LOG_SECONDS", 60.0)
    s.gate.clear()
    for i in range(12):
        s.submit(record(100 + i))
    assert logs[5:] == [("warning", "test output t: buffer full (5 records): dropping new records until it has "
                                    "room (counted)")]
    s.gate.set()
    assert s.flush(5)
    assert re.fullmatch(r"test output t: dropped 7 records while its buffer was full \(\d+\.\d s\); 11 dropped in "
                        r"all", logs[6][1])
    s.close(1)


def test_a_required_output_never_drops_for_a_full_buffer_and_acks_in_order() -> None:
    logs = Logs()
    s = Scripted(buffer=5, batch=5, log=logs)
    s.required = True
    s.gate.clear()
    s.start()
    assert not s.full()
    for i in range(12):
        s.submit(record(i))
    assert s.full()
    st = consistent(s.stats())
    assert (st["buffered"], st["dropped"], st["blocking"], s.acked()) == (12, 0, 1, 0)  # the service stops feeding
    assert logs == []
    s.gate.set()
    assert s.flush(5)
    assert not s.full()
    assert s.out == [record(i) for i in range(12)]
    assert (consistent(s.stats())["written"], s.stats()["blocking"], s.acked()) == (12, 0, 12)
    s.close(1)


def test_acked_counts_refused_records_but_not_those_given_up_at_close() -> None:
    def refuse_first(sink: Scripted, batch: list[Record]) -> int:
        sink.out.extend(batch[1:])
        return len(batch) - 1

    logs = Logs()
    s = Scripted(buffer=10, batch=2, sends=[refuse_first], log=logs)
    s.required = True
    s.start()
    s.submit(record(0))
    s.submit(record(1))
    assert s.flush(5)
    assert (s.acked(), consistent(s.stats())["dropped"]) == (2, 1)  # refused for good: settled
    s.gate.clear()
    for i in range(2, 7):
        s.submit(record(i))
    s.close(0.1)  # the worker is stuck in the send: all five given up
    assert (s.acked(), consistent(s.stats())["dropped"]) == (2, 6)
    assert logs[-1] == ("error", "test output t: 5 records not written when it closed (after 0 s): dropped, counted")
    s.gate.set()


# -- jsonl ------------------------------------------------------------------------------------------


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_jsonl_file_exact_lines_and_mode_0640(tmp_path: Path, umask022: None) -> None:
    path = tmp_path / "logs" / "http.jsonl"
    s = open_sink(JsonlOutputConfig("file", "jsonl", path))
    recs = [record(i) for i in range(3)]
    for r in recs:
        s.submit(r)
    assert s.flush(5)
    assert path.read_text() == "".join(encode(r) + "\n" for r in recs)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    s.close(1)


def test_jsonl_reopen_after_logrotate_moved_the_file(tmp_path: Path, umask022: None) -> None:
    path = tmp_path / "http.jsonl"
    s = open_sink(JsonlOutputConfig("file", "jsonl", path))
    for i in range(3):
        s.submit(record(i))
    assert s.flush(5)
    path.rename(tmp_path / "http.jsonl.1")
    s.reopen()
    for i in range(3, 5):
        s.submit(record(i))
    assert s.flush(5)
    s.close(1)
    assert (tmp_path / "http.jsonl.1").read_text() == "".join(encode(record(i)) + "\n" for i in range(3))
    assert path.read_text() == "".join(encode(record(i)) + "\n" for i in range(3, 5))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_jsonl_ecs_format_and_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    s = open_sink(JsonlOutputConfig("stdout", "jsonl", None, format="ecs"))
    s.submit(record(1))
    assert s.flush(5)
    s.close(1)
    assert capsys.readouterr().out == encode(to_ecs(record(1))) + "\n"


def test_jsonl_full_disk_holds_the_buffer_then_drops_counted() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    logs = Logs()
    s = JsonlSink(JsonlOutputConfig("full", "jsonl", Path("/dev/full"), buffer=3), log=logs)
    s.backoff = Backoff(0.001, 0.01)
    s.start()
    for i in range(5):
        s.submit(record(i))
    assert wait_until(lambda: s.stats()["errors"] >= 2, 5.0, 0.005)
    st = consistent(s.stats())
    assert (st["written"], st["dropped"], st["buffered"]) == (0, 2, 3)
    s.close(0.1)
    assert consistent(s.stats())["dropped"] == 5
    # The two past the buffer were dropped as they came (before the worker's first try); the three
    # buffered were given up at close.
    assert logs[0] == ("warning", "jsonl output full: buffer full (3 records): dropping new records until it has "
                                  "room (counted)")
    assert logs[1] == ("warning", "jsonl output full: No space left on device; buffering and retrying with backoff")
    assert logs[2][0] == "warning" and re.fullmatch(r"jsonl output full: dropped 2 records while its buffer was "
                                                    r"full \(\d+\.\d s\); 5 dropped in all", logs[2][1])
    assert logs[3:] == [("error", "jsonl output full: 3 records not written when it closed (after 0 s): dropped, "
                                  "counted")]


class HalfThenFull:
    """os.write as on a filesystem with `room` bytes left: a short write, then ENOSPC, until `free()`."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data: Any) -> int:
        if self.room is None:
            return self.real(fd, data)
        if self.room <= 0:
            raise enospc()
        n = self.real(fd, bytes(data[:self.room]))
        self.room -= n
        return n

    def free(self) -> None:
        self.room = None  # type: ignore[assignment]


def test_jsonl_partial_write_is_cut_back_and_only_whole_lines_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up in the middle of the third record: two records written (their bytes
    counted), the half record cut off before the retry; once there is room again every line of
    the file is a whole record, each once, in order."""
    path = tmp_path / "http.jsonl"
    lines = [encode(record(i)) + "\n" for i in range(5)]
    logs = Logs()
    s = JsonlSink(JsonlOutputConfig("file", "jsonl", path), log=logs)
    s.backoff = Backoff(0.001, 0.004)
    disk = HalfThenFull(len(lines[0]) + len(lines[1]) + 10)
    monkeypatch.setattr(os, "write", disk)
    for i in range(5):
        s.submit(record(i))
    s.start()
    assert wait_until(lambda: s.stats()["errors"] >= 3, 5.0, 0.005)
    st = consistent(s.stats())
    assert (st["written"], st["written_bytes"], st["buffered"]) == (2, len(lines[0]) + len(lines[1]), 3)
    # While failing, the file holds the two whole records: the half third was cut off at once.
    assert path.read_text() == lines[0] + lines[1]
    disk.free()
    assert s.flush(5)
    monkeypatch.undo()
    assert path.read_text() == "".join(lines)
    st = consistent(s.stats())
    assert (st["written"], st["written_bytes"], st["dropped"]) == (5, len("".join(lines)), 0)
    assert logs[0] == ("warning", "jsonl output file: No space left on device; buffering and retrying with backoff")
    assert logs[1][0] == "info" and re.fullmatch(r"jsonl output file: writing again after \d+\.\d s", logs[1][1])
    assert len(logs) == 2
    s.close(1)


def test_jsonl_open_cuts_a_partial_last_line_left_by_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "http.jsonl"
    whole = encode(record(0)) + "\n"
    path.write_text(whole + encode(record(1))[:40])
    logs = Logs()
    s = JsonlSink(JsonlOutputConfig("file", "jsonl", path), log=logs).start()
    s.submit(record(2))
    assert s.flush(5)
    s.close(1)
    assert path.read_text() == whole + encode(record(2)) + "\n"
    assert logs == [("warning", f"jsonl output file: {path} ended in a partial line (an earlier write failed): "
                                "cut 40 bytes back to its last whole record")]


@pytest.mark.parametrize(("content", "kept"), [
    (b"", b""), (b"a\n", b"a\n"), (b"a\nb", b"a\n"), (b"no newline", b""),
    (b"x" * 100_000 + b"\n" + b"y" * 200_000, b"x" * 100_000 + b"\n"),  # found a few chunks back
])
def test_cut_partial_line(tmp_path: Path, content: bytes, kept: bytes) -> None:
    from watcher.sinks.jsonl import cut_partial_line

    path = tmp_path / "f"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDWR)
    try:
        assert cut_partial_line(fd) == len(content) - len(kept)
    finally:
        os.close(fd)
    assert path.read_bytes() == kept


def test_jsonl_bad_format_or_unwritable_path_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of flat, ecs"):
        JsonlSink(JsonlOutputConfig("x", "jsonl", tmp_path / "a", format="xml"))
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        JsonlSink(JsonlOutputConfig("x", "jsonl", tmp_path / "file" / "sub.jsonl"))


# -- ECS ----------------------------------------------------------------------------------------------


def test_ecs_full_transaction() -> None:
    r = record(7, request_headers={"host": "shop.test:8080"}, response_headers={"server": "nginx"},
                tags=["slow"], route="/item/{id}", service="checkout", flags=["gap"], host="shop.test:8080",
                referrer="http://shop.test/")
    assert to_ecs(r) == {
        "@timestamp": "2023-11-14T22:13:20.007000Z",
        "ecs": {"version": "8.11.0"},
        "event": {"id": "ev000007", "kind": "event", "category": ["network", "web"], "type": ["access", "protocol"],
                  "dataset": "pcapwatch.http", "duration": 2_500_000, "outcome": "success"},
        "source": {"ip": "192.0.2.10", "port": 40007},
        "destination": {"ip": "192.0.2.80", "port": 80},
        "network": {"transport": "tcp", "protocol": "http", "type": "ipv4"},
        "url": {"original": "/item/7?q=1", "path": "/item/7", "query": "q=1", "domain": "shop.test", "port": 8080},
        "http": {"version": "1.1",
                 "request": {"method": "GET", "referrer": "http://shop.test/", "body": {"bytes": 0},
                             "headers": {"host": "shop.test:8080"}},
                 "response": {"status_code": 200, "mime_type": "text/html", "body": {"bytes": 1234},
                              "headers": {"server": "nginx"}}},
        "user_agent": {"original": "curl/8.0"},
        "tags": ["slow"],
        "labels": {"route": "/item/{id}", "service": "checkout"},
        "pcapwatch": {"uid": "C00007", "trans_depth": 1, "ttfb_ms": 1.25, "status_msg": "OK", "flags": ["gap"],
                      "pcap_file": "cap.pcap"},
    }


def test_ecs_no_response_ipv6_and_an_alert() -> None:
    r = record(1, src_ip="2001:db8::1", dst_ip="2001:db8::2", status_code=None, status_msg=None,
                response_body_len=0, response_content_type=None, ttfb_ms=None, duration_ms=None,
                flags=["no_response"], reason="reset")
    doc = to_ecs(r)
    assert doc["event"]["outcome"] == "unknown" and "duration" not in doc["event"]
    assert doc["network"]["type"] == "ipv6"
    assert doc["http"]["response"] == {"body": {"bytes": 0}}
    assert doc["pcapwatch"]["reason"] == "reset"
    assert to_ecs(record(2, status_code=503))["event"]["outcome"] == "failure"
    alert = to_ecs({"level": "warning", "message": "slow checkout", "rule": "slow", "ts": 1700000000.5,
                    "count": 3})
    assert alert == {"@timestamp": "2023-11-14T22:13:20.500000Z", "ecs": {"version": "8.11.0"},
                     "message": "slow checkout", "log": {"level": "warning"}, "rule": {"name": "slow"},
                     "event": {"kind": "alert", "category": ["network", "web"], "type": ["access", "protocol"],
                               "dataset": "pcapwatch.http"},
                     "network": {"transport": "tcp", "protocol": "http"}, "labels": {"count": "3"}}


@pytest.mark.parametrize(("uri", "host", "want"), [
    ("/a/b?x=1&y", None, {"original": "/a/b?x=1&y", "path": "/a/b", "query": "x=1&y"}),
    ("/a?", "h.test", {"original": "/a?", "path": "/a", "query": "", "domain": "h.test"}),
    ("/a", "[2001:db8::1]:8443", {"original": "/a", "path": "/a", "domain": "2001:db8::1", "port": 8443}),
    ("http://p.test:81/x?k=v", None, {"original": "http://p.test:81/x?k=v", "path": "/x", "query": "k=v",
                                      "domain": "p.test", "port": 81}),
    ("p.test:443", "p.test:443", {"original": "p.test:443", "domain": "p.test", "port": 443}),
    ("*", None, {"original": "*"}),
])
def test_ecs_url_fields(uri: str, host: str | None, want: dict[str, Any]) -> None:
    got = {k: v for k, v in url_fields(uri, host).items() if v is not None}
    assert got == want


def test_split_host() -> None:
    assert split_host("a.test") == ("a.test", None)
    assert split_host("a.test:x") == ("a.test:x", None)
    assert split_host("2001:db8::1") == ("2001:db8::1", None)
    assert split_host("[::1]") == ("::1", None)


# -- syslog ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "want"), [
    ("unix:/dev/log", ("unix", "/dev/log")),
    ("unix:///run/systemd/journal/syslog", ("unix", "/run/systemd/journal/syslog")),
    ("udp://127.0.0.1:514", ("udp", ("127.0.0.1", 514))),
    ("tcp://[::1]:6514", ("tcp", ("::1", 6514))),
    ("tcp://logs.internal:601", ("tcp", ("logs.internal", 601))),
])
def test_parse_address(address: str, want: tuple[str, Any]) -> None:
    assert parse_address(address) == want


@pytest.mark.parametrize("address", ["unix:dev/log", "udp://127.0.0.1", "tcp://:514", "tcp://h:0",
                                     "tcp://h:65536", "http://h:80", "127.0.0.1:514"])
def test_parse_address_refuses(address: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_address(address)
    assert str(e.value) == (f"{address!r}: a unix socket address is unix:/absolute/path" if address.startswith("unix")
                            else f"{address!r}: expected unix:/PATH, udp://HOST:PORT or tcp://HOST:PORT")


def test_sd_escape_header_token_structured_data() -> None:
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert header_token("my host\x00", 255) == "my_host_"
    assert header_token("", 48) == "-"
    assert header_token("x" * 60, 48) == "x" * 48
    assert structured_data({}) == "-"
    assert structured_data({"src_ip": "2001:db8::1", "src_port": 1, "status_code": 404, "tags": ["a", "b"],
                            "request_headers": {"x": "y"}}) == \
        '[pcapwatch@32473 client="[2001:db8::1\\]:1" status="404" tags="a,b"]'  # ']' escaped, as RFC 5424 says


def test_syslog_line_exact() -> None:
    s = SyslogSink(SyslogOutputConfig("s", "syslog", "udp://127.0.0.1:9", facility="daemon", app_name="pcapwatch",
                                    hostname="web-1"))
    r = record(3, uri='/q?a="1"]', route="/q", tags=["t"])
    assert s.format(r).decode() == (
        f'<30>1 2023-11-14T22:13:20.003000Z web-1 pcapwatch {os.getpid()} http '
        '[pcapwatch@32473 client="192.0.2.10:40003" server="192.0.2.80:80" event_id="ev000003" method="GET" '
        'status="200" host="shop.test" uri="/q?a=\\"1\\"\\]" route="/q" duration_ms="2.5" tags="t"] '
        + encode(r))
    alert = s.format({"level": "warning", "message": "m", "rule": "r1", "ts": 1700000000.0})
    assert alert.decode() == (f'<28>1 2023-11-14T22:13:20.000000Z web-1 pcapwatch {os.getpid()} alert '
                              '[pcapwatch@32473 level="warning" rule="r1"] '
                              '{"level":"warning","message":"m","rule":"r1","ts":1700000000.0}')
    with pytest.raises(ValueError, match="facility 'local9'"):
        SyslogSink(SyslogOutputConfig("s", "syslog", "udp://127.0.0.1:9", facility="local9"))


def _syslog(address: str, **kw: Any) -> SyslogSink:
    s = SyslogSink(SyslogOutputConfig("s", "syslog", address, hostname="h", **kw))
    s.backoff = Backoff(0.005, 0.02)
    return s


def test_syslog_udp_one_datagram_per_record_and_oversize_dropped() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    logs = Logs()
    s = SyslogSink(SyslogOutputConfig("s", "syslog", f"udp://127.0.0.1:{rx.getsockname()[1]}", hostname="h"), log=logs)
    s.start()
    try:
        recs = [record(0), record(1, user_agent="x" * 70_000), record(2)]
        for r in recs:
            s.submit(r)
        assert s.flush(5)
        got = [rx.recv(70_000), rx.recv(70_000)]
        assert got == [s.format(recs[0]), s.format(recs[2])]
        assert consistent(s.stats()) == {"submitted": 3, "written": 2, "dropped": 1, "retries": 0, "errors": 1,
                                         "reconnects": 0, "buffered": 0}
        assert logs[0][0] == "warning" and "too large for one datagram" in logs[0][1]
    finally:
        s.close(1)
        rx.close()


def test_syslog_udp_refusals_move_records_from_written_to_dropped() -> None:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    u.close()  # nothing listens there: each datagram draws an ICMP port unreachable
    logs = Logs()
    s = SyslogSink(SyslogOutputConfig("s", "syslog", f"udp://127.0.0.1:{port}", hostname="h"), log=logs).start()
    try:
        for i in range(5):
            s.submit(record(i))
        assert s.flush(5)
        # Each refusal reports the datagram before: 4 known lost; the 5th's fate is not known yet.
        assert consistent(s.stats()) == {"submitted": 5, "written": 1, "dropped": 4, "retries": 0, "errors": 4,
                                         "reconnects": 0, "buffered": 0}
        s.submit(record(5))
        assert s.flush(5)
        assert consistent(s.stats()) == {"submitted": 6, "written": 1, "dropped": 5, "retries": 0, "errors": 5,
                                         "reconnects": 0, "buffered": 0}
        assert logs == [("warning", f"syslog output s: 127.0.0.1:{port} refuses datagrams (nothing listening?); "
                                    "the records sent meanwhile are lost (counted dropped)")]
    finally:
        s.close(1)


def test_syslog_unix_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    s = _syslog(f"unix:{path}").start()
    try:
        for i in range(3):
            s.submit(record(i))
        assert s.flush(5)
        assert [rx.recv(65536) for _ in range(3)] == [s.format(record(i)) for i in range(3)]
    finally:
        s.close(1)
        rx.close()


class StreamServer:
    """A stream syslog server on a thread: collects the bytes of each connection; `close_after`
    closes the first connection once that many bytes arrived."""

    def __init__(self, family: int, address: Any, close_after: int = 0) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.conns: list[bytearray] = []
        self.close_after = close_after
        self.closed_first = threading.Event()
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            self.conns.append(buf)
            c.settimeout(0.2)
            first = len(self.conns) == 1
            while not self.stop:
                try:
                    data = c.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                buf += data
                if first and self.close_after and len(buf) >= self.close_after:
                    break
            c.close()
            if first:
                self.closed_first.set()

    def shutdown(self) -> None:
        self.stop = True
        with contextlib.suppress(OSError):  # shutdown wakes the blocked accept; close alone does not
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def octet_frames(data: bytes) -> list[bytes]:
    """RFC 6587 octet-counting: MSG-LEN SP SYSLOG-MSG, repeated."""
    out = []
    while data:
        n, _, rest = data.partition(b" ")
        out.append(rest[:int(n)])
        data = rest[int(n):]
    return out


def test_syslog_tcp_octet_counting_and_a_closed_connection_loses_nothing() -> None:
    srv = StreamServer(socket.AF_INET, ("127.0.0.1", 0))
    s = _syslog(f"tcp://127.0.0.1:{srv.sock.getsockname()[1]}")
    srv.close_after = sum(len(b"%d %s" % (len(m), m)) for m in (s.format(record(i)) for i in range(5)))
    s.start()
    try:
        for i in range(5):
            s.submit(record(i))
        assert s.flush(5)
        assert srv.closed_first.wait(5)  # the server went away between two batches
        for i in range(5, 10):
            s.submit(record(i))
        assert s.flush(5)
        assert wait_until(lambda: len(srv.conns) == 2 and len(octet_frames(bytes(srv.conns[1]))) == 5,
                          5.0, 0.005)
        assert octet_frames(bytes(srv.conns[0])) == [s.format(record(i)) for i in range(5)]
        assert octet_frames(bytes(srv.conns[1])) == [s.format(record(i)) for i in range(5, 10)]
        assert consistent(s.stats()) == {"submitted": 10, "written": 10, "dropped": 0, "retries": 1, "errors": 1,
                                         "reconnects": 1, "buffered": 0}
    finally:
        s.close(1)
        srv.shutdown()


def test_syslog_unix_stream_fallback_one_message_per_line(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    srv = StreamServer(socket.AF_UNIX, path)
    s = _syslog(f"unix:{path}").start()
    try:
        for i in range(3):
            s.submit(record(i))
        assert s.flush(5)
        want = b"".join(s.format(record(i)) + b"\n" for i in range(3))
        assert wait_until(lambda: len(srv.conns) == 1 and bytes(srv.conns[0]) == want, 5.0, 0.005)
    finally:
        s.close(1)
        srv.shutdown()


def test_syslog_nobody_listening_buffers_then_delivers(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    s = _syslog(f"unix:{path}").start()
    try:
        for i in range(4):
            s.submit(record(i))
        assert wait_until(lambda: s.stats()["errors"] >= 2, 5.0, 0.005)
        assert consistent(s.stats())["buffered"] == 4
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind(path)
        rx.settimeout(5)
        assert s.flush(5)
        assert [rx.recv(65536) for _ in range(4)] == [s.format(record(i)) for i in range(4)]
        st = consistent(s.stats())
        assert (st["written"], st["dropped"], st["reconnects"]) == (4, 0, 1)
        rx.close()
    finally:
        s.close(1)


# -- zmq ------------------------------------------------------------------------------------------------


def test_status_class_and_messages() -> None:
    assert [status_class(x) for x in (200, 204, 301, 404, 503, 101, None, 0)] == \
        ["2xx", "2xx", "3xx", "4xx", "5xx", "1xx", "none", "none"]
    r = record(1, request_headers={"host": "shop.test"})
    frames = messages(r, per_message=True)
    assert [f[:-1] for f in frames] == [[b"in", b"192.0.2.10:40001"], [b"out", b"192.0.2.10:40001"], [b"http.2xx"]]
    common = {"ts": r["ts"], "uid": "C00001", "trans_depth": 1, "event_id": "ev000001", "src_ip": "192.0.2.10",
              "src_port": 40001, "dst_ip": "192.0.2.80", "dst_port": 80}
    assert frames[0][2] == encode({**common, "method": "GET", "host": "shop.test", "uri": "/item/1?q=1",
                                   "version": "1.1", "user_agent": "curl/8.0", "referrer": None,
                                   "request_body_len": 0, "request_headers": {"host": "shop.test"}}).encode()
    assert frames[1][2] == encode({**common, "status_code": 200, "status_msg": "OK", "info_code": None,
                                   "response_body_len": 1234, "response_content_type": "text/html",
                                   "ttfb_ms": 1.25, "duration_ms": 2.5, "flags": [], "anomalies": [],
                                   "reason": None}).encode()
    assert frames[2][1] == encode(r).encode()
    assert messages(r, per_message=False) == [[b"http.2xx", encode(r).encode()]]
    no_resp = record(2, status_code=None, flags=["no_response"], src_ip="2001:db8::1")
    assert [f[:-1] for f in messages(no_resp, True)] == [[b"in", b"[2001:db8::1]:40002"], [b"http.none"]]
    no_req = record(3, method=None, flags=["no_request"])
    assert [f[0] for f in messages(no_req, True)] == [b"out", b"http.2xx"]
    assert messages({"level": "warning", "message": "m"}, True) == [[b"alert", b'{"level":"warning","message":"m"}']]


def test_zmq_publishes_every_record_in_order_to_a_subscriber() -> None:
    s = ZmqSink(ZmqOutputConfig("tap", "zmq", "tcp://127.0.0.1:*", per_message=True)).start()
    sub = None
    try:
        assert wait_until(lambda: s.endpoint is not None, 5.0, 0.005)
        assert s.endpoint is not None
        sub = Subscriber(s.endpoint, ["http.", "in"])
        assert wait_until(lambda: s.stats()["subscriptions"] == 2, 5.0, 0.005)
        recs = [record(i, status_code=(200, 404, 503, None)[i % 4]) for i in range(400)]
        for r in recs:
            s.submit(r)
        got: list[list[bytes]] = []
        while len(got) < 800:
            frames = sub.receive(5000)
            assert frames is not None
            got.append(frames)
        assert sub.receive(100) is None
        want = []
        for r in recs:
            want.append([b"in", b"192.0.2.10:%d" % r["src_port"], messages(r, True)[0][2]])
            want.append([f"http.{status_class(r['status_code'])}".encode(), encode(r).encode()])
        assert got == want
        assert consistent(s.stats())["written"] == 400
        sub.close()
        sub = None
        assert wait_until(lambda: s.stats()["subscriptions"] == 0, 5.0, 0.005)
    finally:
        if sub is not None:
            sub.close()
        s.close(1)


def test_zmq_bind_conflict_is_retried_until_free() -> None:
    first = ZmqSink(ZmqOutputConfig("a", "zmq", "tcp://127.0.0.1:*")).start()
    assert wait_until(lambda: first.endpoint is not None, 5.0, 0.005)
    assert first.endpoint is not None
    logs = Logs()
    second = ZmqSink(ZmqOutputConfig("b", "zmq", first.endpoint), log=logs)
    second.backoff = Backoff(0.01, 0.05)
    second.start()
    try:
        assert wait_until(lambda: second.stats()["errors"] >= 1, 5.0, 0.005)
        assert logs[0][0] == "warning" and logs[0][1].startswith("zmq output b: Address already in use")
        first.close(1)
        assert wait_until(lambda: second.stats()["reconnects"] == 1, 5.0, 0.005)
        assert second.endpoint == first.endpoint
    finally:
        first.close(1)
        second.close(1)


# -- tail's lines ---------------------------------------------------------------------------------------




def test_tail_lines(utc: None) -> None:
    r = record(5, flags=["gap", "truncated"], response_body_len=2_500_000)
    assert format_line("http.2xx", r) == \
        "22:13:20.005 192.0.2.10:40005      GET     200     2.5ms    2.4M shop.test/item/5?q=1 [gap,truncated]"
    assert format_line("http.2xx", r, color=True) == ("22:13:20.005 192.0.2.10:40005      GET     "
                                                      "\033[32m200\033[0m     2.5ms    2.4M shop.test/item/5?q=1"
                                                      "\033[2m [gap,truncated]\033[0m")
    none = record(6, status_code=None, duration_ms=None, flags=["no_response"], method="OPTIONS", uri="*",
                  src_ip="2001:db8::1")
    assert format_line("http.none", none) == \
        "22:13:20.006 [2001:db8::1]:40006   OPTIONS ---         -       - * [no_response]"
    assert format_line("http.5xx", record(7, status_code=502, response_body_len=10), color=True).split()[3] == \
        "\033[1;31m502\033[0m"
    assert format_line("in", record(8)) == "22:13:20.008 192.0.2.10:40008      -> GET     shop.test/item/8?q=1"
    assert format_line("out", record(8)) == "22:13:20.008 192.0.2.10:40008      <- 200     2.5ms    1.2K"
    assert format_line("alert", {"level": "warning", "message": "slow", "ts": 1700000000.0}) == \
        "22:13:20.000 -                     !! warning: slow"


def test_a_buffer_filling_again_soon_is_counted_into_the_next_line_not_announced_again() -> None:
    logs = Logs()
    s = Scripted(buffer=5, batch=5, log=logs)
    s.start()
    for burst in range(3):  # three bursts of 8 into a buffer of 5, each drained before the next
        s.gate.clear()
        for i in range(8):
            s.submit(record(burst * 10 + i))
        s.gate.set()
        assert s.flush(5)
    assert len(logs) == 2, logs
    assert logs[0][1] == "test output t: buffer full (5 records): dropping new records until it has room (counted)"
    assert re.fullmatch(r"test output t: dropped 3 records while its buffer was full \(\d+\.\d s\); 3 dropped in all",
                        logs[1][1])
    s.close(1)  # the two later bursts' drops, in one line at the latest when it closes
    assert consistent(s.stats())["dropped"] == 9
    assert len(logs) == 3
    assert re.fullmatch(r"test output t: dropped 6 records while its buffer was full \(2 times in \d+ s\); 9 dropped "
                        r"in all", logs[2][1])


def test_close_during_a_long_backoff_tries_again_at_once() -> None:
    """The output failed a while ago and the next try is 10 s away; it is back when close() comes:
    the buffer is written within the close's time, not given up."""
    s = Scripted(sends=[enospc()])
    s.backoff = Backoff(20.0, 20.0)
    s.start()
    s.submit(record(0))
    assert wait_until(lambda: s.stats()["errors"] == 1, 5.0, 0.005)
    t0 = time.monotonic()
    s.close(2.0)
    assert time.monotonic() - t0 < 1.0
    assert s.out == [record(0)]
    assert consistent(s.stats())["written"] == 1


def test_utf8_text_through_every_encoder(tmp_path: Path, umask022: None) -> None:
    """Records hold valid UTF-8 from the wire as text (strings: utf8), and every output writes it as
    UTF-8 bytes, so a grep for Köln finds it: the JSON (jsonl file, ECS, zmq frames), syslog's
    structured data (RFC 5424 PARAM-VALUE) and its message, which then starts with the BOM (6.4).
    With strings: ascii the JSON is 7-bit ASCII, \\u escapes, exactly as before there was a choice."""
    r = record(1, uri="/st\u00e4dte/K\u00f6ln?q=\u20ac", host="k\u00f6ln.test:8080", user_agent="\U0001f600 \\xff")
    line = encode(r)
    assert '"uri":"/st\u00e4dte/K\u00f6ln?q=\u20ac"' in line and '"user_agent":"\U0001f600 \\\\xff"' in line
    assert utf8(line).count(b"K\xc3\xb6ln") == 1 and b'"user_agent":"\xf0\x9f\x98\x80 \\\\xff"' in utf8(line)
    assert json.loads(line) == r
    old_form = encode(r, Strings.ASCII)  # what every output wrote before: ASCII, \\u escapes
    assert old_form.isascii() and json.loads(old_form) == r
    assert '"uri":"/st\\u00e4dte/K\\u00f6ln?q=\\u20ac"' in old_form
    assert '"user_agent":"\\ud83d\\ude00 \\\\xff"' in old_form
    ecs_line = utf8(encode(to_ecs(r)))
    assert b'"path":"/st\xc3\xa4dte/K\xc3\xb6ln"' in ecs_line and b'"domain":"k\xc3\xb6ln.test"' in ecs_line
    ecs = json.loads(ecs_line)
    assert (ecs["url"]["path"], ecs["url"]["query"], ecs["url"]["domain"]) == ("/st\u00e4dte/K\u00f6ln", "q=\u20ac",
                                                                              "k\u00f6ln.test")
    assert ecs["user_agent"]["original"] == "\U0001f600 \\xff"

    s = SyslogSink(SyslogOutputConfig("s", "syslog", "udp://127.0.0.1:9", hostname="web-1"))
    msg = s.format(r)
    assert b' host="k\xc3\xb6ln.test:8080" uri="/st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac" ' in msg
    assert msg.endswith(b"] \xef\xbb\xbf" + utf8(line))
    assert message(r) == BOM + line
    plain = s.format(record(2))  # ASCII only: MSG-ANY, no BOM, the bytes as before
    assert plain.endswith(b"] " + encode(record(2)).encode("ascii")) and b"\xef\xbb\xbf" not in plain
    s.strings = Strings.ASCII
    msg_ascii = s.format(r)
    assert msg_ascii.endswith(b"] " + old_form.encode("ascii")) and b"\xef\xbb\xbf" not in msg_ascii

    frames = messages(r, True)
    assert [f[0] for f in frames] == [b"in", b"out", b"http.2xx"]
    assert b'"uri":"/st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac"' in frames[0][2] and frames[2][1] == utf8(line)
    assert messages(r, False, Strings.ASCII) == [[b"http.2xx", old_form.encode("ascii")]]

    path = tmp_path / "http.jsonl"
    sink = open_sink(JsonlOutputConfig("file", "jsonl", path))
    sink.submit(r)
    sink.submit(record(2, pcap_file="caf\u00e9 \udcff.pcap"))  # a file name that is not UTF-8
    assert sink.flush(5)
    sink.strings = Strings.ASCII  # a reload to strings: ascii
    sink.submit(r)
    assert sink.flush(5)
    sink.close(1)
    data = path.read_bytes()
    name_line = encode(record(2, pcap_file="caf\u00e9 \udcff.pcap")).replace("\udcff", "\\udcff")
    assert data == (line + "\n" + name_line + "\n" + old_form + "\n").encode("utf-8")
    assert b'"pcap_file":"caf\xc3\xa9 \\udcff.pcap"' in data  # the surrogate as json's escape for it
    assert sink.stats()["written_bytes"] == len(data)
    assert data.count(b"K\xc3\xb6ln") == 1
    assert [json.loads(x)["uri"] for x in data.splitlines()] == ["/st\u00e4dte/K\u00f6ln?q=\u20ac", "/item/2?q=1",
                                                                   "/st\u00e4dte/K\u00f6ln?q=\u20ac"]
    assert json.loads(data.splitlines()[1])["pcap_file"] == "caf\u00e9 \udcff.pcap"


def test_jsonl_stdout_is_utf8_whatever_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard output in a Latin-1 locale (LANG=de_DE.ISO-8859-1): the records are still UTF-8."""
    raw = io.BytesIO()
    latin1 = io.TextIOWrapper(raw, encoding="latin-1", write_through=True)
    monkeypatch.setattr(sys, "stdout", latin1)
    latin1.write("before ")
    s = open_sink(JsonlOutputConfig("stdout", "jsonl", None))
    r = record(1, uri="/K\u00f6ln/\u6771\u4eac")
    s.submit(r)
    assert s.flush(5)
    s.close(1)
    assert raw.getvalue() == b"before " + utf8(encode(r)) + b"\n"
    assert s.stats()["written_bytes"] == len(utf8(encode(r))) + 1  # bytes, not characters
    assert b'"uri":"/K\xc3\xb6ln/\xe6\x9d\xb1\xe4\xba\xac"' in raw.getvalue()


def test_prometheus_label_values_are_utf8() -> None:
    """A host label of UTF-8 text is served as UTF-8 (the text format allows any UTF-8 in label
    values); a file name that is not UTF-8 as a label holds \\udcNN, not a failed scrape."""
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from watcher.metrics import MetricsModel, label_value
    from watcher.sinks.prometheus_sink import _Collector

    model = MetricsModel()
    model.observe((), record(1, host="k\u00f6ln.test", uri="/K\u00f6ln"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(model))
    text = generate_latest(registry)
    assert b'host="k\xc3\xb6ln.test"' in text
    assert label_value("caf\u00e9 \udcff.pcap") == "caf\u00e9 \\udcff.pcap"
