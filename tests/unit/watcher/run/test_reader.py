"""watcher/reader: the reader thread does not call a file finished while it holds bytes not read.

tcpdump can write its last packets to a file in the moment between the reader meeting the file's
end and the reader seeing that a newer file exists (a rescan in between learns the new size). The
file must then be read to its new end before it is called done: no later write would reopen it.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest
from helpers import pcapgen as g
from helpers.env import file_modes_bind_root
from helpers.liveenv import wait_until

from watcher.capture.spool import Spool
from watcher.run.reader import Batch, Reader

T0 = 1_700_000_000 * 10**9


def packets(n: int, first: int = 0, t0: int = T0) -> list[tuple[int, bytes]]:
    return [(t0 + i * 10**6, bytes([i]) * 60) for i in range(first, first + n)]


def test_bytes_written_just_before_a_newer_file_is_noticed_are_read(tmp_path: Path) -> None:
    current = g.write_pcap(tmp_path / "cap.pcap0", g.LINKTYPE_ETHERNET, packets(3))
    g.write_pcap(tmp_path / "cap.pcap1", g.LINKTYPE_ETHERNET, packets(2, t0=T0 + 100 * 10**9))
    late = g.pcap_bytes(g.LINKTYPE_ETHERNET, packets(2, first=3))[24:]  # two more records, no header
    batches: queue.Queue[Batch] = queue.Queue()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    reader = Reader(Spool(str(tmp_path)), batches, wake_w, 0.1, None, lambda level, msg: None)
    rescan = reader._rescan_if_due

    def tcpdump_writes_then_rescan() -> None:
        if current.stat().st_size < 24 + 5 * 76:  # once
            with open(current, "ab") as f:
                f.write(late)
        reader._scan()  # the new size is seen before the newer file is

    reader._rescan_if_due = tcpdump_writes_then_rescan  # type: ignore[method-assign]
    reader.start()
    got: list[bytes] = []
    try:
        def read_enough() -> bool:
            while not batches.empty():
                got.extend(f[2] for f in batches.get().frames)
            return len(got) >= 7

        wait_until(read_enough, 5.0)
        time.sleep(0.3)  # nothing more should come
        read_enough()
    finally:
        reader._rescan_if_due = rescan  # type: ignore[method-assign]
        reader.stop()
        reader.join(5.0)
        os.close(wake_r)
        os.close(wake_w)
    assert got == [f for _, f in packets(5)] + [f for _, f in packets(2, t0=T0 + 100 * 10**9)]


def test_a_file_unreadable_when_opened_is_read_once_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000 between the scan that found a file and the reader opening it: one error line, the
    newer file read meanwhile, then (chmod 644) the older one, whole; nothing lost."""
    file_modes_bind_root(monkeypatch)
    a = g.write_pcap(tmp_path / "cap.pcap0", g.LINKTYPE_ETHERNET, packets(3))
    g.write_pcap(tmp_path / "cap.pcap1", g.LINKTYPE_ETHERNET, packets(2, first=3, t0=T0 + 100 * 10**9))
    spool = Spool(str(tmp_path))
    spool.scan(time.time())
    a.chmod(0)
    batches: queue.Queue[Batch] = queue.Queue()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    lines: list[str] = []
    reader = Reader(spool, batches, wake_w, 0.1, None, lambda level, msg: lines.append(f"{level}: {msg}"))
    got: list[bytes] = []

    def read(n: int) -> bool:
        while not batches.empty():
            got.extend(f[2] for f in batches.get().frames)
        return len(got) >= n

    reader.start()
    try:
        assert wait_until(lambda: read(2) and any("cannot be read" in x for x in lines), 5.0)
        time.sleep(0.3)
        assert not read(3)  # nothing of cap.pcap0 while it cannot be read
        a.chmod(0o644)
        assert wait_until(lambda: read(5), 5.0)
        time.sleep(0.3)
        read(5)
    finally:
        reader.stop()
        reader.join(5.0)
        os.close(wake_r)
        os.close(wake_w)
    assert reader.error is None
    assert got == [f for _, f in packets(2, first=3, t0=T0 + 100 * 10**9)] + [f for _, f in packets(3)]
    assert [x.split(": ")[0:2] for x in lines] == [["error", str(a)], ["info", str(a)]]
    assert lines[1] == f"info: {a}: readable now, reading it"
    assert (spool.counters.unreadable, spool.counters.lost, spool.unreadable) == (1, 0, {})


def test_an_unexpected_error_reading_one_file_costs_that_file_only(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a CaptureError: a bug met on one file. It is named and counted; the thread reads on."""
    from watcher.capture.tail import GenerationReader

    g.write_pcap(tmp_path / "cap.pcap0", g.LINKTYPE_ETHERNET, packets(3))
    g.write_pcap(tmp_path / "cap.pcap1", g.LINKTYPE_ETHERNET, packets(2, first=3, t0=T0 + 100 * 10**9))
    g.write_pcap(tmp_path / "cap.pcap2", g.LINKTYPE_ETHERNET, packets(2, first=5, t0=T0 + 200 * 10**9))
    real = GenerationReader.read

    def read(self: GenerationReader) -> object:
        if self.gen.path.endswith("cap.pcap1"):
            raise struct_error("unpack requires a buffer of 4 bytes")
        return real(self)

    monkeypatch.setattr(GenerationReader, "read", read)
    batches: queue.Queue[Batch] = queue.Queue()
    _wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    logged: list[tuple[str, str]] = []
    spool = Spool(str(tmp_path))
    reader = Reader(spool, batches, wake_w, 0.1, None, lambda level, msg: logged.append((level, msg)))
    reader.start()
    got: list[bytes] = []
    try:
        def read_enough() -> bool:
            while not batches.empty():
                got.extend(f[2] for f in batches.get().frames)
            return len(got) >= 5

        wait_until(read_enough, 5.0)
        time.sleep(0.3)
        read_enough()
        assert reader.is_alive() and reader.error is None
    finally:
        reader.stop()
        reader.join(5.0)
    assert got == [p[1] for p in packets(3)] + [p[1] for p in packets(2, first=5)]
    assert spool.counters.failed == 1
    assert [m for lv, m in logged if lv == "error"] == [
        f"{tmp_path}/cap.pcap1: reading this file failed (error: unpack requires a buffer of 4 bytes); the rest "
        "of this file is skipped and pcapwatch goes on with the next; this is a bug in pcapwatch: please report "
        "it with this file"]


def struct_error(text: str) -> Exception:
    import struct

    return struct.error(text)


def test_a_scan_that_raises_is_said_once_and_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g.write_pcap(tmp_path / "cap.pcap0", g.LINKTYPE_ETHERNET, packets(3))
    spool = Spool(str(tmp_path))
    real = Spool.scan
    calls = [0]

    def scan(self: Spool, now: float) -> None:
        calls[0] += 1
        if calls[0] <= 3:
            raise ValueError("odd entry")
        real(self, now)

    monkeypatch.setattr(Spool, "scan", scan)
    logged: list[tuple[str, str]] = []
    reader = Reader(spool, queue.Queue(), os.pipe2(os.O_NONBLOCK)[1], 0.1, None,
                    lambda level, msg: logged.append((level, msg)))
    for _ in range(5):
        reader._scan()
    assert logged == [("error", f"scanning {tmp_path} failed (ValueError: odd entry); trying again at each scan; "
                                "this is a bug in pcapwatch: please report it"),
                      ("info", f"scanning {tmp_path} works again")]
    assert [gen.path for gen in spool.generations.values()] == [str(tmp_path / "cap.pcap0")]
