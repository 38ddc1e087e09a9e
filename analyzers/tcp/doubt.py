"""Segments whose TCP checksum was wrong in a flow whose checksums are right (`Stream.doubtful`).

The receiver dropped such a copy, unless none other ever comes: an insertion (a first copy with a
bad checksum or a TTL too low to reach the server) must not win over the real segment sent
after it. A doubtful copy waits aside; another copy of its bytes wins (and one that differs is a
mismatch); if none comes, it fills its place when that would be declared lost (`Stream._gap`).
"""

from __future__ import annotations

from analyzers.tcp.limits import MAX_DOUBTFUL_PER_STREAM
from analyzers.tcp.reassembly import Stream
from analyzers.tcp.runs import differs


def doubt(self: Stream, seq: int, payload: bytes, ts: float) -> bool:
    """Keep aside a segment whose checksum was wrong in a flow whose checksums were right: the
    receiver dropped it (an insertion) unless no other copy ever comes. It fills its place
    only when that place would otherwise be declared lost (see `_gap`). False: not taken."""
    if self.base is None or len(self.doubtful) >= MAX_DOUBTFUL_PER_STREAM:
        return False
    start = self.rel(seq)
    if start < self.offset or start in self.doubtful:
        return False
    self.doubtful[start] = (payload, ts)
    return True

def prune(self: Stream, ts: float) -> None:
    """Forget doubtful copies whose place was filled by another copy, which won; one that
    differs from it is reported as a mismatch."""
    for start in [k for k in self.doubtful if k < self.offset]:
        payload, _dts = self.doubtful.pop(start)
        self.counters.checksum_dropped_segments += 1
        if differs(self.recent, self.recent_end, start, payload):
            self.counters.retransmission_mismatch_segments += 1
            self.mismatch(ts)


def tcp_checksum_ok(buf: bytes, ip: int, total: int) -> bool:
    """Whether the TCP checksum of the IPv4 packet (20-byte header) at `ip` is right. The ones'-
    complement sum of 16-bit words is the number mod 0xFFFF (2**16 == 1 mod 0xFFFF), so each part
    is one big-int operation: the pseudo-header (addresses, protocol 6, TCP length), then the
    segment, shifted a byte when its length is odd. A right checksum makes the sum 0 mod 0xFFFF."""
    n = total - 20
    segment = int.from_bytes(buf[ip + 20:ip + total], "big")
    if n & 1:
        segment <<= 8
    return (int.from_bytes(buf[ip + 12:ip + 20], "big") + 6 + n + segment) % 0xFFFF == 0
