"""Reading one capture generation incrementally, while tcpdump may still be writing it.

Only complete records come out (the parser keeps a partial record until the rest arrives). A
plain file is read with `pread` from a resume offset; before each read its first bytes are
compared with the generation's, because tcpdump's ring rewrites a file in place and an open file
descriptor would otherwise read the new content as if it continued the old.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from watcher.capture.pcapfile import PCAP_HEADER_LEN, CaptureError, CaptureParser, Frame
from watcher.capture.sources import DEFAULT_GUNZIP, Capture, GunzipLimits
from watcher.capture.spool import FINGERPRINT_BYTES, Generation

# One read: large enough to amortise, small enough that batches flow steadily while tailing.
READ_BYTES = 1 << 20

Batch = tuple[int, list[Frame]]  # (linktype, frames)


class Rewritten(Exception):
    """The file under an open generation was truncated or rewritten by tcpdump's ring."""


class GenerationReader:
    """Yields frame batches of one generation from `start` (a record boundary, content offset)."""

    def __init__(self, gen: Generation, start: int = 0, gunzip: GunzipLimits = DEFAULT_GUNZIP) -> None:
        self.gen = gen
        self.gunzip = gunzip
        self.parser = CaptureParser()
        self.offset = start  # content offset of the first byte not yet parsed
        self.pending = b""  # bytes of a record not complete yet
        self.fd: int | None = None
        self.eof_partial = 0
        self.last_ts = 0.0
        if not gen.compressed:
            self.fd = os.open(gen.path, os.O_RDONLY | os.O_CLOEXEC)
            if start:
                self._prime(start)

    def _prime(self, start: int) -> None:
        """Resuming mid-file: the parser needs the file's header (pcap) or its interface
        descriptions (pcapng) first."""
        assert self.fd is not None
        head = os.pread(self.fd, PCAP_HEADER_LEN, 0)
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            self.offset = 0  # pcapng: re-read from the start, frames before `start` are dropped
            self.skip_until = start
            return
        self.parser.parse(head, 0, 0)
        self.skip_until = 0

    skip_until = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def intact(self) -> bool:
        """Whether the open file still holds this generation (not rewritten under us)."""
        if self.fd is None:
            return True
        return os.pread(self.fd, FINGERPRINT_BYTES, 0) == self.gen.head[:FINGERPRINT_BYTES]

    def size(self) -> int:
        if self.fd is None:
            return self.gen.size
        return os.fstat(self.fd).st_size

    def read(self) -> Iterator[Batch]:
        """Batches of what is available now; stops at the current end of the file."""
        if self.gen.compressed:
            yield from self._read_compressed()
            return
        assert self.fd is not None
        while True:
            if not self.intact():
                raise Rewritten(self.gen.path)
            data = os.pread(self.fd, READ_BYTES, self.offset + len(self.pending))
            if not data:
                yield from self._parse(b"")  # a problem found after good records surfaces now
                self.eof_partial = len(self.pending)
                return
            yield from self._parse(data)

    def _parse(self, data: bytes) -> Iterator[Batch]:
        buf = self.pending + data if self.pending else data
        batches, used = self.parser.parse(buf, 0, self.offset)
        self.pending = buf[used:]
        self.offset += used
        for link, frames in batches:
            if self.skip_until:
                frames = [f for f in frames if f[0] >= self.skip_until]
            if frames:
                self.last_ts = frames[-1][1]
                yield link, frames

    def _read_compressed(self) -> Iterator[Batch]:
        """A .gz is read whole once gzip has finished it; frames before the resume offset dropped."""
        cap = Capture(self.gen.path, self.gunzip)
        start, self.offset, self.skip_until = self.offset, 0, self.offset
        try:
            for chunk in cap.chunks(READ_BYTES):
                yield from self._parse(chunk)
        finally:
            cap.close()
        self.skip_until = 0
        self.eof_partial = len(self.pending)
        if self.offset < start:
            raise CaptureError(self.offset, "the compressed copy is shorter than what was already read")
