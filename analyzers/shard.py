"""Which of several worker processes owns each frame of a capture (`pcapwatch read --workers`): the
one that owns its TCP connection, so that workers share a capture and each sees all of its
connections' packets in order. The feeder walks the records once and routes their offsets here;
the fast path reads a record's ports with one unpack, other frames are decoded.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterator, Sequence, Sized
from functools import lru_cache, partial
from typing import Literal, NamedTuple

from analyzers.fragment_routes import FragmentRoutes, frames_after, records_after
from analyzers.pipeline import Frame
from analyzers.tcp.frames import (
    ETH_IPV4,
    FIXED_LINK_HEADERS,
    PROTO_TCP,
    Decoded,
    FragmentHint,
    FrameDecoder,
    LinkDecode,
    RecordLayout,
)


class _Routing(NamedTuple):
    """How `Router.split` reads, in one unpack per record, whose a frame is."""

    # Record header (fraction, captured length), then EtherType, IPv4 ver/ihl, flags and fragment
    # offset, protocol and the four TCP port bytes as one int, all in the capture's byte order.
    struct: struct.Struct
    min_caplen: int  # a frame this long holds IPv4 and TCP headers without options
    ipv4: int  # the IPv4 EtherType as `struct` reads it
    fragment: int  # the more-fragments bit and the offset, as `struct` reads them
    swap: bool  # `struct` reads the ports' XOR byte-swapped (a little-endian capture)

    @staticmethod
    @lru_cache(maxsize=16)
    def of(layout: RecordLayout) -> _Routing | None:
        fixed = FIXED_LINK_HEADERS.get(layout.linktype)
        if fixed is None:
            return None
        link_len, type_off = fixed
        order = layout.header.format[0]
        assert order in "<>" and layout.header.size == 16
        routing = struct.Struct(f"{order}4xII4x{type_off}xH{link_len - type_off - 2}xB5xHxB10xI")
        byteorder: Literal["little", "big"] = "little" if order == "<" else "big"
        ipv4 = int.from_bytes(ETH_IPV4.to_bytes(2, "big"), byteorder)
        fragment = int.from_bytes((0x3FFF).to_bytes(2, "big"), byteorder)
        return _Routing(routing, link_len + 40, ipv4, fragment, order == "<")


@lru_cache(maxsize=16)
def _frame_routing(link_len: int, type_off: int) -> struct.Struct:
    """`_Routing` for a frame on its own: EtherType, ver/ihl, fragment, protocol, ports, network order."""
    return struct.Struct(f"!{type_off}xH{link_len - type_off - 2}xB5xHxB10xHH")


class Router:
    """Which of `shards` workers owns each frame: the one that owns its TCP connection, so that
    workers can share a capture, each seeing all of its connections' packets in order.

    A connection is known by the XOR of its ports (the same both ways; two connections that share
    it share an owner, which is harmless). The first time one is seen it goes to the worker given
    the fewest frames so far: load spreads by traffic, where a hash of the ports left one worker
    a tenth more than the other on a capture of a hundred busy connections. A frame that does not
    decode goes to worker 0, whose `FrameDecoder` counts it; one whose bytes hold plain IPv4 +
    TCP headers (a bad TCP header) goes by the ports there, unread further, and that worker
    counts it. An IP fragment goes where its datagram's first fragment went (`fragment_routes`).
    The owners tables hold at most 65,536 entries each, one per XOR value.
    """

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.owners: dict[int, int] = {}
        # The same, keyed by the XOR as a little-endian capture's bytes read it: no byte swap per
        # record on the usual captures.
        self.owners_swapped: dict[int, int] = {}
        self.loads = [0] * shards  # frames given to each worker before the current batch
        # Its counts are not kept (the owner's decoder counts); it keeps no fragments.
        self._decoder = FrameDecoder(reassemble=False)
        self._decoders: dict[int, LinkDecode] = {}
        self.fragments = FragmentRoutes()

    def split(self, buf: bytes, start: int, end: int,
              layout: RecordLayout) -> tuple[list[array[int]], int]:
        """`split_records`, and which worker owns each record: one list of offsets per worker.

        Walking once and handing each worker only its records is what lets workers share a
        capture without each reading and walking all of it.
        """
        outs = [array("Q") for _ in range(self.shards)]
        routing = _Routing.of(layout)
        off = start
        if routing is not None:
            appends = [a.append for a in outs]
            owners_get = (self.owners_swapped if routing.swap else self.owners).get
            unpack, size, min_caplen = routing.struct.unpack_from, routing.struct.size, routing.min_caplen
            ipv4, fragment, swap = routing.ipv4, routing.fragment, routing.swap
            max_fraction, max_caplen = layout.max_fraction, layout.max_caplen
            while off + size <= end:
                frac, caplen, ethertype, ver_ihl, frag, proto, ports = unpack(buf, off)
                if caplen > max_caplen or frac >= max_fraction:
                    break
                nxt = off + 16 + caplen
                if nxt > end:
                    break
                if (caplen >= min_caplen and ethertype == ipv4 and ver_ihl == 0x45 and proto == PROTO_TCP
                        and not frag & fragment):
                    x = (ports ^ ports >> 16) & 0xFFFF  # sport ^ dport, in the capture's byte order
                    owner = owners_get(x)
                    appends[self._new(x, swap, outs) if owner is None else owner](off)
                else:
                    ahead = partial(records_after, buf, nxt, end, layout)
                    outs[self._owner(layout.linktype, buf[off + 16:nxt], outs, ahead)].append(off)
                off = nxt
        # Other link types, and the last records of a buffer (too near its end for `unpack`).
        unpack_header = layout.header.unpack_from
        while off + 16 <= end:
            _sec, frac, caplen, _orig = unpack_header(buf, off)
            if caplen > layout.max_caplen or frac >= layout.max_fraction or off + 16 + caplen > end:
                break
            ahead = partial(records_after, buf, off + 16 + caplen, end, layout)
            outs[self._owner(layout.linktype, buf[off + 16:off + 16 + caplen], outs, ahead)].append(off)
            off += 16 + caplen
        for k, a in enumerate(outs):
            self.loads[k] += len(a)
        return outs, off

    def route_frames(self, linktype: int, frames: Sequence[Frame]) -> list[list[Frame]]:
        """`split` for frames already cut out (pcapng): each worker's share, in order."""
        outs: list[list[Frame]] = [[] for _ in range(self.shards)]
        fixed = FIXED_LINK_HEADERS.get(linktype)
        if fixed is None:
            for i, frame in enumerate(frames):
                outs[self._owner(linktype, frame[2], outs, partial(frames_after, frames, i + 1))].append(frame)
        else:
            unpack, min_len = _frame_routing(*fixed).unpack_from, fixed[0] + 40
            owners_get = self.owners.get
            for i, frame in enumerate(frames):
                data = frame[2]
                if len(data) >= min_len:
                    ethertype, ver_ihl, frag, proto, sport, dport = unpack(data)
                    if ethertype == ETH_IPV4 and ver_ihl == 0x45 and proto == PROTO_TCP and not frag & 0x3FFF:
                        owner = owners_get(sport ^ dport)
                        outs[self._assign(sport ^ dport, outs) if owner is None else owner].append(frame)
                        continue
                outs[self._owner(linktype, data, outs, partial(frames_after, frames, i + 1))].append(frame)
        for k, share in enumerate(outs):
            self.loads[k] += len(share)
        return outs

    def _owner(self, linktype: int, frame: bytes, outs: Sequence[Sized],
               ahead: Callable[[], Iterator[bytes]] | None = None) -> int:
        """The owner of a frame the fast paths leave; `ahead` gives the frames after it."""
        decode = self._decoders.get(linktype)
        if decode is None:
            decode = self._decoders[linktype] = self._decoder.link_decoder(linktype)
        d = decode(frame)
        if d is None:
            hint = self._decoder.last_fragment
            if hint is None:
                return 0
            self._decoder.last_fragment = None
            return self.fragments.owner(hint, decode, self._take_hint, ahead, lambda d: self._of(d, outs))
        return self._of(d, outs)

    def _of(self, d: Decoded, outs: Sequence[Sized]) -> int:
        """The owner of the connection of packet `d`."""
        x = d[2] ^ d[3]
        owner = self.owners.get(x)
        return self._assign(x, outs) if owner is None else owner

    def _take_hint(self) -> FragmentHint | None:
        hint, self._decoder.last_fragment = self._decoder.last_fragment, None
        return hint

    def _new(self, x: int, swapped: bool, outs: Sequence[Sized]) -> int:
        """The owner of a port XOR not seen yet in this byte order."""
        if not swapped:
            owner = self.owners.get(x)
            return self._assign(x, outs) if owner is None else owner
        canonical = (x & 0xFF) << 8 | x >> 8
        owner = self.owners.get(canonical)
        if owner is None:
            owner = self._assign(canonical, outs)
        self.owners_swapped[x] = owner
        return owner

    def _assign(self, x: int, outs: Sequence[Sized]) -> int:
        """A new connection: to the worker given the fewest frames so far."""
        loads = [self.loads[k] + len(outs[k]) for k in range(self.shards)]
        owner = self.owners[x] = loads.index(min(loads))
        return owner
