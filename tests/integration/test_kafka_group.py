"""`pcapwatch run --source kafka://... --group NAME`: members of a consumer group share a topic's
partitions, against a real broker (Tansu). The topic is filled by `pcapwatch publish` (one
connection per partition) from the corpus capture, in pieces, while the members run. Two members
together write exactly the records `read` finds in the capture, each some; with one killed (-9)
mid-run, the other takes its partitions over and the union still holds every record, any repeat
carrying the same event_id.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import kafka as hk
from helpers.env import corpus, read_records
from helpers.liveenv import PCAPWATCH, free_port, read_jsonl, stop_process, wait_until

pytestmark = pytest.mark.slow

PIECES = 6
SESSION_SECONDS = 6  # short, so that a killed member's partitions move on quickly
# Fields only `run` adds (route, tags, headers, event_id) or that name the input (pcap_file).
RUN_ONLY = ("event_id", "pcap_file", "route", "tags", "request_headers", "response_headers")


@pytest.fixture(scope="module")
def mix() -> Path:
    return corpus("local", "mix.pcap")


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[hk.Broker]:
    with hk.broker(tmp_path / "tansu.log") as b:
        yield b


def content(r: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in r.items() if k not in RUN_ONLY}, sort_keys=True)


def pieces(mix: Path, out: Path) -> list[Path]:
    """The capture cut into PIECES files of consecutive packets."""
    data = mix.read_bytes()
    offsets, off = [], 24
    while off < len(data):
        offsets.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    offsets.append(len(data))
    step = (len(offsets) - 1) // PIECES + 1
    files = []
    for k in range(PIECES):
        lo, hi = offsets[min(k * step, len(offsets) - 1)], offsets[min((k + 1) * step, len(offsets) - 1)]
        f = out / f"piece{k}.pcap"
        f.write_bytes(data[:24] + data[lo:hi])
        files.append(f)
    return files


class Member:
    def __init__(self, base: Path, name: str, url: str, checkpoint_seconds: float = 0.5,
                 metrics_port: int | None = None, in_config: bool = False) -> None:
        """`in_config`: the topic and group in the configuration (kafka.source, kafka.group), not on the
        command line."""
        self.out, self.err = base / f"{name}.jsonl", base / f"{name}.stderr"
        config = base / f"{name}.yaml"
        state = json.dumps(str(base / ("state-" + name)))
        config.write_text(f"state: {{dir: {state}, checkpoint_seconds: {checkpoint_seconds}}}\n"
                          f"outputs:\n  - {{name: records, type: jsonl, path: {json.dumps(str(self.out))}}}\n" +
                          (f"  - {{name: metrics, type: prometheus, listen: '127.0.0.1:{metrics_port}'}}\n"
                           if metrics_port else "") +
                          f"kafka: {{session_timeout_seconds: {SESSION_SECONDS}" +
                          (f", source: '{url}', group: web" if in_config else "") + "}\n")
        args = [] if in_config else ["--source", url, "--group", "web"]
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen([*PCAPWATCH, "run", "-c", str(config), *args],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env=hk.pcapwatch_env())

    def log(self) -> str:
        return self.err.read_text()

    def holding(self) -> set[int]:
        lines = [x for x in self.log().splitlines() if "; holding " in x]
        return set() if not lines else {int(p) for p in lines[-1].rsplit("; holding ", 1)[1].split(",")}

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out)


def scrape(port: int) -> dict[str, float]:
    """The samples of a Prometheus endpoint: {'name{labels}': value}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def publish(piece: Path, url: str) -> None:
    r = subprocess.run([*PCAPWATCH, "publish", str(piece), "--to", url], capture_output=True, text=True,
                       timeout=60, env=hk.pcapwatch_env())
    assert r.returncode == 0, r.stderr


