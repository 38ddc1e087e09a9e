"""watcher.metrics: exact counters, histogram buckets, the label-cardinality guard, rule metrics and
health families, without prometheus_client (the sink's tests are in tests/integration/test_prometheus.py)."""

from __future__ import annotations

import platform
import threading
import time
from typing import Any

import pytest

from analyzers import Anomaly
from analyzers.pipeline import Pipeline
from analyzers.rules.model import Metric
from watcher import version
from watcher.health import with_known_labels
from watcher.metrics import (
    BYTE_BUCKETS,
    DURATION,
    PLAIN_BUCKETS,
    REQUEST_BYTES,
    RESPONSE_BYTES,
    TRANSACTIONS,
    TTFB,
    Family,
    Health,
    MetricsModel,
    field_label,
    health_families,
    label_value,
    method_label,
    rule_metric_name,
    rule_metric_problem,
    status_class,
)

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def rec(**kw: Any) -> dict[str, Any]:
    """A finalized record with the fields the model reads."""
    base: dict[str, Any] = {"method": "GET", "host": "shop.test", "route": "/items/{id}", "status_code": 200,
                            "duration_ms": 12.0, "ttfb_ms": 3.0, "request_body_len": 0, "response_body_len": 100,
                            "flags": [], "anomalies": [], "src_ip": "192.0.2.1"}
    base.update(kw)
    return base


def fam(model: MetricsModel, name: str) -> Family:
    found = [f for f in model.collect() if f.name == name]
    assert len(found) == 1, name
    return found[0]


def samples(model: MetricsModel, name: str) -> dict[tuple[str, ...], float]:
    return dict(fam(model, name).samples)


def series(model: MetricsModel, name: str) -> dict[tuple[str, ...], tuple[tuple[int, ...], float]]:
    return {k: (c, s) for k, c, s in fam(model, name).series}


@pytest.mark.parametrize(("code", "want"), [
    (None, "none"), (100, "1xx"), (101, "1xx"), (200, "2xx"), (204, "2xx"), (299, "2xx"), (301, "3xx"),
    (404, "4xx"), (499, "4xx"), (500, "5xx"), (599, "5xx"), (600, "invalid"), (99, "invalid"), (0, "invalid"),
    ("200", "invalid"),
])
def test_status_class(code: Any, want: str) -> None:
    assert status_class(code) == want


@pytest.mark.parametrize(("method", "want"), [
    ("GET", "GET"), ("PATCH", "PATCH"), ("CONNECT", "CONNECT"), (None, "none"), ("get", "other"),
    ("GARBAGE\\x00", "other"), ("PROPFIND", "other"),
])
def test_method_label(method: Any, want: str) -> None:
    assert method_label(method) == want


@pytest.mark.parametrize(("value", "want"), [
    (None, "none"), ("", "none"), ([], "none"), (True, "true"), (False, "false"), (404, "404"),
    (["gap", "truncated"], "gap,truncated"), ("x" * 200, "x" * 128),
])
def test_label_value(value: Any, want: str) -> None:
    assert label_value(value) == want


def test_field_label_derives_status_class_unless_the_record_has_one() -> None:
    assert field_label({"status_code": 503}, "status_class") == "5xx"
    assert field_label({"status_code": 503, "status_class": "set"}, "status_class") == "set"
    assert field_label({}, "missing") == "none"


def test_one_transaction_exact() -> None:
    m = MetricsModel()
    m.observe([], rec(host="Shop.TEST:8080", duration_ms=5.0, ttfb_ms=25.001, request_body_len=7,
                      response_body_len=1234))
    assert samples(m, TRANSACTIONS) == {("GET", "2xx", "shop.test:8080", "/items/{id}"): 1.0}
    tx = fam(m, TRANSACTIONS)
    assert (tx.kind, tx.labels) == ("counter", ("method", "status_class", "host", "route"))
    d = fam(m, DURATION)
    assert (d.kind, d.labels, d.buckets) == ("histogram", ("host", "route"), SECONDS)
    # 5 ms is exactly the first bound: `le` buckets count v <= bound.
    assert series(m, DURATION) == {("shop.test:8080", "/items/{id}"): ((1,) * 12, 0.005)}
    # 25.001 ms is just above 0.025 s: first counted at 0.05.
    ((key, counts, total),) = fam(m, TTFB).series
    assert (key, counts, total) == (("shop.test:8080", "/items/{id}"), (0, 0, 0) + (1,) * 9, pytest.approx(0.025001))
    assert samples(m, REQUEST_BYTES) == {("shop.test:8080", "/items/{id}"): 7.0}
    assert samples(m, RESPONSE_BYTES) == {("shop.test:8080", "/items/{id}"): 1234.0}


