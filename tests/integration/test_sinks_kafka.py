"""The kafka output against a real broker (Tansu, helpers/kafka.py), read back with a plain consumer:
every record in the topic once, keyed as configured; the connection to the broker cut mid-run (a
Kafka proxy in front of the broker is stopped and started again, so the broker keeps what it holds)
loses nothing while the buffer holds, and with a small buffer the counters say exactly what was
kept and dropped."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import kafka as hk
from helpers.liveenv import free_port, wait_until

from watcher.config.model import KafkaOutputConfig
from watcher.sinks import open_sink
from watcher.sinks.base import Backoff, Record
from watcher.sinks.ecs import to_ecs
from watcher.sinks.kafka_sink import KafkaSink


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[hk.Broker]:
    with hk.broker(tmp_path / "tansu.log") as b:
        yield b


def record(i: int) -> Record:
    return {"ts": 1700000000.0 + i / 1000, "uid": f"C{i % 50}", "trans_depth": i // 50 + 1,
            "src_ip": "192.0.2.10", "src_port": 40000 + i % 50, "dst_ip": "192.0.2.80", "dst_port": 80,
            "method": "GET", "host": "shop.test", "uri": f"/item/{i}", "status_code": 200, "duration_ms": 1.0,
            "flags": [], "anomalies": [], "event_id": f"ev{i:07d}"}


def sink(address: str, topic: str, **kw: Any) -> KafkaSink:
    s = open_sink(KafkaOutputConfig("kafka", "kafka", brokers=address, topic=topic, **kw))
    assert isinstance(s, KafkaSink)
    s.backoff = Backoff(0.05, 0.5)
    return s


def on_topic(address: str, topic: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(k.decode() if k is not None else None, json.loads(v or b""))
            for msgs in hk.consume_all(address, topic).values() for k, v, _ in msgs]


def test_every_record_once_keyed_by_uid(broker: hk.Broker) -> None:
    hk.create_topic(broker.address, "http", 3)
    n = 5000
    s = sink(broker.address, "http", buffer=n)
    try:
        for i in range(n):
            s.submit(record(i))
        assert s.flush(60)
        assert s.stats() == {"submitted": n, "written": n, "dropped": 0, "retries": 0, "errors": 0,
                             "reconnects": 0, "buffered": 0}
    finally:
        s.close(5)
    got = on_topic(broker.address, "http")
    assert sorted(r["event_id"] for _, r in got) == [f"ev{i:07d}" for i in range(n)]
    assert all(k == r["uid"] for k, r in got) and got[0][1] == record(int(got[0][1]["event_id"][2:]))
    # a connection's records in one partition, in order
    by_partition = hk.consume_all(broker.address, "http")
    for msgs in by_partition.values():
        depths: dict[str, list[int]] = {}
        for k, v, _ in msgs:
            depths.setdefault((k or b"").decode(), []).append(json.loads(v or b"")["trans_depth"])
        assert all(d == sorted(d) for d in depths.values())
    assert len({(k or b"") for msgs in by_partition.values() for k, _, _ in msgs}) == 50


def test_ecs_values_keyed_by_event_id(broker: hk.Broker) -> None:
    hk.create_topic(broker.address, "ecs", 1)
    s = sink(broker.address, "ecs", key="event_id", format="ecs", compression="gzip", acks="leader")
    try:
        for i in range(10):
            s.submit(record(i))
        assert s.flush(30)
    finally:
        s.close(5)
    assert on_topic(broker.address, "ecs") == [(f"ev{i:07d}", json.loads(json.dumps(to_ecs(record(i)))))
                                               for i in range(10)]


def test_broker_cut_off_mid_run_loses_nothing_while_the_buffer_holds(broker: hk.Broker, tmp_path: Path) -> None:
    hk.create_topic(broker.address, "cut", 3)
    n, rate = 6000, 2000.0  # a 1.5 s outage needs about 3000 of the 10,000 buffer
    port = free_port()
    stopped, started = threading.Event(), threading.Event()
    with hk.proxy(broker, port, tmp_path / "proxy.log") as px:
        s = sink(px.address, "cut", buffer=10_000)
        proxies = [px]

        def outage() -> None:
            time.sleep(1.0)
            hk.stop(proxies[0].proc)
            stopped.set()
            time.sleep(1.5)
            cm = hk.proxy(broker, port, tmp_path / "proxy.log")
            proxies.append(cm.__enter__())
            proxies.append(cm)  # type: ignore[arg-type]
            started.set()

        t = threading.Thread(target=outage)
        try:
            t0 = time.monotonic()
            t.start()
            peak = 0
            for i in range(n):
                s.submit(record(i))
                ahead = i / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
                if i % 100 == 0:
                    peak = max(peak, s.stats()["buffered"])
            t.join(30)
            assert stopped.is_set() and started.is_set()
            assert s.flush(60)
            st = s.stats()
        finally:
            t.join(30)
            s.close(5)
            if len(proxies) == 3:
                proxies[2].__exit__(None, None, None)  # type: ignore[attr-defined]
    got = Counter(r["event_id"] for _, r in on_topic(broker.address, "cut"))
    assert set(got) == {f"ev{i:07d}" for i in range(n)}  # nothing lost
    assert set(got.values()) == {1}, [e for e, c in got.items() if c > 1][:5]  # nothing twice
    assert (st["submitted"], st["written"], st["dropped"], st["buffered"]) == (n, n, 0, 0)
    # the outage was shorter than the client's delivery timeout: its records waited in the buffer
    # (and the client's queue) and went once it was back, nothing counted as failed
    assert peak > 1000 and st["errors"] == 0


def test_small_buffer_drops_are_counted_exactly(broker: hk.Broker, tmp_path: Path) -> None:
    hk.create_topic(broker.address, "small", 2)
    port = free_port()
    with hk.proxy(broker, port, tmp_path / "proxy.log") as px:
        s = sink(px.address, "small", buffer=500, batch=100)
        try:
            for lo in (0, 500):  # the buffer holds 500: submit while the broker is reachable, in two halves
                for i in range(lo, lo + 500):
                    s.submit(record(i))
                assert s.flush(30)
            hk.stop(px.proc)
            for i in range(1000, 3000):
                s.submit(record(i))
            assert wait_until(lambda: s.stats()["errors"] >= 1, 40.0)
            st = s.stats()
            assert (st["written"], st["buffered"], st["dropped"]) == (1000, 500, 1500)
            with hk.proxy(broker, port, tmp_path / "proxy.log"):
                assert s.flush(60)
                st = s.stats()
        finally:
            s.close(5)
    # kept: the 500 that fit in the buffer while the broker was away; the next 1500 dropped and counted
    assert sorted(r["event_id"] for _, r in on_topic(broker.address, "small")) == [f"ev{i:07d}" for i in range(1500)]
    assert (st["submitted"], st["written"], st["dropped"], st["buffered"], st["reconnects"]) == (3000, 1500, 1500, 0, 1)
    assert st["retries"] >= 1


def test_broker_away_at_start_is_retried_not_fatal(tmp_path: Path) -> None:
    port = free_port()
    lines: list[str] = []
    s = open_sink(KafkaOutputConfig("kafka", "kafka", brokers=f"127.0.0.1:{port}", topic="t"),
                  log=lambda level, text: lines.append(f"{level}: {text}"))
    try:
        s.submit(record(0))
        assert wait_until(lambda: s.stats()["errors"] >= 1, 20.0)
        assert s.stats()["buffered"] == 1 and s.stats()["dropped"] == 0
    finally:
        s.close(0.5)
    assert lines[0] == (f"warning: kafka output kafka: no answer from the Kafka brokers 127.0.0.1:{port} within 5s "
                        "(Failed to get metadata: Local: Broker transport failure); check HOST:PORT and that the "
                        "broker runs; buffering and retrying with backoff")
    assert s.stats()["dropped"] == 1  # given up at close, and counted


def test_the_service_writes_every_record_to_the_topic_once(broker: hk.Broker, tmp_path: Path) -> None:
    """`pcapwatch run` with a jsonl and a kafka output on the corpus capture: the topic holds exactly
    the jsonl output's records (each once, keyed by uid); the output's counters are in the metrics."""
    import shutil

    from helpers.env import corpus, read_records
    from helpers.liveenv import Service, read_jsonl

    mix = corpus("local", "mix.pcap")
    hk.create_topic(broker.address, "records", 4)
    spool, state = tmp_path / "spool", tmp_path / "state"
    spool.mkdir()
    shutil.copy(mix, spool / "cap.pcap")
    config = tmp_path / "pcapwatch.yaml"
    config.write_text(f"spool: {{dir: {json.dumps(str(spool))}, rescan_seconds: 0.5}}\n"
                      f"state: {{dir: {json.dumps(str(state))}, checkpoint_seconds: 1.0}}\n"
                      "outputs:\n"
                      f"  - {{name: records, type: jsonl, path: {json.dumps(str(tmp_path / 'out.jsonl'))}}}\n"
                      f"  - {{name: topic, type: kafka, brokers: '{broker.address}', topic: records}}\n")
    svc = Service(config, tmp_path / "stderr")
    try:
        svc.wait_ready()
        n = len(read_records(mix)[0])
        assert wait_until(lambda: len(read_jsonl(tmp_path / "out.jsonl")) >= n, 60)
    finally:
        assert svc.stop() == 0
    jsonl = read_jsonl(tmp_path / "out.jsonl")
    got = on_topic(broker.address, "records")
    assert len(jsonl) == n and sorted(json.dumps(r, sort_keys=True) for _, r in got) == \
        sorted(json.dumps(r, sort_keys=True) for r in jsonl)
    assert all(k == r["uid"] for k, r in got)
    assert [x for x in svc.lines() if ": info: " not in x] == []


def test_broker_stopped_and_started_again(tmp_path: Path) -> None:
    """The broker itself stopped and a new one started on its address (Tansu keeps topics in memory, so
    the new one starts empty and the topic is created again): what the output buffered meanwhile is
    all in the new broker, once; what was written before is in the old one."""
    port = free_port()
    with hk.broker(tmp_path / "tansu1.log", port) as first:
        hk.create_topic(first.address, "http", 2)
        s = sink(first.address, "http", buffer=5000)
        for i in range(1000):
            s.submit(record(i))
        assert s.flush(30)
        before = on_topic(first.address, "http")
    try:
        for i in range(1000, 2000):  # the broker is away: buffered
            s.submit(record(i))
        time.sleep(2.0)
        assert s.stats()["buffered"] == 1000 and s.stats()["dropped"] == 0
        with hk.broker(tmp_path / "tansu2.log", port) as second:
            hk.create_topic(second.address, "http", 2)
            assert s.flush(60)
            after = on_topic(second.address, "http")
        st = s.stats()
    finally:
        s.close(1)
    assert sorted(r["event_id"] for _, r in before) == [f"ev{i:07d}" for i in range(1000)]
    assert sorted(r["event_id"] for _, r in after) == [f"ev{i:07d}" for i in range(1000, 2000)]
    assert (st["submitted"], st["written"], st["dropped"], st["buffered"]) == (2000, 2000, 0, 0)
