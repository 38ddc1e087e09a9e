"""Compiling analyzer rules: YAML values (with their lines) in, `Rule` objects or every problem out.

The configuration reader hands over each rule as a `RawRule` (its plain value and the line of every
key); this module checks it against the match keys (`match_keys.MATCH_KEYS`) and the actions
(`ACTIONS` below), and checks across rules what one rule cannot: unique names, one type and label
set per metric name, metric labels among bounded fields or fields a rule sets. Every error is one
line, `FILE:LINE: rules[N].key.path: found ..., expected ...; what to do`, as the configuration's.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from analyzers.rules.match_keys import MATCH_KEYS, Err, show, strings
from analyzers.rules.model import (
    DEFAULT_PCAP_MAX_BYTES,
    DEFAULT_PCAP_MAX_FILE_BYTES,
    LABEL_FIELDS,
    METRIC_TYPES,
    NUMERIC_FIELDS,
    RECORD_FIELDS,
    Actions,
    Alert,
    Condition,
    Metric,
    Pcap,
    Problem,
    RawRule,
    Rule,
    RuleError,
    describe,
)
from analyzers.rules.replay_action import _a_replay

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")
_TAG = re.compile(r"[A-Za-z0-9_.:/@+-]+\Z")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A pcap file's global header and one small packet.
MIN_PCAP_BYTES = 1000


class _Abandon(Exception):
    """Raised by `err` once a key's problem is reported: the key is skipped, the rest still checked."""


def parse_rules(raw: Sequence[RawRule], outputs: Sequence[str] = (),
                replay_targets: Sequence[str] = ()) -> tuple[Rule, ...]:
    """Validate every rule against the match keys, actions, output names and replay targets (the
    configuration's allow-list); raise RuleError with every problem found (each rule's in line
    order), or return the compiled rules."""
    problems: list[Problem] = []
    rules: list[Rule] = []
    names: dict[str, str] = {}
    metrics: dict[str, tuple[Metric, str]] = {}
    pending: list[tuple[_Parser, tuple[object, ...], str]] = []  # labels to check once `set` fields are known
    set_names: set[str] = set()
    parsers: list[_Parser] = []
    for item in raw:
        p = _Parser(item, tuple(outputs), tuple(replay_targets))
        parsers.append(p)
        rule = p.rule()
        pending.extend((p, path, label) for path, label in p.labels)
        for path, metric in p.metrics:
            seen = metrics.setdefault(metric.name, (metric, f"{item.file}:{item.line(path)}"))
            if (seen[0].type, seen[0].labels) != (metric.type, metric.labels):
                p.error(path, f"found metric {metric.name!r} as a {metric.type} with labels "
                              f"[{', '.join(metric.labels)}], expected the type and labels it has at {seen[1]} "
                              f"({seen[0].type}, [{', '.join(seen[0].labels)}]); rename one of them")
        name = item.value.get("name") if isinstance(item.value, dict) else None
        if isinstance(name, str) and name in names:
            p.error(("name",), f"found {name!r}, expected a name no other rule has ({names[name]} is also "
                               f"{name!r}); rename one of them")
        elif isinstance(name, str):
            names[name] = f"{item.prefix} at {item.file}:{item.line(())}"
        set_names.update(p.set_names)
        if rule is not None:
            rules.append(rule)
    allowed = LABEL_FIELDS + tuple(sorted(set_names))
    for p, path, label in pending:
        if label not in allowed:
            why = ("a field with one value per request or client, " if label in RECORD_FIELDS else "")
            hint = "use route instead of uri" if label == "uri" else "choose a bounded field, or set one with set:"
            p.error(path, f"found {label!r}, {why}expected one of {', '.join(allowed)}; {hint}")
    for p in parsers:
        problems.extend(sorted(p.problems, key=lambda e: e.line))
    if problems:
        raise RuleError(problems)
    return tuple(rules)


