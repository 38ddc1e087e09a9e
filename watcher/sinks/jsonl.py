"""JSON lines to standard output or a file, in the flat record of `pcapwatch read` or in ECS names.

A file is created with mode 0640 and appended to; on SIGHUP the caller calls `reopen()` and the
worker opens the path again (logrotate moved the file). Writes go straight to the descriptor, one
`write` per batch, so a record counted as written is in the kernel, not in a Python buffer. Under
systemd stdout goes to the journal, where Filebeat, Vector or promtail pick it up.

Every line of the file is a whole record. A write that fails part way (the disk is full) leaves
the file ending in half a record: the whole lines before it count as written (`written`, and their
bytes in `written_bytes`), and the file is cut back to its last newline each time it is opened,
which the worker does before it retries. The same cut at start-up repairs a file a crashed run left
that way (logged, with the bytes cut).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from typing import TextIO

from watcher.config.model import JsonlOutputConfig
from watcher.sinks.base import FILE_MODE, Log, Record, SendError, Sink, stderr_log
from watcher.sinks.ecs import to_ecs
from watcher.sinks.jsontext import encode, utf8

FORMATS = ("flat", "ecs")
# The tail of the file read at a time when looking for its last newline (a few records).
TAIL_CHUNK = 65_536


class JsonlSink(Sink):
    """Output `type: jsonl`; `config.path` None is standard output."""

    kind = "jsonl output"
    recovered_text = "writing again"

    def __init__(self, config: JsonlOutputConfig, log: Log = stderr_log) -> None:
        if config.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {config.format!r}")
        super().__init__(config.name, config.buffer, log=log)
        self.path = config.path
        self.format = config.format
        self._fd = -1
        self._stream: TextIO | None = None
        self._counts["written_bytes"] = 0  # bytes of the whole lines written
        self._opened = False  # a cut at the first open repairs an earlier run's file: logged
        if self.path is not None:  # open now: an unwritable path is the caller's error at start-up
            self._connect()
            self._connected = True

    def _connect(self) -> None:
        if self.path is None:
            self._stream = sys.stdout
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:  # read access only to find the last newline
            fd, readable = os.open(self.path, os.O_RDWR | flags, FILE_MODE), True
        except PermissionError:
            fd, readable = os.open(self.path, os.O_WRONLY | flags, FILE_MODE), False
        try:
            cut = cut_partial_line(fd) if readable else 0
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        if cut and not self._opened:
            self.log("warning", f"{self.kind} {self.name}: {self.path} ended in a partial line (an earlier write "
                                f"failed): cut {cut:,} bytes back to its last whole record")
        self._opened = True

    @staticmethod
    def _write_stream(stream: TextIO, data: bytes) -> None:
        """UTF-8 bytes to standard output whatever its encoding (the locale's), through its binary
        buffer; a stream without one (a test's) takes the text."""
        raw = getattr(stream, "buffer", None)
        if raw is None:
            stream.write(data.decode("utf-8"))
            stream.flush()
        else:
            stream.flush()  # what was written as text before goes first
            raw.write(data)
            raw.flush()

    def _disconnect(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        elif self._stream is not None:
            self._stream.flush()

    def _send(self, batch: list[Record]) -> int:
        convert = to_ecs if self.format == "ecs" else None
        strings = self.strings
        lines = [utf8((encode(convert(r), strings) if convert else encode(r, strings)) + "\n") for r in batch]
        data = b"".join(lines)
        if self._fd < 0:
            assert self._stream is not None
            self._write_stream(self._stream, data)
            self._bump("written_bytes", len(data))
            return len(batch)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as e:
            # Whole lines written before the failure count as written; the rest is retried. The half
            # line is cut off now (the file stays whole lines however long the failure lasts) and
            # again, if that failed, when the worker reopens the file to retry.
            whole, total = 0, 0
            for line in lines:
                if total + len(line) > done:
                    break
                total += len(line)
                whole += 1
            self._bump("written_bytes", total)
            with contextlib.suppress(OSError):
                cut_partial_line(self._fd)
            raise SendError(whole, e) from e
        self._bump("written_bytes", len(data))
        return len(batch)


def cut_partial_line(fd: int) -> int:
    """Cut a regular file open on `fd` back to just after its last newline (to nothing if it has
    none); the bytes cut. Devices and pipes are left alone."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return 0
    end = st.st_size
    keep = 0
    while end > 0:
        start = max(0, end - TAIL_CHUNK)
        i = os.pread(fd, end - start, start).rfind(b"\n")
        if i >= 0:
            keep = start + i + 1
            break
        end = start
    if keep < st.st_size:
        os.ftruncate(fd, keep)
    return st.st_size - keep
