"""Restarts of `pcapwatch run` while tcpdump and clients go on: kill -9, SIGTERM, SIGHUP.

kill -9 at seeded random moments: every request still ends up in the output, a record written
twice carries the same event_id both times, and only the last checkpoint interval is repeated.
After a SIGTERM and a restart nothing at all is repeated. SIGHUP with a broken config is refused
and the service goes on; with a valid one the output file is reopened (logrotate's way).
Each run of the service writes its own output file (`--output`), so every record is attributed to
the run that wrote it.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.liveenv import Live, Service, live_env, service, strict_jsonl, wait_until
from helpers.traffic import Clients, key, request_plan, sent_keys

pytestmark = pytest.mark.slow

SEED = 20240603
KILLS = 3
RATE = 20.0  # requests per second: ~0.8 MB/s, while the ring below holds 10 MB
CHECKPOINT_SECONDS = 1.0
# Mixed sizes, ~40 KB of capture per request on average.
MIX = (("GET", "/100k.bin"), ("GET", "/10k.bin"), ("GET", "/1k.bin"), ("HEAD", "/100k.bin"),
       ("GET", "/missing.html"), ("POST", "/1k.bin"))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_env(tmp_path) as env:
        yield env


def test_kill_9_loses_nothing_and_sigterm_repeats_nothing(live: Live) -> None:
    rng = random.Random(SEED)
    config = live.config(state={"checkpoint_seconds": CHECKPOINT_SECONDS})
    outputs = [live.base / f"run{i}.jsonl" for i in range(KILLS + 2)]
    plan = request_plan(int(RATE * 16), mix=MIX)
    stderr = live.base / "pcapwatch.stderr"
    svc: Service | None = None
    with live.ring("-C", "1", "-W", "10"):
        clients = Clients(live.port, plan, rate=RATE).start()
        try:
            for run in range(KILLS + 1):  # killed KILLS times, then stopped with SIGTERM
                svc = Service(config, stderr, "--output", str(outputs[run]))
                svc.wait_ready()
                time.sleep(rng.uniform(1.5, 3.0))
                assert svc.proc.poll() is None, svc.log()
                code = svc.stop(signal.SIGKILL if run < KILLS else signal.SIGTERM)
                assert code == (-signal.SIGKILL if run < KILLS else 0), svc.log()
            with service(config, stderr, "--output", str(outputs[-1])) as last:
                sent = clients.join(len(plan) / RATE + 30)
                wait_until(lambda: {r["uri"] for o in outputs for r in strict_jsonl(o)} >= {s.uri for s in sent}, 15)
                time.sleep(1.0)
            assert last.proc.returncode == 0
        finally:
            if svc is not None and svc.proc.poll() is None:
                svc.stop(signal.SIGKILL)
            clients.halt.set()
    runs = [strict_jsonl(o) for o in outputs]
    records = [r for recs in runs for r in recs]
    expected = sent_keys(sent)
    got = Counter(key(r) for r in records)
    # every request at least once, nothing that was not sent
    assert set(got) == set(expected) and len(sent) == len(plan)
    # a record written twice is the same transaction with the same id; different ones differ
    ids: dict[str, set[str]] = {}
    for r in records:
        ids.setdefault(r["uri"], set()).add(r["event_id"])
    assert all(len(v) == 1 for v in ids.values()), {u: v for u, v in ids.items() if len(v) > 1}
    assert len({next(iter(v)) for v in ids.values()}) == len(ids)
    duplicates = len(records) - len(got)
    # only what was written after the last checkpoint before each kill (the checkpoint interval,
    # plus the time between a checkpoint and the kill's effect)
    print(f"\n{KILLS} kill -9: {duplicates} records written twice of {len(records)}; per run {[len(r) for r in runs]}")
    assert duplicates <= KILLS * RATE * (CHECKPOINT_SECONDS + 0.5)
    # after SIGTERM + restart: nothing repeated, within the last run or from the runs before
    before_sigterm = {r["uri"] for recs in runs[:-1] for r in recs}
    last_uris = [r["uri"] for r in runs[-1]]
    assert len(last_uris) == len(set(last_uris))
    assert before_sigterm.isdisjoint(last_uris)
    # the SIGTERM'd run ended exactly where the last run began: together they hold each request once
    assert Counter(key(r) for r in runs[-2] + runs[-1]) == Counter(
        k for k in expected if k[1] in {r["uri"] for r in runs[-2] + runs[-1]})


def test_sighup_refuses_a_broken_config_and_reopens_the_output(live: Live) -> None:
    config = live.config()
    valid = config.read_text()
    rotated = live.base / "records.jsonl.1"
    with live.ring("-C", "1", "-W", "4"), live.service(config=config) as svc:
        first = Clients(live.port, request_plan(20, first=0), rate=20.0).run()
        assert len(live.wait_records(20)) == 20
        # broken: an unknown key -> refused, the running config kept, records still emitted
        config.write_text(valid + "limits:\n  max_connectionz: 5\n")
        svc.send(signal.SIGHUP)
        assert svc.wait_log("reload: the new configuration is not valid, keeping the running one")
        second = Clients(live.port, request_plan(20, first=20), rate=20.0).run()
        assert len(live.wait_records(40)) == 40
        # valid again: logrotate renames the file, SIGHUP, new records go to a new file
        config.write_text(valid)
        live.out.rename(rotated)
        svc.send(signal.SIGHUP)
        assert svc.wait_log("info: reloaded the configuration and reopened the outputs")
        third = Clients(live.port, request_plan(20, first=40), rate=20.0).run()
        assert len(live.wait_records(20)) == 20
        time.sleep(0.5)
        errors = svc.lines("error")
        assert svc.proc.poll() is None
    assert len(errors) == 1 and "max_connectionz" in errors[0], errors
    assert Counter(key(r) for r in live.records(rotated)) == sent_keys(first + second)
    assert Counter(key(r) for r in live.records()) == sent_keys(third)
