"""Every output type through the running service: `pcapwatch run` as a subprocess, real servers behind it.

One module-wide set of servers (outputservers.py): a real Prometheus scraping the service's
prometheus output every second, a real redis-server, a real rsyslogd. The service has an output of
every type (jsonl flat and ecs, syslog, redis, zmq with `pcapwatch tail --json` subscribed before
any record flows, prometheus), and runs the corpus capture local/mix.pcap cut into four files, put
into the spool one at a time, each processed before the next.

Redis is stopped before the second file and started after it: the redis output with the default
buffer loses nothing; a second redis output with a buffer of SMALL_BUFFER drops, and its drop
counter (the service's metrics, and PromQL) is exactly what its stream misses: during the outage,
everything past its first SMALL_BUFFER records (it also drops bursts larger than its buffer with
Redis up, counted the same way). PromQL gives exactly the status classes `pcapwatch read` finds in
the capture, and Prometheus held the service's count after every file; rsyslog, the stream and the
tail hold every record of the jsonl output, in its order. pcapwatch_capture_bytes_total ends at
every byte of the spool and never goes down. (Secrets in no output: test_run_redaction.)
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.env import corpus, read_records
from helpers.liveenv import WAIT_SECONDS, Service, free_port, read_jsonl, service, wait_for
from helpers.outputrun import Metrics, output_stats, outputs_config, put, scrape, settled, write_yaml
from helpers.outputservers import Prometheus, Servers, output_servers, start_tail, stream_ids, syslog_messages
from helpers.pcapgen import split_pcap

from watcher.run.service import IDLE_SWEEP_SECONDS

SMALL_BUFFER = 50  # records the small redis output holds while Redis is down
CUTS = 4  # mix.pcap goes into the spool as this many files
OUTAGE_PART = 1  # Redis is down while the service processes this file (0-based)
OUTPUTS = ("records", "ecs", "syslog", "redis", "redis_small", "tap", "metrics")
MAIN_HOST = "corpus-run"  # syslog HOSTNAME of the run's messages
TOTAL = "sum(pcapwatch_http_transactions_total)"
SMALL_DROPPED = 'pcapwatch_output_dropped_total{output="redis_small"}'
PACKETS = "pcapwatch_capture_packets_total"


def status_class(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with output_servers(tmp_path_factory.mktemp("outputs"), prometheus=True) as started:
        yield started


# The corpus run --------------------------------------------------------------------------------


@dataclass
class CorpusRun:
    expected: list[dict[str, Any]]  # what `pcapwatch read` writes for the capture
    packets: int
    records: list[dict[str, Any]]  # the jsonl output
    lines: list[str]  # the same, as written
    ecs: list[dict[str, Any]]
    stream: list[str]  # event_ids in the redis output's stream
    small_stream: list[str]  # in the small-buffer redis output's stream
    syslog: list[str]  # the messages rsyslog wrote
    tail: list[str]
    tail_exit: tuple[int, str]
    before_outage: int  # records written before Redis was stopped
    outage: int  # records the service wrote while Redis was down
    small_before: dict[str, int]  # the small redis output's counters when Redis was stopped
    during_outage: dict[str, dict[str, int]]  # both redis outputs' counters before Redis was started again
    prom_during_outage: dict[str, float]  # PromQL then: transactions, the small output's drops
    scraped: list[tuple[int, float]]  # (records written, what Prometheus returned) after each file
    metrics: Metrics  # the service's /metrics at the end
    status: dict[str, int]  # its SIGUSR1 status line at the end
    spool_bytes: int  # the sizes of the files put into the spool, summed
    svc: Service
    prom: Prometheus = field(repr=False)


@dataclass
class Feeder:
    """The corpus capture cut into CUTS files, put into the running service's spool one at a time."""

    spool: Path
    port: int  # the service's prometheus output
    head: bytes
    recs: list[bytes]

    def end(self, part: int) -> int:
        return len(self.recs) * (part + 1) // CUTS

    def feed(self, part: int) -> int:
        """Put file `part` in the spool, wait until the service has analysed every packet of it (its
        records are then in the outputs' buffers); the records written so far."""
        data = self.head + b"".join(self.recs[self.end(part - 1) if part else 0:self.end(part)])
        put(self.spool, "cap.pcap" + (str(part) if part else ""), data)
        wait_for(f"the service to analyse file {part}", lambda: self.analysed() == self.end(part))
        return self.quiet()

    def quiet(self) -> int:
        """The records written once the service has stopped writing: with the capture silent, its
        wall-clock idle sweep settles what waits on capture time (an RST held for its grace time:
        the two aborted downloads) up to IDLE_SWEEP_SECONDS later, so the count must stay the same
        for longer than that."""
        n, since = self.written(), time.monotonic()
        deadline = since + WAIT_SECONDS
        while time.monotonic() - since <= IDLE_SWEEP_SECONDS + 1.0:
            assert time.monotonic() < deadline, f"the service kept writing records for {WAIT_SECONDS:.0f} s"
            time.sleep(0.2)
            now = self.written()
            if now != n:
                n, since = now, time.monotonic()
        return n

    def analysed(self) -> float | None:
        return scrape(self.port).get((PACKETS, ()))

    def written(self) -> int:
        return output_stats(scrape(self.port), "records")["submitted"]

    def settle(self, prom: Prometheus, n: int) -> tuple[int, float]:
        """Wait until every output has delivered (or dropped) the records so far and Prometheus has
        scraped their count, and the packets behind them (the health, refreshed every second)."""
        wait_for(f"the outputs to deliver {n} records", lambda: settled(self.port, OUTPUTS))
        packets = {None: self.analysed()}
        wait_for(f"Prometheus to scrape {n} transactions", lambda: prom.vector(TOTAL) == {None: float(n)}
                 and prom.vector(PACKETS) == packets)
        return n, prom.vector(TOTAL)[None]


