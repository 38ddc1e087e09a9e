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
from analyzers.http.messages import Endpoints, Message, Transaction
from analyzers.http.transactions import Conversation
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


def test_a_full_required_output_blocks_and_says_so_once_and_owes_its_records(tmp_path: Path) -> None:
    """Two syslog outputs to a TCP port nobody listens on hold their records: the required one
    takes them past its buffer of 3 and blocks analysis (said once), the other drops; the summary
    gives each output's counters, the file's bytes included."""
    port = free_port()
    conf = tmp_path / "c.yaml"
    conf.write_text("outputs:\n"
                    f"  - {{name: must, type: syslog, address: 'tcp://127.0.0.1:{port}', buffer: 3, required: true}}\n"
                    f"  - {{name: may, type: syslog, address: 'tcp://127.0.0.1:{port}', buffer: 3}}\n"
                    f"  - {{name: file, type: jsonl, path: {tmp_path / 'out.jsonl'}}}\n")
    logs: list[tuple[str, str]] = []
    d = Delivery(load(conf), MetricsModel(), lambda level, message: logs.append((level, message)))
    try:
        must, file = d.sinks["must"], d.sinks["file"]
        assert d.required == (must,) and not d.blocked() and d.waiting is None
        for _ in range(5):
            d.deliver(to_record(tx()), tx())
        assert d.owed() == ((must, 5),)  # a required output takes past its buffer: nothing dropped
        assert d.blocked() and d.blocked()
        assert d.waiting is not None and d.waiting[0] == "must"
        assert d.waiting_text().startswith(", waiting ") and d.waiting_text().endswith(" s for output must")
        said = [m for _, m in logs if m.startswith("output ")]
        assert said == ["output must is required and its buffer is full (3 records): analysis waits for it, the "
                        "capture files wait in the spool"]
        assert d.flush(5.0) is False
        assert d.summary().split("; ")[1:] == ["may 0 written, 2 dropped, 3 buffered",
                                               "file 5 written (" + f"{(tmp_path / 'out.jsonl').stat().st_size:,}"
                                               + " bytes), 0 dropped, 0 buffered"]
        assert d.summary().startswith("must 0 written, 0 dropped, 5 buffered")
        assert (must.acked(), d.sinks["may"].acked(), file.acked()) == (0, 0, 5)
    finally:
        d.close(0.1)


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
    first_line, second_line = out.read_bytes().splitlines()
    assert first_line.isascii()  # the JSON of strings: ascii is 7-bit, as before
    assert second_line.count(b"K\xc3\xb6ln") == 4  # after the reload: uri, user_agent, route, the header
    first, second = json.loads(first_line), json.loads(second_line)
    assert (first["uri"], first["request_headers"]["user-agent"], first["tags"]) == (
        "/K\\xc3\\xb6ln", "K\\xc3\\xb6ln", [])
    assert (second["uri"], second["request_headers"]["user-agent"], second["tags"]) == (
        "/K\u00f6ln", "K\u00f6ln", ["utf8"])
