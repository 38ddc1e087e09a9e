"""Link, IP and TCP header decoding with `struct.unpack_from` on the captured bytes.

One call per packet, no object per layer: `FrameDecoder.decode` returns a plain tuple
``(src, dst, sport, dport, seq, ack, flags, payload)`` or ``None`` after counting why the frame
was skipped. Addresses stay raw until a record is written: an IPv4 address is an int (cheaper to
unpack and hash than a bytes slice), an IPv6 address its 16 bytes; inside a tunnel that names a
tenant, the same as `tunnels.TenantV4`/`TenantV6`, which carry it.

Link-layer headers are read in `links`; between the link layer and IP any nesting of the
encapsulations in `tunnels` is decoded (VLAN stacks, PPPoE, MPLS, GRE and ERSPAN, VXLAN, Geneve,
IP in IP), to `MAX_ENCAP_DEPTH` layers; what is not decoded is counted by kind in `undecoded` (and
as `undecoded` among the skipped frames). IP fragments are reassembled (`fragments`); a fragment
that does not complete its datagram is counted as a skipped `ip_fragment`, so frames less skipped
frames is still the TCP packets.
"""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from analyzers.tcp import links, tunnels
from analyzers.tcp.fragments import IPV4_TIMEOUT, IPV6_TIMEOUT, FragmentCounters, Fragments
from analyzers.tcp.tunnels import TenantV4, TenantV6

# Link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD12 = 12
LINKTYPE_RAW_BSD14 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_PPP = 9
LINKTYPE_PPP_HDLC = 50
LINKTYPE_C_HDLC = 104  # Cisco HDLC: address, control, then an EtherType

SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14, LINKTYPE_RAW,
     LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2,
     LINKTYPE_PPP, LINKTYPE_PPP_HDLC, LINKTYPE_C_HDLC}
)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
# Two tags is QinQ; a third is legal but rare. More than this is a malformed or hostile frame.
MAX_VLAN_TAGS = 4
# Encapsulation layers decoded below the link layer (a VLAN stack, an MPLS stack count one each).
# Real captures nest two to four (ERSPAN of a VXLAN overlay: GRE, ERSPAN, Ethernet, IP, UDP, VXLAN,
# Ethernet, IP); past this the frame is crafted to make the decoder recurse, and is counted.
MAX_ENCAP_DEPTH = 8
# IPv6 extension headers a real stack sends number one or two; bound the walk so a crafted chain
# cannot make one packet cost more than a handful of lookups.
MAX_IPV6_EXT_HEADERS = 8
IPV6_EXT_HEADERS = frozenset({0, 43, 60, 135, 139, 140})  # hop-by-hop, routing, dest opts, mobility, HIP, shim6
IPV6_FRAGMENT = 44
IPV6_AH = 51
IPV6_NO_NEXT = 59
PROTO_TCP = 6
PROTO_IPIP = 4
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_GRE = 47

_u16 = struct.Struct("!H").unpack_from
_ipv4 = struct.Struct("!BxHHHxB2xII").unpack_from  # ver/ihl, total length, id, flags/frag, protocol, src, dst
_udp_ports = struct.Struct("!HH").unpack_from
_frag6 = struct.Struct("!BxHI").unpack_from  # IPv6 fragment header: next header, offset/M, id
_ipv6 = struct.Struct("!4xHBx").unpack_from  # payload length, next header
_tcp = struct.Struct("!HHIIBB").unpack_from  # sport, dport, seq, ack, data offset, flags
# The frame nearly every capture is made of, in one unpack: Ethernet, IPv4 without options, TCP.
_eth_ipv4_tcp = struct.Struct("!12xHBxHxxHxB2xIIHHIIBB").unpack_from
_ETH_IPV4_TCP_LEN = 14 + 20 + 20

# Link layers with a fixed-length header holding an EtherType: (header length, EtherType offset).
# Their plain IPv4 + TCP frames have every field at a known offset, which `Pipeline.feed_records`
# unpacks without a call per layer; it sends any other frame to `FrameDecoder`.
FIXED_LINK_HEADERS = {LINKTYPE_ETHERNET: (14, 12), LINKTYPE_LINUX_SLL: (16, 14), LINKTYPE_LINUX_SLL2: (20, 0)}

Address = int | bytes  # IPv4 as an int, IPv6 as 16 bytes


class RecordLayout(NamedTuple):
    """How frames lie in a buffer of classic pcap records, as the capture reader read it from the
    file's header: each frame follows a fixed header (seconds, fraction, captured length, original
    length). Lets `Pipeline.feed_records` walk the records itself instead of receiving one tuple
    and one copy per frame."""

    linktype: int
    header: struct.Struct
    scale: float  # seconds per unit of the fraction
    max_fraction: int  # a fraction at or above this means a corrupt record
    max_caplen: int  # a captured length above this means a corrupt record

