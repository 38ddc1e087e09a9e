"""The connection table: which packets belong together, who is the client, and when a connection ends.

A connection is keyed by both endpoints (so one client port talking to two servers never
collides) and stored under both directions' keys, so a packet costs one dict lookup, which also
says which `Side` sent it. The table is bounded: past `max_connections` the least recently active
tenth is evicted, each eviction counted, and connections idle for `idle_timeout` seconds of
capture time are closed.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from analyzers.http.counters import HttpCounters
from analyzers.http.head import looks_like_request_line
from analyzers.http.parser import MessageParser
from analyzers.http.transactions import Conversation, Cursor, Endpoints, Transaction
from analyzers.packet_keep import Kept, KeptUpTo, PacketKeep
from analyzers.side import Side
from analyzers.tcp.frames import ACK, FIN, RST, SYN, Address, Decoded
from analyzers.tcp.reassembly import SEQ_MOD, Stream, TcpCounters, ack_ahead

Key = tuple[Address, int, Address, int]

# 100,000 connections keep the table near 100 MB at worst (about 1 KB each with HTTP state), far
# more than one web server's concurrent clients; SYN floods and scans are what pushes past it.
DEFAULT_MAX_CONNECTIONS = 100_000
# Zeek's tcp_inactivity_timeout; long-polling clients idle for a minute or two, rarely five.
DEFAULT_IDLE_TIMEOUT = 300.0
# How often (capture seconds) to look for idle connections; a sweep walks the whole table.
SWEEP_INTERVAL = 10.0
# A closed connection's packets can trail its FIN or RST (the rest of an aborted download, final
# ACKs): remember its keys this long so they do not open a phantom midstream connection. A new
# connection on the same ports starts with a SYN and is let through. Linux's TIME_WAIT is 60 s.
LINGER_SECONDS = 60.0
# Closed connections remembered at most; the oldest are forgotten first.
MAX_LINGERING = 65_536
# Ports where the side listening is almost surely the server, for connections picked up midstream.
WELL_KNOWN_HTTP_PORTS = frozenset({80, 81, 443, 591, 3128, 8000, 8008, 8080, 8081, 8088, 8443, 8888})


@dataclass(slots=True)
class FlowCounters:
    connections: int = 0
    midstream: int = 0
    closed: int = 0
    reset: int = 0
    idle_timeouts: int = 0
    evicted: int = 0
    port_reuse: int = 0
    not_http: int = 0
    untracked_packets: int = 0  # pure ACK/FIN/RST of a connection we never saw start or data of
    late_packets: int = 0  # packets of a connection after its FIN/RST closed it
    ignored_packets: int = 0  # packets of connections that are not HTTP
    internal_errors: int = 0  # packets whose analysis raised: their connection was closed (internal_error)
    dropped_broken: int = 0  # of those, connections whose closing raised too: dropped, their requests lost
    restored: int = 0  # connections continued with the identity a run before a restart saved
    restore_skipped_packets: int = 0  # their packets before the one they continue at (replayed, done)
    restore_expired: int = 0  # saved identities whose connection sent nothing for the idle timeout


def _noop_data(data: bytes, ts: float) -> None:
    return None


def _noop_eof(ts: float) -> None:
    return None


class Connection:
    __slots__ = ("conv", "fins", "first", "first_pos", "first_ts", "ignored", "kept", "keys", "last_ts",
                 "parsers", "streams", "syn")

    def __init__(self, keys: tuple[Key, Key], first: Side, ts: float,
                 counters: TcpCounters, syn: bool, pos: int) -> None:
        # The table's own bookkeeping: `keys[0]` is the key of the first packet seen, `keys[1]` its
        # reverse, and `first` the side that sent it. Everything else is indexed by `Side`.
        self.keys = keys
        self.first = first
        self.first_pos = pos
        self.first_ts = ts
        self.last_ts = ts
        # Each side's stream, `streams[Side.CLIENT]` and `streams[Side.SERVER]`.
        self.streams = (Stream(counters, _noop_data, _noop_data, _noop_eof),  # type: ignore[arg-type]
                        Stream(counters, _noop_data, _noop_data, _noop_eof))  # type: ignore[arg-type]
        self.conv: Conversation | None = None
        # Once HTTP is parsed: each side's parser (the one `streams[side]` delivers to).
        self.parsers: tuple[MessageParser, MessageParser] | None = None
        self.ignored = False
        self.syn = syn
        self.fins = 0  # bit `1 << side` per side that sent FIN, for connections we stopped parsing
        self.kept: Kept | None = None  # its packets, while rules want them (FlowTable.keep)


class Continuations(Protocol):
    """Identities saved before a restart, taken up by their connection's next packet
    (analyzers.identities.Restored)."""

    def __bool__(self) -> bool: ...
    def take(self, table: FlowTable, key: Key, d: Decoded, ts: float) -> bool: ...
    def expire(self, limit: float) -> int: ...


# What the table holds under a packet's key: its connection, the side that sends packets with that
# key, and the side that receives them (the peer, carried so the per-packet path need not look it
# up on the enum: a tenth of a microsecond per packet).
Entry = tuple[Connection, Side, Side]


class FlowTable:
    """Feeds decoded packets to per-connection reassembly and HTTP; collects finished transactions."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.table: dict[Key, Entry] = {}
        self.active = 0
        self.tcp = TcpCounters()
        self.counters = FlowCounters()
        self.anomalies: Counter[str] = Counter()
        self.http = HttpCounters()
        self.out: list[Transaction] = []
        self.lingering: dict[Key, float] = {}  # keys of recently closed connections -> close time
        self.cursor = Cursor()  # input position of the packet being processed
        self.payload_bytes = 0
        self.source: str | None = None
        self.next_sweep = 0.0
        # Packets kept for rules' pcap actions (None: none wanted). The caller sets `frame` to the
        # bytes of each frame before handing over its decoded packet, `linktype` to their link type.
        self.keep: PacketKeep | None = None
        self.linktype = 0
        self.frame = b""
        # Identities of connections open before a restart, waiting for their next packet.
        self.restored: Continuations | None = None

    def packet(self, ts: float, d: Decoded) -> None:
        """One decoded TCP packet."""
        src, dst, sport, dport, seq, ack, flags, payload = d
        if payload:
            self.payload_bytes += len(payload)
        entry = self.table.get((src, sport, dst, dport))
        if entry is None:
            if self.restored and self.restored.take(self, (src, sport, dst, dport), d, ts):
                return  # skipped, or continued as the connection it was before a restart
            if self.lingering and self._late((src, sport, dst, dport), flags, ts):
                return
            if not payload and not flags & SYN:
                self.counters.untracked_packets += 1
                return
            entry = self._open(d, ts)
        conn, side, peer = entry
        conn.last_ts = ts
        if self.keep is not None and not conn.ignored:
            conn.kept = self.keep.add(conn.kept, ts, self.linktype, self.frame, conn.syn)
        if conn.ignored or flags & (SYN | FIN | RST):
            self._control(conn, side, d, ts)
            return
        stream = conn.streams[side]
        if payload and conn.conv is None:
            self._start_http(conn, payload)
        if flags & ACK:  # first: a loss it proves on the other side must be known before our data
            other = conn.streams[peer]
            if other.pending or ack_ahead(other, ack):
                other.acked(ack, ts)
                if other.finished and stream.finished:
                    self._finish(conn, "closed")
                    return
        if payload:
            stream.segment(seq, payload, False, ts)
        conv = conn.conv
        if conv is not None and (conv.out or conv.not_http):
            self._collect(conn, conv)
        if ts >= self.next_sweep:
            self.sweep(ts)

    def after_packet(self, conn: Connection, conv: Conversation, ts: float) -> None:
        """The end of `packet`'s data path, for a caller that did the rest of it inline
        (`Pipeline.feed_records`): collect finished transactions, sweep when it is time."""
        if conv.out or conv.not_http:
            self._collect(conn, conv)
        if ts >= self.next_sweep:
            self.sweep(ts)

    def _control(self, conn: Connection, side: Side, d: Decoded, ts: float) -> None:
        """Packets with SYN, FIN or RST, and packets of connections that are not HTTP."""
        seq, ack, flags, payload = d[4:]
        if conn.ignored:
            self.counters.ignored_packets += 1
            if flags & FIN:
                conn.fins |= 1 << side
            if flags & RST or conn.fins == 3:
                self._finish(conn, "reset" if flags & RST else "closed")
            return
        stream = conn.streams[side]
        if flags & SYN:
            if not flags & ACK and stream.base is not None and (seq + 1) % SEQ_MOD != stream.base:
                self.counters.port_reuse += 1
                self._finish(conn, "port_reuse")
                conn, side, _peer = self._open(d, ts)
                stream = conn.streams[side]
            stream.syn(seq)
            conn.syn = True
        if flags & RST:
            self._finish(conn, "reset")
            return
        if payload and conn.conv is None:
            self._start_http(conn, payload)
        if flags & ACK:
            other = conn.streams[side.peer]
            if other.pending or ack_ahead(other, ack):
                other.acked(ack, ts)
        if payload or flags & FIN:
            stream.segment(seq, payload, bool(flags & FIN), ts)
        conv = conn.conv
        if conv is not None:
            self._collect(conn, conv)
        client, server = conn.streams
        if client.finished and server.finished:
            self._finish(conn, "closed")

    def _collect(self, conn: Connection, conv: Conversation) -> None:
        if conv.out:
            self._take(conn, conv)
        if conv.not_http and not conn.ignored:
            self._ignore(conn)

    def _open(self, d: Decoded, ts: float) -> Entry:
        """A new connection from its first packet seen; returns that packet's entry."""
        src, dst, sport, dport, _seq, _ack, flags, payload = d
        if self.active >= self.max_connections:
            self._evict()
        if flags & SYN:
            first = Side.SERVER if flags & ACK else Side.CLIENT
        else:
            first = _first_sender(sport, dport, payload)
        key = (src, sport, dst, dport)
        rkey = (dst, dport, src, sport)
        conn = Connection((key, rkey), first, ts, self.tcp, bool(flags & SYN), self.cursor.pos)
        entry = self.table[key] = (conn, first, first.peer)
        self.table[rkey] = (conn, first.peer, first)
        self.active += 1
        self.counters.connections += 1
        if not flags & SYN:
            self.counters.midstream += 1
        return entry

    def _start_http(self, conn: Connection, payload: bytes) -> None:
        """First payload of a connection: set up HTTP parsing, client first in `Endpoints`."""
        key = conn.keys[0] if conn.first is Side.CLIENT else conn.keys[1]  # the client's packets' key
        client_ip, client_port, server_ip, server_port = key
        endpoints = Endpoints(_uid(key, conn.first_ts), str(ipaddress.ip_address(client_ip)), client_port,
                              str(ipaddress.ip_address(server_ip)), server_port, not conn.syn)
        # (ip_address takes an IPv4 int or IPv6 bytes, the two forms frames.py produces)
        conv = Conversation(endpoints, self.anomalies, resync=not conn.syn, cursor=self.cursor,
                            pin=conn.first_pos, counters=self.http)
        conv.source = self.source
        conn.conv = conv
        conn.parsers = (conv.client, conv.server)
        for stream, parser in zip(conn.streams, conn.parsers, strict=True):  # each side's
            stream.deliver = parser.data
            stream.gap = parser.gap
            stream.eof = parser.eof
            if stream.offset:
                # Bytes were already skipped as lost (an ACK proved it) before this first
                # payload: the whole first request, typically. HTTP must hear of it.
                parser.gap(stream.offset, conn.last_ts)

    def _take(self, conn: Connection, conv: Conversation) -> None:
        """The connection's finished transactions, with its packets so far when they are kept."""
        if self.keep is not None and conn.kept is not None:
            upto = KeptUpTo(conn.kept, conn.kept.serial)
            self.out += [replace(t, packets=upto) for t in conv.out]
        else:
            self.out += conv.out
        conv.out.clear()

    def _let_go(self, conn: Connection) -> None:
        """The connection's kept packets are needed no more (snapshots taken keep theirs)."""
        if self.keep is not None:
            self.keep.forget(conn.kept)
        conn.kept = None

    def _ignore(self, conn: Connection) -> None:
        conn.ignored = True
        self.counters.not_http += 1
        for s in conn.streams:
            s.release()
        self._let_go(conn)

    def _finish(self, conn: Connection, reason: str) -> None:
        """End a connection: deliver what is buffered, flush unanswered requests, forget it."""
        if self.table.get(conn.keys[0], (None,))[0] is not conn:
            return
        if reason == "closed":
            self.counters.closed += 1
        elif reason == "reset":
            self.counters.reset += 1
        conv = conn.conv
        if conv is not None and not conn.ignored:
            ts = conn.last_ts
            # The server's end first: a response cut by the close is complete before the
            # requests still waiting are flushed.
            client, server = conn.streams
            server.close(ts)
            client.close(ts)
            conv.close(reason)
            if conv.not_http:  # found at the close: none of its messages showed HTTP
                self.counters.not_http += 1
            self._take(conn, conv)
        for s in conn.streams:
            s.release()
        self._let_go(conn)
        del self.table[conn.keys[0]]
        del self.table[conn.keys[1]]
        self.active -= 1
        if reason in ("closed", "reset", "port_reuse", "internal_error"):  # its next packets are late ones
            self._linger(conn)

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
        idle = [c for c in self._connections() if c.last_ts < limit]
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
        best = None
        for conn in self._connections():
            if conn.ignored:
                continue
            p = conn.first_pos if conn.conv is None else conn.conv.pin
            if p is not None and (best is None or p < best):
                best = p
        return best

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
        for key in conn.keys:
            if self.table.get(key, (None,))[0] is conn:
                del self.table[key]
        self.active -= 1
        self._linger(conn)
        if self.keep is not None:
            self.keep.forget(conn.kept)

    def _connections(self) -> Iterator[Connection]:
        """Each connection once (its entry under the key of its first packet), oldest first."""
        return (conn for conn, side, _peer in self.table.values() if side is conn.first)


def _first_sender(sport: int, dport: int, payload: bytes) -> Side:
    """Which side sent the first packet seen of a connection picked up midstream (no SYN)."""
    first_line = payload[:payload.find(b"\n")] if b"\n" in payload[:8192] else payload[:64]
    if payload[:5].upper() == b"HTTP/":
        return Side.SERVER
    if looks_like_request_line(first_line.rstrip(b"\r")):
        return Side.CLIENT
    if dport in WELL_KNOWN_HTTP_PORTS and sport not in WELL_KNOWN_HTTP_PORTS:
        return Side.CLIENT
    if sport in WELL_KNOWN_HTTP_PORTS and dport not in WELL_KNOWN_HTTP_PORTS:
        return Side.SERVER
    return Side.CLIENT if dport < sport else Side.SERVER


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _uid(key: Key, first_ts: float) -> str:
    """Zeek-style connection id: stable for the same connection in the same capture."""
    h = hashlib.blake2b(digest_size=12)
    h.update(("%r|%d|%r|%d|%.6f" % (key[0], key[1], key[2], key[3], first_ts)).encode())
    n = int.from_bytes(h.digest(), "big")
    out = []
    for _ in range(17):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "C" + "".join(out)
