"""Capture generator for tests: real traffic re-expressed in other formats.

A capture is read into TCP `Segment`s with the project's own reader and decoder; segments are
turned back into frames of any link type the decoder supports (over IPv4 or IPv6, with IPv6
extension headers or IPv4 options) and written as pcap (µs/ns, either byte order), pcapng or a
set of rotation files (tests/impair.py impairs segment lists).
`Conn` scripts one connection segment by segment; `split_pcap` cuts a pcap into its records.

Only the stdlib and the project's `watcher.capture.sources` / `analyzers.tcp.frames` are used: the frames are
built here field by field, so a test reads what each byte is.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from analyzers.tcp.frames import ACK, FIN, RST, SYN, Decoded, FrameDecoder
from watcher.capture.sources import Capture

# Link types written here (numbers from the tcpdump/libpcap link-type registry).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_8021Q = 0x8100
ETH_8021AD = 0x88A8
AF_INET = 2
AF_INET6_BSD = 24  # NetBSD/OpenBSD value; the decoder accepts every BSD variant
PSH = 0x08
PROTO_TCP = 6
PROTO_UDP = 17
IPV6_HOP_BY_HOP = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_AH = 51
IPV6_DEST_OPTS = 60

SNAPLEN = 262_144
SEQ_MOD = 1 << 32


class Segment(NamedTuple):
    """One TCP segment. `ts_ns` is capture time in integer nanoseconds, so any resolution writes exactly."""

    ts_ns: int
    src: bytes  # 4 or 16 bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


Packet = tuple[int, bytes]  # (ts_ns, frame)
ConnKey = tuple[bytes, int, bytes, int]  # endpoints in a fixed order, the same for both directions


# Reading ----------------------------------------------------------------------------------------


def _addr(a: int | bytes) -> bytes:
    """The decoder gives IPv4 as an int or 4 bytes, IPv6 as 16 bytes; segments hold bytes."""
    return a.to_bytes(4, "big") if isinstance(a, int) else bytes(a)


def read_segments(*paths: str | Path) -> list[Segment]:
    """Every frame of the captures (read in order as one capture) as segments.

    Timestamps are kept at microsecond precision: the reader hands out float seconds, which near
    1.8e9 s hold about 0.24 µs, so finer digits would be noise. Raises ValueError if any frame is
    not a TCP segment the decoder accepts, since a re-written capture would then silently lose it.
    """
    decoder = FrameDecoder()
    out: list[Segment] = []
    for path in paths:
        cap = Capture(str(path))
        try:
            for batches in cap.batches():
                for linktype, frames in batches:
                    decode = decoder.link_decoder(linktype)
                    for _off, ts, data in frames:
                        d = decoder_result(decode(data))
                        if d is None:
                            raise ValueError(f"{path}: frame not decoded: {dict(decoder.skipped)}")
                        src, dst, sport, dport, seq, ack, flags, payload = d
                        out.append(Segment(round(ts * 1e6) * 1000, src, dst, sport, dport, seq, ack, flags,
                                           payload))
        finally:
            cap.close()
    return out


def decoder_result(d: Decoded | None) -> tuple[bytes, bytes, int, int, int, int, int, bytes] | None:
    """A decoder result with addresses as bytes, whatever form the decoder uses for IPv4."""
    if d is None:
        return None
    src, dst, sport, dport, seq, ack, flags, payload = d
    return _addr(src), _addr(dst), sport, dport, seq, ack, flags, bytes(payload)


def conn_key(s: Segment) -> ConnKey:
    """The same key for both directions of a connection."""
    a, b = (s.src, s.sport), (s.dst, s.dport)
    lo, hi = (a, b) if a <= b else (b, a)
    return lo[0], lo[1], hi[0], hi[1]


def connections(segments: Iterable[Segment]) -> dict[ConnKey, list[int]]:
    """Indexes of each connection's segments, in capture order."""
    conns: dict[ConnKey, list[int]] = {}
    for i, s in enumerate(segments):
        conns.setdefault(conn_key(s), []).append(i)
    return conns


# Scripted connections ---------------------------------------------------------------------------

MSS = 1448  # segment payload size Conn.send cuts data into, as Ethernet gives it


