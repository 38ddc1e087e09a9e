"""The metrics model: counters and histograms the service updates per transaction, plus its health.

Plain bookkeeping under one lock, without prometheus_client (watcher/sinks/prometheus_sink.py is the
one module that imports it): the service calls `observe` on its own thread, the sink's HTTP thread
calls `collect`, which returns a consistent snapshot as `Family` values. Units follow Prometheus's
conventions: durations in seconds (`_seconds` histograms whose bounds are the configured
`buckets_ms` divided by 1000), sizes in bytes, counters end in `_total`.

Cardinality: host and route come from the traffic, so every metric keeps at most `max_label_sets`
label sets. A new label set past that has its unbounded labels (host, route, and every label of a
rule-defined metric) replaced by `other`, and is counted in
pcapwatch_metric_label_overflow_total{metric}. Method and status class are normalised to small fixed
sets and always kept, so request rates and error rates stay exact when hosts or routes overflow.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from watcher.health import Family, Health, HealthSource, Labels, family_by, family_one, health_families

PREFIX = "pcapwatch_"
# Durations from 5 ms (a cache hit) to 10 s (a timeout), three buckets a decade (1, 2.5, 5): the
# latencies a web service is judged by, in few series.
DEFAULT_BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# Body sizes from a few hundred bytes (API answers) to 100 MB (downloads), a decade apart.
BYTE_BUCKETS: tuple[float, ...] = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
# Histograms of unitless record fields (trans_depth, status_code, ...): small counts and codes.
PLAIN_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# Label sets per metric: the route cap's default (routes.max_routes) times a few hosts would be
# far more; a thousand series per metric is what a Prometheus server carries without noticing.
DEFAULT_MAX_LABEL_SETS = 1000
# Characters kept of a label value; a longer one (a junk Host header) is cut.
MAX_LABEL_VALUE = 128
OTHER = "other"  # label value of the overflow bucket
NONE = "none"  # label value when the record has no value (no request, no response)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})

TRANSACTIONS = "pcapwatch_http_transactions_total"
DURATION = "pcapwatch_http_duration_seconds"
TTFB = "pcapwatch_http_ttfb_seconds"
REQUEST_BYTES = "pcapwatch_http_request_body_bytes_total"
RESPONSE_BYTES = "pcapwatch_http_response_body_bytes_total"
LABEL_OVERFLOW = "pcapwatch_metric_label_overflow_total"
METRIC_ERRORS = "pcapwatch_metric_errors_total"
HEALTH_ERRORS = "pcapwatch_health_errors_total"

_METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")  # Prometheus's metric names
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")  # and label names



def status_class(code: Any) -> str:
    """'2xx' for 200..299 and so on; 'none' without a response, 'invalid' outside 100..599."""
    if code is None:
        return NONE
    if isinstance(code, int) and 100 <= code <= 599:
        return f"{code // 100}xx"
    return "invalid"


def method_label(method: Any) -> str:
    """A standard method as it is; any other (a junk request line) 'other'; none 'none'."""
    if method is None:
        return NONE
    return method if method in METHODS else OTHER


def label_value(v: Any) -> str:
    """A record value as a label: 'none' for None or empty, lists comma-joined, long values cut."""
    if v is None or v == "" or v == []:
        return NONE
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        v = ",".join(str(x) for x in v)
    s = str(v)
    if not s.isascii():  # served as UTF-8; a lone surrogate (a file name that is not UTF-8) as \udcNN
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= MAX_LABEL_VALUE else s[:MAX_LABEL_VALUE]


def field_label(record: Mapping[str, Any], name: str) -> str:
    """Label value of a record field; `status_class` is derived from status_code."""
    if name == "status_class" and name not in record:
        return status_class(record.get("status_code"))
    return label_value(record.get(name))


def rule_metric_name(name: str, kind: str, fld: str | None) -> str:
    """The exposed name of a rule's metric: prefixed, counters end in _total, histograms of a *_ms
    field are in seconds (_seconds), of a size field (*_len, *_bytes) in bytes (_bytes)."""
    full = name if name.startswith(PREFIX) else PREFIX + name
    if kind == "counter":
        return full if full.endswith("_total") else full + "_total"
    unit = _unit(fld)
    if unit and not full.endswith("_" + unit):
        full += "_" + unit
    return full


def rule_metric_problem(name: Any, kind: Any, labels: Any, fld: Any) -> str | None:
    """Why a rule's metric action cannot be exposed, or None when it can (for `check` and `observe`)."""
    if not isinstance(name, str) or not _METRIC_RE.match(name):
        return f"metric name {name!r} must be letters, digits, '_' and ':' (not starting with a digit)"
    if kind not in ("counter", "histogram"):
        return f"metric type {kind!r} must be counter or histogram"
    if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
        return "metric labels must be a list of record field names"
    for lab in labels:
        if not _LABEL_RE.match(lab) or lab.startswith("__") or lab == "le":
            return f"metric label {lab!r} is not a valid Prometheus label name"
    if len(set(labels)) != len(labels):
        return "metric labels must not repeat"
    if kind == "histogram" and not isinstance(fld, str):
        return "a histogram metric needs `field`, the numeric record field it observes (e.g. duration_ms)"
    if _family_name(rule_metric_name(name, kind, fld)) in _RESERVED:
        return f"metric name {name!r} is one of pcapwatch's own metrics"
    return None


