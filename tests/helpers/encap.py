"""Real captured frames re-encapsulated the ways traffic reaches a sensor, and IP fragmentation.

Each `ENCAPSULATIONS` entry takes one captured Ethernet frame and returns it wrapped (PPPoE, Cisco
HDLC, MPLS, GRE, ERSPAN I/II/III, VXLAN, Geneve, IP in IP (4in4, 6in4, 4in6, 6in6), VLAN stacks,
and a nesting), with the link type of the result; `fragment4`/`fragment6` cut an IP packet into fragments. Headers are
built field by field from the RFCs, independently of analyzers/tcp/tunnels.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from helpers import pcapgen as g

Packet = g.Packet  # (ts_ns, frame)

LINKTYPE_C_HDLC = 104
ETH_IPV4, ETH_IPV6, ETH_8021Q, ETH_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
OUTER_A, OUTER_B = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])  # tunnel endpoints (TEST-NET-1)
OUTER6_A = bytes.fromhex("20010db8000000000000000000000a01")
OUTER6_B = bytes.fromhex("20010db8000000000000000000000a02")
MAC_X, MAC_Y = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000aa02")


def read_frames(path: str | Path) -> tuple[int, list[Packet]]:
    """A little-endian microsecond pcap's link type and frames."""
    data = Path(path).read_bytes()
    header, records = g.split_pcap(data)
    linktype = struct.unpack_from("<I", header, 20)[0]
    out = []
    for rec in records:
        sec, usec = struct.unpack_from("<II", rec)
        out.append(((sec * 10**6 + usec) * 1000, rec[16:]))
    return linktype, out


def ip_of(frame: bytes) -> bytes:
    """The IP packet of an untagged Ethernet frame."""
    return frame[14:]


def eth(ethertype: int, payload: bytes, src: bytes = MAC_X, dst: bytes = MAC_Y) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ethertype_of(ip: bytes) -> int:
    return ETH_IPV4 if ip[0] >> 4 == 4 else ETH_IPV6


def ip_proto(ip: bytes) -> int:
    """The IP protocol number of IP in IP: 4 for IPv4, 41 for IPv6 (the capture holds both)."""
    return 4 if ip[0] >> 4 == 4 else 41


def outer_ipv4(proto: int, payload: bytes) -> bytes:
    return g.ipv4_header(OUTER_A, OUTER_B, len(payload), proto=proto) + payload


def outer_ipv6(proto: int, payload: bytes) -> bytes:
    return g.ipv6_header(OUTER6_A, OUTER6_B, payload, proto=proto)


def udp(dport: int, payload: bytes, sport: int = 49152) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)


def gre(proto: int, payload: bytes, *, key: int | None = None, seq: int | None = None,
        checksum: bool = False) -> bytes:
    """GRE version 0 (RFC 2784/2890): C, K, S bits and their fields in that order."""
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    out = struct.pack("!HH", flags, proto)
    if checksum:
        out += b"\0\0\0\0"
    if key is not None:
        out += struct.pack("!I", key)
    if seq is not None:
        out += struct.pack("!I", seq)
    return out + payload


def pppoe(ip: bytes, session: int = 0x1234) -> bytes:
    """PPPoE session stage over Ethernet: ver/type 0x11, code 0, session, length, PPP protocol."""
    proto = 0x0021 if ip[0] >> 4 == 4 else 0x0057
    return eth(0x8864, struct.pack("!BBHHH", 0x11, 0, session, len(ip) + 2, proto) + ip)


def c_hdlc(ip: bytes) -> bytes:
    return struct.pack("!BBH", 0x0F, 0, ethertype_of(ip)) + ip


def mpls(ip: bytes, labels: Sequence[int] = (16, 1000)) -> bytes:
    stack = b""
    for i, label in enumerate(labels):
        bos = 1 if i == len(labels) - 1 else 0
        stack += struct.pack("!I", label << 12 | bos << 8 | 64)
    return stack + ip


def vxlan(frame: bytes, vni: int) -> bytes:
    return eth(ETH_IPV4, outer_ipv4(17, udp(4789, struct.pack("!II", 0x08000000, vni << 8) + frame)))


