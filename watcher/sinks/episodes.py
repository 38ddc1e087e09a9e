"""What an output logs about its trouble: once per episode, never once per record or per retry.

A failure: the first error; "still failing" every STILL_FAILING_SECONDS while it lasts, with what
is buffered and dropped; the recovery once a write succeeds again (a reconnect alone is not one: a
full disk opens fine and fails every write). A full buffer: when it fills; "still dropping" every
DROP_LOG_SECONDS while records keep being dropped; the count dropped once it has drained (or at
close). Each method returns the line due, or None; the sink logs it outside its lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# While an output keeps failing, or keeps dropping for a full buffer, a summary line this often: an
# operator sees that it lasts and what it costs, and the journal does not fill with a line a retry.
STILL_FAILING_SECONDS = 60.0
DROP_LOG_SECONDS = 60.0


class Episodes:
    """One output's failure and full-buffer episodes. Failures are the worker's; drops are counted
    under the sink's lock (the caller's thread drops, the worker sees the buffer drain)."""

    def __init__(self, who: str, capacity: int) -> None:
        self.who = who  # "jsonl output records"
        self.capacity = capacity
        self.failing_since: float | None = None
        self._next_still_failing = 0.0
        self._drops_since: float | None = None
        self._drops = self._reported = 0
        self._next_drop_report = 0.0

    # -- failures -------------------------------------------------------------------------------

    def failed(self, why: str, counts: Callable[[], dict[str, int]]) -> str | None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
            self._next_still_failing = now + STILL_FAILING_SECONDS
            return f"{self.who}: {why}; buffering and retrying with backoff"
        if now < self._next_still_failing:
            return None
        self._next_still_failing = now + STILL_FAILING_SECONDS
        st = counts()
        return (f"{self.who}: still failing after {now - self.failing_since:.0f} s ({why}): {st['buffered']:,} "
                f"records buffered, {st['dropped']:,} dropped so far")

    def recovered(self, text: str) -> str | None:
        """The end of a failure, if one was going on: "<who>: <text> after 3.2 s"."""
        if self.failing_since is None:
            return None
        line = f"{self.who}: {text} after {time.monotonic() - self.failing_since:.1f} s"
        self.failing_since = None
        return line

    # -- a full buffer --------------------------------------------------------------------------

    @property
    def dropping(self) -> bool:
        return self._drops_since is not None

    def dropped(self) -> str | None:
        """One record dropped for a full buffer."""
        now = time.monotonic()
        self._drops += 1
        if self._drops_since is None:
            self._drops_since = now
            self._reported = 1
            self._next_drop_report = now + DROP_LOG_SECONDS
            return f"{self.who}: buffer full ({self.capacity:,} records): dropping new records until it has room " \
                   "(counted)"
        if now < self._next_drop_report:
            return None
        n, self._reported, self._next_drop_report = self._drops - self._reported, self._drops, now + DROP_LOG_SECONDS
        return (f"{self.who}: still dropping: {n:,} records dropped in the last {DROP_LOG_SECONDS:.0f} s, "
                f"{self._drops:,} since its buffer filled {now - self._drops_since:.0f} s ago")

    def drained(self, dropped_in_all: int) -> str | None:
        """The buffer has drained (or the output closes): the episode's count, if there was one."""
        if self._drops_since is None:
            return None
        line = (f"{self.who}: dropped {self._drops:,} records while its buffer was full "
                f"({time.monotonic() - self._drops_since:.1f} s); {dropped_in_all:,} dropped in all")
        self._drops_since, self._drops = None, 0
        return line