def _family_name(name: str) -> str:
    """What two metrics must not share: a counter's name without _total (the text format's family)."""
    return name[:-6] if name.endswith("_total") else name


def _unit(fld: str | None) -> str:
    if fld is None:
        return ""
    if fld.endswith("_ms"):
        return "seconds"
    if fld.endswith(("_len", "_bytes")):
        return "bytes"
    return ""


def _spec(spec: Any) -> tuple[Any, Any, Any, Any]:
    """(name, type, labels, field) of a rule's metric action (a mapping, or an object with those
    attributes), hashable; a value of the wrong type becomes its repr (and fails validation)."""
    if isinstance(spec, Mapping):
        got = spec.get("name"), spec.get("type", "counter"), spec.get("labels", ()), spec.get("field")
    else:
        got = (getattr(spec, "name", None), getattr(spec, "type", "counter"), getattr(spec, "labels", ()),
               getattr(spec, "field", None))
    name, kind, labels, fld = got
    labels = tuple(labels) if isinstance(labels, list | tuple) else repr(labels)
    return _plain(name), _plain(kind), labels, _plain(fld)


def _plain(v: Any) -> str | None:
    return v if v is None or isinstance(v, str) else repr(v)


class _Metric:
    """One counter or histogram: values by label set, with the overflow guard."""

    __slots__ = ("bounds", "divisor", "fold", "help", "kind", "labels", "name", "source", "values")

    def __init__(self, name: str, kind: str, help_: str, labels: Labels, fold: tuple[bool, ...],
                 bounds: tuple[float, ...] = (), divisor: float = 1.0, source: str | None = None) -> None:
        self.name, self.kind, self.help, self.labels, self.fold = name, kind, help_, labels, fold
        self.bounds = bounds  # histogram upper bounds in the metric's unit
        self.divisor = divisor  # record value / divisor = value in the metric's unit (ms -> s: 1000)
        self.source = source  # record field a histogram observes
        # counter: label set -> value; histogram: label set -> [n per bucket..., n above all, sum]
        self.values: dict[Labels, Any] = {}


