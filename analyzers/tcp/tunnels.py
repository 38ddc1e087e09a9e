"""Encapsulations between the capture's link layer and the IP packet a conversation is made of.

Each function reads one encapsulation header at `off` in the frame and returns where its payload
starts and what it is, as ``(ethertype, offset, tenant)``, or a `str`: the name of what it does not
decode (counted by `FrameDecoder` as ``undecoded{kind=...}``). The payload type is an EtherType,
the one word every one of these headers uses for it (PPP protocols and ERSPAN frame types are
mapped to it): `FrameDecoder` goes on from there, so any nesting of them decodes.

## What a tenant is

Two virtual networks may use the same addresses: two VXLAN segments can each hold a 10.0.0.1
talking to 10.0.0.2:80 on the same ports. A *tenant* is the identifier that says which virtual
network a packet's addresses belong to, and that is the same in both directions of one
conversation: the VXLAN VNI, the Geneve VNI, the GRE key (for NVGRE, Ethernet over GRE, the
virtual subnet id in its top 24 bits; its low 8 bits are per-flow entropy). Nested tunnels give a
path of them, outermost first (``gre:7/vxlan:5001``). Inner addresses carry it (`TenantV4`,
`TenantV6`), so the connection table keeps two tenants' identical 5-tuples apart without knowing
about tunnels, and a connection's uid differs between tenants.

These are not tenants, and why:
- VLAN ids: a routed conversation crosses VLANs, and a SPAN port often sees the request on the
  client's VLAN and the response on the server's; keying by them would cut such a connection in two.
- MPLS labels: they are rewritten at every hop and differ between the two directions.
- ERSPAN session ids: a session names a mirror, not an address space; two switches mirroring the
  same network would make each transaction appear twice.
- The outer addresses of IP-in-IP, 6in4 and GRE without a key: the inner addresses are routable
  and unique on their own; the outer ones differ between directions when the tunnel is asymmetric.
"""

from __future__ import annotations

import struct

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows
ETH_MPLS = 0x8847
ETH_MPLS_MULTICAST = 0x8848
ETH_PPPOE_SESSION = 0x8864
ETH_ERSPAN_1_2 = 0x88BE
ETH_ERSPAN_3 = 0x22EB

PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_MPLS = 0x0281
# PPP protocol numbers -> the EtherType of the same payload.
PPP_PROTOCOLS = {PPP_IPV4: ETH_IPV4, PPP_IPV6: ETH_IPV6, PPP_MPLS: ETH_MPLS}

# Well-known UDP ports (destination) of the UDP tunnels. 8472 is the Linux kernel's VXLAN port
# from before IANA assigned 4789, still what `ip link add type vxlan` uses without `dstport`.
VXLAN_PORTS = frozenset({4789, 8472})
GENEVE_PORT = 6081

# An MPLS stack is two or three labels in L3VPNs; segment routing pushes up to about ten. Longer is
# malformed or hostile: bound the walk.
MAX_MPLS_LABELS = 16

GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_VERSION = 0x0007

Step = tuple[int, int, str | None] | str  # (ethertype, offset, tenant) or the name of what is not decoded

