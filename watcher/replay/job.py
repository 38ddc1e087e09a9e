"""`pcapwatch replay`: capture files and Kafka topics of packets (pycapa's format), in order, each
replayable request re-sent to the target; one JSON record per replayed request, a per-route summary
at the end.

Transactions get the `event_id` `run` would give them (`Origins`), so the target's logs join our
records.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from analyzers import BodyKeep, Pipeline, RequestHead, Transaction, split_records, to_record
from watcher.capture.inputs import KafkaOptions
from watcher.capture.kafka import message_at
from watcher.capture.pycapa import KafkaUrl, is_kafka_url, parse_kafka_url
from watcher.capture.sources import Batches, Records, expand
from watcher.capture.spool import file_fingerprint, fingerprint
from watcher.read.files import ReadResult, read_files
from watcher.replay.compare import CompareSpec
from watcher.replay.engine import Replayer
from watcher.replay.policy import Policy, Target
from watcher.run.resume import event_id

# A position here is the input's index << INPUT_SHIFT | its position in that input: a file's
# content offset (below 2**40, as in `run`), a topic's partition << 40 | offset (below 2**64 for
# partition numbers below 2**24; Kafka's own practical limit is in the thousands).
INPUT_SHIFT = 64
INPUT_MASK = (1 << INPUT_SHIFT) - 1


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


class Origins:
    """Where each position of a replay came from, and the `event_id` `run` gives a transaction
    there: for a capture file, its content's fingerprint and the offset of the request head in it
    (run/resume.py); for a Kafka topic, its topic, partition and the head's message offset, as
    `run --group` does (run/group.py)."""

    def __init__(self) -> None:
        self.inputs: list[KafkaUrl | str] = []  # per input: its topic, or the file's fingerprint

    def begin(self, path: str) -> int:
        """The next input; returns the base its positions are fed to the pipeline with."""
        self.inputs.append(parse_kafka_url(path) if is_kafka_url(path) else _fingerprint(path))
        return (len(self.inputs) - 1) << INPUT_SHIFT

    def event_id(self, pos: int, index: int) -> str:
        origin = self.inputs[pos >> INPUT_SHIFT]
        if isinstance(origin, KafkaUrl):
            partition, offset = message_at(pos & INPUT_MASK)
            return event_id(origin.partition_id(partition), offset, index)
        return event_id(origin, pos & INPUT_MASK, index)


def replay_captures(paths: list[str], opts: ReplayOptions, out: TextIO, err: TextIO,
                    kafka: KafkaOptions | None = None) -> ReplayResult:
    """Every input (capture file, directory, `-`, `kafka://` topic read as `kafka` says) as one
    capture, each replayable request re-sent; records to `out`, one-line problems to `err`."""
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
    origins = Origins()
    base = 0
    pace = _Pace(opts.speed)

    def offer(txs: list[Transaction]) -> None:
        for tx in txs:
            msg = tx.request if tx.request is not None else tx.response
            assert msg is not None
            eid = origins.event_id(msg.pos, msg.pos_index)
            record = to_record(tx)
            record["event_id"] = eid
            if tx.request is not None and isinstance(tx.request.head, RequestHead):
                pace.wait(tx.request.first_ts)
            replayer.offer(tx, eid, record)

    def begin(path: str, name: str) -> None:
        nonlocal base
        base = origins.begin(path)
        pipeline.set_source(name)

    def consume(item: Batches | Records) -> int:
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

    result = read_files(files, err, False, begin, consume, close, kafka=kafka)
    if failed_output:
        raise failed_output[0]
    return ReplayResult(result, replayer)


def _fingerprint(path: str) -> str:
    """The capture file's identity as `run` computes it (stdin: a fixed one)."""
    if path != "-":
        try:
            fp = file_fingerprint(path)
        except OSError:
            fp = None
        if fp is not None:
            return fp
    return fingerprint(b"-", 0.0)


def format_counts(replayer: Replayer) -> str:
    c = replayer.counters
    def by(counter: Any) -> str:
        return " (" + ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) + ")" if counter else ""
    return (f"replay: {c.offered} transactions, {c.replayed} replayed ({c.mismatched} differ), "
            f"{sum(c.skipped.values())} skipped{by(c.skipped)}, {sum(c.failed.values())} failed{by(c.failed)}\n")