class Conn:
    """One TCP connection's segments, sequence numbers kept for both sides."""

    def __init__(self, out: list[Segment], n: int, server_port: int = 80) -> None:
        self.out = out
        self.c = bytes([10, 0, n >> 8 & 0xFF, n & 0xFF])
        self.s = bytes([10, 1, 0, 1])
        self.cp, self.sp = 30000 + 2 * n, server_port
        self.cseq, self.sseq = 1000 * n + 7, 5000 * n + 11

    def _seg(self, t: int, client: bool, flags: int, payload: bytes = b"") -> None:
        if client:
            self.out.append(Segment(t, self.c, self.s, self.cp, self.sp, self.cseq, self.sseq, flags, payload))
            self.cseq = (self.cseq + len(payload) + (1 if flags & (SYN | FIN) else 0)) % (1 << 32)
        else:
            self.out.append(Segment(t, self.s, self.c, self.sp, self.cp, self.sseq, self.cseq, flags, payload))
            self.sseq = (self.sseq + len(payload) + (1 if flags & (SYN | FIN) else 0)) % (1 << 32)

    def open(self, t: int) -> None:
        self._seg(t, True, SYN)
        self._seg(t + 1000, False, SYN | ACK)
        self._seg(t + 2000, True, ACK)

    def send(self, t: int, client: bool, data: bytes, mss: int = MSS) -> int:
        """`data` in segments of at most `mss` bytes, a bare ACK back every other one."""
        for i in range(0, len(data), mss):
            self._seg(t, client, ACK | PSH, data[i:i + mss])
            t += 1000
            if i // mss % 2:
                self._seg(t, not client, ACK)
                t += 1000
        return t

    def close(self, t: int, reset: bool = False) -> None:
        if reset:
            self._seg(t, False, RST | ACK)
            return
        self._seg(t, True, FIN | ACK)
        self._seg(t + 1000, False, FIN | ACK)
        self._seg(t + 2000, True, ACK)


# Addresses --------------------------------------------------------------------------------------


def v4_mapped(addr: bytes) -> bytes:
    """IPv4 a.b.c.d as the IPv6 address ::ffff:a.b.c.d (IPv6 addresses are kept)."""
    return b"\0" * 10 + b"\xff\xff" + addr if len(addr) == 4 else addr


def to_ipv6(segments: Iterable[Segment], mapping: Callable[[bytes], bytes] = v4_mapped) -> list[Segment]:
    """The same traffic over IPv6: only the addresses change."""
    return [s._replace(src=mapping(s.src), dst=mapping(s.dst)) for s in segments]


def address_text(addr: bytes) -> str:
    """An address as records write it."""
    return str(ipaddress.ip_address(addr))


