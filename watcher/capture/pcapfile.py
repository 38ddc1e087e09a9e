"""pcap and pcapng record parsing with `struct`, incremental so a growing file can be tailed.

`CaptureParser.parse(buf, offset)` consumes only complete records and returns where it stopped;
the caller appends more bytes and calls again. A record is never yielded until all of it is there
(dpkt's reader yields a half-written last record as if complete: see STYLE.md).
Anything inconsistent raises `CaptureError` with the byte offset, so the user gets one line that
names the file, the offset and the problem.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from analyzers import RecordLayout

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
PCAP_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
# libpcap's and tcpdump's maximum snapshot length (MAXIMUM_SNAPLEN, 256 KiB): tcpdump refuses a
# larger -s, and libpcap refuses records larger than it, so a larger captured length means a
# corrupt file (and trusting it could make us buffer gigabytes). The config's capture.snaplen and
# the pcap files the `pcap` action writes use it too.
MAX_SNAPLEN = 262_144
# A pcapng block carries at most one such packet plus options.
MAX_BLOCK_LEN = MAX_SNAPLEN + 64 * 1024
# Smallest valid length of each pcapng block type: its fixed fields plus the trailing length.
PCAPNG_MIN_BLOCK = {0x0A0D0D0A: 28, 1: 20, 2: 32, 3: 16, 6: 32}
# Only the low 16 bits of the pcap header's link type field are the link type; the upper bits
# carry the FCS length and reserved flags.
LINKTYPE_MASK = 0xFFFF

# The fields read from every pcapng block, and from every enhanced packet block, compiled once for
# each byte order: a format string built per block (`o + "II"`) cost a new string and a lookup in
# struct's cache, ~40 ns a field, three fields a packet.
_BLOCK_HEAD = {o: struct.Struct(o + "II").unpack_from for o in "<>"}  # block type, total length
_BLOCK_TRAILER = {o: struct.Struct(o + "I").unpack_from for o in "<>"}  # the total length, again
_EPB_HEAD = {o: struct.Struct(o + "IIII").unpack_from for o in "<>"}  # interface, time high, low, caplen

Frame = tuple[int, float, bytes]  # (file offset of the record, timestamp, captured bytes)


class CaptureError(Exception):
    """A capture file cannot be read further. `offset` is where the problem is."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(f"offset {offset}: {problem}")
        self.offset = offset
        self.problem = problem


def capture_kind(head: bytes) -> str | None:
    """'pcap', 'pcapng', 'gzip' or None, from a file's first bytes."""
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_SHB:
        return "pcapng"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    return None


@dataclass(slots=True)
class _Interface:
    linktype: int
    scale: float = 1e-6
    offset: float = 0.0


