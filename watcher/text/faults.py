"""The lines about packets whose analysis raised (analyzers.faults): each says the file, the offset
and the error, and that only that packet's connection was lost; rate-limited.

A bug met on some input tends to repeat on every packet like it: a line for each would bury the
rest of the log (and a terminal). At most MAX_LINES lines are said per WINDOW_SECONDS; past that
the errors are counted, and the count is said once the window is over (or at the end).
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Ten lines a minute say where and what went wrong; the counters (status, metrics, --stats) say
# how often.
MAX_LINES = 10
WINDOW_SECONDS = 60.0


def fault_line(where: str, offset: int, error: str) -> str:
    """One line: what went wrong, where, what it cost, what to do."""
    return (f"{where} offset {offset}: analysing this packet failed ({error}); its connection was closed "
            "(reason internal_error) and the analysis goes on; this is a bug in pcapwatch: please report "
            "it with this packet")


class FaultLines:
    """Says the lines through `say`, at most MAX_LINES per WINDOW_SECONDS (of `clock`)."""

    def __init__(self, say: Callable[[str], object], clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.clock = clock
        self.window_end = 0.0
        self.said = 0  # in the current window
        self.held = 0  # not said since the last summary

    def report(self, where: str, offset: int, error: str) -> None:
        now = self.clock()
        if now >= self.window_end:
            self.flush()
            self.window_end, self.said = now + WINDOW_SECONDS, 0
        if self.said < MAX_LINES:
            self.said += 1
            self.say(fault_line(where, offset, error))
        else:
            self.held += 1

    def tick(self) -> None:
        """Say the count of a window that is over, without waiting for the next error."""
        if self.held and self.clock() >= self.window_end:
            self.flush()

    def flush(self) -> None:
        """Say how many were not said (if any)."""
        if self.held:
            self.say(f"{self.held:,} more packets failed to be analysed (at most {MAX_LINES} lines every "
                     f"{WINDOW_SECONDS:.0f} s are written); each cost its connection only")
            self.held = 0