def test_histogram_counts_are_cumulative_and_end_with_inf() -> None:
    m = MetricsModel(buckets_ms=[10, 100])
    for ms in (1, 10, 10.5, 100, 250, 99999):
        m.observe([], rec(duration_ms=ms))
    ((_, counts, total),) = fam(m, DURATION).series
    assert fam(m, DURATION).buckets == (0.01, 0.1)
    assert counts == (2, 4, 6)
    assert total == pytest.approx((1 + 10 + 10.5 + 100 + 250 + 99999) / 1000)


def test_no_response_and_no_request() -> None:
    m = MetricsModel()
    m.observe([], rec(status_code=None, duration_ms=None, ttfb_ms=None, response_body_len=0))
    m.observe([], rec(method=None, host=None, route=None, request_body_len=0))
    assert samples(m, TRANSACTIONS) == {("GET", "none", "shop.test", "/items/{id}"): 1.0,
                                        ("none", "2xx", "none", "none"): 1.0}
    # Only the transaction with a response has a duration and a ttfb.
    assert {k: c[-1] for k, (c, _) in series(m, DURATION).items()} == {("none", "none"): 1}
    assert {k: c[-1] for k, (c, _) in series(m, TTFB).items()} == {("none", "none"): 1}


def test_record_without_route_is_labelled_none() -> None:
    m = MetricsModel()
    r = rec()
    del r["route"]
    m.observe([], r)
    assert samples(m, TRANSACTIONS) == {("GET", "2xx", "shop.test", "none"): 1.0}


def test_cardinality_guard_folds_host_and_route_keeps_method_and_status() -> None:
    m = MetricsModel(max_label_sets=3)
    for i in range(10):
        m.observe([], rec(host=f"h{i}", route=f"/r{i}", status_code=500 if i % 2 else 200))
    m.observe([], rec(host="h1", route="/r1", status_code=500))  # a known label set stays itself
    assert samples(m, TRANSACTIONS) == {
        ("GET", "2xx", "h0", "/r0"): 1.0, ("GET", "5xx", "h1", "/r1"): 2.0, ("GET", "2xx", "h2", "/r2"): 1.0,
        ("GET", "2xx", "other", "other"): 3.0, ("GET", "5xx", "other", "other"): 4.0,
    }
    assert sum(c[-1] for c, _ in series(m, DURATION).values()) == 11
    assert set(series(m, DURATION)) == {("h0", "/r0"), ("h1", "/r1"), ("h2", "/r2"), ("other", "other")}
    assert samples(m, "pcapwatch_metric_label_overflow_total") == {
        (TRANSACTIONS,): 7.0, (DURATION,): 7.0, (TTFB,): 7.0, (REQUEST_BYTES,): 7.0, (RESPONSE_BYTES,): 7.0}


def test_cardinality_bound_under_many_distinct_hosts() -> None:
    m = MetricsModel(max_label_sets=50)
    for i in range(5000):
        m.observe([], rec(host=f"host{i}.test"))
    assert len(samples(m, TRANSACTIONS)) == 51
    assert sum(samples(m, TRANSACTIONS).values()) == 5000
    assert samples(m, "pcapwatch_metric_label_overflow_total")[(TRANSACTIONS,)] == 4950


@pytest.mark.parametrize(("name", "kind", "fld", "want"), [
    ("slow_requests", "counter", None, "pcapwatch_slow_requests_total"),
    ("slow_total", "counter", None, "pcapwatch_slow_total"),
    ("pcapwatch_x", "counter", None, "pcapwatch_x_total"),
    ("api_latency", "histogram", "duration_ms", "pcapwatch_api_latency_seconds"),
    ("api_seconds", "histogram", "ttfb_ms", "pcapwatch_api_seconds"),
    ("upload", "histogram", "request_body_len", "pcapwatch_upload_bytes"),
    ("depth", "histogram", "trans_depth", "pcapwatch_depth"),
])
def test_rule_metric_name(name: str, kind: str, fld: str | None, want: str) -> None:
    assert rule_metric_name(name, kind, fld) == want


