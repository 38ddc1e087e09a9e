"""Opening capture inputs: files, `.gz`, stdin, and directories in tcpdump's order."""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from watcher.pcapfile import GZIP_MAGIC, CaptureError, CaptureParser, Frame, capture_kind

# Big reads amortise the per-call cost; 4 MiB keeps memory flat whatever the file size.
READ_CHUNK = 4 << 20
# Enough of a file to reach its first record, for ordering a directory.
PEEK_BYTES = 64 * 1024


class Capture:
    """An open capture input; `position()` is how far the raw file has been read (for progress).

    gzip is recognised by its magic, whatever the name, and decompressed here rather than by
    `gzip.GzipFile`: that way everything before a corrupt or cut-off spot is still delivered, the
    magic is found even when a pipe hands over one byte at a time, and errors carry the offset in
    the compressed file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
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
        while True:
            while (h := _gzip_header(buf)) < 0:
                more = self.raw.read(chunk)
                if not more:
                    raise CaptureError(done, "gzip data is corrupt or cut short (header cut short)")
                buf += more
            if h == 0:
                raise CaptureError(done, "gzip data is corrupt or cut short (no gzip member header here: "
                                   "starts with %s)" % buf[:4].hex())
            inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            crc = size = 0
            data, done = buf[h:], done + h
            while True:
                try:
                    out = inflate.decompress(data)
                except zlib.error as e:
                    raise CaptureError(done, f"gzip data is corrupt or cut short ({e}, in the compressed "
                                       "bytes after this offset)") from None
                if out:
                    crc = zlib.crc32(out, crc)
                    size += len(out)
                    yield out
                if inflate.eof:
                    done += len(data) - len(inflate.unused_data)
                    buf = inflate.unused_data
                    break
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
        parser = CaptureParser()
        pending = b""
        base = 0
        for data in self.chunks(chunk):
            if pending:
                data = pending + data
            batches, off = parser.parse(data, 0, base)
            if batches:
                yield batches
            pending = data[off:]
            base += off
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
                kind = _kind(entry.path)
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
    try:
        with open(path, "rb") as f:
            return capture_kind(f.read(4))
    except OSError:
        return None


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


def _natural(name: str) -> list[object]:
    """'cap.pcap2' before 'cap.pcap10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