# IP and TCP -------------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """Internet checksum. The ones'-complement sum of 16-bit words is the number mod 0xFFFF
    (2**16 == 1 mod 0xFFFF), which one big-int operation computes."""
    if len(data) % 2:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return ~s & 0xFFFF


def tcp_header(s: Segment, src: bytes, dst: bytes, options: bytes = b"") -> bytes:
    """TCP header with a valid checksum over the pseudo-header (options padded to 4 bytes)."""
    options += b"\x01" * (-len(options) % 4)  # NOP padding
    doff = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", s.sport, s.dport, s.seq, s.ack, doff << 4, s.flags, 65535, 0, 0) + options
    length = len(hdr) + len(s.payload)
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_TCP, length)
    else:
        pseudo = src + dst + struct.pack("!IxxxB", length, PROTO_TCP)
    csum = checksum(pseudo + hdr + s.payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:]


def ipv4_header(src: bytes, dst: bytes, payload_len: int, *, proto: int = PROTO_TCP, options: bytes = b"",
                ident: int = 0, frag: int = 0x4000) -> bytes:
    """IPv4 header (DF set by default) with options padded to 4 bytes and a valid checksum."""
    options += b"\0" * (-len(options) % 4)  # end-of-options padding
    ihl = 5 + len(options) // 4
    total = ihl * 4 + payload_len
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, frag, 64, proto, 0, src, dst) + options
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def ipv6_ext_header(kind: int, nxt: int, body_len: int = 6) -> bytes:
    """One extension header of `kind` whose next header is `nxt`.

    Hop-by-hop and destination options carry a PadN option; routing is type 0 with no segments
    left; fragment is offset 0 with more-fragments set; AH carries a zero ICV. `body_len` (bytes
    after the two-byte prefix, 6 + a multiple of 8) makes longer option headers.
    """
    if kind in (IPV6_HOP_BY_HOP, IPV6_DEST_OPTS):
        pad = body_len - 2
        return bytes([nxt, (body_len + 2) // 8 - 1, 1, pad]) + b"\0" * pad
    if kind == IPV6_ROUTING:
        return bytes([nxt, 0, 0, 0]) + b"\0" * 4
    if kind == IPV6_FRAGMENT:
        return struct.pack("!BBHI", nxt, 0, 0x0001, 0x12345678)
    if kind == IPV6_AH:
        return struct.pack("!BBHII", nxt, 4, 0, 0x100, 1) + b"\0" * 12  # (4 + 2) * 4 = 24 bytes
    raise ValueError(f"no builder for IPv6 extension header {kind}")


def ipv6_header(src: bytes, dst: bytes, payload: bytes, *, proto: int = PROTO_TCP,
                ext: Sequence[int] = ()) -> bytes:
    """IPv6 header followed by the chain of extension headers `ext` (in order), then `payload`."""
    chain = b""
    kinds = [*ext, proto]
    for kind, nxt in itertools.pairwise(kinds):
        chain += ipv6_ext_header(kind, nxt)
    body = chain + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), kinds[0], 64, src, dst) + body


def ip_packet(s: Segment, *, ipv6_ext: Sequence[int] = (), ipv4_options: bytes = b"",
              tcp_options: bytes = b"") -> bytes:
    """The segment as an IPv4 or IPv6 packet (by address length)."""
    tcp = tcp_header(s, s.src, s.dst, tcp_options) + s.payload
    if len(s.src) == 4:
        return ipv4_header(s.src, s.dst, len(tcp), options=ipv4_options) + tcp
    return ipv6_header(s.src, s.dst, tcp, ext=ipv6_ext)


def ip_version(ip: bytes) -> int:
    return ip[0] >> 4


# Link layers ------------------------------------------------------------------------------------

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _ethertype(ip: bytes) -> int:
    return ETH_IPV4 if ip_version(ip) == 4 else ETH_IPV6


def ethernet(ip: bytes, *, tags: Sequence[tuple[int, int]] = (), pad: bool = True) -> bytes:
    """Ethernet II, with VLAN `tags` as (TPID, VLAN id) outermost first, padded to 60 bytes."""
    frame = MAC_B + MAC_A
    for tpid, vid in tags:
        frame += struct.pack("!HH", tpid, vid & 0x0FFF)
    frame += struct.pack("!H", _ethertype(ip)) + ip
    if pad and len(frame) < 60:
        frame += b"\0" * (60 - len(frame))
    return frame


def sll(ip: bytes) -> bytes:
    """Linux cooked v1: packet type (outgoing), ARPHRD_ETHER, address length, address, protocol."""
    return struct.pack("!HHH8sH", 4, 1, 6, MAC_A, _ethertype(ip)) + ip


def sll2(ip: bytes) -> bytes:
    """Linux cooked v2: protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length, address."""
    return struct.pack("!HHIHBB8s", _ethertype(ip), 0, 1, 1, 4, 6, MAC_A) + ip


def null(ip: bytes, order: str = "<") -> bytes:
    """BSD null: address family in the capturing host's byte order (`order`)."""
    return struct.pack(order + "I", AF_INET if ip_version(ip) == 4 else AF_INET6_BSD) + ip


def loop(ip: bytes) -> bytes:
    """OpenBSD loop: address family in network byte order."""
    return struct.pack("!I", AF_INET if ip_version(ip) == 4 else AF_INET6_BSD) + ip


class Link(NamedTuple):
    linktype: int
    wrap: Callable[[bytes], bytes]


LINKS: dict[str, Link] = {
    "ethernet": Link(LINKTYPE_ETHERNET, ethernet),
    "vlan": Link(LINKTYPE_ETHERNET, lambda ip: ethernet(ip, tags=[(ETH_8021Q, 100)])),
    "qinq": Link(LINKTYPE_ETHERNET, lambda ip: ethernet(ip, tags=[(ETH_8021AD, 200), (ETH_8021Q, 100)])),
    "sll": Link(LINKTYPE_LINUX_SLL, sll),
    "sll2": Link(LINKTYPE_LINUX_SLL2, sll2),
    "raw": Link(LINKTYPE_RAW, lambda ip: ip),
    "null": Link(LINKTYPE_NULL, null),
    "null-be": Link(LINKTYPE_NULL, lambda ip: null(ip, ">")),
    "loop": Link(LINKTYPE_LOOP, loop),
}