@pytest.mark.parametrize(("name", "kind", "labels", "fld", "problem"), [
    ("ok", "counter", ["host"], None, None),
    ("ok", "histogram", [], "duration_ms", None),
    ("api:slow", "counter", [], None, None),
    ("9lives", "counter", [], None, "metric name '9lives' must be letters"),
    ("a-b", "counter", [], None, "metric name 'a-b' must be letters"),
    (None, "counter", [], None, "metric name None must be letters"),
    ("x", "gauge", [], None, "metric type 'gauge' must be counter or histogram"),
    ("x", "counter", "host", None, "metric labels must be a list"),
    ("x", "counter", ["le"], None, "metric label 'le' is not a valid Prometheus label name"),
    ("x", "counter", ["__x"], None, "metric label '__x' is not a valid"),
    ("x", "counter", ["a.b"], None, "metric label 'a.b' is not a valid"),
    ("x", "counter", ["a:b"], None, "metric label 'a:b' is not a valid"),
    ("x", "counter", ["host", "host"], None, "metric labels must not repeat"),
    ("x", "histogram", [], None, "a histogram metric needs `field`"),
    ("http_transactions", "counter", [], None, "metric name 'http_transactions' is one of pcapwatch's own"),
    ("http_duration", "histogram", [], "duration_ms", "metric name 'http_duration' is one of pcapwatch's own"),
    ("lag_seconds", "histogram", [], "duration_ms", "metric name 'lag_seconds' is one of pcapwatch's own"),
    ("capture_files", "counter", [], None, "metric name 'capture_files' is one of pcapwatch's own"),
    ("http_transactions", "histogram", [], "trans_depth", "metric name 'http_transactions' is one of"),
])
def test_rule_metric_problem(name: Any, kind: Any, labels: Any, fld: Any, problem: str | None) -> None:
    got = rule_metric_problem(name, kind, labels, fld)
    if problem is None:
        assert got is None
    else:
        assert got is not None and got.startswith(problem), got


def test_rule_counter_with_labels_and_derived_status_class() -> None:
    m = MetricsModel()
    spec = {"name": "errors_by_client", "type": "counter", "labels": ["src_ip", "status_class", "flags"]}
    m.observe([spec], rec(status_code=502, flags=["gap"]))
    m.observe([spec], rec(status_code=503, flags=["gap"]))
    # The rules module's compiled action is the same metric as the mapping above.
    m.observe([Metric("errors_by_client", "counter", ("src_ip", "status_class", "flags"), None)], rec(status_code=404))
    f = fam(m, "pcapwatch_errors_by_client_total")
    assert (f.kind, f.labels) == ("counter", ("src_ip", "status_class", "flags"))
    assert dict(f.samples) == {("192.0.2.1", "5xx", "gap"): 2.0, ("192.0.2.1", "4xx", "none"): 1.0}
    assert samples(m, "pcapwatch_metric_errors_total") == {}


def test_rule_histograms_by_unit() -> None:
    m = MetricsModel(buckets_ms=[100, 1000])
    m.observe([{"name": "api_latency", "type": "histogram", "labels": ["method"], "field": "duration_ms"},
               {"name": "upload", "type": "histogram", "labels": [], "field": "request_body_len"},
               {"name": "depth", "type": "histogram", "labels": [], "field": "trans_depth"}],
              rec(method="POST", duration_ms=150.0, request_body_len=5000, trans_depth=3))
    lat = fam(m, "pcapwatch_api_latency_seconds")
    assert (lat.buckets, lat.series) == ((0.1, 1.0), ((("POST",), (0, 1, 1), 0.15),))
    up = fam(m, "pcapwatch_upload_bytes")
    assert up.buckets == BYTE_BUCKETS
    assert up.series == (((), (0, 0, 1, 1, 1, 1, 1, 1), 5000.0),)
    depth = fam(m, "pcapwatch_depth")
    assert depth.buckets == PLAIN_BUCKETS
    assert depth.series == (((), (0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1), 3.0),)


