"""reassembly.Stream: segments in, "bytes" / "gap of N" / "end" out, in stream order."""

from __future__ import annotations

from analyzers.tcp.limits import (
    ACK_UNSEEN_SLACK,
    HOLE_WAIT_BYTES,
    HOLE_WAIT_PACKETS,
    HOLE_WAIT_SECONDS,
    MARK_OVERHEAD,
    MAX_PENDING_BYTES_PER_STREAM,
    PIECE_OVERHEAD,
    SEQ_MOD,
)
from analyzers.tcp.reassembly import Stream, TcpCounters, ack_ahead

Event = tuple[object, ...]


class Upper:
    """What the HTTP side would receive."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def data(self, data: bytes, ts: float) -> None:
        self.events.append(("data", data, ts))

    def gap(self, n: int, ts: float) -> None:
        self.events.append(("gap", n, ts))

    def eof(self, ts: float) -> None:
        self.events.append(("eof", ts))

    def stream(self) -> bytes:
        """Delivered bytes with each gap as that many '?' (positions must line up)."""
        out = b""
        for e in self.events:
            if e[0] == "data":
                assert isinstance(e[1], bytes)
                out += e[1]
            elif e[0] == "gap":
                assert isinstance(e[1], int)
                out += b"?" * e[1]
        return out


def make(isn: int | None = 1000, counters: TcpCounters | None = None) -> tuple[Stream, Upper, TcpCounters]:
    c = counters if counters is not None else TcpCounters()
    up = Upper()
    s = Stream(c, up.data, up.gap, up.eof)
    if isn is not None:
        s.syn(isn)
    return s, up, c


def test_in_order() -> None:
    s, up, c = make()
    s.segment(1001, b"GET ", False, 1.0)
    s.segment(1005, b"/ HTTP/1.1\r\n", False, 1.1)
    assert up.events == [("data", b"GET ", 1.0), ("data", b"/ HTTP/1.1\r\n", 1.1)]
    assert c == TcpCounters()
    assert (s.offset, s.midstream) == (16, False)


def test_empty_segment_delivers_nothing() -> None:
    """A pure ACK carries no bytes: nothing goes upward (an empty delivery would move the
    parser's last-byte time of a message body to the ACK's time)."""
    s, up, _ = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1004, b"", False, 1.2)
    s.segment(1005, b"", False, 1.3)
    assert up.events == [("data", b"abc", 1.0)]


def test_midstream_first_segment_fixes_the_base() -> None:
    s, up, _ = make(isn=None)
    s.segment(555, b"abc", False, 1.0)
    s.segment(558, b"def", False, 1.1)
    assert up.events == [("data", b"abc", 1.0), ("data", b"def", 1.1)]
    assert s.midstream


def test_retransmission_is_counted_not_delivered() -> None:
    s, up, c = make()
    s.segment(1001, b"abcdef", False, 1.0)
    s.segment(1001, b"abcdef", False, 1.1)
    s.segment(1004, b"de", False, 1.2)
    assert up.events == [("data", b"abcdef", 1.0)]
    assert (c.retransmitted_segments, c.retransmitted_bytes, c.overlap_segments) == (2, 8, 0)


def test_partial_overlap_delivers_only_new_bytes() -> None:
    s, up, c = make()
    s.segment(1001, b"abcdef", False, 1.0)
    s.segment(1005, b"efGHI", False, 1.1)
    assert up.events == [("data", b"abcdef", 1.0), ("data", b"GHI", 1.1)]
    assert (c.overlap_segments, c.overlap_bytes, c.retransmitted_segments) == (1, 2, 0)


def test_out_of_order_is_buffered_then_delivered_when_the_hole_fills() -> None:
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1010, b"jkl", False, 1.1)
    s.segment(1007, b"ghi", False, 1.2)
    assert up.events == [("data", b"abc", 1.0)]
    assert (s.pending_bytes, c.buffered_bytes, c.out_of_order_segments) == (6, 6, 2)
    s.segment(1004, b"def", False, 1.3)
    # Buffered runs that touch are merged: the filled hole delivers them in one piece.
    assert up.events == [("data", b"abc", 1.0), ("data", b"defghijkl", 1.3)]
    assert (s.pending_bytes, c.buffered_bytes, c.buffered_pieces, c.gaps) == (0, 0, 0, 0)


def test_out_of_order_overlap_with_differing_bytes_first_wins() -> None:
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1007, b"ghi", False, 1.1)
    s.segment(1006, b"fGHij", False, 1.2)  # 'gh' arrives again, different: the first copy stays
    s.segment(1004, b"de", False, 1.3)
    assert up.stream() == b"abcdefghij"
    assert (c.overlap_segments, c.overlap_bytes, c.overlap_mismatch_segments) == (1, 3, 1)
    assert c.buffered_bytes == 0


def test_out_of_order_identical_overlap_is_not_a_mismatch() -> None:
    s, up, c = make()
    s.segment(1001, b"a", False, 1.0)
    s.segment(1005, b"efg", False, 1.1)
    s.segment(1004, b"defgh", False, 1.2)
    s.segment(1002, b"bc", False, 1.3)
    assert up.stream() == b"abcdefgh"
    assert (c.overlap_segments, c.overlap_bytes, c.overlap_mismatch_segments) == (1, 3, 0)


def test_in_order_segment_overlapping_buffered_bytes_first_wins() -> None:
    """A segment that fills the hole and runs over bytes already buffered must not replace them:
    the buffered copy came first, and differing bytes are a mismatch (an evasion attempt)."""
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1007, b"ghi", False, 1.1)
    s.segment(1004, b"deXYZ", False, 1.2)  # offsets 3..7; 'YZ' overlaps the buffered 'gh'
    assert up.stream() == b"abcdeXghi"
    assert (c.overlap_bytes, c.overlap_mismatch_segments) == (2, 1)


def test_sequence_wraparound() -> None:
    s, up, c = make(isn=SEQ_MOD - 3)
    s.segment(SEQ_MOD - 2, b"abc", False, 1.0)  # offsets 0..2; the next byte is sequence number 1
    s.segment(1, b"def", False, 1.1)
    s.segment(7, b"jk", False, 1.2)
    s.segment(4, b"ghi", False, 1.3)
    s.segment(SEQ_MOD - 1, b"bc", False, 1.4)  # an old retransmission from before the wrap
    assert up.events == [("data", b"abc", 1.0), ("data", b"def", 1.1), ("data", b"ghijk", 1.3)]
    assert (c.retransmitted_segments, c.gaps) == (1, 0)


def test_syn_at_the_top_of_sequence_space() -> None:
    s, up, _ = make(isn=SEQ_MOD - 1)
    s.segment(0, b"xy", False, 1.0)
    assert up.events == [("data", b"xy", 1.0)]


def test_ack_beyond_a_hole_reports_a_gap_when_the_wait_runs_out() -> None:
    """The peer acknowledged bytes the capture has not shown: evidence they were sent. The hole
    waits HOLE_WAIT_SECONDS of capture time for them, then is declared lost."""
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1010, b"jkl", False, 1.1)
    s.acked(1008, 1.2)  # inside the hole: the peer is still waiting too
    assert up.events == [("data", b"abc", 1.0)]
    s.acked(1010, 1.3)
    assert up.events == [("data", b"abc", 1.0)]  # the wait starts
    s.acked(1013, 1.3 + HOLE_WAIT_SECONDS / 2)
    assert up.events == [("data", b"abc", 1.0)]
    s.acked(1013, 1.3 + HOLE_WAIT_SECONDS)  # said again: no news
    s.acked(1014, 1.3 + HOLE_WAIT_SECONDS)
    # Declared at the time of the first ACK into the hole (1.2): what follows it is delivered at
    # that time too, not when the wait ran out (records keep their timing).
    assert up.events == [("data", b"abc", 1.0), ("gap", 6, 1.2), ("data", b"jkl", 1.2)]
    assert (c.gaps, c.gap_bytes, c.buffered_bytes, c.holes_expired) == (1, 6, 0, 1)


def test_ack_beyond_a_hole_then_the_late_segment_fills_it() -> None:
    """Capture order is not wire order: the segment turns up after the ACK that covers it."""
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1007, b"ghi", False, 1.1)
    s.acked(1010, 1.2)
    s.segment(1004, b"def", False, 1.25)
    assert up.events == [("data", b"abc", 1.0), ("data", b"defghi", 1.25)]
    assert (c.gaps, c.late_segments_filled, c.retransmitted_segments, s.wait_since) == (0, 1, 0, None)
    s.acked(1010, 5.0)  # nothing left to declare
    assert c.gaps == 0


def test_hole_behind_an_ack_expires_when_enough_bytes_wait_behind_it() -> None:
    s, up, c = make()
    s.segment(1001, b"a", False, 1.0)
    s.segment(1003, b"x" * 1000, False, 1.0)
    s.acked(1003, 1.0)
    piece = b"y" * (HOLE_WAIT_BYTES // 8)  # bytes run out before packets do
    seq = 1003 + 1000
    while s.pending:
        s.segment(seq, piece, False, 1.01)
        seq += len(piece)
    # Declared when the bytes waiting behind the hole first reached HOLE_WAIT_BYTES, well before
    # the time limit (all of this is 10 ms of capture time).
    assert (c.holes_expired, c.gaps, c.gap_bytes) == (1, 1, 1)
    assert 0 <= s.offset - 2 - HOLE_WAIT_BYTES < len(piece)
    assert up.events[1] == ("gap", 1, 1.0)
    assert up.stream() == b"a?" + b"x" * 1000 + piece * ((s.offset - 1002) // len(piece))


def test_hole_behind_an_ack_expires_after_enough_packets() -> None:
    """Capture reordering moves a packet a few places: after HOLE_WAIT_PACKETS more packets of the
    connection, the hole is lost, however little time has passed."""
    s, up, c = make()
    s.segment(1001, b"a", False, 1.0)
    s.segment(1003, b"c", False, 1.0)
    s.acked(1004, 1.0)  # the wait starts: packet 1
    for k in range(HOLE_WAIT_PACKETS - 1):
        s.acked(1004, 1.0 + k * 1e-6)
    assert up.events == [("data", b"a", 1.0)]
    s.acked(1004, 1.001)
    assert up.events == [("data", b"a", 1.0), ("gap", 1, 1.0), ("data", b"c", 1.0)]
    assert c.holes_expired == 1


def test_ack_beyond_delivered_data_is_no_gap_on_its_own() -> None:
    """The receiver acknowledges bytes never seen at all: lost by the capture, or a forged ACK. On
    its word alone nothing is declared (a forged ACK would hide the real bytes that follow); the
    close reports what a plausible window of unseen bytes says is missing."""
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    assert not ack_ahead(s, 1004) and ack_ahead(s, 5000)
    s.acked(5000, 1.1)
    s.acked(5000, 9.0)
    assert up.events == [("data", b"abc", 1.0)]
    assert (c.gaps, c.acks_beyond_seen) == (0, 1)
    s.close(9.5)
    assert up.events == [("data", b"abc", 1.0), ("gap", 3996, 9.5), ("eof", 9.5)]
    assert (c.gaps, c.gap_bytes) == (1, 3996)


def test_bytes_behind_an_expired_hole_keep_their_arrival_times() -> None:
    s, up, _ = make()
    s.segment(1001, b"a", False, 1.0)
    s.segment(1005, b"ef", False, 1.1)
    s.segment(1003, b"cd", False, 1.2)
    s.acked(1007, 1.5)
    s.segment(1007, b"gh", False, 1.7)
    s.segment(1009, b"ij", False, 1.8)
    s.acked(1011, 2.6)
    assert up.events == [("data", b"a", 1.0), ("gap", 1, 1.5), ("data", b"cd", 1.5), ("data", b"ef", 1.5),
                         ("data", b"gh", 1.7), ("data", b"ij", 1.8)]


def test_forged_ack_far_ahead_declares_nothing() -> None:
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.acked(1001 + 100_000_000, 1.1)  # 100 MB ahead
    s.segment(1004, b"def", False, 5.0)  # the real bytes keep coming, in order
    s.acked(1007, 5.1)
    s.segment(1007, b"ghi", False, 9.0)
    s.close(9.5)
    assert up.events == [("data", b"abc", 1.0), ("data", b"def", 5.0), ("data", b"ghi", 9.0), ("eof", 9.5)]
    assert (c.gaps, c.retransmitted_segments, c.acks_beyond_seen) == (0, 0, 1)
    assert ACK_UNSEEN_SLACK < 100_000_000


def test_ack_of_the_fin_is_not_a_gap() -> None:
    s, _, c = make()
    s.segment(1001, b"abc", True, 1.0)
    s.acked(1005, 1.1)  # data 1001..1003, FIN 1004: the ACK of the FIN is 1005
    assert c.gaps == 0


def test_fin_in_order_ends_the_stream() -> None:
    s, up, _ = make()
    s.segment(1001, b"abc", True, 1.0)
    s.segment(1004, b"late", False, 1.1)
    s.close(2.0)
    assert up.events == [("data", b"abc", 1.0), ("eof", 1.0)]
    assert s.finished


def test_fin_before_missing_data_waits_for_it() -> None:
    s, up, _ = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1007, b"ghi", True, 1.1)
    assert up.events == [("data", b"abc", 1.0)]
    s.segment(1004, b"def", False, 1.2)
    assert up.events == [("data", b"abc", 1.0), ("data", b"defghi", 1.2), ("eof", 1.2)]


def test_fin_then_ack_beyond_hole_ends_the_stream() -> None:
    s, up, _ = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1007, b"ghi", True, 1.1)
    s.acked(1011, 1.2)
    assert up.events == [("data", b"abc", 1.0)]
    s.expire(1.2 + HOLE_WAIT_SECONDS / 2)  # as the flow table's sweep does: not yet
    assert up.events == [("data", b"abc", 1.0)]
    s.acked(1011, 1.2 + HOLE_WAIT_SECONDS)  # no news, but the wait is checked all the same
    assert up.events == [("data", b"abc", 1.0), ("gap", 3, 1.2), ("data", b"ghi", 1.2), ("eof", 2.2)]


def test_gap_at_close_before_fin() -> None:
    """FIN seen at offset 9 but only 3 bytes arrived: the close reports the 6 missing bytes."""
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1010, b"", True, 1.1)
    assert up.events == [("data", b"abc", 1.0)]
    s.close(1.5)
    assert up.events == [("data", b"abc", 1.0), ("gap", 6, 1.5), ("eof", 1.5)]
    assert (c.gaps, c.gap_bytes) == (1, 6)


def test_close_flushes_buffered_data() -> None:
    s, up, c = make()
    s.segment(1001, b"abc", False, 1.0)
    s.segment(1007, b"ghi", False, 1.1)
    s.segment(1013, b"mn", False, 1.2)
    s.close(1.5)
    assert up.events == [("data", b"abc", 1.0), ("gap", 3, 1.5), ("data", b"ghi", 1.5), ("gap", 3, 1.5),
                         ("data", b"mn", 1.5), ("eof", 1.5)]
    assert (c.gaps, c.gap_bytes, c.buffered_bytes) == (2, 6, 0)
    s.close(2.0)  # a second close says nothing
    assert len(up.events) == 6


def test_per_stream_buffer_limit_flushes() -> None:
    s, up, c = make()
    s.segment(1001, b"a", False, 1.0)
    piece = b"x" * 65536
    seq = 1001 + 10
    count = MAX_PENDING_BYTES_PER_STREAM // len(piece)
    for i in range(count):
        s.segment(seq + i * len(piece), piece, False, 2.0)
    assert c.stream_buffer_flushes == 0 and s.pending_bytes == MAX_PENDING_BYTES_PER_STREAM
    s.segment(seq + count * len(piece), b"yz", False, 3.0)
    assert c.stream_buffer_flushes == 1
    assert up.events[:3] == [("data", b"a", 1.0), ("gap", 9, 3.0), ("data", piece * count + b"yz", 3.0)]
    assert up.stream() == b"a" + b"?" * 9 + piece * count + b"yz"
    assert (s.pending_bytes, c.buffered_bytes, c.gaps, c.gap_bytes) == (0, 0, 1, 9)


def test_global_buffer_limit_flushes_the_stream_that_crossed_it() -> None:
    counters = TcpCounters(buffered_bytes_limit=1000 + 2 * (PIECE_OVERHEAD + MARK_OVERHEAD))  # two runs
    a, up_a, c = make(counters=counters)
    b, up_b, _ = make(isn=5000, counters=counters)
    a.segment(1001, b"a", False, 1.0)
    a.segment(1101, b"A" * 600, False, 1.1)
    b.segment(5001, b"b", False, 1.2)
    b.segment(5101, b"B" * 300, False, 1.3)
    assert (c.global_buffer_flushes, c.buffered_bytes) == (0, 900)
    b.segment(5401, b"C" * 300, False, 1.4)
    assert c.global_buffer_flushes == 1
    assert up_b.stream() == b"b" + b"?" * 99 + b"B" * 300 + b"C" * 300
    assert up_a.events == [("data", b"a", 1.0)]  # the other stream keeps waiting
    assert (c.buffered_bytes, a.pending_bytes, b.pending_bytes) == (600, 600, 0)


def test_release_returns_buffered_bytes_to_the_global_count() -> None:
    counters = TcpCounters()
    a, up_a, c = make(counters=counters)
    b, _, _ = make(isn=5000, counters=counters)
    a.segment(1001, b"a", False, 1.0)
    a.segment(1005, b"efgh", False, 1.1)
    b.segment(5001, b"b", False, 1.2)
    b.segment(5010, b"0123456789", False, 1.3)
    assert c.buffered_bytes == 14
    a.release()
    assert (c.buffered_bytes, a.pending_bytes, a.pending) == (10, 0, [])
    assert up_a.events == [("data", b"a", 1.0)]  # released, not delivered
    b.release()
    assert c.buffered_bytes == 0
