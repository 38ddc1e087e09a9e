"""Opening capture inputs: files, `.gz`, stdin, and directories in tcpdump's order."""

from __future__ import annotations

import io
import mmap
import os
import re
import struct
import sys
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

from analyzers import RecordLayout
from watcher.capture.pcapfile import GZIP_MAGIC, CaptureError, CaptureParser, Frame, capture_kind

# Big reads amortise the per-call cost; 4 MiB keeps memory flat whatever the file size.
READ_CHUNK = 4 << 20
# Enough of a file to reach its first record, for ordering a directory.
PEEK_BYTES = 64 * 1024
# A gzip file is decompressed in steps of at most this many bytes (or the caller's smaller chunk),
# so a small file that expands enormously (a gzip bomb) never needs more memory than one step.
GUNZIP_STEP = 4 << 20
# The defaults of limits.gunzip_max_bytes and limits.gunzip_max_ratio (`run`), and what `read` uses.
# A tcpdump -z gzip rotation is one -C file (tcpdump -C 1000 is 1 GB) or one -G period; 16 GiB is
# far beyond any of these, and stops a gzip bomb's gigabytes before they cost minutes of analysis.
# Capture files compress 3 to 10 times (headers with changing sequence numbers and timestamps,
# payloads that are mostly compressed or encrypted already); even a capture of zeros does not
# reach 200, while deflate's worst case, a bomb, is 1032.
GUNZIP_MAX_BYTES = 16 << 30
GUNZIP_MAX_RATIO = 200.0
# The ratio is judged only once this much has come out: a small file is harmless, and its ratio
# says little (a header-only rotation, a few identical packets).
GUNZIP_RATIO_AFTER_BYTES = 64 << 20
# A gzip member header holds a file name and an extra field of at most 64 KiB: a longer one is
# not a header, and reading on for its end would hold the whole file in memory.
GZIP_MAX_HEADER = 1 << 20


@dataclass(frozen=True, slots=True)
class GunzipLimits:
    """How far one gzip capture file may expand before the rest of it is skipped (a bomb)."""

    max_bytes: int = GUNZIP_MAX_BYTES
    max_ratio: float = GUNZIP_MAX_RATIO

    def check(self, expanded: int, consumed: int) -> str | None:
        """Why `expanded` bytes from `consumed` compressed ones go too far; None while they do not."""
        if expanded > self.max_bytes:
            return (f"gzip data expands past {self.max_bytes:,} bytes (limits.gunzip_max_bytes): too large "
                    "for a capture file, likely a decompression bomb")
        if expanded > GUNZIP_RATIO_AFTER_BYTES and expanded > self.max_ratio * max(consumed, 1):
            return (f"gzip data expands more than {_num(self.max_ratio)} times ({consumed:,} compressed bytes gave "
                    f"{expanded:,}; limits.gunzip_max_ratio): too much for a capture file, likely a decompression bomb")
        return None


DEFAULT_GUNZIP = GunzipLimits()


