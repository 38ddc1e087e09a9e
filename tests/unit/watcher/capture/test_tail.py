"""watcher/tail.py: one generation read while it grows, resumed at an offset, and noticed when the
ring rewrites it under an open descriptor. Real files in a tmp dir, written a piece at a time."""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path

import pytest
from helpers import pcapgen as g

from watcher.capture.pcapfile import CaptureError, CaptureParser, Frame
from watcher.capture.spool import GZIP_SETTLE_SECONDS, Generation, Spool
from watcher.capture.tail import GenerationReader, Rewritten

T0 = 1_700_000_000 * 10**9
ETH = g.LINKTYPE_ETHERNET
HEADER = 24
RECORD = 16 + 60


def packets(n: int, first: int = 0) -> list[tuple[int, bytes]]:
    """`n` 60-byte frames, 1 ms apart, each filled with its index."""
    return [(T0 + i * 10**6, bytes([i]) * 60) for i in range(first, first + n)]


def generation(path: Path) -> Generation:
    """The spool's view of the one capture in `path`'s directory."""
    spool = Spool(str(path.parent))
    spool.scan(time.time())
    (gen,) = spool.ordered()
    return gen


def read_all(reader: GenerationReader) -> list[Frame]:
    out: list[Frame] = []
    for link, frames in reader.read():
        assert link == ETH
        out += frames
    return out


def parsed(data: bytes) -> list[Frame]:
    """Every frame of a whole capture, as one parse of all its bytes gives them: what tailing it in
    pieces, or from an offset, must give too."""
    batches, used = CaptureParser().parse(data, 0)
    assert used == len(data)
    return [f for _link, frames in batches for f in frames]


def frames_from(data: bytes, start: int) -> list[Frame]:
    return [f for f in parsed(data) if f[0] >= start]


def test_partial_record_waits_for_the_rest(tmp_path: Path) -> None:
    whole = g.pcap_bytes(ETH, packets(3))
    path = tmp_path / "cap.pcap"
    cut = HEADER + RECORD + 30  # the second record half written
    path.write_bytes(whole[:cut])
    reader = GenerationReader(generation(path))
    try:
        first = read_all(reader)
        assert [f[0] for f in first] == [HEADER] and first == parsed(whole)[:1]
        assert (reader.offset, reader.pending, reader.eof_partial) == (HEADER + RECORD, whole[HEADER + RECORD:cut], 30)
        assert read_all(reader) == []  # nothing new: still waiting
        with open(path, "ab") as f:
            f.write(whole[cut:cut + 40])  # still not complete
        assert read_all(reader) == []
        with open(path, "ab") as f:
            f.write(whole[cut + 40:])
        assert read_all(reader) == parsed(whole)[1:]
        assert (reader.offset, reader.pending, reader.eof_partial) == (len(whole), b"", 0)
    finally:
        reader.close()


def test_resume_at_an_offset_in_pcap(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    data = g.pcap_bytes(ETH, packets(5))
    path.write_bytes(data)
    start = HEADER + 3 * RECORD
    reader = GenerationReader(generation(path), start)
    try:
        got = read_all(reader)
        assert [f[0] for f in got] == [start, start + RECORD] and got == frames_from(data, start)
        assert reader.offset == len(data)
    finally:
        reader.close()


@pytest.mark.parametrize("nanos", [False, True])
def test_resume_at_an_offset_in_pcapng(tmp_path: Path, nanos: bool) -> None:
    """pcapng needs its section and interface blocks first; frames before `start` are dropped."""
    head = len(g.pcapng_bytes([ETH], [], nanos=nanos))
    epb = len(g.pcapng_bytes([ETH], [(0, T0, bytes(60))], nanos=nanos)) - head  # one packet block
    path = tmp_path / "cap.pcapng"
    data = g.pcapng_bytes([ETH], [(0, ts, frame) for ts, frame in packets(6)], nanos=nanos)
    path.write_bytes(data[:head + 5 * epb])
    gen = generation(path)
    whole = GenerationReader(gen)
    try:
        assert [f[0] for f in read_all(whole)] == [head + i * epb for i in range(5)]
    finally:
        whole.close()
    start = head + 3 * epb
    reader = GenerationReader(gen, start)
    try:
        got = read_all(reader)
        assert [f[0] for f in got] == [start, start + epb] and got == frames_from(data, start)[:2]
        assert reader.offset == head + 5 * epb
        with open(path, "ab") as f:  # tailing goes on past the resume point
            f.write(data[head + 5 * epb:])
        assert read_all(reader) == frames_from(data, head + 5 * epb)
    finally:
        reader.close()


def test_rewritten_in_place_raises(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap0"
    data = g.pcap_bytes(ETH, packets(3))
    path.write_bytes(data)
    reader = GenerationReader(generation(path))
    try:
        assert read_all(reader) == parsed(data)
        assert reader.intact()
        with open(path, "r+b") as f:  # tcpdump's ring reuses the slot: same inode, new capture
            f.truncate(0)
            f.write(g.pcap_bytes(ETH, packets(4, 10)))
        assert not reader.intact()
        with pytest.raises(Rewritten):
            read_all(reader)
    finally:
        reader.close()


def test_truncated_to_a_header_raises(tmp_path: Path) -> None:
    """Just after the ring truncated the slot and wrote the new header: the first record is not
    there yet, and the old one is gone."""
    path = tmp_path / "cap.pcap0"
    whole = g.pcap_bytes(ETH, packets(3))
    path.write_bytes(whole)
    reader = GenerationReader(generation(path))
    try:
        read_all(reader)
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(whole[:HEADER])
        with pytest.raises(Rewritten):
            read_all(reader)
    finally:
        reader.close()


def test_compressed_generation_read_whole_and_resumed(tmp_path: Path) -> None:
    data = g.pcap_bytes(ETH, packets(4))
    path = tmp_path / "cap.pcap1.gz"
    path.write_bytes(gzip.compress(data))
    t = time.time() - GZIP_SETTLE_SECONDS - 1
    os.utime(path, (t, t))
    gen = generation(path)
    assert gen.compressed
    assert read_all(GenerationReader(gen)) == parsed(data)
    start = HEADER + 2 * RECORD
    reader = GenerationReader(gen, start)
    got = read_all(reader)
    assert [f[0] for f in got] == [start, start + RECORD] and got == frames_from(data, start)
    assert reader.offset == len(data)


def test_corrupt_record_after_good_ones_is_reported_not_waited_for(tmp_path: Path) -> None:
    """A record header no capture can have (16 MB captured) cannot be completed by more bytes: the
    frames before it come out, then CaptureError at its offset, even with nothing after it."""
    good = g.pcap_bytes(ETH, packets(2))
    path = tmp_path / "cap.pcap"
    path.write_bytes(good + struct.pack("<IIII", T0 // 10**9, 0, 0xFFFFFF, 0xFFFFFF) + bytes(60))
    reader = GenerationReader(generation(path))
    got: list[Frame] = []
    try:
        with pytest.raises(CaptureError) as e:
            for _link, frames in reader.read():
                got += frames
        assert e.value.offset == len(good)
        assert got == parsed(good)
    finally:
        reader.close()
