"""How connections end other than by their own FIN or RST, and what a restart needs of the table
(`FlowTable` inherits this).

Connections idle for `idle_timeout` seconds of capture time are closed by a sweep every
`SWEEP_INTERVAL`, which also settles RSTs in doubt, parked data and holes whose wait ran out;
past `max_connections` the least recently active tenth is evicted. A caller ends connections
itself (`close_where`: a Kafka partition another reader takes over; `close_all`: the input's end)
and asks where a restart must replay from (`pin`, `pins`). Every such end goes through `end`: if
closing a connection raises (its state is broken by the bug that raised on one of its packets),
the connection is dropped instead, counted, and the analysis goes on (see faults.py). Closed
connections' keys linger a while, so that their trailing packets are not taken for new ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from analyzers.connection import RST_GRACE_SECONDS, Connection, Entry, FlowCounters, Key
from analyzers.http.messages import Transaction
from analyzers.http.transactions import Conversation
from analyzers.packet_keep import PacketKeep
from analyzers.tcp.frames import SYN

# How often (capture seconds) to look for idle connections; a sweep walks the whole table.
SWEEP_INTERVAL = 10.0
# A closed connection's packets can trail its FIN or RST (the rest of an aborted download, final
# ACKs): remember its keys this long so they do not open a phantom midstream connection. A new
# connection on the same ports starts with a SYN and is let through. Linux's TIME_WAIT is 60 s.
LINGER_SECONDS = 60.0
# Closed connections remembered at most; the oldest are forgotten first.
MAX_LINGERING = 65_536


class Expiring(Protocol):
    """Identities saved before a restart (flows.Continuations): the sweep expires them."""

    def __bool__(self) -> bool: ...
    def expire(self, limit: float) -> int: ...


class ConnectionEnds:
    """The ends; the table's own state and methods they use are declared here."""

    table: dict[Key, Entry]
    counters: FlowCounters
    active: int
    idle_timeout: float
    next_sweep: float
    lingering: dict[Key, float]
    out: list[Transaction]
    keep: PacketKeep | None
    source: str | None
    restored: Expiring | None  # identities of connections open before a restart (FlowTable's)

    def _finish(self, conn: Connection, reason: str) -> None:
        raise NotImplementedError

    def _collect(self, conn: Connection, conv: Conversation) -> None:
        raise NotImplementedError

    def _unpark(self, conn: Connection, ts: float, force: bool = False) -> None:
        raise NotImplementedError

    def _linger(self, conn: Connection) -> None:
        lingering = self.lingering
        for key in conn.keys:
            lingering.pop(key, None)
            lingering[key] = conn.last_ts
        while len(lingering) > MAX_LINGERING:
            del lingering[next(iter(lingering))]

    def _late(self, key: Key, flags: int, ts: float) -> bool:
        """Whether a packet with no connection belongs to one that closed moments ago."""
        closed_at = self.lingering.get(key)
        if closed_at is None:
            return False
        if flags & SYN or ts - closed_at > LINGER_SECONDS:
            del self.lingering[key]
            return False
        self.counters.late_packets += 1
        return True

    def sweep(self, ts: float) -> None:
        """Close connections idle for longer than the idle timeout (capture time)."""
        self.next_sweep = ts + SWEEP_INTERVAL
        lingering = self.lingering
        while lingering:
            key = next(iter(lingering))
            if ts - lingering[key] <= LINGER_SECONDS:
                break
            del lingering[key]
        limit = ts - self.idle_timeout
        if self.restored:
            self.counters.restore_expired += self.restored.expire(limit)
        idle = []
        reset = []
        waiting = []
        for conn in self._connections():
            if conn.rst is not None:
                if ts - conn.rst[1] > RST_GRACE_SECONDS:
                    reset.append(conn)
            elif conn.last_ts < limit:
                idle.append(conn)
            elif conn.parked:
                waiting.append(conn)
            elif conn.conv is not None and not conn.unparsed:
                # Holes waiting behind an ACK: declared lost when their wait has run out, even if
                # the connection has gone quiet (the HTTP side must not wait on them forever).
                client, server = conn.streams
                if client.wait_since is not None or server.wait_since is not None:
                    client.expire(ts)
                    server.expire(ts)
                    self._collect(conn, conn.conv)
        for conn in waiting:
            self._unpark(conn, ts)
            if conn.conv is not None:
                self._collect(conn, conn.conv)
        for conn in reset:
            self.end(conn, "reset")
        for conn in idle:
            self.counters.idle_timeouts += 1
            self.end(conn, "idle_timeout")

    def _evict(self) -> None:
        conns = sorted(self._connections(), key=lambda c: c.last_ts)
        for conn in conns[:max(1, len(conns) // 10)]:
            self.counters.evicted += 1
            self.end(conn, "evicted")

    def set_source(self, name: str) -> None:
        """Name of the capture file being read, stamped on requests that start in it."""
        self.source = name
        for conn in self._connections():
            conv = conn.conv
            while conv is not None:  # the connection's conversation, and any inside its CONNECT tunnel
                conv.source = name
                conv = conv.inner

    def pin(self) -> int | None:
        """The earliest input position a restart must replay from to rebuild every connection
        that has unfinished work (None when there is none). Connections between requests do not
        pin: after a restart they are picked up again at their next request."""
        return self.pins(lambda _pos: 0).get(0)

    def pins(self, group: Callable[[int], int], also: Iterable[int] = ()) -> dict[int, int]:
        """`pin`, per group of input positions (`group(pos)`: e.g. the partition of a Kafka topic a
        position is in): the earliest position each group must be replayed from, counting the
        positions `also` too (analyzers.identities.fallback_pins)."""
        best: dict[int, int] = {}
        for p in itertools.chain((conn.first_pos if conn.conv is None else conn.conv.pin
                                  for conn in self._connections() if not conn.unparsed), also):
            if p is not None:
                g = group(p)
                if g not in best or p < best[g]:
                    best[g] = p
        return best

    def close_where(self, started_in: Callable[[int], bool], reason: str) -> int:
        """Finish the connections whose first packet's position `started_in` accepts (e.g. those of a
        partition another reader takes over); how many."""
        conns = [c for c in self._connections() if started_in(c.first_pos)]
        for conn in conns:
            self.end(conn, reason)
        return len(conns)

    def close_all(self, reason: str = "capture_end") -> None:
        """End of input: finish every connection."""
        for conn in list(self._connections()):
            self.end(conn, reason)

    # Faults: what one packet's exception costs (its connection, never the analyzer) ------------

    def end(self, conn: Connection, reason: str) -> None:
        """`_finish`, and if that raises (the connection's state is broken), drop the connection."""
        try:
            self._finish(conn, reason)
        except Exception:
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        """Forget a connection whose closing raised, touching its state as little as may be: the
        transactions it had finished are kept (without their packets), the rest is lost (counted)."""
        self.counters.dropped_broken += 1
        if conn.conv is not None:
            self.out += conn.conv.out
        mine = [key for key in set(conn.keys) if self.table.get(key, (None,))[0] is conn]
        for key in mine:
            del self.table[key]
        if mine:
            self.active -= 1
        self._linger(conn)
        if self.keep is not None:
            self.keep.forget(conn.kept)

    def _connections(self) -> Iterator[Connection]:
        """Each connection once (its entry under the key of its first packet), oldest first."""
        return (conn for conn, side, _peer in self.table.values() if side is conn.first)