def geneve(frame: bytes, vni: int) -> bytes:
    """Geneve with two options (8 bytes each: class, type, length 1 word, data)."""
    options = struct.pack("!HBBI", 0x0102, 0x80, 1, 0xDEADBEEF) + struct.pack("!HBBI", 0xFFFF, 3, 1, 7)
    header = struct.pack("!BBHI", len(options) // 4, 0, 0x6558, vni << 8) + options
    return eth(ETH_IPV4, outer_ipv4(17, udp(6081, header + frame)))


def erspan2(frame: bytes, session: int = 5, seq: int = 1) -> bytes:
    header = struct.pack("!HHI", 1 << 12 | 100, session & 0x3FF, 0)  # version 1, VLAN 100, session, index
    return eth(ETH_IPV4, outer_ipv4(47, gre(0x88BE, header + frame, seq=seq)))


def erspan3(frame: bytes, session: int = 6, seq: int = 1, platform: bool = True) -> bytes:
    """ERSPAN type III, frame type 0 (Ethernet), with the optional 8-byte platform subheader."""
    word = 0 << 10 | (1 if platform else 0)  # P=0, FT=0, HW id 0, D 0, Gra 0, O
    header = struct.pack("!HHIHH", 2 << 12 | 100, session & 0x3FF, 0x12345678, 0, word)
    if platform:
        header += struct.pack("!II", 3 << 26, 0)
    return eth(ETH_IPV4, outer_ipv4(47, gre(0x22EB, header + frame, seq=seq)))


class Encap(NamedTuple):
    linktype: int
    wrap: Callable[[bytes], bytes]  # an untagged Ethernet frame -> the encapsulated frame
    tshark: tuple[str, ...] = ()  # extra tshark options to decode it


def _vlan3(f: bytes) -> bytes:
    """802.1ad service tag, then two 802.1Q tags."""
    return eth(ETH_8021AD, struct.pack("!HHHHH", 30, ETH_8021Q, 20, ETH_8021Q, 10) + f[12:14] + ip_of(f))


def _in_ipv4(proto: int, body: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    return lambda f: eth(ETH_IPV4, outer_ipv4(proto, body(f)))


ENCAPSULATIONS: dict[str, Encap] = {
    "pppoe": Encap(g.LINKTYPE_ETHERNET, lambda f: pppoe(ip_of(f))),
    "c-hdlc": Encap(LINKTYPE_C_HDLC, lambda f: c_hdlc(ip_of(f))),
    "mpls": Encap(g.LINKTYPE_ETHERNET, lambda f: eth(0x8847, mpls(ip_of(f)))),
    "vlan-3": Encap(g.LINKTYPE_ETHERNET, _vlan3),
    "gre-ipv4": Encap(g.LINKTYPE_ETHERNET,
                      _in_ipv4(47, lambda f: gre(ethertype_of(ip_of(f)), ip_of(f), checksum=True))),
    "gre-ipv6-outer": Encap(g.LINKTYPE_ETHERNET,
                            lambda f: eth(ETH_IPV6, outer_ipv6(47, gre(ethertype_of(ip_of(f)), ip_of(f), key=9)))),
    "nvgre": Encap(g.LINKTYPE_ETHERNET, _in_ipv4(47, lambda f: gre(0x6558, f, key=0x123456 << 8 | 7))),
    "erspan1": Encap(g.LINKTYPE_ETHERNET, _in_ipv4(47, lambda f: gre(0x88BE, f))),
    "erspan2": Encap(g.LINKTYPE_ETHERNET, erspan2),
    "erspan3": Encap(g.LINKTYPE_ETHERNET, erspan3),
    "vxlan": Encap(g.LINKTYPE_ETHERNET, lambda f: vxlan(f, 5001), ("-d", "udp.port==4789,vxlan")),
    "geneve": Encap(g.LINKTYPE_ETHERNET, lambda f: geneve(f, 77), ("-d", "udp.port==6081,geneve")),
    "ip-in-ipv4": Encap(g.LINKTYPE_ETHERNET, lambda f: eth(ETH_IPV4, outer_ipv4(ip_proto(ip_of(f)), ip_of(f)))),
    "ip-in-ipv6": Encap(g.LINKTYPE_ETHERNET, lambda f: eth(ETH_IPV6, outer_ipv6(ip_proto(ip_of(f)), ip_of(f)))),
    # Nested: VXLAN carried over an MPLS core inside GRE, mirrored with ERSPAN II.
    "erspan2-mpls-gre-vxlan": Encap(g.LINKTYPE_ETHERNET, lambda f: erspan2(
        eth(0x8847, mpls(outer_ipv4(47, gre(ETH_IPV4, ip_of(vxlan(f, 42)))), labels=(300,)))),
        ("-d", "udp.port==4789,vxlan")),
}
# Encapsulations of IPv6 packets (the capture converted to IPv6 first).
ENCAPSULATIONS_V6: dict[str, Encap] = {
    "6in4": Encap(g.LINKTYPE_ETHERNET, _in_ipv4(41, ip_of)),
    "6in6": Encap(g.LINKTYPE_ETHERNET, lambda f: eth(ETH_IPV6, outer_ipv6(41, ip_of(f)))),
    "pppoe-v6": Encap(g.LINKTYPE_ETHERNET, lambda f: pppoe(ip_of(f))),
    "mpls-v6": Encap(g.LINKTYPE_ETHERNET, lambda f: eth(0x8847, mpls(ip_of(f), labels=(20,)))),
}


def wrap_all(packets: Iterable[Packet], wrap: Callable[[bytes], bytes]) -> list[Packet]:
    return [(ts, wrap(frame)) for ts, frame in packets]


def interleave(*captures: Sequence[Packet]) -> list[Packet]:
    """Several captures' packets in time order; at equal times, one of each in turn."""
    tagged = [(ts, i, k, frame) for k, cap in enumerate(captures) for i, (ts, frame) in enumerate(cap)]
    return [(ts, frame) for ts, _i, _k, frame in sorted(tagged, key=lambda t: (t[0], t[1], t[2]))]


# Fragments --------------------------------------------------------------------------------------


def _cuts(length: int, pieces: int) -> list[tuple[int, int]]:
    """[start, end) of `pieces` fragments of a `length`-byte payload, starts multiples of 8."""
    step = max(8, (length // pieces + 7) // 8 * 8)
    return [(start, min(start + step, length)) for start in range(0, length, step)]


def fragment4(ip: bytes, pieces: int = 3, overlap: int = 0) -> list[bytes]:
    """An IPv4 packet (no options) as fragments in order; each but the last reaches `overlap`
    bytes (a multiple of 8) into the next, with the same bytes."""
    ihl = (ip[0] & 0x0F) * 4
    src, dst, proto, ident = ip[12:16], ip[16:20], ip[9], struct.unpack_from("!H", ip, 4)[0]
    total = struct.unpack_from("!H", ip, 2)[0]
    payload = ip[ihl:total]
    out = []
    for start, end in _cuts(len(payload), pieces):
        more = end < len(payload)
        stop = min(end + overlap, len(payload)) if more else end
        body = payload[start:stop]
        frag = (0x2000 if more else 0) | start // 8
        out.append(g.ipv4_header(src, dst, len(body), proto=proto, ident=ident, frag=frag) + body)
    return out


def fragment6(ip: bytes, ident: int, pieces: int = 3, overlap: int = 0) -> list[bytes]:
    """An IPv6 packet without extension headers as fragments (fragment header, RFC 8200)."""
    nxt, src, dst = ip[6], ip[8:24], ip[24:40]
    plen = struct.unpack_from("!H", ip, 4)[0]
    payload = ip[40:40 + plen]
    out = []
    for start, end in _cuts(len(payload), pieces):
        more = end < len(payload)
        stop = min(end + overlap, len(payload)) if more else end
        header = struct.pack("!BBHI", nxt, 0, start | (1 if more else 0), ident)
        body = header + payload[start:stop]
        out.append(struct.pack("!IHBB16s16s", 6 << 28, len(body), 44, 64, src, dst) + body)
    return out
