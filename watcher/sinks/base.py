"""The output framework: every sink owns a bounded buffer and one worker thread that does its I/O.

Why a thread and a buffer per sink: the pipeline must never wait for an output. `submit` only appends
to the sink's buffer, or drops the record and counts it when the buffer is full. The worker takes
batches and writes them; when the output fails it keeps the batch, reconnects with exponential
backoff and jitter and tries again, so a slow or dead output costs its own buffer and nothing else.

The counters account for every record, at every moment:
    submitted == written + dropped + buffered
`buffered` is the records waiting plus the batch being written, and never exceeds `buffer`;
`dropped` counts records refused by a full buffer, refused by the output, found lost after being
sent, or still buffered when `close` gave up. `errors` counts failed connects and writes and refused
records; `retries` the batches sent again after a failure; `reconnects` the recoveries from one.
"""

from __future__ import annotations

import collections
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, cast

if TYPE_CHECKING:
    from watcher.config.model import OutputConfig
    from watcher.metrics import MetricsModel

Record = dict[str, Any]
Log = Callable[[str, str], None]

# Files of records and of packets: they name clients and URLs (the packets hold credentials too):
# readable by the log group, not by everyone.
FILE_MODE = 0o640
# First retry soon (most failures are the other side restarting), then double up to the maximum.
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 30.0
# Records written in one go when the sink does not say: one syscall per batch, not per record.
DEFAULT_BATCH = 1000

COUNTERS = ("submitted", "written", "dropped", "retries", "errors", "reconnects", "buffered")

_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False, default=str)


def encode(record: Record) -> str:
    """One record as compact ASCII JSON (the encoding of `pcapwatch read`: text beyond ASCII, such as
    UTF-8 from the wire, as \\u escapes, README "Text"); never contains a newline."""
    return _encoder.encode(record)


def stderr_log(level: str, message: str) -> None:
    sys.stderr.write(f"pcapwatch: {level}: {message}\n")
    sys.stderr.flush()


class SendError(Exception):
    """The output failed after the first `done` records of the batch were written: retry the rest.
    `lost`: how many of those `done` are known lost after all (a refused UDP datagram)."""

    def __init__(self, done: int, cause: BaseException, lost: int = 0) -> None:
        super().__init__(str(cause))
        self.done = done
        self.cause = cause
        self.lost = lost


