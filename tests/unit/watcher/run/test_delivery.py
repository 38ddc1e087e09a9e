"""watcher/delivery: the outputs of one configuration. Flushing shares one deadline across outputs
(dead outputs must not add up to stall the pipeline), a pcap rule whose connection kept no packet
is counted, the counters carry over into the Delivery of a reloaded configuration, and an output's
client library (redis, zmq, prometheus_client) is imported only when an output of its type is opened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from helpers.liveenv import free_port

import watcher
from analyzers.http.transactions import Conversation, Endpoints, Message, Transaction
from analyzers.records import to_record
from watcher.config.load import load
from watcher.metrics import MetricsModel
from watcher.run.delivery import Delivery, DeliveryCounters


def quiet(level: str, message: str) -> None:
    return None


def tx() -> Transaction:
    conn = Endpoints("Cx", "127.0.0.1", 40000, "127.0.0.1", 80, False)
    return Transaction(conn, Message(None, 1.0, 1.0), Message(None, 1.1, 1.1))


def test_flush_shares_one_deadline_across_dead_outputs(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    outputs = "".join(f"  - {{name: s{i}, type: syslog, address: 'tcp://127.0.0.1:{free_port()}'}}\n"
                      for i in range(3))  # nothing listens: each holds its records and retries
    conf.write_text(f"outputs:\n{outputs}")
    d = Delivery(load(conf), MetricsModel(), quiet)
    try:
        d.deliver(to_record(tx()), tx())
        t = time.monotonic()
        assert not d.flush(0.6)
        assert time.monotonic() - t < 1.0  # not 3 x 0.6
    finally:
        d.close(0.1)


def test_pcap_rule_without_kept_packets_is_counted_and_counters_carry_over(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(f"outputs:\n  - {{name: f, type: jsonl, path: {tmp_path / 'out.jsonl'}}}\n"
                    f"rules:\n  - {{name: all, actions: {{pcap: {{dir: {tmp_path / 'pcap'}}}}}}}\n")
    config = load(conf)
    d = Delivery(config, MetricsModel(), quiet)
    try:
        assert list(d.pcap_writers) == [str(tmp_path / "pcap")]
        d.deliver(to_record(tx()), tx())  # the pipeline kept no packets for it
        assert d.flush(5.0)
        assert (d.counters.records, d.counters.pcap_without_packets) == (1, 1)
        assert d.stats()[f"pcap:{tmp_path / 'pcap'}"]["submitted"] == 0
    finally:
        d.close(1.0)
    again = Delivery(config, MetricsModel(), quiet, d.counters)
    again.close(1.0)
    assert again.counters == DeliveryCounters(records=1, pcap_without_packets=1)


# Loads a configuration with one jsonl output, opens its Delivery and lists the client libraries
# imported; then names each output type's sink, which imports its library.
IMPORTS = """
import sys
from watcher.config.load import load
from watcher.metrics import MetricsModel
from watcher.run.delivery import Delivery
from watcher.sinks import sink_class
LIBRARIES = ("redis", "zmq", "prometheus_client")
d = Delivery(load(sys.argv[1]), MetricsModel(), lambda level, message: None)
d.close(1.0)
print(" ".join(m for m in LIBRARIES if m in sys.modules) or "none")
for t in ("redis", "zmq", "prometheus"):
    sink_class(t)
print(" ".join(m for m in LIBRARIES if m in sys.modules))
"""


def test_client_libraries_are_imported_only_when_an_output_uses_them(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(f"outputs:\n  - {{name: f, type: jsonl, path: {tmp_path / 'out.jsonl'}}}\n")
    root = Path(watcher.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))}
    p = subprocess.run([sys.executable, "-c", IMPORTS, str(conf)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["none", "redis zmq prometheus_client"]


def test_strings_ascii_for_the_rules_headers_and_on_reload(tmp_path: Path) -> None:
    """`strings: ascii`: the header values the rules and the outputs see are escaped too; a reload
    (set_rules, as on SIGHUP with the same outputs) switches the form."""
    conf = tmp_path / "c.yaml"
    out = tmp_path / "out.jsonl"
    base = (f"outputs:\n  - {{name: f, type: jsonl, path: {out}}}\n"
            "rules:\n  - {name: t, match: {header: {user-agent: '^K\u00f6ln$'}}, actions: {tag: [utf8]}}\n")
    conf.write_text("strings: ascii\n" + base, encoding="utf-8")
    conv = Conversation(Endpoints("Cs", "127.0.0.1", 40000, "127.0.0.1", 80, False), Counter())
    conv.client.data(b"GET /K\xc3\xb6ln HTTP/1.1\r\nHost: h\r\nUser-Agent: K\xc3\xb6ln\r\n\r\n", 1.0)
    conv.server.data(b"HTTP/1.1 204 No Content\r\n\r\n", 1.5)
    (t,) = conv.out
    d = Delivery(load(conf), MetricsModel(), quiet)
    try:
        d.deliver(to_record(t, d.strings), t)
        conf.write_text(base, encoding="utf-8")
        d.set_rules(load(conf))
        d.deliver(to_record(t, d.strings), t)
        assert d.flush(5.0)
    finally:
        d.close(1.0)
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert (first["uri"], first["request_headers"]["user-agent"], first["tags"]) == (
        "/K\\xc3\\xb6ln", "K\\xc3\\xb6ln", [])
    assert (second["uri"], second["request_headers"]["user-agent"], second["tags"]) == (
        "/K\u00f6ln", "K\u00f6ln", ["utf8"])
