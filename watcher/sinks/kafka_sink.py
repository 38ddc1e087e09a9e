"""Kafka: each record one message of a topic, keyed by its `uid` (a connection's records in one
partition, in order) or its `event_id`, the value its JSON (flat, or ECS names). The client library,
confluent-kafka, is owned by kafka_client.py, imported here when the output is built; this module
is imported only when a `kafka` output is configured.

The framework (base.py) gives the bounded buffer, drop counters and backoff; here a batch is
produced and then waited for until every record has its delivery report (the client's own retries,
idempotent with `acks: all`, happen inside that wait, bounded by `DELIVERY_TIMEOUT_MS`). Records the
broker acknowledged are written; those that failed with an error that may pass (the brokers away)
are kept and retried after a reconnect with backoff, so nothing is lost while the buffer holds;
those the broker refuses for good (too large, not allowed) are dropped and counted.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from watcher.capture.pycapa import KafkaUrl
from watcher.config.model import KafkaOutputConfig
from watcher.sinks.base import Log, Record, SendError, Sink, stderr_log
from watcher.sinks.ecs import to_ecs
from watcher.sinks.jsontext import encode, utf8

KEYS = ("uid", "event_id")
FORMATS = ("flat", "ecs")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = {"all": "all", "leader": "1", "none": "0"}  # as configured -> Kafka's acks
# How long the client keeps trying one message before reporting it failed; a batch waits at most
# about this long, then its failed records are retried by the framework after a backoff.
DELIVERY_TIMEOUT_MS = 15_000
# A reconnect's metadata request: how long the brokers may take to answer it.
CONNECT_SECONDS = 5.0


class DeliveryFailed(Exception):
    """Some records of a batch were not delivered, for a reason that may pass."""


class KafkaSink(Sink):
    kind = "kafka output"
    retryable = (OSError, DeliveryFailed)

    def __init__(self, config: KafkaOutputConfig, log: Log = stderr_log) -> None:
        for what, value, allowed in (("key", config.key, KEYS), ("format", config.format, FORMATS),
                                     ("compression", config.compression, COMPRESSIONS),
                                     ("acks", config.acks, tuple(ACKS))):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
        super().__init__(config.name, config.buffer, batch=config.batch, backoff_max=config.backoff_max_seconds,
                         log=log)
        self.url = KafkaUrl(config.brokers, config.topic)
        self.key = config.key
        self.ecs = config.format == "ecs"
        self.client_config: dict[str, Any] = {
            "acks": ACKS[config.acks], "compression.type": config.compression, "linger.ms": 5,
            "enable.idempotence": config.acks == "all", "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "queue.buffering.max.messages": max(2 * config.batch, 1000)}
        self.producer: Any = None
        self._last_refusal = ""
        from watcher.sinks import kafka_client  # the client library, now that the output is configured

        self.kc: Any = kafka_client

    def _connect(self) -> None:
        if self.producer is None:
            self.producer = self.kc.producer(self.url.brokers, **self.client_config)
        self.kc.topic_partitions(self.producer, self.url, CONNECT_SECONDS)  # KafkaIOError (an OSError) if away

    def _disconnect(self) -> None:
        """A fresh client after a failure: nothing of the old one is in flight (every message of a
        batch has its report before `_send` returns), and one whose idempotence broke is useless."""
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def _send(self, batch: list[Record]) -> int:
        """Produce the batch, wait for every report. Raises SendError with the batch reordered in place
        (delivered and refused first, then the records to retry), as base.Sink reads it."""
        reports = Reports(len(batch))
        produce, topic = self.producer.produce, self.url.topic
        for i, record in enumerate(batch):
            key = record.get(self.key)
            value = utf8(encode(to_ecs(record) if self.ecs else record, self.strings))
            while True:
                try:
                    produce(topic, value=value, key=None if key is None else str(key),
                            on_delivery=functools.partial(reports.report, i))
                    break
                except BufferError:
                    self.producer.poll(0.05)
                except self.kc.ProduceError as e:  # refused at once (too large for the broker, ...)
                    reports.report(i, e.args[0] if e.args else e, None)
                    break
        deadline = time.monotonic() + DELIVERY_TIMEOUT_MS / 1000 + 5
        while reports.waiting and time.monotonic() < deadline:
            self.producer.flush(0.5)
        if reports.waiting:  # the client kept them past its own timeout: take them back
            self.producer.purge()
            self.producer.flush(1)
        done = [i for i in range(len(batch)) if reports.ok[i]]
        again = [i for i in range(len(batch)) if not reports.ok[i] and (i not in reports.errors or
                                                                          self._may_pass(reports.errors[i]))]
        refused = [i for i in sorted(reports.errors) if not self._may_pass(reports.errors[i])]
        if refused:
            self._refused(len(refused), len(batch), reports.errors[refused[0]])
        if not again:
            return len(done)
        first = reports.errors.get(again[0])
        batch[:] = [batch[i] for i in done + refused + again]
        raise SendError(len(done) + len(refused), DeliveryFailed(_name(first) if first is not None else
                                                                  "no delivery report in time"), lost=len(refused))

    def _may_pass(self, err: Any) -> bool:
        return hasattr(err, "retriable") and bool(self.kc.is_retriable(err))

    def _refused(self, n: int, of: int, err: Any) -> None:
        why = _name(err)
        if why != self._last_refusal:
            self._last_refusal = why
            self.log("error", f"{self.kind} {self.name}: the brokers refused {n} of {of} records ({why}); dropped")


class Reports:
    """The delivery reports of one batch. (The errors are kept apart: comparing a KafkaError with
    None, as `None in list` does, leaves an exception set in confluent-kafka 2.x.)"""

    def __init__(self, n: int) -> None:
        self.ok = [False] * n
        self.errors: dict[int, Any] = {}
        self.waiting = n

    def report(self, i: int, err: Any, _msg: Any) -> None:
        self.waiting -= 1
        if err is None:
            self.ok[i] = True
        else:
            self.errors[i] = err


def _name(err: Any) -> str:
    return str(err.str()) if hasattr(err, "str") else str(err)
