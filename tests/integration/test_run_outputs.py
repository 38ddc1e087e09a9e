"""Every output type through the running service: `pcapwatch run` as a subprocess, real servers behind it.

One module-wide set of servers: a real Prometheus scraping the service's prometheus output every
second, a real redis-server, a real rsyslogd. Two services run against them, each with an output of
every type (jsonl flat and ecs, syslog, redis, zmq with `pcapwatch tail --json` subscribed before any
record flows, prometheus):

- the corpus run: the corpus capture local/mix.pcap cut into four files, put into the spool one at
  a time, each processed before the next. Redis is stopped before the second file and started after
  it: the redis output with the default buffer loses nothing; a second redis output with a buffer of
  SMALL_BUFFER drops, and its drop counter (the service's metrics, and PromQL) is exactly what its
  stream misses: during the outage, everything past its first SMALL_BUFFER records (it also drops
  bursts larger than its buffer with Redis up, counted the same way). PromQL gives exactly the status
  classes `pcapwatch read` finds in the capture, and Prometheus held the service's count after every
  file; rsyslog, the stream and the tail hold every record of the jsonl output, in its order.
  pcapwatch_capture_bytes_total ends at every byte of the spool and never goes down.
- the redaction run: a capture crafted here whose requests and responses carry credentials,
  cookies, secret query parameters, a secret API-key header and a configured `redact.secrets`
  literal. No secret reaches the raw bytes of any output nor the service's log; what is not secret
  (the schemes, cookie names, parameter names, the transactions) does.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pcapgen as g
import pytest
import yaml
from conftest import corpus, need_tool, read_records
from liveenv import (
    Conn,
    Prometheus,
    RedisServer,
    Rsyslog,
    Service,
    Tail,
    free_port,
    http_get,
    read_jsonl,
    service,
    split_pcap,
    stream_ids,
    wait_until,
)
from pcapgen import Segment
from prometheus_client.parser import text_string_to_metric_families

WAIT_SECONDS = 30.0  # for a server to start, the service to process a file, Prometheus to scrape a value
SMALL_BUFFER = 50  # records the small redis output holds while Redis is down
CUTS = 4  # mix.pcap goes into the spool as this many files
OUTAGE_PART = 1  # Redis is down while the service processes this file (0-based)
SETTLE_SECONDS = 0.5  # after tail's TCP connection: its subscription reaches the publisher
OUTPUTS = ("records", "ecs", "syslog", "redis", "redis_small", "tap", "metrics")
MAIN_HOST, REDACT_HOST = "corpus-run", "redaction-run"  # syslog HOSTNAME of each run's messages
TOTAL = "sum(pcapwatch_http_transactions_total)"
SMALL_DROPPED = 'pcapwatch_output_dropped_total{output="redis_small"}'
PACKETS = "pcapwatch_capture_packets_total"

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    assert wait_until(check, timeout, 0.1), f"timed out after {timeout:.0f} s waiting for {what}"


def status_class(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"


# The service's side ----------------------------------------------------------------------------


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


def settled(port: int, outputs: tuple[str, ...] = OUTPUTS) -> bool:
    """Every output has written or dropped all it was given."""
    m = scrape(port)
    return all((s := output_stats(m, o))["buffered"] == 0 and s["written"] + s["dropped"] == s["submitted"]
               for o in outputs)


def connected(port: int) -> bool:
    """An established TCP connection to 127.0.0.1:port exists (/proc/net/tcp, the client's side)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(cols[2] == want and cols[3] == "01" for cols in (line.split() for line in f.readlines()[1:]))


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


def syslog_messages(rsyslog: Rsyslog, hostname: str) -> list[str]:
    """The message (the record's JSON) of every line rsyslog wrote for one run. No field before it
    holds `|{"`: facility to msgid are tokens, and structured data escapes every `"`."""
    out = []
    for line in rsyslog.lines():
        fields, sep, msg = line.partition('|{"')
        if sep and fields.split("|")[3] == hostname:
            out.append('{"' + msg)
    return out


def start_tail(zmq_port: int) -> Tail:
    """`pcapwatch tail --json` subscribed to the service's zmq output before any record flows."""
    tail = Tail("--json", "--connect", f"tcp://127.0.0.1:{zmq_port}")
    try:
        wait_for("pcapwatch tail to connect", lambda: connected(zmq_port) or tail.proc.poll() is not None, 10)
        assert tail.proc.poll() is None, tail.stop()
        time.sleep(SETTLE_SECONDS)
    except BaseException:
        tail.stop()
        raise
    return tail


# Servers ---------------------------------------------------------------------------------------


@dataclass
class Servers:
    base: Path
    prom: Prometheus
    redis: RedisServer
    rsyslog: Rsyslog
    metrics_port: int  # the corpus run's prometheus output, which Prometheus scrapes


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    need_tool("prometheus", "redis-server", "rsyslogd")
    base = tmp_path_factory.mktemp("outputs")
    metrics_port = free_port()
    for d in ("prometheus", "redis", "rsyslog"):
        (base / d).mkdir()
    started: list[Prometheus | RedisServer | Rsyslog] = []
    try:
        prom = Prometheus(base / "prometheus", f"127.0.0.1:{metrics_port}")
        started.append(prom)
        redis_server = RedisServer(base / "redis")
        redis_server.start()
        started.append(redis_server)
        rsyslog = Rsyslog(base / "rsyslog")
        rsyslog.start()
        started.append(rsyslog)
        wait_for("prometheus to be ready", prom.ready)
        yield Servers(base, prom, redis_server, rsyslog, metrics_port)
    finally:
        for s in reversed(started):
            s.stop()


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
        return self.written()

    def analysed(self) -> float | None:
        return scrape(self.port).get((PACKETS, ()))

    def written(self) -> int:
        return output_stats(scrape(self.port), "records")["submitted"]

    def settle(self, prom: Prometheus, n: int) -> tuple[int, float]:
        """Wait until every output has delivered (or dropped) the records so far and Prometheus has
        scraped their count, and the packets behind them (the health, refreshed every second)."""
        wait_for(f"the outputs to deliver {n} records", lambda: settled(self.port))
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
    strip = [{k: v for k, v in r.items() if k not in RUN_ONLY} for r in run.records]
    assert strip == [{k: v for k, v in r.items() if k not in RUN_ONLY} for r in run.expected]
    ids = [r["event_id"] for r in run.records]
    assert len(set(ids)) == len(ids) and None not in ids
    assert {r["pcap_file"] for r in run.records} == {"cap.pcap", *(f"cap.pcap{i}" for i in range(1, CUTS))}
    assert (run.status["records"], run.status["lost"], run.status["gaps"]) == (len(run.records), 0, 0)
    # The only complaints: each redis output, once, when Redis went away.
    assert run.svc.proc.poll() is None and run.svc.lines("error") == []
    assert sorted(w.split(":")[2] for w in run.svc.lines("warning")) == [" redis output redis",
                                                                          " redis output redis_small"]
    assert all(w.endswith("; buffering and retrying with backoff") for w in run.svc.lines("warning"))


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


# The redaction run -----------------------------------------------------------------------------

LITERAL = "s3cr3t-XYZ-123"  # configured in redact.secrets
BASIC = base64.b64encode(b"alice:s3cr3t-BASIC-9001").decode()
SECRETS = {
    "basic": BASIC,
    "bearer": "s3cr3t-BEARER-eyJhbGciOi.e30.x",
    "cookie": "s3cr3t-COOKIE-1234",
    "set-cookie": "s3cr3t-SETCOOKIE-5678",
    "token": "s3cr3t-TOKEN-4711",
    "password": "s3cr3t-PASSWORD-0815",
    "api-key": "s3cr3t-APIKEY-42",
    "literal": LITERAL,
}
R = "<redacted>"
T0 = 1_700_000_000 * 10**9


def request(method: str, uri: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {uri} HTTP/1.1", "Host: vault.test", *headers, "", ""]).encode()


def response(status: str, *headers: str, body: bytes = b"ok\n") -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(head).encode() + body


S = SECRETS


class Exchange(NamedTuple):
    """One transaction on the wire, and what the records must show of it."""

    request: bytes
    response: bytes
    uri: str
    status: int
    request_headers: dict[str, str]  # the logged ones but host
    response_headers: dict[str, str]  # set-cookie and location


# By connection.
EXCHANGES: list[list[Exchange]] = [
    [
        Exchange(request("GET", f"/login?token={S['token']}&password={S['password']}&page=2",
                         f"Authorization: Basic {BASIC}"),
                 response("200 OK", f"Set-Cookie: id={S['set-cookie']}; Path=/; HttpOnly"),
                 f"/login?token={R}&password={R}&page=2", 200, {"authorization": f"Basic {R}"},
                 {"set-cookie": f"id={R}; Path=/; HttpOnly"}),
        Exchange(request("GET", "/account", f"Authorization: Bearer {S['bearer']}",
                         f"Cookie: session={S['cookie']}; theme=dark"),
                 response("200 OK"), "/account", 200,
                 {"authorization": f"Bearer {R}", "cookie": f"session={R}; theme={R}"}, {}),
        Exchange(request("GET", f"/vault/{LITERAL}/open", f"User-Agent: probe/1.0 ({LITERAL})"),
                 response("404 Not Found"), f"/vault/{R}/open", 404, {"user-agent": f"probe/1.0 ({R})"}, {}),
    ],
    [
        Exchange(request("POST", "/api/items", f"X-Api-Key: {S['api-key']}", "Content-Length: 2",
                         f"Referer: http://vault.test/login?token={S['token']}") + b"{}",
                 response("302 Found", f"Location: /items?password={S['password']}&x=1", body=b""),
                 "/api/items", 302,
                 {"x-api-key": R, "content-length": "2", "referer": f"http://vault.test/login?token={R}"},
                 {"location": f"/items?password={R}&x=1"}),
        Exchange(request("GET", f"/files/{LITERAL}.txt?password={S['password']}", f"Cookie: session={S['cookie']}"),
                 response("200 OK", f"Set-Cookie: id={S['set-cookie']}"), f"/files/{R}.txt?password={R}", 200,
                 {"cookie": f"session={R}"}, {"set-cookie": f"id={R}"}),
    ],
]
EXPECTED = [e for conn in EXCHANGES for e in conn]
# Not secret, so in every output that carries the headers (as compact JSON, the way they are written).
VISIBLE = [b'"authorization":"Basic <redacted>"', b'"authorization":"Bearer <redacted>"',
           b'"cookie":"session=<redacted>; theme=<redacted>"', b'"set-cookie":"id=<redacted>; Path=/; HttpOnly"',
           b"token=<redacted>&password=<redacted>&page=2", b"/vault/<redacted>/open", b'"x-api-key":"<redacted>"']


def secret_capture() -> bytes:
    """The exchanges on two keep-alive connections, interleaved in time, each closed with FIN."""
    segments: list[Segment] = []
    for n, exchanges in enumerate(EXCHANGES):
        out: list[Segment] = []
        c = Conn(out, n + 1)
        t = T0 + n * 500_000
        c.open(t)
        t += 1_000_000
        for e in exchanges:
            t = c.send(t, True, e.request) + 1_000_000
            t = c.send(t, False, e.response) + 1_000_000
        c.close(t)
        segments += out
    segments.sort(key=lambda s: s.ts_ns)
    return g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments))


