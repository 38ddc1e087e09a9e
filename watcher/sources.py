"""Opening capture inputs: files, `.gz`, stdin, and directories in tcpdump's order."""

from __future__ import annotations

import gzip
import os
import re
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from watcher.pcapfile import CaptureError, CaptureParser, Frame, capture_kind

# Big reads amortise the per-call cost; 4 MiB keeps memory flat whatever the file size.
READ_CHUNK = 4 << 20
# Enough of a file to reach its first record, for ordering a directory.
PEEK_BYTES = 64 * 1024


class Capture:
    """An open capture input; `position()` is how far the raw file has been read (for progress)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = "-" if path == "-" else os.path.basename(path)
        raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        self.raw = raw
        head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        self.compressed = head == b"\x1f\x8b" or (path.endswith(".gz") and not head)
        self.stream: BinaryIO = gzip.GzipFile(fileobj=raw) if self.compressed else raw  # type: ignore[assignment]

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

    def batches(self, chunk: int = READ_CHUNK) -> Iterator[list[tuple[int, list[Frame]]]]:
        """Yield lists of (linktype, frames); raise CaptureError where the file goes bad."""
        parser = CaptureParser()
        pending = b""
        base = 0
        while True:
            try:
                data = self.stream.read(chunk)
            except (gzip.BadGzipFile, zlib.error, EOFError) as e:
                raise CaptureError(base + len(pending), f"gzip data is corrupt or cut short ({e})") from None
            if not data:
                break
            if pending:
                data = pending + data
            batches, off = parser.parse(data, 0, base)
            if batches:
                yield batches
            pending = data[off:]
            base += off
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
            data = cap.stream.read(PEEK_BYTES)
            for _link, frames in parser.parse(data, 0)[0]:
                if frames:
                    return frames[0][1]
        finally:
            cap.close()
    except (OSError, CaptureError, EOFError, zlib.error, gzip.BadGzipFile):
        pass
    return float("inf")


def _natural(name: str) -> list[object]:
    """'cap.pcap2' before 'cap.pcap10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