def test_rule_metric_refusals_are_counted_never_raised() -> None:
    m = MetricsModel()
    good = {"name": "slow", "type": "histogram", "labels": ["host"], "field": "duration_ms"}
    m.observe([good], rec(duration_ms=None))  # no value: skipped, not an error
    m.observe([good], rec(duration_ms="fast"))  # not a number: refused
    m.observe([good], rec(duration_ms=True))
    # Another declaration of the same exposed name: the first one holds, this one is refused.
    m.observe([{"name": "slow_seconds", "type": "histogram", "labels": ["host"], "field": "ttfb_ms"}], rec())
    # The same rule name as a counter is another metric (pcapwatch_slow_total): accepted.
    m.observe([{"name": "slow", "type": "counter", "labels": []}], rec())
    m.observe([{"name": "bad name", "type": "counter", "labels": []}], rec())
    m.observe([{"name": "x", "type": "counter", "labels": {"a": 1}}], rec())
    m.observe([{"name": "http_transactions", "type": "counter", "labels": []}], rec())
    # A plain histogram `slow_seconds_x` and a counter `slow_seconds_x`: one family name, the first holds.
    m.observe([{"name": "slow_seconds_x", "type": "histogram", "labels": [], "field": "trans_depth"}], rec())
    m.observe([{"name": "slow_seconds_x", "type": "counter", "labels": []}], rec())
    assert samples(m, "pcapwatch_metric_errors_total") == {
        ("pcapwatch_slow_seconds",): 3.0, ("bad name",): 1.0, ("x",): 1.0, ("http_transactions",): 1.0,
        ("pcapwatch_slow_seconds_x_total",): 1.0}
    assert fam(m, "pcapwatch_slow_seconds").series == ()
    assert samples(m, "pcapwatch_slow_total") == {(): 1.0}
    assert sum(samples(m, TRANSACTIONS).values()) == 10  # the transactions are counted all the same


def test_rule_metric_label_sets_are_capped_too() -> None:
    m = MetricsModel(max_label_sets=2)
    spec = {"name": "by_client", "type": "counter", "labels": ["src_ip", "method"]}
    for i in range(5):
        m.observe([spec], rec(src_ip=f"192.0.2.{i}"))
    assert samples(m, "pcapwatch_by_client_total") == {
        ("192.0.2.0", "GET"): 1.0, ("192.0.2.1", "GET"): 1.0, ("other", "other"): 3.0}
    assert samples(m, "pcapwatch_metric_label_overflow_total")[("pcapwatch_by_client_total",)] == 3.0


def test_configure_buckets() -> None:
    m = MetricsModel()
    spec = {"name": "lat", "type": "histogram", "labels": [], "field": "duration_ms"}
    m.observe([spec], rec())
    m.configure_buckets([5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000])  # the same: counts kept
    assert fam(m, DURATION).series != ()
    m.configure_buckets([50, 500])
    for name in (DURATION, TTFB, "pcapwatch_lat_seconds"):
        assert fam(m, name).buckets == (0.05, 0.5)
        assert fam(m, name).series == ()
    assert sum(samples(m, TRANSACTIONS).values()) == 1  # counters are not histograms: kept
    m.observe([spec], rec(duration_ms=60))
    assert fam(m, "pcapwatch_lat_seconds").series == (((), (0, 1, 1), 0.06),)


@pytest.mark.parametrize("buckets", [[], [10, 5], [5, 5], [0, 5], [-1], [float("inf")], [float("nan")]])
def test_bad_buckets(buckets: list[float]) -> None:
    with pytest.raises(ValueError, match="buckets_ms must be increasing positive numbers"):
        MetricsModel(buckets_ms=buckets)