@dataclass
class RedactionRun:
    outputs: dict[str, bytes]  # raw bytes of every output and of the service's log, by name
    records: list[dict[str, Any]]
    lines: list[str]
    ecs: list[dict[str, Any]]
    stream: list[str]
    syslog: list[str]
    tail: list[str]
    tail_exit: tuple[int, str]
    metrics: Metrics
    exit_code: int


def stream_bytes(srv: RedisServer, key: str) -> bytes:
    """Every entry of a stream as stored, one a line."""
    entries: Any = srv.client().xrange(key)  # redis-py's reply type is a union of sync and async
    return b"\n".join(f[b"json"] for _, f in entries)


@pytest.fixture(scope="module")
def redaction_run(servers: Servers) -> RedactionRun:
    """The crafted capture through a service with every output; the service stopped (its log complete)."""
    base = servers.base / "redaction"
    spool = base / "spool"
    spool.mkdir(parents=True)
    zmq_port, metrics_port = free_port(), free_port()
    outputs = outputs_config(base, servers, syslog=f"unix:{servers.rsyslog.sock}", hostname=REDACT_HOST,
                             key="pcapwatch:redaction", zmq_port=zmq_port, metrics_port=metrics_port)
    config = write_yaml(base / "pcapwatch.yaml", {
        "spool": {"dir": str(spool), "rescan_seconds": 0.5},
        "state": {"dir": str(base / "state"), "checkpoint_seconds": 1.0},
        "outputs": outputs,
        "headers": {"request": ["host", "user-agent", "referer", "content-length", "authorization", "cookie",
                                "x-api-key"]},
        "redact": {"headers": ["x-api-key"], "secrets": [LITERAL]},
    })
    n = len(EXPECTED)
    stderr = base / "pcapwatch.stderr"
    names = tuple(o["name"] for o in outputs)
    records = base / "records.jsonl"
    with service(config, stderr) as svc:
        tail = start_tail(zmq_port)
        try:
            put(spool, "cap.pcap", secret_capture())
            wait_for("the records", lambda: len(read_jsonl(records)) >= n)
            wait_for("the outputs to deliver", lambda: settled(metrics_port, names))
            wait_for("rsyslog to write every record", lambda: len(syslog_messages(servers.rsyslog, REDACT_HOST)) >= n)
            wait_for("pcapwatch tail to print every record", lambda: len(tail.lines) >= n)
            time.sleep(0.5)  # and nothing more
            svc.send(signal.SIGUSR1)  # the status line goes to the log too
            assert svc.wait_log(f"info: records {n}, ")
            metrics_text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")[2]
            metrics = scrape(metrics_port)
        finally:
            tail_exit = tail.stop()
    return RedactionRun(
        outputs={"jsonl flat": records.read_bytes(), "jsonl ecs": (base / "ecs.jsonl").read_bytes(),
                 "rsyslog file": servers.rsyslog.out.read_bytes(),
                 "redis stream": stream_bytes(servers.redis, "pcapwatch:redaction"),
                 "pcapwatch tail": "\n".join(tail.lines).encode(), "prometheus /metrics": metrics_text,
                 "service log": stderr.read_bytes()},
        records=read_jsonl(records), lines=records.read_text().splitlines(), ecs=read_jsonl(base / "ecs.jsonl"),
        stream=stream_ids(servers.redis, "pcapwatch:redaction"), syslog=syslog_messages(servers.rsyslog, REDACT_HOST),
        tail=list(tail.lines), tail_exit=tail_exit, metrics=metrics, exit_code=svc.proc.returncode)


