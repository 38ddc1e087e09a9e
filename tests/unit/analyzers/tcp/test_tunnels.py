"""Encapsulations through `FrameDecoder`: each one decoded, tenants kept apart, what is not
decoded counted by kind, nesting bounded, and every truncation counted once, never raised.

Frames are built by tests/helpers/encap.py from `pcapgen` packets.
"""

from __future__ import annotations

import ipaddress
import pickle
import struct

import pytest
from helpers import encap
from helpers import pcapgen as g
from helpers.pcapgen import Segment

from analyzers.tcp import tunnels
from analyzers.tcp.frames import (
    ACK,
    LINKTYPE_PPP,
    MAX_ENCAP_DEPTH,
    FrameDecoder,
)
from analyzers.tcp.tunnels import MAX_MPLS_LABELS, TenantV4, TenantV6

SEG = Segment(0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80, 1000, 2000, ACK | g.PSH,
              b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
SEG6 = SEG._replace(src=ipaddress.ip_address("2001:db8::1").packed, dst=ipaddress.ip_address("2001:db8::2").packed)
FRAME = g.ethernet(g.ip_packet(SEG), pad=False)
FRAME6 = g.ethernet(g.ip_packet(SEG6), pad=False)


def run(linktype: int, frame: bytes) -> tuple[object, dict[str, int], dict[str, int]]:
    dec = FrameDecoder()
    d = dec.decode(linktype, frame)
    return d, dict(dec.skipped), dict(dec.undecoded)


def plain(d: object) -> tuple[object, ...]:
    """A decoded tuple with plain addresses (int / bytes), and the tenant of its source."""
    assert isinstance(d, tuple)
    src, dst = d[0], d[1]
    tenant = getattr(src, "tenant", None)
    conv = int if isinstance(src, int) else bytes
    return (conv(src), conv(dst), *d[2:], tenant)


WANT = (int.from_bytes(SEG.src, "big"), int.from_bytes(SEG.dst, "big"), SEG.sport, SEG.dport, SEG.seq, SEG.ack,
        SEG.flags, SEG.payload)
TENANTS = {"vxlan": "vxlan:5001", "geneve": "geneve:77", "nvgre": "nvgre:1193046", "gre-ipv6-outer": "gre:9",
           "erspan2-mpls-gre-vxlan": "vxlan:42"}


@pytest.mark.parametrize("name", sorted(encap.ENCAPSULATIONS))
def test_each_encapsulation(name: str) -> None:
    how = encap.ENCAPSULATIONS[name]
    d, skipped, undecoded = run(how.linktype, how.wrap(FRAME))
    assert (plain(d), skipped, undecoded) == ((*WANT, TENANTS.get(name)), {}, {})


@pytest.mark.parametrize("name", sorted(encap.ENCAPSULATIONS_V6))
def test_each_ipv6_encapsulation(name: str) -> None:
    how = encap.ENCAPSULATIONS_V6[name]
    d, skipped, _ = run(how.linktype, how.wrap(FRAME6))
    assert (plain(d), skipped) == ((SEG6.src, SEG6.dst, *WANT[2:], None), {})


def test_ppp_link_types() -> None:
    ip = g.ip_packet(SEG)
    for frame in (b"\xff\x03\x00\x21" + ip, b"\x00\x21" + ip):
        d, skipped, _ = run(LINKTYPE_PPP, frame)
        assert (plain(d), skipped) == ((*WANT, None), {})
    assert run(LINKTYPE_PPP, b"\xff\x03\xc0\x21" + b"\x01" * 20)[1] == {"not_ip": 1}  # LCP


def test_vlan_inside_vxlan_and_pppoe_on_a_vlan() -> None:
    inner = g.ethernet(g.ip_packet(SEG), tags=[(g.ETH_8021Q, 7)], pad=False)
    d, skipped, _ = run(1, encap.vxlan(inner, 3))
    assert (plain(d), skipped) == ((*WANT, "vxlan:3"), {})
    pppoe = encap.pppoe(g.ip_packet(SEG))
    tagged = pppoe[:12] + struct.pack("!HH", g.ETH_8021Q, 7) + pppoe[12:]
    d, skipped, _ = run(1, tagged)
    assert (plain(d), skipped) == ((*WANT, None), {})


def test_tenants_nest_outermost_first() -> None:
    frame = encap.vxlan(encap.geneve(FRAME, 9), 8)
    d, skipped, _ = run(1, frame)
    assert (plain(d)[-1], skipped) == ("vxlan:8/geneve:9", {})


def test_two_tenants_addresses_differ_and_print_plain() -> None:
    a, b = TenantV4(0x0A000001, "vxlan:1"), TenantV4(0x0A000001, "vxlan:2")
    untunneled = 0x0A000001
    assert a != b and a != untunneled and untunneled != a and a == TenantV4(0x0A000001, "vxlan:1")
    assert len({(a, 80), (b, 80), (untunneled, 80)}) == 3
    assert str(ipaddress.ip_address(a)) == "10.0.0.1" and repr(a) == "167772161@vxlan:1"
    v6 = TenantV6(SEG6.src, "geneve:4")
    assert v6 != SEG6.src and v6 == TenantV6(SEG6.src, "geneve:4") and hash(v6) == hash(TenantV6(SEG6.src, "geneve:4"))
    assert str(ipaddress.ip_address(v6)) == "2001:db8::1"
    for x in (a, v6):
        y = pickle.loads(pickle.dumps(x))
        assert (y, y.tenant) == (x, x.tenant)


UNDECODED = {
    "gre_version": encap.eth(0x0800, encap.outer_ipv4(47, struct.pack("!HH", 0x3001, 0x880B) + b"\0" * 8)),
    "gre_routing": encap.eth(0x0800, encap.outer_ipv4(47, struct.pack("!HH", 0x4000, 0x0800) + b"\0" * 8)),
    "gre_protocol": encap.eth(0x0800, encap.outer_ipv4(47, encap.gre(0x883E, b"\0" * 20))),
    "erspan_version": encap.eth(0x0800, encap.outer_ipv4(47, encap.gre(0x88BE, b"\x30" + b"\0" * 30, seq=1))),
    "erspan_frame_type": encap.eth(0x0800, encap.outer_ipv4(47, encap.gre(
        0x22EB, struct.pack("!HHIHH", 2 << 12, 1, 0, 0, 5 << 10) + FRAME, seq=1))),
    "vxlan_flags": encap.eth(0x0800, encap.outer_ipv4(17, encap.udp(4789, b"\0" * 8 + FRAME))),
    "geneve_version": encap.eth(0x0800, encap.outer_ipv4(17, encap.udp(6081, b"\x40" + b"\0" * 7 + FRAME))),
    "geneve_protocol": encap.eth(0x0800, encap.outer_ipv4(17, encap.udp(
        6081, struct.pack("!BBHI", 0, 0, 0x894F, 1 << 8) + FRAME))),
    "mpls_payload": encap.eth(0x8847, struct.pack("!I", 16 << 12 | 1 << 8) + b"\0" * 40),
    "mpls_too_deep": encap.eth(0x8847, struct.pack("!I", 16 << 12) * MAX_MPLS_LABELS + g.ip_packet(SEG)),
    "ppp_protocol": encap.eth(0x8864, struct.pack("!BBHHH", 0x11, 0, 1, 10, 0xC021) + b"\0" * 8),
}


@pytest.mark.parametrize("kind", sorted(UNDECODED))
def test_what_is_not_decoded_is_counted_by_kind(kind: str) -> None:
    assert run(1, UNDECODED[kind]) == (None, {"undecoded": 1}, {kind: 1})


def test_mpls_stack_of_the_maximum_depth_is_walked() -> None:
    stack = struct.pack("!I", 16 << 12) * (MAX_MPLS_LABELS - 1) + struct.pack("!I", 17 << 12 | 1 << 8)
    d, skipped, _ = run(1, encap.eth(0x8847, stack + g.ip_packet(SEG)))
    assert (plain(d), skipped) == ((*WANT, None), {})


def _nest(depth: int) -> bytes:
    frame = FRAME
    for _ in range(depth):
        frame = encap.eth(0x0800, encap.outer_ipv4(4, encap.ip_of(frame)))
    return frame


def test_nesting_depth_is_bounded() -> None:
    d, skipped, _ = run(1, _nest(MAX_ENCAP_DEPTH))
    assert (plain(d), skipped) == ((*WANT, None), {})
    assert run(1, _nest(MAX_ENCAP_DEPTH + 1)) == (None, {"undecoded": 1}, {"too_deep": 1})
    assert run(1, _nest(500)) == (None, {"undecoded": 1}, {"too_deep": 1})  # no recursion error


def test_other_udp_is_not_tcp() -> None:
    assert run(1, encap.eth(0x0800, encap.outer_ipv4(17, encap.udp(53, b"\0" * 12)))) == (None, {"not_tcp": 1}, {})


@pytest.mark.parametrize("name", sorted(encap.ENCAPSULATIONS))
def test_truncated_at_every_length(name: str) -> None:
    """Every prefix of an encapsulated frame: one count, or the packet with the payload captured."""
    how = encap.ENCAPSULATIONS[name]
    frame = how.wrap(FRAME)
    headers = len(frame) - len(SEG.payload)
    dec = FrameDecoder()
    wrong = []
    for n in range(len(frame)):
        before = sum(dec.skipped.values())
        d = dec.decode(how.linktype, frame[:n])
        counted = sum(dec.skipped.values()) - before
        ok = (d is None and counted == 1) if n < headers else (
            d is not None and counted == 0 and d[7] == SEG.payload[:n - headers])
        if not ok:
            wrong.append((n, d, counted))
    assert wrong == []


def test_tunnel_functions_read_their_header() -> None:
    assert tunnels.vxlan(b"\x08\0\0\0\0\0\x07\0", 0) == (tunnels.ETH_TEB, 8, "vxlan:7")
    geneve = struct.pack("!BBHI", 2, 0, 0x0800, 9 << 8) + b"\0" * 8
    assert tunnels.geneve(geneve, 0) == (0x0800, 16, "geneve:9")
    gre = struct.pack("!HHII", 0xB000, 0x0800, 0x11111111, 5)  # checksum, key, sequence
    assert tunnels.gre(gre + b"\0" * 4, 0) == (0x0800, 16, "gre:5")
    assert tunnels.within(None, None) is None and tunnels.within("a", None) == "a"
    assert tunnels.within(None, "b") == "b" and tunnels.within("a", "b") == "a/b"
