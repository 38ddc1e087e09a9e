"""The pcap action's writer: files the project's own reader (and tshark, in the integration test)
reads back byte for byte; appending only what is new; both caps, and what they let go counted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzers.packet_keep import Packet
from watcher.capture.pcapfile import CaptureParser
from watcher.sinks.pcap_sink import GLOBAL_HEADER, RECORD_HEADER, PcapSink, PcapSinkConfig, snapshot_item

T = 1_795_360_566.046071


def packets(n: int, size: int = 100, first: int = 0, t: float = T) -> tuple[Packet, ...]:
    return tuple((i, t + i * 0.001, 1, bytes([i % 256]) * size) for i in range(first, first + n))


def read(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    batches, end = CaptureParser().parse(data, 0)
    assert end == len(data)
    return [(ts, bytes(f)) for linktype, frames in batches for _, ts, f in frames if linktype == 1]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[PcapSink]:
    sink = PcapSinkConfig("pcap:d", tmp_path / "pcap", max_bytes=100_000, max_file_bytes=5_000).build().start()
    yield sink
    sink.close(5.0)


def write(sink: PcapSink, *items: tuple[str, str, tuple[Packet, ...], float]) -> list[Path]:
    for item in items:
        sink.submit(snapshot_item(*item))
    assert sink.flush(5.0)
    return sorted(sink.config.dir.iterdir())


def test_a_connection_file_reads_back_exactly_and_appends_only_what_is_new(writer: PcapSink) -> None:
    first = packets(5)
    (path,) = write(writer, ("slow/one", "Cabc", first, T))
    assert path.name == "slow_one-20261122T151606Z-Cabc.pcap"
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert read(path) == [(round(p[1], 6), p[3]) for p in first]
    later = packets(8)  # the same connection's snapshot at a later transaction: 3 packets more
    assert write(writer, ("other", "Cabc", later, T)) == [path]
    assert read(path) == [(round(p[1], 6), p[3]) for p in later]
    s = writer.stats()
    assert (s["files_written"], s["packets_written"], s["written"], s["dropped"]) == (1, 8, 2, 0)


def test_a_full_file_keeps_the_handshake_and_the_matching_transaction(writer: PcapSink) -> None:
    # 60 packets of 100 bytes cannot fit 5,000 bytes: the first three and those since `since`.
    snap = packets(60)
    since = snap[50][1]
    (path,) = write(writer, ("r", "Cfull", snap, since))
    assert [f[0] for _, f in read(path)] == [0, 1, 2, *range(50, 60)]
    assert writer.stats()["packets_capped"] == 47
    # The file had room: later packets fill it up, then it is full (capped).
    more = packets(100)
    write(writer, ("r", "Cfull", more, more[60][1]))
    got = read(path)
    room = (5_000 - GLOBAL_HEADER.size) // (RECORD_HEADER.size + 100)
    assert len(got) == room and [f[0] for _, f in got][13:] == list(range(60, 60 + room - 13))
    # A match after it is full: the handshake and that transaction's packets in a file of their own.
    last = packets(120)
    second = path.with_name(path.name.replace(".pcap", "-2.pcap"))
    assert set(write(writer, ("r", "Cfull", last, last[110][1]))) == {path, second}
    assert [f[0] for _, f in read(second)] == [0, 1, 2, *range(110, 120)]  # the handshake too


def test_the_directory_cap_removes_the_oldest_files(tmp_path: Path) -> None:
    sink = PcapSinkConfig("pcap:d", tmp_path, max_bytes=3_000, max_file_bytes=3_000).build().start()
    stranger = tmp_path / "notes.txt"
    stranger.write_text("not ours")
    try:
        for k in range(5):  # 5 files of 1,024 bytes (header, 5 x (16 + 180))
            write(sink, ("r", f"C{k}", packets(5, size=180), T))
        names = sorted(p.name for p in tmp_path.glob("*.pcap"))
        assert names == [f"r-20261122T151606Z-C{k}.pcap" for k in (3, 4)]
        assert sum(p.stat().st_size for p in tmp_path.glob("*.pcap")) <= 3_000
        assert stranger.read_text() == "not ours"
        s = sink.stats()
        assert (s["files_written"], s["files_removed"]) == (5, 3)
        # A connection whose file was removed starts a new one.
        write(sink, ("r", "C0", packets(6, size=180), T))
        assert len(read(tmp_path / "r-20261122T151606Z-C0.pcap")) == 6
    finally:
        sink.close(5.0)


def test_files_already_in_the_directory_count_toward_its_cap(tmp_path: Path) -> None:
    old = tmp_path / "old.pcap"
    old.write_bytes(b"\0" * 2_500)
    os.utime(old, (1, 1))
    sink = PcapSinkConfig("pcap:d", tmp_path, max_bytes=3_000, max_file_bytes=3_000).build().start()
    try:
        write(sink, ("r", "Cnew", packets(5, size=180), T))
        assert not old.exists() and sink.stats()["files_removed"] == 1
    finally:
        sink.close(5.0)


def test_packets_of_another_link_type_are_counted_not_written(writer: PcapSink) -> None:
    mixed = (*packets(2), (2, T + 1, 113, b"sll frame"), *packets(2, first=3))
    (path,) = write(writer, ("r", "Cmix", mixed, T))
    assert [f[0] for _, f in read(path)] == [0, 1, 3, 4]
    assert writer.stats()["packets_other_linktype"] == 1


def test_an_unwritable_directory_is_retried_and_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = PcapSink(PcapSinkConfig("pcap:d", blocker / "sub", max_bytes=10_000, max_file_bytes=5_000),
                    log=lambda level, msg: None).start()
    try:
        sink.submit(snapshot_item("r", "C1", packets(3), T))
        assert not sink.flush(0.5)  # cannot create the directory: held and retried
        assert sink.stats()["errors"] >= 1
    finally:
        sink.close(0.2)
    s = sink.stats()
    assert (s["submitted"], s["written"], s["dropped"]) == (1, 0, 1)
