"""The connection table: which packets belong together, who is the client, and when a connection ends.

A connection is keyed by both endpoints (so one client port talking to two servers never
collides) and stored under both directions' keys, so a packet costs one dict lookup, which also
says which `Side` sent it. The table is bounded: past `max_connections` the least recently active
tenth is evicted, each eviction counted, and connections idle for `idle_timeout` seconds of
capture time are closed (ends.py: those ends, the ones a caller asks for, and a restart's pins).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace
from functools import partial
from typing import Protocol

from analyzers.connection import (
    RST_GRACE_SECONDS,
    Connection,
    Entry,
    FlowCounters,
    Key,
    file_mismatch,
    first_sender,
    in_window,
    uid,
)
from analyzers.ends import ConnectionEnds, Expiring
from analyzers.held import HeldPackets
from analyzers.http.body_keep import BodyKeep
from analyzers.http.counters import HttpCounters
from analyzers.http.messages import Cursor, Endpoints, Transaction
from analyzers.http.parser import State
from analyzers.http.transactions import Conversation
from analyzers.packet_keep import KeptUpTo, PacketKeep
from analyzers.side import Side
from analyzers.tcp.doubt import doubt, prune, tcp_checksum_ok
from analyzers.tcp.frames import ACK, FIN, RST, SYN, Decoded
from analyzers.tcp.reassembly import SEQ_MOD, TcpCounters, ack_ahead

_SERVER = Side.SERVER

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "RST_GRACE_SECONDS", "FlowCounters", "FlowTable"]

# 100,000 connections keep the table near 100 MB at worst (about 1 KB each with HTTP state), far
# more than one web server's concurrent clients; SYN floods and scans are what pushes past it.
DEFAULT_MAX_CONNECTIONS = 100_000
# Zeek's tcp_inactivity_timeout; long-polling clients idle for a minute or two, rarely five.
DEFAULT_IDLE_TIMEOUT = 300.0


class Continuations(Expiring, Protocol):
    """Identities saved before a restart, taken up by their connection's next packet
    (analyzers.identities.Restored)."""

    def take(self, table: FlowTable, key: Key, d: Decoded, ts: float) -> bool: ...


class FlowTable(HeldPackets, ConnectionEnds):
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
        # Request bodies kept for replay (None: none, the default; analyzers.http.body_keep).
        self.bodies: BodyKeep | None = None
        self.linktype = 0
        self.frame = b""
        # Where the packet being handed over lies, (buffer, IPv4 header offset, IP length), when
        # its TCP checksum can be checked (plain IPv4 + TCP); None otherwise. See `_checksum`.
        self.checksum: tuple[bytes, int, int] | None = None
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
        if self.checksum is not None and self._checksum(conn, side, d):
            return
        if self.keep is not None and not conn.unparsed:
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
                # A response outrunning the request bytes it answers (requests may run ahead of
                # responses: they queue; a response ahead of its request would be paired wrongly).
                if (payload and side is _SERVER and not conn.unparking and ack_ahead(other, ack)
                        and not other.finished):
                    self._park(conn, side, ts, d)
                    return
        if payload:
            stream.segment(seq, payload, False, ts)
        conv = conn.conv
        if conv is not None and (conv.out or conv.not_http):
            self._collect(conn, conv)
        if ts >= self.next_sweep:
            self.sweep(ts)

    def _checksum(self, conn: Connection, side: Side, d: Decoded) -> bool:
        """Whether a packet is kept aside for its TCP checksum. Checked are control packets and
        the client's packets outside a body (requests' heads: what an insertion targets; checking
        every packet would cost as much as the rest of reading it). A wrong one in a flow whose
        checksums have been right (a copy the receiver dropped: an insertion) waits to see
        whether another copy comes (see tcp/doubt.py), the connection on the slow path meanwhile;
        a control packet (a blind RST or FIN with a wrong checksum) is dropped. A direction whose
        first checked checksum was wrong is offloading them (captured on the sender): its packets
        are taken as they come and not checked again."""
        flags, payload = d[6], d[7]
        if not flags & (SYN | FIN | RST) and (side is not Side.CLIENT or not payload or not _in_head(conn)):
            return False
        stream = conn.streams[side]
        if stream.sums & 2:  # offloading: nothing to learn from its checksums
            return False
        assert self.checksum is not None
        if tcp_checksum_ok(*self.checksum):
            stream.sums |= 1
            return False
        if stream.sums & 1:  # right ones before: the receiver drops this one
            if flags & (SYN | FIN | RST):
                self.tcp.checksum_dropped_segments += 1
                return True
            if not conn.ignored and doubt(stream, d[4], payload, conn.last_ts):
                conn.ignored = True
                return True
            return False
        self.tcp.checksum_offloading_streams += 1
        stream.sums |= 2
        return False

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
        if conn.rst is not None:
            self._after_reset(conn, side, d, ts)
            return
        if conn.parked:
            self._while_parked(conn, side, d, ts)
            return
        client, server = conn.streams
        if conn.ignored and (client.doubtful or server.doubtful):  # see _checksum: the slow path
            conn.ignored = False
            self.checksum = None  # judged already
            self.packet(ts, d)
            prune(client, ts)
            prune(server, ts)
            if self.table.get(conn.keys[0], (None,))[0] is conn and (client.doubtful or server.doubtful):
                conn.ignored = True
            return
        if conn.unparsed:
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
            if in_window(stream, seq):
                conn.rst = (side, ts, self.cursor.pos, stream.rel(seq) if stream.base is not None else 0)
                conn.ignored = True
            else:
                self.counters.resets_out_of_window += 1
            return
        if flags & FIN and not in_window(stream, (seq + len(payload)) % SEQ_MOD):
            self.counters.fins_out_of_window += 1
            flags &= ~FIN
        if payload and conn.conv is None:
            self._start_http(conn, payload)
        if flags & ACK:
            other = conn.streams[side.peer]
            if other.pending or ack_ahead(other, ack):
                other.acked(ack, ts)
        if payload or flags & FIN:
            # TCP Fast Open: data on a SYN starts one past the SYN's own sequence number.
            stream.segment((seq + 1) % SEQ_MOD if flags & SYN else seq, payload, bool(flags & FIN), ts)
        conv = conn.conv
        if conv is not None:
            self._collect(conn, conv)
        client, server = conn.streams
        if client.finished and server.finished:
            self._finish(conn, "closed")

    def _collect(self, conn: Connection, conv: Conversation) -> None:
        if conv.out:
            self._take(conn, conv)
        if conv.not_http and not conn.unparsed:
            self._ignore(conn)

    def _open(self, d: Decoded, ts: float) -> Entry:
        """A new connection from its first packet seen; returns that packet's entry."""
        src, dst, sport, dport, _seq, _ack, flags, payload = d
        if self.active >= self.max_connections:
            self._evict()
        if flags & SYN:
            first = Side.SERVER if flags & ACK else Side.CLIENT
        else:
            first = first_sender(sport, dport, payload)
        key = (src, sport, dst, dport)
        rkey = (dst, dport, src, sport)
        conn = Connection((key, rkey), first, ts, self.tcp, bool(flags & SYN), self.cursor.pos)
        entry = self.table[key] = (conn, first, first.peer)
        if rkey == key:
            # Both ends the same address and port (a LAND attack, or a loopback self-connect): one
            # key for both directions, so no telling who sent what. Counted and ignored.
            self.counters.self_connections += 1
            conn.ignored = conn.unparsed = True
        else:
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
        endpoints = Endpoints(uid(key, conn.first_ts), str(ipaddress.ip_address(client_ip)), client_port,
                              str(ipaddress.ip_address(server_ip)), server_port, not conn.syn)
        # (ip_address takes an IPv4 int or IPv6 bytes, the two forms frames.py produces)
        conv = Conversation(endpoints, self.anomalies, resync=not conn.syn, cursor=self.cursor,
                            pin=conn.first_pos, counters=self.http)
        conv.source = self.source
        conv.bodies = self.bodies
        conn.conv = conv
        conn.parsers = (conv.client, conv.server)
        for stream, parser in zip(conn.streams, conn.parsers, strict=True):  # each side's
            stream.deliver = parser.data
            stream.gap = parser.gap
            stream.eof = parser.eof
            stream.mismatch = partial(file_mismatch, conn, self.anomalies, parser.side)
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
        conn.ignored = conn.unparsed = True
        self.counters.not_http += 1
        for s in conn.streams:
            s.release()
        self._let_go(conn)

    def _finish(self, conn: Connection, reason: str) -> None:
        """End a connection: deliver what is buffered, flush unanswered requests, forget it."""
        if self.table.get(conn.keys[0], (None,))[0] is not conn:
            return
        if conn.parked:  # the held data goes in, what it waited for declared lost
            self._unpark(conn, conn.last_ts, force=True)
            if self.table.get(conn.keys[0], (None,))[0] is not conn:
                return
        if conn.rst is not None:  # the RST in doubt is taken: it ended the connection when sent
            pos = self.cursor.pos
            _side, conn.last_ts, self.cursor.pos, _at = conn.rst
            self.counters.late_packets += len(conn.held)
            conn.rst, conn.held, conn.ignored = None, [], False
            self._finish(conn, "reset")
            self.cursor.pos = pos
            return
        if reason == "closed":
            self.counters.closed += 1
        elif reason == "reset":
            self.counters.reset += 1
        conv = conn.conv
        if conv is not None and not conn.unparsed:
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
        if conn.keys[1] != conn.keys[0]:
            del self.table[conn.keys[1]]
        self.active -= 1
        if reason in ("closed", "reset", "port_reuse", "internal_error"):  # its next packets are late ones
            self._linger(conn)

_OUTSIDE_HEADS = frozenset({State.BODY, State.CHUNK_DATA, State.CLOSE_BODY, State.TUNNEL})


def _in_head(conn: Connection) -> bool:
    """Whether the client's parser is outside a body (what `_checksum` checks)."""
    return conn.parsers is None or conn.parsers[Side.CLIENT].state not in _OUTSIDE_HEADS
