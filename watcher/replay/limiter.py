"""How much is replayed: a request rate (a token bucket without burst, so requests are evenly
spaced) and a bounded queue between capture processing and the senders, whose overflow is counted
and never blocks the producer unless asked to (the `replay` verb waits instead of dropping)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Enough to absorb a burst of a few hundred requests while the senders catch up; a request waiting
# longer than that is stale for a comparison anyway.
DEFAULT_QUEUE = 1000


class Rate:
    """At most `per_second` grants per second, evenly spaced; None: unlimited."""

    def __init__(self, per_second: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock, self.sleep = clock, sleep
        self.next = 0.0
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.clock()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            self.sleep(at - now)


class BoundedQueue(Generic[T]):
    """A queue of at most `size` items; `offer` drops (and counts) what does not fit."""

    def __init__(self, size: int = DEFAULT_QUEUE) -> None:
        self.q: queue.Queue[T | None] = queue.Queue(size)
        self.dropped = 0

    def offer(self, item: T, block: bool = False) -> bool:
        try:
            self.q.put(item, block=block)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def take(self, timeout: float | None = None) -> T | None:
        """The next item; None at the end (after `close`) or on timeout."""
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self, senders: int) -> None:
        for _ in range(senders):
            self.q.put(None)

    def full(self) -> bool:
        return self.q.full()

    def depth(self) -> int:
        return self.q.qsize()