class MetricsModel:
    """Every metric pcapwatch exposes. `observe` per transaction, `collect` per scrape."""

    def __init__(self, buckets_ms: Sequence[float] = DEFAULT_BUCKETS_MS,
                 max_label_sets: int = DEFAULT_MAX_LABEL_SETS) -> None:
        self.max_label_sets = max_label_sets
        self._lock = threading.Lock()
        self._health: HealthSource | None = None
        self._bounds_s = _seconds_bounds(buckets_ms)
        self.overflow: dict[str, int] = {}  # folded observations by metric
        self.errors: dict[str, int] = {}  # rule-metric observations refused, by metric
        self.health_errors = 0
        hr, fold2 = ("host", "route"), (True, True)
        self._tx = _Metric(TRANSACTIONS, "counter", "HTTP transactions by request method, status class "
                           "('none' without a response), Host header and templated route.",
                           ("method", "status_class", "host", "route"), (False, False, True, True))
        self._duration = _Metric(DURATION, "histogram", "Transaction duration: first request byte to last "
                                 "response byte, as seen on the wire.", hr, fold2, self._bounds_s, 1000.0,
                                 "duration_ms")
        self._ttfb = _Metric(TTFB, "histogram", "Time to first byte: last request byte to first response "
                             "byte.", hr, fold2, self._bounds_s, 1000.0, "ttfb_ms")
        self._req_bytes = _Metric(REQUEST_BYTES, "counter", "Request body bytes (after transfer decoding).",
                                  hr, fold2)
        self._resp_bytes = _Metric(RESPONSE_BYTES, "counter", "Response body bytes (after transfer decoding).",
                                   hr, fold2)
        # (name, type, labels, field) of a rule's metric action -> its metric, or the name under
        # which its refused observations are counted
        self._rule_cache: dict[tuple[Any, ...], _Metric | str] = {}
        self._by_spec: dict[Any, _Metric | str] = {}  # the same, by the action object itself

    def set_health(self, source: HealthSource | None) -> None:
        """The owner's callback giving the service's health at scrape time."""
        self._health = source

    def configure_buckets(self, buckets_ms: Sequence[float]) -> None:
        """New duration buckets (config reload). Histograms in seconds start again empty when the
        bounds change (Prometheus takes that as a counter reset); unchanged bounds keep their counts."""
        bounds = _seconds_bounds(buckets_ms)
        with self._lock:
            if bounds == self._bounds_s:
                return
            self._bounds_s = bounds
            for m in (self._duration, self._ttfb, *self._rule_metrics()):
                if m.kind == "histogram" and m.divisor == 1000.0:
                    m.bounds = bounds
                    m.values.clear()

    # Hot path -----------------------------------------------------------------------------------

    def observe(self, rule_metrics: Iterable[Any], record: Mapping[str, Any]) -> None:
        """Count one transaction's record (after redact.finalize: it has `route`), and the metric
        actions of the rules it matched. Never raises for a bad rule metric: it is counted."""
        host = record.get("host")
        host_l = label_value(host.lower() if isinstance(host, str) else host)
        hr = (host_l, label_value(record.get("route")))
        key = (method_label(record.get("method")), status_class(record.get("status_code")), *hr)
        duration, ttfb = _number(record.get("duration_ms")), _number(record.get("ttfb_ms"))
        with self._lock:
            self._count(self._tx, key, 1)
            self._count(self._req_bytes, hr, _number(record.get("request_body_len")) or 0)
            self._count(self._resp_bytes, hr, _number(record.get("response_body_len")) or 0)
            if duration is not None:
                self._histogram(self._duration, hr, duration / 1000.0)
            if ttfb is not None:
                self._histogram(self._ttfb, hr, ttfb / 1000.0)
            for spec in rule_metrics:
                self._observe_rule(spec, record)

    def _observe_rule(self, spec: Any, record: Mapping[str, Any]) -> None:
        try:
            m = self._by_spec[spec]  # the rules' compiled (frozen, hashable) actions: one lookup
        except (KeyError, TypeError):
            ident = _spec(spec)
            if ident not in self._rule_cache:
                self._rule_cache[ident] = self._register(*ident)
            m = self._rule_cache[ident]
            with contextlib.suppress(TypeError):  # a mapping is not hashable: it takes the long way
                self._by_spec[spec] = m
        if not isinstance(m, _Metric):
            self._error(m)
            return
        key = tuple(field_label(record, lab) for lab in m.labels)
        if m.kind == "counter":
            self._count(m, key, 1)
            return
        v = record.get(m.source) if m.source is not None else None
        if v is None:
            return  # no such value in this transaction (no response: no duration)
        v = _number(v)
        if v is None:
            self._error(m.name)
            return
        self._histogram(m, key, v / m.divisor)

    def _register(self, name: Any, kind: Any, labels: Any, fld: Any) -> _Metric | str:
        """The metric a rule's action declares, or the name its refusals are counted under: an
        invalid declaration, or one whose exposed name another declaration took first."""
        if rule_metric_problem(name, kind, labels, fld) is not None:
            return str(name)
        full = rule_metric_name(name, kind, fld)
        if any(_family_name(m.name) == _family_name(full) for m in self._rule_metrics()):
            return full
        return self._rule_metric(name, kind, labels, fld)

    def _rule_metric(self, name: str, kind: str, labels: Labels, fld: str | None) -> _Metric:
        full = rule_metric_name(name, kind, fld)
        fold = (True,) * len(labels)
        by = f" by {', '.join(labels)}" if labels else ""
        if kind == "counter":
            return _Metric(full, kind, f"Rule metric {name}: matching transactions{by}.", labels, fold)
        unit = _unit(fld)
        bounds, divisor = {"seconds": (self._bounds_s, 1000.0), "bytes": (BYTE_BUCKETS, 1.0)}.get(
            unit, (PLAIN_BUCKETS, 1.0))
        return _Metric(full, kind, f"Rule metric {name}: {fld} of matching transactions{by}"
                       f"{' in ' + unit if unit else ''}.", labels, fold, bounds, divisor, fld)

    def _rule_metrics(self) -> list[_Metric]:
        return [m for m in self._rule_cache.values() if isinstance(m, _Metric)]

    def _key(self, m: _Metric, key: Labels) -> Labels:
        if key in m.values or len(m.values) < self.max_label_sets:
            return key
        self.overflow[m.name] = self.overflow.get(m.name, 0) + 1
        return tuple(OTHER if f else v for v, f in zip(key, m.fold, strict=True))

    def _count(self, m: _Metric, key: Labels, n: float) -> None:
        key = self._key(m, key)
        m.values[key] = m.values.get(key, 0) + n

    def _histogram(self, m: _Metric, key: Labels, v: float) -> None:
        key = self._key(m, key)
        h = m.values.get(key)
        if h is None:
            h = m.values[key] = [0] * (len(m.bounds) + 1) + [0.0]
        h[bisect.bisect_left(m.bounds, v)] += 1  # `le` buckets: v <= bound
        h[-1] += v

    def _error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    # Scrape -------------------------------------------------------------------------------------

    def collect(self) -> list[Family]:
        """A consistent snapshot of every metric, then the service's health (outside the lock)."""
        with self._lock:
            out = [_family(m) for m in (self._tx, self._duration, self._ttfb, self._req_bytes, self._resp_bytes)]
            out += [_family(m) for m in self._rule_metrics()]
            out.append(family_by(LABEL_OVERFLOW, "counter", "Observations whose new label set was past the metric's "
                           "cap and went to the 'other' label set.", "metric", self.overflow))
            out.append(family_by(METRIC_ERRORS, "counter", "Rule metric observations refused: invalid or conflicting "
                           "declaration, or a non-numeric field.", "metric", self.errors))
        source = self._health
        if source is not None:
            try:
                out += health_families(source())
            except Exception:  # a failing callback must not cost the scrape its other metrics
                with self._lock:
                    self.health_errors += 1
            out.append(family_one(HEALTH_ERRORS, "counter", "Scrapes whose service-health callback failed.",
                            self.health_errors))
        return out