@pytest.fixture(scope="module")
def corpus_run(servers: Servers) -> Iterator[CorpusRun]:
    path = corpus("local", "mix.pcap")
    expected, result, _ = read_records(path)
    assert result.stats["frames"] > 0
    base = servers.base / "corpus"
    spool = base / "spool"
    spool.mkdir(parents=True)
    zmq_port = free_port()
    outputs = outputs_config(base, servers, syslog=f"tcp://127.0.0.1:{servers.rsyslog.tcp}", hostname=MAIN_HOST,
                             key="pcapwatch:corpus", zmq_port=zmq_port, metrics_port=servers.metrics_port)
    outputs.insert(4, {"name": "redis_small", "type": "redis", "url": servers.redis.url, "key": "pcapwatch:small",
                       "buffer": SMALL_BUFFER, "batch": 10, "backoff_max_seconds": 0.5})
    assert tuple(o["name"] for o in outputs) == OUTPUTS
    config = write_yaml(base / "pcapwatch.yaml", {
        "spool": {"dir": str(spool), "rescan_seconds": 0.5},
        "state": {"dir": str(base / "state"), "checkpoint_seconds": 1.0},
        "outputs": outputs,
    })
    prom = servers.prom
    assert prom is not None
    feeder = Feeder(spool, servers.metrics_port, *split_pcap(path.read_bytes()))
    with service(config, base / "pcapwatch.stderr") as svc:
        tail = start_tail(zmq_port)
        try:
            wait_for("Prometheus to scrape the service", lambda: prom.vector('up{job="pcapwatch"}') == {None: 1.0})
            scraped = [feeder.settle(prom, feeder.feed(part)) for part in range(OUTAGE_PART)]
            before = feeder.written()
            small_before = output_stats(scrape(feeder.port), "redis_small")
            servers.redis.stop()
            n = feeder.feed(OUTAGE_PART)
            outage = n - before
            m = scrape(feeder.port)
            during = {o: output_stats(m, o) for o in ("redis", "redis_small")}
            wait_for("Prometheus to scrape the outage", lambda: prom.vector(TOTAL) == {None: float(n)} and
                     prom.vector(SMALL_DROPPED) == {None: float(during["redis_small"]["dropped"])})
            prom_during = {"transactions": prom.vector(TOTAL)[None], "dropped": prom.vector(SMALL_DROPPED)[None]}
            servers.redis.start()
            scraped.append(feeder.settle(prom, n))
            scraped += [feeder.settle(prom, feeder.feed(part)) for part in range(OUTAGE_PART + 1, CUTS)]
            n = feeder.written()
            wait_for("rsyslog to write every record", lambda: len(syslog_messages(servers.rsyslog, MAIN_HOST)) >= n)
            wait_for("pcapwatch tail to print every record", lambda: len(tail.lines) >= n)
            time.sleep(0.5)  # and nothing more
            status = svc.status()
            metrics = scrape(feeder.port)
            dropped = {o: float(output_stats(metrics, o)["dropped"]) for o in OUTPUTS}
            wait_for("Prometheus to scrape the final counters",
                     lambda: prom.vector("pcapwatch_output_dropped_total", "output") == dropped)
        finally:
            tail_exit = tail.stop()
        records_path = base / "records.jsonl"
        yield CorpusRun(
            expected=expected, packets=len(feeder.recs), records=read_jsonl(records_path),
            lines=records_path.read_text().splitlines(), ecs=read_jsonl(base / "ecs.jsonl"),
            stream=stream_ids(servers.redis, "pcapwatch:corpus"),
            small_stream=stream_ids(servers.redis, "pcapwatch:small"),
            syslog=syslog_messages(servers.rsyslog, MAIN_HOST), tail=list(tail.lines), tail_exit=tail_exit,
            before_outage=before, outage=outage, small_before=small_before, during_outage=during,
            prom_during_outage=prom_during, scraped=scraped, metrics=metrics, status=status,
            spool_bytes=sum(f.stat().st_size for f in spool.iterdir()), svc=svc, prom=prom)


