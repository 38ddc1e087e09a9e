"""The service's side of a `pcapwatch run` with one output of every type, shared by test_run_outputs
(the corpus run) and test_run_redaction (secrets): the outputs' configuration, capture files put
into its spool, and its own account of delivery (its /metrics), which the tests hold against what
the servers of outputservers.py received.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers.outputservers import Servers, http_get

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Metrics:
    """The service's /metrics, every sample by (name, sorted labels)."""
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def output_stats(m: Metrics, output: str) -> dict[str, int]:
    """One output's counters from the metrics (Sink.stats() keys)."""
    names = {"submitted": "pcapwatch_output_submitted_total", "written": "pcapwatch_output_written_total",
             "dropped": "pcapwatch_output_dropped_total", "retries": "pcapwatch_output_retries_total",
             "errors": "pcapwatch_output_errors_total", "reconnects": "pcapwatch_output_reconnects_total",
             "buffered": "pcapwatch_output_buffered"}
    return {k: int(m[(n, (("output", output),))]) for k, n in names.items()}


def settled(port: int, outputs: tuple[str, ...]) -> bool:
    """Every output has written or dropped all it was given."""
    m = scrape(port)
    return all((s := output_stats(m, o))["buffered"] == 0 and s["written"] + s["dropped"] == s["submitted"]
               for o in outputs)


def put(spool: Path, name: str, data: bytes) -> None:
    """A whole capture file appears in the spool at once (written beside it, then renamed in)."""
    tmp = spool.parent / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, spool / name)


def write_yaml(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def outputs_config(base: Path, servers: Servers, *, syslog: str, hostname: str, key: str, zmq_port: int,
                   metrics_port: int) -> list[dict[str, Any]]:
    """One output of every type."""
    return [
        {"name": "records", "type": "jsonl", "path": str(base / "records.jsonl")},
        {"name": "ecs", "type": "jsonl", "path": str(base / "ecs.jsonl"), "format": "ecs"},
        {"name": "syslog", "type": "syslog", "address": syslog, "facility": "local3", "hostname": hostname},
        {"name": "redis", "type": "redis", "url": servers.redis.url, "key": key, "backoff_max_seconds": 0.5},
        {"name": "tap", "type": "zmq", "bind": f"tcp://127.0.0.1:{zmq_port}"},
        {"name": "metrics", "type": "prometheus", "listen": f"127.0.0.1:{metrics_port}"},
    ]
