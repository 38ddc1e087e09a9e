"""Run a pcapwatch command with a synthetic bug: the analysis of a packet whose TCP payload starts
with $PCAPWATCH_TEST_FAIL_ON raises (KeyError), whatever the analyzers' real bugs are.

Used as a `prefix` of liveenv's commands: `python faulty.py <the pcapwatch command line...>`; the
words before the verb (`run`, `read`) are the command that would start pcapwatch, and are dropped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from analyzers.http.parser import MessageParser
from watcher.cli import main

VERBS = ("run", "read")


def failing_data(trigger: bytes, error: Callable[[], Exception] = lambda: KeyError("synthetic failure"),
                 ) -> Callable[[MessageParser, bytes, float], None]:
    """`MessageParser.data` as it is, except that a chunk starting with `trigger` raises `error()`
    (for monkeypatch.setattr, or installed for good below)."""
    real = MessageParser.data

    def data(self: MessageParser, chunk: bytes, ts: float) -> None:
        if chunk.startswith(trigger):
            raise error()
        real(self, chunk, ts)

    return data


if __name__ == "__main__":
    MessageParser.data = failing_data(os.environ["PCAPWATCH_TEST_FAIL_ON"].encode())  # type: ignore[method-assign, assignment]
    args = sys.argv[1:]
    while args and args[0] not in VERBS:
        args = args[1:]
    sys.exit(main(args))