def test_health_families_exact() -> None:
    h = Health(files=3, files_lost=1, lost_bytes=2_000_000, files_unreadable=2, files_unreadable_now=1,
               files_failed=4, packets=7042, bytes=13_055_937, lag_bytes=4096,
               lag_seconds=1.5, connections=367, connections_active=2, connections_evicted=5, analysis_errors=6,
               gaps=4, routes=12,
               route_overflow=9, anomalies={"bad_request_line": 2, "incomplete_head": 1},
               not_http={"tls": 4, "http2": 1, "other": 0}, pipeline_overflow=11,
               outputs={"stdout": {"submitted": 10, "written": 8, "dropped": 2, "buffered": 0, "custom": 7,
                                   "written_bytes": 4321},
                        "redis": {"submitted": 10, "written": 10, "dropped": 0, "retries": 3, "errors": 1,
                                  "reconnects": 1, "buffered": 0, "blocking": 0},
                        "pcap:/p": {"submitted": 4, "written": 4, "dropped": 0, "buffered": 0, "files_written": 3,
                                    "packets_written": 51, "files_removed": 1, "packets_capped": 6,
                                    "packets_other_linktype": 0}},
               rule_errors={"broken": 6}, queue_depth=3, queue_capacity=16, checkpoint_age_seconds=2.25,
               kept_bytes=123_456, kept_let_go={"connection_bytes": 7, "total_bytes": 2},
               delivery={"records": 10, "dropped_by_rules": 3, "alerts": 1, "unknown_output": 0,
                         "pcap_without_packets": 0},
               tcp={"holes_expired": 3, "retransmitted_segments": 8}, tcp_buffered_bytes=512,
               connection_events={"resets_refused": 1}, ip_fragments={"dropped_timeout": 2})
    got = {f.name: (f.kind, f.labels, dict(f.samples)) for f in health_families(h)}
    assert got == {
        "pcapwatch_capture_files_total": ("counter", (), {(): 3.0}),
        "pcapwatch_capture_files_lost_total": ("counter", (), {(): 1.0}),
        "pcapwatch_capture_lost_bytes_total": ("counter", (), {(): 2e6}),
        "pcapwatch_capture_files_unreadable_total": ("counter", (), {(): 2.0}),
        "pcapwatch_capture_files_unreadable": ("gauge", (), {(): 1.0}),
        "pcapwatch_spool_unlistable": ("gauge", (), {(): 0.0}),
        "pcapwatch_capture_files_failed_total": ("counter", (), {(): 4.0}),
        "pcapwatch_capture_packets_total": ("counter", (), {(): 7042.0}),
        "pcapwatch_capture_bytes_total": ("counter", (), {(): 13055937.0}),
        "pcapwatch_lag_bytes": ("gauge", (), {(): 4096.0}),
        "pcapwatch_lag_seconds": ("gauge", (), {(): 1.5}),
        "pcapwatch_connections_total": ("counter", (), {(): 367.0}),
        "pcapwatch_connections_active": ("gauge", (), {(): 2.0}),
        "pcapwatch_connections_evicted_total": ("counter", (), {(): 5.0}),
        "pcapwatch_analysis_errors_total": ("counter", (), {(): 6.0}),
        "pcapwatch_tcp_gaps_total": ("counter", (), {(): 4.0}),
        "pcapwatch_tcp_events_total": ("counter", ("event",), {("holes_expired",): 3.0,
                                                                ("retransmitted_segments",): 8.0}),
        "pcapwatch_tcp_buffered_bytes": ("gauge", (), {(): 512.0}),
        "pcapwatch_connection_events_total": ("counter", ("event",), {("resets_refused",): 1.0}),
        "pcapwatch_ip_fragments_total": ("counter", ("event",), {("dropped_timeout",): 2.0}),
        "pcapwatch_routes": ("gauge", (), {(): 12.0}),
        "pcapwatch_route_overflow_total": ("counter", (), {(): 9.0}),
        "pcapwatch_http_anomalies_total": ("counter", ("name",), {("bad_request_line",): 2.0,
                                                                   ("incomplete_head",): 1.0}),
        "pcapwatch_not_http_connections_total": ("counter", ("kind",), {("tls",): 4.0, ("http2",): 1.0,
                                                                         ("other",): 0.0}),
        "pcapwatch_http_pipeline_overflow_total": ("counter", (), {(): 11.0}),
        "pcapwatch_rule_errors_total": ("counter", ("rule",), {("broken",): 6.0}),
        "pcapwatch_queue_batches": ("gauge", (), {(): 3.0}),
        "pcapwatch_queue_capacity_batches": ("gauge", (), {(): 16.0}),
        "pcapwatch_output_submitted_total": ("counter", ("output",), {("redis",): 10.0, ("stdout",): 10.0,
                                                                      ("pcap:/p",): 4.0}),
        "pcapwatch_output_written_total": ("counter", ("output",), {("redis",): 10.0, ("stdout",): 8.0,
                                                                    ("pcap:/p",): 4.0}),
        "pcapwatch_output_written_bytes_total": ("counter", ("output",), {("stdout",): 4321.0}),
        "pcapwatch_output_blocking": ("gauge", ("output",), {("redis",): 0.0}),
        "pcapwatch_output_dropped_total": ("counter", ("output",), {("redis",): 0.0, ("stdout",): 2.0,
                                                                    ("pcap:/p",): 0.0}),
        "pcapwatch_output_retries_total": ("counter", ("output",), {("redis",): 3.0}),
        "pcapwatch_output_errors_total": ("counter", ("output",), {("redis",): 1.0}),
        "pcapwatch_output_reconnects_total": ("counter", ("output",), {("redis",): 1.0}),
        "pcapwatch_output_buffered": ("gauge", ("output",), {("redis",): 0.0, ("stdout",): 0.0, ("pcap:/p",): 0.0}),
        "pcapwatch_pcap_files_written_total": ("counter", ("output",), {("pcap:/p",): 3.0}),
        "pcapwatch_pcap_packets_written_total": ("counter", ("output",), {("pcap:/p",): 51.0}),
        "pcapwatch_pcap_files_removed_total": ("counter", ("output",), {("pcap:/p",): 1.0}),
        "pcapwatch_pcap_packets_capped_total": ("counter", ("output",), {("pcap:/p",): 6.0}),
        "pcapwatch_pcap_packets_other_linktype_total": ("counter", ("output",), {("pcap:/p",): 0.0}),
        "pcapwatch_delivery_total": ("counter", ("event",), {("records",): 10.0, ("dropped_by_rules",): 3.0,
                                                              ("alerts",): 1.0, ("unknown_output",): 0.0,
                                                              ("pcap_without_packets",): 0.0}),
        "pcapwatch_pcap_kept_bytes": ("gauge", (), {(): 123456.0}),
        "pcapwatch_pcap_packets_let_go_total": ("counter", ("bound",), {("connection_bytes",): 7.0,
                                                                          ("total_bytes",): 2.0}),
        "pcapwatch_kafka_group_total": ("counter", ("event",), {}),
        "pcapwatch_checkpoint_age_seconds": ("gauge", (), {(): 2.25}),
    }


