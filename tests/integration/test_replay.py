"""`pcapwatch replay` between real servers: nginx as production, captured by tcpdump on loopback,
and a second server (Python's http.server, tests/helpers/shadow.py, as its own process) as the
shadow. The shadow's own log (method, target, X-Request-ID, body length) is the judge of what
arrived; the records and the summary are checked against it and against what was sent. A Kafka
topic of the capture's packets (a real broker, filled as pycapa's producer fills it: helpers/kafka.py)
replays as the file does."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import kafka as hk
from helpers.liveenv import PCAPWATCH, free_port, stop_process, wait_until
from helpers.replayenv import ENV, arrived, captured, plan_of, shadow


def replay(cap: Path | str, port: int, out: Path, *args: str, timeout: float = 120) -> tuple[int, str, float]:
    t0 = time.monotonic()
    res = subprocess.run([*PCAPWATCH, "replay", str(cap), "--target", f"http://127.0.0.1:{port}", "-o", str(out),
                          *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    return res.returncode, res.stderr, time.monotonic() - t0


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def counts(stderr: str) -> dict[str, Any]:
    m = re.search(r"replay: (\d+) transactions, (\d+) replayed \((\d+) differ\), (\d+) skipped(?: \(([^)]*)\))?, "
                  r"(\d+) failed(?: \(([^)]*)\))?", stderr)
    assert m, stderr
    def by(text: str | None) -> dict[str, int]:
        return {k: int(v) for k, v in (p.split() for p in text.split(", "))} if text else {}
    return {"offered": int(m[1]), "replayed": int(m[2]), "differ": int(m[3]), "skipped": int(m[4]),
            "skipped_by": by(m[5]), "failed": int(m[6]), "failed_by": by(m[7])}


def test_safe_defaults_every_replayable_request_arrives_once_with_its_event_id(tmp_path: Path) -> None:
    plan = plan_of(48)
    with captured(tmp_path, plan) as cap, shadow(tmp_path) as (port, log):
        rc, err, _ = replay(cap, port, tmp_path / "out.jsonl")
        got = arrived(log)
        recs = records(tmp_path / "out.jsonl")
    # GET and HEAD without credentials: 4 of every 8.
    want = [(m, p) for m, p, h, _ in plan if m in ("GET", "HEAD") and not h]
    assert [(m, t) for m, t, _, _ in got] == want
    assert len(recs) == len(want) == 24
    assert [(r["method"], r["uri"], r["event_id"]) for r in recs] == [(m, t, rid) for m, t, rid, _ in got]
    assert len({r["event_id"] for r in recs}) == 24
    assert all(r["replay"]["matched"] for r in recs), [r["replay"] for r in recs if not r["replay"]["matched"]]
    assert rc == 0, err
    c = counts(err)
    assert c == {"offered": 48, "replayed": 24, "differ": 0, "skipped": 24,
                 "skipped_by": {"credentials": 12, "method": 12}, "failed": 0, "failed_by": {}}


def test_post_put_and_credentials_only_when_allowed(tmp_path: Path) -> None:
    plan = plan_of(16)
    with captured(tmp_path, plan) as cap, shadow(tmp_path) as (port, log):
        rc, err, _ = replay(cap, port, tmp_path / "out.jsonl", "--methods", "GET,HEAD,POST,PUT",
                            "--allow-credentials")
        got = arrived(log)
    assert [(m, t, n) for m, t, _, n in got] == [(m, p, len(b)) for m, p, _, b in plan]
    c = counts(err)
    assert (c["offered"], c["replayed"], c["skipped"], c["failed"]) == (16, 16, 0, 0)
    # nginx answers POST and PUT to a file 405, the shadow 200: those differ, and the exit says so.
    assert c["differ"] == 4 and rc == 1


def test_differing_routes_are_exactly_the_mismatched_ones(tmp_path: Path) -> None:
    mix = [("GET", "/1k.bin", {}, b""), ("GET", "/10k.bin", {}, b""), ("GET", "/100k.bin", {}, b""),
           ("HEAD", "/100k.bin", {}, b"")]
    plan = plan_of(80, mix)  # 20 of each
    routes = {"/10k.bin": {"status": 503, "every": 4},  # a quarter of them (with the same body)
              "/1k.bin": {"body": "another body\n", "type": "application/octet-stream", "every": 2},
              "/100k.bin": {"delay": 0.1}}
    with captured(tmp_path, plan) as cap, shadow(tmp_path, routes) as (port, _log):
        rc, err, _ = replay(cap, port, tmp_path / "out.jsonl")
    recs = records(tmp_path / "out.jsonl")
    assert rc == 1
    bad = Counter((r["method"], r["uri"].split("?")[0], f) for r in recs
                  for f, ok in r["replay"]["match"].items() if ok is False)
    assert bad == {("GET", "/10k.bin", "status"): 5, ("GET", "/1k.bin", "body"): 10}
    rows = {line.split()[1]: line.split() for line in err.splitlines() if line.startswith(("GET ", "HEAD "))
            and line.split()[0] == "GET"}
    assert rows["/10k.bin"][2:5] == ["20", "75.0", "100.0"]  # the same file, under another status
    assert rows["/1k.bin"][2:5] == ["20", "100.0", "50.0"]
    assert rows["/100k.bin"][2:5] == ["20", "100.0", "100.0"]
    slow = [r["replay"]["latency"] for r in recs if r["uri"].startswith("/100k.bin")]
    assert len(slow) == 40 and min(slow) >= 0.1
    assert float(rows["/100k.bin"][6].removesuffix("ms")) >= 100.0  # p50 shadow
    assert float(rows["/100k.bin"][5].removesuffix("ms")) < 100.0  # p50 original: nginx is fast
    assert float(rows["/1k.bin"][6].removesuffix("ms")) < 100.0


def test_rate_limit_2000_requests_at_200_per_second_take_10_seconds(tmp_path: Path) -> None:
    plan = plan_of(2000, [("GET", "/1k.bin", {}, b"")])
    with captured(tmp_path, plan, rate=2000.0) as cap, shadow(tmp_path) as (port, log):
        rc, err, took = replay(cap, port, tmp_path / "out.jsonl", "--rate", "200", "--concurrency", "4")
        n = len(arrived(log))
    assert rc == 0, err
    assert n == 2000
    assert 9.0 <= took <= 11.0, took


def test_shadow_down_mid_run_breaker_opens_once_and_replay_resumes(tmp_path: Path) -> None:
    # 10 s of traffic, replayed at its pace: the shadow goes down after 1.5 s, for 2 s; the breaker
    # probes 0.5, 1, 2, 4 s after opening, so the probe that finds it back can come 5 s in, and
    # the rest of the traffic must still be long enough to show the replay resumed.
    plan = plan_of(200, [("GET", "/1k.bin", {}, b"")])
    with captured(tmp_path, plan, rate=20.0) as cap:
        port = free_port()
        out = tmp_path / "out.jsonl"
        proc = subprocess.Popen([*PCAPWATCH, "replay", str(cap), "--target", f"http://127.0.0.1:{port}", "-o",
                                 str(out), "--speed", "1.0"], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            with shadow(tmp_path, port=port, name="before") as (_, before):
                assert wait_until(lambda: len(arrived(before)) >= 30, 10)
            time.sleep(2.0)  # down for 2 s: about 40 requests
            with shadow(tmp_path, port=port, name="after") as (_, after):
                _, err = proc.communicate(timeout=30)
        finally:
            stop_process(proc)
    down = [line for line in err.splitlines() if "is down" in line]
    back = [line for line in err.splitlines() if "answers again" in line]
    assert len(down) == 1 and len(back) == 1, err
    n_before, n_after = len(arrived(before)), len(arrived(after))
    assert n_before >= 30 and n_after >= 20
    c = counts(err)
    assert c["offered"] == len(plan) and c["skipped"] == 0
    assert c["replayed"] + c["skipped"] + c["failed"] == c["offered"]
    assert c["replayed"] == n_before + n_after - c["failed_by"].get("read_timeout", 0)
    assert c["failed"] >= 20 and set(c["failed_by"]) <= {"connect", "breaker_open", "reset"}
    recs = records(out)
    assert len(recs) == len(plan) and sum(1 for r in recs if "failed" in r["replay"]) == c["failed"]


def test_kafka_topic_replays_the_same_requests_as_the_file(tmp_path: Path) -> None:
    plan = plan_of(48)
    with captured(tmp_path, plan) as cap, hk.broker(tmp_path / "tansu.log") as broker:
        # pycapa's producer leaves the partition to the client (by key): each connection's packets are
        # spread over the three partitions, and only the merge by capture time puts them back in order.
        hk.create_topic(broker.address, "pkts", 3)
        sent = hk.pycapa_produce(broker.address, "pkts", cap)
        topic = hk.consume_all(broker.address, "pkts")
        with shadow(tmp_path, name="from_file") as (port, log):
            rc_file, err_file, _ = replay(cap, port, tmp_path / "file.jsonl")
            from_file = arrived(log)
        with shadow(tmp_path, name="from_kafka") as (port, log):
            rc, err, _ = replay(broker.url("pkts"), port, tmp_path / "kafka.jsonl")
            from_kafka = arrived(log)
    assert sum(len(m) for m in topic.values()) == sent and min(len(m) for m in topic.values()) > 0
    want = [(m, p) for m, p, h, _ in plan if m in ("GET", "HEAD") and not h]
    assert len(want) == 24 and len({p for _, p in want}) == 24
    assert [(m, t) for m, t, _, _ in from_kafka] == [(m, t) for m, t, _, _ in from_file] == want
    recs = records(tmp_path / "kafka.jsonl")
    assert [(r["method"], r["uri"], r["event_id"]) for r in recs] == [(m, t, rid) for m, t, rid, _ in from_kafka]
    assert len({rid for _, _, rid, _ in from_kafka}) == 24
    # The id is `run --group`'s: derived from topic, partition and offset of the message that
    # completed the request head (here each head is in one packet).
    named: dict[str, tuple[int, int]] = {
        hashlib.blake2b(f"kafka:pkts:{p}:{off}:{i}".encode(), digest_size=10).hexdigest(): (p, off)
        for p, msgs in topic.items() for _key, _value, off in msgs for i in range(4)}
    values = {(p, off): value for p, msgs in topic.items() for _key, value, off in msgs}
    for r in recs:
        assert r["event_id"] in named, r
        assert f"{r['method']} {r['uri']} HTTP/1.1\r\n".encode() in values[named[r["event_id"]]]
    assert not {r["event_id"] for r in recs} & {rid for _, _, rid, _ in from_file}
    assert all(r["pcap_file"] == "kafka:pkts" and r["replay"]["matched"] for r in recs)
    def same(r: dict[str, Any]) -> tuple[Any, ...]:  # the transaction and the shadow's answer
        return (r["ts"], r["uid"], r["method"], r["uri"], r["status_code"], r["response_body_len"],
                r["replay"]["status"], r["replay"]["body_len"], r["replay"]["body_hash"])
    assert [same(r) for r in recs] == [same(r) for r in records(tmp_path / "file.jsonl")]
    assert rc == rc_file == 0, err
    assert counts(err) == counts(err_file) == {"offered": 48, "replayed": 24, "differ": 0, "skipped": 24,
                                               "skipped_by": {"credentials": 12, "method": 12}, "failed": 0,
                                               "failed_by": {}}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
