"""The prometheus output against a real Prometheus server (Debian's `prometheus`), and its endpoint.

The acceptance run: the real pipeline reads the corpus capture `local/mix.pcap` in-process and
every transaction takes the service's path (issue 4's contract): record -> rules -> redact.finalize
-> submitted to the output and counted in the metrics model with the rules' metrics; a Prometheus
server started here scrapes the sink every second. Twice during the run and at its end
the test waits until Prometheus holds exactly the count the model has reached, then PromQL through
Prometheus's HTTP API must give the exact transaction counts by status class that `pcapwatch read`
finds in the capture. The Grafana dashboard is checked against the same live endpoint and server:
every metric it names is exposed, and Prometheus accepts every expression in it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import platform
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.env import REPO, corpus, need_tool, read_records
from helpers.liveenv import free_port, service, wait_for
from helpers.outputrun import scrape
from helpers.outputservers import Prometheus, http_get

from analyzers import Anomaly, RawRule, RuleSet, TxView, compile_rules
from analyzers.pipeline import Pipeline
from analyzers.records import to_record
from analyzers.redact import Policy, finalize
from analyzers.routes import RouteTemplater
from watcher import version
from watcher.capture.sources import Capture
from watcher.config.model import PrometheusOutputConfig
from watcher.metrics import DURATION, REQUEST_BYTES, RESPONSE_BYTES, TRANSACTIONS, TTFB, Health, MetricsModel
from watcher.sinks import open_sink
from watcher.sinks.prometheus_sink import PrometheusSink, parse_listen

DASHBOARD = REPO / "conf" / "grafana" / "pcapwatch.json"
# Small reads, so the run has many steps and Prometheus scrapes while it goes on.
CHUNK = 256 << 10
# The run's rules: a histogram of /api/ durations (and on to the next rule), a counter of errors.
RULES = [
    {"name": "api", "match": {"path": "^/api/"}, "continue": True,
     "actions": {"metric": {"name": "api_duration", "type": "histogram", "labels": ["route"],
                            "field": "duration_ms"}}},
    {"name": "errors", "match": {"status": "400-599"},
     "actions": {"metric": {"name": "http_errors", "type": "counter", "labels": ["host", "status_code"]}}},
]


def headers(message: Any) -> dict[str, Any]:
    head = getattr(message, "head", None)
    return dict(getattr(head, "headers", {}))


def status_class_of(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"


@dataclasses.dataclass
class Run:
    records: list[dict[str, Any]]  # what `pcapwatch read` writes for the capture
    read_stats: dict[str, Any]
    observed: int  # transactions the in-process run fed to the model
    checkpoints: list[tuple[int, float]]  # (transactions observed, what Prometheus returned then)
    prom: Prometheus
    sink: PrometheusSink
    metrics_text: str  # the sink's /metrics at the end


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    path = corpus("local", "mix.pcap")
    need_tool("prometheus")
    records, result, _ = read_records(path)
    tmp = tmp_path_factory.mktemp("prometheus")
    model = MetricsModel()
    sink = open_sink(PrometheusOutputConfig("prom", "prometheus", listen="127.0.0.1:0"), metrics=model)
    assert isinstance(sink, PrometheusSink)
    prom = Prometheus(tmp, f"127.0.0.1:{sink.address[1]}")
    try:
        wait_for("prometheus to be ready", prom.ready)
        wait_for("the first scrape", lambda: prom.vector('up{job="pcapwatch"}') == {None: 1.0})
        observed, checkpoints = feed_capture(path, model, sink, prom, len(records))
        text = http_get(sink.url)[2].decode()
        yield Run(records, result.stats, observed, checkpoints, prom, sink, text)
    finally:
        prom.stop()
        sink.close(5)


def feed_capture(path: Path, model: MetricsModel, sink: PrometheusSink, prom: Prometheus,
                 expected: int) -> tuple[int, list[tuple[int, float]]]:
    """The service's flow in-process: frames -> transactions -> rules -> finalized records -> sink and
    model. At a third and two thirds of the transactions, and at the end, wait until Prometheus has
    scraped the count."""
    pipeline = Pipeline()
    rules: RuleSet = compile_rules([RawRule(r, "test", f"rules[{i}]") for i, r in enumerate(RULES)], ["prom"])
    policy = Policy()
    cap = Capture(str(path))
    health = Health()
    model.set_health(lambda: dataclasses.replace(health, outputs={"prom": sink.stats()}))
    observed = 0
    checkpoints: list[tuple[int, float]] = []
    marks = [expected // 3, 2 * expected // 3]

    def observe(txs: list[Any]) -> None:
        nonlocal observed, health
        for tx in txs:
            view = TxView(to_record(tx), headers(tx.request), headers(tx.response))
            decision = rules.evaluate(view)
            record = finalize(view, decision, policy)
            if not decision.drop and (decision.outputs is None or "prom" in decision.outputs):
                sink.submit(record)
            model.observe(decision.metrics, record)
            observed += 1
        rs = policy.routes.stats()
        health = Health.from_pipeline(pipeline.stats(), files=0, bytes=cap.position(), routes=rs["routes"],
                                      route_overflow=rs["route_overflow"], rule_errors=dict(rules.errors),
                                      queue_capacity=16)

    def checkpoint() -> None:
        total = "sum(pcapwatch_http_transactions_total)"
        wait_for(f"prometheus to scrape {observed} transactions", lambda: prom.vector(total) == {None: observed})
        checkpoints.append((observed, prom.vector(total)[None]))

    try:
        for batches in cap.batches(CHUNK):
            for linktype, frames in batches:
                observe(pipeline.feed(linktype, frames))
            if marks and observed >= marks[0]:
                marks.pop(0)
                checkpoint()
        observe(pipeline.close())
        health = dataclasses.replace(health, files=1)
    finally:
        cap.close()
    assert sink.flush(10)
    checkpoint()
    wait_for("the final health", lambda: prom.vector("pcapwatch_capture_files_total") == {None: 1.0})
    return observed, checkpoints


def test_promql_counts_by_status_class_are_the_captures(run: Run) -> None:
    want = Counter(status_class_of(r["status_code"]) for r in run.records)
    assert len(run.records) == run.observed == 896  # mix.pcap: 892 requests, 2 garbage lines, 2 heads never finished
    assert want == {"2xx": 805, "3xx": 31, "4xx": 58, "none": 2}  # none: the heads never finished, unanswered
    got = run.prom.vector("sum by (status_class) (pcapwatch_http_transactions_total)", "status_class")
    assert got == {k: float(v) for k, v in want.items()}


def test_prometheus_scraped_while_the_capture_was_processed(run: Run) -> None:
    counts = [n for n, _ in run.checkpoints]
    assert [got for _, got in run.checkpoints] == [float(n) for n in counts]
    assert len(counts) == 3 and 0 < counts[0] < counts[1] < counts[2] == 896
    # Prometheus's own record of the run: the raw samples, summed per scrape (one timestamp each),
    # go up through those values.
    answer = run.prom.query("pcapwatch_http_transactions_total[5m]")
    assert answer["status"] == "success", answer
    per_scrape: Counter[float] = Counter()
    for series in answer["data"]["result"]:
        for ts, v in series["values"]:
            per_scrape[ts] += float(v)
    totals = [per_scrape[ts] for ts in sorted(per_scrape)]
    assert totals == sorted(totals) and totals[-1] == 896
    assert {float(n) for n in counts} <= set(totals)


def test_promql_other_dimensions_are_exact(run: Run) -> None:
    recs, p = run.records, run.prom
    assert p.vector("sum by (method) (pcapwatch_http_transactions_total)", "method") == {
        m: float(n) for m, n in Counter(r["method"] or "none" for r in recs).items()}
    assert p.vector("sum by (host) (pcapwatch_http_transactions_total)", "host") == {
        h: float(n) for h, n in Counter((r["host"] or "none").lower() for r in recs).items()}
    routes = RouteTemplater()
    assert p.vector("sum by (route) (pcapwatch_http_transactions_total)", "route") == {
        rt: float(n) for rt, n in Counter(routes.route(r["uri"]) or "none" for r in recs).items()}
    with_duration = sum(r["duration_ms"] is not None for r in recs)
    assert p.vector("sum(pcapwatch_http_duration_seconds_count)") == {None: float(with_duration)}
    assert p.vector("sum(pcapwatch_http_ttfb_seconds_count)") == {None: float(with_duration)}
    assert p.vector("sum(pcapwatch_http_response_body_bytes_total)") == {
        None: float(sum(r["response_body_len"] for r in recs))}
    assert p.vector("sum(pcapwatch_http_request_body_bytes_total)") == {
        None: float(sum(r["request_body_len"] for r in recs))}
    assert p.vector("sum by (status_code) (pcapwatch_http_errors_total)", "status_code") == {
        str(c): float(n) for c, n in Counter(r["status_code"] for r in recs if (r["status_code"] or 0) >= 400).items()}
    api = [r for r in recs if r["uri"] and r["uri"].startswith("/api/")]
    assert len(api) > 10
    assert p.vector("sum by (route) (pcapwatch_api_duration_seconds_count)", "route") == {
        rt: float(n) for rt, n in Counter(routes.route(r["uri"]) for r in api if r["duration_ms"] is not None).items()}
    assert p.vector("sum(pcapwatch_metric_errors_total)") == {}


def test_promql_health_is_the_pipelines(run: Run) -> None:
    st, p = run.read_stats, run.prom
    assert p.vector("pcapwatch_capture_packets_total") == {None: float(st["frames"])} == {None: 7042.0}
    assert p.vector("pcapwatch_capture_bytes_total") == {None: float(st["bytes"])}
    assert p.vector("pcapwatch_connections_total") == {None: float(st["connections"]["connections"])}
    assert p.vector("pcapwatch_connections_active") == {None: 0.0}
    assert p.vector("pcapwatch_tcp_gaps_total") == {None: float(st["tcp"]["gaps"])}
    tcp_events = p.vector("pcapwatch_tcp_events_total", "event")
    assert tcp_events == {k: float(v) for k, v in st["tcp"].items() if k in tcp_events}
    assert {"gap_bytes", "retransmitted_segments", "holes_expired", "checksum_dropped_segments"} <= set(tcp_events)
    assert tcp_events["retransmitted_segments"] > 0
    conn_events = p.vector("pcapwatch_connection_events_total", "event")
    assert conn_events == {k: float(v) for k, v in st["connections"].items() if k in conn_events}
    assert {"closed", "resets_refused", "late_packets", "self_connections"} <= set(conn_events)
    assert p.vector("pcapwatch_ip_fragments_total", "event") == {k: float(v) for k, v in st["ip_fragments"].items()}
    assert p.vector("pcapwatch_http_anomalies_total", "name") == {
        k: float(v) for k, v in st["anomalies"].items()}
    outputs = {m: p.vector(f'pcapwatch_output_{m}_total{{output="prom"}}') for m in ("submitted", "written",
                                                                                    "dropped")}
    assert outputs == {"submitted": {None: 896.0}, "written": {None: 896.0}, "dropped": {None: 0.0}}
    # exported at 0 from the start (not "No data"), and nothing folded
    assert p.vector("sum(pcapwatch_metric_label_overflow_total)") == {None: 0.0}


# The dashboard ---------------------------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def exposed_names(text: str) -> set[str]:
    """Series names a PromQL expression can select from an exposition (families without samples too)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count")}
            elif kind == "counter":  # older prometheus_client versions name the family without _total
                names.add(name if name.endswith("_total") else name + "_total")
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers outside strings, label matchers, ranges,
    grouping clauses and function calls."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    idents = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", e)
    return {i for i in idents if i.lower() not in PROMQL_WORDS}


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
            assert m, v
            exprs.append(m.group(1))
    return exprs


