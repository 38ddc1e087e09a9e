"""`pcapwatch publish INPUT... --to kafka://HOST:PORT/TOPIC`: every frame of the inputs (files, a
directory, stdin, even another topic) to the topic in pycapa's format, walked by the read loop
(read/files.py) as `read` walks them; a progress line on a terminal, and a summary at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from watcher.capture.inputs import KafkaOptions, timed_frames
from watcher.capture.pycapa import KafkaUrl, KafkaUrlError, parse_kafka_url
from watcher.capture.sources import Batches, Records, expand
from watcher.publish.producer import FramePublisher
from watcher.read.files import ReadResult, read_files

# How long the end of a run waits for the last deliveries before counting them as failed.
FLUSH_SECONDS = 120.0
PROGRESS_SECONDS = 1.0


@dataclass
class PublishResult:
    read: ReadResult
    partitions: list[int] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def publish_captures(paths: list[str], url: KafkaUrl, err: TextIO, *, partitions: int | None = None,
                     compression: str = "none", progress: bool = False,
                     kafka: KafkaOptions | None = None, flush_seconds: float = FLUSH_SECONDS) -> PublishResult:
    """Every frame of the inputs to `url`'s topic (created with `partitions` if absent). KafkaIOError
    (an OSError) when the topic is absent and `partitions` not given, or the brokers do not answer."""
    from watcher.sinks.kafka_client import ensure_topic  # the client library, only when publishing

    parts = ensure_topic(url, partitions)
    files, notes = expand(paths)
    for note in notes:
        err.write(f"pcapwatch: {note}\n")
    pub = FramePublisher(url, parts, compression=compression)
    start = time.monotonic()
    line = ProgressLine(err, progress, start)

    def consume(item: Batches | Records) -> int:
        n = 0
        for linktype, _pos, micros, frame in timed_frames(item):
            pub.send(linktype, micros, frame)
            n += 1
        line.update(pub)
        return n

    def close() -> None:
        pub.flush(flush_seconds)
        line.done()

    result = read_files(files, err, False, lambda _p, _n: None, consume, close, kafka=kafka)
    return PublishResult(result, parts, pub.counters.as_dict(), time.monotonic() - start)


class ProgressLine:
    def __init__(self, err: TextIO, enabled: bool, start: float) -> None:
        self.err, self.enabled, self.start = err, enabled, start
        self.next = start + PROGRESS_SECONDS
        self.shown = False

    def update(self, pub: FramePublisher) -> None:
        now = time.monotonic()
        if not self.enabled or now < self.next:
            return
        self.next = now + PROGRESS_SECONDS
        c = pub.counters
        self.err.write(f"\rsent {c.sent:,} frames, delivered {c.delivered:,} "
                       f"({c.sent / max(now - self.start, 1e-6):,.0f}/s), waiting {pub.in_flight():,}  ")
        self.err.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.err.write("\r\x1b[K")
            self.err.flush()


def summary(result: PublishResult, url: KafkaUrl) -> str:
    c = result.counters
    errors = ", ".join(f"{k} {v:,}" for k, v in c["errors"].items())
    return (f"pcapwatch: published {c['sent']:,} frames from {result.read.files:,} inputs to {url.text} "
            f"({len(result.partitions)} partitions) in {result.seconds:.1f}s: delivered {c['delivered']:,}, "
            f"failed {c['failed']:,}{f' ({errors})' if errors else ''}, retried {c['retried']:,}, "
            f"queue full {c['queue_full']:,}\n")


def publish_main(inputs: list[str], to: str, partitions: int | None, compression: str, kafka: KafkaOptions,
                 err: TextIO, follow: tuple[str | None, str] | None = None) -> int:
    """`pcapwatch publish`, with its exit status (as cli.py's: 0 all delivered, 1 an input failed or
    frames were not delivered, 2 a bad command line, 3 the topic cannot be reached or created).
    `follow` is (state directory, file pattern) for `--follow`."""
    try:
        url = parse_kafka_url(to)
    except KafkaUrlError as e:
        err.write(f"pcapwatch: error: --to {to}: {e}\n")
        return 2
    if follow is not None:
        from watcher.publish.follow import FollowOptions, follow_spool

        state, pattern = follow
        if len(inputs) != 1 or not state:
            err.write("pcapwatch: error: publish --follow: give one spool directory and --state DIR\n")
            return 2
        return follow_spool(url, partitions, FollowOptions(inputs[0], state, pattern, compression=compression), err)
    if not inputs:
        err.write("pcapwatch: error: publish: give the inputs to send (files, a directory, -)\n")
        return 2
    try:
        result = publish_captures(inputs, url, err, partitions=partitions, compression=compression,
                                  progress=err.isatty(), kafka=kafka)
    except OSError as e:
        err.write(f"pcapwatch: error: --to {url.text}: {e}\n")
        return 3
    err.write(summary(result, url))
    return 1 if result.read.files_failed or result.counters["failed"] else 0
