"""Kafka through confluent-kafka: the only module that imports it, and imported only when a
`kafka://` address or a `kafka` output is used (the library is the optional extra
`pcapwatch[kafka]`).

Here: `KafkaSource`, a topic of pycapa-format packets as a source of frames (beside the file sources
of sources.py); the producer, admin and consumer-group clients that `publish`, the `kafka` output and
`run --source kafka://` use. The message format itself is in pycapa.py.

The end of a partition is what the fetch reports (`enable.partition.eof`), not a watermark query:
some brokers answer ListOffsets with a figure that lags just after a produce.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from watcher.capture.pcapfile import Frame
from watcher.capture.pycapa import (
    LINKTYPE_ETHERNET,
    KafkaClientMissing,
    KafkaUrl,
    key_micros,
    micros_ts,
    parse_kafka_url,
)

try:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # only without the extra; the verbs say it in one line (cli.main)
    raise KafkaClientMissing() from None

# Messages asked for per consume() call: large enough to amortise the call, small enough that the
# merge across partitions starts early.
CONSUME_BATCH = 2000
POLL_SECONDS = 0.5
# How long a broker may stay silent about a topic's metadata before we call it unreachable.
METADATA_SECONDS = 10.0
# A read that hears nothing at all (no message, no end of partition) this long gives up.
STALL_SECONDS = 60.0

Batches = list[tuple[int, list[Frame]]]


class KafkaIOError(OSError):
    """A broker or topic problem, as one line for a user."""


class TopicAbsent(KafkaIOError):
    """The brokers answered: they do not have the topic."""


@dataclass
class SourceCounters:
    messages: int = 0
    bad_key: int = 0  # the key is not 8 bytes: not a pycapa capture time
    bad_value: int = 0  # no value, or an empty one: no frame
    partitions: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def skipped(self) -> int:
        return self.bad_key + self.bad_value


def client_config(brokers: str, **extra: Any) -> dict[str, Any]:
    """librdkafka's own log lines (a refused connection, many times over) are silenced: what goes
    wrong reaches the user as our one-line messages and counters, through `error_cb` and errors."""
    return {"bootstrap.servers": brokers, "client.id": f"pcapwatch-{os.getpid()}", "log_level": 0,
            "error_cb": _client_error, **extra}


CLIENT_ERRORS: dict[str, int] = {}  # librdkafka's background errors (connection refused, ...), by name


def _client_error(err: Any) -> None:
    name = str(err.name())
    CLIENT_ERRORS[name] = CLIENT_ERRORS.get(name, 0) + 1


def topic_partitions(client: Any, url: KafkaUrl, timeout: float = METADATA_SECONDS) -> list[int]:
    """The topic's partition ids; KafkaIOError if the brokers do not answer or the topic is absent."""
    try:
        # every topic's metadata, not this one's: asking for one by name lets some brokers create it
        md = client.list_topics(timeout=timeout)
    except ck.KafkaException as e:
        raise KafkaIOError(f"no answer from the Kafka brokers {url.brokers} within {timeout:.0f}s ({_why(e)}); "
                           "check HOST:PORT and that the broker runs") from None
    t = md.topics.get(url.topic)
    if t is None or t.error is not None or not t.partitions:
        why = _why(t.error) if t is not None and t.error is not None else "no partitions"
        raise TopicAbsent(f"topic {url.topic} is not on the brokers {url.brokers} ({why}); "
                           "create it or check the name")
    return sorted(t.partitions)


def _why(e: Any) -> str:
    err = e.args[0] if isinstance(e, ck.KafkaException) and e.args else e
    return str(err.str()) if hasattr(err, "str") else str(err)


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
        conf = client_config(url.brokers, **{
            "group.id": f"pcapwatch-read-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest", **(config or {})})
        self.consumer = ck.Consumer(conf)
        try:
            self.partitions = topic_partitions(self.consumer, url)
        except KafkaIOError:
            self.consumer.close()
            raise
        self.counters.partitions = len(self.partitions)
        offset = ck.OFFSET_END if self.follow else ck.OFFSET_BEGINNING
        self.consumer.assign([ck.TopicPartition(url.topic, p, offset) for p in self.partitions])
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
                raise KafkaIOError(f"no message nor end of partition from {self.url.brokers} for "
                                   f"{STALL_SECONDS:.0f}s; is the broker up?")
            for m in msgs:
                p = m.partition()
                err = m.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
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
            try:
                yield self.consumer.consume(CONSUME_BATCH, POLL_SECONDS)
            except ck.KafkaException as e:
                raise KafkaIOError(f"reading {self.url.text} failed: {_why(e)}") from None

    def _error(self, err: Any) -> None:
        """A consumer error: counted; fatal ones (no such topic, not allowed) end the read."""
        name = str(err.name())
        self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
        if err.fatal() or err.code() in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
                                         ck.KafkaError.TOPIC_AUTHORIZATION_FAILED):
            raise KafkaIOError(f"reading {self.url.text} failed: {err.str()}")

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"messages": c.messages, "skipped_bad_key": c.bad_key, "skipped_bad_value": c.bad_value,
                "partitions": c.partitions, "errors": dict(sorted(c.errors.items()))}


