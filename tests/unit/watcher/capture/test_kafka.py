"""KafkaSource's merge of partitions, on scripted consumer answers (no broker: the real one is in
tests/integration/test_kafka_*.py)."""

from __future__ import annotations

import struct
import threading
from typing import Any

from helpers.env import missing

try:
    import confluent_kafka as ck
except ImportError:  # pragma: no cover
    missing("confluent-kafka is not installed (pip install -e '.[test]')")

from watcher.capture.kafka import KafkaSource
from watcher.capture.pycapa import parse_kafka_url

EOF_ = object()


class Msg:
    def __init__(self, partition: int, item: Any, offset: int = 0) -> None:
        self._p, self._offset = partition, offset
        self._err = ck.KafkaError(ck.KafkaError._PARTITION_EOF) if item is EOF_ else None
        self._key = None if item is EOF_ else (struct.pack(">Q", item) if isinstance(item, int) else item[0])
        self._value = None if item is EOF_ else (b"frame%d" % item if isinstance(item, int) else item[1])

    def partition(self) -> int:
        return self._p

    def error(self) -> Any:
        return self._err

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset


class Script:
    """consume() answers, one list per call; then nothing, a few times; then the read is stuck: fail."""

    def __init__(self, answers: list[list[Msg]]) -> None:
        self.answers = answers
        self.spare = 5

    def consume(self, _n: int, _timeout: float) -> list[Msg]:
        if self.answers:
            return self.answers.pop(0)
        self.spare -= 1
        assert self.spare >= 0, "the read did not end after the last answer"
        return []

    def close(self) -> None:
        pass


def source(answers: list[list[Msg]], partitions: int, **kw: Any) -> KafkaSource:
    s = KafkaSource.__new__(KafkaSource)
    s.url = parse_kafka_url("kafka://h:1/t")
    s.path, s.name, s.linktype = s.url.text, s.url.source_name, 1
    s.max_packets = kw.get("max_packets")
    s.follow = kw.get("follow", False)
    from watcher.capture.kafka import SourceCounters

    s.counters = SourceCounters(partitions=partitions)
    s.stopped = kw.get("stop", threading.Event())
    s.notes = None
    from watcher.sinks import kafka_client

    s.kc = kafka_client
    s.consumer = Script(answers)
    s.partitions = list(range(partitions))
    s._closed = False
    return s


def read(s: KafkaSource) -> list[tuple[int, float, bytes]]:
    return [f for batch in s.read() for _lt, frames in batch for f in frames]


def test_merged_by_time_each_partition_in_order_and_more_after_an_end() -> None:
    answers = [
        [Msg(0, 1, 0), Msg(0, 3, 1), Msg(0, EOF_)],  # p0 at its end with messages waiting
        [Msg(0, 5, 2), Msg(1, 2, 0)],  # more on p0 after its end; p1's first
        [Msg(1, EOF_)],
        [Msg(0, EOF_)],
    ]
    frames = read(source(answers, 2))
    assert [(f[0], f[2]) for f in frames] == [(0, b"frame1"), (0, b"frame2"), (1, b"frame3"), (2, b"frame5")]
    assert frames[0][1] == 1e-6


def test_a_partition_out_of_time_order_keeps_its_order() -> None:
    answers = [[Msg(0, 10, 0), Msg(0, 5, 1), Msg(1, 7, 0), Msg(0, EOF_), Msg(1, EOF_)]]
    assert [f[2] for f in read(source(answers, 2))] == [b"frame7", b"frame10", b"frame5"]


def test_waits_for_every_partition_before_emitting() -> None:
    """p0's message waits until p1 has one (or is at its end): nothing comes out of the first two answers."""
    s = source([[Msg(0, 1, 0)], [], [Msg(1, 9, 0), Msg(0, EOF_)], [Msg(1, EOF_)]], 2)
    it = s.read()
    first = next(it)
    assert [f[2] for _lt, fr in first for f in fr] == [b"frame1", b"frame9"]
    assert len(s.consumer.answers) == 1  # type: ignore[attr-defined]  # read after the third answer
    assert list(it) == []


def test_bad_messages_counted_and_max_packets() -> None:
    answers = [[Msg(0, (b"short", b"x")), Msg(0, (struct.pack(">Q", 4), b"")), Msg(0, (None, b"x")),
                Msg(0, 1, 3), Msg(0, 2, 4), Msg(0, 3, 5), Msg(0, EOF_)]]
    s = source(answers, 1, max_packets=2)
    assert [f[2] for f in read(s)] == [b"frame1", b"frame2"]
    assert s.stats() == {"messages": 2, "skipped_bad_key": 2, "skipped_bad_value": 1, "partitions": 1, "errors": {}}


def test_follow_skips_what_was_there_and_stops_when_told() -> None:
    """Reading new messages: the one before the first end of the partition was there already; the
    read goes on until `stop` is set, however long the topic stays silent."""
    stop = threading.Event()
    answers = [[Msg(0, 1, 0), Msg(0, EOF_)], [Msg(0, 2, 1)], [], [], [Msg(0, 3, 2)], [], []]
    s = source(answers, 1, follow=True, stop=stop)
    got = []
    for batch in s.read():
        got += [f[2] for _lt, fr in batch for f in fr]
        if len(got) == 2:
            stop.set()
    assert got == [b"frame2", b"frame3"] and s.consumer.answers == [[], []]  # type: ignore[attr-defined]