Decoded = tuple[Address, Address, int, int, int, int, int, bytes]



class Position(Protocol):
    """Where in the input the frame being decoded is (the flow table's cursor)."""

    pos: int


class LinkDecode(Protocol):
    """Decodes one frame of one link type; `ts` (capture time) ages IP fragments."""

    def __call__(self, data: bytes, ts: float = 0.0) -> Decoded | None: ...


@dataclass(slots=True)
class FragmentHint:
    """What a decoder that does not reassemble (`FrameDecoder(reassemble=False)`, for routing)
    learnt of the last fragment: its datagram, and the packet it starts when it is the first."""

    key: tuple[object, ...]
    first: Decoded | None
    last: bool  # no more fragments after this one


# TCP flag bits.
FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10


class FrameDecoder:
    """Decodes frames of any supported link type; counts every frame it cannot use, by reason.

    `reassemble` False (the `Router`'s decoder) keeps no fragments: it notes in `last_fragment`
    which datagram a fragment belongs to, and the packet it starts, and skips it."""

    def __init__(self, reassemble: bool = True) -> None:
        self.skipped: Counter[str] = Counter()
        self.undecoded: Counter[str] = Counter()  # encapsulations not decoded, by kind
        self.fragment_counters = FragmentCounters()
        self.fragments4 = Fragments(IPV4_TIMEOUT, self.fragment_counters)
        self.fragments6 = Fragments(IPV6_TIMEOUT, self.fragment_counters)
        self.reassemble = reassemble
        self.last_fragment: FragmentHint | None = None
        # Set by the pipeline: fragments remember their input position, and a reassembled packet
        # takes its first fragment's.
        self.position: Position | None = None
        self._link: dict[int, Callable[[bytes], tuple[int, int]]] = {
            LINKTYPE_ETHERNET: links.ethernet,
            LINKTYPE_LINUX_SLL: links.sll,
            LINKTYPE_LINUX_SLL2: links.sll2,
            LINKTYPE_NULL: links.null,
            LINKTYPE_LOOP: links.loop,
            LINKTYPE_RAW: links.raw,
            LINKTYPE_RAW_BSD12: links.raw,
            LINKTYPE_RAW_BSD14: links.raw,
            LINKTYPE_IPV4: links.raw,
            LINKTYPE_IPV6: links.raw,
            LINKTYPE_C_HDLC: links.c_hdlc,
            LINKTYPE_PPP: links.ppp,
            LINKTYPE_PPP_HDLC: links.ppp,
        }
        self._ethernet_general = self._general(links.ethernet)

    def link_decoder(self, linktype: int) -> LinkDecode:
        """Return the per-frame decode function for one link type (chosen once per batch)."""
        link = self._link.get(linktype)
        if link is None:
            return self._unsupported
        if linktype == LINKTYPE_ETHERNET:
            return self._ethernet_fast
        return self._general(link)

    def _general(self, link: Callable[[bytes], tuple[int, int]]) -> LinkDecode:
        def decode(data: bytes, ts: float = 0.0) -> Decoded | None:
            try:
                ethertype, off = link(data)
                return self._network(data, ethertype, off, ts, 0, None)
            except (struct.error, IndexError):
                self.skipped["truncated_frame"] += 1
                return None

        return decode

    def _ethernet_fast(self, data: bytes, ts: float = 0.0) -> Decoded | None:
        """Ethernet + IPv4 (no options, not a fragment) + TCP in one unpack; anything else goes the
        general way. Same result as the general path, about three times cheaper."""
        if len(data) >= _ETH_IPV4_TCP_LEN:
            (ethertype, ver_ihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff,
             flags) = _eth_ipv4_tcp(data, 0)
            if ethertype == ETH_IPV4 and ver_ihl == 0x45 and proto == PROTO_TCP and not frag & 0x3FFF:
                end = 14 + total
                hlen = 34 + (doff >> 4) * 4
                if total >= 40 and doff >= 0x50 and end <= len(data) and hlen <= end:
                    return src, dst, sport, dport, seq, ack, flags, data[hlen:end]
        return self._ethernet_general(data, ts)

    def decode(self, linktype: int, data: bytes, ts: float = 0.0) -> Decoded | None:
        """Decode one frame (convenience for tests; the hot path uses `link_decoder`)."""
        return self.link_decoder(linktype)(data, ts)

    def close(self) -> None:
        """The input ended: datagrams still missing fragments are dropped (counted)."""
        self.fragments4.close()
        self.fragments6.close()

    def pin(self) -> int | None:
        """The earliest input position of a fragment still waiting for the rest of its datagram."""
        pins = [p for p in (self.fragments4.pin(), self.fragments6.pin()) if p is not None]
        return min(pins, default=None)

    def _pos(self) -> int:
        return 0 if self.position is None else self.position.pos

    def _completed(self, fragments: Fragments) -> None:
        """A reassembled packet is where its first fragment is in the input: a restart replaying
        from there sees all of it."""
        if self.position is not None:
            self.position.pos = fragments.completed_pos

    def _unsupported(self, data: bytes, ts: float = 0.0) -> None:
        self.skipped["unsupported_linktype"] += 1
        return None

    def _undecoded(self, kind: str) -> None:
        self.skipped["undecoded"] += 1
        self.undecoded[kind] += 1

    # Between the link layer and IP: VLAN tags and the encapsulations of `tunnels`.
    def _network(self, data: bytes, ethertype: int, off: int, ts: float, depth: int,
                 tenant: str | None) -> Decoded | None:
        """The packet of EtherType `ethertype` at `off`, `depth` encapsulations in."""
        tags = 0
        while ethertype in ETH_VLAN_TAGS:
            if tags == MAX_VLAN_TAGS:
                self.skipped["not_ip"] += 1
                return None
            ethertype = _u16(data, off + 2)[0]
            off += 4
            tags += 1
        if ethertype == ETH_IPV4:
            return self._ipv4(data, off, ts, depth, tenant)
        if ethertype == ETH_IPV6:
            return self._ipv6(data, off, ts, depth, tenant)
        step = _ENCAPSULATIONS.get(ethertype)
        if step is None:
            self.skipped["not_ip"] += 1
            return None
        return self._inner(step(data, off), data, ts, depth, tenant)

    def _inner(self, step: tunnels.Step, data: bytes, ts: float, depth: int,
               tenant: str | None) -> Decoded | None:
        """Go on with what an encapsulation header said its payload is."""
        if isinstance(step, str):
            self._undecoded(step)
            return None
        if depth >= MAX_ENCAP_DEPTH:
            self._undecoded("too_deep")
            return None
        ethertype, off, inner = step
        if ethertype == tunnels.ETH_TEB:  # an Ethernet frame
            return self._network(data, _u16(data, off + 12)[0], off + 14, ts, depth + 1,
                                 tunnels.within(tenant, inner))
        return self._network(data, ethertype, off, ts, depth + 1, tunnels.within(tenant, inner))

    # Network and transport layers.
    def _ipv4(self, data: bytes, off: int, ts: float, depth: int, tenant: str | None) -> Decoded | None:
        ver_ihl, total, ident, frag, proto, src, dst = _ipv4(data, off)
        if ver_ihl >> 4 != 4:
            self.skipped["bad_ip_version"] += 1
            return None
        ihl = (ver_ihl & 0x0F) * 4
        if total == 0:  # written by a host doing TCP segmentation offload: the frame is the packet
            total = len(data) - off
        if ihl < 20 or total < ihl:
            self.skipped["bad_ipv4_header"] += 1
            return None
        a: Address = src
        b: Address = dst
        if tenant is not None:
            a, b = TenantV4(src, tenant), TenantV4(dst, tenant)
        if frag & 0x3FFF:  # more-fragments flag or a fragment offset
            end = off + total
            if end > len(data):  # cut by the capture's snap length: what is missing is lost
                self.skipped["truncated_frame"] += 1
                return None
            key = (a, b, proto, ident)
            if not self.reassemble:
                self._hint(key, frag & 0x1FFF, not frag & 0x2000, proto, data[off + ihl:end], a, b, ts, depth,
                           tenant)
                return None
            whole = self.fragments4.add(key, (frag & 0x1FFF) * 8, bool(frag & 0x2000),
                                        data[off + ihl:end], ts, proto, self._pos())
            if whole is None:
                self.skipped["ip_fragment"] += 1
                return None
            proto, payload = whole
            self._completed(self.fragments4)
            return self._transport(proto, payload, 0, len(payload), a, b, ts, depth, tenant)
        return self._transport(proto, data, off + ihl, off + total, a, b, ts, depth, tenant)

    def _ipv6(self, data: bytes, off: int, ts: float, depth: int, tenant: str | None) -> Decoded | None:
        if data[off] >> 4 != 6:
            self.skipped["bad_ip_version"] += 1
            return None
        plen, nxt = _ipv6(data, off)
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        if len(dst) < 16:
            raise IndexError
        if tenant is not None:
            src, dst = TenantV6(src, tenant), TenantV6(dst, tenant)
        end = off + 40 + plen if plen else len(data)  # 0 is a jumbogram or TSO: take the rest
        return self._ipv6_chain(data, off + 40, end, nxt, src, dst, ts, depth, tenant, 0)

    def _ipv6_chain(self, data: bytes, pos: int, end: int, nxt: int, src: bytes, dst: bytes, ts: float,
                    depth: int, tenant: str | None, walked: int) -> Decoded | None:
        """Walk the extension headers from `pos` (`walked` already seen) to the upper layer."""
        for n in range(walked, MAX_IPV6_EXT_HEADERS + 1):
            if nxt in IPV6_EXT_HEADERS:
                nxt, hlen = data[pos], (data[pos + 1] + 1) * 8
            elif nxt == IPV6_AH:
                nxt, hlen = data[pos], (data[pos + 1] + 2) * 4
            elif nxt == IPV6_FRAGMENT:
                nxt, offword, ident = _frag6(data, pos)
                if offword & 0xFFF9:  # an offset or more fragments (RFC 6946: else it is whole)
                    return self._fragment6(data, pos + 8, end, nxt, offword, ident, src, dst, ts, depth,
                                           tenant, n + 1)
                hlen = 8
            else:
                return self._transport(nxt, data, pos, end, src, dst, ts, depth, tenant)
            pos += hlen
        self.skipped["ipv6_header_chain_too_long"] += 1
        return None

    def _fragment6(self, data: bytes, pos: int, end: int, nxt: int, offword: int, ident: int, src: bytes,
                   dst: bytes, ts: float, depth: int, tenant: str | None, walked: int) -> Decoded | None:
        if end > len(data):  # cut by the capture's snap length
            self.skipped["truncated_frame"] += 1
            return None
        key = (src, dst, ident)
        if not self.reassemble:
            self._hint(key, offword >> 3, not offword & 1, nxt, data[pos:end], src, dst, ts, depth, tenant)
            return None
        whole = self.fragments6.add(key, offword & 0xFFF8, bool(offword & 1), data[pos:end], ts, nxt, self._pos())
        if whole is None:
            self.skipped["ip_fragment"] += 1
            return None
        nxt, payload = whole
        self._completed(self.fragments6)
        return self._ipv6_chain(payload, 0, len(payload), nxt, src, dst, ts, depth, tenant, walked)

    def _hint(self, key: tuple[object, ...], offset: int, last: bool, proto: int, payload: bytes,
              src: Address, dst: Address, ts: float, depth: int, tenant: str | None) -> None:
        """A fragment, for a decoder that does not reassemble: note whose it is and skip it."""
        first = None
        if offset == 0:  # (what it counts is not kept: the worker's decoder counts)
            with contextlib.suppress(struct.error, IndexError):
                first = self._transport(proto, payload, 0, len(payload), src, dst, ts, depth, tenant)
        self.last_fragment = FragmentHint(key, first, last)
        self.skipped["ip_fragment"] += 1

    def _transport(self, proto: int, data: bytes, off: int, end: int, src: Address, dst: Address,
                   ts: float, depth: int, tenant: str | None) -> Decoded | None:
        """The IP payload of protocol `proto` at `off`, up to `end`."""
        if proto == PROTO_TCP:
            return self._tcp(data, off, end, src, dst)
        step: tunnels.Step
        if proto == PROTO_UDP:
            dport = _udp_ports(data, off)[1]
            if dport in tunnels.VXLAN_PORTS:
                step = tunnels.vxlan(data, off + 8)
            elif dport == tunnels.GENEVE_PORT:
                step = tunnels.geneve(data, off + 8)
            else:
                self.skipped["not_tcp"] += 1
                return None
        elif proto == PROTO_GRE:
            step = tunnels.gre(data, off)
        elif proto == PROTO_IPIP:
            step = (ETH_IPV4, off, None)
        elif proto == PROTO_IPV6:
            step = (ETH_IPV6, off, None)
        else:
            self.skipped["not_tcp"] += 1
            return None
        return self._inner(step, data, ts, depth, tenant)

    def _tcp(self, data: bytes, off: int, end: int, src: Address, dst: Address) -> Decoded | None:
        """`end` is where the IP header says the packet ends; the capture may hold less (-s)."""
        sport, dport, seq, ack, doff, flags = _tcp(data, off)
        hlen = (doff >> 4) * 4
        have = min(end, len(data))
        if hlen < 20 or off + hlen > have:
            # A frame cut short by the capture is `truncated`; a header that does not fit in
            # the packet the IP header describes is bad.
            self.skipped["truncated_frame" if hlen >= 20 and off + hlen <= end else "bad_tcp_header"] += 1
            return None
        return src, dst, sport, dport, seq, ack, flags, data[off + hlen:have]


# EtherTypes of encapsulations below IP -> the function that reads their header.
_ENCAPSULATIONS: dict[int, Callable[[bytes, int], tunnels.Step]] = {
    tunnels.ETH_PPPOE_SESSION: tunnels.pppoe_session,
    tunnels.ETH_MPLS: tunnels.mpls,
    tunnels.ETH_MPLS_MULTICAST: tunnels.mpls,
    tunnels.ETH_TEB: lambda data, off: (_u16(data, off + 12)[0], off + 14, None),
}
