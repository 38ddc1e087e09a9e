"""Analyzer rules: what is logged, dropped, tagged, counted and alerted, decided per transaction.

As mitmproxy's addons do with their options (`addons/blocklist.py`), every rule is validated and
compiled once, up front: its `match` becomes a tuple of predicate closures and its `actions` a
frozen `Actions`, so the hot path only loops over compiled tests. Problems are reported all at
once, one line each, naming the file, line and key, like the configuration's own errors.

This module holds the compiled model: what `compile` (with the match keys in `match_keys`) makes
of YAML values, and what `engine` evaluates. Evaluation is pure: the view in, a `Decision` out;
the service applies it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Headers = Mapping[str, "str | list[str]"]
Test = Callable[["TxView"], bool]

# Fields a record has before `set` adds any (README "The record", plus what finalize adds).
RECORD_FIELDS = ("ts", "uid", "trans_depth", "src_ip", "src_port", "dst_ip", "dst_port", "method", "host", "uri",
                 "version", "user_agent", "referrer", "request_body_len", "status_code", "status_msg", "info_code",
                 "response_body_len", "response_content_type", "ttfb_ms", "duration_ms", "flags", "anomalies",
                 "reason", "pcap_file", "event_id", "route", "tags", "request_headers", "response_headers")
# Metric labels: fields with a bounded number of values (status_class is derived: "5xx"). A label
# with one value per request or per client (uri, uid, src_ip, ports) would make one series each.
LABEL_FIELDS = ("method", "host", "status_code", "status_class", "route", "version", "dst_ip", "dst_port",
                "response_content_type", "reason", "info_code")
NUMERIC_FIELDS = ("duration_ms", "ttfb_ms", "request_body_len", "response_body_len")
METRIC_TYPES = ("counter", "histogram")
# The pcap action's directory cap when none is given: a few hundred connections' worth for Wireshark.
DEFAULT_PCAP_MAX_BYTES = 100_000_000
# One connection's file at most: enough for its requests and responses, short of a big download.
DEFAULT_PCAP_MAX_FILE_BYTES = 10_000_000


@dataclass(frozen=True, slots=True)
class TxView:
    """What rules see of one transaction: its record (before redaction) and both header dicts."""

    record: Mapping[str, Any]
    request_headers: Headers = field(default_factory=dict)
    response_headers: Headers = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Metric:
    """A rule's `metric` action: a counter per transaction, or a histogram of one numeric field; the
    service's metrics model names, labels and observes it (prefix, unit suffixes, label values)."""

    name: str
    type: str  # counter | histogram
    labels: tuple[str, ...]
    field: str | None  # histograms only


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule's `alert` action: a warning-level record to chosen outputs (None: the default ones)."""

    rule: str
    message: str  # a template with {field} placeholders, checked at compile time
    outputs: tuple[str, ...] | None

    def record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The alert record for a finalized (already redacted) record."""
        fields = _Fields({k: "-" if v is None else ",".join(map(str, v)) if isinstance(v, list) else v
                          for k, v in record.items()})
        return {"ts": record.get("ts"), "level": "warning", "type": "alert", "alert": self.rule,
                "message": self.message.format_map(fields), "event_id": record.get("event_id"),
                "uid": record.get("uid")}


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "-"


@dataclass(frozen=True, slots=True)
class Pcap:
    """A rule's `pcap` action, recorded for the service: write the connection's packets to a file
    under `dir`, each file at most `max_file_bytes`, the directory at most `max_bytes`."""

    rule: str
    dir: str
    max_bytes: int
    max_file_bytes: int = DEFAULT_PCAP_MAX_FILE_BYTES


@dataclass(frozen=True, slots=True)
class Replay:
    """A rule's `replay` action, recorded for the service (watcher/replay): re-send the request to
    `target` (one of the configuration's replay.targets) and compare the answer. Defaults are the
    safe ones: GET, HEAD, OPTIONS only, no requests carrying credentials."""

    rule: str
    target: str
    methods: tuple[str, ...] = ("GET", "HEAD", "OPTIONS")
    allow_credentials: bool = False
    rate: float | None = None  # requests per second; None: no limit
    percent: float = 100.0  # of connections, chosen by connection
    concurrency: int = 4
    queue: int = 1000
    host: str | None = None
    id_header: str = "X-Request-ID"
    body_limit: int = 64 << 10
    compare_headers: tuple[str, ...] = ("content-type",)
    ignore_headers: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()  # regexes (checked at compile) masked in both bodies before comparing


@dataclass(frozen=True, slots=True)
class Actions:
    """A rule's actions, compiled. `log`: None no log action, () the default outputs, else their names."""

    log: tuple[str, ...] | None = None
    drop: bool = False
    sample: float | None = None
    tags: tuple[str, ...] = ()
    set_fields: tuple[tuple[str, Any], ...] = ()
    redact_headers: frozenset[str] = frozenset()
    redact_query: frozenset[str] = frozenset()
    metrics: tuple[Metric, ...] = ()
    alert: Alert | None = None
    pcap: Pcap | None = None
    replay: Replay | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """One match key, compiled: `test` is the predicate; `text` shows it (and compares it)."""

    key: str
    text: str
    test: Test = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated, compiled rule. `source` is FILE:LINE; `shown` the actions as `check` prints them."""

    name: str
    conditions: tuple[Condition, ...]
    actions: Actions
    cont: bool
    source: str
    shown: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for `pcapwatch check`: name, match summary, actions, continue, source."""
        match = ", ".join(f"{c.key} {c.text}" for c in self.conditions) or "every transaction"
        then = "continue" if self.cont else "stop"
        return f"{self.name}: match {match}; actions {', '.join(self.shown)}; then {then}; at {self.source}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the matching rules decided for one transaction (see the contract in issue 4).

    `outputs` None means every output with `default: true`; `drop` means log to no output (by
    `drop` or by `sample`), while metrics, alerts and pcap of the matching rules still apply."""

    rules: tuple[str, ...] = ()
    drop: bool = False
    dropped_by: str | None = None
    outputs: tuple[str, ...] | None = None
    tags: tuple[str, ...] = ()
    set_fields: Mapping[str, Any] = field(default_factory=dict)
    redact_headers: frozenset[str] = frozenset()
    redact_query: frozenset[str] = frozenset()
    metrics: tuple[Metric, ...] = ()
    alerts: tuple[Alert, ...] = ()
    pcap: tuple[Pcap, ...] = ()
    replay: tuple[Replay, ...] = ()


KEEP = Decision()  # no rule matched: log to the default outputs, as `read` would


# ---- rules as the configuration gives them, and their errors ----------------------------------

@dataclass(frozen=True, slots=True)
class RawRule:
    """One rule as YAML gave it, with its place: lines by key path below the rule (() is the rule)."""

    value: object
    file: str
    prefix: str  # the rule's own key path in its file, e.g. rules[3]
    lines: Mapping[tuple[object, ...], int] = field(default_factory=dict)
    key_lines: Mapping[tuple[object, ...], int] = field(default_factory=dict)

    def line(self, path: tuple[object, ...], at_key: bool = False) -> int:
        if at_key and path in self.key_lines:
            return self.key_lines[path]
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


class Problem(NamedTuple):
    """One error line and where it points."""

    file: str
    line: int
    text: str


class RuleError(Exception):
    """Rules that do not compile; `problems` lists each, one line of text apiece."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(p.text for p in problems))
        self.problems = tuple(problems)
        self.errors = tuple(p.text for p in problems)


def describe(value: object) -> str:
    """A found value as an error message shows it: the value and its YAML type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (a whole number)"
    if isinstance(value, float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)" if value else "'' (an empty string)"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, datetime.date):  # a datetime is a date too
        return f"{value} (a {'timestamp' if isinstance(value, datetime.datetime) else 'date'})"
    if isinstance(value, bytes):
        return "binary data"
    return "a set" if isinstance(value, set) else f"a {type(value).__name__}"