_u16 = struct.Struct("!H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_gre = struct.Struct("!HH").unpack_from  # flags and version, protocol


class TenantV4(int):
    """An IPv4 address (as `frames` keeps it: an int) inside one tenant: equal only to the same
    address of the same tenant, printed as the plain address by `ipaddress`."""

    tenant: str

    def __new__(cls, value: int, tenant: str) -> TenantV4:
        self = super().__new__(cls, value)
        self.tenant = tenant
        return self

    def __eq__(self, other: object) -> bool:
        return type(other) is TenantV4 and int(self) == int(other) and self.tenant == other.tenant

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((int(self), self.tenant))

    def __repr__(self) -> str:
        return f"{int(self)}@{self.tenant}"

    def __reduce__(self) -> tuple[type[TenantV4], tuple[int, str]]:
        return TenantV4, (int(self), self.tenant)


class TenantV6(bytes):
    """An IPv6 address (its 16 bytes) inside one tenant; see `TenantV4`."""

    tenant: str

    def __new__(cls, value: bytes, tenant: str) -> TenantV6:
        self = super().__new__(cls, value)
        self.tenant = tenant
        return self

    def __eq__(self, other: object) -> bool:
        return type(other) is TenantV6 and bytes(self) == bytes(other) and self.tenant == other.tenant

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((bytes(self), self.tenant))

    def __repr__(self) -> str:
        return f"{bytes(self)!r}@{self.tenant}"

    def __reduce__(self) -> tuple[type[TenantV6], tuple[bytes, str]]:
        return TenantV6, (bytes(self), self.tenant)


def within(outer: str | None, inner: str | None) -> str | None:
    """The tenant path of a tunnel `inner` carried inside tenant `outer`."""
    if inner is None:
        return outer
    return inner if outer is None else f"{outer}/{inner}"


def pppoe_session(data: bytes, off: int) -> Step:
    """PPPoE session stage (RFC 2516): version/type, code, session id, length, then PPP."""
    proto = _u16(data, off + 6)[0]
    ethertype = PPP_PROTOCOLS.get(proto)
    if ethertype is None:
        return "ppp_protocol"  # LCP, IPCP and the other control protocols: no IP payload
    return ethertype, off + 8, None


def ppp(data: bytes, off: int) -> Step:
    """A PPP frame (link types PPP and PPP-in-HDLC): optional address/control 0xFF 0x03, protocol."""
    if data[off] == 0xFF and data[off + 1] == 0x03:
        off += 2
    proto = _u16(data, off)[0]
    ethertype = PPP_PROTOCOLS.get(proto)
    if ethertype is None:
        return "ppp_protocol"
    return ethertype, off + 2, None


def mpls(data: bytes, off: int) -> Step:
    """A label stack (RFC 3032), then IPv4 or IPv6 told by the first nibble (RFC 4182: nothing
    else in the packet says which)."""
    for _ in range(MAX_MPLS_LABELS):
        entry = _u32(data, off)[0]
        off += 4
        if entry & 0x100:  # bottom of stack
            version = data[off] >> 4
            if version == 4:
                return ETH_IPV4, off, None
            if version == 6:
                return ETH_IPV6, off, None
            return "mpls_payload"  # a pseudowire (control word, then Ethernet) or another protocol
    return "mpls_too_deep"


def gre(data: bytes, off: int) -> Step:
    """GRE (RFC 2784, key and sequence of RFC 2890), version 0, with what switches mirror in it:
    ERSPAN type I (no header), II and III."""
    flags, proto = _gre(data, off)
    if flags & GRE_VERSION:
        return "gre_version"  # 1 is PPTP's enhanced GRE, carrying compressed or encrypted PPP
    if flags & GRE_ROUTING:
        return "gre_routing"  # RFC 1701 source routing, obsolete
    pos = off + 4
    if flags & GRE_CHECKSUM:
        pos += 4
    tenant = None
    if flags & GRE_KEY:
        key = _u32(data, pos)[0]
        tenant = f"nvgre:{key >> 8}" if proto == ETH_TEB else f"gre:{key}"
        pos += 4
    if flags & GRE_SEQUENCE:
        pos += 4
    if proto in (ETH_IPV4, ETH_IPV6, ETH_TEB, ETH_MPLS, ETH_MPLS_MULTICAST):
        return proto, pos, tenant
    if proto == ETH_ERSPAN_1_2:
        if not flags & GRE_SEQUENCE:  # type I: the mirrored frame follows GRE directly
            return ETH_TEB, pos, None
        if data[pos] >> 4 != 1:
            return "erspan_version"
        return ETH_TEB, pos + 8, None
    if proto == ETH_ERSPAN_3:
        return erspan3(data, pos)
    return "gre_protocol"


def erspan3(data: bytes, off: int) -> Step:
    """ERSPAN type III: a 12-byte header (version 2) and, with its O bit, an 8-byte platform
    subheader; the frame type says Ethernet (0) or an IP packet (2)."""
    if data[off] >> 4 != 2:
        return "erspan_version"
    word = _u16(data, off + 10)[0]
    frame_type = (word >> 10) & 0x1F
    pos = off + 12 + (8 if word & 1 else 0)
    if frame_type == 0:
        return ETH_TEB, pos, None
    if frame_type == 2:
        version = data[pos] >> 4
        if version in (4, 6):
            return (ETH_IPV4 if version == 4 else ETH_IPV6), pos, None
    return "erspan_frame_type"


def vxlan(data: bytes, off: int) -> Step:
    """VXLAN (RFC 7348): flags with the VNI-valid bit, the 24-bit VNI, then an Ethernet frame."""
    if not data[off] & 0x08:
        return "vxlan_flags"
    vni = _u32(data, off + 4)[0] >> 8
    return ETH_TEB, off + 8, f"vxlan:{vni}"


def geneve(data: bytes, off: int) -> Step:
    """Geneve (RFC 8926): version 0, options skipped by their length, the protocol of the payload
    as an EtherType, the 24-bit VNI."""
    first = data[off]
    if first >> 6:
        return "geneve_version"
    proto = _u16(data, off + 2)[0]
    vni = _u32(data, off + 4)[0] >> 8
    pos = off + 8 + (first & 0x3F) * 4
    if proto in (ETH_TEB, ETH_IPV4, ETH_IPV6):
        return proto, pos, f"geneve:{vni}"
    return "geneve_protocol"
