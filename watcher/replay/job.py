"""`pcapwatch replay`: capture files, in order, each replayable request re-sent to the target;
one JSON record per replayed request, a per-route summary at the end.

Transactions get the `event_id` `run` would give them (resume.py: where the request head is in
the input, the capture file identified by its content), so the target's logs join our records.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from analyzers import BodyKeep, Pipeline, RequestHead, Transaction, split_records, to_record
from watcher.capture.sources import Batches, Records, expand
from watcher.capture.spool import _identify, fingerprint
from watcher.read.files import ReadResult, read_files
from watcher.replay.compare import CompareSpec
from watcher.replay.engine import Replayer
from watcher.replay.policy import Policy, Target
from watcher.run.resume import POS_BITS, POS_MASK, event_id


@dataclass(frozen=True)
class ReplayOptions:
    target: Target
    policy: Policy
    spec: CompareSpec
    speed: float | None = None  # None: as fast as allowed; else capture pace times this
    rate: float | None = None
    concurrency: int = 1
    connect_timeout: float = 2.0
    read_timeout: float = 10.0


@dataclass
class ReplayResult:
    read: ReadResult
    replayer: Replayer


class _Pace:
    """Holds each request back until its capture time, scaled by `speed`, has come."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self.first: tuple[float, float] | None = None  # (capture ts, monotonic) of the first request

    def wait(self, ts: float) -> None:
        if not self.speed:
            return
        now = time.monotonic()
        if self.first is None:
            self.first = (ts, now)
            return
        delay = self.first[1] + (ts - self.first[0]) / self.speed - now
        if delay > 0:
            time.sleep(delay)


def replay_captures(paths: list[str], opts: ReplayOptions, out: TextIO, err: TextIO) -> ReplayResult:
    files, notes = expand(paths)
    for note in notes:
        err.write(f"pcapwatch: {note}\n")
    lock = threading.Lock()
    failed_output: list[OSError] = []

    def emit(record: dict[str, Any]) -> None:
        if failed_output:
            return
        try:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as e:
            failed_output.append(e)

    def log(line: str) -> None:
        with lock:
            err.write(f"pcapwatch: {line}\n")
            err.flush()

    replayer = Replayer(opts.target, opts.policy, opts.spec, emit, log, concurrency=opts.concurrency,
                        rate=opts.rate, block=True, connect_timeout=opts.connect_timeout,
                        read_timeout=opts.read_timeout)
    pipeline = Pipeline()
    pipeline.keep_bodies(BodyKeep(opts.policy.methods, opts.policy.body_limit, responses=True))
    fps: list[str] = []
    pace = _Pace(opts.speed)

    def offer(txs: list[Transaction]) -> None:
        for tx in txs:
            msg = tx.request if tx.request is not None else tx.response
            assert msg is not None
            gen = msg.pos >> POS_BITS
            eid = event_id(fps[gen], msg.pos & POS_MASK, msg.pos_index) if gen < len(fps) else ""
            record = to_record(tx)
            record["event_id"] = eid
            if tx.request is not None and isinstance(tx.request.head, RequestHead):
                pace.wait(tx.request.first_ts)
            replayer.offer(tx, eid, record)

    def begin(path: str, name: str) -> None:
        fps.append(_fingerprint(path))
        pipeline.set_source(name)

    def consume(item: Batches | Records) -> int:
        base = (len(fps) - 1) << POS_BITS
        if isinstance(item, Records):
            offsets, item.used = split_records(item.buf, item.start, len(item.buf), item.layout)
            offer(pipeline.feed_records(item.buf, offsets, item.layout, base + item.base))
            return len(offsets)
        n = 0
        for linktype, frames in item:
            offer(pipeline.feed(linktype, frames, base))
            n += len(frames)
        return n

    def close() -> None:
        offer(pipeline.close())
        replayer.close()

    result = read_files(files, err, False, begin, consume, close)
    if failed_output:
        raise failed_output[0]
    return ReplayResult(result, replayer)


def _fingerprint(path: str) -> str:
    """The capture file's identity as `run` computes it (stdin: a fixed one)."""
    if path != "-":
        try:
            ident = _identify(path)
        except OSError:
            ident = None
        if isinstance(ident, tuple):
            return ident[0]
    return fingerprint(b"-", 0.0)


def format_counts(replayer: Replayer) -> str:
    c = replayer.counters
    def by(counter: Any) -> str:
        return " (" + ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) + ")" if counter else ""
    return (f"replay: {c.offered} transactions, {c.replayed} replayed ({c.mismatched} differ), "
            f"{sum(c.skipped.values())} skipped{by(c.skipped)}, {sum(c.failed.values())} failed{by(c.failed)}\n")

