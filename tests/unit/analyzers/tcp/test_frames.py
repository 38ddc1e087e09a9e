"""FrameDecoder on crafted frames: every link type, VLAN stacks, IP options and extension headers,
fragments, non-TCP and frames cut at every length.

Frames are built field by field by `tests/pcapgen.py`. A frame the decoder cannot use must give
None and exactly one named count, never an exception: a capture holds whatever the wire carried.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest
from helpers import pcapgen as g
from helpers.pcapgen import Segment

from analyzers.tcp.frames import (
    ACK,
    LINKTYPE_RAW_BSD12,
    LINKTYPE_RAW_BSD14,
    MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS,
    FrameDecoder,
)

PSH = 0x08
SEG4 = Segment(0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80, 1000, 2000, ACK | PSH,
               b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
SEG6 = SEG4._replace(src=ipaddress.ip_address("2001:db8::1").packed, dst=ipaddress.ip_address("2001:db8::2").packed)

Result = tuple[bytes, bytes, int, int, int, int, int, bytes] | None


def expected(s: Segment) -> Result:
    return s.src, s.dst, s.sport, s.dport, s.seq, s.ack, s.flags, s.payload


def decode(linktype: int, frame: bytes) -> tuple[Result, dict[str, int]]:
    """One frame through a fresh decoder: (result with addresses as bytes, skip counts)."""
    dec = FrameDecoder()
    result = g.decoder_result(dec.decode(linktype, frame))
    return result, dict(dec.skipped)


def raw_link(linktype: int) -> tuple[int, Callable[[bytes], bytes]]:
    return linktype, lambda ip: ip


# Every way a link layer can carry the packet: name -> (linktype, wrap).
LINKS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    **{name: (link.linktype, link.wrap) for name, link in g.LINKS.items()},
    "qinq-9100": (g.LINKTYPE_ETHERNET, lambda ip: g.ethernet(ip, tags=[(0x9100, 300), (g.ETH_8021Q, 100)])),
    "vlan-max": (g.LINKTYPE_ETHERNET, lambda ip: g.ethernet(ip, tags=[(g.ETH_8021Q, 1)] * MAX_VLAN_TAGS)),
    "raw-bsd12": raw_link(LINKTYPE_RAW_BSD12),
    "raw-bsd14": raw_link(LINKTYPE_RAW_BSD14),
}


@pytest.mark.parametrize("seg", [SEG4, SEG6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("link", sorted(LINKS))
def test_each_link_type(link: str, seg: Segment) -> None:
    linktype, wrap = LINKS[link]
    assert decode(linktype, wrap(g.ip_packet(seg))) == (expected(seg), {})


@pytest.mark.parametrize(("linktype", "seg"), [(g.LINKTYPE_IPV4, SEG4), (g.LINKTYPE_IPV6, SEG6)])
def test_ipv4_and_ipv6_link_types(linktype: int, seg: Segment) -> None:
    assert decode(linktype, g.ip_packet(seg)) == (expected(seg), {})


@pytest.mark.parametrize("family", [10, 24, 28, 30])
def test_null_ipv6_families_of_every_os(family: int) -> None:
    for order in "<>":
        frame = struct.pack(order + "I", family) + g.ip_packet(SEG6)
        assert decode(g.LINKTYPE_NULL, frame) == (expected(SEG6), {})


def test_too_many_vlan_tags_is_not_ip() -> None:
    frame = g.ethernet(g.ip_packet(SEG4), tags=[(g.ETH_8021Q, 1)] * (MAX_VLAN_TAGS + 1))
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"not_ip": 1})


def test_unsupported_link_type() -> None:
    assert decode(147, g.ip_packet(SEG4)) == (None, {"unsupported_linktype": 1})


def test_non_ip_ethertype() -> None:
    arp = g.MAC_B + g.MAC_A + struct.pack("!H", 0x0806) + b"\0" * 28
    assert decode(g.LINKTYPE_ETHERNET, arp) == (None, {"not_ip": 1})


# IPv4 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [b"\x01", b"\x07\x07\x04" + b"\0" * 4, b"\x01" * 40],
                         ids=["nop", "record-route", "max-40-bytes"])
@pytest.mark.parametrize("link", ["ethernet", "vlan", "raw"])
def test_ipv4_options(link: str, options: bytes) -> None:
    frame = g.LINKS[link].wrap(g.ip_packet(SEG4, ipv4_options=options))
    assert decode(g.LINKS[link].linktype, frame) == (expected(SEG4), {})


def test_tcp_options_are_skipped() -> None:
    opts = b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + b"\0" * 8 + b"\x01\x03\x03\x07"  # MSS, SACK-ok, TS, WS
    frame = g.ethernet(g.ipv4_header(SEG4.src, SEG4.dst, 40 + len(SEG4.payload))
                       + g.tcp_header(SEG4, SEG4.src, SEG4.dst, opts) + SEG4.payload)
    assert decode(g.LINKTYPE_ETHERNET, frame) == (expected(SEG4), {})


@pytest.mark.parametrize("frag", [0x2000, 0x0010, 0x2010, 0x4010], ids=["first-mf", "last", "middle", "df-offset"])
@pytest.mark.parametrize("link", ["ethernet", "vlan"])
def test_ipv4_fragments_are_skipped(link: str, frag: int) -> None:
    tcp = g.tcp_header(SEG4, SEG4.src, SEG4.dst) + SEG4.payload
    frame = g.LINKS[link].wrap(g.ipv4_header(SEG4.src, SEG4.dst, len(tcp), frag=frag) + tcp)
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"ip_fragment": 1})


@pytest.mark.parametrize("frag", [0x0000, 0x4000, 0x8000], ids=["none", "df", "reserved-bit"])
def test_ipv4_unfragmented_flags(frag: int) -> None:
    tcp = g.tcp_header(SEG4, SEG4.src, SEG4.dst) + SEG4.payload
    frame = g.ethernet(g.ipv4_header(SEG4.src, SEG4.dst, len(tcp), frag=frag) + tcp)
    assert decode(g.LINKTYPE_ETHERNET, frame) == (expected(SEG4), {})


@pytest.mark.parametrize("proto", [1, 17, 132], ids=["icmp", "udp", "sctp"])
def test_ipv4_not_tcp(proto: int) -> None:
    body = b"\0" * 28
    for link in ("ethernet", "raw"):
        frame = g.LINKS[link].wrap(g.ipv4_header(SEG4.src, SEG4.dst, len(body), proto=proto) + body)
        assert decode(g.LINKS[link].linktype, frame) == (None, {"not_tcp": 1})


def test_ipv4_bad_header_length() -> None:
    ip = bytearray(g.ip_packet(SEG4))
    ip[0] = 0x44  # IHL 4: shorter than the fixed header
    assert decode(g.LINKTYPE_RAW, g.ethernet(bytes(ip))[14:]) == (None, {"bad_ipv4_header": 1})
    assert decode(g.LINKTYPE_ETHERNET, g.ethernet(bytes(ip))) == (None, {"bad_ipv4_header": 1})


def test_ip_version_must_match_ethertype() -> None:
    frame = g.MAC_B + g.MAC_A + struct.pack("!H", g.ETH_IPV4) + g.ip_packet(SEG6)
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"bad_ip_version": 1})
    frame = g.MAC_B + g.MAC_A + struct.pack("!H", g.ETH_IPV6) + g.ip_packet(SEG4)
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"bad_ip_version": 1})


def test_bad_tcp_data_offset() -> None:
    ip = bytearray(g.ip_packet(SEG4))
    ip[20 + 12] = 0x40  # data offset 4 words: less than the fixed header
    assert decode(g.LINKTYPE_ETHERNET, g.ethernet(bytes(ip))) == (None, {"bad_tcp_header": 1})
    ip = bytearray(g.ip_packet(SEG4._replace(payload=b"x")))
    ip[20 + 12] = 0xF0  # a 60-byte header in a packet holding 21 bytes of TCP
    assert decode(g.LINKTYPE_ETHERNET, g.ethernet(bytes(ip))) == (None, {"bad_tcp_header": 1})


# Lengths: padding, snapping, TSO ---------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x", b"\r\n"], ids=["empty", "1-byte", "2-bytes"])
@pytest.mark.parametrize("link", ["ethernet", "vlan", "qinq"])
def test_ethernet_padding_is_trimmed_by_ip_length(link: str, payload: bytes) -> None:
    """A 60-byte minimum Ethernet frame pads short packets with bytes that are not payload."""
    seg = SEG4._replace(payload=payload)
    ip = g.ip_packet(seg)
    frame = g.LINKS[link].wrap(ip)
    assert len(frame) == 60 or link == "qinq"
    padded = frame + b"\xaa" * 8  # some NICs pad further, with non-zero bytes
    assert decode(g.LINKTYPE_ETHERNET, padded) == (expected(seg), {})


@pytest.mark.parametrize("link", ["ethernet", "sll"])
def test_ipv6_padding_is_trimmed_by_payload_length(link: str) -> None:
    seg = SEG6._replace(payload=b"")
    frame = g.LINKS[link].wrap(g.ip_packet(seg)) + b"\xaa" * 6
    assert decode(g.LINKS[link].linktype, frame) == (expected(seg), {})


@pytest.mark.parametrize("link", ["ethernet", "vlan", "raw"])
def test_snapped_frame_gives_the_captured_payload(link: str) -> None:
    """A frame cut by tcpdump -s keeps its IP total length; the payload is what was captured."""
    frame = g.LINKS[link].wrap(g.ip_packet(SEG4))
    cut = len(frame) - 10
    assert decode(g.LINKS[link].linktype, frame[:cut]) == (expected(SEG4._replace(payload=SEG4.payload[:-10])), {})


@pytest.mark.parametrize("link", ["ethernet", "vlan", "raw"])
def test_ipv4_total_length_zero_from_tso_takes_the_frame(link: str) -> None:
    """TSO on the capturing host writes total length 0 (frames.py says: use what is there)."""
    ip = bytearray(g.ip_packet(SEG4))
    ip[2:4] = b"\0\0"
    assert decode(g.LINKS[link].linktype, g.LINKS[link].wrap(bytes(ip))) == (expected(SEG4), {})


def test_ipv6_payload_length_zero_takes_the_frame() -> None:
    ip = bytearray(g.ip_packet(SEG6))
    ip[4:6] = b"\0\0"
    assert decode(g.LINKTYPE_RAW, bytes(ip)) == (expected(SEG6), {})


# IPv6 extension headers ------------------------------------------------------------------------


@pytest.mark.parametrize("chain", [
    [g.IPV6_HOP_BY_HOP],
    [g.IPV6_DEST_OPTS],
    [g.IPV6_ROUTING],
    [g.IPV6_AH],
    [g.IPV6_HOP_BY_HOP, g.IPV6_ROUTING, g.IPV6_AH, g.IPV6_DEST_OPTS],
], ids=["hop-by-hop", "dest-opts", "routing", "ah", "hbh-rt-ah-dst"])
@pytest.mark.parametrize("link", ["ethernet", "vlan", "sll2", "raw", "null"])
def test_ipv6_extension_header_chain(link: str, chain: list[int]) -> None:
    frame = g.LINKS[link].wrap(g.ip_packet(SEG6, ipv6_ext=chain))
    assert decode(g.LINKS[link].linktype, frame) == (expected(SEG6), {})


def test_ipv6_long_options_header() -> None:
    tcp = g.tcp_header(SEG6, SEG6.src, SEG6.dst) + SEG6.payload
    hbh = g.ipv6_ext_header(g.IPV6_HOP_BY_HOP, g.PROTO_TCP, body_len=30)  # 32 bytes, length field 3
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(hbh) + len(tcp), 0, 64, SEG6.src, SEG6.dst) + hbh + tcp
    assert decode(g.LINKTYPE_RAW, ip) == (expected(SEG6), {})


@pytest.mark.parametrize("chain", [[g.IPV6_FRAGMENT], [g.IPV6_HOP_BY_HOP, g.IPV6_FRAGMENT]],
                         ids=["fragment", "hbh-fragment"])
def test_ipv6_fragment_header_is_skipped(chain: list[int]) -> None:
    frame = g.ethernet(g.ip_packet(SEG6, ipv6_ext=chain))
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"ip_fragment": 1})


def test_ipv6_chain_of_the_maximum_length_is_walked() -> None:
    """MAX_IPV6_EXT_HEADERS extension headers is the longest chain decoded..."""
    frame = g.ethernet(g.ip_packet(SEG6, ipv6_ext=[g.IPV6_DEST_OPTS] * MAX_IPV6_EXT_HEADERS))
    assert decode(g.LINKTYPE_ETHERNET, frame) == (expected(SEG6), {})


def test_ipv6_chain_too_long() -> None:
    """...one more is refused and counted."""
    frame = g.ethernet(g.ip_packet(SEG6, ipv6_ext=[g.IPV6_DEST_OPTS] * (MAX_IPV6_EXT_HEADERS + 1)))
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"ipv6_header_chain_too_long": 1})


@pytest.mark.parametrize(("proto", "chain"), [(17, []), (58, []), (59, []), (17, [g.IPV6_HOP_BY_HOP])],
                         ids=["udp", "icmpv6", "no-next-header", "hbh-udp"])
def test_ipv6_not_tcp(proto: int, chain: list[int]) -> None:
    frame = g.ethernet(g.ipv6_header(SEG6.src, SEG6.dst, b"\0" * 16, proto=proto, ext=chain))
    assert decode(g.LINKTYPE_ETHERNET, frame) == (None, {"not_tcp": 1})


# Truncation ------------------------------------------------------------------------------------

TRUNCATION_CASES: dict[str, tuple[int, bytes, int, Segment]] = {
    # name: (linktype, frame, length of everything before the TCP payload, segment it carries)
    "ethernet-ipv4": (g.LINKTYPE_ETHERNET, g.ethernet(g.ip_packet(SEG4)), 14 + 20 + 20, SEG4),
    "qinq-ipv4-options": (g.LINKTYPE_ETHERNET, g.ethernet(g.ip_packet(SEG4, ipv4_options=b"\x01" * 8),
                                                          tags=[(g.ETH_8021AD, 2), (g.ETH_8021Q, 1)]),
                          14 + 8 + 28 + 20, SEG4),
    "ethernet-ipv6-ext": (g.LINKTYPE_ETHERNET, g.ethernet(g.ip_packet(SEG6, ipv6_ext=[0, 60])), 14 + 40 + 16 + 20,
                          SEG6),
    "sll-ipv4": (g.LINKTYPE_LINUX_SLL, g.sll(g.ip_packet(SEG4)), 16 + 40, SEG4),
    "sll2-ipv6": (g.LINKTYPE_LINUX_SLL2, g.sll2(g.ip_packet(SEG6)), 20 + 60, SEG6),
    "null-ipv4": (g.LINKTYPE_NULL, g.null(g.ip_packet(SEG4)), 4 + 40, SEG4),
    "loop-ipv6": (g.LINKTYPE_LOOP, g.loop(g.ip_packet(SEG6)), 4 + 60, SEG6),
    "raw-ipv4": (g.LINKTYPE_RAW, g.ip_packet(SEG4), 40, SEG4),
    "raw-ipv6-ah": (g.LINKTYPE_RAW, g.ip_packet(SEG6, ipv6_ext=[g.IPV6_AH]), 40 + 24 + 20, SEG6),
}


def _truncations(case: str) -> list[tuple[int, Result, dict[str, int]]]:
    """Every prefix of the case's frame through one decoder: (length, result, what was counted)."""
    linktype, frame, _headers, _seg = TRUNCATION_CASES[case]
    dec = FrameDecoder()
    out = []
    for n in range(len(frame)):
        before = dict(dec.skipped)
        got = g.decoder_result(dec.decode(linktype, frame[:n]))
        out.append((n, got, {k: v - before.get(k, 0) for k, v in dec.skipped.items() if v != before.get(k, 0)}))
    return out


@pytest.mark.parametrize("case", sorted(TRUNCATION_CASES))
def test_truncated_at_every_length(case: str) -> None:
    """Cut inside the headers: None and exactly one count; cut in the payload: the bytes that are there."""
    _linktype, _frame, headers, seg = TRUNCATION_CASES[case]
    wrong = []
    for n, got, counted in _truncations(case):
        if n < headers:
            ok = got is None and sum(counted.values()) == 1
        else:
            ok = (got, counted) == (expected(seg._replace(payload=seg.payload[:n - headers])), {})
        if not ok:
            wrong.append((n, got, counted))
    assert wrong == []


@pytest.mark.parametrize("case", sorted(TRUNCATION_CASES))
def test_truncated_headers_are_counted_as_truncated(case: str) -> None:
    """The count names the cause: a frame cut short is `truncated_frame`, whichever header it cut."""
    headers = TRUNCATION_CASES[case][2]
    names = {n: counted for n, _got, counted in _truncations(case) if n < headers}
    assert {n: c for n, c in names.items() if c != {"truncated_frame": 1}} == {}
