"""TCP stream reassembly for one direction of one connection.

Like Zeek's TCP_Reassembler, it delivers upward only "here are bytes" or "here is a gap of N bytes";
the HTTP side never sees a sequence number. Positions are kept as unbounded stream offsets
(bytes since the first sequence number seen), so sequence wraparound is handled in one place,
the conversion in `segment`.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable
from dataclasses import dataclass

SEQ_MOD = 1 << 32
SEQ_HALF = 1 << 31
# Out-of-order bytes one direction may hold while waiting for a missing segment. Most holes close
# within a window (a retransmission or the peer's ACK proves the bytes were lost in capture);
# 1 MiB covers a full default Linux receive window at gigabit RTTs.
MAX_PENDING_BYTES_PER_STREAM = 1 << 20
# An ACK further ahead than this is not about this stream's data (garbage, or a mix-up after
# sequence numbers were lost track of); a real window is far smaller.
MAX_ACK_AHEAD = 1 << 30


def ack_ahead(stream: Stream, ack: int) -> bool:
    """Cheap test, per packet: does `ack` acknowledge bytes of `stream` not delivered yet?"""
    base = stream.base
    return base is not None and 0 < (ack - base - stream.offset) % SEQ_MOD < MAX_ACK_AHEAD


@dataclass(slots=True)
class TcpCounters:
    """Reassembly counters shared by every stream of one analyzer (and the global buffer budget)."""

    retransmitted_segments: int = 0
    retransmitted_bytes: int = 0
    overlap_segments: int = 0
    overlap_bytes: int = 0
    overlap_mismatch_segments: int = 0
    out_of_order_segments: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    stream_buffer_flushes: int = 0
    global_buffer_flushes: int = 0
    buffered_bytes: int = 0
    buffered_bytes_limit: int = 256 << 20


Deliver = Callable[[bytes, float], None]
Gap = Callable[[int, float], None]
Eof = Callable[[float], None]


class Stream:
    """One direction's byte stream, rebuilt in sequence order.

    `deliver(data, ts)`, `gap(n, ts)` and `eof(ts)` are called in stream order; `ts` is the capture
    time of the packet that made the bytes deliverable.
    """

    __slots__ = (
        "base",
        "counters",
        "deliver",
        "eof",
        "fin_offset",
        "finished",
        "gap",
        "midstream",
        "offset",
        "pending",
        "pending_bytes",
    )

    def __init__(self, counters: TcpCounters, deliver: Deliver, gap: Gap, eof: Eof) -> None:
        self.counters = counters
        self.deliver = deliver
        self.gap = gap
        self.eof = eof
        self.base: int | None = None  # sequence number of stream offset 0
        self.offset = 0  # stream offset of the next byte to deliver
        self.pending: list[tuple[int, bytes]] = []  # out-of-order (offset, data), sorted
        self.pending_bytes = 0
        self.fin_offset: int | None = None
        self.finished = False
        self.midstream = False

    def syn(self, seq: int) -> None:
        """A SYN fixes the initial sequence number; data starts one past it."""
        if self.base is None:
            self.base = (seq + 1) % SEQ_MOD

    def _rel(self, seq: int) -> int:
        """Stream offset of `seq`, taking the nearest one to the current position (wraparound)."""
        assert self.base is not None
        d = (seq - self.base - self.offset) % SEQ_MOD
        if d >= SEQ_HALF:
            d -= SEQ_MOD
        return self.offset + d

    def segment(self, seq: int, payload: bytes, fin: bool, ts: float) -> None:
        """Take one segment's payload (possibly empty) and deliver what has become contiguous."""
        base = self.base
        if base is not None and payload and not fin and not self.pending and not self.finished:
            off = self.offset
            if (seq - base - off) & 0xFFFFFFFF == 0:  # the common case: next in order, nothing waiting
                self.offset = off + len(payload)
                self.deliver(payload, ts)
                return
        self._segment(seq, payload, fin, ts)

    def _segment(self, seq: int, payload: bytes, fin: bool, ts: float) -> None:
        if self.finished:
            return
        if self.base is None:
            self.base = seq
            self.midstream = True
        start = self._rel(seq)
        n = len(payload)
        if fin:
            self.fin_offset = start + n
        if n:
            if start < self.offset:
                start, payload = self._trim_old(start, payload)
            if not payload:
                pass
            elif self.pending:  # may overlap bytes already buffered: those came first and win
                self._insert(start, payload, ts)
                self._drain(ts)
            elif start == self.offset:
                self.offset += len(payload)
                self.deliver(payload, ts)
            else:
                self._insert(start, payload, ts)
        self._check_fin(ts)

    def _check_fin(self, ts: float) -> None:
        if self.fin_offset is not None and self.offset >= self.fin_offset and not self.pending:
            self.finished = True
            self.eof(ts)

    def _trim_old(self, start: int, payload: bytes) -> tuple[int, bytes]:
        """Drop the part of a segment that was already delivered (a retransmission)."""
        old = self.offset - start
        c = self.counters
        if old >= len(payload):
            c.retransmitted_segments += 1
            c.retransmitted_bytes += len(payload)
            return self.offset, b""
        c.overlap_segments += 1
        c.overlap_bytes += old
        return self.offset, payload[old:]

    def _insert(self, start: int, payload: bytes, ts: float) -> None:
        """Buffer a segment, keeping bytes already buffered where they overlap (first wins)."""
        c = self.counters
        if start > self.offset:
            c.out_of_order_segments += 1
        end = start + len(payload)
        pieces = [(start, payload)]
        for pstart, pdata in self.pending:
            pend = pstart + len(pdata)
            if pend <= start or pstart >= end:
                continue
            pieces = _cut(pieces, pstart, pend, pdata, c)
        for piece in pieces:
            insort(self.pending, piece)
            self.pending_bytes += len(piece[1])
            c.buffered_bytes += len(piece[1])
        if self.pending_bytes > MAX_PENDING_BYTES_PER_STREAM:
            c.stream_buffer_flushes += 1
            self.flush(ts)
        elif c.buffered_bytes > c.buffered_bytes_limit:
            c.global_buffer_flushes += 1
            self.flush(ts)

    def _drain(self, ts: float) -> None:
        pending = self.pending
        while pending and pending[0][0] <= self.offset:
            pstart, pdata = pending.pop(0)
            self.pending_bytes -= len(pdata)
            self.counters.buffered_bytes -= len(pdata)
            skip = self.offset - pstart
            if skip >= len(pdata):
                self.counters.retransmitted_segments += 1
                self.counters.retransmitted_bytes += len(pdata)
                continue
            data = pdata[skip:] if skip else pdata
            self.offset += len(data)
            self.deliver(data, ts)

    def acked(self, ack: int, ts: float) -> None:
        """The peer acknowledged up to `ack`: bytes it received that we never saw were lost by the
        capture, not the network, and will not come again. Report them now rather than at close.

        The caller checks first that `ack` is ahead of what was delivered (see `ack_ahead`).
        """
        if self.base is None or self.finished:
            return
        rel = self._rel(ack)
        if self.pending:
            if rel >= self.pending[0][0]:
                self.flush(ts)
                self._check_fin(ts)
            return
        ahead = rel - self.offset
        if self.fin_offset is not None:
            ahead = min(ahead, self.fin_offset - self.offset)  # the FIN takes a number too
        if 0 < ahead < MAX_ACK_AHEAD:
            self._gap(ahead, ts)
            self._check_fin(ts)

    def flush(self, ts: float) -> None:
        """Give up waiting: report each hole as a gap and deliver everything buffered."""
        while self.pending:
            hole = self.pending[0][0] - self.offset
            if hole > 0:
                self._gap(hole, ts)
            self._drain(ts)

    def _gap(self, n: int, ts: float) -> None:
        self.counters.gaps += 1
        self.counters.gap_bytes += n
        self.offset += n
        self.gap(n, ts)

    def close(self, ts: float) -> None:
        """The connection ended (FIN/RST seen, idle, evicted or capture over): deliver what is left."""
        if self.finished:
            return
        self.flush(ts)
        if self.fin_offset is not None and self.fin_offset > self.offset:
            self._gap(self.fin_offset - self.offset, ts)
        self.finished = True
        self.eof(ts)

    def release(self) -> None:
        """Return this stream's buffered bytes to the global budget (eviction without delivery)."""
        self.counters.buffered_bytes -= self.pending_bytes
        self.pending = []
        self.pending_bytes = 0


def _cut(pieces: list[tuple[int, bytes]], pstart: int, pend: int, pdata: bytes,
         c: TcpCounters) -> list[tuple[int, bytes]]:
    """Remove [pstart, pend) from each piece (first wins), counting overlaps and differing bytes."""
    out = []
    for start, data in pieces:
        end = start + len(data)
        lo, hi = max(start, pstart), min(end, pend)
        if lo >= hi:
            out.append((start, data))
            continue
        c.overlap_segments += 1
        c.overlap_bytes += hi - lo
        if data[lo - start:hi - start] != pdata[lo - pstart:hi - pstart]:
            c.overlap_mismatch_segments += 1
        if start < lo:
            out.append((start, data[:lo - start]))
        if hi < end:
            out.append((hi, data[hi - start:]))
    return out
