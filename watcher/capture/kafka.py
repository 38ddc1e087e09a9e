"""A Kafka topic of pycapa packets as a source of frames, beside the file sources (sources.py):
`pcapwatch read kafka://...`, `export kafka://...` and `publish kafka://...` open it through
inputs.py. The client library is reached through watcher/sinks/kafka_client.py (the one module
that imports confluent-kafka), imported only when a topic is opened.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from watcher.capture.pcapfile import Frame
from watcher.capture.pycapa import LINKTYPE_ETHERNET, KafkaUrl, key_micros, micros_ts, parse_kafka_url

# Messages asked for per consume() call: large enough to amortise the call, small enough that the
# merge across partitions starts early.
CONSUME_BATCH = 2000
POLL_SECONDS = 0.5
# A read that hears nothing at all (no message, no end of partition) this long gives up.
STALL_SECONDS = 60.0

Batches = list[tuple[int, list[Frame]]]


@dataclass
class SourceCounters:
    messages: int = 0
    bad_key: int = 0  # the key is not 8 bytes: not a pycapa capture time
    bad_value: int = 0  # no value, or an empty one: no frame
    partitions: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def skipped(self) -> int:
        return self.bad_key + self.bad_value




class KafkaSource:
    """Every partition of a topic of pycapa messages, as one capture: each partition in order, the
    partitions merged by the key's time (a message waits until every partition has one ready or is at
    its end, then the earliest goes). From the beginning, until every partition's end; or, with
    `start="end"`, new messages only, until `max_packets` or until `stop` is set.

    Same interface as sources.Capture for the read loop: `name`, `read()`, `position()`, `close()`.
    A frame's position is its message's offset in its partition.
    """

    def __init__(self, url: KafkaUrl, *, start: str = "beginning", linktype: int = LINKTYPE_ETHERNET,
                 max_packets: int | None = None, config: dict[str, Any] | None = None,
                 stop: threading.Event | None = None, notes: TextIO | None = None) -> None:
        self.url = url
        self.path = url.text
        self.name = url.source_name
        self.linktype = linktype
        self.max_packets = max_packets
        self.follow = start == "end"
        self.counters = SourceCounters()
        self.stopped = stop or threading.Event()
        self.notes = notes  # where "at the end, reading new messages" is said
        from watcher.sinks import kafka_client  # the Kafka client, only now

        self.kc: Any = kafka_client
        self.consumer, self.partitions = kafka_client.assigned_consumer(url, at_end=self.follow, config=config)
        self.counters.partitions = len(self.partitions)
        self._closed = False

    def size(self) -> int:
        return 0

    def position(self) -> int:
        return 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.consumer.close()

    def batches(self) -> Iterator[Batches]:
        return self.read()

    def read(self, chunk: int = 0, records: bool = False) -> Iterator[Batches]:
        """Lists of (linktype, frames), in merged order; KafkaIOError on a broker or topic problem."""
        pending: dict[int, deque[tuple[int, int, bytes]]] = {p: deque() for p in self.partitions}
        at_end: set[int] = set()
        heap: list[tuple[int, int]] = []  # (µs, partition) of each non-empty partition's head
        ready = 0  # partitions with a message waiting or at their end
        left = self.max_packets
        last_heard = time.monotonic()
        # Reading new messages: the end as the broker's offset query says (some answer a little
        # short of it), then whatever is there before the fetch reports each partition's end.
        skipping = set(self.partitions) if self.follow else set()
        for msgs in self._consume():
            if msgs:
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard > STALL_SECONDS and not self.follow:
                raise self.kc.KafkaIOError(f"no message nor end of partition from {self.url.brokers} for "
                                   f"{STALL_SECONDS:.0f}s; is the broker up?")
            for m in msgs:
                p = m.partition()
                err = m.error()
                if err is not None:
                    if self.kc.is_partition_end(err):
                        if p in skipping:
                            skipping.discard(p)
                            if not skipping and self.notes is not None:
                                self.notes.write(f"pcapwatch: {self.url.text}: at the end of every partition; "
                                                 "reading new messages\n")
                                self.notes.flush()
                        if p in pending and p not in at_end:
                            at_end.add(p)
                            ready += not pending[p]
                        continue
                    self._error(err)
                    continue
                if p in skipping:
                    continue  # there before the read began: not new
                micros = key_micros(m.key())
                value = m.value()
                if micros is None:
                    self.counters.bad_key += 1
                    continue
                if not value:
                    self.counters.bad_value += 1
                    continue
                q = pending[p]
                if p in at_end:  # more after its end (a producer is still writing)
                    at_end.discard(p)
                    if not q:
                        ready -= 1  # counted for its end; counted again below for this message
                if not q:
                    heapq.heappush(heap, (micros, p))
                    ready += 1
                q.append((micros, m.offset(), value))
            frames: list[Frame] = []
            while ready == len(self.partitions) and heap:
                _t, p = heapq.heappop(heap)
                q = pending[p]
                micros, offset, value = q.popleft()
                frames.append((offset, micros_ts(micros), value))
                if q:
                    heapq.heappush(heap, (q[0][0], p))
                elif p not in at_end:
                    ready -= 1
                if left is not None:
                    left -= 1
                    if left <= 0:
                        break
            if frames:
                self.counters.messages += len(frames)
                yield [(self.linktype, frames)]
            if (left is not None and left <= 0) or self.stopped.is_set():
                return
            if not self.follow and not heap and len(at_end) == len(self.partitions):
                return

    def _consume(self) -> Iterator[list[Any]]:
        while True:
            yield self.kc.consume(self.consumer, self.url, CONSUME_BATCH, POLL_SECONDS)

    def _error(self, err: Any) -> None:
        """A consumer error: counted; fatal ones (no such topic, not allowed) end the read."""
        name, fatal = self.kc.message_error(err)
        self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
        if fatal:
            raise self.kc.KafkaIOError(f"reading {self.url.text} failed: {err.str()}")

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"messages": c.messages, "skipped_bad_key": c.bad_key, "skipped_bad_value": c.bad_value,
                "partitions": c.partitions, "errors": dict(sorted(c.errors.items()))}


def open_source(text: str, **options: Any) -> KafkaSource:
    return KafkaSource(parse_kafka_url(text), **options)
