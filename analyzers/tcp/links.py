"""Link-layer headers: each function takes a frame and returns ``(EtherType, offset of what
follows)``, for `FrameDecoder` to go on from (VLAN tags and encapsulations included). A link layer
that names its payload otherwise (an address family, a PPP protocol, an IP version nibble) maps it
to the EtherType of the same payload; 0 when there is none (counted as `not_ip`)."""

from __future__ import annotations

import struct

from analyzers.tcp import tunnels

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
# BSD null/loopback address families meaning IPv6 (they differ by OS).
NULL_AF_INET6 = frozenset({10, 24, 28, 30})

_u16 = struct.Struct("!H").unpack_from
_u32le = struct.Struct("<I").unpack_from
_u32be = struct.Struct("!I").unpack_from


def ethernet(data: bytes) -> tuple[int, int]:
    return _u16(data, 12)[0], 14


def sll(data: bytes) -> tuple[int, int]:
    return _u16(data, 14)[0], 16


def sll2(data: bytes) -> tuple[int, int]:
    return _u16(data, 0)[0], 20


def null(data: bytes) -> tuple[int, int]:
    family = _u32le(data, 0)[0]
    if family > 0xFFFF:  # written by a big-endian host
        family = _u32be(data, 0)[0]
    return _family(family), 4


def loop(data: bytes) -> tuple[int, int]:
    return _family(_u32be(data, 0)[0]), 4


def raw(data: bytes) -> tuple[int, int]:
    version = data[0] >> 4  # IndexError on an empty frame: counted as truncated
    return (ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0), 0


def c_hdlc(data: bytes) -> tuple[int, int]:
    """Cisco HDLC: address (unicast 0x0F, broadcast 0x8F), control 0, EtherType."""
    return _u16(data, 2)[0], 4


def ppp(data: bytes) -> tuple[int, int]:
    step = tunnels.ppp(data, 0)
    return (0, 0) if isinstance(step, str) else step[:2]


def _family(family: int) -> int:
    if family == 2:
        return ETH_IPV4
    if family in NULL_AF_INET6:
        return ETH_IPV6
    return 0
