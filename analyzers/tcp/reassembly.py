"""TCP stream reassembly for one direction of one connection.

Like Zeek's TCP_Reassembler, it delivers upward only "here are bytes" or "here is a gap of N bytes";
the HTTP side never sees a sequence number. Positions are kept as unbounded stream offsets
(bytes since the first sequence number seen), so sequence wraparound is handled in one place,
the conversion in `segment`.

Out-of-order bytes wait in a sorted list of disjoint runs that merge as they touch, so
that a flood of tiny segments in any order costs time linear in its bytes. A capture's order is
not the wire's: the peer's ACK of bytes not seen yet is evidence that they were sent, not proof
that the capture lost them (multi-queue NICs, `-i any` and merged captures put a segment after the
ACK that covers it). A hole behind such an ACK is kept open for a bounded while (capture time,
bytes and packets behind it: the bounds are in limits.py) and declared a gap only when that runs
out, the buffer bounds are reached, or the connection ends.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from types import MappingProxyType

from analyzers.tcp import limits
from analyzers.tcp.limits import MAX_ACK_AHEAD, MAX_PENDING_BYTES_PER_STREAM, RECENT_BYTES, SEQ_HALF, SEQ_MOD
from analyzers.tcp.runs import Run, TcpCounters, differs, merge

# The shared empty containers of streams that hold nothing yet (see `Stream.__init__`): immutable,
# so a write that forgot to make its own container fails loudly instead of sharing.
_NONE: tuple[()] = ()
NO_DOUBT: Mapping[int, tuple[bytes, float]] = MappingProxyType({})


def ack_ahead(stream: Stream, ack: int) -> bool:
    """Cheap test, per packet: does `ack` acknowledge bytes of `stream` not delivered yet?"""
    base = stream.base
    return base is not None and 0 < (ack - base - stream.offset) % SEQ_MOD < MAX_ACK_AHEAD


Deliver = Callable[[bytes, float], None]
Gap = Callable[[int, float], None]
Eof = Callable[[float], None]


def _nothing(ts: float) -> None:
    return None


class Stream:
    """One direction's byte stream, rebuilt in sequence order.

    `deliver(data, ts)`, `gap(n, ts)` and `eof(ts)` are called in stream order; `ts` is the capture
    time of the packet that made the bytes deliverable. `mismatch(ts)` says that bytes seen again
    differ from those seen first (which won).
    """

    __slots__ = ("acked_to", "base", "counters", "deliver", "doubtful", "ends", "eof", "fin_offset", "finished", "gap",
                 "high", "hold_at", "last_ts", "marks", "midstream", "mismatch", "needed", "offset", "pending",
                 "pending_bytes", "recent", "recent_end", "runs", "sums", "wait_since", "waited")

    def __init__(self, counters: TcpCounters, deliver: Deliver, gap: Gap, eof: Eof) -> None:
        self.counters = counters
        self.deliver = deliver
        self.gap = gap
        self.eof = eof
        self.mismatch: Eof = _nothing  # the flow table sets it: bytes seen again differ (at ts)
        self.base: int | None = None  # sequence number of stream offset 0
        self.offset = 0  # stream offset of the next byte to deliver
        # Buffered runs, sorted and disjoint: run k holds stream offsets pending[k] to ends[k].
        # The shared empty tuple until a segment is buffered (`_insert`, `_put_back` make lists):
        # most streams never buffer one, and empty lists were a third of a SYN flood's memory.
        self.pending: list[int] = _NONE  # type: ignore[assignment]
        self.ends: list[int] = _NONE  # type: ignore[assignment]
        self.runs: list[Run] = _NONE  # type: ignore[assignment]
        self.pending_bytes = 0
        self.marks = 0  # arrival times kept in the runs
        self.high = 0  # the end of the furthest bytes buffered (holes below it were sent)
        self.acked_to = 0  # the furthest offset the peer acknowledged
        # The furthest offset the peer acknowledged in a packet that carried data: it answered
        # bytes up to there, so they were sent even if the capture never shows them (see `need`).
        self.needed = 0
        # Deliver nothing at or past this offset (None: no such bound): the peer's held-back
        # data answers the bytes up to here, and must reach HTTP before what follows them.
        self.hold_at: int | None = None
        self.wait_since: float | None = None  # when a hole behind an ACK began to wait
        self.waited = 0  # packets of the connection seen since (each direction's that reach here)
        self.recent = bytearray()  # the last bytes delivered, ending at offset `recent_end`
        self.recent_end = 0
        self.last_ts = 0.0  # the time given with the last bytes or gap delivered on the slow path
        # TCP checksums this direction's packets had, where the capture let them be checked: bit 1
        # right, bit 2 wrong. A sender offloading checksums puts none right in the capture.
        self.sums = 0
        # offset -> (payload, time), see `doubt`; the shared empty mapping until one is kept
        self.doubtful: dict[int, tuple[bytes, float]] = NO_DOUBT  # type: ignore[assignment]
        self.fin_offset: int | None = None
        self.finished = False
        self.midstream = False

    def syn(self, seq: int) -> None:
        """A SYN fixes the initial sequence number; data starts one past it."""
        if self.base is None:
            self.base = (seq + 1) % SEQ_MOD

    def rel(self, seq: int) -> int:
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
                self._deliver(payload, off, ts)
                return
        self._segment(seq, payload, fin, ts)

    def _deliver(self, data: bytes, start: int, ts: float) -> None:
        """Deliver `data` (at stream offset `start`), keeping the last of it for comparisons."""
        recent = self.recent
        if self.recent_end == start:
            recent += data
            if len(recent) > 2 * RECENT_BYTES:
                del recent[:len(recent) - RECENT_BYTES]
        else:
            self.recent = bytearray(data[-RECENT_BYTES:])
        self.recent_end = start + len(data)
        self.last_ts = ts
        self.deliver(data, ts)

    def _segment(self, seq: int, payload: bytes, fin: bool, ts: float) -> None:
        if self.finished:
            return
        if self.base is None:
            self.base = seq
            self.midstream = True
        start = self.rel(seq)
        n = len(payload)
        if fin:
            self.fin_offset = start + n
        if n:
            if start < self.offset:
                start, payload = self._trim_old(start, payload, ts)
            if not payload:
                pass
            elif self.pending:  # may overlap bytes already buffered: those came first and win
                self._insert(start, payload, ts)
                self._drain(ts)
            elif start == self.offset:
                self.offset += len(payload)
                self._deliver(payload, start, ts)
            else:
                self._insert(start, payload, ts)
        if self.wait_since is not None:
            if self._waiting():
                self.expire(ts)
            else:  # a late segment filled the hole the peer had acknowledged
                self.counters.late_segments_filled += 1
                self.wait_since = None
        self._check_fin(ts)

    def _check_fin(self, ts: float) -> None:
        if self.fin_offset is not None and self.offset >= self.fin_offset and not self.pending:
            self.finished = True
            self.eof(ts)

    def _trim_old(self, start: int, payload: bytes, ts: float) -> tuple[int, bytes]:
        """Drop the part of a segment that was already delivered (a retransmission), comparing it
        with the bytes delivered first where they are still kept."""
        old = self.offset - start
        c = self.counters
        if differs(self.recent, self.recent_end, start, payload[:old]):
            c.retransmission_mismatch_segments += 1
            self.mismatch(ts)
        if old >= len(payload):
            c.retransmitted_segments += 1
            c.retransmitted_bytes += len(payload)
            return self.offset, b""
        c.overlap_segments += 1
        c.overlap_bytes += old
        return self.offset, payload[old:]

    def _insert(self, start: int, payload: bytes, ts: float) -> None:
        """Buffer a segment, keeping bytes already buffered where they overlap (first wins), and
        merging it with the runs it touches."""
        c = self.counters
        if start > self.offset:
            c.out_of_order_segments += 1
        end = start + len(payload)
        if not self.runs:  # the shared empty tuple, or lists emptied: fresh lists
            self.pending, self.ends, self.runs = [], [], []
        starts, ends, runs = self.pending, self.ends, self.runs
        lo = bisect_left(ends, start)  # the first run ending at or after `start` (touching it)
        hi = bisect_right(starts, end)  # past the last run starting at or before `end`
        added = len(payload)
        if lo == hi:  # touches nothing buffered
            starts.insert(lo, start)
            ends.insert(lo, end)
            runs.insert(lo, Run(payload))
            marks = runs[lo].mark(end, ts)
            pieces = 1
        else:
            added, mismatched = merge(starts, ends, runs, c, lo, hi, start, end, payload)
            marks = runs[lo].mark(end, ts)
            pieces = 1 - (hi - lo)
            if self.marks + marks > limits.MAX_STREAM_MARKS:
                marks += runs[lo].collapse()
            if mismatched:
                c.overlap_mismatch_segments += 1
                self.mismatch(ts)
        self.pending_bytes += added
        c.buffered_bytes += added
        c.buffered_pieces += pieces
        c.buffered_marks += marks
        self.marks += marks
        if end > self.high:
            self.high = end
        if self.wait_since is None and self._waiting():
            self.wait_since = ts
            self.waited = 0
        if self.pending_bytes > MAX_PENDING_BYTES_PER_STREAM:
            c.stream_buffer_flushes += 1
            self.flush(ts)
        elif len(starts) > limits.MAX_PENDING_PIECES_PER_STREAM or (
                limits.PIECE_OVERHEAD * len(starts) + limits.MARK_OVERHEAD * self.marks
                > limits.MAX_PENDING_OVERHEAD_PER_STREAM):
            c.stream_piece_flushes += 1
            self.flush(ts)
        elif (c.buffered_bytes + limits.PIECE_OVERHEAD * c.buffered_pieces + limits.MARK_OVERHEAD * c.buffered_marks
              > c.buffered_bytes_limit):
            c.global_buffer_flushes += 1
            self.flush(ts)

    def _drain(self, ts: float, floor: float | None = None) -> None:
        """Deliver the runs that have become contiguous: at `ts`, or when a hole before them was
        declared lost (`floor`, the time the hole was known lost), each segment's bytes at its
        arrival time but not before `floor`."""
        starts = self.pending
        hold = self.hold_at
        while starts and starts[0] <= self.offset and (hold is None or self.offset < hold):
            pstart, pend, run = starts.pop(0), self.ends.pop(0), self.runs.pop(0)
            self.pending_bytes -= pend - pstart
            self.counters.buffered_bytes -= pend - pstart
            self.counters.buffered_pieces -= 1
            self.counters.buffered_marks -= len(run.marks)
            self.marks -= len(run.marks)
            skip = self.offset - pstart
            if skip >= pend - pstart:
                self.counters.retransmitted_segments += 1
                self.counters.retransmitted_bytes += pend - pstart
                continue
            data = run.whole()
            if skip:
                data = data[skip:]
            start = self.offset
            if hold is not None and start + len(data) > hold:
                # The hold falls inside the run: the rest waits as a run of its own.
                rest = Run(data[hold - start:])
                rest.marks = [m for m in run.marks if m[0] > hold]
                self._put_back(hold, rest, len(run.marks))
                data = data[:hold - start]
            if floor is None:
                self.offset += len(data)
                self._deliver(data, start, ts)
                continue
            pos = 0
            for end, t in run.times(start, floor):
                piece = data[pos:end - start]
                if piece:
                    pos += len(piece)
                    self.offset += len(piece)
                    self._deliver(piece, self.offset - len(piece), t)
            if pos < len(data):
                self.offset += len(data) - pos
                self._deliver(data[pos:], self.offset - (len(data) - pos), ts)

    def _put_back(self, start: int, run: Run, old_marks: int) -> None:
        """Buffer again, first, the part of a run that was taken out but not delivered (its
        accounting was let go with the whole run's `old_marks` marks)."""
        if not self.runs:
            self.pending, self.ends, self.runs = [], [], []
        self.pending.insert(0, start)
        self.ends.insert(0, start + len(run))
        self.runs.insert(0, run)
        c = self.counters
        self.pending_bytes += len(run)
        c.buffered_bytes += len(run)
        c.buffered_pieces += 1
        c.buffered_marks += len(run.marks)
        self.marks += len(run.marks)

    def _limit(self) -> int:
        """How far the evidence of sent bytes reaches: the peer's ACK, as far as bytes buffered
        beyond a hole or the peer's answering data (`need`) back it."""
        return min(self.acked_to, max(self.high if self.pending else 0, self.needed))

    def _waiting(self) -> bool:
        """Whether a hole is covered by the evidence: the peer has bytes we have not seen."""
        return self._limit() > self.offset

    def need(self, ack: int, ts: float) -> None:
        """The peer sent data after acknowledging up to `ack` (its answer may depend on those
        bytes, so the caller holds it back): the bytes before `ack` were sent. Wait for them as
        for a hole behind an ACK, bounded by `limits.ACK_UNSEEN_SLACK` past the bytes seen."""
        if self.base is None or self.finished:
            return
        rel = min(self.rel(ack), max(self.high, self.offset) + limits.ACK_UNSEEN_SLACK)
        if rel > self.needed:
            self.needed = rel
            self.acked(ack, ts)
            if self.wait_since is None and self._waiting():
                self.wait_since = ts
                self.waited = 0

    def hold(self, at: int | None, ts: float) -> None:
        """Deliver nothing past stream offset `at`; None: deliver what is contiguous (at arrival)."""
        self.hold_at = at
        if self.pending and self.pending[0] <= self.offset:
            self._drain(ts, 0.0)
            self._check_fin(ts)

    def give_up(self, ts: float) -> None:
        """Declare now what the evidence says is lost (the caller cannot wait any longer)."""
        if self._waiting():
            self.counters.holes_expired += 1
            since = self.wait_since
            self.wait_since = None
            self.flush_to(self._limit(), ts, since)
            self._check_fin(ts)

    def acked(self, ack: int, ts: float) -> None:
        """The peer acknowledged up to `ack` (the caller checks first that it is ahead, see
        `ack_ahead`): evidence that the bytes were sent, not a verdict that the capture lost them.
        A hole it covers waits (see limits.py), then is declared a gap. Bytes never seen at all are
        not declared lost on an ACK's word alone (a forged ACK would hide what follows): they
        wait once later bytes, or the peer's answering data (`need`), show they were sent.
        """
        if self.base is None or self.finished:
            return
        rel = self.rel(ack)
        if rel <= self.acked_to:
            if self.wait_since is not None:
                self.expire(ts)
            return
        seen = max(self.high, self.offset)
        if self.fin_offset is not None:
            seen = max(seen, self.fin_offset + 1)
        if rel > seen:
            self.counters.acks_beyond_seen += 1
        self.acked_to = rel
        if self.wait_since is None and self._waiting():
            self.wait_since = ts
            self.waited = 0
        if self.wait_since is not None:
            self.expire(ts)

    def expire(self, ts: float) -> None:
        """Declare the holes behind the peer's ACK lost if their wait has run out."""
        since = self.wait_since
        if since is None or self.finished:
            return
        if not self._waiting():
            self.wait_since = None
            return
        self.waited += 1
        if (ts - since >= limits.HOLE_WAIT_SECONDS or self.pending_bytes >= limits.HOLE_WAIT_BYTES
                or self.waited > limits.HOLE_WAIT_PACKETS):
            self.counters.holes_expired += 1
            self.wait_since = None
            self.flush_to(self._limit(), ts, since)
            self._check_fin(ts)

    def flush_to(self, limit: int, ts: float, floor: float | None = None) -> None:
        """Give up waiting below `limit`: report each hole there as a gap, deliver what follows it."""
        starts = self.pending
        if self.hold_at is not None and self.hold_at > self.offset:
            limit = min(limit, self.hold_at)
        while self.offset < limit:
            at = ts if floor is None else floor
            if starts and starts[0] <= limit:
                hole = starts[0] - self.offset
                if hole > 0:
                    self._gap(hole, at)
                before = self.offset
                self._drain(ts, floor)
                if self.offset == before and hole <= 0:
                    break  # held at `hold_at`, reached: nothing more goes until the hold is lifted
            else:
                self._gap(limit - self.offset, at)
        if self.wait_since is not None and not self._waiting():
            self.wait_since = None

    def flush(self, ts: float) -> None:
        """Give up waiting: report each hole as a gap and deliver everything buffered."""
        self.hold_at = None
        floor = self.wait_since  # a hole known lost since then: what follows it keeps its times
        while self.pending:
            hole = self.pending[0] - self.offset
            if hole > 0:
                self._gap(hole, ts if floor is None else max(floor, self.last_ts))
            self._drain(ts, floor)
        self.wait_since = None

    def _gap(self, n: int, ts: float) -> None:
        doubtful = self.doubtful
        while n > 0 and self.offset in doubtful:  # no better copy came: the doubtful one fills in
            data, dts = doubtful.pop(self.offset)
            data = data[:n]
            start = self.offset
            self.offset += len(data)
            n -= len(data)
            self.counters.checksum_accepted_segments += 1
            self._deliver(data, start, max(dts, self.last_ts))
        if n <= 0:
            return
        self.counters.gaps += 1
        self.counters.gap_bytes += n
        self.offset += n
        self.last_ts = ts
        self.gap(n, ts)

    def close(self, ts: float) -> None:
        """The connection ended (FIN/RST seen, idle, evicted or capture over): deliver what is left,
        and report as a gap what the peer acknowledged or the FIN shows was sent but never seen."""
        if self.finished:
            return
        self.flush(ts)
        end = self.fin_offset
        if end is None and 0 < self.acked_to - self.offset <= limits.ACK_UNSEEN_SLACK:
            end = self.acked_to
        if end is not None and end > self.offset:
            self._gap(end - self.offset, ts)
        self.finished = True
        self.eof(ts)

    def release(self) -> None:
        """Return this stream's buffered bytes to the global budget (eviction without delivery)."""
        self.counters.buffered_bytes -= self.pending_bytes
        self.counters.buffered_pieces -= len(self.pending)
        self.counters.buffered_marks -= self.marks
        self.marks = 0
        self.pending = self.ends = _NONE  # type: ignore[assignment]
        self.runs = _NONE  # type: ignore[assignment]
        self.pending_bytes = 0
        self.wait_since = None

