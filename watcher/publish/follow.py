"""`pcapwatch publish --follow SPOOL --to kafka://...`: a live spool, followed as `run` follows it
(the same reader thread, rotation handling and checkpoint file: watcher/run/reader.py,
capture/spool.py, run/checkpoint.py), its frames published as they are written.

The checkpoint's `resume` mark is the place just past the last frame such that it and every frame
before it were delivered (acknowledged by the broker) or counted as failed. Frames of a connection
go to one partition, but deliveries of different partitions come back in any order, so each frame
is numbered and the mark moves only over an unbroken run of settled numbers. After SIGTERM every
queued frame is delivered first, so a restart sends nothing twice; after kill -9 the checkpoint is
a few seconds old and those seconds' frames are sent again, never lost.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

from watcher.capture.pycapa import KafkaUrl, ts_micros
from watcher.capture.spool import Spool
from watcher.publish.producer import FramePublisher
from watcher.run import checkpoint as ckpt
from watcher.run.control import STOP, SignalPipe
from watcher.run.reader import Batch, Reader
from watcher.run.resume import POS_BITS, mark
from watcher.run.sdnotify import log

# Batches the reader may queue ahead of the producer: bounded memory, the rest waits on disk.
QUEUE_BATCHES = 64
RESCAN_SECONDS = 2.0
CHECKPOINT_SECONDS = 2.0
# At SIGTERM, how long the last deliveries may take before they are counted as undelivered (and,
# the checkpoint not covering them, sent again by the next run).
STOP_FLUSH_SECONDS = 60.0
STATUS_SECONDS = 60.0


@dataclass
class FollowOptions:
    spool: str
    state: str
    pattern: str = "*"
    rescan_seconds: float = RESCAN_SECONDS
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    compression: str = "none"


class Settled:
    """Frames numbered in the order sent; `position` is the input position past the longest prefix
    of them all settled (delivered or failed)."""

    def __init__(self) -> None:
        self.first = 0  # number of the oldest unsettled frame
        self.ends: deque[int] = deque()  # input position past frame first, first+1, ...
        self.done: deque[bool] = deque()
        self.position: int | None = None

    def add(self, end: int) -> int:
        self.ends.append(end)
        self.done.append(False)
        return self.first + len(self.ends) - 1

    def settle(self, n: int) -> None:
        self.done[n - self.first] = True
        while self.done and self.done[0]:
            self.done.popleft()
            self.position = self.ends.popleft()
            self.first += 1


EXIT_TOPIC = 3  # as `pcapwatch publish` says: the topic could not be reached or created


def follow_spool(url: KafkaUrl, partitions: int | None, opts: FollowOptions, err: TextIO) -> int:
    """`publish --follow`: the topic (created with `partitions` if absent), then `follow`."""
    if not os.path.isdir(opts.spool):
        err.write(f"pcapwatch: error: publish --follow {opts.spool}: not a directory; give the spool tcpdump "
                  "writes into\n")
        return 2
    from watcher.sinks.kafka_client import ensure_topic  # the client library, only when publishing

    try:
        parts = ensure_topic(url, partitions)
    except OSError as e:
        err.write(f"pcapwatch: error: --to {url.text}: {e}\n")
        return EXIT_TOPIC
    return follow(url, parts, opts, err)


def follow(url: KafkaUrl, partitions: list[int], opts: FollowOptions, err: TextIO) -> int:
    """Publish the spool's frames until SIGTERM/SIGINT; 0 after a clean stop with everything
    delivered, 1 if frames failed or the reader failed."""
    spool = Spool(opts.spool, opts.pattern)
    saved, warning = ckpt.load(opts.state)
    if warning:
        log("warning", warning)
    batches: queue.Queue[Batch] = queue.Queue(maxsize=QUEUE_BATCHES)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    reader = Reader(spool, batches, wake_w, opts.rescan_seconds, saved.resume if saved else None, log,
                    _dir_watcher(opts.spool))
    settled = Settled()
    pub = FramePublisher(url, partitions, compression=opts.compression, on_delivered=settled.settle,
                         on_failed=settled.settle)
    signals = SignalPipe()
    os.makedirs(opts.state, exist_ok=True)
    where = f"resuming at {saved.resume.name or saved.resume.fp} offset {saved.resume.offset}" if saved else \
        "starting from the oldest capture"
    log("info", f"following {opts.spool} ({where}); frames to {url.text} ({len(partitions)} partitions)")
    saved_at: int | None = None
    with signals.handling():
        reader.start()
        next_checkpoint = time.monotonic()
        next_status = next_checkpoint + STATUS_SECONDS
        stopping = False
        while not stopping:
            readable, _, _ = select.select([signals.fileno(), wake_r], [], [], 0.1)
            if signals.fileno() in readable:
                stopping = any(s in STOP for s in signals.received())
            _drain(wake_r)
            for _ in range(QUEUE_BATCHES):
                try:
                    batch = batches.get_nowait()
                except queue.Empty:
                    break
                _send(pub, settled, batch)
            pub.poll(0)
            if reader.error is not None:
                log("error", f"the reader failed: {reader.error}; stopping")
                break
            now = time.monotonic()
            if now >= next_checkpoint:
                saved_at = _checkpoint(opts.state, settled, reader, saved_at)
                next_checkpoint = now + opts.checkpoint_seconds
            if now >= next_status:
                next_status = now + STATUS_SECONDS
                log("info", _status(pub, spool))
        reader.stop()
        reader.join(5)
        while True:  # what the reader had queued is sent too: the checkpoint then covers it
            try:
                _send(pub, settled, batches.get_nowait())
            except queue.Empty:
                break
        left = pub.flush(STOP_FLUSH_SECONDS)
        _checkpoint(opts.state, settled, reader, saved_at)
    os.close(wake_r)
    os.close(wake_w)
    if left:
        log("error", f"{left:,} frames not delivered to {url.text} before the stop; the next run sends them again")
    err.write(f"pcapwatch: {_status(pub, spool)}\n")
    return 1 if reader.error is not None or pub.counters.failed else 0


def _send(pub: FramePublisher, settled: Settled, batch: Batch) -> None:
    base = batch.gen << POS_BITS
    frames = batch.frames
    for i, (_off, ts, data) in enumerate(frames):
        end = base + (frames[i + 1][0] if i + 1 < len(frames) else batch.end)
        pub.send(batch.linktype, ts_micros(ts), data, settled.add(end))
    if not frames:  # a batch without frames still moves the position (e.g. a header-only file)
        settled.settle(settled.add(base + batch.end))


def _checkpoint(state: str, settled: Settled, reader: Reader, saved_at: int | None) -> int | None:
    pos = settled.position
    if pos is None or pos == saved_at:
        return saved_at
    resume = mark(pos, reader.generations)
    if resume is None:
        return saved_at
    try:
        ckpt.save(state, ckpt.Checkpoint(resume, None, time.time()))
    except OSError as e:
        log("error", f"cannot write the checkpoint in {state}: {e.strerror}; a restart would send more frames again")
        return saved_at
    for index in [i for i in list(reader.generations) if i < (pos >> POS_BITS) - 1]:
        reader.generations.pop(index, None)
    return pos


def _status(pub: FramePublisher, spool: Spool) -> str:
    c = pub.counters
    return (f"published {c.sent:,} frames: delivered {c.delivered:,}, failed {c.failed:,}, retried {c.retried:,}, "
            f"waiting {pub.in_flight():,}; capture files done {spool.counters.done:,}, lost "
            f"{spool.counters.lost:,} ({spool.counters.lost_bytes:,} bytes)")


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


def _dir_watcher(directory: str) -> Any:
    """inotify hints when available; the reader rescans on a timer either way."""
    try:
        from watcher.capture.inotify import DirWatcher

        return DirWatcher(directory)
    except (ImportError, OSError) as e:
        log("warning", f"inotify on {directory} unavailable ({e}); relying on periodic rescans")
        return None
