"""Kafka through confluent-kafka: the only module that imports it (the house keeps every client
library in watcher/sinks/, owned by one module there), itself imported only where Kafka is used
(the library is the optional extra `pcapwatch[kafka]`): by the `kafka` output (kafka_sink.py), the
Kafka source of frames (watcher/capture/kafka.py), `publish` and `run --source kafka://`, each inside
the function that needs it.

Here: the clients and their settings, decided once (librdkafka's own log silenced, errors as our
one-line messages, what counts as retriable): a consumer of every partition for a Kafka input, the
producer, the admin client that finds or creates a topic, and a consumer-group member. The message
format is in watcher/capture/pycapa.py.

The end of a partition is what the fetch reports (`enable.partition.eof`), not a watermark query:
some brokers answer ListOffsets with a figure that lags just after a produce.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from watcher.capture.pycapa import KafkaClientMissing, KafkaUrl

try:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # only without the extra; the verbs say it in one line (cli.main)
    raise KafkaClientMissing() from None

# How long a broker may stay silent about a topic's metadata before we call it unreachable.
METADATA_SECONDS = 10.0



class KafkaIOError(OSError):
    """A broker or topic problem, as one line for a user."""


class TopicAbsent(KafkaIOError):
    """The brokers answered: they do not have the topic."""


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


def assigned_consumer(url: KafkaUrl, *, at_end: bool, config: dict[str, Any] | None = None) -> tuple[Any, list[int]]:
    """A consumer of every partition of the topic, from the beginning (or the end), reporting each
    partition's end (enable.partition.eof), outside any group's coordination (assign, never
    commit); and the partition ids. KafkaIOError when the brokers or the topic are not there."""
    consumer = ck.Consumer(client_config(url.brokers, **{
        "group.id": f"pcapwatch-read-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest", **(config or {})}))
    try:
        partitions = topic_partitions(consumer, url)
    except KafkaIOError:
        consumer.close()
        raise
    offset = ck.OFFSET_END if at_end else ck.OFFSET_BEGINNING
    consumer.assign([ck.TopicPartition(url.topic, p, offset) for p in partitions])
    return consumer, partitions


def consume(consumer: Any, url: KafkaUrl, n: int, timeout: float) -> list[Any]:
    """Up to `n` messages (errors, ends of partitions included); KafkaIOError when the client fails."""
    try:
        return list(consumer.consume(n, timeout))
    except ck.KafkaException as e:
        raise KafkaIOError(f"reading {url.text} failed: {_why(e)}") from None


def is_partition_end(err: Any) -> bool:
    return bool(err.code() == ck.KafkaError._PARTITION_EOF)


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
        return consume(self.consumer, self.url, n, timeout)

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
