"""The rules' hot path: a `RuleSet` evaluates compiled rules against one transaction's view and
returns a `Decision`. Rules are ordered; the first that matches decides, unless it says `continue:
true`, in which case later matching rules add to its decision (tags, fields, metrics, outputs
united; a drop stays a drop). A rule that raises while evaluating is counted under its name and
skipped (mitmproxy's `safecall`): one odd record never stops the others.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from analyzers.rules.compile import parse_rules
from analyzers.rules.model import KEEP, Alert, Decision, Metric, Pcap, RawRule, Replay, Rule, TxView


class RuleSet:
    """Compiled rules and their error counters; `evaluate` is the hot path."""

    def __init__(self, rules: Sequence[Rule] = (), default_outputs: Sequence[str] = ()) -> None:
        self.rules = tuple(rules)
        self.default_outputs = tuple(default_outputs)
        self.errors: Counter[str] = Counter()  # evaluation errors by rule name
        self.last_error: dict[str, str] = {}  # the latest error of each rule, for the log
        self._compiled = tuple((r, tuple(c.test for c in r.conditions)) for r in self.rules)

    @property
    def pcaps(self) -> tuple[Pcap, ...]:
        """Every rule's pcap action: while there is one, connections' packets must be kept."""
        return tuple(r.actions.pcap for r in self.rules if r.actions.pcap is not None)

    @property
    def replays(self) -> tuple[Replay, ...]:
        """Every rule's replay action: while there is one, request bodies must be kept."""
        return tuple(r.actions.replay for r in self.rules if r.actions.replay is not None)

    def evaluate(self, view: TxView) -> Decision:
        """The decision for one transaction; a rule that raises is counted and skipped."""
        hits: list[tuple[Rule, bool]] = []
        for rule, tests in self._compiled:
            try:
                for test in tests:
                    if not test(view):
                        break
                else:
                    rate = rule.actions.sample
                    keep = rate is None or sampled(view.record.get("uid"), rate)
                    hits.append((rule, keep))
                    if not rule.cont:
                        break
            except Exception as e:  # any failure of one rule is counted, never fatal
                self.errors[rule.name] += 1
                self.last_error[rule.name] = f"{type(e).__name__}: {e}"
        return self._decide(hits) if hits else KEEP

    def _decide(self, hits: list[tuple[Rule, bool]]) -> Decision:
        drop_by: str | None = None
        named: list[str] = []
        defaults = False  # a `log: true`: the default outputs, as well as any named
        tags: list[str] = []
        fields: dict[str, Any] = {}
        rh: set[str] = set()
        rq: set[str] = set()
        metrics: list[Metric] = []
        alerts: list[Alert] = []
        pcaps: list[Pcap] = []
        replays: list[Replay] = []
        for rule, keep in hits:
            a = rule.actions
            if (a.drop or not keep) and drop_by is None:
                drop_by = rule.name
            if a.log == ():
                defaults = True
            elif a.log is not None:
                named.extend(a.log)
            tags.extend(t for t in a.tags if t not in tags)
            fields.update(a.set_fields)
            rh |= a.redact_headers
            rq |= a.redact_query
            metrics.extend(a.metrics)
            if a.alert is not None:
                alerts.append(a.alert)
            if a.pcap is not None:
                pcaps.append(a.pcap)
            if a.replay is not None:
                replays.append(a.replay)
        outputs = tuple(dict.fromkeys(named + list(self.default_outputs) if defaults else named)) if named else None
        return Decision(tuple(r.name for r, _ in hits), drop_by is not None, drop_by, outputs, tuple(tags), fields,
                        frozenset(rh), frozenset(rq), tuple(metrics), tuple(alerts), tuple(pcaps),
                        tuple(replays))


def sampled(uid: object, rate: float) -> bool:
    """Whether a connection is in a `rate` sample: the same answer for every transaction of it,
    in every process and run (a hash of the uid, not Python's salted hash())."""
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(str(uid).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2.0 ** 64


def compile_rules(raw: Sequence[RawRule], outputs: Sequence[str] = (),
                  default_outputs: Sequence[str] | None = None, replay_targets: Sequence[str] = ()) -> RuleSet:
    """Validate and compile rules (`compile.parse_rules`) into a RuleSet; raises RuleError listing
    every problem. `outputs` are the configured output names; `default_outputs` those with `default:
    true` (all of `outputs` when not given)."""
    return RuleSet(parse_rules(raw, outputs, replay_targets), outputs if default_outputs is None else default_outputs)