class Capture:
    """An open capture input; `position()` is how far the raw file has been read (for progress).

    gzip is recognised by its magic, whatever the name, and decompressed here rather than by
    `gzip.GzipFile`: that way everything before a corrupt or cut-off spot is still delivered, the
    magic is found even when a pipe hands over one byte at a time, and errors carry the offset in
    the compressed file.
    """

    def __init__(self, path: str, gunzip: GunzipLimits = DEFAULT_GUNZIP) -> None:
        self.path = path
        self.gunzip = gunzip
        self.name = "-" if path == "-" else os.path.basename(path)
        self.raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        # For a file the first bytes say it now; for a pipe, once `chunks` has read them.
        head = self.raw.peek(2)[:2] if isinstance(self.raw, io.BufferedReader) and path != "-" else b""
        self.compressed: bool | None = head[:2] == GZIP_MAGIC if path != "-" else None

    def size(self) -> int:
        try:
            return os.fstat(self.raw.fileno()).st_size if self.path != "-" else 0
        except OSError:
            return 0

    def position(self) -> int:
        try:
            return self.raw.tell() if self.path != "-" else 0
        except OSError:
            return 0

    def close(self) -> None:
        if self.path != "-":
            self.raw.close()

    def chunks(self, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """The capture's bytes, decompressed if it is gzip; CaptureError after the last good byte."""
        first = self.raw.read(chunk)
        while first and len(first) < 2:  # a pipe may deliver the gzip magic a byte at a time
            more = self.raw.read(chunk)
            if not more:
                break
            first += more
        self.compressed = first[:2] == GZIP_MAGIC
        if not self.compressed:
            data = first
            while data:
                yield data
                data = self.raw.read(chunk)
            return
        yield from self._gunzip(first, chunk)

    def _gunzip(self, buf: bytes, chunk: int) -> Iterator[bytes]:
        """Decode gzip members one after another (tcpdump -z writes one; `cat a.gz b.gz` two).

        The gzip framing is read here and the deflate data by zlib in raw mode, so the CRC is
        checked after every decompressed byte has been delivered.
        """
        done = 0  # compressed bytes before buf[0]
        expanded = 0  # bytes decompressed from the file, all members
        step = min(chunk, GUNZIP_STEP)
        while True:
            while (h := _gzip_header(buf)) < 0:
                more = self.raw.read(chunk) if len(buf) <= GZIP_MAX_HEADER else b""
                if not more:
                    raise CaptureError(done, "gzip data is corrupt or cut short (header cut short)" if
                                       len(buf) <= GZIP_MAX_HEADER else "gzip data is corrupt (a member "
                                       f"header longer than {GZIP_MAX_HEADER:,} bytes)")
                buf += more
            if h == 0:
                raise CaptureError(done, "gzip data is corrupt or cut short (no gzip member header here: "
                                   "starts with %s)" % buf[:4].hex())
            inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            crc = size = 0
            data, done = buf[h:], done + h
            while True:
                try:
                    # At most `step` bytes out per call; the input not used yet waits in
                    # unconsumed_tail, so memory stays bounded however much the data expands.
                    out = inflate.decompress(data, step)
                except zlib.error as e:
                    raise CaptureError(done, f"gzip data is corrupt or cut short ({e}, in the compressed "
                                       "bytes after this offset)") from None
                used = len(data) - len(inflate.unconsumed_tail)
                if out:
                    expanded += len(out)
                    if (too_far := self.gunzip.check(expanded, done + used)) is not None:
                        raise CaptureError(done + used, too_far)
                    crc = zlib.crc32(out, crc)
                    size += len(out)
                    yield out
                if inflate.eof:
                    done += len(data) - len(inflate.unused_data)
                    buf = inflate.unused_data
                    break
                if inflate.unconsumed_tail or len(out) == step:  # more to come from what was given
                    done += used
                    data = inflate.unconsumed_tail
                    continue
                done += len(data)
                data = self.raw.read(chunk)
                if not data:
                    raise CaptureError(done, "gzip data is corrupt or cut short (the compressed file ends early)")
            while len(buf) < 8:
                more = self.raw.read(chunk)
                if not more:
                    raise CaptureError(done, "gzip data is corrupt or cut short (trailer cut short)")
                buf += more
            want_crc, want_size = struct.unpack_from("<II", buf)
            if want_crc != crc or want_size != size & 0xFFFFFFFF:
                raise CaptureError(done, "gzip data is corrupt or cut short (CRC or length check failed)")
            buf, done = buf[8:], done + 8
            if not buf:
                buf = self.raw.read(chunk)
            if not buf.strip(b"\0"):  # the end, possibly padded with zeros as gzip(1) tolerates
                return

    def batches(self, chunk: int = READ_CHUNK) -> Iterator[list[tuple[int, list[Frame]]]]:
        """Yield lists of (linktype, frames); raise CaptureError where the file goes bad."""
        for item in self.read(chunk, records=False):
            assert not isinstance(item, Records)
            yield item

    def read(self, chunk: int = READ_CHUNK, records: bool = True) -> Iterator[Batches | Records]:
        """Like `batches`, but with `records` a classic pcap file's records come as `Records`: the
        read buffers themselves, for a consumer that walks the records in place (the fast path of
        `pcapwatch read`). Frames of pcapng files still come as batches.

        A record cut by the end of a read buffer is completed with the start of the next one into
        a buffer of its own, so no read buffer is copied whole.
        """
        parser = CaptureParser()
        pending = b""
        base = 0  # file position of pending[0], then of data[0]
        layout: RecordLayout | None = None
        for data in self.chunks(chunk):
            start = 0
            if pending:
                k = _completing(pending, data, layout) if layout is not None else -1
                if k > 0:
                    head = pending + data[:k]
                    used = yield from _consume(parser, head, 0, base, layout)
                    if used != len(head):  # cannot happen with a complete, valid record: be safe
                        data = head[used:] + data[k:]
                        base += used
                    else:
                        base += len(pending)
                        start = k
                else:
                    data = pending + data
                pending = b""
            if layout is None and records:
                start = parser.header(data, start, base)
                layout = parser.record_layout()
            used = yield from _consume(parser, data, start, base, layout)
            pending = data[used:]
            base += used
        while True:  # a problem found after good records is reported by the next call
            batches, off = parser.parse(pending, 0, base)
            if not batches:
                break
            yield batches
            pending, base = pending[off:], base + off
        if parser.kind is None:
            if base + len(pending) == 0:
                raise CaptureError(0, "the file is empty (0 bytes)")
            if capture_kind(pending[:4]) is None:
                raise CaptureError(0, "not a pcap or pcapng file (starts with %s)" % pending[:4].hex())
            raise CaptureError(0, f"only {len(pending)} bytes: too short for a capture file header")
        if pending:
            if parser.kind == "pcap" and parser.linktype < 0:
                raise CaptureError(0, f"pcap header cut short: {len(pending)} of 24 bytes")
            raise CaptureError(base, f"the last record is cut short ({len(pending)} bytes at the end of "
                               "the file): tcpdump was stopped while writing, or the file was truncated")


Batches = list[tuple[int, list[Frame]]]


class RangeReader:
    """A capture input's bytes by position, asked for in increasing order: how a worker reads the
    records another process walked (see watcher/read/parallel.py). A plain file is read with `preadv` into one
    buffer used again and again (a fresh one per read cost a page fault per 4 KiB); a gzip one is
    decompressed again from its start, as `Capture.read` did (positions are in the decompressed
    bytes)."""

    def __init__(self, path: str) -> None:
        self.cap = Capture(path)
        self.fd = -1 if self.cap.compressed else self.cap.raw.fileno()
        self.chunks = self.cap.chunks() if self.cap.compressed else None
        self.buf = b""
        self.pos = 0  # position of buf[0]
        # Anonymous memory, not the file mapped: its slices are bytes, as the analyzers want, and
        # a file cut short under us cannot fault.
        self.window: mmap.mmap | None = None

    def read(self, pos: int, size: int) -> bytes:
        """`size` bytes at `pos` (valid until the next call); CaptureError if the file no longer
        holds them."""
        if self.chunks is None:
            if self.window is None or len(self.window) < size:
                self.window = mmap.mmap(-1, max(size, READ_CHUNK + PEEK_BYTES))
            got = os.preadv(self.fd, [memoryview(self.window)[:size]], pos)
            if got != size:
                raise CaptureError(pos + got, "the file changed while it was read (it is shorter now)")
            return cast(bytes, self.window)  # slices of an mmap are bytes
        else:
            while self.pos + len(self.buf) < pos + size:
                more = next(self.chunks, b"")
                if not more:
                    break
                drop = min(max(0, pos - self.pos), len(self.buf))  # bytes before `pos` are done with
                self.buf = self.buf[drop:] + more
                self.pos += drop
            if pos < self.pos:
                raise ValueError(f"position {pos} was read past already")
            data = self.buf[pos - self.pos:pos - self.pos + size]
        if len(data) != size:
            raise CaptureError(pos + len(data), "the file changed while it was read (it is shorter now)")
        return data

    def close(self) -> None:
        self.cap.close()
        if self.window is not None:
            self.window.close()
            self.window = None


@dataclass(slots=True)
class Records:
    """Classic pcap records for a consumer that walks them itself (`Pipeline.feed_records`):
    `buf[start:]` begins at a record. The consumer sets `used` to the offset of the first record it
    did not take, usually an incomplete or corrupt one: the capture parser then reports a corrupt
    record, hands out complete ones as batches, and an incomplete one is carried over to the next
    read."""

    buf: bytes
    start: int
    base: int  # file position of buf[0]
    layout: RecordLayout
    used: int = -1


def _consume(parser: CaptureParser, buf: bytes, start: int, base: int,
             layout: RecordLayout | None) -> Generator[Batches | Records, None, int]:
    """Hand `buf[start:]` out as `Records` (when the file's layout is known) and then to the parser
    as batches; return the offset of the first byte not consumed."""
    if layout is not None:
        r = Records(buf, start, base, layout)
        yield r
        if r.used < start:
            raise ValueError("Records.used was not set by the consumer")
        start = r.used
    batches, used = parser.parse(buf, start, base)
    if batches:
        yield batches
    return used


def _completing(pending: bytes, data: bytes, layout: RecordLayout) -> int:
    """How many bytes of `data` complete the record that starts `pending`; -1 when that is not
    known (its header is corrupt, or `data` is too short to complete it)."""
    size = layout.header.size
    head = pending[:size] if len(pending) >= size else pending + data[:size - len(pending)]
    if len(head) < size:
        return -1
    caplen = layout.header.unpack_from(head)[2]
    if caplen > layout.max_caplen:
        return -1
    k = size + caplen - len(pending)
    return k if 0 < k <= len(data) else -1


def _gzip_header(buf: bytes) -> int:
    """Length of the gzip member header at buf[0]; -1 if more bytes are needed, 0 if not gzip."""
    if len(buf) < 10:
        return -1 if GZIP_MAGIC.startswith(buf[:2]) else 0
    if buf[:2] != GZIP_MAGIC or buf[2] != 8:  # magic, deflate
        return 0
    flags, pos = buf[3], 10
    if flags & 0x04:  # FEXTRA
        if len(buf) < pos + 2:
            return -1
        pos += 2 + int.from_bytes(buf[pos:pos + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = buf.find(b"\0", pos)
            if end < 0:
                return -1
            pos = end + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos if pos <= len(buf) else -1


def expand(paths: list[str]) -> tuple[list[str], list[str]]:
    """Expand directories to their capture files in the order tcpdump wrote them.

    Returns (files, notes); a note says why a directory entry was passed over.
    """
    files: list[str] = []
    notes: list[str] = []
    for p in paths:
        if p != "-" and os.path.isdir(p):
            found = []
            for entry in sorted(os.scandir(p), key=lambda e: _natural(e.name)):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    kind = _kind(entry.path)
                except OSError:  # kept: opening it says why it cannot be read, and it counts as failed
                    found.append(entry.path)
                    continue
                if kind is None:
                    notes.append(f"{entry.path}: skipped, not a capture file")
                    continue
                found.append(entry.path)
            found.sort(key=lambda f: (_first_ts(f), _natural(os.path.basename(f))))
            files.extend(found)
        else:
            files.append(p)
    return files, notes


def _kind(path: str) -> str | None:
    """The file's format from its first bytes; OSError if it cannot be read (not 'not a capture')."""
    with open(path, "rb") as f:
        return capture_kind(f.read(4))


def _first_ts(path: str) -> float:
    """Timestamp of a file's first record (tcpdump's ring reuses names, so names do not order)."""
    try:
        cap = Capture(path)
        try:
            parser = CaptureParser()
            data = next(cap.chunks(PEEK_BYTES), b"")
            for _link, frames in parser.parse(data, 0)[0]:
                if frames:
                    return frames[0][1]
        finally:
            cap.close()
    except (OSError, CaptureError):
        pass
    return float("inf")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _natural(name: str) -> list[object]:
    """'cap.pcap2' before 'cap.pcap10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
