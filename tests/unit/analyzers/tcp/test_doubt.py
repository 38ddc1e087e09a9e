"""tcp.doubt: TCP checksums, and segments kept aside for a wrong one until another copy comes."""

from __future__ import annotations

import struct

import pytest
from helpers import pcapgen as g
from helpers.pcapgen import ACK, PSH, Conn, Segment

from analyzers.pipeline import Pipeline, split_records
from analyzers.records import to_record
from analyzers.tcp.doubt import doubt, prune, tcp_checksum_ok
from analyzers.tcp.reassembly import Stream, TcpCounters
from watcher.capture.pcapfile import CaptureParser

T0 = 1_700_000_000 * 10**9
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def spoil(frame: bytes) -> bytes:
    """The frame with its TCP checksum wrong (Ethernet + IPv4 without options)."""
    at = 14 + 20 + 16
    return frame[:at] + struct.pack("!H", struct.unpack_from("!H", frame, at)[0] ^ 0x1234) + frame[at + 2:]


@pytest.mark.parametrize("payload", [b"", b"x", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 5 + b"odd"])
def test_checksum(payload: bytes) -> None:
    s = Segment(T0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80, 123456, 654321, ACK | PSH, payload)
    frame = g.frames([s])[0][1]
    total = 20 + 20 + len(payload)
    assert tcp_checksum_ok(frame, 14, total)
    assert not tcp_checksum_ok(spoil(frame), 14, total)


def test_doubtful_copy_loses_to_another_and_a_difference_is_a_mismatch() -> None:
    c = TcpCounters()
    got: list[bytes] = []
    mismatches: list[float] = []
    s = Stream(c, lambda d, ts: got.append(d), lambda n, ts: got.append(b"?" * n), lambda ts: None)
    s.mismatch = mismatches.append
    s.syn(1000)
    assert doubt(s, 1001, b"GET /benign", 1.0)
    s.segment(1001, b"GET /secret", False, 1.1)
    prune(s, 1.1)
    assert (got, mismatches, c.checksum_dropped_segments, s.doubtful) == ([b"GET /secret"], [1.1], 1, {})


def test_doubtful_copy_fills_its_place_when_it_would_be_lost() -> None:
    c = TcpCounters()
    got: list[tuple[bytes, float]] = []
    s = Stream(c, lambda d, ts: got.append((d, ts)), lambda n, ts: got.append((b"?" * n, ts)), lambda ts: None)
    s.syn(1000)
    assert doubt(s, 1001, b"abc", 1.0)
    s.segment(1004, b"def", False, 1.1)
    s.close(2.0)
    assert got == [(b"abc", 1.0), (b"def", 2.0)]
    assert (c.checksum_accepted_segments, c.gaps) == (1, 0)


def _capture(first: bytes | None, real: bool) -> list[tuple[int, bytes]]:
    """Handshake; GET /r1 as `first` (a frame) and/or for real; the answer; close."""
    out: list[Segment] = []
    c = Conn(out, 1)
    c.open(T0)
    c.send(T0 + 20_000, True, b"GET /r1-secret HTTP/1.1\r\nHost: h\r\n\r\n")
    t = c.send(T0 + 30_000, False, OK)
    c.close(t + 1000)
    frames = g.frames(out)
    if not real:
        del frames[3]
    if first is not None:
        frames.insert(3, (T0 + 10_000, first))
    return frames


def fake() -> bytes:
    c = Conn([], 1)
    s = Segment(T0 + 10_000, c.c, c.s, c.cp, c.sp, c.cseq + 1, c.sseq + 1, ACK | PSH,
                b"GET /r1-benign HTTP/1.1\r\nHost: h\r\n\r\n")
    return spoil(g.frames([s])[0][1])


def both_ways(frames: list[tuple[int, bytes]]) -> tuple[object, ...]:
    """Records and checksum counters from `feed` and from `feed_records`, which must agree."""
    out = []
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, frames)
    for fast in (False, True):
        p = Pipeline()
        if fast:
            parser = CaptureParser()
            start = parser.header(data, 0)
            layout = parser.record_layout()
            assert layout is not None
            offsets, _end = split_records(data, start, len(data), layout)
            txs = p.feed_records(data, offsets, layout) + p.close()
        else:
            txs = p.feed(g.LINKTYPE_ETHERNET, [(i, ts / 1e9, f) for i, (ts, f) in enumerate(frames)]) + p.close()
        t = p.stats()["tcp"]
        out.append(([(r["uri"], r["status_code"], r["anomalies"]) for r in map(to_record, txs)],
                    t["checksum_dropped_segments"], t["checksum_accepted_segments"]))
    assert out[0] == out[1]
    return out[0]


def test_an_inserted_copy_with_a_bad_checksum_loses() -> None:
    assert both_ways(_capture(fake(), real=True)) == ([("/r1-secret", 200, ["retransmission_mismatch"])], 1, 0)


def test_the_only_copy_with_a_bad_checksum_is_taken() -> None:
    """A request edited by hand (as in some public test traces) and answered: no other copy comes."""
    assert both_ways(_capture(fake(), real=False)) == ([("/r1-benign", 200, [])], 0, 1)
