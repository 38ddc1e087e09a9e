"""From a transaction's record to the outputs: rules, redaction, routing, metrics and alerts.

    record -> rules.evaluate -> redact.finalize -> the rule's outputs (or the default ones) -> sinks
                            \\-> metrics (every transaction, dropped or not: traffic is counted)
                            \\-> alerts (a warning-level record to the rule's outputs)
                            \\-> pcap (the connection's packets to a file, one writer per directory)
                            \\-> replay (the request re-sent to a shadow; its record back to the outputs)

Sinks never block: a slow or dead output drops what its buffer cannot hold, and counts it. A
`required: true` output never drops: the service asks `waiting_for()` before each batch and waits
while its buffer is full, and holds the checkpoint back until it has written (see `owed()` and
watcher/run/pending.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analyzers import Message, Pcap, Policy, RuleSet, Strings, Transaction, TxView, ascii_headers, finalize
from watcher.config.load import redact_policy, rule_set
from watcher.config.model import Config
from watcher.metrics import MetricsModel
from watcher.replay.actions import ReplayActions
from watcher.sinks import open_sink
from watcher.sinks.base import Sink
from watcher.sinks.pcap_sink import PcapSink, PcapSinkConfig, snapshot_item

Log = Callable[[str, str], None]
# A closing output's (or replaced pcap writer's) time to write what it holds: at shutdown, on a
# reload that changes the outputs, when a pcap directory's caps change.
CLOSE_SECONDS = 5.0


def _headers(message: Message | None, strings: Strings) -> dict[str, Any]:
    head = message.head if message is not None else None
    headers = getattr(head, "headers", {})
    return dict(ascii_headers(headers) if strings == Strings.ASCII else headers)


def _began(tx: Transaction) -> float:
    """When the transaction's first byte was seen."""
    first = tx.request or tx.response
    return first.first_ts if first is not None else 0.0


@dataclasses.dataclass
class DeliveryCounters:
    records: int = 0  # transactions that went through the rules
    dropped_by_rules: int = 0  # `drop` or sampled out
    alerts: int = 0
    unknown_output: int = 0
    pcap_without_packets: int = 0  # a pcap action matched, but no packet of the connection was kept


