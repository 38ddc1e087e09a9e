"""The replay client in the service: one replayer per rule's replay action, the request bodies the
pipeline must keep for them, their records handed back to delivery (on the service's thread),
and their metric families."""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from analyzers import BodyKeep, Replay, Transaction
from watcher.health import Family, family_by
from watcher.replay.compare import CompareSpec
from watcher.replay.engine import RATIO_BUCKETS, Replayer
from watcher.replay.policy import Policy, parse_target

# A replayed record waits here for the service's thread; past this many (outputs far behind) the
# oldest are let go, counted as failed "records_dropped".
MAX_PENDING_RECORDS = 10_000


def _replayer(r: Replay, emit: Callable[[dict[str, Any]], None], log: Callable[[str], None]) -> Replayer:
    target = parse_target(r.target)
    if isinstance(target, str):
        raise ValueError(target)
    policy = Policy(methods=frozenset(r.methods), allow_credentials=r.allow_credentials, body_limit=r.body_limit,
                    host=r.host, id_header=r.id_header, percent=r.percent)
    ignore = CompareSpec().ignore_headers | frozenset(r.ignore_headers)
    spec = CompareSpec(r.compare_headers, ignore, tuple(re.compile(m.encode()) for m in r.masks))
    return Replayer(target, policy, spec, emit, log, concurrency=r.concurrency, rate=r.rate, queue_size=r.queue)


class ReplayActions:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.replayers: dict[Replay, Replayer] = {}
        self.done: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING_RECORDS)
        self.retired: list[Replayer] = []  # replaced by a reload: their counts stay in the metrics

    def configure(self, replays: tuple[Replay, ...]) -> None:
        """The rules' replay actions after a (re)load: new ones start, gone ones finish their queue."""
        wanted = set(replays)
        for r in list(self.replayers):
            if r not in wanted:
                old = self.replayers.pop(r)
                old.close()
                self.retired.append(old)
        for r in replays:
            if r not in self.replayers:
                self.replayers[r] = _replayer(r, self.done.append, self.log)

    def body_keep(self) -> BodyKeep | None:
        """The request (and response) bodies the pipeline must keep: none without replay actions."""
        if not self.replayers:
            return None
        methods = frozenset(m for r in self.replayers for m in r.methods)
        return BodyKeep(methods, max(r.body_limit for r in self.replayers), responses=True)

    def offer(self, actions: tuple[Replay, ...], tx: Transaction, record: dict[str, Any]) -> None:
        for r in dict.fromkeys(actions):
            replayer = self.replayers.get(r)
            if replayer is not None:
                replayer.offer(tx, record.get("event_id") or "", record)

    def take(self) -> list[dict[str, Any]]:
        """The records replayed since the last call, to go to the outputs."""
        out = []
        while self.done:
            out.append(self.done.popleft())
        return out

    def close(self) -> None:
        """The service stops: what is still queued is let go (counted), what is in flight ends."""
        for r in self.replayers.values():
            r.close(drain=False)

    def families(self) -> list[Family]:
        every = [*self.retired, *self.replayers.values()]
        offered: Counter[str] = Counter()
        replayed: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        mismatches: Counter[tuple[str, str]] = Counter()
        ratio = [0] * (len(RATIO_BUCKETS) + 1)
        ratio_sum = 0.0
        for rp in every:
            c = rp.counters
            offered[rp.target.url] += c.offered
            replayed[rp.target.url] += c.replayed
            skipped.update(c.skipped)
            failed.update(c.failed)
            mismatches.update(c.mismatches)
            ratio = [a + b for a, b in zip(ratio, c.ratio_counts, strict=True)]
            ratio_sum += c.ratio_sum
        cum, n = [], 0
        for x in ratio:
            n += x
            cum.append(n)
        live = self.replayers.values()
        return [
            family_by("pcapwatch_replay_matched_total", "counter", "Transactions a replay rule matched.", "target",
                      offered),
            family_by("pcapwatch_replay_replayed_total", "counter", "Requests replayed and answered by the target.",
                      "target", replayed),
            family_by("pcapwatch_replay_skipped_total", "counter", "Matched transactions not replayed, by reason "
                      "(method, credentials, body_too_large, body_gap, queue_full, ...).", "reason", skipped),
            family_by("pcapwatch_replay_failed_total", "counter", "Replayed requests without an answer, by reason "
                      "(connect, read_timeout, breaker_open, ...).", "reason", failed),
            Family("pcapwatch_replay_mismatches_total", "counter", "Answers differing from the captured one, by "
                   "route and field (status, body, header:NAME).", ("route", "field"),
                   samples=tuple(sorted((k, float(v)) for k, v in mismatches.items()))),
            Family("pcapwatch_replay_latency_ratio", "histogram", "The target's latency over the captured one.",
                   buckets=RATIO_BUCKETS, series=(((), tuple(cum), ratio_sum),)),
            family_by("pcapwatch_replay_queue_depth", "gauge", "Requests waiting to be replayed.", "target",
                      {r.target.url: r.queue_depth() for r in live}),
            family_by("pcapwatch_replay_breaker_open", "gauge", "1 while the target is taken as down (replay "
                      "paused, probed with backoff).", "target", {r.target.url: int(r.breaker_open()) for r in live}),
        ]
