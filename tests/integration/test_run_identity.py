"""Restarts of `pcapwatch run` change no record: 20 restarts, kill -9 or SIGTERM, while a real
tcpdump ring fills with keep-alive traffic.

Three clients send requests over keep-alive connections that outlive every run of the service, so
each restart falls in the middle of connections (between requests, or inside one). Each run writes
its own output file. Afterwards the spool is read with `pcapwatch read`, without restarts: the
service's records, once each, must be those records field for field (uid, trans_depth, flags,
every field `read` writes). kill -9: nothing lost, a record written again carries the same
event_id and is the same record, and no run repeats more than a checkpoint interval's worth.
SIGTERM: nothing written twice.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.liveenv import PCAPWATCH, Live, Service, live_env, service, strict_jsonl, wait_until
from helpers.traffic import Clients, key, request_plan, sent_keys

pytestmark = pytest.mark.slow

SEED = 20261207
RESTARTS = 20
RATE = 20.0  # requests per second, ~0.4 MB/s of capture
SECONDS = 45.0  # of traffic: the restarts (0.5-2 s of running each) fall inside it
CHECKPOINT_SECONDS = 1.0
MIX = (("GET", "/10k.bin"), ("GET", "/1k.bin"), ("HEAD", "/100k.bin"), ("GET", "/missing.html"),
       ("POST", "/1k.bin"), ("GET", "/100k.bin"))
READ_FIELDS = ("ts", "uid", "trans_depth", "src_ip", "src_port", "dst_ip", "dst_port", "method", "host", "uri",
               "version", "user_agent", "referrer", "request_body_len", "status_code", "status_msg", "info_code",
               "response_body_len", "response_content_type", "ttfb_ms", "duration_ms", "flags", "anomalies",
               "reason", "pcap_file")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_env(tmp_path) as env:
        yield env


def as_read(r: dict[str, Any]) -> str:
    """A record as `read` writes it (the service adds event_id, route, tags, headers)."""
    return json.dumps({k: r[k] for k in READ_FIELDS})


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_restarts_change_no_record(live: Live, sig: int) -> None:
    rng = random.Random(SEED)
    config = live.config(state={"checkpoint_seconds": CHECKPOINT_SECONDS})
    outputs = [live.base / f"run{i}.jsonl" for i in range(RESTARTS + 1)]
    plan = request_plan(int(RATE * SECONDS), mix=MIX)
    stderr = live.base / "pcapwatch.stderr"
    svc: Service | None = None
    with live.ring("-C", "1"):
        clients = Clients(live.port, plan, rate=RATE, connections=3).start()
        try:
            for run in range(RESTARTS):
                svc = Service(config, stderr, "--output", str(outputs[run]))
                svc.wait_ready()
                time.sleep(rng.uniform(0.5, 2.0))
                assert svc.proc.poll() is None, svc.log()
                code = svc.stop(sig)
                assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), svc.log()
            with service(config, stderr, "--output", str(outputs[-1])) as last:
                sent = clients.join(SECONDS + 30)
                wait_until(lambda: {r["uri"] for o in outputs for r in strict_jsonl(o)} >= {s.uri for s in sent}, 30)
                time.sleep(1.0)
            assert last.proc.returncode == 0
        finally:
            if svc is not None and svc.proc.poll() is None:
                svc.stop(signal.SIGKILL)
            clients.halt.set()
    assert "error" not in stderr.read_text(), stderr.read_text()
    # The reference: the whole spool read at once, no restart.
    done = subprocess.run([*PCAPWATCH, "read", str(live.spool)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reference = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(key(r) for r in reference) == sent_keys(sent) and len(sent) == len(plan)
    runs = [strict_jsonl(o) for o in outputs]
    first: dict[str, str] = {}  # event_id -> the record as first written
    repeated = []
    for recs in runs:
        again = 0
        for r in recs:
            line = json.dumps(r, sort_keys=True)
            if r["event_id"] in first:
                assert first[r["event_id"]] == line  # written again: the same record, the same id
                again += 1
            else:
                first[r["event_id"]] = line
        repeated.append(again)
    once = [json.loads(line) for line in first.values()]
    # Each record once is what `read` writes, field for field: uid, trans_depth, flags and the rest.
    assert Counter(as_read(r) for r in once) == Counter(as_read(r) for r in reference)
    depths = Counter(r["uid"] for r in reference)
    print(f"\n{RESTARTS} restarts ({signal.Signals(sig).name}): {len(reference)} records on {len(depths)} "
          f"connections (deepest trans_depth {max(r['trans_depth'] for r in reference)}); written again per run: "
          f"{repeated}")
    assert max(depths.values()) > RESTARTS  # a connection lived across the restarts
    if sig == signal.SIGTERM:
        assert sum(repeated) == 0
    else:  # at most what a run wrote after its last checkpoint (the interval, and the kill's moment)
        assert max(repeated) <= RATE * (CHECKPOINT_SECONDS + 0.5), repeated