def grafana_to_promql(expr: str) -> str:
    """The expression as Grafana sends it with every variable at All."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$host", ".*")


def test_dashboard_is_valid_grafana_json() -> None:
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    ds = {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in d["panels"] if p["type"] != "row"]
    for p in graphs:
        assert p["datasource"] == ds and p["targets"], p["title"]
        assert all(t["datasource"] == ds and t["expr"] for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
    titles = {p["title"] for p in graphs}
    assert {"Requests/s by status class", "Latency percentiles by route (duration)", "Top hosts", "Error rate",
            "Lag behind tcpdump", "Output drops/s", "Gaps and lost files"} <= titles
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in graphs}
    assert "histogram_quantile(0.95, sum by (route, le)" in by_title["Latency percentiles by route (duration)"]
    assert "sum by (status_class) (rate(pcapwatch_http_transactions_total" in by_title["Requests/s by status class"]


def test_dashboard_names_only_exposed_metrics_and_prometheus_accepts_it(run: Run) -> None:
    exposed = exposed_names(run.metrics_text)
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 20
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exposed, (expr, names - exposed)
        answer = run.prom.query(grafana_to_promql(expr))
        assert answer["status"] == "success", (expr, answer)
    # The main panel shows the run: one series per status class of the capture.
    d = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in d["panels"] if p["title"] == "Requests/s by status class"]
    got = run.prom.vector(grafana_to_promql(panel["targets"][0]["expr"]), "status_class")
    # ("none": the two heads never finished, too few for a rate over the window)
    assert set(got) == {"2xx", "3xx", "4xx", "none"} and all(got[k] > 0 for k in ("2xx", "3xx", "4xx"))


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (status_class) (rate(pcapwatch_http_transactions_total{host=~"$host", x="a{b}"}[$__rate_interval]))',
     {"pcapwatch_http_transactions_total"}),
    ("histogram_quantile(0.95, sum by (route, le) (rate(pcapwatch_http_duration_seconds_bucket[5m])))",
     {"pcapwatch_http_duration_seconds_bucket"}),
    ("sum(pcapwatch_queue_batches) / sum(pcapwatch_queue_capacity_batches)",
     {"pcapwatch_queue_batches", "pcapwatch_queue_capacity_batches"}),
    ("topk(10, sum without (instance) (rate(nope_total[1m]))) > bool 0", {"nope_total"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# The endpoint ----------------------------------------------------------------------------------

RECORD = {"method": "GET", "host": "a.test", "route": "/x/{id}", "status_code": 503, "duration_ms": 30.0,
          "ttfb_ms": 2.0, "request_body_len": 0, "response_body_len": 10}


def output(listen: str, **kw: Any) -> PrometheusOutputConfig:
    return PrometheusOutputConfig("prom", "prometheus", listen=listen, **kw)


@pytest.fixture
def served() -> Iterator[PrometheusSink]:
    m = MetricsModel(buckets_ms=[10, 100])
    m.observe([], RECORD)
    sink = PrometheusSink(output("127.0.0.1:0", buckets_ms=(10, 100)), m).start()
    try:
        yield sink
    finally:
        sink.close(5)


def test_exposition_exact(served: PrometheusSink) -> None:
    status, headers, body = http_get(served.url)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = body.decode().splitlines()
    want = [
        "# TYPE pcapwatch_http_transactions_total counter",
        'pcapwatch_http_transactions_total{host="a.test",method="GET",route="/x/{id}",status_class="5xx"} 1.0',
        "# TYPE pcapwatch_http_duration_seconds histogram",
        'pcapwatch_http_duration_seconds_bucket{host="a.test",le="0.01",route="/x/{id}"} 0.0',
        'pcapwatch_http_duration_seconds_bucket{host="a.test",le="0.1",route="/x/{id}"} 1.0',
        'pcapwatch_http_duration_seconds_bucket{host="a.test",le="+Inf",route="/x/{id}"} 1.0',
        'pcapwatch_http_duration_seconds_count{host="a.test",route="/x/{id}"} 1.0',
        'pcapwatch_http_duration_seconds_sum{host="a.test",route="/x/{id}"} 0.03',
        'pcapwatch_http_response_body_bytes_total{host="a.test",route="/x/{id}"} 10.0',
    ]
    assert [x for x in lines if x in want] == want
    assert any(x.startswith("process_resident_memory_bytes ") for x in lines)
    assert served.scrape_stats() == {"scrapes": 1, "scrape_errors": 0}


def test_only_the_configured_path(served: PrometheusSink) -> None:
    base = served.url.rsplit("/", 1)[0]
    assert http_get(base + "/")[0] == 404
    assert http_get(base + "/metricsx")[0] == 404
    assert http_get(served.url + "?name[]=x")[0] == 200
    status, headers, body = http_get(served.url, method="HEAD")
    assert (status, body) == (200, b"") and int(headers["Content-Length"]) > 1000


def test_gzip_when_asked(served: PrometheusSink) -> None:
    plain = http_get(served.url)[2]
    status, headers, body = http_get(served.url, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    strip = re.compile(rb"^process_.*$", re.M)  # CPU time and memory move between two scrapes
    assert strip.sub(b"", gzip.decompress(body)) == strip.sub(b"", plain)


def test_failing_health_callback_still_serves(served: PrometheusSink) -> None:
    def broken() -> Health:
        raise RuntimeError("no state")

    served.metrics.set_health(broken)
    status, _, body = http_get(served.url)
    text = body.decode()
    assert status == 200
    assert "pcapwatch_health_errors_total 1.0" in text.splitlines()
    assert 'status_class="5xx"' in text


def test_submitted_records_are_accounted(served: PrometheusSink) -> None:
    for _ in range(5):
        served.submit(dict(RECORD))
    assert served.flush(5)
    assert served.stats() == {"submitted": 5, "written": 5, "dropped": 0, "retries": 0, "errors": 0,
                              "reconnects": 0, "buffered": 0}


def test_taken_port_is_an_error_naming_the_output() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError) as e:
            PrometheusSink(output(f"127.0.0.1:{port}"), MetricsModel())
    assert e.value.strerror == (f"output prom: cannot listen on 127.0.0.1:{port} (Address already in use): another "
                                f"process listens there (`ss -ltnp 'sport = :{port}'` shows which; another "
                                "pcapwatch?): stop it, or set the output's listen: to a free port")


def test_close_frees_the_port_and_ipv6() -> None:
    sink = PrometheusSink(output("[::1]:0"), MetricsModel()).start()
    port = sink.address[1]
    assert sink.url == f"http://[::1]:{port}/metrics"
    assert http_get(sink.url)[0] == 200
    sink.close(5)
    again = PrometheusSink(output(f"[::1]:{port}", path="/m"), MetricsModel()).start()
    try:
        assert http_get(f"http://[::1]:{port}/m")[0] == 200
    finally:
        again.close(5)


@pytest.mark.parametrize(("listen", "want"), [
    ("127.0.0.1:9477", ("127.0.0.1", 9477)), ("[::1]:0", ("::1", 0)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:9", ("localhost", 9)),
])
def test_parse_listen(listen: str, want: tuple[str, int]) -> None:
    assert parse_listen(listen) == want


@pytest.mark.parametrize("listen", ["9477", ":9477", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000", "[::1]"])
def test_parse_listen_errors(listen: str) -> None:
    with pytest.raises(ValueError, match="listen must be HOST:PORT"):
        parse_listen(listen)


def test_a_fresh_service_exports_build_info_start_time_and_zeros(tmp_path: Path) -> None:
    """The real service, before any capture: build info, its start time, and every counter whose
    label values are known in advance present at 0 (anomalies, rules, outputs, delivery events,
    folded metrics), so a dashboard shows 0, not "No data"."""
    port = free_port()
    (tmp_path / "spool").mkdir()
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"spool: {{dir: {tmp_path / 'spool'}}}\nstate: {{dir: {tmp_path / 'state'}}}\noutputs:\n"
                   f"  - {{name: file, type: jsonl, path: {tmp_path / 'out.jsonl'}}}\n"
                   f"  - {{name: prom, type: prometheus, listen: '127.0.0.1:{port}'}}\n"
                   "rules:\n  - {name: slow, match: {duration_ms: '>1000'}, actions: {log: true}}\n")
    before = time.time()
    with service(cfg, tmp_path / "err.log"):
        m = scrape(port)
    after = time.time()
    python = platform.python_version()
    assert m[("pcapwatch_build_info", (("python", python), ("version", version())))] == 1.0
    assert [k for k in m if k[0] == "pcapwatch_build_info"] == [
        ("pcapwatch_build_info", (("python", python), ("version", version())))]
    assert version() == "0.1.0"
    assert before - 1 <= m[("pcapwatch_start_time_seconds", ())] <= after
    assert {k[1][0][1]: v for k, v in m.items() if k[0] == "pcapwatch_http_anomalies_total"} == {
        a.value: 0.0 for a in Anomaly}
    assert {k[1]: v for k, v in m.items() if k[0] == "pcapwatch_rule_errors_total"} == {(("rule", "slow"),): 0.0}
    assert {k[1][0][1]: v for k, v in m.items() if k[0] == "pcapwatch_not_http_connections_total"} == {
        "tls": 0.0, "http2": 0.0, "other": 0.0}
    assert {k[1][0][1]: v for k, v in m.items() if k[0] == "pcapwatch_metric_label_overflow_total"} == {
        name: 0.0 for name in (TRANSACTIONS, DURATION, TTFB, REQUEST_BYTES, RESPONSE_BYTES)}
    for name in ("submitted", "written", "dropped", "errors"):
        assert {k[1]: v for k, v in m.items() if k[0] == f"pcapwatch_output_{name}_total"} == {
            (("output", "file"),): 0.0, (("output", "prom"),): 0.0}, name
    assert {k[1][0][1]: v for k, v in m.items() if k[0] == "pcapwatch_delivery_total"} == {
        "records": 0.0, "dropped_by_rules": 0.0, "alerts": 0.0, "unknown_output": 0.0, "pcap_without_packets": 0.0}
