"""The output framework: every sink owns a bounded buffer and one worker thread that does its I/O.

Why a thread and a buffer per sink: the pipeline must never wait for an output. `submit` only appends
to the sink's buffer, or, when the buffer is full, drops the new record and counts it (drop-newest:
what is buffered is older and already on its way; dropping it instead would punch holes in the
middle of what the output wrote). The worker takes batches and writes them; when the output fails
it keeps the batch, reconnects with exponential backoff and jitter and tries again, so a slow or
dead output costs its own buffer and nothing else.

A `required` output is the exception: it never drops for a full buffer. Its buffer is a mark the
service looks at before each batch of frames (watcher/run/service.py waits while a required output
is full, so one batch's records may pass it), and the checkpoint only claims what it acknowledged:
`acked` counts its records, in order, that were written or refused for good (never those given up
at close).

Failures and drops are logged once per episode, never per record or per retry (episodes.py).

The counters account for every record, at every moment:
    submitted == written + dropped + buffered
`buffered` is the records waiting plus the batch being written, and never exceeds `buffer`;
`dropped` counts records refused by a full buffer, refused by the output, found lost after being
sent, or still buffered when `close` gave up. `errors` counts failed connects and writes and refused
records; `retries` the batches sent again after a failure; `reconnects` the recoveries from one.
"""

from __future__ import annotations

import collections
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, cast

from analyzers import Strings
from watcher.sinks.episodes import Episodes

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
    recovered_text = "reconnected"  # the recovery's log line: "<kind> <name>: reconnected after 3.2 s"

    def __init__(self, name: str, buffer: int, *, batch: int = DEFAULT_BATCH, backoff_max: float = BACKOFF_MAX,
                 log: Log = stderr_log) -> None:
        if buffer < 1 or batch < 1:
            raise ValueError("buffer and batch must be at least 1")
        self.name = name
        # How records are encoded (`encode`): the configuration's `strings`, set by the service
        # (watcher/run/delivery.py) when it opens the outputs and at a reload.
        self.strings = Strings.UTF8
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
        self._episodes = Episodes(f"{self.kind} {name}", buffer)
        self._acked = 0  # records, in order, written or refused for good
        self._given_up = 0  # records dropped at close, not written (reported once, by close)
        self.required = False  # never drop for a full buffer (see the module's docstring)
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
        """Queue one record (not to be changed afterwards); when the buffer is full drop it and count
        it (a required output queues it anyway: the service stops before the next batch)."""
        with self._lock:
            c = self._counts
            c["submitted"] += 1
            if self._closing:
                c["dropped"] += 1
                return
            if self.required or len(self._queue) + self._inflight < self.capacity:
                self._queue.append(record)
                self._wake.notify()
                return
            c["dropped"] += 1
            note = self._episodes.dropped()
        if note:
            self.log("warning", note)

    def full(self) -> bool:
        """The buffer holds `buffer` records or more (a required output's can: see submit)."""
        with self._lock:
            return len(self._queue) + self._inflight >= self.capacity

    def submitted(self) -> int:
        with self._lock:
            return self._counts["submitted"]

    def acked(self) -> int:
        """How many of the records submitted, counted from the first, are written or refused for good
        (a FIFO: records are written in the order they were submitted)."""
        with self._lock:
            return self._acked

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
            self.backoff.reset()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        with self._lock:
            if self._thread is None or self._thread.is_alive():
                # Stuck in I/O past its socket timeout, or never started: give its records up.
                self._abandoned = True
                self._counts["dropped"] += len(self._queue) + self._inflight
                self._given_up += len(self._queue) + self._inflight
                self._queue.clear()
                self._inflight = 0
                self._drained.notify_all()
            given_up, self._given_up = self._given_up, 0
            summary = self._episodes.drained(self._counts["dropped"], closing=True)
        if summary:
            self.log("warning", summary)
        if given_up:
            self.log("error", f"{self.kind} {self.name}: {given_up:,} records not written when it closed (after "
                              f"{timeout:.0f} s): dropped, counted")

    def stats(self) -> dict[str, int]:
        """The counters; a required output's also `blocking`: 1 while its buffer is full (the
        service's analysis waits for it)."""
        with self._lock:
            s = dict(self._counts)
            s["buffered"] = len(self._queue) + self._inflight
            if self.required:
                s["blocking"] = int(s["buffered"] >= self.capacity)
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

    def _try_connect(self, recovers: bool = True) -> None:
        """Open the output; `recovers`: with nothing to write, an open output ends a failure (with a
        batch to write, only a successful write does)."""
        try:
            self._connect()
        except Exception as e:  # retryable or not, the worker must live on: back off and try again
            self._failed(e)
            return
        self._connected = True
        if recovers:
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
                self._given_up += len(self._queue)
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
                self._account(0, len(batch), settled=False)
                return
            if not self._connected:
                self._try_connect(recovers=False)  # on failure it has backed off already
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
            self.backoff.reset()
            self._recovered()
            if written < len(batch):
                self._bump("errors", len(batch) - written)
            self._account(written, len(batch) - written)
            return

    def _failed(self, e: BaseException) -> None:
        self._bump("errors")
        line = self._episodes.failed(describe(e), self.stats)
        if line:
            self.log("warning", line)
        self._close_output()
        self._sleep(self.backoff.next())

    def _recovered(self) -> None:
        line = self._episodes.recovered(self.recovered_text)
        if line:
            self._bump("reconnects")
            self.log("info", line)

    def _sleep(self, seconds: float) -> None:
        """Back off, but never past the close deadline; when close() comes during the wait, try
        again at once (close resets the backoff: the last seconds get quick retries, not one
        long wait)."""
        with self._lock:
            end = time.monotonic() + seconds
            closing = self._closing
            while not self._out_of_time_locked():
                if self._closing and not closing:
                    return
                left = min(end, self._deadline) - time.monotonic()  # close() may move the deadline in
                if left <= 0:
                    return
                self._wake.wait(left)

    def _out_of_time(self) -> bool:
        with self._lock:
            return self._out_of_time_locked()

    def _out_of_time_locked(self) -> bool:
        return self._abandoned or (self._closing and time.monotonic() >= self._deadline)

    def _account(self, written: int, dropped: int, settled: bool = True) -> None:
        """`written` records written and `dropped` dropped, of the batch in flight; `settled`: the
        dropped ones were refused for good (not given up at close), so they count as acknowledged."""
        summary = None
        with self._lock:
            if self._abandoned:
                return
            self._counts["written"] += written
            self._counts["dropped"] += dropped
            self._acked += written + (dropped if settled else 0)
            if not settled:
                self._given_up += dropped
            self._inflight -= written + dropped
            if self._episodes.dropping and not self._queue and not self._inflight:
                summary = self._episodes.drained(self._counts["dropped"])
            self._drained.notify_all()
        if summary:
            self.log("warning", summary)

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