RUN_ONLY = ("event_id", "route", "tags", "request_headers", "response_headers", "pcap_file")


def test_the_run_writes_what_read_finds(corpus_run: CorpusRun) -> None:
    """The service fed four files one by one writes the records `pcapwatch read` writes for the whole
    capture (pcap_file aside), each with its own event_id, and its status line agrees."""
    run = corpus_run
    assert len(run.records) == len(run.expected) > 800
    # The same records, each once; the order may differ across connections: a connection whose
    # end waits on something in doubt (an RST held for its grace time, a hole behind an ACK) is
    # written when capture time passes the wait in `read`, but by the wall-clock sweep while the
    # service waits for the next file. Within a connection the order is the capture's.
    def key(r: dict[str, object]) -> str:
        return json.dumps({k: v for k, v in r.items() if k not in RUN_ONLY}, sort_keys=True)

    assert sorted(map(key, run.records)) == sorted(map(key, run.expected))
    depths: dict[object, list[object]] = {}
    for r in run.records:
        depths.setdefault(r["uid"], []).append(r["trans_depth"])
    assert all(d == sorted(d) for d in depths.values())
    ids = [r["event_id"] for r in run.records]
    assert len(set(ids)) == len(ids) and None not in ids
    assert {r["pcap_file"] for r in run.records} == {"cap.pcap", *(f"cap.pcap{i}" for i in range(1, CUTS))}
    assert (run.status["records"], run.status["lost"], run.status["gaps"]) == (len(run.records), 0, 0)
    # The only complaints: each redis output, once, when Redis went away; and the small one's drops,
    # once when its buffer filled and once with the count when it had drained (later bursts within
    # a minute go into the next such line, at the latest when it closes).
    assert run.svc.proc.poll() is None and run.svc.lines("error") == []
    warnings = run.svc.lines("warning")
    failures = [w for w in warnings if w.endswith("; buffering and retrying with backoff")]
    assert sorted(w.split(":")[2] for w in failures) == [" redis output redis", " redis output redis_small"]
    drops = [w for w in warnings if w not in failures]
    assert len(drops) == 2, drops
    assert drops[0] == (f"pcapwatch: warning: redis output redis_small: buffer full ({SMALL_BUFFER} records): dropping "
                        "new records until it has room (counted)")
    assert re.fullmatch(r"pcapwatch: warning: redis output redis_small: dropped [\d,]+ records while its buffer was "
                        r"full \([\d.]+ s\); [\d,]+ dropped in all", drops[1])


def test_promql_counts_by_status_class_are_the_captures(corpus_run: CorpusRun) -> None:
    run = corpus_run
    want = Counter(status_class(r["status_code"]) for r in run.expected)
    assert set(want) >= {"2xx", "3xx", "4xx"}
    got = run.prom.vector("sum by (status_class) (pcapwatch_http_transactions_total)", "status_class")
    assert got == {k: float(v) for k, v in want.items()}
    assert Counter(status_class(r["status_code"]) for r in run.records) == want
    assert run.prom.vector(PACKETS) == {None: float(run.packets)}


