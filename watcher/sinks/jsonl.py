"""JSON lines to standard output or a file, in the flat record of `pcapwatch read` or in ECS names.

A file is created with mode 0640 and appended to; on SIGHUP the caller calls `reopen()` and the
worker opens the path again (logrotate moved the file). Writes go straight to the descriptor, one
`write` per batch, so a record counted as written is in the kernel, not in a Python buffer. Under
systemd stdout goes to the journal, where Filebeat, Vector or promtail pick it up.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from watcher.config.model import JsonlOutputConfig
from watcher.sinks.base import FILE_MODE, Log, Record, SendError, Sink, encode, stderr_log, utf8
from watcher.sinks.ecs import to_ecs

FORMATS = ("flat", "ecs")


class JsonlSink(Sink):
    """Output `type: jsonl`; `config.path` None is standard output."""

    kind = "jsonl output"

    def __init__(self, config: JsonlOutputConfig, log: Log = stderr_log) -> None:
        if config.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {config.format!r}")
        super().__init__(config.name, config.buffer, log=log)
        self.path = config.path
        self.format = config.format
        self._fd = -1
        self._stream: TextIO | None = None
        if self.path is not None:  # open now: an unwritable path is the caller's error at start-up
            self._connect()
            self._connected = True

    def _connect(self) -> None:
        if self.path is None:
            self._stream = sys.stdout
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)

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
            return len(batch)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as e:
            # Whole lines written before the failure count as written; the rest is retried.
            whole, total = 0, 0
            for line in lines:
                total += len(line)
                if total > done:
                    break
                whole += 1
            raise SendError(whole, e) from e
        return len(batch)
