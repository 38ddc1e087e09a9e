"""The pieces reassembly is built from: the bytes of one buffered run, and the counters.

A `Run` is a stretch of out-of-order bytes waiting for the hole before it to fill (see
`reassembly.Stream`); runs that touch are merged, so it grows at either end.
"""

from __future__ import annotations

from dataclasses import dataclass

# Arrival times kept per run (see `Run.marks`); past this, neighbouring segments share the later
# time. Bounds the bookkeeping of a flood of tiny segments to a few KB per run.
MAX_MARKS = 4096


@dataclass(slots=True)
class TcpCounters:
    """Reassembly counters shared by every stream of one analyzer (and the global buffer budget)."""

    retransmitted_segments: int = 0
    retransmitted_bytes: int = 0
    retransmission_mismatch_segments: int = 0  # resent bytes differing from those delivered first
    checksum_dropped_segments: int = 0  # bad TCP checksum in a flow whose checksums were right,
    # and another copy of the bytes came (which won)
    checksum_accepted_segments: int = 0  # ... and no other copy came: taken after all
    checksum_offloading_streams: int = 0  # directions whose checksums were wrong from the start
    overlap_segments: int = 0
    overlap_bytes: int = 0
    overlap_mismatch_segments: int = 0
    out_of_order_segments: int = 0
    late_segments_filled: int = 0  # segments that filled a hole the peer had already acknowledged
    holes_expired: int = 0  # holes behind an ACK declared lost when their wait ran out
    acks_beyond_seen: int = 0  # ACKs of bytes never seen sent: evidence bounded by what was seen
    gaps: int = 0
    gap_bytes: int = 0
    stream_buffer_flushes: int = 0
    stream_piece_flushes: int = 0
    global_buffer_flushes: int = 0
    buffered_bytes: int = 0
    buffered_pieces: int = 0
    buffered_marks: int = 0
    buffered_bytes_limit: int = 256 << 20



class Run:
    """The bytes of one buffered run, growable at both ends in amortized constant time per byte:
    `head` holds the bytes before the run's first piece, reversed; `tail` the rest."""

    __slots__ = ("head", "marks", "tail")

    def __init__(self, data: bytes) -> None:
        self.head = bytearray()
        self.tail = bytearray(data)
        # (stream offset where a segment's bytes end, its capture time), in no order: when a hole
        # before the run is declared lost, its bytes are delivered at the times they arrived.
        self.marks: list[tuple[int, float]] = []

    def mark(self, end: int, ts: float) -> int:
        """Note a segment's end and arrival time; returns the change in the number of marks."""
        marks = self.marks
        marks.append((end, ts))
        if len(marks) <= MAX_MARKS:
            return 1
        # Halve: neighbours merge, the later time wins.
        marks.sort()
        self.marks = [(b[0], max(a[1], b[1])) for a, b in zip(marks[::2], marks[1::2], strict=False)]
        if len(marks) % 2:
            self.marks.append(marks[-1])
        return len(self.marks) - len(marks) + 1

    def collapse(self) -> int:
        """Keep one mark, the latest; returns the change in the number of marks."""
        n = len(self.marks)
        if n > 1:
            self.marks = [max(self.marks, key=lambda m: m[1])]
        return len(self.marks) - n

    def times(self, start: int, floor: float) -> list[tuple[int, float]]:
        """(end, time) for consecutive slices of the run starting at stream offset `start`: each
        segment's bytes at its arrival time, none before `floor`."""
        return [(end, max(t, floor)) for end, t in sorted(self.marks) if end > start]

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)

    def prepend(self, data: bytes | bytearray) -> None:
        self.head += data[::-1]

    def append(self, data: bytes | bytearray) -> None:
        self.tail += data

    def get(self, i: int, j: int) -> bytes:
        """Bytes `i` to `j` of the run."""
        h = len(self.head)
        if j <= h:
            return bytes(self.head[h - j:h - i][::-1])
        if i >= h:
            return bytes(self.tail[i - h:j - h])
        return bytes(self.head[:h - i][::-1]) + bytes(self.tail[:j - h])

    def whole(self) -> bytes:
        return bytes(self.head[::-1]) + bytes(self.tail) if self.head else bytes(self.tail)


def merge(starts: list[int], ends: list[int], runs: list[Run], c: TcpCounters, lo: int, hi: int, start: int,
          end: int, payload: bytes) -> tuple[int, bool]:
    """Merge the segment `payload` at [start, end) with runs lo..hi-1, which touch it: the runs'
    bytes win where they overlap. Returns the bytes added and whether an overlap differed.

    The largest run is kept and the rest copied onto its ends, so that a byte is copied only
    when its run joins a larger one: linear in practice, n log n at worst."""
    mismatched = False
    added = 0
    big = max(range(lo, hi), key=lambda k: ends[k] - starts[k])
    left: list[bytes] = []  # what goes before run `big`, in order
    right: list[bytes] = []  # and after it
    pos = start  # the next byte of the segment not yet placed
    for k in range(lo, hi):
        s, e = starts[k], ends[k]
        if pos < s:  # segment bytes in the hole before run k
            piece = payload[pos - start:min(s, end) - start]
            added += len(piece)
            (left if k <= big else right).append(piece)
        o_lo, o_hi = max(s, start), min(e, end)
        if o_lo < o_hi:
            c.overlap_segments += 1
            c.overlap_bytes += o_hi - o_lo
            if runs[k].get(o_lo - s, o_hi - s) != payload[o_lo - start:o_hi - start]:
                mismatched = True
        if k != big:
            (left if k < big else right).append(runs[k].whole())
            runs[big].marks += runs[k].marks
        pos = max(pos, e)
    if pos < end:
        piece = payload[pos - start:]
        added += len(piece)
        right.append(piece)
    run = runs[big]
    if left:
        run.prepend(b"".join(left))
    if right:
        run.append(b"".join(right))
    new_start, new_end = min(start, starts[lo]), max(end, ends[hi - 1])
    starts[lo:hi] = [new_start]
    ends[lo:hi] = [new_end]
    runs[lo:hi] = [run]
    return added, mismatched


def differs(recent: bytearray, recent_end: int, start: int, payload: bytes) -> bool:
    """Whether `payload`, at stream offset `start`, differs from the delivered bytes kept in
    `recent` (which end at offset `recent_end`) where the two overlap."""
    lo, hi = max(start, recent_end - len(recent)), min(start + len(payload), recent_end)
    if lo >= hi:
        return False
    r0 = len(recent) - (recent_end - lo)
    return payload[lo - start:hi - start] != recent[r0:r0 + hi - lo]