def test_spool_unlistable_gauge() -> None:
    (g,) = [f for f in health_families(Health(spool_unlistable=1)) if f.name == "pcapwatch_spool_unlistable"]
    assert (g.kind, g.samples) == ("gauge", (((), 1.0),))


def test_health_before_the_first_checkpoint_has_no_age_sample() -> None:
    (age,) = [f for f in health_families(Health()) if f.name == "pcapwatch_checkpoint_age_seconds"]
    assert age.samples == ()


def test_health_from_pipeline_stats() -> None:
    stats = Pipeline().stats()
    stats["frames"] = 7042
    stats["connections"].update(connections=367, active=4, evicted=2)
    stats["tcp"]["gaps"] = 5
    stats["anomalies"] = {"bad_request_line": 2}
    h = Health.from_pipeline(stats, files=1, bytes=99, queue_capacity=16)
    assert (h.packets, h.connections, h.connections_active, h.connections_evicted, h.gaps, dict(h.anomalies),
            h.files, h.bytes, h.queue_capacity) == (7042, 367, 4, 2, 5, {"bad_request_line": 2}, 1, 99, 16)


def test_health_exports_every_tcp_connection_and_fragment_counter_of_the_pipeline() -> None:
    """Every counter `read --stats` gives under tcp, connections and ip_fragments is exported once:
    by a family of its own or as an event of the section's family, at 0 from the start."""
    stats = Pipeline().stats()
    stats["tcp"].update(holes_expired=3, buffered_bytes=700)
    stats["connections"]["resets_refused"] = 2
    h = Health.from_pipeline(stats)
    assert set(h.tcp) | {"gaps", "buffered_bytes", "buffered_bytes_limit", "buffered_marks",
                         "buffered_pieces"} == set(stats["tcp"])
    assert (h.tcp["holes_expired"], h.tcp["gap_bytes"], h.tcp_buffered_bytes) == (3, 0, 700)
    assert set(h.connection_events) | {"connections", "active", "evicted", "internal_errors",
                                       "not_http"} >= set(stats["connections"])
    assert h.connection_events["resets_refused"] == 2 and "late_packets" in h.connection_events
    assert h.ip_fragments == stats["ip_fragments"] and "dropped_timeout" in h.ip_fragments
    fams = {f.name: dict(f.samples) for f in health_families(h)}
    assert fams["pcapwatch_tcp_events_total"][("holes_expired",)] == 3.0
    assert fams["pcapwatch_connection_events_total"][("self_connections",)] == 0.0


