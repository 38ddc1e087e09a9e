"""Impairments of segment lists for tests: re-segmentation, duplicates, reordering, loss, cuts.

Each acts on `pcapgen.Segment` lists with a seeded `random.Random`, so every impaired capture is
reproducible; pcapgen writes the result in any format.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence

from helpers.pcapgen import FIN, PSH, RST, SEQ_MOD, SYN, Segment, conn_key


def resegment(segments: Iterable[Segment], rng: random.Random, lo: int = 1, hi: int = 50,
              select: Callable[[Segment], bool] | None = None) -> list[Segment]:
    """Split every payload (of selected segments) into pieces of lo..hi bytes.

    Pieces keep the segment's timestamp, ack and flags, with sequence numbers advanced; SYN stays
    on the first piece only, FIN, RST and PSH on the last only.
    """
    out: list[Segment] = []
    for s in segments:
        n = len(s.payload)
        if n <= lo or (select is not None and not select(s)):
            out.append(s)
            continue
        pos = 0
        while pos < n:
            size = min(rng.randint(lo, hi), n - pos)
            flags = s.flags
            if pos:
                flags &= ~SYN
            if pos + size < n:
                flags &= ~(FIN | RST | PSH)
            out.append(s._replace(seq=(s.seq + pos) % SEQ_MOD, flags=flags, payload=s.payload[pos:pos + size]))
            pos += size
    return out


def duplicate(segments: Sequence[Segment], rng: random.Random, fraction: float = 0.05) -> list[Segment]:
    """Send `fraction` of the segments twice, the copy right after the original (same timestamp)."""
    chosen = set(rng.sample(range(len(segments)), round(len(segments) * fraction)))
    out: list[Segment] = []
    for i, s in enumerate(segments):
        out.append(s)
        if i in chosen:
            out.append(s)
    return out


def _covers(ack: int, seq: int) -> bool:
    """True if `ack` acknowledges the byte at `seq` (sequence space arithmetic)."""
    return 0 < (ack - seq) % SEQ_MOD < SEQ_MOD // 2


def reorder(segments: Sequence[Segment], rng: random.Random, window: int = 6,
            max_span_ns: int | None = None) -> tuple[list[Segment], int]:
    """Shuffle data segments within consecutive windows of `window` packets, as a network does.

    Only data segments of the same direction of one connection trade places, the timestamps
    stay with the positions (a capture's clock runs forward), and a segment is never moved past a
    packet of its peer that acknowledges it (a receiver cannot acknowledge what it has not got).
    Connections whose start was not captured are left alone: without a SYN the first segment seen
    fixes the stream start. Windows spanning more than `max_span_ns` are left alone, which bounds
    how far any byte's capture time moves. Returns the new list and how many segments moved.
    """
    out = list(segments)
    moved = 0
    seen_syn = {conn_key(s) for s in segments if s.flags & SYN}
    for start in range(0, len(out), window):
        last = min(start + window, len(out)) - 1
        if max_span_ns is not None and segments[last].ts_ns - segments[start].ts_ns > max_span_ns:
            continue
        groups: dict[tuple[bytes, int, bytes, int], list[int]] = {}
        for i in range(start, min(start + window, len(out))):
            s = out[i]
            if s.payload and not s.flags & (SYN | RST) and conn_key(s) in seen_syn:
                groups.setdefault((s.src, s.sport, s.dst, s.dport), []).append(i)
        for key, positions in groups.items():
            if len(positions) < 2:
                continue
            order = positions[:]
            rng.shuffle(order)
            if order == positions or not _acks_allow(out, key, positions, order):
                continue
            originals = [out[i] for i in order]
            for pos, seg in zip(positions, originals, strict=True):
                out[pos] = seg._replace(ts_ns=segments[pos].ts_ns)
            moved += sum(1 for a, b in zip(positions, order, strict=True) if a != b)
    return out, moved


def _acks_allow(out: Sequence[Segment], key: tuple[bytes, int, bytes, int], positions: list[int],
                order: list[int]) -> bool:
    """No segment lands after a peer packet that acknowledges it."""
    src, sport, dst, dport = key
    for new_pos, old_pos in zip(positions, order, strict=True):
        if new_pos <= old_pos:
            continue
        seq = out[old_pos].seq
        for j in range(old_pos + 1, new_pos):
            p = out[j]
            if p.src == dst and p.sport == dport and p.dst == src and p.dport == sport and _covers(p.ack, seq):
                return False
    return True


def cut(segments: Sequence[Segment], at: Sequence[int]) -> list[list[Segment]]:
    """Split into len(at) + 1 files before each packet index in `at` (ascending)."""
    bounds = [0, *at, len(segments)]
    return [list(segments[a:b]) for a, b in itertools.pairwise(bounds)]


def drop(segments: Sequence[Segment], indexes: Iterable[int]) -> list[Segment]:
    """The capture without the segments at `indexes` (lost by the capturing host)."""
    gone = set(indexes)
    return [s for i, s in enumerate(segments) if i not in gone]


def permute(segments: Sequence[Segment], rng: random.Random, lo: int = 2, hi: int = 8,
            max_span_ns: int | None = None) -> tuple[list[Segment], int]:
    """Shuffle data segments in consecutive windows of `lo`..`hi` packets: within a window, the data
    segments of each direction of a connection trade places; pure ACKs stay where they are, so a
    segment may land after the peer's ACK that covers it, as multi-queue NICs, `-i any` and merged
    captures show them. Timestamps stay with the positions; windows spanning more than
    `max_span_ns` are left alone, and so are connections whose start was not captured or whose RST
    is in the window. Returns the new
    list and how many segments moved."""
    out = list(segments)
    seen_syn = {conn_key(s) for s in segments if s.flags & SYN}
    moved = 0
    start = 0
    while start < len(out):
        end = min(start + rng.randint(lo, hi), len(out))
        window = range(start, end)
        start = end
        if max_span_ns is not None and segments[window[-1]].ts_ns - segments[window[0]].ts_ns > max_span_ns:
            continue
        groups: dict[tuple[bytes, int, bytes, int], list[int]] = {}
        reset = {conn_key(segments[i]) for i in window if segments[i].flags & RST}
        for i in window:
            s = segments[i]
            if s.payload and not s.flags & (SYN | RST) and conn_key(s) in seen_syn:
                groups.setdefault((s.src, s.sport, s.dst, s.dport), []).append(i)
        for positions in groups.values():
            # Not across an RST of the connection: what the receiver took before it is then a
            # matter of capture order (bytes captured after it are late, as on the wire).
            if len(positions) < 2 or conn_key(segments[positions[0]]) in reset:
                continue
            order = positions[:]
            rng.shuffle(order)
            for pos, src in zip(positions, order, strict=True):
                out[pos] = segments[src]._replace(ts_ns=segments[pos].ts_ns)
            moved += sum(1 for a, b in zip(positions, order, strict=True) if a != b)
    return out, moved
