"""Writes records as JSON lines (one object per transaction) to a text stream."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

from analyzers.records import to_record
from analyzers.transactions import Transaction

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode


class TextSink(Protocol):
    """Where lines go: a text file, stdout, or a worker's pipe to its parent."""

    def write(self, s: str, /) -> object: ...

    def flush(self) -> None: ...


class OutputError(Exception):
    """Records could not be written (disk full, closed pipe): not a problem of the input."""


class JsonLinesWriter:
    def __init__(self, stream: TextSink) -> None:
        self.stream = stream
        self.written = 0

    def write(self, txs: Iterable[Transaction]) -> None:
        lines = [_encode(to_record(tx)) for tx in txs]
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
            except OSError as e:
                raise OutputError(e.strerror or str(e)) from e
            self.written += len(lines)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            raise OutputError(e.strerror or str(e)) from e
