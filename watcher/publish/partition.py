"""Which partition a frame goes to: by its connection, the same for both directions, so that every
packet of a connection lands in one partition, in capture order, and the consumers of a group can
split the analysis by partition.

The connection is the unordered pair of (address, port) ends, hashed with CRC-32 (the same on every
host and in every process, unlike Python's `hash`); a frame that is neither TCP nor UDP (or an IP
fragment after the first) goes by its addresses alone, and one that is not IP at all to partition 0.
Pure: bytes in, a number out.
"""

from __future__ import annotations

import struct
import zlib

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
PROTO_TCP, PROTO_UDP = 6, 17
_U16 = struct.Struct("!H")
_PORTS = struct.Struct("!HH")
# Where the network layer starts, and where its EtherType is (None: the header says nothing of it).
_LINKS: dict[int, tuple[int, int | None]] = {1: (14, 12), 113: (16, 14), 276: (20, 0), 0: (4, None),
                                             108: (4, None), 101: (0, None), 12: (0, None), 14: (0, None),
                                             228: (0, None), 229: (0, None)}


def connection_ends(linktype: int, frame: bytes) -> tuple[bytes, bytes] | None:
    """The frame's two ends as bytes (address + port, or address alone), unordered; None if not IP."""
    link = _LINKS.get(linktype)
    if link is None:
        return None
    at, type_at = link
    if type_at is not None:
        if len(frame) < at:
            return None
        ethertype = _U16.unpack_from(frame, type_at)[0]
        while linktype == 1 and ethertype in (ETH_VLAN, ETH_QINQ) and len(frame) >= at + 4:
            ethertype = _U16.unpack_from(frame, at + 2)[0]
            at += 4
        if ethertype not in (ETH_IPV4, ETH_IPV6):
            return None
    if len(frame) <= at:
        return None
    version = frame[at] >> 4
    if version == 4 and len(frame) >= at + 20:
        ihl = (frame[at] & 0x0F) * 4
        proto, frag = frame[at + 9], _U16.unpack_from(frame, at + 6)[0] & 0x1FFF
        a, b = frame[at + 12:at + 16], frame[at + 16:at + 20]
        l4 = at + ihl
    elif version == 6 and len(frame) >= at + 40:
        proto, frag = frame[at + 6], 0
        a, b = frame[at + 8:at + 24], frame[at + 24:at + 40]
        l4 = at + 40
    else:
        return None
    if proto in (PROTO_TCP, PROTO_UDP) and frag == 0 and len(frame) >= l4 + 4:
        sport, dport = _PORTS.unpack_from(frame, l4)
        return a + _U16.pack(sport), b + _U16.pack(dport)
    return a, b


def connection_hash(linktype: int, frame: bytes) -> int:
    """CRC-32 of the frame's two ends in a fixed order (0 when the frame is not IP)."""
    ends = connection_ends(linktype, frame)
    if ends is None:
        return 0
    a, b = ends
    return zlib.crc32(a + b if a <= b else b + a)


def partition_of(linktype: int, frame: bytes, partitions: int) -> int:
    """Index (0 .. partitions-1) of the partition for this frame's connection."""
    return connection_hash(linktype, frame) % partitions
