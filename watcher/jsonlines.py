"""Writes records as JSON lines (one object per transaction) to a text stream."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from analyzers.records import to_record
from analyzers.transactions import Transaction

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode


class JsonLinesWriter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.written = 0

    def write(self, txs: Iterable[Transaction]) -> None:
        lines = [_encode(to_record(tx)) for tx in txs]
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.written += len(lines)

    def flush(self) -> None:
        self.stream.flush()