class Backoff:
    """Exponential backoff with jitter: waits in [d/2, d], d doubling from `initial` up to `maximum`.

    The jitter spreads the reconnects of many instances after a shared outage."""

    def __init__(self, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.rng = rng
        self.failures = 0

    def next(self) -> float:
        d = min(self.maximum, self.initial * 2 ** min(self.failures, 32))
        self.failures += 1
        return d / 2 + self.rng() * d / 2

    def reset(self) -> None:
        self.failures = 0


class Sink:
    """One configured output. Subclasses write batches in `_send` and open the output in `_connect`.

    Hooks, all called on the worker thread only (so a sink's connection needs no lock):
      _connect()        open the output; raise one of `retryable` to be retried with backoff
      _send(batch)      write the batch; return how many were written (the rest are rejected for
                        good: counted dropped and as an error); raise SendError(done, e) or one of
                        `retryable` to retry the rest after reconnecting
      _disconnect()     close the output (after a failure, on reopen and at close)
      _idle()           called every `idle_seconds` while there is nothing to write
    Any other exception from `_send` drops that batch (counted) rather than retrying it forever.
    """

    retryable: tuple[type[BaseException], ...] = (OSError,)
    idle_seconds: float | None = None
    kind = "output"

    def __init__(self, name: str, buffer: int, *, batch: int = DEFAULT_BATCH, backoff_max: float = BACKOFF_MAX,
                 log: Log = stderr_log) -> None:
        if buffer < 1 or batch < 1:
            raise ValueError("buffer and batch must be at least 1")
        self.name = name
        self.capacity = buffer
        self.batch = min(batch, buffer)
        self.log = log
        self.backoff = Backoff(BACKOFF_INITIAL, backoff_max)
        self._queue: collections.deque[Record] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the worker waits here for records
        self._drained = threading.Condition(self._lock)  # flush waits here for the buffer to empty
        self._inflight = 0
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._closing = False
        self._deadline = float("inf")
        self._abandoned = False
        self._reopen_wanted = False
        self._connected = False
        self._failing_since: float | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_output(cls, output: OutputConfig, log: Log, metrics: MetricsModel | None) -> Sink:
        """The sink of a configured output (`open_sink` calls this). An output's sink is built from its
        `*OutputConfig` (watcher/config/model.py) and the log; one that needs more of the service
        overrides this (the prometheus output serves the service's metrics model)."""
        build = cast(Callable[["OutputConfig", Log], Sink], cls)
        return build(output, log)

    # -- the caller's side: never blocks on I/O -------------------------------------------------

    def start(self) -> Self:
        """Start the worker (once); returns self so `Sink(...).start()` reads naturally."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: Record) -> None:
        """Queue one record (not to be changed afterwards); when the buffer is full drop it and count it."""
        with self._lock:
            c = self._counts
            c["submitted"] += 1
            if self._closing or len(self._queue) + self._inflight >= self.capacity:
                c["dropped"] += 1
                return
            self._queue.append(record)
            self._wake.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted is written or dropped, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._drained.wait(left)
            return True

    def reopen(self) -> None:
        """SIGHUP: the worker closes and opens the output again before its next write."""
        with self._lock:
            self._reopen_wanted = True
            self._wake.notify_all()

    def close(self, timeout: float) -> None:
        """Write what is buffered for at most `timeout` seconds, then drop the rest (counted) and stop."""
        with self._lock:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        with self._lock:
            if self._thread is None or self._thread.is_alive():
                # Stuck in I/O past its socket timeout, or never started: give its records up.
                self._abandoned = True
                self._counts["dropped"] += len(self._queue) + self._inflight
                self._queue.clear()
                self._inflight = 0
                self._drained.notify_all()

    def stats(self) -> dict[str, int]:
        with self._lock:
            s = dict(self._counts)
            s["buffered"] = len(self._queue) + self._inflight
            return s

    # -- the worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if not self._connected:  # early, so a wrong address is reported at start, not at the first record
                self._try_connect()
            while True:
                batch = self._take()
                if batch is None:
                    return
                with self._lock:
                    reopen, self._reopen_wanted = self._reopen_wanted, False
                if reopen:
                    self._close_output()
                if batch:
                    self._deliver(batch)
                elif not self._connected:
                    self._try_connect()
                elif self.idle_seconds is not None:
                    self._idle_safely()
        finally:
            self._close_output()

    def _try_connect(self) -> None:
        try:
            self._connect()
        except Exception as e:  # retryable or not, the worker must live on: back off and try again
            self._failed(e)
            return
        self._connected = True
        self._recovered()

    def _take(self) -> list[Record] | None:
        """The next batch; [] for an idle tick or a reopen; None to stop."""
        with self._lock:
            while not self._queue:
                if self._closing:
                    return None
                if self._reopen_wanted:
                    return []
                if not self._wake.wait(self.idle_seconds) and self.idle_seconds is not None:
                    return []
            if self._closing and time.monotonic() >= self._deadline:
                self._counts["dropped"] += len(self._queue)
                self._queue.clear()
                self._drained.notify_all()
                return None
            n = min(len(self._queue), self.batch)
            self._inflight = n
            return [self._queue.popleft() for _ in range(n)]

    def _deliver(self, batch: list[Record]) -> None:
        sent = False
        while batch:
            if self._out_of_time():
                self._account(0, len(batch))
                return
            if not self._connected:
                self._try_connect()  # on failure it has backed off already
                continue
            if sent:
                self._bump("retries")
            sent = True
            try:
                written = self._send(batch)
            except SendError as e:
                self._account(e.done, 0)
                self._lost_after_written(e.lost)
                batch = batch[e.done:]
                if e.done > e.lost:
                    self.backoff.reset()  # it was working: try again soon
                self._failed(e.cause)
                continue
            except self.retryable as e:
                self._failed(e)
                continue
            except Exception as e:  # a bug or a record the output refuses: drop this batch, keep going
                self._bump("errors")
                self.log("error", f"{self.kind} {self.name}: dropped {len(batch)} records: "
                                  f"{type(e).__name__}: {e}")
                self._account(0, len(batch))
                return
            self._account(written, len(batch) - written)
            if written < len(batch):
                self._bump("errors", len(batch) - written)
            self.backoff.reset()
            return

    def _failed(self, e: BaseException) -> None:
        self._bump("errors")
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self.log("warning", f"{self.kind} {self.name}: {describe(e)}; buffering and retrying with backoff")
        self._close_output()
        self._sleep(self.backoff.next())

    def _recovered(self) -> None:
        if self._failing_since is not None:
            self._bump("reconnects")
            self.log("info", f"{self.kind} {self.name}: reconnected after "
                             f"{time.monotonic() - self._failing_since:.1f} s")
            self._failing_since = None

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake when asked to close (and never sleep past the close deadline)."""
        with self._lock:
            end = time.monotonic() + seconds
            while not self._out_of_time_locked():
                left = min(end, self._deadline) - time.monotonic()  # close() may move the deadline in
                if left <= 0:
                    return
                self._wake.wait(left)

    def _out_of_time(self) -> bool:
        with self._lock:
            return self._out_of_time_locked()

    def _out_of_time_locked(self) -> bool:
        return self._abandoned or (self._closing and time.monotonic() >= self._deadline)

    def _account(self, written: int, dropped: int) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._counts["written"] += written
            self._counts["dropped"] += dropped
            self._inflight -= written + dropped
            self._drained.notify_all()

    def _lost_after_written(self, n: int) -> None:
        """Records counted written turned out lost (an output that reports failures late): move them to
        dropped, and count each as an error."""
        if n:
            with self._lock:
                if not self._abandoned:
                    self._counts["written"] -= n
                    self._counts["dropped"] += n
                    self._counts["errors"] += n

    def _bump(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counts[counter] += n

    def _close_output(self) -> None:
        if self._connected:
            self._connected = False
            try:
                self._disconnect()
            except Exception as e:  # closing a broken connection may fail too; nothing to do about it
                self.log("debug", f"{self.kind} {self.name}: closing: {describe(e)}")

    def _idle_safely(self) -> None:
        try:
            self._idle()
        except Exception as e:
            self._failed(e)

    # -- hooks ----------------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Open the output."""

    def _send(self, batch: list[Record]) -> int:
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Close the output."""

    def _idle(self) -> None:
        """Housekeeping while there is nothing to write."""


def describe(e: BaseException) -> str:
    """An exception as one line for a log: the OS's words when there are some."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return (str(e) or type(e).__name__).rstrip(".")
