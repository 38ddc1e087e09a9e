"""The replayer: capture processing offers transactions; a bounded queue hands them to sender
threads (the concurrency limit) that wait for the rate limit, send through the client and write
one record per replayed request. Every transaction offered is counted once: skipped (by reason),
failed (by reason) or replayed."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analyzers import RequestHead, RouteTemplater, Transaction
from watcher.replay.breaker import Breaker, BreakerState
from watcher.replay.client import Answer, Client
from watcher.replay.compare import CompareSpec, Original, compare, original
from watcher.replay.limiter import DEFAULT_QUEUE, BoundedQueue, Rate
from watcher.replay.policy import Policy, Request, SkipReason, Target, build_request, skip_reason
from watcher.replay.summary import Summary

# Shadow latency / original latency: from twice as fast to ten times slower.
RATIO_BUCKETS: tuple[float, ...] = (0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class ReplayCounters:
    offered: int = 0
    replayed: int = 0
    mismatched: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    mismatches: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, field)
    ratio_counts: list[int] = field(default_factory=lambda: [0] * (len(RATIO_BUCKETS) + 1))  # by bucket
    ratio_sum: float = 0.0


@dataclass(frozen=True, slots=True)
class Job:
    original: Original  # not the transaction: a queued job holds no response body
    request: Request
    record: dict[str, Any]
    route: str


class Replayer:
    def __init__(self, target: Target, policy: Policy, spec: CompareSpec, emit: Callable[[dict[str, Any]], None],
                 log: Callable[[str], None], *, concurrency: int = 1, rate: float | None = None,
                 queue_size: int = DEFAULT_QUEUE, block: bool = False, connect_timeout: float = 2.0,
                 read_timeout: float = 10.0, probe_delay: float = 0.5, max_retry_delay: float = 2.0) -> None:
        self.target, self.policy, self.spec = target, policy, spec
        self.emit, self.block = emit, block
        self.counters = ReplayCounters()
        self.summary = Summary()
        self.routes = RouteTemplater()
        self.breaker = Breaker(log, time.monotonic, probe_delay=probe_delay, name=f"replay target {target.url}")
        self.client = Client(target, self.breaker, size=concurrency, connect_timeout=connect_timeout,
                             read_timeout=read_timeout, max_retry_delay=max_retry_delay)
        self.rate = Rate(rate)
        self.queue: BoundedQueue[Job] = BoundedQueue(queue_size)
        self.lock = threading.Lock()
        self.senders = [threading.Thread(target=self._sender, name=f"replay-{i}", daemon=True)
                        for i in range(concurrency)]
        for t in self.senders:
            t.start()

    def offer(self, tx: Transaction, event_id: str, record: dict[str, Any]) -> str | None:
        """Take one transaction from capture processing; returns the skip reason, if skipped. Never
        blocks unless the replayer was made with `block` (then it waits for room in the queue)."""
        with self.lock:
            self.counters.offered += 1
        reason = skip_reason(tx, self.policy)
        if reason is None:
            req = build_request(tx, event_id, self.policy, self.target)
            head = tx.request.head if tx.request is not None else None
            method = head.method if isinstance(head, RequestHead) else "?"
            route = f"{method} {self.routes.route(req.target[len(self.target.prefix):])}"
            if not self.block and self.queue.full():  # before hashing the original body: not for nothing
                self.queue.dropped += 1
                reason = SkipReason.QUEUE_FULL
            elif not self.queue.offer(Job(original(tx, self.spec), req, record, route), self.block):
                reason = SkipReason.QUEUE_FULL
        if reason is not None:
            with self.lock:
                self.counters.skipped[reason] += 1
        return reason

    def _sender(self) -> None:
        while True:
            job = self.queue.take()
            if job is None:
                return
            self.rate.acquire()
            result = self.client.send(job.request)
            record = dict(job.record)
            if isinstance(result, Answer):
                replay = compare(job.original, result, self.spec)
                replay["target"] = self.target.url
                record["replay"] = replay
                orig = job.original.latency
                with self.lock:
                    self.counters.replayed += 1
                    self.summary.answered(job.route, replay)
                    if not replay["matched"]:
                        self.counters.mismatched += 1
                    for name, ok in replay["match"].items():
                        if ok is False:
                            self.counters.mismatches[(job.route, name)] += 1
                    if orig:
                        ratio = result.latency / orig
                        self.counters.ratio_counts[bisect.bisect_left(RATIO_BUCKETS, ratio)] += 1
                        self.counters.ratio_sum += ratio
            else:
                record["replay"] = {"target": self.target.url, "failed": result.reason, "attempts": result.attempts,
                                    "matched": False}
                with self.lock:
                    self.counters.failed[result.reason] += 1
                    self.summary.failed(job.route, result.reason)
            with self.lock:
                self.emit(record)

    def queue_depth(self) -> int:
        return self.queue.depth()

    def breaker_open(self) -> bool:
        return self.breaker.state is not BreakerState.CLOSED

    def close(self, drain: bool = True) -> None:
        """Send what is queued (`drain`), or let it go, counted as skipped "shutdown" (the service
        stopping must not wait for a slow target); then stop the senders."""
        if not drain:
            while self.queue.take(timeout=0) is not None:
                with self.lock:
                    self.counters.skipped[SkipReason.SHUTDOWN] += 1
        self.queue.close(len(self.senders))
        for t in self.senders:
            t.join()
        self.client.close()

    def all_matched(self) -> bool:
        c = self.counters
        return not c.mismatched and not sum(c.failed.values())
