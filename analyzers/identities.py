"""What identifies an open connection, kept across a restart, so that its records do not change.

A restart replays the capture from the checkpoint's resume position. Without more, a connection
that goes on across it is picked up midstream: a new uid, trans_depth from 1 again, a midstream
flag. So the checkpoint keeps, for open HTTP connections, what makes their records what they would
have been: the uid and the connection's first time, whether its start (SYN) was seen, the depth
reached, the gap history the pairing of requests and responses uses, and where each side's stream
is. Two kinds:

- idle: between messages when the checkpoint was taken (nothing begun, nothing buffered). Each
  side's next sequence number is a message boundary. The identity is taken up by the
  connection's next packet, wherever it is: packets replayed from before the checkpoint are old
  bytes to the restored streams and are passed over as retransmissions (their transactions were
  written and are suppressed anyway), the rest is parsed from a message's first byte.
- busy: a message had begun. The connection pins the resume position at the packet that began it
  (`Conversation.pin`): the identity is taken up at exactly that packet (`start`, an input
  position the caller supplies once it knows it, `Restored.start`), with the depth and gap history
  as they were before it (`Conversation.pin_state`); the connection's packets before it are
  passed over (counted). Each side's stream starts at its first packet from there, parsed from a
  message's first byte: the packet that began the message, and on the other side the answer to it.
  That is exact only when capture order is wire order: a segment of the message captured before
  the packet that began it is lost to the replay. So a busy identity is the last resort (below).

A connection idle at the checkpoint saves its present identity, and keeps it with the checkpoint's
position (`Connection.saved`). One that is busy, or whose TCP state is in flux (`_unsettled`:
packets held back while an RST is in doubt or parked while they answer bytes not seen yet, a
segment in doubt for its checksum, bytes buffered behind a hole or a hole waiting for its late
segment), or whose transactions wait to be written, falls back on the past: the identity an
earlier checkpoint saved while it was idle, and the resume position goes back to where that holds
from (`fallback_pins`), so that the replay rebuilds everything since from its packets, in whatever
order they were captured. A restored connection has the identity it was restored with, from where
it was taken up. With no such identity (never idle at a checkpoint), the resume goes back to its
first packet and the replay rebuilds all of it. Past FALLBACK_MAX_SECONDS of capture time
behind either, a busy connection saves its busy identity and one in flux nothing (it is picked up
as the replay finds it); a connection that is not HTTP (`unparsed`, a tunnel, past the pipelining
bound) is not saved.

A connection pinned at its own first packet needs nothing: the replay rebuilds all of it. A SYN on
a saved identity's ports is a new connection: the identity is forgotten. Identities not taken up
within the idle timeout of capture time expire, as the connection would have.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from functools import partial
from typing import NamedTuple

from analyzers.connection import Connection, Entry, Key, file_mismatch
from analyzers.flows import FlowTable
from analyzers.http.messages import Endpoints
from analyzers.http.parser import MessageParser
from analyzers.http.state import State
from analyzers.http.transactions import Conversation
from analyzers.side import Side
from analyzers.tcp.frames import SYN, Address, Decoded
from analyzers.tcp.reassembly import SEQ_MOD, Stream

# `Identity.start` of a busy connection whose packet to continue at is not known yet (its capture
# file is not read yet in this run): its packets are passed over until `Restored.start` says.
START_UNKNOWN = -1
# How far back (capture seconds) a connection in flux may take the resume position: flux lasts a
# hole's wait or an RST's grace (seconds); one in flux at every checkpoint for longer than this is
# lossy through and through, and replaying more than this after each restart costs more than its
# identity is worth.
FALLBACK_MAX_SECONDS = 60.0


class Identity(NamedTuple):
    """One open connection, in plain values (strings and numbers: a checkpoint stores it as is)."""

    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    uid: str
    first_ts: float  # capture time of the connection's first packet
    last_ts: float  # of its latest packet: for the idle timeout
    syn: bool  # its start was seen (not midstream)
    depth: int  # requests seen: the next one's trans_depth is depth + 1
    client_gap: int | None  # Conversation.client_gap and server_gap: the pairing's gap history
    server_gap: bool
    client_seq: int | None  # each side's next sequence number (idle); None: from its first packet
    server_seq: int | None
    start: int | None  # busy: input position of the packet to continue at; idle: None


def identities(table: FlowTable, limit: int) -> tuple[tuple[Identity, ...], int]:
    """See FlowTable.identities. Identities restored and not taken up yet are still open
    connections: they are saved again. Each connection idle now keeps its identity and the
    position it holds from (`Connection.saved`) for later checkpoints to fall back on."""
    found: dict[str, Identity] = {}
    for conn in table._connections():
        ident, pos = _choice(conn)
        if ident is not None:
            if pos is None and ident.start is None:  # idle now
                conn.saved = (ident, table.cursor.pos)
            found[ident.uid] = ident
    if isinstance(table.restored, Restored):
        for ident in table.restored.saved():
            found.setdefault(ident.uid, ident)
    newest = sorted(found.values(), key=lambda i: i.last_ts, reverse=True)
    return tuple(newest[:limit]), max(0, len(newest) - limit)


def fallback_pins(table: FlowTable) -> Iterator[int]:
    """The positions the resume must go back to for the connections busy or in flux (see the
    module's docstring): where the identity an earlier checkpoint saved holds from, or their first
    packet. (A busy identity saved as such pins at its own start: Conversation.pin, FlowTable.pins.)"""
    for conn in table._connections():
        pos = _choice(conn)[1]
        if pos is not None:
            yield pos


def _choice(conn: Connection) -> tuple[Identity | None, int | None]:
    """What to save for a connection: (its identity, or None for none; the position the replay
    must start from for it, or None where FlowTable.pins says it already). Idle now: its present
    identity, exact. Busy or in flux: the identity an earlier checkpoint saved while it was idle,
    from that checkpoint's position; with none, its first packet (the replay rebuilds it whole);
    past FALLBACK_MAX_SECONDS of either, a busy identity as it is (or nothing, in flux)."""
    conv = conn.conv
    if conv is None or conn.unparsed or conv.tunnel or conv.inner is not None or conv.not_http or conv.overflow:
        return None, None
    ident = _identity(conn)
    if ident is not None and ident.start is None:
        return ident, None
    if conn.saved is not None:
        saved, pos = conn.saved
        assert isinstance(saved, Identity)
        if conn.last_ts - saved.last_ts <= FALLBACK_MAX_SECONDS:
            return saved._replace(last_ts=conn.last_ts), pos
    elif conn.last_ts - conn.first_ts <= FALLBACK_MAX_SECONDS:
        return None, conn.first_pos
    return ident, None


def _identity(conn: Connection) -> Identity | None:
    conv = conn.conv
    if conv is None or conn.unparsed or _unsettled(conn):
        return None
    if (conv.tunnel or conv.inner is not None or conv.not_http or conv.out
            or conv.held or conv.overflow or not conv.proven):
        return None
    key = conn.keys[0] if conn.first is Side.CLIENT else conn.keys[1]
    ends = (_ip(key[0]), key[1], _ip(key[2]), key[3], conv.endpoints.uid, conn.first_ts, conn.last_ts, conn.syn)
    if conv.pin is None:  # idle: both sides at a message boundary
        seqs = [_next_seq(s) for s in conn.streams]
        if any(s is False for s in seqs) or not all(_idle(p) for p in (conv.client, conv.server)):
            return None
        client_seq, server_seq = (s if isinstance(s, int) and not isinstance(s, bool) else None for s in seqs)
        return Identity(*ends, conv.depth, conv.client_gap, conv.server_gap, client_seq, server_seq, None)
    if conv.pin_state is None:
        return None  # pinned at its first packet: the replay rebuilds it whole
    depth, client_gap, server_gap = conv.pin_state
    return Identity(*ends, depth, client_gap, server_gap, None, None, conv.pin)


def _unsettled(conn: Connection) -> bool:
    """Whether the connection's TCP state holds what an identity cannot carry (see the module's
    docstring): packets held or parked, an RST in doubt, a segment in doubt, or bytes waiting
    behind a hole."""
    if conn.ignored or conn.rst is not None or conn.held or conn.parked:
        return True
    return any(s.pending or s.doubtful or s.wait_since is not None or s.hold_at is not None
               for s in conn.streams)


def _next_seq(stream: Stream) -> int | bool | None:
    """The next sequence number of an idle side (None: it sent nothing yet); False: not idle."""
    if stream.pending or stream.finished or stream.fin_offset is not None:
        return False
    return None if stream.base is None else (stream.base + stream.offset) % SEQ_MOD


def _idle(p: MessageParser) -> bool:
    return p.state is State.HEAD and not p.buf and not p.in_message and not p.one_line


def _ip(addr: Address) -> str:
    return str(ipaddress.ip_address(addr))


def _address(text: str) -> Address:
    """An address as frames.py gives it: IPv4 as an int, IPv6 as 16 bytes."""
    ip = ipaddress.ip_address(text)
    return int(ip) if ip.version == 4 else ip.packed


class Restored:
    """Saved identities by both directions' keys, until their connection's packet takes them up."""

    def __init__(self, saved: Iterable[Identity]) -> None:
        self.by_key: dict[Key, Identity] = {}
        for ident in saved:
            ident = Identity(*ident)
            key = (_address(ident.client_ip), ident.client_port, _address(ident.server_ip), ident.server_port)
            self.by_key[key] = self.by_key[(key[2], key[3], key[0], key[1])] = ident

    def __bool__(self) -> bool:
        return bool(self.by_key)

    def saved(self) -> list[Identity]:
        """Each identity not taken up yet, once."""
        return list({i.uid: i for i in self.by_key.values()}.values())

    def start(self, uid: str, pos: int) -> None:
        """The input position of the packet a busy connection continues at (see START_UNKNOWN)."""
        for key, ident in list(self.by_key.items()):
            if ident.uid == uid:
                self.by_key[key] = ident._replace(start=pos)

    def expire(self, limit: float) -> int:
        """Forget identities whose connection sent nothing since `limit`; returns how many."""
        old = {i.uid for i in self.by_key.values() if i.last_ts < limit}
        if old:
            self.by_key = {k: i for k, i in self.by_key.items() if i.uid not in old}
        return len(old)

    def take(self, table: FlowTable, key: Key, d: Decoded, ts: float) -> bool:
        """A packet of no open connection: whether it was taken here (passed over, or the first of
        a restored connection, then processed as its packet)."""
        ident = self.by_key.get(key)
        if ident is None:
            return False
        if d[6] & SYN:  # a new connection on these ports
            self._forget(key)
            return False
        start = ident.start
        if start is not None and (start == START_UNKNOWN or table.cursor.pos < start):
            table.counters.restore_skipped_packets += 1
            return True
        self._forget(key)
        _continue(table, ident, key, ts)
        table.counters.restored += 1
        if d[7]:
            table.payload_bytes -= len(d[7])  # `packet` counts it again
        table.packet(ts, d)
        return True

    def _forget(self, key: Key) -> None:
        del self.by_key[key]
        self.by_key.pop((key[2], key[3], key[0], key[1]), None)


def _continue(table: FlowTable, ident: Identity, key: Key, ts: float) -> Entry:
    """Open the connection of `key` as `ident` says it was."""
    if table.active >= table.max_connections:
        table._evict()
    client_key = (_address(ident.client_ip), ident.client_port, _address(ident.server_ip), ident.server_port)
    first = Side.CLIENT if key == client_key else Side.SERVER
    rkey = (key[2], key[3], key[0], key[1])
    conn = Connection((key, rkey), first, ident.first_ts, table.tcp, ident.syn, table.cursor.pos)
    conn.last_ts = ts
    # Its first packet is not in this run: what it falls back on while busy or in flux is the
    # identity it was restored with, from where it was taken up.
    conn.saved = (ident._replace(last_ts=ts), table.cursor.pos if ident.start is None else ident.start)
    endpoints = Endpoints(ident.uid, ident.client_ip, ident.client_port, ident.server_ip, ident.server_port,
                          not ident.syn)
    conv = Conversation(endpoints, table.anomalies, resync=False, cursor=table.cursor, pin=None, counters=table.http)
    conv.depth, conv.client_gap, conv.server_gap = ident.depth, ident.client_gap, ident.server_gap
    conv.proven = True  # only connections that had spoken HTTP are saved
    conv.source = table.source
    conv.bodies = table.bodies
    conn.conv = conv
    conn.parsers = (conv.client, conv.server)
    for stream, parser, seq in zip(conn.streams, conn.parsers, (ident.client_seq, ident.server_seq), strict=True):
        stream.deliver = parser.data
        stream.gap = parser.gap
        stream.eof = parser.eof
        stream.mismatch = partial(file_mismatch, conn, table.anomalies, parser.side)
        stream.base = seq
        parser.messages = 1  # not the connection's first message: no probing for another protocol
    entry: Entry = (conn, first, first.peer)
    table.table[key] = entry
    table.table[rkey] = (conn, first.peer, first)
    table.active += 1
    return entry