def test_two_members_share_the_topic(broker: hk.Broker, mix: Path, tmp_path: Path) -> None:
    hk.create_topic(broker.address, "packets", 4)
    url = broker.url("packets")
    expected, _, _ = read_records(mix)
    port = free_port()
    a, b = Member(tmp_path, "a", url, metrics_port=port), Member(tmp_path, "b", url, in_config=True)
    try:
        assert wait_until(lambda: a.holding() | b.holding() == {0, 1, 2, 3} and a.holding() and b.holding(), 60), \
            a.log() + b.log()
        for piece in pieces(mix, tmp_path):
            publish(piece, url)
        assert wait_until(lambda: len(a.records()) + len(b.records()) >= len(expected), 60)
        time.sleep(1.0)  # anything written twice would show up now, and the health snapshot is fresh
        metrics = scrape(port)
    finally:
        codes = [stop_process(m.proc, signal.SIGTERM, 30) for m in (a, b)]
    assert codes == [0, 0]
    ra, rb = a.records(), b.records()
    assert ra and rb  # each member some
    union = ra + rb
    assert sorted(map(content, union)) == sorted(map(content, expected))  # exactly read's records
    assert len({r["event_id"] for r in union}) == len(union) == len(expected)  # no duplicates
    assert {r["pcap_file"] for r in union} == {"kafka:packets"}
    # `a`'s own counters in its metrics, as the spool service exports its own
    assert metrics['pcapwatch_output_written_total{output="records"}'] == len(ra)
    assert metrics['pcapwatch_kafka_group_total{event="rebalance_closed"}'] == 0
    assert metrics['pcapwatch_kafka_group_total{event="bad_key"}'] == 0
    assert metrics['pcapwatch_kafka_group_total{event="commits"}'] >= 1
    assert metrics["pcapwatch_capture_packets_total"] > 0
    for m in (a, b):
        assert [x for x in m.log().splitlines() if ": info: " not in x] == []


def test_a_member_killed_mid_run(broker: hk.Broker, mix: Path, tmp_path: Path) -> None:
    hk.create_topic(broker.address, "packets", 4)
    url = broker.url("packets")
    expected, _, _ = read_records(mix)
    # `a` commits rarely: when it is killed, what it read since its last commit is read again by `b`
    a, b = Member(tmp_path, "a", url, checkpoint_seconds=60), Member(tmp_path, "b", url)
    try:
        assert wait_until(lambda: a.holding() | b.holding() == {0, 1, 2, 3} and a.holding() and b.holding(), 60)
        parts = pieces(mix, tmp_path)
        for piece in parts[:2]:
            publish(piece, url)
        assert wait_until(lambda: len(a.records()) > 0 and len(b.records()) > 0, 30)
        a.proc.kill()
        a.proc.wait(10)
        for piece in parts[2:]:
            publish(piece, url)
        assert wait_until(lambda: b.holding() == {0, 1, 2, 3}, 60), b.log()
        want = {content(r) for r in expected}
        assert wait_until(lambda: want <= {content(r) for r in a.records() + b.records()}, 60)
        time.sleep(1.0)
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(10)
        code_b = stop_process(b.proc, signal.SIGTERM, 30)
    assert code_b == 0
    union = a.records() + b.records()
    by_content: dict[str, set[str]] = {}
    for r in union:
        by_content.setdefault(content(r), set()).add(r["event_id"])
    assert want_all(expected, by_content)
    # repeats carry the same event_id; a record cut by the rebalance (reason `rebalance`, its response
    # never seen by that member) has the event_id of the complete record written after it
    assert all(len(ids) == 1 for ids in by_content.values())
    complete_ids = {r["event_id"] for r in union if content(r) in {content(e) for e in expected}}
    extra = [r for r in union if content(r) not in {content(e) for e in expected}]
    assert all(r["reason"] == "rebalance" and r["event_id"] in complete_ids for r in extra), extra[:3]
    # what `a` wrote before it was killed, `b` wrote again: the same records with the same event_id
    assert len(union) > len(expected) and {r["event_id"] for r in a.records()} <= {r["event_id"] for r in b.records()}
    assert "of packets assigned; holding 0,1,2,3" in b.log()


def want_all(expected: list[dict[str, Any]], by_content: dict[str, set[str]]) -> bool:
    return {content(r) for r in expected} <= set(by_content)
