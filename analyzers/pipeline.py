"""Frames in, transactions out: the one entry point the I/O edge uses.

`feed` takes frames one tuple each; `feed_records` is the fast path for classic pcap, reading the
frames where they lie in the capture's bytes (`split_records` finds them). `Router` (analyzers.shard) says which of
several workers owns each frame, so that they can share one capture.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from analyzers.faults import AnalysisError, Faults
from analyzers.flows import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, FlowTable
from analyzers.http.body_keep import BodyKeep
from analyzers.http.counters import NOT_HTTP_KINDS, HttpCounters
from analyzers.http.messages import Transaction
from analyzers.http.parser import State
from analyzers.identities import Identity, Restored, fallback_pins, identities
from analyzers.packet_keep import DEFAULT_TOTAL_BYTES, PacketKeep
from analyzers.side import Side
from analyzers.tcp.doubt import tcp_checksum_ok
from analyzers.tcp.frames import (
    ACK,
    ETH_IPV4,
    FIN,
    FIXED_LINK_HEADERS,
    PROTO_TCP,
    RST,
    SYN,
    FrameDecoder,
    RecordLayout,
)
from analyzers.tcp.reassembly import MAX_ACK_AHEAD, RECENT_BYTES, SEQ_MOD

Frame = tuple[int, float, bytes]



@lru_cache(maxsize=2)
def _time_and_length(order: str) -> struct.Struct:
    """A pcap record header without its original length, which nothing here uses."""
    return struct.Struct(order + "III4x")


@lru_cache(maxsize=16)
def _ipv4_tcp(link_len: int, type_off: int) -> struct.Struct:
    """From a record's start: EtherType, then IPv4 (no options) and TCP up to the flags, in network
    order, in one unpack."""
    return struct.Struct(f"!{16 + type_off}xH{link_len - type_off - 2}xBxHxxHxB2xIIHHIIBB")


def _frames(buf: bytes, offsets: Sequence[int], layout: RecordLayout) -> Iterator[Frame]:
    """The records at `offsets` as `feed`'s frames."""
    unpack_header = _time_and_length(layout.header.format[0]).unpack_from
    size, scale = layout.header.size, layout.scale
    for off in offsets:
        sec, frac, caplen = unpack_header(buf, off)
        yield off, sec + frac * scale, bytes(buf[off + size:off + size + caplen])


def split_records(buf: bytes, start: int, end: int, layout: RecordLayout) -> tuple[array[int], int]:
    """Walk the classic pcap records in `buf[start:end]` up to the first incomplete or corrupt
    one: their offsets, and the offset where the walk stopped (see `Pipeline.feed_records`)."""
    offsets = array("Q")
    append = offsets.append
    unpack, size = layout.header.unpack_from, layout.header.size
    max_fraction, max_caplen = layout.max_fraction, layout.max_caplen
    off = start
    while off + size <= end:
        _sec, frac, caplen, _orig = unpack(buf, off)
        if caplen > max_caplen or frac >= max_fraction:
            break
        nxt = off + size + caplen
        if nxt > end:
            break
        append(off)
        off = nxt
    return offsets, off


def _http_stats(h: HttpCounters) -> dict[str, Any]:
    """The HTTP side's counters: what was let go or set aside, and connections not HTTP by kind."""
    return {"pipeline_overflow": h.pipeline_overflow, "overflow_responses": h.overflow_responses,
            "tunnels": h.tunnels, "tunnel_not_http": {k: h.tunnel_not_http[k] for k in NOT_HTTP_KINDS},
            "not_http": {k: h.not_http[k] for k in NOT_HTTP_KINDS}}


