"""Packets a connection holds back instead of handing them on at once (`FlowTable` inherits this).

Two kinds of doubt make the flow table wait, each bounded:
- Server data that answers client bytes the capture has not shown yet (its ACK is ahead of them,
  see `Connection.parked`): HTTP must see a request before its answer, so the answer waits until
  the client's stream catches up or its hole is declared lost (reassembly's bounds, and
  `PARK_PACKETS`).
- Everything after a believable RST, for `RST_GRACE_SECONDS` (see `Connection.rst`): if the RST's
  sender goes on sending in sequence, its stack refused the RST and the connection goes on.
"""

from __future__ import annotations

from analyzers.connection import (
    HOLD_BYTES,
    PARK_PACKETS,
    RST_GRACE_SECONDS,
    RST_HOLD_PACKETS,
    Connection,
    Entry,
    FlowCounters,
    Key,
)
from analyzers.side import Side
from analyzers.tcp.frames import ACK, FIN, RST, SYN, Decoded
from analyzers.tcp.reassembly import ack_ahead


class HeldPackets:
    """The holding back; the table's own methods it calls are declared here."""

    table: dict[Key, Entry]
    counters: FlowCounters

    def packet(self, ts: float, d: Decoded) -> None:
        raise NotImplementedError

    def _finish(self, conn: Connection, reason: str) -> None:
        raise NotImplementedError

    def _park(self, conn: Connection, side: Side, ts: float, d: Decoded) -> None:
        """Hold back data of `side` that answers bytes of the peer not seen yet (see
        `Connection.parked`); the peer's stream waits for them as for a hole behind an ACK."""
        conn.parked.append((ts, d))
        conn.parked_side = side
        conn.ignored = True  # every packet of it now takes `_control`
        other = conn.streams[side.peer]
        other.need(d[5], ts)
        if len(conn.parked) == 1:
            other.hold(other.rel(d[5]), ts)
        self._unpark(conn, ts)

    def _while_parked(self, conn: Connection, side: Side, d: Decoded, ts: float) -> None:
        flags = d[6]
        if side is conn.parked_side and (d[7] or flags & (SYN | FIN | RST)):
            conn.parked.append((ts, d))  # behind what is held already
            if flags & ACK:
                conn.streams[side.peer].need(d[5], ts)
            self._unpark(conn, ts, force=len(conn.parked) > PARK_PACKETS or _bytes(conn.parked) > HOLD_BYTES)
            return
        # The peer's packet goes through (its bytes may fill what the held data waits for), with
        # the held data put aside meanwhile.
        held, conn.parked, conn.ignored = conn.parked, [], False
        self.packet(ts, d)
        conn.parked = held + conn.parked
        if self.table.get(conn.keys[0], (None,))[0] is conn:
            self._unpark(conn, ts)
        else:  # it ended the connection: what was held comes after the end
            held, conn.parked = conn.parked, []
            for pts, pd in held:
                self.packet(pts, pd)

    def _unpark(self, conn: Connection, ts: float, force: bool = False) -> None:
        """Let held-back server data through as far as the client's stream has caught up with
        it, the client's bytes after each held packet's ACK waiting for it in turn (causal order:
        a response after its request, the next request after that response). `force`d: the
        client's missing bytes are declared lost and everything goes."""
        client = conn.streams[Side.CLIENT]
        for _ in range(2 * PARK_PACKETS + 2):  # each round releases a packet or ends
            parked = conn.parked
            if not parked:
                break
            ack = parked[0][1][5]
            if not client.finished and ack_ahead(client, ack):
                client.hold(client.rel(ack), ts)  # deliver up to what the first held packet answers
                client.expire(ts)
                if ack_ahead(client, ack):
                    if not force:
                        conn.ignored = True
                        return
                    client.give_up(ts)
            pts, pd = parked.pop(0)
            conn.parked, conn.ignored, conn.unparking = [], False, force
            # Not before the client bytes it answers were delivered: the capture may show the
            # request later than its answer, and HTTP pairs them in time order.
            self.packet(max(pts, client.last_ts), pd)
            conn.unparking = False
            if self.table.get(conn.keys[0], (None,))[0] is not conn:  # that packet ended it
                for pts, pd in parked:
                    self.packet(pts, pd)
                return
            conn.parked = parked + conn.parked
        if not conn.parked:
            conn.parked_side = None
            conn.ignored = False
            if client.base is not None:
                client.hold(None, ts)
        else:
            conn.ignored = True

    def _after_reset(self, conn: Connection, side: Side, d: Decoded, ts: float) -> None:
        """A packet of a connection whose RST is in doubt: the RST's sender sending on in
        sequence refutes it; time, a new SYN or too many packets confirm it."""
        assert conn.rst is not None
        rside, rts, _pos, rst_at = conn.rst
        seq, flags, payload = d[4], d[6], d[7]
        if (ts - rts > RST_GRACE_SECONDS or flags & SYN or len(conn.held) >= RST_HOLD_PACKETS
                or _bytes(conn.held) >= HOLD_BYTES):
            self._finish(conn, "reset")
            self.packet(ts, d)  # as a late packet of the closed connection, or a new one
            return
        stream = conn.streams[side]
        if side is rside and payload and not flags & RST and stream.base is not None:
            start = stream.rel(seq)
            if start + len(payload) <= rst_at:  # sent before the RST, captured after it: take it
                doubt_, conn.rst, conn.ignored = conn.rst, None, False
                self.packet(ts, d)
                if self.table.get(conn.keys[0], (None,))[0] is conn:
                    conn.rst, conn.ignored = doubt_, True
                return
            # New bytes at or past the RST's own number: sent after it (bytes below it were in
            # flight before it and only reordered in the capture).
            if max(stream.offset, rst_at) <= start <= max(stream.high, stream.offset):
                self.counters.resets_refused += 1
                held, conn.held, conn.rst, conn.ignored = conn.held, [], None, False
                for hts, hd in held:
                    self.packet(hts, hd)
                self.packet(ts, d)
                return
        conn.held.append((ts, d))


def _bytes(packets: list[tuple[float, Decoded]]) -> int:
    """Payload bytes held (at most a few hundred packets: PARK_PACKETS, RST_HOLD_PACKETS)."""
    return sum(len(d[7]) for _ts, d in packets)
