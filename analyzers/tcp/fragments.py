"""IPv4 and IPv6 fragment reassembly, bounded, in capture time.

`Fragments.add` takes one fragment (its datagram's key, the byte offset of its payload, whether more
follow, the payload) and returns the whole payload once every byte of the datagram is there. What
cannot be reassembled is dropped and counted (`FragmentCounters`); the TCP reassembler then sees
the missing bytes as a gap, as it would a lost packet.

Overlaps: the first copy of a byte wins; later fragments only fill holes ("first" policy, what
Windows and, for the usual overlaps, the BSDs do). A fragment overlapping data already held is
counted, and counted again when the overlapping bytes differ: that is the evasion signal, a monitor
and its target reading different bytes. Linux (since 4.19) and RFC 5722 instead discard a datagram
with any partial overlap; a monitor doing that would be blind to whatever a host with the other
policy accepts, so we keep the data and flag it. An exact duplicate is counted as such and ignored.

Cost: a fragment is compared with the pieces held for its datagram, at most
`MAX_FRAGMENTS_PER_DATAGRAM` of them, so the work is linear in the input; expiry walks the
pending datagrams oldest first and stops at the first one still in time.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# Linux's net.ipv4.ipfrag_time: a target host gives up on an incomplete IPv4 datagram after 30 s.
IPV4_TIMEOUT = 30.0
# RFC 8200 section 4.5 (and Linux's net.ipv6.ip6frag_time): 60 s for IPv6.
IPV6_TIMEOUT = 60.0
# A 64 KiB datagram over IPv4's historical 576-byte path MTU takes about 120 fragments; more is a
# tiny-fragment attack (each piece costs a comparison for every later fragment of its datagram).
MAX_FRAGMENTS_PER_DATAGRAM = 128
# The payload of an IP datagram: the 16-bit length field (IPv6 jumbograms are never fragmented).
MAX_DATAGRAM_PAYLOAD = 65_535
# Linux's net.ipv4.ipfrag_high_thresh: all incomplete datagrams together hold at most 4 MiB; past
# it the oldest are dropped. Bookkeeping is counted in it, not only the payload bytes.
MAX_PENDING_BYTES = 4 << 20
PIECE_OVERHEAD = 120  # bytes of Python objects per piece held (a tuple, a bytes header)
DATAGRAM_OVERHEAD = 400  # per pending datagram (its object, list, and the dict entry)


@dataclass(slots=True)
class FragmentCounters:
    fragments: int = 0  # fragments seen
    datagrams: int = 0  # datagrams reassembled
    duplicates: int = 0  # fragments wholly inside data already held, and equal to it
    overlaps: int = 0  # fragments overlapping data already held (first copy kept)
    overlap_mismatches: int = 0  # ... whose overlapping bytes differ from it
    dropped_timeout: int = 0  # datagrams incomplete when their timeout passed
    dropped_at_end: int = 0  # datagrams incomplete when the input ended
    dropped_too_many: int = 0  # datagrams with more than MAX_FRAGMENTS_PER_DATAGRAM fragments
    dropped_too_big: int = 0  # datagrams whose fragments reach past MAX_DATAGRAM_PAYLOAD
    dropped_inconsistent: int = 0  # two different ends, or data past the end
    dropped_memory: int = 0  # oldest datagrams dropped to stay within MAX_PENDING_BYTES
    dropped_fragments: int = 0  # fragments thrown away with the datagrams above


class _Datagram:
    __slots__ = ("count", "covered", "first_pos", "first_ts", "pieces", "proto", "size", "total")

    def __init__(self, ts: float, pos: int) -> None:
        self.first_ts = ts
        self.first_pos = pos  # input position of its first fragment (see `pin`)
        self.count = 0  # fragments received, duplicates included
        self.pieces: list[tuple[int, int, bytes]] = []  # (start, end, bytes): sorted, disjoint
        self.covered = 0  # bytes held
        self.total: int | None = None  # the payload length, known from the last fragment
        self.proto: int | None = None  # the protocol the offset-0 fragment names
        self.size = DATAGRAM_OVERHEAD  # what it costs against MAX_PENDING_BYTES


class Fragments:
    """Pending datagrams of one IP version. Several may share one `FragmentCounters`."""

    def __init__(self, timeout: float, counters: FragmentCounters) -> None:
        self.timeout = timeout
        self.counters = counters
        self.pending: dict[Hashable, _Datagram] = {}  # in order of first fragment
        self.pending_bytes = 0
        self.completed_pos = 0  # input position of the first fragment of the datagram last completed

    def add(self, key: Hashable, offset: int, more: bool, payload: bytes, ts: float,
            proto: int, pos: int = 0) -> tuple[int, bytes] | None:
        """One fragment; ``(protocol, payload)`` of the datagram when this one completes it.
        `proto` is the protocol this fragment names (for IPv6 only the offset-0 one counts); `pos`
        its input position."""
        c = self.counters
        c.fragments += 1
        self.expire(ts)
        dg = self.pending.get(key)
        if dg is None:
            dg = self.pending[key] = _Datagram(ts, pos)
            self.pending_bytes += dg.size
        end = offset + len(payload)
        dg.count += 1
        if end > MAX_DATAGRAM_PAYLOAD:
            c.dropped_too_big += 1
            self._drop(key)
            return None
        if not more:
            if (dg.total is not None and dg.total != end) or (dg.pieces and dg.pieces[-1][1] > end):
                c.dropped_inconsistent += 1
                self._drop(key)
                return None
            dg.total = end
        elif dg.total is not None and end > dg.total:
            c.dropped_inconsistent += 1
            self._drop(key)
            return None
        if dg.count > MAX_FRAGMENTS_PER_DATAGRAM:
            c.dropped_too_many += 1
            self._drop(key)
            return None
        if offset == 0 and dg.proto is None:
            dg.proto = proto
        new = self._insert(dg, offset, end, payload)
        if new:
            self.pending_bytes += new
            while self.pending_bytes > MAX_PENDING_BYTES and self.pending:
                oldest = next(iter(self.pending))
                c.dropped_memory += 1
                self._drop(oldest)
                if oldest == key:
                    return None
        if dg.total is not None and dg.covered == dg.total and dg.proto is not None:
            del self.pending[key]
            self.pending_bytes -= dg.size
            c.datagrams += 1
            self.completed_pos = dg.first_pos
            return dg.proto, b"".join(p[2] for p in dg.pieces)
        return None

    def _insert(self, dg: _Datagram, offset: int, end: int, payload: bytes) -> int:
        """Put the bytes of [offset, end) not held yet into `dg`; count overlaps. Returns the
        bytes (with overhead) it now costs more."""
        new: list[tuple[int, int, bytes]] = []
        pos = offset
        overlapped = differs = False
        for start, stop, held in dg.pieces:
            if stop <= pos:
                continue
            if start >= end:
                break
            if start > pos:
                new.append((pos, start, payload[pos - offset:start - offset]))
            lo, hi = max(start, pos), min(stop, end)
            overlapped = True
            if held[lo - start:hi - start] != payload[lo - offset:hi - offset]:
                differs = True
            pos = hi
            if pos >= end:
                break
        if pos < end:
            new.append((pos, end, payload[pos - offset:]))
        c = self.counters
        if overlapped:
            if new or differs:
                c.overlaps += 1
            else:
                c.duplicates += 1
            if differs:
                c.overlap_mismatches += 1
        if not new:
            return 0
        dg.pieces.extend(new)
        dg.pieces.sort()
        added = sum(stop - start for start, stop, _ in new)
        dg.covered += added
        cost = added + PIECE_OVERHEAD * len(new)
        dg.size += cost
        return cost

    def _drop(self, key: Hashable) -> None:
        dg = self.pending.pop(key)
        self.pending_bytes -= dg.size
        self.counters.dropped_fragments += dg.count

    def pin(self) -> int | None:
        """The input position of the oldest incomplete datagram's first fragment: a restart must
        replay from there to complete it (None when none is pending)."""
        return min((dg.first_pos for dg in self.pending.values()), default=None)

    def expire(self, ts: float) -> None:
        """Drop the datagrams whose first fragment is older than the timeout."""
        pending = self.pending
        limit = ts - self.timeout
        while pending:
            key = next(iter(pending))
            if pending[key].first_ts >= limit:
                break
            self.counters.dropped_timeout += 1
            self._drop(key)

    def close(self) -> None:
        """The input ended: every incomplete datagram is dropped."""
        for key in list(self.pending):
            self.counters.dropped_at_end += 1
            self._drop(key)
