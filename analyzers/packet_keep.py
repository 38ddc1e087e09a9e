"""Packets kept per connection, so that a rule's `pcap` action can write a matching connection's.

A rule decides when a transaction is complete, long after most of its packets went by; to write
them then, they must have been kept. Only while some rule has a `pcap` action is anything kept,
and within two bounds: per connection, past `connection_bytes` the oldest packets are let go
(the handshake stays: without it Wireshark cannot follow the stream's sequence numbers); all
connections together, past `total_bytes` the least recently active connection's packets are let
go. Both are counted. A transaction carries its connection's packets up to its completion
(`KeptUpTo`); the serials let a writer append to a connection's file only what it has not written
yet.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

# A keep-alive connection's last few transactions with their bodies, for typical API traffic.
DEFAULT_CONNECTION_BYTES = 2_000_000
# A few dozen busy connections at their cap: memory stays well under the flow table's own.
DEFAULT_TOTAL_BYTES = 64_000_000
# SYN, SYN-ACK, ACK.
HANDSHAKE_PACKETS = 3
# What a kept packet costs besides its bytes (the tuple and the deque slot), so that a flood of
# tiny packets is bounded too.
PACKET_OVERHEAD = 100


# serial (per connection, from 0), capture time, link type, the frame's bytes
Packet = tuple[int, float, int, bytes]


@dataclass(slots=True)
class KeepCounters:
    packets: int = 0  # kept, ever
    let_go: int = 0  # let go by the per-connection bound
    evicted: int = 0  # let go by the total bound
    held_bytes: int = 0  # now, counted as the bounds count them
    connections: int = 0  # now


class Kept:
    """One connection's packets: the handshake, then a sliding window of the latest."""

    __slots__ = ("cost", "head", "serial", "tail")

    def __init__(self) -> None:
        self.head: list[Packet] = []
        self.tail: deque[Packet] = deque()
        self.serial = 0
        self.cost = 0

    def snapshot(self) -> tuple[Packet, ...]:
        return (*self.head, *self.tail)


@dataclass(frozen=True, slots=True)
class KeptUpTo:
    """A connection's packets up to a moment (serials below `upto`), read when asked: copying
    them for every transaction would cost more than all the rest of the analysis, and only the
    few a pcap rule matches are ever read."""

    kept: Kept
    upto: int

    def packets(self) -> tuple[Packet, ...]:
        upto = self.upto
        return tuple(p for p in self.kept.snapshot() if p[0] < upto)


class PacketKeep:
    """The kept packets of every tracked connection, within the two bounds."""

    def __init__(self, connection_bytes: int = DEFAULT_CONNECTION_BYTES,
                 total_bytes: int = DEFAULT_TOTAL_BYTES) -> None:
        self.connection_bytes = connection_bytes
        self.total_bytes = total_bytes
        self.counters = KeepCounters()
        self._lru: OrderedDict[int, Kept] = OrderedDict()  # id(kept) -> kept, least recently active first

    def add(self, kept: Kept | None, ts: float, linktype: int, frame: bytes, opened: bool) -> Kept:
        """Keep one packet of a connection (`kept` None: its first); returns the connection's `Kept`.
        `opened`: the connection was seen from its SYN, so its first packets are the handshake."""
        c = self.counters
        if kept is None:
            kept = Kept()
        lru = self._lru
        if id(kept) in lru:
            lru.move_to_end(id(kept))
        else:  # new, or let go whole by the total bound and active again
            lru[id(kept)] = kept
            c.connections += 1
        packet = (kept.serial, ts, linktype, frame)
        kept.serial += 1
        cost = len(frame) + PACKET_OVERHEAD
        if opened and len(kept.head) < HANDSHAKE_PACKETS and not kept.tail:
            kept.head.append(packet)
        else:
            kept.tail.append(packet)
        kept.cost += cost
        c.held_bytes += cost
        c.packets += 1
        while kept.cost > self.connection_bytes and kept.tail:
            c.let_go += 1
            self._release(kept, kept.tail.popleft())
        while c.held_bytes > self.total_bytes and len(lru) > 1:
            oldest = next(iter(lru.values()))
            if oldest is kept:
                break
            c.evicted += len(oldest.head) + len(oldest.tail)
            self.forget(oldest)
            oldest.head.clear()
            oldest.tail.clear()
            oldest.cost = 0
        return kept

    def forget(self, kept: Kept | None) -> None:
        """The connection is gone: its packets are no longer kept (snapshots taken stay valid)."""
        if kept is None or self._lru.pop(id(kept), None) is None:
            return
        self.counters.held_bytes -= kept.cost
        self.counters.connections -= 1

    def _release(self, kept: Kept, packet: Packet) -> None:
        cost = len(packet[3]) + PACKET_OVERHEAD
        kept.cost -= cost
        self.counters.held_bytes -= cost
