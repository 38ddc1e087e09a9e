"""One TCP connection as the flow table holds it, and the checks on it that need no table.

`FlowTable` (flows.py) owns the table and the connections' lifecycle; here are what each one
carries (`Connection`), whether a control packet is believable (`in_window`), how a mismatch the
TCP layer reports becomes an anomaly on a message (`file_mismatch`), and how a connection picked up
midstream is told apart and named (`first_sender`, `uid`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from analyzers.http.anomalies import Anomaly
from analyzers.http.head import looks_like_request_line
from analyzers.http.parser import MessageParser
from analyzers.http.transactions import Conversation
from analyzers.packet_keep import Kept
from analyzers.side import Side
from analyzers.tcp.frames import Address, Decoded
from analyzers.tcp.reassembly import Stream, TcpCounters

Key = tuple[Address, int, Address, int]

# How far (bytes) outside the sender's tracked sequence window an RST or FIN may lie and still be
# believed. RFC 5961 stacks take an RST only at the exact next sequence number and answer one
# elsewhere in the receive window with a challenge ACK; a passive observer does not know the
# window, so it takes a generous one (a default Linux receive window is a few hundred KB at most
# for a connection this young) and ignores, counting them, RSTs and FINs a blind attacker aimed
# anywhere else in the 4 GB sequence space.
CONTROL_WINDOW = 1 << 20
# After a believable RST the connection is held, not ended, this long (capture time): if the
# RST's sender goes on sending in sequence, its stack refused the RST (a forged one, or one
# without the right TCP-MD5/TCP-AO signature) and the connection goes on. The sender's next
# segment follows within a round trip or its application's next write; two seconds covers WAN
# round trips and a client's pause between pipelined requests, and delays the records of a really
# reset connection only that long.
RST_GRACE_SECONDS = 2.0
# Packets of the peer held while an RST is in doubt; beyond this the RST is taken as real.
RST_HOLD_PACKETS = 256
# Payload bytes a connection holds back either way (below): as much as one direction may buffer out
# of order; past it the doubt is settled at once (the RST taken, the missing bytes declared lost).
HOLD_BYTES = 1 << 20
# Packets of one side held back while they answer bytes of the other side not seen yet (see
# `Connection.parked`); beyond this the other side's hole is declared lost at once. A response
# that outruns its request by more than this many packets in a capture is not reordering.
PARK_PACKETS = 128
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
    resets_out_of_window: int = 0  # RSTs far outside the sender's sequence window: ignored
    resets_refused: int = 0  # RSTs whose sender went on sending in sequence: ignored
    fins_out_of_window: int = 0  # FINs far outside the sender's sequence window: ignored
    self_connections: int = 0  # both ends the same address and port (LAND, a self-connect): ignored
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
    __slots__ = ("conv", "fins", "first", "first_pos", "first_ts", "held", "ignored", "kept", "keys", "last_ts",
                 "parked", "parked_side", "parsers", "rst", "saved", "streams", "syn", "unparking", "unparsed")

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
        # `ignored`: its packets all take FlowTable._control (not the fast path): while it is
        # `unparsed` (not HTTP, or both ends the same), and while packets are held (held.py) or a
        # segment is in doubt (tcp/doubt.py).
        self.ignored = False
        self.unparsed = False
        self.syn = syn
        self.fins = 0  # bit `1 << side` per side that sent FIN, for connections we stopped parsing
        self.kept: Kept | None = None  # its packets, while rules want them (FlowTable.keep)
        # An RST in doubt (see RST_GRACE_SECONDS): the side that sent it and when. Meanwhile the
        # connection is marked `ignored`, so that every packet of it takes `FlowTable._control`,
        # and the peer's packets wait in `held`.
        # (side, time, input position, stream offset of the RST): its records are finished at
        # that position.
        self.rst: tuple[Side, float, int, int] | None = None
        self.held: list[tuple[float, Decoded]] = []
        # Server data that answers client bytes the capture has not shown yet (its ACK is ahead
        # of them): held back, also marked `ignored`, until the client's stream catches up or its
        # hole is declared lost, so that HTTP sees a request before its answer.
        self.parked: list[tuple[float, Decoded]] = []
        self.parked_side: Side | None = None
        self.unparking = False
        # The identity an earlier checkpoint saved for it (its last_ts: when) and the input position
        # a replay must start from for it (analyzers.identities: the fallback).
        self.saved: tuple[object, int] | None = None


# What the table holds under a packet's key: its connection, the side that sends packets with that
# key, and the side that receives them (the peer, carried so the per-packet path need not look it
# up on the enum: a tenth of a microsecond per packet).
Entry = tuple[Connection, Side, Side]



def file_mismatch(conn: Connection, anomalies: Counter[str], side: Side, ts: float) -> None:
    """Bytes of `side` seen again differ from those delivered first (see Stream.mismatch): an
    insertion, or a rewriting middlebox. Flag the message they belong to: the one being
    parsed, else the one that just ended (a retransmission follows its original closely)."""
    conv, parsers = conn.conv, conn.parsers
    if conv is None or parsers is None:
        return
    parser = parsers[side]
    msg = None
    if not parser.in_message:
        if side is Side.CLIENT:
            if conv.unanswered:
                msg = conv.unanswered[-1]
            elif conv.out and conv.out[-1].request is not None:
                msg = conv.out[-1].request
        elif conv.out and conv.out[-1].response is not None:
            msg = conv.out[-1].response
    if msg is None:
        conv.on_anomaly(parser, Anomaly.RETRANSMISSION_MISMATCH)
    elif Anomaly.RETRANSMISSION_MISMATCH not in msg.anomalies:
        msg.anomalies.append(Anomaly.RETRANSMISSION_MISMATCH)
        anomalies[Anomaly.RETRANSMISSION_MISMATCH] += 1



def in_window(stream: Stream, seq: int) -> bool:
    """Whether a control packet's sequence number lies within CONTROL_WINDOW of what its sender
    has sent so far (always, before anything is known of the sender's numbers)."""
    if stream.base is None:
        return True
    at = stream.rel(seq)
    return stream.offset - CONTROL_WINDOW <= at <= max(stream.high, stream.offset) + CONTROL_WINDOW


def first_sender(sport: int, dport: int, payload: bytes) -> Side:
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


def uid(key: Key, first_ts: float) -> str:
    """Zeek-style connection id: stable for the same connection in the same capture."""
    h = hashlib.blake2b(digest_size=12)
    h.update(("%r|%d|%r|%d|%.6f" % (key[0], key[1], key[2], key[3], first_ts)).encode())
    n = int.from_bytes(h.digest(), "big")
    out = []
    for _ in range(17):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "C" + "".join(out)
