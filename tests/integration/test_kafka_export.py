"""`pcapwatch export kafka://...`: the libpcap file pycapa's consumer writes (that consumer written in
helpers/kafka.py from the format), byte for byte, against a real broker; and a file input."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import kafka as hk
from helpers.env import corpus
from helpers.liveenv import PCAPWATCH


@pytest.fixture(scope="module")
def mix() -> Path:
    return corpus("local", "mix.pcap")


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[hk.Broker]:
    with hk.broker(tmp_path / "tansu.log") as b:
        yield b


def export(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PCAPWATCH, "export", *args], capture_output=True, timeout=120, env=hk.pcapwatch_env())


def _records(pcap: bytes) -> list[bytes]:
    import struct

    out, off = [], 24
    while off < len(pcap):
        caplen = struct.unpack_from("I", pcap, off + 8)[0]
        out.append(pcap[off:off + 16 + caplen])
        off += 16 + caplen
    return out


def test_export_of_a_topic_is_pycapas_file(broker: hk.Broker, mix: Path, tmp_path: Path) -> None:
    hk.create_topic(broker.address, "one", 1)
    hk.pycapa_produce(broker.address, "one", mix)
    pycapa = hk.pycapa_pcap(hk.consume_all(broker.address, "one")[0])
    r = export(broker.url("one"), "-w", str(tmp_path / "out.pcap"))
    assert r.returncode == 0 and r.stderr == b""
    assert (tmp_path / "out.pcap").read_bytes() == pycapa
    # and what pycapa writes is the capture itself but for the snaplen (mix.pcap's caplen = len everywhere)
    original = mix.read_bytes()
    assert pycapa[:16] + pycapa[20:] == original[:16] + original[20:] and len(pycapa) == 13_055_937
    r = export(broker.url("one"), "-w", "-")  # to a pipe
    assert r.returncode == 0 and r.stdout == pycapa


def test_export_of_several_partitions_merges_them_by_time(broker: hk.Broker, mix: Path, tmp_path: Path) -> None:
    hk.create_topic(broker.address, "three", 3)
    hk.pycapa_produce(broker.address, "three", mix)
    messages = hk.consume_all(broker.address, "three")
    r = export(broker.url("three"), "-w", "-", "--stats")
    assert r.returncode == 0
    assert r.stderr.decode() == ("pcapwatch: exported 7,042 packets from 1 inputs (0 with errors, 0 frames of another "
                                 "link type left out) to -\n")
    ours = r.stdout
    # the same header, the same records as pycapa's consumer gives (in its order of arrival)...
    pycapa = hk.pycapa_pcap([m for p in sorted(messages) for m in messages[p]])
    assert ours[:24] == pycapa[:24] and sorted(_records(ours)) == sorted(_records(pycapa))
    # ... with each partition's order kept (the merge by time only interleaves them)
    ours_records = _records(ours)
    for p in sorted(messages):
        it = iter(ours_records)
        assert all(any(rec == r for r in it) for rec in _records(hk.pycapa_pcap(messages[p]))), p


def test_export_of_a_file(mix: Path, tmp_path: Path) -> None:
    r = export(str(mix), "-w", str(tmp_path / "copy.pcap"))
    assert r.returncode == 0 and r.stderr == b""
    copy, original = (tmp_path / "copy.pcap").read_bytes(), mix.read_bytes()
    assert copy[16:20] == (65535).to_bytes(4, "little") and copy[:16] + copy[20:] == original[:16] + original[20:]


def test_export_of_new_messages_streams_to_a_pipe(broker: hk.Broker, mix: Path) -> None:
    """`export kafka://... --kafka-offset end -w -` as for `| wireshark -k -i -`: the header at once,
    the packets as they arrive (the pipe drained as a reader would), a clean end on SIGTERM."""
    import os
    import signal
    import struct
    import threading

    hk.create_topic(broker.address, "live", 1)
    proc = subprocess.Popen([*PCAPWATCH, "export", broker.url("live"), "--kafka-offset", "end", "-w", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=hk.pcapwatch_env())
    got = bytearray()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        fd = proc.stdout.fileno()
        while len(got) < 24:  # before any message: the header is there already
            chunk = os.read(fd, 24 - len(got))
            assert chunk, "the exporter ended early"
            got += chunk
        assert bytes(got) == struct.pack("IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        assert proc.stderr.readline().endswith(b"at the end of every partition; reading new messages\n")

        def drain() -> None:
            while chunk := os.read(fd, 1 << 16):
                got.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        hk.pycapa_produce(broker.address, "live", mix)
        original = mix.read_bytes()
        assert wait_for_len(got, len(original), 30) and proc.poll() is None  # all there, still running
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert bytes(got) == original[:16] + b"\xff\xff\x00\x00" + original[20:]


def wait_for_len(buf: bytearray, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while len(buf) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(buf) >= n
