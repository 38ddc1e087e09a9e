"""Frames to a topic in pycapa's format, each to its connection's partition, with every delivery
accounted for.

The client's queue is bounded (`QUEUE_MESSAGES`, `QUEUE_KBYTES`): when it is full, `send` waits for
deliveries instead of dropping (counted as `queue_full`). The client retries a failed send itself
with exponential backoff, idempotently (so a partition keeps its order); a message that still fails
with an error that may pass (the broker away longer than the delivery timeout) is sent again by us
after a backoff of our own (`retried`); one that cannot succeed (too large, not allowed) is counted
as `failed` with its error's name, and so is everything still undelivered when `flush` gives up.
Nothing is dropped without a count.
"""

from __future__ import annotations

import functools
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watcher.capture.pycapa import KafkaUrl, micros_key
from watcher.publish.partition import partition_of

# The bounded queue between us and the broker: at most this many messages or KiB waiting.
QUEUE_MESSAGES = 100_000
QUEUE_KBYTES = 64 * 1024
# The client's own delivery timeout; past it a message comes back failed and we send it again.
DELIVERY_TIMEOUT_MS = 60_000
# Our backoff between sends of a message that failed: doubles from the first to the last.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
# Sends between two polls of delivery reports.
POLL_EVERY = 1000

Token = Any  # what the caller wants back when a frame is delivered (the follower: its position)


@dataclass
class PublishCounters:
    sent: int = 0  # frames handed to the client (each once, however often retried)
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    queue_full: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    per_partition: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "delivered": self.delivered, "retried": self.retried, "failed": self.failed,
                "queue_full": self.queue_full, "errors": dict(sorted(self.errors.items())),
                "per_partition": dict(sorted(self.per_partition.items()))}


class FramePublisher:
    def __init__(self, url: KafkaUrl, partitions: list[int], *, compression: str = "none",
                 on_delivered: Callable[[Token], None] | None = None,
                 on_failed: Callable[[Token], None] | None = None) -> None:
        self.url = url
        self.partitions = partitions
        self.counters = PublishCounters(per_partition={p: 0 for p in partitions})
        self.on_delivered = on_delivered
        self.on_failed = on_failed
        from watcher.sinks import kafka_client  # the client library, only when publishing

        self.kc: Any = kafka_client
        self.producer = kafka_client.producer(url.brokers, **{
            "enable.idempotence": True, "linger.ms": 10, "compression.type": compression,
            "queue.buffering.max.messages": QUEUE_MESSAGES, "queue.buffering.max.kbytes": QUEUE_KBYTES,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS, "retry.backoff.ms": 100, "retry.backoff.max.ms": 2000})
        self._again: list[tuple[float, int, int, bytes, bytes, int, Token]] = []  # heap by due time
        self._seq = 0
        self._since_poll = 0

    def send(self, linktype: int, micros: int, frame: bytes, token: Token = None) -> None:
        """Queue one frame for its connection's partition; waits while the queue is full."""
        p = self.partitions[partition_of(linktype, frame, len(self.partitions))]
        self.counters.sent += 1
        self.counters.per_partition[p] += 1
        self._produce(p, micros_key(micros), frame, 0, token)
        self._since_poll += 1
        if self._since_poll >= POLL_EVERY:
            self.poll(0)

    def _produce(self, partition: int, key: bytes, value: bytes, attempt: int, token: Token) -> None:
        report = functools.partial(self._report, attempt, token)
        while True:
            try:
                self.producer.produce(self.url.topic, value=value, key=key, partition=partition, on_delivery=report)
                return
            except BufferError:
                self.counters.queue_full += 1
                self.producer.poll(0.1)
            except self.kc.ProduceError as e:  # refused at once: too large for the broker, ...
                self._failed(str(e.args[0].name()) if e.args else "produce", token)
                return

    def _report(self, attempt: int, token: Token, err: Any, msg: Any) -> None:
        if err is None:
            self.counters.delivered += 1
            if self.on_delivered is not None:
                self.on_delivered(token)
            return
        if self.kc.is_retriable(err):
            self.counters.retried += 1
            delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(attempt, 10))
            self._seq += 1
            heapq.heappush(self._again, (time.monotonic() + delay, self._seq, msg.partition(), msg.key(),
                                         msg.value(), attempt + 1, token))
            return
        self._failed(str(err.name()), token)

    def _failed(self, name: str, token: Token) -> None:
        self.counters.failed += 1
        self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
        if self.on_failed is not None:
            self.on_failed(token)

    def poll(self, timeout: float = 0) -> None:
        """Delivery reports; messages due for another try sent again."""
        self._since_poll = 0
        self.producer.poll(timeout)
        now = time.monotonic()
        while self._again and self._again[0][0] <= now:
            _due, _s, partition, key, value, attempt, token = heapq.heappop(self._again)
            self._produce(partition, key, value, attempt, token)

    def in_flight(self) -> int:
        return len(self.producer) + len(self._again)

    def flush(self, timeout: float) -> int:
        """Wait until everything is delivered or failed, at most `timeout` seconds; what is still
        undelivered then is counted as failed (`undelivered`) and its number returned."""
        deadline = time.monotonic() + timeout
        while self.in_flight() and time.monotonic() < deadline:
            self.poll(0.1)
        left = self.in_flight()
        if left:
            self.counters.failed += left
            self.counters.errors["undelivered"] = self.counters.errors.get("undelivered", 0) + left
        return left
