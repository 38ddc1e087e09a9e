"""The partition of a frame: by connection, the same both ways, stable across processes."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

from helpers.pcapgen import Segment, ethernet, ip_packet, ipv4_header, sll, to_ipv6

from watcher.publish.partition import connection_ends, connection_hash, partition_of

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _seg(src: bytes, dst: bytes, sport: int, dport: int) -> Segment:
    return Segment(0, src, dst, sport, dport, 1, 1, 0x18, b"GET / HTTP/1.1\r\n\r\n")


def test_both_directions_of_a_connection_agree() -> None:
    there, back = _seg(A, B, 40000, 80), _seg(B, A, 80, 40000)
    for seg_there, seg_back in [(there, back), *zip(to_ipv6([there]), to_ipv6([back]), strict=True)]:
        f1, f2 = ethernet(ip_packet(seg_there)), ethernet(ip_packet(seg_back))
        assert connection_hash(1, f1) == connection_hash(1, f2) != 0
        assert {partition_of(1, f1, n) == partition_of(1, f2, n) for n in (1, 2, 3, 4, 12, 64)} == {True}
    # the hash is of the two ends, in a fixed order: CRC-32 is the same on every host
    assert connection_hash(1, ethernet(ip_packet(there))) == zlib.crc32(A + struct.pack("!H", 40000) +
                                                                       B + struct.pack("!H", 80))


def test_other_connections_spread() -> None:
    parts = {partition_of(1, ethernet(ip_packet(_seg(A, B, port, 80))), 4) for port in range(40000, 40064)}
    assert parts == {0, 1, 2, 3}


def test_vlan_and_cooked_links_see_the_same_connection() -> None:
    ip = ip_packet(_seg(A, B, 40000, 80))
    assert connection_hash(1, ethernet(ip, tags=[(0x8100, 7), (0x8100, 9)])) == connection_hash(1, ethernet(ip))
    assert connection_hash(113, sll(ip)) == connection_hash(1, ethernet(ip)) == connection_hash(101, ip)


def test_not_tcp_or_udp_by_addresses_and_not_ip_to_zero() -> None:
    icmp = ipv4_header(A, B, 8, proto=1) + b"\x08\x00" + b"\0" * 6
    assert connection_ends(101, icmp) == (A, B)
    assert connection_hash(101, icmp) == connection_hash(101, ipv4_header(B, A, 8, proto=1) + b"\0" * 8)
    arp = b"\xff" * 12 + b"\x08\x06" + b"\0" * 28
    assert connection_ends(1, arp) is None and partition_of(1, arp, 8) == 0
    assert partition_of(1, b"\0" * 5, 8) == 0 and partition_of(147, b"x" * 60, 8) == 0


def test_same_partition_in_another_process() -> None:
    frame = ethernet(ip_packet(_seg(A, B, 40000, 80)))
    code = f"from watcher.publish.partition import connection_hash as h; print(h(1, {frame!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == connection_hash(1, frame)
