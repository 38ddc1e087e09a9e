"""watcher/replay/job.py's `Origins`: a replayed transaction's event_id (its X-Request-ID) is the one
`run` gives it: for a capture file, the file's content fingerprint and where the request head is in
it; for a Kafka topic, topic, partition and offset, as a `run --group` member derives it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from helpers import pcapgen as g
from helpers.pcapgen import Conn, Segment

from analyzers import Pipeline, Strings, Transaction
from watcher.capture.kafka import OFFSET_BITS
from watcher.capture.pycapa import parse_kafka_url
from watcher.capture.spool import file_fingerprint
from watcher.replay.job import INPUT_SHIFT, Origins
from watcher.run.group import GroupService
from watcher.run.resume import POS_BITS, event_id

T0 = 1_700_000_000 * 10**9


def exchange(n: int, uri: str) -> list[tuple[int, bytes]]:
    """One connection: handshake (3 packets), a GET in the 4th, its answer, close."""
    out: list[Segment] = []
    c = Conn(out, n)
    c.open(T0 + n * 10**8)
    t = c.send(T0 + n * 10**8 + 10**7, True, f"GET {uri} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    t = c.send(t + 10**6, False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.close(t + 10**6)
    return g.frames(out)


def feed(pipeline: Pipeline, packets: list[tuple[int, bytes]], base: int, pos: list[int]) -> list[Transaction]:
    frames = [(p, ts / 1e9, f) for p, (ts, f) in zip(pos, packets, strict=True)]
    return pipeline.feed(1, frames, base) + pipeline.close()


def by_uri(txs: list[Transaction], eid: Any) -> dict[str, str]:
    return {tx.request.head.uri: eid(tx) for tx in txs}  # type: ignore[union-attr]


def test_kafka_event_id_is_the_one_run_group_gives(tmp_path: Path) -> None:
    conns = {0: exchange(1, "/a"), 3: exchange(2, "/b")}  # partition -> its messages, offsets 0, 1, ...
    origins = Origins()
    g.write_pcap(tmp_path / "before.pcap", 1, exchange(3, "/c"))
    assert origins.begin(str(tmp_path / "before.pcap")) == 0
    base = origins.begin("kafka://h:9092/pkts")
    assert base == 1 << INPUT_SHIFT
    replay_ids: dict[str, str] = {}
    group_ids: dict[str, str] = {}
    member: Any = SimpleNamespace(url=parse_kafka_url("kafka://other:1/pkts"), delivery=SimpleNamespace(
        strings=Strings.UTF8))
    for part, packets in conns.items():
        # as KafkaSource positions them, and as `run --group` does (group.py _analyse)
        txs = feed(Pipeline(), packets, base, [part << OFFSET_BITS | o for o in range(len(packets))])
        replay_ids |= by_uri(txs, lambda tx: origins.event_id(tx.request.pos, tx.request.pos_index))
        txs = feed(Pipeline(), packets, part << POS_BITS, list(range(len(packets))))
        group_ids |= by_uri(txs, lambda tx: GroupService.record(member, tx)["event_id"])
    assert replay_ids == group_ids
    # the request head is message 3 of its partition (after the handshake)
    assert replay_ids == {"/a": event_id("kafka:pkts:0", 3, 0), "/b": event_id("kafka:pkts:3", 3, 0)}


def test_file_event_id_is_the_one_run_gives(tmp_path: Path) -> None:
    origins = Origins()
    assert origins.begin("kafka://h:9092/pkts") == 0
    packets = exchange(1, "/a")
    path = tmp_path / "cap.pcap"
    g.write_pcap(path, 1, packets)
    base = origins.begin(str(path))
    assert base == 1 << INPUT_SHIFT
    offsets, off = [], 24
    for _ts, frame in packets:
        offsets.append(off)
        off += 16 + len(frame)
    txs = feed(Pipeline(), packets, base, offsets)
    fp = file_fingerprint(str(path))
    assert fp is not None
    assert by_uri(txs, lambda tx: origins.event_id(tx.request.pos, tx.request.pos_index)) == {
        "/a": event_id(fp, offsets[3], 0)}


def test_stdin_and_a_file_that_is_no_capture_get_a_fixed_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not a capture at all")
    origins = Origins()
    origins.begin("-")
    origins.begin(str(tmp_path / "junk"))
    assert origins.event_id(5, 0) == origins.event_id(1 << INPUT_SHIFT | 5, 0)
