"""analyzers/rules.py, rule_match.py, rule_compile.py: every match key and every action, each with
matching and non-matching cases; the exact error line of each bad value; first match vs continue;
deterministic sampling; errors at evaluation counted per rule and skipped; the shipped example rules.

Rules here are given as plain values (as YAML would); errors then point at line 1 of file F. Real line
numbers are checked through the configuration loader (tests/unit/test_config.py, test_check.py).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from helpers.env import REPO

from analyzers.http.messages import Endpoints
from analyzers.http.text import Strings
from analyzers.http.transactions import Conversation
from analyzers.records import ascii_headers, to_record
from analyzers.rules.engine import RuleSet, compile_rules, sampled
from analyzers.rules.model import (
    KEEP,
    Alert,
    Decision,
    Metric,
    Pcap,
    RawRule,
    Replay,
    RuleError,
    TxView,
)
from watcher.config import load as config

OUTPUTS = ("stdout", "redis", "tap")
DEFAULTS = ("stdout",)
TARGETS = ("http://shadow:8081/",)  # the configuration's replay.targets


def ruleset(*values: object) -> RuleSet:
    return compile_rules([RawRule(v, "F", f"rules[{i}]") for i, v in enumerate(values)], OUTPUTS, DEFAULTS, TARGETS)


def problems(*values: object) -> list[str]:
    with pytest.raises(RuleError) as e:
        ruleset(*values)
    assert str(e.value) == "\n".join(e.value.errors)
    return list(e.value.errors)


def rec(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": 1.5, "uid": "Cabc", "trans_depth": 1, "src_ip": "10.0.0.1", "src_port": 40000, "dst_ip": "10.0.0.2",
        "dst_port": 80, "method": "GET", "host": "shop.local", "uri": "/", "version": "1.1", "user_agent": None,
        "referrer": None, "request_body_len": 0, "status_code": 200, "status_msg": "OK", "info_code": None,
        "response_body_len": 5, "response_content_type": None, "ttfb_ms": 1.0, "duration_ms": 2.0, "flags": [],
        "anomalies": [], "reason": None, "pcap_file": "cap.pcap", "event_id": "e1"}
    base.update(fields)
    return base


def view(req: dict[str, Any] | None = None, resp: dict[str, Any] | None = None, **fields: Any) -> TxView:
    return TxView(rec(**fields), req or {}, resp or {})


# (match, views that match, views that do not); one row or more per match key.
MATCHES: list[tuple[dict[str, Any], list[TxView], list[TxView]]] = [
    ({"method": "GET"}, [view()], [view(method="POST"), view(method=None), view(method="get")]),
    ({"method": ["get", "HEAD"]}, [view(), view(method="HEAD")], [view(method="POST")]),
    ({"host": "*.svc.local"}, [view(host="api.svc.local"), view(host="API.Svc.Local:8080")],
     [view(host="svc.local"), view(host="api.svc.local.evil"), view(host=None)]),
    ({"host": "/^api\\d+\\./"}, [view(host="api1.x"), view(host="api22.x:80")], [view(host="www.api1.x")]),
    ({"host": "[::1]"}, [view(host="[::1]:8080"), view(host="[::1]")], [view(host="[::2]")]),
    ({"path": "^/api/"}, [view(uri="/api/x?y=1"), view(uri="http://h/api/z")],
     [view(uri="/apix"), view(uri="/x?q=/api/"), view(uri=None)]),
    ({"query": "(^|&)debug=1"}, [view(uri="/p?debug=1"), view(uri="/p?a=2&debug=1")],
     [view(uri="/p?xdebug=1"), view(uri="/p"), view(uri="/debug=1")]),
    ({"query": "^$"}, [view(uri="/p"), view(uri="/p?")], [view(uri="/p?a")]),
    ({"status": 404}, [view(status_code=404)], [view(status_code=405), view(status_code=None)]),
    ({"status": "404"}, [view(status_code=404)], [view(status_code=403)]),
    ({"status": "5xx"}, [view(status_code=500), view(status_code=599)], [view(status_code=499)]),
    ({"status": "400-403"}, [view(status_code=400), view(status_code=403)], [view(status_code=404)]),
    ({"status": [301, "5XX"]}, [view(status_code=301), view(status_code=503)], [view(status_code=302)]),
    ({"client": "10.0.0.0/8"}, [view(src_ip="10.1.2.3")], [view(src_ip="11.0.0.1"), view(src_ip="::1")]),
    ({"client": ["127.0.0.1", "::1"]}, [view(src_ip="127.0.0.1"), view(src_ip="::1")],
     [view(src_ip="127.0.0.2")]),
    ({"client": "fd00::/8"}, [view(src_ip="fd12::1")], [view(src_ip="fe80::1"), view(src_ip="10.0.0.1")]),
    ({"server": "192.168.0.0/16"}, [view(dst_ip="192.168.9.9")], [view(dst_ip="192.169.0.1")]),
    ({"client_port": 443}, [view(src_port=443)], [view(src_port=444)]),
    ({"client_port": "1024-65535"}, [view(src_port=1024), view(src_port=65535)], [view(src_port=1023)]),
    ({"server_port": [80, "8000-8099"]}, [view(dst_port=80), view(dst_port=8050)],
     [view(dst_port=81), view(dst_port=8100)]),
    ({"header": "x-debug"}, [view({"x-debug": "1"})], [view(), view(None, {"x-debug": "1"})]),
    ({"header": ["X-A", "x-b"]}, [view({"x-a": "", "x-b": "2"})], [view({"x-a": "1"})]),
    ({"header": {"user-agent": "curl/"}}, [view({"user-agent": "curl/8.5"}), view({"user-agent": ["x", "curl/1"]})],
     [view({"user-agent": "Wget"}), view()]),
    ({"header": {"x-test": False, "host": True}}, [view({"host": "h"})], [view({"host": "h", "x-test": "1"}),
                                                                         view()]),
    ({"response_header": {"content-type": "^text/html"}}, [view(None, {"content-type": "text/html; charset=x"})],
     [view(None, {"content-type": "application/json"}), view({"content-type": "text/html"})]),
    ({"duration_ms": ">500"}, [view(duration_ms=500.1)], [view(duration_ms=500.0), view(duration_ms=None)]),
    ({"duration_ms": "<=100"}, [view(duration_ms=100.0), view(duration_ms=0.0)], [view(duration_ms=100.5)]),
    ({"duration_ms": "100-500"}, [view(duration_ms=100.0), view(duration_ms=500.0)], [view(duration_ms=99.9)]),
    ({"duration_ms": ">= 5"}, [view(duration_ms=5.0)], [view(duration_ms=4.99)]),
    ({"ttfb_ms": "<5"}, [view(ttfb_ms=4.9)], [view(ttfb_ms=5.0), view(ttfb_ms=None)]),
    ({"request_bytes": 0}, [view(request_body_len=0)], [view(request_body_len=1)]),
    ({"request_bytes": ">1000000"}, [view(request_body_len=1000001)], [view(request_body_len=1000000)]),
    ({"response_bytes": "1-1024"}, [view(response_body_len=1), view(response_body_len=1024)],
     [view(response_body_len=0), view(response_body_len=1025)]),
    ({"response_bytes": "==5"}, [view(response_body_len=5)], [view(response_body_len=6)]),
    ({"flags": "gap"}, [view(flags=["midstream", "gap"])], [view(flags=[]), view(flags=["truncated"])]),
    ({"flags": ["gap", "truncated"]}, [view(flags=["truncated"])], [view(flags=["midstream"])]),
    ({"anomalies": True}, [view(anomalies=["bad_chunk_size"])], [view(anomalies=[])]),
    ({"anomalies": False}, [view(anomalies=[])], [view(anomalies=["x"])]),
    ({"anomalies": ["bad_chunk_size"]}, [view(anomalies=["y", "bad_chunk_size"])], [view(anomalies=["other"])]),
    ({"method": "GET", "status": "5xx"}, [view(status_code=502)], [view(status_code=200), view(method="PUT",
                                                                                             status_code=502)]),
    ({}, [view(), view(method=None, uri=None, status_code=None)], []),
]


@pytest.mark.parametrize(("match", "yes", "no"), MATCHES, ids=[str(m) for m, _, _ in MATCHES])
def test_match_key(match: dict[str, Any], yes: list[TxView], no: list[TxView]) -> None:
    rs = ruleset({"name": "r", "match": match, "actions": {"tag": ["hit"]}})
    assert [rs.evaluate(v).rules for v in yes] == [("r",)] * len(yes)
    assert [rs.evaluate(v) for v in no] == [KEEP] * len(no)
    assert rs.errors == {}


def test_every_match_key_has_rows() -> None:
    from analyzers.rules.match_keys import MATCH_KEYS
    assert {k for m, _, _ in MATCHES for k in m} == set(MATCH_KEYS)


def test_no_match_key_matches_everything() -> None:
    rs = ruleset({"name": "all", "actions": {"tag": ["x"]}})
    assert rs.evaluate(view()).tags == ("x",)


# (key, YAML value, the error after "F:1: rules[0].match.<key>: ")
BAD_MATCHES: list[tuple[str, object, str]] = [
    ("method", 5, "found 5 (a whole number), expected a method or a list of methods; write e.g. GET or [GET, HEAD]"),
    ("method", ["GET", "a b"], "found a list, expected a method or a list of methods; write e.g. GET or [GET, HEAD]"),
    ("host", "", "found '' (an empty string), expected a host glob such as '*.svc.local' or a regex written /.../"),
    ("host", "/a(/", "found 'a(' (a string), expected a valid regular expression (missing ), unterminated "
                     "subpattern at position 1); correct it (quote it with '...' in YAML)"),
    ("path", "(", "found '(' (a string), expected a valid regular expression (missing ), unterminated subpattern "
                  "at position 0); correct it (quote it with '...' in YAML)"),
    ("query", 1, "found 1 (a whole number), expected a regular expression; write it as a string"),
    ("status", "6xx", "found '6xx' (a string), expected a status (404), a class (5xx) or a range (400-499), or a "
                      "list of them"),
    ("status", "499-400", "found '499-400' (a string), expected a status (404), a class (5xx) or a range "
                          "(400-499), or a list of them"),
    ("status", [], "found an empty list, expected a status (404), a class (5xx) or a range (400-499), or a list "
                   "of them"),
    ("status", True, "found true (a boolean), expected a status (404), a class (5xx) or a range (400-499), or a "
                     "list of them"),
    ("client", "10.0.0.300/8", "found '10.0.0.300/8' (a string), expected an address or CIDR network such as "
                               "10.0.0.0/8"),
    ("server", 10, "found 10 (a whole number), expected an address or CIDR network, or a list of them, e.g. "
                   "10.0.0.0/8 or [127.0.0.1, '::1']"),
    ("client_port", 70000, "found 70000 (a whole number), expected a port (0-65535), a range such as 8000-8099, "
                           "or a list of them"),
    ("server_port", "90-80", "found '90-80' (a string), expected a port (0-65535), a range such as 8000-8099, or "
                             "a list of them"),
    ("header", 5, "found 5 (a whole number), expected a header name, a list of names (all present), or a mapping "
                  "of names to a value regex, true (present) or false (absent)"),
    ("header", "bad name", "found 'bad name', expected a header name, a list of names (all present), or a mapping "
                           "of names to a value regex, true (present) or false (absent)"),
    ("response_header", {"content-type": 5}, "found 5 (a whole number), expected a regular expression; write it "
                                             "as a string"),
    ("duration_ms", 500, "found 500 (a whole number), expected a comparison such as '>500', '<=100' or a range "
                         "such as 100-500; quote it (YAML reads a leading > as a folded text block)"),
    ("ttfb_ms", "fast", "found 'fast' (a string), expected a comparison such as '>500', '<=100' or a range such "
                        "as 100-500; quote it (YAML reads a leading > as a folded text block)"),
    ("request_bytes", "5-1", "found '5-1' (a string), expected a comparison such as '>1000000', '<=100', a range "
                             "such as 1-1024, or an exact size such as 0; quote it (YAML reads a leading > as a "
                             "folded text block)"),
    ("response_bytes", True, "found true (a boolean), expected a comparison such as '>1000000', '<=100', a range "
                             "such as 1-1024, or an exact size such as 0; quote it (YAML reads a leading > as a "
                             "folded text block)"),
    ("flags", "gapp", "found 'gapp', expected one of gap, midstream, no_response, no_request, truncated, tunnel; "
                      "did you mean 'gap'?"),
    ("anomalies", "bad name", "found 'bad name' (a string), expected true (any anomaly), false (none) or a list "
                              "of anomaly names (any of them matches), e.g. [bad_chunk_size]"),
]
# Every anomaly name, as the refusal of an unknown one lists them (sorted).
KNOWN_ANOMALIES = (
    "ambiguous_framing_chunked, ambiguous_framing_close, ambiguous_framing_length, ambiguous_framing_none, "
    "ambiguous_framing_unknown, bad_chunk_size, bad_chunk_terminator, bad_content_length, bad_header_line, "
    "bad_http_version, bad_method, bad_request_line, bad_status_line, bare_cr, bare_lf, chunk_size_overflow, "
    "chunk_size_whitespace, chunked_applied_twice, conflicting_content_length, "
    "content_length_and_transfer_encoding, content_length_overflow, control_char, duplicate_content_length, "
    "duplicate_host, head_cut_by_gap, headers_after_short_request_line, incomplete_head, "
    "junk_before_first_message, missing_request_target, not_http, obs_fold, oversized_chunk_line, oversized_head, "
    "retransmission_mismatch, space_in_request_target, transfer_encoding_not_chunked, whitespace_line")


@pytest.mark.parametrize(("key", "value", "message"), BAD_MATCHES, ids=[f"{k}={v}" for k, v, _ in BAD_MATCHES])
def test_bad_match_value(key: str, value: object, message: str) -> None:
    where = f"{key}.content-type" if key == "response_header" else key  # a mapping's error names its entry
    assert problems({"name": "r", "match": {key: value}, "actions": {"drop": True}}) == [
        f"F:1: rules[0].match.{where}: {message}"]


def test_bad_match_value_in_a_list_points_at_the_element() -> None:
    lines = {(): 1, ("match", "status", 1): 7, ("match", "status"): 6}
    raw = RawRule({"name": "r", "match": {"status": [500, "abc"]}, "actions": {"drop": True}}, "F", "rules[0]",
                  lines)
    with pytest.raises(RuleError) as e:
        compile_rules([raw], OUTPUTS)
    assert e.value.errors == ("F:7: rules[0].match.status[1]: found 'abc' (a string), expected a status (404), a "
                              "class (5xx) or a range (400-499), or a list of them",)


# Names that are not an anomaly or a flag would silently never match: refused like an unknown key.
UNKNOWN_NAMES: list[tuple[str, object, str]] = [
    ("anomalies", ["bad_chunk_sise"], "anomalies[0]: found 'bad_chunk_sise', expected one of "
                                      f"{KNOWN_ANOMALIES}; did you mean 'bad_chunk_size'?"),
    ("anomalies", "oversize_head", f"anomalies: found 'oversize_head', expected one of {KNOWN_ANOMALIES}; "
                                   "did you mean 'oversized_head'?"),
    ("anomalies", ["obs_fold", "smuggling"], f"anomalies[1]: found 'smuggling', expected one of {KNOWN_ANOMALIES}; "
                                             "correct its spelling"),
    ("anomalies", ["Bad_Method"], f"anomalies[0]: found 'Bad_Method', expected one of {KNOWN_ANOMALIES}; did you "
                                  "mean 'bad_method'?"),
    ("flags", ["truncated", "no_respons"], "flags[1]: found 'no_respons', expected one of gap, midstream, "
                                           "no_response, no_request, truncated, tunnel; did you mean 'no_response'?"),
    ("flags", "lost", "flags: found 'lost', expected one of gap, midstream, no_response, no_request, truncated, "
                      "tunnel; correct its spelling"),
]


@pytest.mark.parametrize(("key", "value", "message"), UNKNOWN_NAMES, ids=[f"{k}={v}" for k, v, _ in UNKNOWN_NAMES])
def test_unknown_anomaly_or_flag_is_refused_at_load(key: str, value: object, message: str) -> None:
    assert problems({"name": "r", "match": {key: value}, "actions": {"drop": True}}) == [
        f"F:1: rules[0].match.{message}"]


def test_every_anomaly_and_flag_name_is_accepted() -> None:
    from analyzers.http.anomalies import Anomaly
    from analyzers.records import Flag
    rs = ruleset({"name": "a", "match": {"anomalies": [str(a) for a in Anomaly]}, "actions": {"tag": ["a"]}},
                 {"name": "f", "match": {"flags": [str(f) for f in Flag]}, "actions": {"tag": ["f"]}})
    assert rs.evaluate(view(anomalies=[Anomaly.NOT_HTTP])).rules == ("a",)
    assert rs.evaluate(view(flags=["tunnel"])).rules == ("f",)
    assert ", ".join(sorted(Anomaly)) == KNOWN_ANOMALIES


def test_every_match_key_has_a_bad_row() -> None:
    from analyzers.rules.match_keys import MATCH_KEYS
    assert {k for k, _, _ in BAD_MATCHES} == set(MATCH_KEYS)


# (actions, view, the Decision) for every action
ACTIONS: list[tuple[object, TxView, Decision]] = [
    ({"log": True}, view(), Decision(rules=("r",))),
    ({"log": ["redis", "tap", "redis"]}, view(), Decision(rules=("r",), outputs=("redis", "tap"))),
    ({"log": "tap"}, view(), Decision(rules=("r",), outputs=("tap",))),
    ({"drop": True}, view(), Decision(rules=("r",), drop=True, dropped_by="r")),
    ({"sample": 1}, view(), Decision(rules=("r",))),
    ({"sample": 0}, view(), Decision(rules=("r",), drop=True, dropped_by="r")),
    ({"tag": "slow"}, view(), Decision(rules=("r",), tags=("slow",))),
    ({"tag": ["a", "b", "a"]}, view(), Decision(rules=("r",), tags=("a", "b"))),
    ({"set": {"service": "shop", "tier": 2, "canary": False, "owner": None}}, view(),
     Decision(rules=("r",), set_fields={"service": "shop", "tier": 2, "canary": False, "owner": None})),
    ({"redact": {"headers": ["X-Api-Key"], "query_params": ["Session"]}}, view(),
     Decision(rules=("r",), redact_headers=frozenset({"x-api-key"}), redact_query=frozenset({"Session"}))),
    ({"metric": {"name": "slow_total", "type": "counter", "labels": ["route", "status_class"]}}, view(),
     Decision(rules=("r",), metrics=(Metric("slow_total", "counter", ("route", "status_class"), None),))),
    ({"metric": [{"name": "h_ms", "type": "histogram", "field": "ttfb_ms"}, {"name": "c", "type": "counter"}]},
     view(), Decision(rules=("r",), metrics=(Metric("h_ms", "histogram", (), "ttfb_ms"), Metric("c", "counter", (),
                                                                                             None)))),
    ({"alert": "slow {uri}"}, view(), Decision(rules=("r",), alerts=(Alert("r", "slow {uri}", None),))),
    ({"alert": {"message": "x {{literal}}", "outputs": ["tap"]}}, view(),
     Decision(rules=("r",), alerts=(Alert("r", "x {{literal}}", ("tap",)),))),
    ([{"tag": ["t"]}, {"log": ["redis"]}], view(), Decision(rules=("r",), tags=("t",), outputs=("redis",))),
    ({"pcap": {"dir": "/var/x/../pcap"}}, view(), Decision(rules=("r",), pcap=(Pcap("r", "/var/pcap", 100_000_000,
                                                                               10_000_000),))),
    ({"pcap": {"dir": "p", "max_bytes": 5000, "max_file_bytes": 1000}}, view(),
     Decision(rules=("r",), pcap=(Pcap("r", os.path.abspath("p"), 5000, 1000),))),  # relative to the rule's file
    ({"replay": "http://shadow:8081"}, view(), Decision(rules=("r",), replay=(Replay("r", "http://shadow:8081"),))),
    ({"replay": {"target": "http://shadow:8081/", "methods": ["get", "post"], "allow_credentials": True, "rate": 200,
                 "percent": 50, "concurrency": 2, "queue": 10, "host": "shop.test", "id_header": "X-Trace",
                 "body_limit": 1000, "compare_headers": ["Content-Type", "ETag"], "ignore_headers": ["Date"],
                 "masks": ["id=\\d+"]}}, view(),
     Decision(rules=("r",), replay=(Replay("r", "http://shadow:8081", ("GET", "POST"), True, 200.0, 50.0, 2, 10,
                                           "shop.test", "X-Trace", 1000, ("content-type", "etag"), ("date",),
                                           ("id=\\d+",)),))),
]


@pytest.mark.parametrize(("actions", "tx", "expected"), ACTIONS, ids=[str(a) for a, _, _ in ACTIONS])
def test_action(actions: object, tx: TxView, expected: Decision) -> None:
    rs = ruleset({"name": "r", "match": {"status": 200}, "actions": actions})
    assert rs.evaluate(tx) == expected
    assert rs.evaluate(view(status_code=500)) is KEEP  # the same rule, not matching


def test_every_action_has_rows() -> None:
    from analyzers.rules.compile import ACTIONS as TABLE
    used = {k for a, _, _ in ACTIONS for k in (a if isinstance(a, dict) else {k: 0 for d in a for k in d})}
    assert used == set(TABLE)


# (actions, the error after "F:1: rules[0].actions.")
BAD_ACTIONS: list[tuple[object, str]] = [
    ({"log": False}, "log: found false (a boolean), expected true (the default outputs) or a list of output names; "
                     "to log nowhere use drop: true"),
    ({"log": ["stdot"]}, "log[0]: found unknown output 'stdot', expected one of stdout, redis, tap; did you mean "
                         "'stdout'?"),
    ({"log": "nowhere"}, "log: found unknown output 'nowhere', expected one of stdout, redis, tap; add an output "
                         "with that name under outputs:"),
    ({"drop": False}, "drop: found false (a boolean), expected true; delete the action to keep the transaction"),
    ({"sample": 1.5}, "sample: found 1.5 (a number), expected a rate from 0 to 1 (the fraction of connections "
                      "logged)"),
    ({"sample": "10%"}, "sample: found '10%' (a string), expected a rate from 0 to 1 (the fraction of connections "
                        "logged)"),
    ({"tag": ["ok", "no space"]}, "tag: found a list, expected a tag or a list of tags (letters, digits, _ . : / @ "
                                  "+ -)"),
    ({"set": {"status_code": 1}}, "set.status_code: found 'status_code' (a string), a field pcapwatch fills, "
                                  "expected a new field name (letters, digits, _)"),
    ({"set": {"x": [1]}}, "set.x: found a list, expected a static value (text, number, true/false or null)"),
    ({"set": []}, "set: found an empty list, expected a mapping of new field names to static values, e.g. "
                  "{service: shop}"),
    ({"redact": {"headers": ["a b"]}}, "redact.headers: found a list, expected a list of header names"),
    ({"redact": {"header": ["x"]}}, "redact.header: found unknown key 'header', expected one of headers, "
                                    "query_params; did you mean 'headers'?"),
    ({"metric": {"name": "1x", "type": "counter"}}, "metric.name: found '1x' (a string), expected a metric name "
                                                    "(letters, digits, _ and :, not starting with a digit)"),
    ({"metric": {"name": "x", "type": "gauge"}}, "metric.type: found 'gauge' (a string), expected one of counter, "
                                                 "histogram"),
    ({"metric": {"name": "x", "type": "histogram"}}, "metric.field: found nothing, expected the field a histogram "
                                                     "observes, one of duration_ms, ttfb_ms, request_body_len, "
                                                     "response_body_len"),
    ({"metric": {"name": "x", "type": "counter", "field": "duration_ms"}}, "metric.field: found 'duration_ms' (a "
     "string), expected no field for a counter (it counts transactions); delete it, or use type: histogram"),
    ({"metric": {"name": "x", "type": "counter", "labels": ["uri"]}}, "metric.labels[0]: found 'uri', a field "
     "with one value per request or client, expected one of method, host, status_code, status_class, route, "
     "version, dst_ip, dst_port, response_content_type, reason, info_code; use route instead of uri"),
    ({"metric": {"name": "x", "type": "counter", "labels": ["route", "route"]}}, "metric.labels: found a list, "
     "expected a list of record field names, each once"),
    ({"metric": {"name": "x", "type": "counter", "labels": ["nope"]}}, "metric.labels[0]: found 'nope', expected "
     "one of method, host, status_code, status_class, route, version, dst_ip, dst_port, response_content_type, "
     "reason, info_code; choose a bounded field, or set one with set:"),
    ({"alert": {"outputs": ["tap"]}}, "alert.message: found nothing, expected a one-line message, e.g. 'slow "
                                      "{method} {uri}'"),
    ({"alert": "two\nlines"}, "alert: found 'two\\nlines' (a string), expected a one-line message, e.g. 'slow "
                              "{method} {uri}'"),
    ({"alert": "{uri!r}"}, "alert: found {uri!r}, expected placeholders naming a record field only, e.g. "
                           "{status_code}"),
    ({"alert": "{a.__class__}"}, "alert: found {a.__class__}, expected placeholders naming a record field only, "
                                 "e.g. {status_code}"),
    ({"alert": "{unclosed"}, "alert: found '{unclosed' (a string), expected a message with {field} placeholders "
                             "(expected '}' before end of string); write {{ and }} for literal braces"),
    ({"alert": {"message": "m", "outputs": ["x"]}}, "alert.outputs[0]: found unknown output 'x', expected one of "
                                                    "stdout, redis, tap; add an output with that name under "
                                                    "outputs:"),
    ({"pcap": {"dir": "d", "max_bytes": 5}}, "pcap.max_bytes: found 5 (a whole number), expected a whole number "
                                             "of bytes >= 1000"),
    ({"pcap": {"dir": "d", "max_file_bytes": True}}, "pcap.max_file_bytes: found true (a boolean), expected a whole "
                                                     "number of bytes >= 1000"),
    ({"pcap": {"max_bytes": 5000}}, "pcap.dir: found nothing, expected the directory pcap files are written to "
                                    "(relative to the rule's file)"),
    ({"pcap": "/tmp/x"}, "pcap: found '/tmp/x' (a string), expected a mapping {dir, max_bytes, max_file_bytes}, "
                         "e.g. {dir: /var/lib/pcapwatch/pcap, max_bytes: 100000000}"),
    ({"pcap": {"dir": "d", "max_byte": 1}}, "pcap.max_byte: found unknown key 'max_byte', expected one of dir, "
                                            "max_bytes, max_file_bytes; did you mean 'max_bytes'?"),
    ({"replay": "http://prod:80"}, "replay.target: found 'http://prod:80' (a string), expected one of the "
                                   "configuration's replay.targets (http://shadow:8081/); add the target to replay: "
                                   "targets: first"),
    ({"replay": {"target": "http://shadow:8081", "rate": 0}}, "replay.rate: found 0 (a whole number), expected "
                                                              "requests per second (a number above 0) or null"),
    ({"replay": {"target": "http://shadow:8081", "masks": ["("]}},
     "replay.masks[0]: found '(' (missing ), unterminated subpattern at position 0), expected a regular expression"),
    ({"replay": {"target": "http://shadow:8081", "percent": 101}}, "replay.percent: found 101 (a whole number), "
                                                                   "expected a percentage of connections, above 0 up "
                                                                   "to 100"),
    ({"replay": {"target": "http://shadow:8081", "concurency": 2}}, "replay.concurency: found unknown key "
     "'concurency', expected one of target, methods, allow_credentials, rate, percent, concurrency, queue, host, "
     "id_header, body_limit, compare_headers, ignore_headers, masks; did you mean 'concurrency'?"),
    ({"tga": ["x"]}, "tga: found unknown action 'tga', expected one of log, drop, sample, tag, set, redact, "
                     "metric, alert, pcap, replay; did you mean 'tag'?"),
    ({"drop": True, "log": True}, "log: found log with drop in one rule, expected one of them; a dropped "
                                  "transaction is logged nowhere"),
    ({"drop": True, "sample": 0.5}, "sample: found sample with drop in one rule, expected one of them; a dropped "
                                    "transaction is logged nowhere"),
]


@pytest.mark.parametrize(("actions", "message"), BAD_ACTIONS, ids=[str(a) for a, _ in BAD_ACTIONS])
def test_bad_action(actions: object, message: str) -> None:
    assert problems({"name": "r", "actions": actions}) == [f"F:1: rules[0].actions.{message}"]


def test_every_action_has_a_bad_row() -> None:
    from analyzers.rules.compile import ACTIONS as TABLE
    assert {k for a, _ in BAD_ACTIONS for k in a if isinstance(a, dict)} >= set(TABLE)


BAD_RULES: list[tuple[object, list[str]]] = [
    ("r", ["F:1: rules[0]: found 'r' (a string), expected a mapping with the keys of one rule (name, match, "
           "actions, continue); write e.g. - {name: errors, match: {status: 5xx}, actions: {tag: [error]}}"]),
    ({"actions": {"drop": True}}, ["F:1: rules[0].name: found nothing, expected a rule name (letters, digits, _ . "
                                   ": -); give the rule a name no other rule has, e.g. name: server-errors"]),
    ({"name": "a b", "actions": {"drop": True}}, [
        "F:1: rules[0].name: found 'a b' (a string), expected a rule name (letters, digits, _ . : -); give the rule "
        "a name no other rule has, e.g. name: server-errors"]),
    ({"name": "r"}, ["F:1: rules[0].actions: found nothing, expected the rule's actions, e.g. actions: {tag: "
                     "[error]}"]),
    ({"name": "r", "actions": {}}, ["F:1: rules[0].actions: found an empty mapping, expected at least one action, "
                                    "e.g. {tag: [error]}"]),
    ({"name": "r", "actions": "drop"}, ["F:1: rules[0].actions: found 'drop' (a string), expected a mapping of "
                                        "actions or a list of them, e.g. {tag: [error], log: true}"]),
    ({"name": "r", "actions": ["drop"]}, ["F:1: rules[0].actions[0]: found 'drop' (a string), expected a mapping "
                                          "of one action, e.g. {drop: true}"]),
    ({"name": "r", "actions": [{"tag": "a"}, {"tag": "b"}]}, [
        "F:1: rules[0].actions[1].tag: found tag a second time, expected each action once (first at line 1); "
        "merge them"]),
    ({"name": "r", "match": "all", "actions": {"drop": True}}, [
        "F:1: rules[0].match: found 'all' (a string), expected a mapping of match keys, e.g. match: {status: 5xx}"]),
    ({"name": "r", "mach": {}, "actions": {"drop": True}}, [
        "F:1: rules[0].mach: found unknown key 'mach', expected one of name, match, actions, continue; did you mean "
        "'match'?"]),
    ({"name": "r", "match": {"stauts": 500}, "actions": {"drop": True}}, [
        "F:1: rules[0].match.stauts: found unknown match key 'stauts', expected one of method, host, path, query, "
        "status, client, server, client_port, server_port, header, response_header, duration_ms, ttfb_ms, "
        "request_bytes, response_bytes, flags, anomalies; did you mean 'status'?"]),
    ({"name": "r", "actions": {"drop": True}, "continue": "yes please"}, [
        "F:1: rules[0].continue: found 'yes please' (a string), expected true or false; correct the value, or "
        "delete the key to use the default (false)"]),
]


@pytest.mark.parametrize(("rule", "expected"), BAD_RULES, ids=range(len(BAD_RULES)))
def test_bad_rule(rule: object, expected: list[str]) -> None:
    assert problems(rule) == expected


def test_problems_across_rules() -> None:
    """Names unique across rules (even broken ones), one type and label set per metric name, labels
    allowed when some rule sets that field; every problem of every rule at once."""
    assert problems(
        {"name": "a", "actions": {"metric": {"name": "m", "type": "counter", "labels": ["service"]}}},
        {"name": "a", "match": {"status": "6xx"}, "actions": {"set": {"service": "x"}}},
        {"name": "b", "actions": {"metric": {"name": "m", "type": "histogram", "field": "duration_ms"}}},
    ) == [
        "F:1: rules[1].match.status: found '6xx' (a string), expected a status (404), a class (5xx) or a range "
        "(400-499), or a list of them",
        "F:1: rules[1].name: found 'a', expected a name no other rule has (rules[0] at F:1 is also 'a'); rename one "
        "of them",
        "F:1: rules[2].actions.metric: found metric 'm' as a histogram with labels [], expected the type and labels "
        "it has at F:1 (counter, [service]); rename one of them",
    ]
    rs = ruleset({"name": "a", "actions": {"metric": {"name": "m", "type": "counter", "labels": ["service"]}}},
                 {"name": "b", "actions": {"set": {"service": "x"}}})
    assert [r.name for r in rs.rules] == ["a", "b"]


def test_first_match_wins_unless_continue() -> None:
    a = {"name": "a", "match": {"method": "GET"}, "actions": {"tag": ["a"], "set": {"x": 1}}}
    b = {"name": "b", "match": {"status": 200}, "actions": {"tag": ["b", "a"], "set": {"x": 2, "y": 3},
                                                             "log": ["tap"]}}
    c = {"name": "c", "actions": {"log": True, "metric": {"name": "n", "type": "counter"}}}
    assert ruleset(a, b, c).evaluate(view()) == Decision(rules=("a",), tags=("a",), set_fields={"x": 1})
    chain = ruleset({**a, "continue": True}, {**b, "continue": True}, c)
    assert chain.evaluate(view()) == Decision(
        rules=("a", "b", "c"), tags=("a", "b"), set_fields={"x": 2, "y": 3}, outputs=("tap", "stdout"),
        metrics=(Metric("n", "counter", (), None),))
    assert chain.evaluate(view(method="POST")) == Decision(  # a does not match: b and c decide
        rules=("b", "c"), tags=("b", "a"), set_fields={"x": 2, "y": 3}, outputs=("tap", "stdout"),
        metrics=(Metric("n", "counter", (), None),))
    stop = ruleset(a, b, c)  # without continue, the first match is all
    assert stop.evaluate(view(method="POST")) == Decision(rules=("b",), tags=("b", "a"), set_fields={"x": 2, "y": 3},
                                                          outputs=("tap",))
    assert chain.evaluate(view(method="POST", status_code=404)).rules == ("c",)
    only_default = ruleset({"name": "d", "actions": {"log": True}})
    assert only_default.evaluate(view()).outputs is None  # log: true alone: the default outputs


def test_drop_stays_a_drop_and_names_the_first_dropping_rule() -> None:
    rs = ruleset({"name": "s", "actions": {"sample": 0, "tag": ["sampled"]}, "continue": True},
                 {"name": "d", "actions": {"drop": True, "metric": {"name": "m", "type": "counter"}}, "continue": True},
                 {"name": "l", "actions": {"log": ["redis"]}})
    assert rs.evaluate(view()) == Decision(rules=("s", "d", "l"), drop=True, dropped_by="s", tags=("sampled",),
                                           outputs=("redis",), metrics=(Metric("m", "counter", (), None),))


def test_sampling_is_deterministic_by_connection() -> None:
    rs = ruleset({"name": "s", "actions": {"sample": 0.1}})
    kept = [uid for uid in (f"C{i}" for i in range(10_000)) if not rs.evaluate(view(uid=uid)).drop]
    assert len(kept) == 971  # blake2b of the uid: the same 971 in every run and process
    assert all(not rs.evaluate(view(uid=uid, trans_depth=d)).drop for uid in kept[:50] for d in (2, 3))
    assert [sampled("C1", r) for r in (0.0, 1.0)] == [False, True]
    # 971 is one sigma (30) from 1000; 4953 one sigma (50) from 5000
    assert sum(sampled(f"C{i}", 0.5) for i in range(10_000)) == 4953


def test_a_rule_that_raises_is_counted_and_skipped() -> None:
    rs = ruleset({"name": "slow", "match": {"duration_ms": ">100"}, "actions": {"tag": ["slow"]}},
                 {"name": "net", "match": {"client": "10.0.0.0/8"}, "actions": {"tag": ["internal"]}},
                 {"name": "all", "actions": {"tag": ["seen"]}})
    assert rs.evaluate(view(duration_ms="abc")).rules == ("net",)  # slow raised: skipped, the next rule decides
    assert rs.evaluate(view(duration_ms="abc", src_ip="not an ip")).rules == ("all",)
    assert rs.evaluate(view(duration_ms=200.0)).rules == ("slow",)
    assert rs.errors == {"slow": 2, "net": 1}
    assert rs.last_error == {"slow": "TypeError: '>' not supported between instances of 'str' and 'float'",
                             "net": "ValueError: 'not an ip' does not appear to be an IPv4 or IPv6 address"}


def test_no_rules_and_no_match_give_the_shared_keep() -> None:
    assert RuleSet().evaluate(view()) is KEEP
    assert Decision() == KEEP
    assert KEEP.outputs is None and not KEEP.drop


def test_alert_record_from_the_finalized_record() -> None:
    a = Alert("server-errors", "{status_code} for {method} {uri} [{flags}] {missing} {{x}}", ("tap",))
    assert a.record(rec(status_code=503, uri=None, flags=["gap", "truncated"])) == {
        "ts": 1.5, "level": "warning", "type": "alert", "alert": "server-errors",
        "message": "503 for GET - [gap,truncated] - {x}", "event_id": "e1", "uid": "Cabc"}


def test_describe_lines_for_check() -> None:
    raw = RawRule({"name": "r", "match": {"status": ["5xx", 404], "duration_ms": "> 500", "header": {"x-a": True}},
                   "actions": [{"tag": ["a", "b"]}, {"log": ["redis"]}, {"sample": 0.25}], "continue": True},
                  "conf/x.yaml", "rules[0]", {(): 12})
    (rule,) = compile_rules([raw], OUTPUTS).rules
    assert rule.describe() == ("r: match status [5xx, 404], duration_ms >500, header {x-a: true}; actions tag [a, b], "
                               "log to [redis], sample 0.25; then continue; at conf/x.yaml:12")
    assert compile_rules([RawRule({"name": "all", "actions": {"drop": True}}, "F", "rules[0]")]).rules[0].describe() \
        == "all: match every transaction; actions drop; then stop; at F:1"


# ---- the example rules shipped in conf/rules.d ----------------------------------------------------------

def example_rules(tmp_path: Any) -> RuleSet:
    p = tmp_path / "p.yaml"
    p.write_text(f"rules_dir: {REPO / 'conf' / 'rules.d'}\n")
    return config.rule_set(config.load(p))


def test_example_rules(tmp_path: Any) -> None:
    rs = example_rules(tmp_path)
    assert [r.name for r in rs.rules] == ["health-checks", "static-assets", "server-errors", "client-errors",
                                          "incomplete", "protocol-anomalies", "latency-by-route", "slow-requests",
                                          "auth-endpoints"]
    latency = Metric("http_duration_by_route", "histogram", ("route", "method", "status_class"),
                     "duration_ms")
    assert rs.evaluate(view(uri="/healthz")) == Decision(rules=("health-checks",), drop=True,
                                                         dropped_by="health-checks")
    assert rs.evaluate(view(uri="/healthz", status_code=503)).rules[:1] == ("server-errors",)
    static = rs.evaluate(view(uri="/assets/app.3f9a.js", uid="C1"))
    assert static == Decision(rules=("static-assets", "latency-by-route"), drop=True, dropped_by="static-assets",
                              tags=("static",), metrics=(latency,))
    assert not rs.evaluate(view(uri="/assets/app.3f9a.js", uid="C13")).drop  # in the 10 % sample
    error = rs.evaluate(view(uri="/cart", status_code=502, duration_ms=1500.0))
    assert error == Decision(
        rules=("server-errors", "latency-by-route", "slow-requests"), tags=("error", "server-error", "slow"),
        metrics=(Metric("http_server_errors", "counter", ("host", "route", "status_code"), None),
                 latency, Metric("http_slow_requests", "counter", ("route",), None)),
        alerts=(Alert("server-errors", "{status_code} {status_msg} for {method} {host}{route} from {src_ip} in "
                                       "{duration_ms} ms", None),),
        pcap=(Pcap("server-errors", "/var/lib/pcapwatch/pcap", 500_000_000, 10_000_000),))
    auth = rs.evaluate(view(uri="/oauth2/callback?code=x", status_code=404, flags=["gap"], anomalies=["a"]))
    assert auth.rules == ("client-errors", "incomplete", "protocol-anomalies", "latency-by-route", "auth-endpoints")
    assert (auth.tags, auth.set_fields, auth.redact_headers, auth.redact_query) == (
        ("client-error", "incomplete", "anomaly"), {"service": "auth"}, frozenset({"x-api-key", "x-csrf-token"}),
        frozenset({"code", "state", "session", "sid", "nonce"}))
    assert rs.errors == {}


def test_rules_match_the_text_of_utf8_from_the_wire() -> None:
    """Host and path regexes, host globs and header values see valid UTF-8 as text (strings: utf8,
    the default); with strings: ascii they see the escaped form, as written."""
    conv = Conversation(Endpoints("Cutf8", "10.0.0.1", 40000, "10.0.0.2", 80, False), Counter())
    conv.client.data(b"GET /st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac HTTP/1.1\r\nHost: www.K\xc3\xb6ln.example\r\n"
                     b"X-Stadt: K\xc3\xb6ln\r\n\r\n", 1.0)
    conv.server.data(b"HTTP/1.1 204 No Content\r\n\r\n", 1.5)
    (tx,) = conv.out
    assert tx.request is not None
    headers = tx.request.head.headers  # type: ignore[union-attr]
    rules = ruleset({"name": "regex", "match": {"host": "/köln/"}, "actions": {"tag": ["regex"]}, "continue": True},
                    {"name": "glob", "match": {"host": "*.köln.example"}, "actions": {"tag": ["glob"]},
                     "continue": True},
                    {"name": "path", "match": {"path": "^/städte/Köln$", "query": "€"}, "actions": {"tag": ["path"]},
                     "continue": True},
                    {"name": "header", "match": {"header": {"x-stadt": "^Köln$"}}, "actions": {"tag": ["header"]},
                     "continue": True},
                    {"name": "escaped", "match": {"host": "/k\\\\xc3\\\\xb6ln/"}, "actions": {"tag": ["escaped"]}})
    utf8 = rules.evaluate(TxView(to_record(tx), headers))
    assert utf8.tags == ("regex", "glob", "path", "header")
    ascii_view = TxView(to_record(tx, Strings.ASCII), ascii_headers(headers))
    assert rules.evaluate(ascii_view).tags == ("escaped",)