class Pipeline:
    """Decodes frames, tracks connections and parses HTTP; returns finished transactions."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.decoder = FrameDecoder()
        self.flows = FlowTable(max_connections, idle_timeout)
        self.decoder.position = self.flows.cursor
        self.frames_seen = 0
        self.transactions = 0
        self.faults = Faults()  # packets whose analysis raised (analyzers.faults)

    def keep_bodies(self, keep: BodyKeep | None) -> None:
        """Keep request bodies of these methods on their transactions (`Message.body`), for replay.
        Applies to connections whose HTTP starts from now on. None (the default) keeps none."""
        self.flows.bodies = keep

    def feed(self, linktype: int, frames: Iterable[Frame], base: int = 0) -> list[Transaction]:
        """Process one batch of frames of one link type. A frame's input position is `base` plus
        its file offset (see `Cursor`)."""
        decode = self.decoder.link_decoder(linktype)
        flows = self.flows
        flows.linktype = linktype
        packet = flows.packet
        cursor = flows.cursor
        link_len, type_off = FIXED_LINK_HEADERS.get(linktype, (-1, 0))
        n = 0
        frames = iter(frames)
        while True:
            try:  # free when nothing raises; one packet's exception costs its connection only
                for off, ts, data in frames:
                    n += 1
                    cursor.pos = base + off
                    d = decode(data, ts)
                    if d is not None:
                        flows.frame = data
                        # Checksums can be checked where `feed_records` can: plain IPv4 + TCP frames.
                        if (link_len >= 0 and data[type_off:type_off + 2] == b"\x08\x00"
                                and data[link_len:link_len + 1] == b"\x45"):
                            total = int.from_bytes(data[link_len + 2:link_len + 4], "big")
                            if 40 <= total <= len(data) - link_len:
                                flows.checksum = (data, link_len, total)
                        packet(ts, d)
                        flows.checksum = None
                break
            except Exception as e:
                flows.checksum = None
                self.faults.failed(flows, e, base + off, linktype, data)
        self.frames_seen += n
        return self._take()

    def feed_records(self, buf: bytes, offsets: Sequence[int], layout: RecordLayout,
                     base: int = 0) -> list[Transaction]:
        """Process the classic pcap records at `offsets` in `buf`, complete and valid ones (see
        `split_records`). The input position of the record at offset `off` is `base + off`.
        `buf` may also be a buffer whose slices are bytes, such as an mmap.

        The same results as `feed` on the same frames, several times cheaper: `feed` costs a tuple
        and a copy per frame before any work, then four calls per packet (decode, packet, segment,
        data). Here plain IPv4 + TCP frames of the usual link types are decoded in one unpack, and
        what `FlowTable.packet`, `Stream.segment` and `MessageParser.data` do with the packet
        nearly every byte of a capture is in is done inline: the next in-order segment of a known
        HTTP connection, no SYN/FIN/RST, no ACK that proves a loss. Body bytes are only counted,
        never copied; other in-order bytes go straight to the parser. Every other packet takes
        `FlowTable.packet` exactly as `feed` gives it. tests/unit/test_pipeline.py checks the two
        agree.
        """
        flows = self.flows
        if flows.keep is not None:  # packets are kept for rules: each needs its frame's bytes
            return self.feed(layout.linktype, _frames(buf, offsets, layout), base)
        table_get = flows.table.get
        packet = flows.packet
        cursor = flows.cursor
        decode = self.decoder.link_decoder(layout.linktype)
        unpack_header = _time_and_length(layout.header.format[0]).unpack_from
        scale = layout.scale
        fixed = FIXED_LINK_HEADERS.get(layout.linktype)
        link_len, type_off = fixed if fixed is not None else (14, 12)
        min_caplen = link_len + 40 if fixed is not None else 1 << 62  # IPv4 and TCP without options
        unpack_net = _ipv4_tcp(link_len, type_off).unpack_from
        ip_at = 16 + link_len  # the IP header, from the record's start
        body, chunk_data, close_body, tunnel = State.BODY, State.CHUNK_DATA, State.CLOSE_BODY, State.TUNNEL
        ipv4, tcp, control, ack_flag = ETH_IPV4, PROTO_TCP, SYN | FIN | RST, ACK  # locals: no global lookups
        seq_mod, max_ack_ahead, recent_max, client = SEQ_MOD, MAX_ACK_AHEAD, RECENT_BYTES, Side.CLIENT
        payload_bytes = 0
        records = iter(offsets)
        while True:
            try:  # free when nothing raises; one packet's exception costs its connection only
                for off in records:
                    sec, frac, caplen = unpack_header(buf, off)
                    ts = sec + frac * scale
                    if caplen >= min_caplen:
                        (ethertype, ver_ihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff,
                         flags) = unpack_net(buf, off)
                        plen = total - 20 - ((doff & 0xF0) >> 2)  # TCP payload: IP length less both headers
                        if (ethertype == ipv4 and ver_ihl == 0x45 and proto == tcp and not frag & 0x3FFF
                                and total >= 40 and doff >= 0x50 and total <= caplen - link_len and plen >= 0):
                            entry = table_get((src, sport, dst, dport))
                            if entry is not None and not flags & control:
                                conn, side, peer = entry
                                conv = conn.conv
                                streams = conn.streams
                                if conv is not None and not conn.ignored and (not flags & ack_flag or not (
                                        (other := streams[peer]).pending or (
                                            other.base is not None
                                            and 0 < (ack - other.base - other.offset) % seq_mod < max_ack_ahead))):
                                    if not plen:  # a bare ACK that proves nothing
                                        conn.last_ts = ts
                                        if conv.out or conv.not_http or ts >= flows.next_sweep:
                                            cursor.pos = base + off
                                            flows.after_packet(conn, conv, ts)
                                        continue
                                    stream = streams[side]
                                    if (stream.base is not None and not stream.pending and not stream.finished
                                            and not (seq - stream.base - stream.offset) & 0xFFFFFFFF):
                                        # Stream.segment's in-order case: the bytes go to the parser now.
                                        stream.offset += plen
                                        payload_bytes += plen
                                        conn.last_ts = ts
                                        parser = conn.parsers[side]  # type: ignore[index]  # set with conv
                                        st = parser.state
                                        if (st is body or st is chunk_data) and plen < parser.remaining:
                                            # MessageParser.data's body case: count, never copy.
                                            parser.remaining -= plen
                                            parser.body_len += plen
                                            parser.last_ts = ts
                                            if parser.keep is not None:  # a body kept for replay
                                                parser.keep.add(buf[off + ip_at + total - plen:off + ip_at + total])
                                        elif st is close_body:
                                            parser.body_len += plen
                                            if parser.keep is not None:
                                                parser.keep.add(buf[off + ip_at + total - plen:off + ip_at + total])
                                            parser.last_ts = ts
                                        elif st is not tunnel:
                                            cursor.pos = base + off
                                            end = off + ip_at + total
                                            data = buf[end - plen:end]
                                            if side is client:  # requests' heads: what an insertion targets
                                                if not stream.sums & 2:  # FlowTable._checksum's choice
                                                    if not tcp_checksum_ok(buf, end - total, total):
                                                        stream.offset -= plen  # FlowTable.packet decides
                                                        payload_bytes -= plen
                                                        flows.checksum = (buf, end - total, total)
                                                        packet(ts, (src, dst, sport, dport, seq, ack, flags, data))
                                                        flows.checksum = None
                                                        continue
                                                    stream.sums |= 1
                                                # Stream._deliver's record of the last bytes delivered, which
                                                # a retransmission is compared with.
                                                recent = stream.recent
                                                if (stream.recent_end == stream.offset - plen
                                                        and len(recent) < recent_max):
                                                    recent += data
                                                else:
                                                    stream.recent = bytearray(data[-recent_max:])
                                                stream.recent_end = stream.offset
                                            parser.data(data, ts)
                                        if conv.out or conv.not_http or ts >= flows.next_sweep:
                                            cursor.pos = base + off
                                            flows.after_packet(conn, conv, ts)
                                        continue
                            cursor.pos = base + off
                            end = off + ip_at + total
                            flows.checksum = (buf, end - total, total)
                            packet(ts, (src, dst, sport, dport, seq, ack, flags, buf[end - plen:end]))
                            flows.checksum = None
                            continue
                    # Any other frame: the general decoder, as `feed` does it.
                    cursor.pos = base + off
                    d = decode(buf[off + 16:off + 16 + caplen], ts)
                    if d is not None:
                        packet(ts, d)
                break
            except Exception as e:
                flows.checksum = None
                caplen = unpack_header(buf, off)[2]
                self.faults.failed(flows, e, base + off, layout.linktype, bytes(buf[off + 16:off + 16 + caplen]))
        if offsets:
            cursor.pos = base + offsets[-1]  # as `feed` leaves it: transactions finished later read it
        self.frames_seen += len(offsets)
        flows.payload_bytes += payload_bytes
        return self._take()

    def take_errors(self) -> list[AnalysisError]:
        return self.faults.take()  # packets whose analysis raised since the last call

    def identities(self, limit: int) -> tuple[tuple[Identity, ...], int]:
        """The open connections' identities to save (analyzers.identities), and how many more."""
        return identities(self.flows, limit)

    def restore_identities(self, saved: Iterable[Identity]) -> Restored:
        """Identities a run saved before a restart: each connection continues as it was."""
        self.flows.restored = restored = Restored(saved)
        return restored

    def identity_start(self, uid: str, pos: int) -> None:
        """The input position a restored connection whose message had begun continues at."""
        if isinstance(self.flows.restored, Restored):
            self.flows.restored.start(uid, pos)

    def pin(self) -> int | None:
        """See FlowTable.pin; fragments waiting for the rest of their datagram pin too, and
        connections in flux where the identity they fall back on holds from (analyzers.identities)."""
        pins = [p for p in (self.pins(lambda _pos: 0).get(0), self.decoder.pin()) if p is not None]
        return min(pins, default=None)

    def pins(self, group: Callable[[int], int]) -> dict[int, int]:
        """See FlowTable.pins (and `pin`)."""
        return self.flows.pins(group, fallback_pins(self.flows))

    def close_where(self, started_in: Callable[[int], bool], reason: str) -> tuple[int, list[Transaction]]:
        """Finish the connections that started where `started_in` says (FlowTable.close_where): how
        many, and their transactions (`reason` is the records' reason for requests left unanswered)."""
        n = self.flows.close_where(started_in, reason)
        return n, self._take()

    def set_source(self, name: str) -> None:
        self.flows.set_source(name)

    def keep_packets(self, connection_bytes: int | None, total_bytes: int = DEFAULT_TOTAL_BYTES) -> None:
        """Keep each connection's packets within these bounds (see analyzers.packet_keep), so that
        transactions carry them; `connection_bytes` None stops. Packets already kept stay kept
        when only the bounds change."""
        flows = self.flows
        if connection_bytes is None:
            flows.keep = None
        elif flows.keep is None:
            flows.keep = PacketKeep(connection_bytes, total_bytes)
        else:
            flows.keep.connection_bytes, flows.keep.total_bytes = connection_bytes, total_bytes

    def close(self) -> list[Transaction]:
        """End of input: every open connection is finished and its transactions returned."""
        self.decoder.close()
        self.flows.close_all()
        return self._take()

    def _take(self) -> list[Transaction]:
        out = self.flows.out
        if not out:
            return []
        self.flows.out = []
        self.transactions += len(out)
        return out

    def stats(self) -> dict[str, Any]:
        """Every counter, for summaries and metrics."""
        f = self.flows
        return {
            "frames": self.frames_seen,
            "frames_skipped": dict(sorted(self.decoder.skipped.items())),
            "undecoded": dict(sorted(self.decoder.undecoded.items())),
            "ip_fragments": asdict(self.decoder.fragment_counters),
            "tcp_packets": self.frames_seen - sum(self.decoder.skipped.values()),
            "tcp_payload_bytes": f.payload_bytes,
            "transactions": self.transactions,
            "connections": {**asdict(f.counters), "active": f.active},
            "tcp": asdict(f.tcp),
            "anomalies": dict(sorted(f.anomalies.items())),
            "http": _http_stats(f.http),
            **({"packets_kept": asdict(f.keep.counters)} if f.keep is not None else {}),
        }
