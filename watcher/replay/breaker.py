"""A circuit breaker: after `threshold` failures in a row the target is taken as down and replay
pauses; one probe is let through after a delay that doubles on every failed probe (up to a cap);
a success closes it. Opening and closing are logged once each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum

# Five connection failures in a row is a target down, not a blip a retry would hide.
DEFAULT_THRESHOLD = 5
DEFAULT_PROBE_DELAY = 0.5  # seconds before the first probe
MAX_PROBE_DELAY = 30.0  # a target down for long is still probed twice a minute


class BreakerState(Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    def __init__(self, log: Callable[[str], None], clock: Callable[[], float], *,
                 threshold: int = DEFAULT_THRESHOLD, probe_delay: float = DEFAULT_PROBE_DELAY,
                 max_probe_delay: float = MAX_PROBE_DELAY, name: str = "target") -> None:
        self.log, self.clock = log, clock
        self.threshold, self.first_delay, self.max_delay = threshold, probe_delay, max_probe_delay
        self.name = name
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.delay = probe_delay
        self.next_probe = 0.0
        self.opened = 0  # times it opened
        self.lock = threading.Lock()

    def allow(self) -> bool:
        """May a request be sent now? While open, only one probe once its time has come."""
        with self.lock:
            if self.state is BreakerState.CLOSED:
                return True
            if self.state is BreakerState.OPEN and self.clock() >= self.next_probe:
                self.state = BreakerState.HALF_OPEN
                return True
            return False

    def success(self) -> None:
        with self.lock:
            self.failures = 0
            if self.state is not BreakerState.CLOSED:
                self.state = BreakerState.CLOSED
                self.delay = self.first_delay
                self.log(f"{self.name} answers again; replay resumes")

    def failure(self) -> None:
        with self.lock:
            if self.state is BreakerState.HALF_OPEN:
                self.delay = min(self.delay * 2, self.max_delay)
                self.state = BreakerState.OPEN
                self.next_probe = self.clock() + self.delay
                return
            self.failures += 1
            if self.state is BreakerState.CLOSED and self.failures >= self.threshold:
                self.state = BreakerState.OPEN
                self.opened += 1
                self.next_probe = self.clock() + self.delay
                self.log(f"{self.name} is down ({self.failures} connection failures in a row); "
                         f"replay paused, probing it with backoff")
