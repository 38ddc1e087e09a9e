"""What an output logs about its trouble: once per episode, never once per record or per retry.

A failure: the first error; "still failing" every STILL_FAILING_SECONDS while it lasts, with what
is buffered and dropped; the recovery once a write succeeds again (a reconnect alone is not one: a
full disk opens fine and fails every write). A full buffer: when it fills; "still dropping" every
DROP_LOG_SECONDS while records keep being dropped; the count dropped once it has drained (or at
close); a buffer that fills again within DROP_LOG_SECONDS of that is counted silently into the
next such line. Each method returns the line due, or None; the sink logs it outside its lock.
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
        self._episode_since: float | None = None  # the buffer is full since then
        self._episode_drops = self._episode_reported = 0
        self._next_drop_report = 0.0
        self._first_since: float | None = None  # the first episode not yet in a "dropped N" line
        self._unsummarised = self._episodes = 0  # drops and episodes not yet in one
        self._announced = False  # a "buffer full" line went out for them
        self._quiet_until = 0.0  # no new "buffer full" line before then

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
        return self._episode_since is not None

    def dropped(self) -> str | None:
        """One record dropped for a full buffer."""
        now = time.monotonic()
        self._unsummarised += 1
        if self._episode_since is None:
            self._episode_since = now
            self._episode_drops = self._episode_reported = 0
            self._next_drop_report = now + DROP_LOG_SECONDS
            self._episodes += 1
            if self._first_since is None:
                self._first_since = now
            if not self._announced and now >= self._quiet_until:
                self._announced = True
                self._episode_drops = self._episode_reported = 1
                return f"{self.who}: buffer full ({self.capacity:,} records): dropping new records until it has " \
                       "room (counted)"
        self._episode_drops += 1
        if now < self._next_drop_report:
            return None
        n, self._episode_reported = self._episode_drops - self._episode_reported, self._episode_drops
        self._next_drop_report = now + DROP_LOG_SECONDS
        return (f"{self.who}: still dropping: {n:,} records dropped in the last {DROP_LOG_SECONDS:.0f} s, "
                f"{self._episode_drops:,} since its buffer filled {now - self._episode_since:.0f} s ago")

    def drained(self, dropped_in_all: int, closing: bool = False) -> str | None:
        """The buffer has drained (or, `closing`, the output closes): the count dropped since the
        last such line. Episodes that begin within DROP_LOG_SECONDS of that line are not announced
        and are counted in the next line (at the latest when the output closes)."""
        now = time.monotonic()
        since, self._episode_since = self._episode_since, None
        if not self._unsummarised or (since is None and not closing):
            return None
        if not (closing or self._announced or now >= self._quiet_until):
            return None
        first = self._first_since if self._first_since is not None else now
        when = f"{now - first:.1f} s" if self._episodes <= 1 else f"{self._episodes} times in {now - first:.0f} s"
        line = (f"{self.who}: dropped {self._unsummarised:,} records while its buffer was full ({when}); "
                f"{dropped_in_all:,} dropped in all")
        self._unsummarised = self._episodes = 0
        self._first_since = None
        self._announced = False
        self._quiet_until = now + DROP_LOG_SECONDS
        return line
