"""Link, IP and TCP header decoding with `struct.unpack_from` on the captured bytes.

One call per packet, no object per layer: `FrameDecoder.decode` returns a plain tuple
``(src, dst, sport, dport, seq, ack, flags, payload)`` or ``None`` after counting why the frame
was skipped. Addresses stay raw until a record is written: an IPv4 address is an int (cheaper to
unpack and hash than a bytes slice), an IPv6 address its 16 bytes.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

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

SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14, LINKTYPE_RAW,
     LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2}
)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
# Two tags is QinQ; a third is legal but rare. More than this is a malformed or hostile frame.
MAX_VLAN_TAGS = 4
# IPv6 extension headers a real stack sends number one or two; bound the walk so a crafted chain
# cannot make one packet cost more than a handful of lookups.
MAX_IPV6_EXT_HEADERS = 8
IPV6_EXT_HEADERS = frozenset({0, 43, 60, 135, 139, 140})  # hop-by-hop, routing, dest opts, mobility, HIP, shim6
IPV6_FRAGMENT = 44
IPV6_AH = 51
IPV6_NO_NEXT = 59
# BSD null/loopback address families meaning IPv6 (they differ by OS).
NULL_AF_INET6 = frozenset({10, 24, 28, 30})
PROTO_TCP = 6

_u16 = struct.Struct("!H").unpack_from
_u32le = struct.Struct("<I").unpack_from
_u32be = struct.Struct("!I").unpack_from
_ipv4 = struct.Struct("!BxHxxHxB2xII").unpack_from  # ver/ihl, total length, flags/frag, protocol, src, dst
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

# TCP flag bits.
FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10


class FrameDecoder:
    """Decodes frames of any supported link type; counts every frame it cannot use, by reason."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self._link: dict[int, Callable[[bytes], tuple[int, int]]] = {
            LINKTYPE_ETHERNET: self._ethernet,
            LINKTYPE_LINUX_SLL: self._sll,
            LINKTYPE_LINUX_SLL2: self._sll2,
            LINKTYPE_NULL: self._null,
            LINKTYPE_LOOP: self._loop,
            LINKTYPE_RAW: self._raw,
            LINKTYPE_RAW_BSD12: self._raw,
            LINKTYPE_RAW_BSD14: self._raw,
            LINKTYPE_IPV4: self._raw,
            LINKTYPE_IPV6: self._raw,
        }
        self._ethernet_general = self._general(self._ethernet)

    def link_decoder(self, linktype: int) -> Callable[[bytes], Decoded | None]:
        """Return the per-frame decode function for one link type (chosen once per batch)."""
        link = self._link.get(linktype)
        if link is None:
            return self._unsupported
        if linktype == LINKTYPE_ETHERNET:
            return self._ethernet_fast
        return self._general(link)

    def _general(self, link: Callable[[bytes], tuple[int, int]]) -> Callable[[bytes], Decoded | None]:
        def decode(data: bytes) -> Decoded | None:
            try:
                ethertype, off = link(data)
                if ethertype == ETH_IPV4:
                    return self._ipv4(data, off)
                if ethertype == ETH_IPV6:
                    return self._ipv6(data, off)
                self.skipped["not_ip"] += 1
                return None
            except (struct.error, IndexError):
                self.skipped["truncated_frame"] += 1
                return None

        return decode

    def _ethernet_fast(self, data: bytes) -> Decoded | None:
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
        return self._ethernet_general(data)

    def decode(self, linktype: int, data: bytes) -> Decoded | None:
        """Decode one frame (convenience for tests; the hot path uses `link_decoder`)."""
        return self.link_decoder(linktype)(data)

    def _unsupported(self, data: bytes) -> None:
        self.skipped["unsupported_linktype"] += 1
        return None

    # Link layers: each returns (ethertype, offset of the network header).
    @staticmethod
    def _ethernet(data: bytes) -> tuple[int, int]:
        ethertype = _u16(data, 12)[0]
        off = 14
        tags = 0
        while ethertype in ETH_VLAN_TAGS and tags < MAX_VLAN_TAGS:
            ethertype = _u16(data, off + 2)[0]
            off += 4
            tags += 1
        return ethertype, off

    @staticmethod
    def _sll(data: bytes) -> tuple[int, int]:
        return _u16(data, 14)[0], 16

    @staticmethod
    def _sll2(data: bytes) -> tuple[int, int]:
        return _u16(data, 0)[0], 20

    @staticmethod
    def _null(data: bytes) -> tuple[int, int]:
        family = _u32le(data, 0)[0]
        if family > 0xFFFF:  # written by a big-endian host
            family = _u32be(data, 0)[0]
        return _family(family), 4

    @staticmethod
    def _loop(data: bytes) -> tuple[int, int]:
        return _family(_u32be(data, 0)[0]), 4

    @staticmethod
    def _raw(data: bytes) -> tuple[int, int]:
        version = data[0] >> 4  # IndexError on an empty frame: counted as truncated
        return (ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0), 0

    # Network and transport layers.
    def _ipv4(self, data: bytes, off: int) -> Decoded | None:
        ver_ihl, total, frag, proto, src, dst = _ipv4(data, off)
        if ver_ihl >> 4 != 4:
            self.skipped["bad_ip_version"] += 1
            return None
        ihl = (ver_ihl & 0x0F) * 4
        if total == 0:  # written by a host doing TCP segmentation offload: the frame is the packet
            total = len(data) - off
        if ihl < 20 or total < ihl:
            self.skipped["bad_ipv4_header"] += 1
            return None
        if frag & 0x3FFF:  # more-fragments flag or a fragment offset
            self.skipped["ip_fragment"] += 1
            return None
        if proto != PROTO_TCP:
            self.skipped["not_tcp"] += 1
            return None
        return self._tcp(data, off + ihl, off + total, src, dst)

    def _ipv6(self, data: bytes, off: int) -> Decoded | None:
        if data[off] >> 4 != 6:
            self.skipped["bad_ip_version"] += 1
            return None
        plen, nxt = _ipv6(data, off)
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        end = off + 40 + plen if plen else len(data)  # 0 is a jumbogram or TSO: take the rest
        pos = off + 40
        for _ in range(MAX_IPV6_EXT_HEADERS + 1):
            if nxt == PROTO_TCP:
                return self._tcp(data, pos, end, src, dst)
            if nxt in IPV6_EXT_HEADERS:
                nxt, hlen = data[pos], (data[pos + 1] + 1) * 8
            elif nxt == IPV6_AH:
                nxt, hlen = data[pos], (data[pos + 1] + 2) * 4
            elif nxt == IPV6_FRAGMENT:
                self.skipped["ip_fragment"] += 1
                return None
            else:
                self.skipped["not_tcp"] += 1
                return None
            pos += hlen
        self.skipped["ipv6_header_chain_too_long"] += 1
        return None

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


def _family(family: int) -> int:
    if family == 2:
        return ETH_IPV4
    if family in NULL_AF_INET6:
        return ETH_IPV6
    return 0