def open_source(text: str, **options: Any) -> KafkaSource:
    return KafkaSource(parse_kafka_url(text), **options)


# --- producing ----------------------------------------------------------------------------------


def producer(brokers: str, **extra: Any) -> Any:
    """A confluent-kafka Producer (its `produce` raises BufferError when its queue is full)."""
    return ck.Producer(client_config(brokers, **extra))


def admin(brokers: str) -> Any:
    return AdminClient(client_config(brokers))


def ensure_topic(url: KafkaUrl, partitions: int | None, timeout: float = METADATA_SECONDS) -> list[int]:
    """The topic's partitions; with `partitions`, create the topic with that many if it is absent
    (an existing topic keeps its partitions). KafkaIOError if that fails."""
    client = admin(url.brokers)
    try:
        return topic_partitions(client, url, timeout)
    except TopicAbsent:
        if partitions is None:
            raise
    try:
        for fut in client.create_topics([NewTopic(url.topic, partitions, 1)]).values():
            fut.result(timeout)
    except ck.KafkaException as e:
        if e.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
            raise KafkaIOError(f"creating topic {url.topic} with {partitions} partitions on {url.brokers} "
                               f"failed: {_why(e)}") from None
    except TimeoutError:
        raise KafkaIOError(f"creating topic {url.topic} on {url.brokers}: no answer within {timeout:.0f}s; "
                           "check HOST:PORT and that the broker runs") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            parts = topic_partitions(client, url, timeout)
            if len(parts) >= partitions or time.monotonic() > deadline:
                return parts
        except KafkaIOError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


ProduceError = ck.KafkaException  # what produce() raises when it refuses a message at once


def is_retriable(err: Any) -> bool:
    """Whether a delivery error may succeed on another try (the broker was away, a timeout, or we took
    the message back from the client's queue ourselves)."""
    return bool(err.retriable()) or err.code() in (ck.KafkaError._MSG_TIMED_OUT, ck.KafkaError._TRANSPORT,
                                                   ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._PURGE_QUEUE,
                                                   ck.KafkaError._PURGE_INFLIGHT)



# --- a member of a consumer group (`pcapwatch run --source kafka://... --group NAME`) -------------


class GroupMember:
    """One member of a consumer group on a topic of pycapa packets: `consume` gives the messages of
    the partitions this member holds; `on_assign`/`on_revoke` (and `on_lost`, when the group took
    them without asking) are called with partition ids from inside `consume`, on the caller's thread.
    Offsets are committed only by `commit`, never automatically."""

    def __init__(self, url: KafkaUrl, group: str, *, on_assign: Callable[[list[int]], None],
                 on_revoke: Callable[[list[int], bool], None], session_timeout: float = 10.0) -> None:
        self.url = url
        session_ms = int(session_timeout * 1000)
        self.consumer = ck.Consumer(client_config(url.brokers, **{
            "group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 4)}))
        try:
            topic_partitions(self.consumer, url)
        except KafkaIOError:
            self.consumer.close()
            raise
        self.consumer.subscribe(
            [url.topic], on_assign=lambda _c, parts: on_assign(sorted(p.partition for p in parts)),
            on_revoke=lambda _c, parts: on_revoke(sorted(p.partition for p in parts), False),
            on_lost=lambda _c, parts: on_revoke(sorted(p.partition for p in parts), True))

    def consume(self, n: int, timeout: float) -> list[Any]:
        try:
            return list(self.consumer.consume(n, timeout))
        except ck.KafkaException as e:
            raise KafkaIOError(f"reading {self.url.text} failed: {_why(e)}") from None

    def commit(self, offsets: dict[int, int]) -> str | None:
        """Commit `offsets` (partition -> the next offset to read) synchronously; None when done, else
        why not (one line: the group is rebalancing, the broker is away)."""
        if not offsets:
            return None
        try:
            self.consumer.commit(offsets=[ck.TopicPartition(self.url.topic, p, o) for p, o in sorted(offsets.items())],
                                 asynchronous=False)
        except ck.KafkaException as e:
            return _why(e)
        return None

    def close(self) -> None:
        self.consumer.close()


def message_error(err: Any) -> tuple[str, bool]:
    """A consumer message's error: its name, and whether it ends the run (no such topic, not allowed)."""
    return str(err.name()), bool(err.fatal()) or err.code() in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                                 ck.KafkaError.TOPIC_AUTHORIZATION_FAILED)