@dataclass(slots=True)
class CaptureParser:
    """Parses one capture file's bytes into frame batches, one link type per batch."""

    kind: str | None = None
    linktype: int = -1
    _record: struct.Struct | None = None
    _scale: float = 1e-6
    _snaplimit: int = MAX_SNAPLEN
    _order: str = "<"
    _interfaces: list[_Interface] = field(default_factory=list)
    _last_ts: float = 0.0
    _error: CaptureError | None = None  # found after good records: raised on the next call

    def parse(self, buf: bytes, offset: int, base: int = 0) -> tuple[list[tuple[int, list[Frame]]], int]:
        """Parse complete records in `buf` from `offset`; return batches and the offset reached.

        `base` is the file position of buf[0], so offsets in frames and errors are file offsets.
        A problem found after some good records is raised on the next call, so those records
        are never lost with it.
        """
        if self._error is not None:
            raise self._error
        if self.kind is None:
            if len(buf) - offset < 4:
                return [], offset
            kind = capture_kind(buf[offset:offset + 4])
            if kind not in ("pcap", "pcapng"):
                raise CaptureError(base + offset, "not a pcap or pcapng file (starts with %s)"
                                   % buf[offset:offset + 4].hex())
            self.kind = kind
        if self.kind == "pcap":
            return self._pcap(buf, offset, base)
        return self._pcapng(buf, offset, base)

    # classic pcap -------------------------------------------------------------------------------

    def header(self, buf: bytes, offset: int, base: int = 0) -> int:
        """Parse only a classic pcap file's header at `offset`; return the offset after it (where
        the records start), or `offset` when more bytes are needed or the file is not classic pcap.
        Then `record_layout` tells a caller how to walk the records itself."""
        if self.kind is None:
            if len(buf) - offset < 4:
                return offset
            kind = capture_kind(buf[offset:offset + 4])
            if kind != "pcap":
                return offset
            self.kind = kind
        if self.kind != "pcap" or self._record is not None:
            return offset
        return self._pcap_header(buf, offset, base)

    def record_layout(self) -> RecordLayout | None:
        """How this classic pcap's records are laid out, once its header is parsed (else None)."""
        if self._record is None:
            return None
        return RecordLayout(self.linktype, self._record, self._scale, self._frac_limit(), self._snaplimit)

    def _frac_limit(self) -> int:
        return 1_000_000 if self._scale == 1e-6 else 1_000_000_000

    def _pcap_header(self, buf: bytes, off: int, base: int) -> int:
        if len(buf) - off < PCAP_HEADER_LEN:
            return off
        order, self._scale = PCAP_MAGICS[buf[off:off + 4]]
        major, _minor, _tz, _sigfigs, snaplen, network = struct.unpack_from(order + "HHiIII", buf, off + 4)
        if major != 2:
            raise CaptureError(base + off + 4, f"unsupported pcap version {major}")
        self.linktype = network & LINKTYPE_MASK
        self._snaplimit = max(MAX_SNAPLEN, min(snaplen, 1 << 24))
        self._record = struct.Struct(order + "IIII")
        return off + PCAP_HEADER_LEN

    def _pcap(self, buf: bytes, off: int, base: int) -> tuple[list[tuple[int, list[Frame]]], int]:
        if self._record is None:
            start = off
            off = self._pcap_header(buf, off, base)
            if off == start:
                return [], off
        assert self._record is not None
        unpack = self._record.unpack_from
        scale = self._scale
        frac_limit = self._frac_limit()
        limit = self._snaplimit
        end = len(buf)
        frames: list[Frame] = []
        append = frames.append
        while off + RECORD_HEADER_LEN <= end:
            sec, frac, caplen, _origlen = unpack(buf, off)
            if caplen > limit or frac >= frac_limit:
                problem = (f"record claims {caplen} captured bytes, more than the {limit} a capture can "
                           "hold: the file is corrupt" if caplen > limit else
                           "record timestamp fraction %d out of range: the file is corrupt" % frac)
                return self._stop(CaptureError(base + off, problem), frames, off)
            data_end = off + RECORD_HEADER_LEN + caplen
            if data_end > end:
                break
            append((base + off, sec + frac * scale, buf[off + RECORD_HEADER_LEN:data_end]))
            off = data_end
        return ([(self.linktype, frames)] if frames else []), off

    def _stop(self, error: CaptureError, frames: list[Frame],
              off: int) -> tuple[list[tuple[int, list[Frame]]], int]:
        if not frames:
            raise error
        self._error = error
        return [(self.linktype, frames)], off

    # pcapng -------------------------------------------------------------------------------------

    def _pcapng(self, buf: bytes, off: int, base: int) -> tuple[list[tuple[int, list[Frame]]], int]:
        batches: list[tuple[int, list[Frame]]] = []
        end = len(buf)
        while off + 12 <= end:
            try:
                blen = self._block(buf, off, end, base, batches)
            except CaptureError as e:
                if not batches:
                    raise
                self._error = e
                break
            if not blen:
                break
            off += blen
        return batches, off

    def _block(self, buf: bytes, off: int, end: int, base: int, batches: list[tuple[int, list[Frame]]]) -> int:
        """Parse the block at `off` into `batches`; its length, or 0 when it is not all there."""
        if buf[off:off + 4] == PCAPNG_SHB:
            bom = buf[off + 8:off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                self._order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                self._order = ">"
            else:
                raise CaptureError(base + off, "pcapng section header has a bad byte-order magic")
        o = self._order
        btype, blen = _BLOCK_HEAD[o](buf, off)
        if blen < PCAPNG_MIN_BLOCK.get(btype, 12) or blen % 4 or blen > MAX_BLOCK_LEN:
            raise CaptureError(base + off, f"pcapng block of type {btype} with length {blen} is invalid: "
                               "the file is corrupt")
        if off + blen > end:
            return 0
        (trailer,) = _BLOCK_TRAILER[o](buf, off + blen - 4)
        if trailer != blen:
            raise CaptureError(base + off, f"pcapng block of type {btype} says it is {blen} bytes long at its "
                               f"start and {trailer} at its end: the file is corrupt")
        body = off + 8
        if btype == 0x0A0D0D0A:
            self._interfaces = []
        elif btype == 1:
            self._interfaces.append(self._idb(buf, body, off + blen - 4, o, base))
        elif btype in (6, 2, 3):
            link, item = self._packet(btype, buf, body, off + blen - 4, o, base + off)
            if not batches or batches[-1][0] != link:
                batches.append((link, []))
            batches[-1][1].append(item)
        return blen

    def _idb(self, buf: bytes, body: int, end: int, o: str, base: int) -> _Interface:
        """An interface description block's fields and options, every read within [body, end)."""
        linktype = struct.unpack_from(o + "H", buf, body)[0]
        iface = _Interface(linktype)
        pos = body + 8
        while pos + 4 <= end:
            code, length = struct.unpack_from(o + "HH", buf, pos)
            if code == 0:
                break
            val = pos + 4
            if val + length > end:
                raise CaptureError(base + pos, f"pcapng interface option {code} claims {length} bytes but its "
                                   f"block holds {end - val} after it: the file is corrupt")
            if code == 9 and length >= 1:  # if_tsresol
                r = buf[val]
                iface.scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
            elif code == 14 and length >= 8:  # if_tsoffset
                iface.offset = float(struct.unpack_from(o + "q", buf, val)[0])
            pos = val + (length + 3) // 4 * 4
        return iface

    def _packet(self, btype: int, buf: bytes, body: int, end: int, o: str, at: int) -> tuple[int, Frame]:
        if btype == 3:  # simple packet block: interface 0, no timestamp
            (origlen,) = struct.unpack_from(o + "I", buf, body)
            ifid, caplen, data = 0, min(origlen, end - body - 4), body + 4
            ts = self._last_ts
        else:
            if btype == 6:
                ifid, hi, lo, caplen = _EPB_HEAD[o](buf, body)
            else:  # obsolete packet block
                ifid, _drops, hi, lo, caplen = struct.unpack_from(o + "HHIII", buf, body)
            data = body + 20
            if ifid >= len(self._interfaces):
                raise CaptureError(at, f"packet refers to interface {ifid}, which was never described")
            iface = self._interfaces[ifid]
            ts = ((hi << 32) | lo) * iface.scale + iface.offset
            self._last_ts = ts
        if data + caplen > end:
            raise CaptureError(at, f"packet claims {caplen} bytes but its block holds {end - data}")
        if ifid >= len(self._interfaces):
            raise CaptureError(at, f"packet refers to interface {ifid}, which was never described")
        return self._interfaces[ifid].linktype, (at, ts, buf[data:data + caplen])