def test_the_crafted_capture_carries_the_secrets(tmp_path: Path) -> None:
    """The secrets are on the wire: `pcapwatch read` (no redaction) shows them, in every transaction."""
    data = secret_capture()
    assert all(s.encode() in data for s in SECRETS.values())
    path = tmp_path / "secrets.pcap"
    path.write_bytes(data)
    records, _, _ = read_records(path)
    assert sorted((r["method"], r["status_code"]) for r in records) == sorted(
        (e.request.split(b" ", 1)[0].decode(), e.status) for e in EXPECTED)
    assert LITERAL in json.dumps(records) and S["token"] in json.dumps(records)


def test_no_secret_in_any_output(redaction_run: RedactionRun) -> None:
    outputs = redaction_run.outputs
    assert [name for name, raw in outputs.items() if not raw] == []
    leaks = {name: [k for k, s in SECRETS.items() if s.encode() in raw] for name, raw in outputs.items()}
    assert leaks == {name: [] for name in outputs}
    assert [name for name, raw in outputs.items() if b"s3cr3t" in raw] == []  # not even a part of one
    assert redaction_run.exit_code == 0


def test_what_is_not_secret_is_in_every_output(redaction_run: RedactionRun) -> None:
    carrying_headers = ("jsonl flat", "jsonl ecs", "rsyslog file", "redis stream", "pcapwatch tail")
    missing = {name: [v.decode() for v in VISIBLE if v not in redaction_run.outputs[name]] for name in carrying_headers}
    assert missing == {name: [] for name in carrying_headers}
    metrics = redaction_run.outputs["prometheus /metrics"].decode()
    assert 'route="/vault/<redacted>/open"' in metrics and 'host="vault.test"' in metrics
    assert "pcapwatch: info: records 5, " in redaction_run.outputs["service log"].decode()


def test_every_transaction_is_in_every_output(redaction_run: RedactionRun) -> None:
    run = redaction_run
    got = {r["uri"]: (r["status_code"], {k: v for k, v in r["request_headers"].items() if k != "host"},
                      {k: v for k, v in r["response_headers"].items() if k in ("set-cookie", "location")})
           for r in run.records}
    assert got == {e.uri: (e.status, e.request_headers, e.response_headers) for e in EXPECTED}
    assert len(run.records) == len(EXPECTED)
    ids = [r["event_id"] for r in run.records]
    assert [d["event"]["id"] for d in run.ecs] == ids
    assert run.stream == ids
    assert run.syslog == run.lines
    assert run.tail == run.lines and run.tail_exit == (0, "")
    assert sum(v for (name, labels), v in run.metrics.items()
               if name == "pcapwatch_http_transactions_total" and ("host", "vault.test") in labels) == len(ids)