def test_collect_with_health_and_a_failing_callback() -> None:
    m = MetricsModel()
    m.observe([], rec())
    assert "pcapwatch_capture_files_total" not in {f.name for f in m.collect()}  # no callback: no health
    m.set_health(lambda: Health(files=2))
    assert samples(m, "pcapwatch_capture_files_total") == {(): 2.0}
    assert samples(m, "pcapwatch_health_errors_total") == {(): 0.0}

    def broken() -> Health:
        raise RuntimeError("service state unavailable")

    m.set_health(broken)
    names = {f.name for f in m.collect()}
    assert TRANSACTIONS in names and "pcapwatch_capture_files_total" not in names
    assert samples(m, "pcapwatch_health_errors_total") == {(): 2.0}  # one per collect above


def test_observe_and_collect_from_two_threads() -> None:
    """Every snapshot is consistent (counter total == histogram count) while another thread observes."""
    m = MetricsModel()
    n = 5000
    problems: list[str] = []
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not done.is_set():
            time.sleep(0.0005)
            scrapes += 1
            snap = {f.name: f for f in m.collect()}
            total = sum(v for _, v in snap[TRANSACTIONS].samples)
            hist = sum(c[-1] for _, c, _ in snap[DURATION].series)
            if total != hist:
                problems.append(f"{total} transactions but {hist} durations")

    done = threading.Event()
    t = threading.Thread(target=scrape)
    t.start()
    try:
        for i in range(n):
            m.observe([], rec(route=f"/r{i % 7}", duration_ms=float(i % 300)))
            if i % 500 == 0:  # let a scrape happen in between, for sure
                seen, deadline = scrapes, time.monotonic() + 5
                while scrapes == seen and time.monotonic() < deadline:
                    time.sleep(0.001)
    finally:
        done.set()
        t.join(10)
    assert problems == []
    assert scrapes >= n // 500
    assert sum(samples(m, TRANSACTIONS).values()) == n
    assert sum(c[-1] for c, _ in series(m, DURATION).values()) == n


def test_build_info_and_start_time() -> None:
    before = time.time()
    m = MetricsModel()
    after = time.time()
    assert samples(m, "pcapwatch_build_info") == {(version(), platform.python_version()): 1.0}
    (start,) = samples(m, "pcapwatch_start_time_seconds").values()
    assert before <= start <= after
    m.observe([], rec())
    assert samples(m, "pcapwatch_start_time_seconds") == {(): start}  # when it started, not when scraped
    assert rule_metric_problem("build_info", "counter", [], None) == "metric name 'build_info' is one of " \
        "pcapwatch's own metrics"


def test_folded_counts_are_zero_before_the_first() -> None:
    m = MetricsModel()
    assert samples(m, "pcapwatch_metric_label_overflow_total") == {
        (TRANSACTIONS,): 0.0, (DURATION,): 0.0, (TTFB,): 0.0, (REQUEST_BYTES,): 0.0, (RESPONSE_BYTES,): 0.0}


def test_known_labels_are_there_at_zero() -> None:
    h = with_known_labels(Health(anomalies={"bad_request_line": 2}, rule_errors={"broken": 6}), ["ok", "broken"])
    assert dict(h.anomalies) == {a.value: 0 for a in Anomaly} | {"bad_request_line": 2}
    assert dict(h.rule_errors) == {"ok": 0, "broken": 6}
    assert dict(h.not_http) == {"http2": 0, "other": 0, "tls": 0}
    fams = {f.name: dict(f.samples) for f in health_families(h)}
    assert fams["pcapwatch_rule_errors_total"] == {("broken",): 6.0, ("ok",): 0.0}
    assert len(fams["pcapwatch_http_anomalies_total"]) == len(Anomaly) > 10