class _Parser:
    """Validates and compiles one RawRule, collecting its problems."""

    def __init__(self, raw: RawRule, outputs: tuple[str, ...], replay_targets: tuple[str, ...] = ()) -> None:
        self.raw = raw
        self.outputs = outputs
        self.replay_targets = replay_targets
        self.problems: list[Problem] = []
        self.labels: list[tuple[tuple[object, ...], str]] = []
        self.metrics: list[tuple[tuple[object, ...], Metric]] = []
        self.set_names: set[str] = set()  # fields `set` adds, even if the rule has other problems

    def error(self, path: tuple[object, ...], message: str, at_key: bool = False) -> None:
        line = self.raw.line(path, at_key)
        self.problems.append(Problem(self.raw.file, line, f"{self.raw.file}:{line}: {self.raw.prefix}"
                                                          f"{_dotted(path)}: {message}"))

    def at(self, path: tuple[object, ...]) -> Err:
        """The `err` of the key at `path`: report there (or below), then abandon the key."""
        def err(message: str, *sub: object) -> NoReturn:
            self.error((*path, *sub), message)
            raise _Abandon
        return err

    def rule(self) -> Rule | None:
        v = self.raw.value
        if not isinstance(v, dict):
            self.error((), f"found {describe(v)}, expected a mapping with the keys of one rule (name, match, "
                           "actions, continue); write e.g. - {name: errors, match: {status: 5xx}, actions: "
                           "{tag: [error]}}")
            return None
        self.unknown(v, (), ("name", "match", "actions", "continue"), "key")
        name = v.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            found = "nothing" if "name" not in v else describe(name)
            self.error(("name",), f"found {found}, expected a rule name (letters, digits, _ . : -); give the rule "
                                  "a name no other rule has, e.g. name: server-errors")
        cont = v.get("continue", False)
        if not isinstance(cont, bool):
            self.error(("continue",), f"found {describe(cont)}, expected true or false; correct the value, or "
                                      "delete the key to use the default (false)")
        conditions = self.match(v.get("match"))
        actions, shown = self.actions(v, str(name))
        if self.problems:
            return None
        assert isinstance(name, str) and isinstance(cont, bool)
        source = f"{self.raw.file}:{self.raw.line(())}"
        return Rule(name, conditions, actions, cont, source, shown)

    def unknown(self, v: Mapping[object, object], path: tuple[object, ...], known: Sequence[str], what: str) -> None:
        for k in v:
            if k in known:
                continue
            close = difflib.get_close_matches(k, known, n=1) if isinstance(k, str) else []
            todo = f"did you mean {close[0]!r}?" if close else "delete it or correct its spelling"
            found = repr(k) if isinstance(k, str) else describe(k)
            self.error((*path, k), f"found unknown {what} {found}, expected one of {', '.join(known)}; {todo}",
                       at_key=True)

    def match(self, v: object) -> tuple[Condition, ...]:
        if v is None:
            return ()  # no match: every transaction
        if not isinstance(v, dict):
            self.error(("match",), f"found {describe(v)}, expected a mapping of match keys, e.g. match: "
                                   "{status: 5xx}")
            return ()
        self.unknown(v, ("match",), tuple(MATCH_KEYS), "match key")
        out: list[Condition] = []
        for key, value in v.items():
            if key in MATCH_KEYS:
                try:
                    test, text = MATCH_KEYS[key](value, self.at(("match", key)))
                except _Abandon:
                    continue
                out.append(Condition(key, text, test))
        return tuple(out)

    def actions(self, rule_value: Mapping[object, object], rule: str) -> tuple[Actions, tuple[str, ...]]:
        if "actions" not in rule_value:
            self.error(("actions",), "found nothing, expected the rule's actions, e.g. actions: {tag: [error]}")
            return Actions(), ()
        v = rule_value["actions"]
        items: list[tuple[tuple[object, ...], str, object]] = []
        if isinstance(v, dict):
            items = [(("actions", k), k, x) for k, x in v.items()]
        elif isinstance(v, list):
            for i, d in enumerate(v):
                if isinstance(d, dict):
                    items.extend((("actions", i, k), k, x) for k, x in d.items())
                else:
                    self.error(("actions", i), f"found {describe(d)}, expected a mapping of one action, e.g. "
                                               "{drop: true}")
        else:
            self.error(("actions",), f"found {describe(v)}, expected a mapping of actions or a list of them, "
                                     "e.g. {tag: [error], log: true}")
            return Actions(), ()
        if not v:
            self.error(("actions",), f"found {describe(v)}, expected at least one action, e.g. {{tag: [error]}}")
        values: dict[str, Any] = {}
        shown: list[str] = []
        first: dict[str, tuple[object, ...]] = {}
        for path, key, x in items:
            if key not in ACTIONS:
                self.unknown({key: x}, path[:-1], tuple(ACTIONS), "action")
                continue
            if key in first:
                self.error(path, f"found {key} a second time, expected each action once (first at line "
                                 f"{self.raw.line(first[key], True)}); merge them", at_key=True)
                continue
            first[key] = path
            try:
                built, text = ACTIONS[key](self, x, self.at(path), path, rule)
            except _Abandon:
                continue
            values.update(built)
            shown.append(text)
        for a, b in (("drop", "log"), ("drop", "sample")):
            if a in first and b in first:
                self.error(first[b], f"found {b} with drop in one rule, expected one of them; a dropped "
                                     "transaction is logged nowhere", at_key=True)
        return Actions(**values), tuple(shown)


