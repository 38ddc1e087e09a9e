"""`pcapwatch read kafka://HOST:PORT/TOPIC` against a real broker (Tansu, see helpers/kafka.py), on a
topic filled the way pycapa's producer fills it (written in helpers/kafka.py from the format, not
with our code): the same records as `read FILE` on the capture, except `pcap_file`, which says
`kafka:TOPIC`.
"""

from __future__ import annotations

import json
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import kafka as hk
from helpers.env import corpus, read_records
from helpers.liveenv import PCAPWATCH


@pytest.fixture(scope="module")
def mix() -> Path:
    return corpus("local", "mix.pcap")


@pytest.fixture(scope="module")
def file_records(mix: Path) -> list[dict[str, Any]]:
    records, result, _ = read_records(mix)
    assert result.files_failed == 0 and len(records) > 800 and result.stats["frames"] == 7042
    return records


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[hk.Broker]:
    with hk.broker(tmp_path / "tansu.log") as b:
        yield b


def _as_from(records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    return [{**r, "pcap_file": source} for r in records]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PCAPWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          env=hk.pcapwatch_env())


def test_one_partition_gives_the_files_records(broker: hk.Broker, mix: Path,
                                               file_records: list[dict[str, Any]]) -> None:
    hk.create_topic(broker.address, "one", 1)
    assert hk.pycapa_produce(broker.address, "one", mix) == 7042
    records, result, err = read_records(broker.url("one"))
    assert err == "" and result.files_failed == 0
    assert records == _as_from(file_records, "kafka:one")
    assert result.stats["frames"] == 7042
    assert result.stats["kafka"][broker.url("one")] == {"messages": 7042, "skipped_bad_key": 0,
                                                        "skipped_bad_value": 0, "partitions": 1, "errors": {}}


def test_partitions_merged_by_capture_time(broker: hk.Broker, mix: Path,
                                           file_records: list[dict[str, Any]]) -> None:
    # pycapa leaves the partition to the client's partitioner (by key, the capture time): the
    # packets of a connection are spread over every partition, and only the merge by time puts
    # them back in order.
    hk.create_topic(broker.address, "three", 3)
    hk.pycapa_produce(broker.address, "three", mix)
    per_partition = {p: len(m) for p, m in hk.consume_all(broker.address, "three").items()}
    assert sum(per_partition.values()) == 7042 and min(per_partition.values()) > 1000
    records, _, err = read_records(broker.url("three"))
    assert err == "" and records == _as_from(file_records, "kafka:three")


def test_bad_messages_counted_and_skipped(broker: hk.Broker, mix: Path,
                                          file_records: list[dict[str, Any]]) -> None:
    from confluent_kafka import Producer

    hk.create_topic(broker.address, "mixed", 1)
    p = Producer({"bootstrap.servers": broker.address})
    p.produce("mixed", key=b"1234", value=b"\x00" * 60)  # key not 8 bytes
    p.produce("mixed", key=None, value=b"\x00" * 60)  # no key
    p.produce("mixed", key=struct.pack(">Q", 1), value=b"")  # no frame
    assert p.flush(10) == 0
    hk.pycapa_produce(broker.address, "mixed", mix, partition=0)
    records, result, err = read_records(broker.url("mixed"))
    assert records == _as_from(file_records, "kafka:mixed")
    assert result.stats["kafka"][broker.url("mixed")]["skipped_bad_key"] == 2
    assert result.stats["kafka"][broker.url("mixed")]["skipped_bad_value"] == 1
    assert err == (f"pcapwatch: {broker.url('mixed')}: skipped 3 messages that are not pycapa packets (2 with a "
                   "key that is not an 8-byte capture time, 1 without a frame)\n")


def test_max_packets_and_stats_on_the_command_line(broker: hk.Broker, mix: Path) -> None:
    hk.create_topic(broker.address, "cap", 2)
    hk.pycapa_produce(broker.address, "cap", mix)
    r = run("read", broker.url("cap"), "--max-packets", "1000", "--stats", "json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stderr.splitlines()[-1])
    assert stats["frames"] == 1000 and stats["kafka"][broker.url("cap")]["messages"] == 1000
    assert stats["transactions"] == len(r.stdout.splitlines()) > 0


def test_offset_end_reads_only_new_messages(broker: hk.Broker, mix: Path,
                                            file_records: list[dict[str, Any]]) -> None:
    hk.create_topic(broker.address, "live", 1)
    hk.pycapa_produce(broker.address, "live", mix)  # already there: not read
    proc = subprocess.Popen([*PCAPWATCH, "read", broker.url("live"), "--kafka-offset", "end", "--max-packets",
                             "7042", "--stats", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=hk.pcapwatch_env())
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == (f"pcapwatch: {broker.url('live')}: at the end of every partition; "
                                          "reading new messages\n")
        sender = threading.Thread(target=hk.pycapa_produce, args=(broker.address, "live", mix))
        sender.start()
        out, err = proc.communicate(timeout=60)
        sender.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    stats = json.loads(err)
    assert stats["frames"] == 7042
    assert [json.loads(line) for line in out.splitlines()] == _as_from(file_records, "kafka:live")


def test_broker_away_and_bad_address_are_one_line(mix: Path) -> None:
    from helpers.liveenv import free_port

    port = free_port()
    r = run("read", f"kafka://127.0.0.1:{port}/x", timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"pcapwatch: error: kafka://127.0.0.1:{port}/x: cannot open: no answer from "
                                     f"the Kafka brokers 127.0.0.1:{port} within 10s (Failed to get metadata: Local: "
                                     "Broker transport failure); check HOST:PORT and that the broker runs"]
    r = run("read", "kafka://127.0.0.1/x")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["pcapwatch: error: kafka://127.0.0.1/x: cannot open: broker '127.0.0.1' is "
                                     "not HOST:PORT; write kafka://HOST:PORT/TOPIC"]


def test_missing_topic(broker: hk.Broker) -> None:
    r = run("read", broker.url("nothere"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"pcapwatch: error: {broker.url('nothere')}: cannot open: topic nothere is not on "
                               f"the brokers {broker.address} (")


def test_without_the_kafka_library_one_line(tmp_path: Path, mix: Path) -> None:
    """confluent-kafka is an optional extra: without it a Kafka input, a publish and a kafka output
    each say so in one line; nothing else needs it."""
    import sys

    code = ("import sys; sys.modules['confluent_kafka'] = None; from watcher.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    config = tmp_path / "c.yaml"
    config.write_text(f"spool: {{dir: {str(tmp_path)!r}}}\nstate: {{dir: {str(tmp_path / 'st')!r}}}\n"
                      "outputs:\n  - {name: k, type: kafka}\n")
    line = ("pcapwatch: error: Kafka needs the confluent-kafka package, which is not installed: pip install "
            "'pcapwatch[kafka]'\n")
    for args in (["read", "kafka://127.0.0.1:9/t"], ["publish", str(mix), "--to", "kafka://127.0.0.1:9/t"],
                 ["export", "kafka://127.0.0.1:9/t", "-w", str(tmp_path / "x.pcap")], ["run", "-c", str(config)]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                           env=hk.pcapwatch_env())
        assert (r.returncode, r.stderr) == (2, line), args
    r = subprocess.run([sys.executable, "-c", code, "read", str(mix)], capture_output=True, text=True, timeout=60,
                       env=hk.pcapwatch_env())
    assert r.returncode == 0 and [json.loads(x) for x in r.stdout.splitlines()] == read_records(mix)[0]