def frames(segments: Iterable[Segment], link: str = "ethernet", *, ipv6_ext: Sequence[int] = (),
           ipv4_options: bytes = b"") -> list[Packet]:
    """Segments as (ts_ns, frame) of one named link layer."""
    wrap = LINKS[link].wrap
    return [(s.ts_ns, wrap(ip_packet(s, ipv6_ext=ipv6_ext, ipv4_options=ipv4_options))) for s in segments]


# Writing ----------------------------------------------------------------------------------------

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D


def pcap_bytes(linktype: int, packets: Iterable[Packet], *, nanos: bool = False, big_endian: bool = False) -> bytes:
    """A classic pcap file: microsecond or nanosecond magic, either byte order."""
    o = ">" if big_endian else "<"
    rec = struct.Struct(o + "IIII")
    parts = [struct.pack(o + "IHHiIII", PCAP_MAGIC_NS if nanos else PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, linktype)]
    for ts_ns, frame in packets:
        sec, ns = divmod(ts_ns, 10**9)
        parts.append(rec.pack(sec, ns if nanos else ns // 1000, len(frame), len(frame)))
        parts.append(frame)
    return b"".join(parts)


def write_pcap(path: str | Path, linktype: int, packets: Iterable[Packet], *, nanos: bool = False,
               big_endian: bool = False) -> Path:
    p = Path(path)
    p.write_bytes(pcap_bytes(linktype, packets, nanos=nanos, big_endian=big_endian))
    return p


def _block(o: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def pcapng_bytes(interfaces: Sequence[int], packets: Iterable[tuple[int, int, bytes]], *, nanos: bool = False,
                 big_endian: bool = False) -> bytes:
    """A pcapng section: SHB, one IDB per link type in `interfaces`, one EPB per (ifid, ts_ns, frame).

    With `nanos` each IDB carries if_tsresol=9; otherwise the option is left out (the default,
    microseconds).
    """
    o = ">" if big_endian else "<"
    parts = [_block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype in interfaces:
        opts = struct.pack(o + "HHB3x", 9, 1, 9) + struct.pack(o + "HH", 0, 0) if nanos else b""
        parts.append(_block(o, 1, struct.pack(o + "HHI", linktype, 0, SNAPLEN) + opts))
    epb = struct.Struct(o + "IIIII")
    for ifid, ts_ns, frame in packets:
        ticks = ts_ns if nanos else ts_ns // 1000
        parts.append(_block(o, 6, epb.pack(ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame))
    return b"".join(parts)


def write_pcapng(path: str | Path, interfaces: Sequence[int], packets: Iterable[tuple[int, int, bytes]], *,
                 nanos: bool = False, big_endian: bool = False) -> Path:
    p = Path(path)
    p.write_bytes(pcapng_bytes(interfaces, packets, nanos=nanos, big_endian=big_endian))
    return p


def write_rotation(directory: str | Path, name: str, parts: Sequence[Sequence[Segment]],
                   link: str = "ethernet") -> list[Path]:
    """One pcap per part, named as `tcpdump -C` names them: name, name1, name2, ..."""
    d = Path(directory)
    return [write_pcap(d / (name + (str(i) if i else "")), LINKS[link].linktype, frames(part, link))
            for i, part in enumerate(parts)]


PcapRecords = tuple[bytes, list[bytes]]  # (24-byte global header, raw records with their 16-byte headers)


def split_pcap(data: bytes) -> PcapRecords:
    """A little-endian µs pcap split into header and records (independent of watcher/capture/pcapfile.py)."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    recs, off = [], 24
    while off < len(data):
        (caplen,) = struct.unpack_from("<I", data, off + 8)
        recs.append(data[off:off + 16 + caplen])
        off += 16 + caplen
    return data[:24], recs


def write_gzip_bomb(path: str | Path, expanded: int, first_ts: float = 1_700_000_000.0) -> Path:
    """A gzip file that expands to `expanded` bytes: a valid pcap header, then records of 65,535
    zero bytes each (one timestamp), so it is identified as a capture and parses as one until the
    reader's limits stop it. Compressed about 1000 to 1 (deflate's best), written a MiB at a time."""
    import gzip

    sec, usec = divmod(round(first_ts * 1e6), 10**6)
    record = struct.pack("<IIII", sec, usec, 65535, 65535) + bytes(65535)
    p = Path(path)
    with open(p, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        block = record * 16
        left = expanded - 24
        while left > 0:
            piece = block[:left]
            gz.write(piece)
            left -= len(piece)
    return p
