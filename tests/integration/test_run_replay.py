"""The `replay` rule action in `pcapwatch run`: a capture of real traffic to nginx (tcpdump on
loopback) dropped into the spool; the service replays what the rule matched to a shadow server,
its replay records go to the configured output, and its metrics (the Prometheus output, scraped)
add up: matched = replayed + skipped + failed. With the shadow down, the breaker opens (one log
line) and every capture record is still written."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from helpers.liveenv import free_port, service, wait_until
from helpers.replayenv import ENV, arrived, captured, plan_of, shadow

MIX = [("GET", "/1k.bin", {}, b""), ("HEAD", "/10k.bin", {}, b""), ("POST", "/1k.bin", {}, b"p" * 100),
       ("GET", "/10k.bin", {"Authorization": "Basic dTpw"}, b"")]


def config(base: Path, target: str, prom: int, extra: str = "") -> Path:
    path = base / "pcapwatch.yaml"
    path.write_text(f"spool: {{dir: {base / 'spool'}, rescan_seconds: 0.5}}\n"
                    f"state: {{dir: {base / 'state'}, checkpoint_seconds: 0.5}}\n"
                    f"outputs:\n  - {{name: records, type: jsonl, path: {base / 'out.jsonl'}}}\n"
                    f"  - {{name: prom, type: prometheus, listen: '127.0.0.1:{prom}'}}\n"
                    f"replay: {{targets: ['{target}']}}\n"
                    f"rules:\n  - name: shadow\n    actions:\n      replay: {{target: '{target}'{extra}}}\n")
    return path


def records(base: Path) -> list[dict[str, Any]]:
    path = base / "out.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def metrics(port: int) -> dict[str, float]:
    """The replay families of one scrape: 'name{labels}' -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("pcapwatch_replay_"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def run_with(base: Path, cap: Path, target: str, n_records: int, extra: str = "") -> tuple[list[dict[str, Any]],
                                                                                          dict[str, float], str]:
    (base / "spool").mkdir()
    prom = free_port()
    cfg = config(base, target, prom, extra)
    with service(cfg, base / "service.err", prefix=("env", f"PYTHONPATH={ENV['PYTHONPATH']}")) as svc:
        svc.wait_ready()
        shutil.copy(cap, base / "spool" / "cap.pcap")
        assert wait_until(lambda: len(records(base)) >= n_records, 30), (len(records(base)), svc.log())
        wait_until(lambda: False, 1.5)  # nothing more comes
        m = metrics(prom)
    return records(base), m, (base / "service.err").read_text()


def test_replay_rule_sends_the_replayable_requests_once_and_counts_the_rest(tmp_path: Path) -> None:
    plan = plan_of(40, MIX)
    with captured(tmp_path, plan) as cap, shadow(tmp_path) as (port, log):
        recs, m, _ = run_with(tmp_path, cap, f"http://127.0.0.1:{port}", 40 + 20)
        got = arrived(log)
    capture_recs = [r for r in recs if "replay" not in r]
    replay_recs = [r for r in recs if "replay" in r]
    assert len(capture_recs) == 40 and len(replay_recs) == 20
    want = [(m_, p) for m_, p, h, _ in plan if m_ in ("GET", "HEAD") and not h]
    assert sorted((m_, t) for m_, t, _, _ in got) == sorted(want)  # each once (4 senders: any order)
    ids = {r["uri"]: r["event_id"] for r in capture_recs}
    assert all(ids[t] == rid for _, t, rid, _ in got)
    assert all(r["replay"]["matched"] for r in replay_recs)
    target = f'target="http://127.0.0.1:{port}"'
    assert m[f"pcapwatch_replay_matched_total{{{target}}}"] == 40
    assert m[f"pcapwatch_replay_replayed_total{{{target}}}"] == 20
    assert m['pcapwatch_replay_skipped_total{reason="method"}'] == 10
    assert m['pcapwatch_replay_skipped_total{reason="credentials"}'] == 10
    assert not [k for k in m if k.startswith("pcapwatch_replay_failed_total")]
    assert m["pcapwatch_replay_latency_ratio_count"] == 20
    assert m[f"pcapwatch_replay_breaker_open{{{target}}}"] == 0
    assert m[f"pcapwatch_replay_queue_depth{{{target}}}"] == 0


def test_shadow_down_breaker_opens_once_and_capture_processing_goes_on(tmp_path: Path) -> None:
    plan = plan_of(200, [("GET", "/1k.bin", {}, b"")])
    with captured(tmp_path, plan) as cap:
        down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        recs, m, err = run_with(tmp_path, cap, down, 200 + 200)
    capture_recs = [r for r in recs if "replay" not in r]
    failed = Counter(r["replay"]["failed"] for r in recs if "replay" in r)
    assert len(capture_recs) == 200
    assert sum(failed.values()) == 200 and set(failed) <= {"connect", "breaker_open"} and failed["breaker_open"] > 100
    assert err.count("is down") == 1 and "answers again" not in err
    target = f'target="{down}"'
    assert m[f"pcapwatch_replay_matched_total{{{target}}}"] == 200
    assert sum(v for k, v in m.items() if k.startswith("pcapwatch_replay_failed_total")) == 200
    assert m[f"pcapwatch_replay_breaker_open{{{target}}}"] == 1
    assert Counter({k.split('"')[1]: int(v) for k, v in m.items()
                    if k.startswith("pcapwatch_replay_failed_total")}) == failed