def _number(v: Any) -> float | None:
    """A finite number from a record field, else None (absent, or a `set` action wrote text there)."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return v
    return None


def _seconds_bounds(buckets_ms: Sequence[float]) -> tuple[float, ...]:
    ms = [float(b) for b in buckets_ms]
    if not ms or any(not math.isfinite(b) or b <= 0 for b in ms) or ms != sorted(set(ms)):
        raise ValueError(f"buckets_ms must be increasing positive numbers, got {list(buckets_ms)}")
    return tuple(b / 1000.0 for b in ms)


def _family(m: _Metric) -> Family:
    if m.kind == "counter":
        return Family(m.name, "counter", m.help, m.labels,
                      samples=tuple((k, float(v)) for k, v in sorted(m.values.items())))
    series = []
    for k, h in sorted(m.values.items()):
        cum, n = [], 0
        for c in h[:-1]:
            n += c
            cum.append(n)
        series.append((k, tuple(cum), float(h[-1])))
    return Family(m.name, "histogram", m.help, m.labels, buckets=m.bounds, series=tuple(series))


# Names a rule's metric must not take: the model's own and the health families.
_RESERVED = frozenset(_family_name(n) for n in (
    TRANSACTIONS, DURATION, TTFB, REQUEST_BYTES, RESPONSE_BYTES, LABEL_OVERFLOW, METRIC_ERRORS, HEALTH_ERRORS,
    *(f.name for f in health_families(Health()))))