class Delivery:
    """The outputs of one configuration, and the rules and redaction policy that feed them."""

    def __init__(self, config: Config, metrics: MetricsModel, log: Log,
                 counters: DeliveryCounters | None = None) -> None:
        self.log = log
        self.metrics = metrics
        self.rules: RuleSet = rule_set(config)
        self.policy: Policy = redact_policy(config)
        self.strings = Strings(config.strings)  # how records write wire text (the service builds them)
        self.outputs = config.outputs
        self.default = tuple(o.name for o in config.outputs if o.default)
        self.counters = counters if counters is not None else DeliveryCounters()
        self.sinks: dict[str, Sink] = {}
        self.required: tuple[Sink, ...] = ()
        self.waiting: tuple[str, float] | None = None  # (required output, since): analysis waits for it
        self.pcap_writers: dict[str, PcapSink] = {}  # by directory
        self.replays = ReplayActions(lambda line: log("warning", line))
        try:
            for output in config.outputs:
                self.sinks[output.name] = open_sink(output, log, metrics)  # its library imported now
                self.sinks[output.name].strings = self.strings  # how its JSON is written
            self.required = tuple(s for s in self.sinks.values() if s.required)
            self._open_pcap_writers()
            self.replays.configure(self.rules.replays)
        except BaseException:
            self.close(1.0)
            raise

    def set_rules(self, config: Config) -> None:
        """A reload that keeps the outputs: new rules and redaction, the same sinks (pcap writers
        whose directory and caps are unchanged are kept too)."""
        self.rules = rule_set(config)
        self.policy = redact_policy(config)
        self.strings = Strings(config.strings)
        for sink in self.sinks.values():
            sink.strings = self.strings
        self._open_pcap_writers()
        self.replays.configure(self.rules.replays)

    def _open_pcap_writers(self) -> None:
        """One writer per directory the rules' pcap actions name; where rules give one directory
        different caps, the smallest apply."""
        wanted: dict[str, PcapSinkConfig] = {}
        for p in self.rules.pcaps:
            had = wanted.get(p.dir)
            wanted[p.dir] = PcapSinkConfig(f"pcap:{p.dir}", Path(p.dir),
                                           min(p.max_bytes, had.max_bytes if had else p.max_bytes),
                                           min(p.max_file_bytes, had.max_file_bytes if had else p.max_file_bytes))
        for d, writer in list(self.pcap_writers.items()):
            if wanted.get(d) != writer.config:
                writer.close(CLOSE_SECONDS)
                del self.pcap_writers[d]
        for d, cfg in wanted.items():
            if d not in self.pcap_writers:
                self.pcap_writers[d] = cfg.build(self.log).start()

    def _pcap(self, actions: tuple[Pcap, ...], tx: Transaction) -> None:
        packets = tx.packets.packets() if tx.packets is not None else ()
        if not packets:
            self.counters.pcap_without_packets += 1
            return
        for d in dict.fromkeys(p.dir for p in actions):  # one file per directory, named by the first rule
            rule = next(p.rule for p in actions if p.dir == d)
            self.pcap_writers[d].submit(snapshot_item(rule, tx.conn.uid, packets, _began(tx)))

    def deliver(self, record: dict[str, Any], tx: Transaction) -> None:
        view = TxView(record, _headers(tx.request, self.strings), _headers(tx.response, self.strings))
        decision = self.rules.evaluate(view)
        final = finalize(view, decision, self.policy)
        self.counters.records += 1
        self.metrics.observe(decision.metrics, final)
        if decision.drop:
            self.counters.dropped_by_rules += 1
        else:
            self._submit(final, decision.outputs)
        for alert in decision.alerts:
            self.counters.alerts += 1
            self._submit(alert.record(final), alert.outputs or None)
        if decision.pcap:
            self._pcap(decision.pcap, tx)
        if decision.replay:
            self.replays.offer(decision.replay, tx, final)
        self._replayed()

    def _replayed(self) -> None:
        """Records of requests replayed since, to the default outputs (from this thread: sinks are
        fed by the service's thread only)."""
        for record in self.replays.take():
            self._submit(record, None)

    def _submit(self, record: dict[str, Any], outputs: tuple[str, ...] | None) -> None:
        for name in self.default if outputs is None else outputs:
            sink = self.sinks.get(name)
            if sink is None:
                self.counters.unknown_output += 1
                continue
            sink.submit(record)

    def blocked(self) -> bool:
        """True while a required output's buffer is full: the service analyses nothing then (the
        reader's queue fills, the capture files wait in the spool, the lag shows it). Logged when
        it starts and when it ends."""
        sink = next((s for s in self.required if s.full()), None)
        if sink is None:
            if self.waiting is not None:
                name, since = self.waiting
                self.log("info", f"output {name} has room again after {time.monotonic() - since:.1f} s: analysis "
                                 "goes on")
                self.waiting = None
            return False
        if self.waiting is None:
            self.waiting = (sink.name, time.monotonic())
            self.log("warning", f"output {sink.name} is required and its buffer is full ({sink.capacity:,} records): "
                                "analysis waits for it, the capture files wait in the spool")
        return True

    def waiting_text(self) -> str:
        """The status line's part about it: ", waiting 12 s for output NAME", or nothing."""
        if self.waiting is None:
            return ""
        return f", waiting {time.monotonic() - self.waiting[1]:.0f} s for output {self.waiting[0]}"

    def owed(self) -> tuple[tuple[Sink, int], ...]:
        """Each required output and how many records it has been given: what a checkpoint made now
        waits for."""
        return tuple((s, s.submitted()) for s in self.required)

    def summary(self) -> str:
        """The outputs' counters, for the status and shutdown lines: what really reached each."""
        parts = []
        for name, st in ((s.name, s.stats()) for s in self.sinks.values()):
            size = f" ({st['written_bytes']:,} bytes)" if "written_bytes" in st else ""
            parts.append(f"{name} {st['written']:,} written{size}, {st['dropped']:,} dropped, "
                         f"{st['buffered']:,} buffered")
        return "; ".join(parts)

    def flush(self, timeout: float) -> bool:
        """Wait for the outputs to write what they hold, all within `timeout` (dead outputs must not
        add up to stall the pipeline); False if some could not."""
        self._replayed()
        deadline = time.monotonic() + timeout
        ok = True
        for sink in self._all():
            ok = sink.flush(max(deadline - time.monotonic(), 0.0)) and ok
        return ok

    def reopen(self) -> None:
        for sink in self.sinks.values():
            sink.reopen()

    def close(self, timeout: float) -> None:
        self.replays.close()  # its queue sent first: those records go out too
        self._replayed()
        for sink in self._all():
            sink.close(timeout)

    def _all(self) -> list[Sink]:
        return [*self.sinks.values(), *self.pcap_writers.values()]

    def stats(self) -> dict[str, dict[str, int]]:
        """Every output's counters, the pcap writers' under `pcap:DIR`."""
        return {sink.name: sink.stats() for sink in self._all()}