def test_prometheus_scraped_while_the_files_were_processed(corpus_run: CorpusRun) -> None:
    """After each file Prometheus held exactly the service's count, which grew file by file."""
    counts = [n for n, _ in corpus_run.scraped]
    assert [got for _, got in corpus_run.scraped] == [float(n) for n in counts]
    assert len(counts) == CUTS and counts[0] > 0 and counts == sorted(set(counts))
    assert counts[-1] == len(corpus_run.records)


def test_capture_bytes_counter_counts_every_file_and_never_goes_down(corpus_run: CorpusRun) -> None:
    """pcapwatch_capture_bytes_total is a counter: it must end at every byte read, never decrease."""
    run = corpus_run
    assert run.prom.vector("resets(pcapwatch_capture_bytes_total[5m])") == {None: 0.0}
    assert run.metrics[("pcapwatch_capture_bytes_total", ())] == run.spool_bytes


def test_redis_stream_has_every_record_once_in_order_across_an_outage(corpus_run: CorpusRun) -> None:
    run = corpus_run
    assert run.stream == [r["event_id"] for r in run.records]
    # Redis was down while the service wrote `outage` records: the default buffer held them all.
    assert run.outage > SMALL_BUFFER
    assert (run.during_outage["redis"]["buffered"], run.during_outage["redis"]["dropped"]) == (run.outage, 0)
    s = output_stats(run.metrics, "redis")
    assert (s["submitted"], s["written"], s["dropped"], s["buffered"], s["reconnects"]) == (
        len(run.records), len(run.records), 0, 0, 1)
    assert s["errors"] >= 1 and s["retries"] >= 1


def test_small_buffer_drops_are_exactly_what_the_stream_misses(corpus_run: CorpusRun) -> None:
    run = corpus_run
    ids = [r["event_id"] for r in run.records]
    kept = set(run.small_stream)
    missing = [i for i in ids if i not in kept]
    dropped = output_stats(run.metrics, "redis_small")["dropped"]
    assert dropped == len(missing) > 0
    assert run.prom.vector(SMALL_DROPPED) == {None: float(dropped)}
    # What it kept: once each, in order.
    assert run.small_stream == [i for i in ids if i in kept]
    s = output_stats(run.metrics, "redis_small")
    assert (s["submitted"], s["written"], s["buffered"], s["reconnects"]) == (len(ids), len(kept), 0, 1)
    # While Redis was down nothing drained: the first SMALL_BUFFER records of the outage were held
    # and written after it, the rest dropped. (With Redis up, a burst of records larger than the
    # buffer drops too: those are counted the same way, above.)
    outage = ids[run.before_outage:run.before_outage + run.outage]
    assert run.outage > SMALL_BUFFER
    assert [i for i in outage if i in kept] == outage[:SMALL_BUFFER]
    during, before = run.during_outage["redis_small"], run.small_before
    assert (during["buffered"], during["dropped"] - before["dropped"]) == (SMALL_BUFFER, run.outage - SMALL_BUFFER)
    assert (before["buffered"], during["written"]) == (0, before["written"])
    assert run.prom_during_outage == {"transactions": float(run.before_outage + run.outage),
                                      "dropped": float(during["dropped"])}


def test_no_other_output_dropped(corpus_run: CorpusRun) -> None:
    got = corpus_run.prom.vector("pcapwatch_output_dropped_total", "output")
    assert got == {o: 0.0 for o in OUTPUTS} | {"redis_small": got["redis_small"]}
    assert got["redis_small"] > 0


def test_rsyslog_writes_every_record_in_order(corpus_run: CorpusRun) -> None:
    assert corpus_run.syslog == corpus_run.lines
    s = output_stats(corpus_run.metrics, "syslog")
    assert (s["written"], s["dropped"], s["errors"]) == (len(corpus_run.lines), 0, 0)


def test_tail_receives_every_transaction_in_order(corpus_run: CorpusRun) -> None:
    assert corpus_run.tail == corpus_run.lines
    assert corpus_run.tail_exit == (0, "")


def test_ecs_output_has_every_record(corpus_run: CorpusRun) -> None:
    run = corpus_run
    assert [d["event"]["id"] for d in run.ecs] == [r["event_id"] for r in run.records]
    assert [d["http"]["response"].get("status_code") for d in run.ecs] == [r["status_code"] for r in run.records]
    assert [d.get("url", {}).get("original") for d in run.ecs] == [r["uri"] for r in run.records]
