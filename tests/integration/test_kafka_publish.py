"""`pcapwatch publish` against a real broker (Tansu), checked with pycapa's consumer (helpers/kafka.py,
written from the format): the same frames with the same µs times as the capture, each connection
(found here with struct, not with our decoder) in one partition, in capture order."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import kafka as hk
from helpers.env import corpus, read_records
from helpers.liveenv import PCAPWATCH, free_port


@pytest.fixture(scope="module")
def mix() -> Path:
    return corpus("local", "mix.pcap")


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[hk.Broker]:
    with hk.broker(tmp_path / "tansu.log") as b:
        yield b


def publish(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PCAPWATCH, "publish", *args], capture_output=True, text=True, timeout=180,
                          env=hk.pcapwatch_env(), **kw)


def _connection(frame: bytes) -> tuple[bytes, ...]:
    """Ethernet + IPv4 or IPv6 + TCP (all of mix.pcap): the unordered pair of ends."""
    if frame[12:14] == b"\x08\x00":
        assert frame[23] == 6
        ihl = (frame[14] & 0x0F) * 4
        a, b = frame[26:30] + frame[14 + ihl:16 + ihl], frame[30:34] + frame[16 + ihl:18 + ihl]
    else:
        assert frame[12:14] == b"\x86\xdd" and frame[20] == 6
        a, b = frame[22:38] + frame[54:56], frame[38:54] + frame[56:58]
    return (a, b) if a <= b else (b, a)


def test_publish_then_pycapa_consumer(broker: hk.Broker, mix: Path) -> None:
    r = publish(str(mix), "--to", broker.url("packets"), "--partitions", "4")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"pcapwatch: published 7,042 frames from 1 inputs to {broker.url('packets')} "
                               "(4 partitions) in ")
    assert r.stderr.endswith(": delivered 7,042, failed 0, retried 0, queue full 0\n")
    messages = hk.consume_all(broker.address, "packets")
    assert sorted(messages) == [0, 1, 2, 3]
    file_packets = [(sec * 1_000_000 + usec, frame) for sec, usec, frame in hk.pcap_records(mix)]
    got = [(struct.unpack(">Q", k)[0], v) for p in sorted(messages) for k, v, _ in messages[p]]  # type: ignore[arg-type]
    assert sorted(got) == sorted(file_packets) and len(got) == 7042
    # each connection in exactly one partition, its packets in capture order
    where: dict[tuple[bytes, ...], set[int]] = {}
    for p, msgs in messages.items():
        for _k, v, _o in msgs:
            assert v is not None
            where.setdefault(_connection(v), set()).add(p)
    assert all(len(ps) == 1 for ps in where.values()) and len(where) > 4
    assert len({next(iter(ps)) for ps in where.values()}) == 4  # every partition got connections
    for msgs in messages.values():
        in_partition = [(struct.unpack(">Q", k)[0], v) for k, v, _ in msgs]  # type: ignore[arg-type]
        mine = {_connection(v) for _t, v in in_partition}
        assert in_partition == [fp for fp in file_packets if _connection(fp[1]) in mine]
    # and reading the topic back gives the file's records
    records, _, err = read_records(broker.url("packets"))
    file_records, _, _ = read_records(mix)
    assert err == "" and records == [{**rec, "pcap_file": "kafka:packets"} for rec in file_records]


def test_topic_must_exist_unless_partitions_given(broker: hk.Broker, mix: Path) -> None:
    r = publish(str(mix), "--to", broker.url("absent"))
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.startswith(f"pcapwatch: error: --to {broker.url('absent')}: topic absent is not on the brokers "
                               f"{broker.address} (")
    assert r.stderr.endswith("); create it or check the name\n") and len(r.stderr.splitlines()) == 1
    hk.create_topic(broker.address, "two", 2)  # an existing topic keeps its partitions
    r = publish("-", "--to", broker.url("two"), "--partitions", "8", stdin=mix.open("rb"))
    assert r.returncode == 0 and "to " + broker.url("two") + " (2 partitions)" in r.stderr
    assert sum(len(m) for m in hk.consume_all(broker.address, "two").values()) == 7042


def test_broker_away_and_bad_address(mix: Path) -> None:
    port = free_port()
    r = publish(str(mix), "--to", f"kafka://127.0.0.1:{port}/t", "--partitions", "2")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"pcapwatch: error: --to kafka://127.0.0.1:{port}/t: no answer from the Kafka brokers")
    r = publish(str(mix), "--to", "kafka:/x")
    assert r.returncode == 2
    assert r.stderr == ("pcapwatch: error: --to kafka:/x: not a Kafka address; write kafka://HOST:PORT/TOPIC (several "
                        "brokers separated by commas; a topic name of letters, digits, '.', '_' and '-')\n")


def test_broker_cut_off_mid_run_nothing_lost(broker: hk.Broker, mix: Path, tmp_path: Path) -> None:
    """The producer talks to the broker through a proxy that is stopped mid-run and started again:
    every frame arrives, once."""
    hk.create_topic(broker.address, "cut", 3)
    port = free_port()
    big = tmp_path / "big.pcap"
    data = mix.read_bytes()
    big.write_bytes(data + data[24:] * 3)  # 4 x 7042 frames
    with hk.proxy(broker, port) as px:
        proc = subprocess.Popen([*PCAPWATCH, "publish", str(big), "--to", px.url("cut")], stderr=subprocess.PIPE,
                                text=True, env=hk.pcapwatch_env())
        try:
            import time

            time.sleep(0.8)
            hk.stop(px.proc)
            time.sleep(3)
            with hk.proxy(broker, port):
                _, err = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "delivered 28,168, failed 0" in err
    got = [v for msgs in hk.consume_all(broker.address, "cut").values() for _k, v, _o in msgs]
    assert len(got) == 28_168


def test_republish_a_pycapa_topic_by_connection(broker: hk.Broker, mix: Path) -> None:
    """A topic pycapa filled (a connection over every partition) re-published by connection."""
    hk.create_topic(broker.address, "sensors", 3)
    hk.pycapa_produce(broker.address, "sensors", mix)
    r = publish(broker.url("sensors"), "--to", broker.url("byconn"), "--partitions", "4")
    assert r.returncode == 0 and "delivered 7,042, failed 0" in r.stderr
    where: dict[tuple[bytes, ...], set[int]] = {}
    for p, msgs in hk.consume_all(broker.address, "byconn").items():
        for _k, v, _o in msgs:
            assert v is not None
            where.setdefault(_connection(v), set()).add(p)
    assert all(len(ps) == 1 for ps in where.values())
    records, _, _ = read_records(broker.url("byconn"))
    file_records, _, _ = read_records(mix)
    assert records == [{**rec, "pcap_file": "kafka:byconn"} for rec in file_records]