# ---- actions: each validates its value and returns (Actions fields, text) -------------------------

ActionResult = tuple[dict[str, Any], str]


def _output_names(p: _Parser, v: object, err: Err, what: str) -> tuple[str, ...]:
    names = strings(v)
    if names is None:
        err(f"found {describe(v)}, expected {what}")
    for i, n in enumerate(names):
        if n not in p.outputs:
            close = difflib.get_close_matches(n, p.outputs, n=1)
            todo = f"did you mean {close[0]!r}?" if close else "add an output with that name under outputs:"
            err(f"found unknown output {n!r}, expected one of {', '.join(p.outputs)}; {todo}",
                *((i,) if isinstance(v, list) else ()))
    return tuple(dict.fromkeys(names))


def _a_log(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    if v is True:
        return {"log": ()}, "log to the default outputs"
    names = _output_names(p, v, err, "true (the default outputs) or a list of output names; to log nowhere "
                                     "use drop: true")
    return {"log": names}, f"log to [{', '.join(names)}]"


def _a_drop(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    if v is not True:
        err(f"found {describe(v)}, expected true; delete the action to keep the transaction")
    return {"drop": True}, "drop"


def _a_sample(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        err(f"found {describe(v)}, expected a rate from 0 to 1 (the fraction of connections logged)")
    return {"sample": float(v)}, f"sample {float(v):g}"


def _a_tag(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    tags = strings(v)
    if tags is None or not all(_TAG.match(t) for t in tags):
        err(f"found {describe(v)}, expected a tag or a list of tags (letters, digits, _ . : / @ + -)")
    return {"tags": tuple(dict.fromkeys(tags))}, f"tag [{', '.join(dict.fromkeys(tags))}]"


def _a_set(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    if not isinstance(v, dict) or not v:
        err(f"found {describe(v)}, expected a mapping of new field names to static values, e.g. "
            "{service: shop}")
    p.set_names.update(k for k in v if isinstance(k, str))
    for k, x in v.items():
        if not isinstance(k, str) or not _FIELD.match(k) or k in RECORD_FIELDS:
            why = "a field pcapwatch fills, " if k in RECORD_FIELDS else ""
            err(f"found {describe(k)}, {why}expected a new field name (letters, digits, _)", k)
        if x is not None and not isinstance(x, str | int | float | bool):
            err(f"found {describe(x)}, expected a static value (text, number, true/false or null)", k)
    return {"set_fields": tuple(v.items())}, "set {" + ", ".join(f"{k}: {show(x)}" for k, x in v.items()) + "}"


def _a_redact(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    keys = ("headers", "query_params")
    if not isinstance(v, dict) or not v:
        err(f"found {describe(v)}, expected a mapping with headers and/or query_params, e.g. "
            "{headers: [x-api-key], query_params: [session]}")
    p.unknown(v, path, keys, "key")
    out: dict[str, Any] = {}
    for key, field_name, what in zip(keys, ("redact_headers", "redact_query"), ("header", "query parameter"),
                                     strict=True):
        if key in v:
            names = strings(v[key])
            if names is None or (key == "headers" and not all(_TOKEN.match(n) for n in names)):
                err(f"found {describe(v[key])}, expected a list of {what} names", key)
            out[field_name] = frozenset(n.lower() if key == "headers" else n for n in names)
    shown = [f"{k} [{', '.join(sorted(out[f]))}]" for k, f in (("headers", "redact_headers"),
                                                                 ("query_params", "redact_query")) if f in out]
    return out, "redact " + " ".join(shown)


def _a_metric(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    items = v if isinstance(v, list) and v else [v]
    metrics: list[Metric] = []
    for i, m in enumerate(items):
        sub = (i,) if isinstance(v, list) else ()
        mpath = (*path, *sub)
        if not isinstance(m, dict):
            err(f"found {describe(m)}, expected a mapping {{name, type, labels, field}}, e.g. {{name: "
                "http_slow_total, type: counter, labels: [route]}", *sub)
        p.unknown(m, mpath, ("name", "type", "labels", "field"), "key")
        name, kind, labels, fld = m.get("name"), m.get("type"), m.get("labels", []), m.get("field")
        if not isinstance(name, str) or not _METRIC.match(name):
            err(f"found {describe(name) if 'name' in m else 'nothing'}, expected a metric name (letters, "
                "digits, _ and :, not starting with a digit)", *sub, "name")
        if kind not in METRIC_TYPES:
            err(f"found {describe(kind) if 'type' in m else 'nothing'}, expected one of "
                f"{', '.join(METRIC_TYPES)}", *sub, "type")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) \
                or len(set(labels)) != len(labels):
            err(f"found {describe(labels)}, expected a list of record field names, each once", *sub, "labels")
        if kind == "histogram" and fld not in NUMERIC_FIELDS:
            err(f"found {describe(fld) if 'field' in m else 'nothing'}, expected the field a histogram "
                f"observes, one of {', '.join(NUMERIC_FIELDS)}", *sub, "field")
        if kind == "counter" and "field" in m:
            err(f"found {describe(fld)}, expected no field for a counter (it counts transactions); "
                "delete it, or use type: histogram", *sub, "field")
        for j, label in enumerate(labels):
            p.labels.append(((*mpath, "labels", j), label))
        metric = Metric(name, str(kind), tuple(labels), fld if isinstance(fld, str) else None)
        p.metrics.append((mpath, metric))
        metrics.append(metric)
    shown = " and ".join(f"{m.type} {m.name}{{{','.join(m.labels)}}}" + (f" of {m.field}" if m.field else "")
                      for m in metrics)
    return {"metrics": tuple(metrics)}, f"metric {shown}"


def _a_alert(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    message, sub = (v, ()) if isinstance(v, str) else (None, ("message",))
    outputs: tuple[str, ...] | None = None
    if isinstance(v, dict):
        p.unknown(v, path, ("message", "outputs"), "key")
        message = v.get("message")
        if "outputs" in v:
            outputs = _output_names(p, v["outputs"], p.at((*path, "outputs")), "a list of output names")
    elif not isinstance(v, str):
        err(f"found {describe(v)}, expected a message or a mapping {{message, outputs}}")
    if not isinstance(message, str) or not message or _CONTROL.search(message):
        found = describe(message) if not isinstance(v, dict) or "message" in v else "nothing"
        err(f"found {found}, expected a one-line message, e.g. 'slow {{method}} {{uri}}'", *sub)
    try:
        parts = list(string.Formatter().parse(message))
    except ValueError as e:
        err(f"found {describe(message)}, expected a message with {{field}} placeholders ({e}); write "
            "{{ and }} for literal braces", *sub)
    for _, fname, spec, conv in parts:
        if fname is not None and (not _FIELD.match(fname) or spec or conv):
            err(f"found {{{fname}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}, expected "
                "placeholders naming a record field only, e.g. {status_code}", *sub)
    to = f"[{', '.join(outputs)}]" if outputs else "the default outputs"
    return {"alert": Alert(rule, message, outputs)}, f"alert to {to}"


def _a_pcap(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> ActionResult:
    if not isinstance(v, dict):
        err(f"found {describe(v)}, expected a mapping {{dir, max_bytes, max_file_bytes}}, e.g. {{dir: "
            "/var/lib/pcapwatch/pcap, max_bytes: 100000000}")
    p.unknown(v, path, ("dir", "max_bytes", "max_file_bytes"), "key")
    d = v.get("dir")
    if not isinstance(d, str) or not d:
        err(f"found {describe(d) if 'dir' in v else 'nothing'}, expected the directory pcap files are "
            "written to (relative to the rule's file)", "dir")
    caps = []
    for key, default in (("max_bytes", DEFAULT_PCAP_MAX_BYTES), ("max_file_bytes", DEFAULT_PCAP_MAX_FILE_BYTES)):
        cap = v.get(key, default)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < MIN_PCAP_BYTES:
            err(f"found {describe(cap)}, expected a whole number of bytes >= {MIN_PCAP_BYTES}", key)
        caps.append(cap)
    where = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(p.raw.file)), d))
    return ({"pcap": Pcap(rule, where, caps[0], caps[1])},
            f"pcap to {where} (files up to {caps[1]} bytes, {caps[0]} in all)")


ACTIONS: dict[str, Callable[[_Parser, object, Err, tuple[object, ...], str], ActionResult]] = {
    "log": _a_log, "drop": _a_drop, "sample": _a_sample, "tag": _a_tag, "set": _a_set, "redact": _a_redact,
    "metric": _a_metric, "alert": _a_alert, "pcap": _a_pcap, "replay": _a_replay,
}


def _dotted(path: tuple[object, ...]) -> str:
    """A key path below a rule: .match.status, .actions[1].tag."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += "." + (str(part).lower() if part is None or isinstance(part, bool) else str(part))
    return text
