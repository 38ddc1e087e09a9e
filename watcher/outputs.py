"""The service's outputs: where records go. For now JSON lines to stdout or a file.

A file output is reopened on SIGHUP (logrotate moves the file, then signals) and created with
mode 0640. Under systemd, stdout goes to the journal, where Filebeat, Vector or promtail pick it
up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO


class JsonlOutput:
    """One JSON record per line to a file, or to stdout when `path` is None."""

    def __init__(self, name: str, path: Path | None) -> None:
        self.name = name
        self.path = path
        self.written = 0
        self.errors = 0
        self.stream: TextIO = self._open()

    def _open(self) -> TextIO:
        if self.path is None:
            return sys.stdout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return os.fdopen(fd, "a", encoding="ascii", buffering=1 << 16)

    def write(self, lines: list[str]) -> None:
        """Write records; an OSError propagates (the service decides what a failing output means)."""
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.written += len(lines)

    def flush(self) -> None:
        self.stream.flush()

    def reopen(self) -> None:
        """After logrotate: close and open the path again (stdout stays)."""
        if self.path is None:
            return
        try:
            self.stream.close()
        finally:
            self.stream = self._open()

    def close(self) -> None:
        if self.path is not None:
            self.stream.close()
        else:
            self.stream.flush()
