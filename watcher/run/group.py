"""`pcapwatch run --source kafka://HOST:PORT/TOPIC --group NAME`: the service reading packets from a
Kafka topic (pycapa's format, as `pcapwatch publish` writes it, one connection per partition) as one
member of a consumer group, so that several `run` processes on several hosts share the analysis.

One thread: the consumer's rebalance callbacks run inside `consume`, between two batches, where the
connection table, the outputs and the commits are all at hand. The same pipeline, rules, redaction
and outputs as the spool service (delivery.py); what differs is where packets come from and how the
place is kept:

- A position is partition << POS_BITS | offset. `event_id` derives from topic, partition and offset
  of a request's head, so it is the same whichever member writes the record.
- The committed offset of a partition is where a restart (or the member that takes the partition
  over) must begin: the earliest packet of its connections with unfinished work, else the next
  message. It is committed only after the outputs have written the records of the packets before
  it (`Delivery.flush`); while an output holds records back, nothing is committed. After a crash the
  next owner replays from there: records may repeat, with the same `event_id`; none go missing.
- A revoked partition: its connections are closed with reason `rebalance` (their unanswered
  requests written, counted in `rebalance_closed`), the outputs flushed and its offset committed;
  the next owner picks the connections up again from that offset (their repeated records carry the
  same `event_id`), or midstream at their next request when they had no unfinished work.

Signals: TERM/INT stop (outputs flushed, offsets committed; open connections are not closed: the
next owner replays them from the committed offset), HUP reopens output files, USR1 logs a status
line.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

from analyzers import Pipeline, Transaction, to_record
from watcher.capture.pycapa import KafkaUrl, key_micros, micros_ts
from watcher.config.model import Config
from watcher.health import Health
from watcher.metrics import DEFAULT_BUCKETS_MS, MetricsModel
from watcher.run.control import STOP, SignalPipe
from watcher.run.delivery import CLOSE_SECONDS, Delivery
from watcher.run.resume import POS_BITS, POS_MASK, event_id
from watcher.run.sdnotify import Notifier, log

# Messages asked for per consume() call, and how long it waits when there are none.
CONSUME_BATCH = 2000
CONSUME_SECONDS = 0.2
# Outputs get this long to write what they hold before offsets are committed.
FLUSH_SECONDS = 2.0
STATUS_SECONDS = 60.0
# While no message comes, how often idle connections are looked for (wall clock).
IDLE_SWEEP_SECONDS = 5.0
# How often the health snapshot for the Prometheus output is refreshed.
HEALTH_SECONDS = 1.0


@dataclass
class GroupCounters:
    records: int = 0
    frames: int = 0
    bad_key: int = 0  # messages whose key is not an 8-byte capture time: skipped
    bad_value: int = 0  # messages without a frame: skipped
    consumer_errors: int = 0
    assigned: int = 0  # partitions received, all rebalances together
    revoked: int = 0
    lost: int = 0  # partitions taken without a revoke (this member was presumed dead)
    rebalance_closed: int = 0  # connections closed because their partition went to another member
    commits: int = 0
    commit_errors: int = 0
    commits_held: int = 0  # commits not made because an output had not written everything


class GroupService:
    def __init__(self, config: Config, config_path: str | None) -> None:
        src = config.kafka
        assert src.source is not None
        from watcher.capture.pycapa import parse_kafka_url

        self.url: KafkaUrl = parse_kafka_url(src.source)
        self.config = config
        self.config_path = config_path
        self.linktype = src.linktype
        self.counters = GroupCounters()
        self.notifier = Notifier()
        self.metrics = MetricsModel(buckets_ms=_buckets(config))
        self.health = Health()
        self.metrics.set_health(self._health)
        self.last_commit_wall = 0.0
        self.delivery = Delivery(config, self.metrics, log)
        lim = config.limits
        self.pipeline = Pipeline(max_connections=lim.max_connections, idle_timeout=lim.idle_timeout)
        self.pipeline.set_source(self.url.source_name)
        self.signals = SignalPipe()
        self.held: set[int] = set()  # partitions this member holds now
        self.next_offset: dict[int, int] = {}  # partition -> the next offset to read
        self.last_ts = 0.0
        self.last_message = time.monotonic()
        from watcher.sinks import kafka_client  # the client library, only for a Kafka source

        self.kc: Any = kafka_client
        self.member = kafka_client.GroupMember(self.url, src.group, on_assign=self._assigned, on_revoke=self._revoked,
                                  session_timeout=src.session_timeout_seconds)
        self.group = src.group

    # The loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        with self.signals.handling():
            try:
                return self._run()
            finally:
                self.member.close()

    def _run(self) -> int:
        log("info", f"reading {self.url.text} as a member of group {self.group}; records to "
                    f"{', '.join(self.delivery.sinks)}")
        self.notifier.ready(f"member of {self.group} on {self.url.text}")
        now = time.monotonic()
        next_commit = now + self.config.state.checkpoint_seconds
        next_status = now + STATUS_SECONDS
        next_sweep = now + IDLE_SWEEP_SECONDS
        next_health = now
        exit_code = 0
        stop = False
        while not stop:
            stop = self._signals()
            if stop:
                break
            try:
                msgs = self.member.consume(CONSUME_BATCH, CONSUME_SECONDS)
                self._feed(msgs)
            except self.kc.KafkaIOError as e:
                log("error", f"{e}; stopping so that the service is restarted")
                exit_code = 1
                break
            except OSError as e:
                log("error", f"writing records failed: {e.strerror or e}; stopping (the committed offsets keep "
                             "what was not written)")
                exit_code = 1
                break
            now = time.monotonic()
            if now >= next_commit:
                self._commit(self.held)
                next_commit = now + self.config.state.checkpoint_seconds
            if now >= next_status:
                self.notifier.status(self.status_line())
                next_status = now + STATUS_SECONDS
            if now >= next_sweep:
                self._idle_sweep(now)
                next_sweep = now + IDLE_SWEEP_SECONDS
            if now >= next_health:
                self._update_health()
                next_health = now + HEALTH_SECONDS
        self.notifier.stopping("stopping")
        if exit_code == 0:  # the connections stay open: the next owner replays them from the commit
            self._let_go(sorted(self.held), None, commit=True)
        self.delivery.close(CLOSE_SECONDS)
        log("info", f"stopped: {self.status_line()}")
        return exit_code

    def _signals(self) -> bool:
        stop = False
        for signum in self.signals.received():
            if signum in STOP:
                stop = True
            elif signum == signal.SIGHUP:
                self.delivery.reopen()
            elif signum == signal.SIGUSR1:
                log("info", self.status_line())
        return stop

    # Messages -----------------------------------------------------------------------------------

    def _feed(self, msgs: list[Any]) -> None:
        """Messages to frames, one batch per run of messages of one partition, into the pipeline."""
        c = self.counters
        part = -1
        frames: list[tuple[int, float, bytes]] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                _name, fatal = self.kc.message_error(err)
                c.consumer_errors += 1
                if fatal:
                    raise self.kc.KafkaIOError(f"reading {self.url.text} failed: {err.str()}")
                continue
            p = m.partition()
            if p not in self.held:
                continue  # a message of a partition given up in a rebalance during this call
            if p != part:
                self._analyse(part, frames)
                part, frames = p, []
            offset = m.offset()
            self.next_offset[p] = offset + 1
            micros = key_micros(m.key())
            value = m.value()
            if micros is None:
                c.bad_key += 1
                continue
            if not value:
                c.bad_value += 1
                continue
            frames.append((offset, micros_ts(micros), value))
        self._analyse(part, frames)

    def _analyse(self, part: int, frames: list[tuple[int, float, bytes]]) -> None:
        if not frames:
            return
        self.counters.frames += len(frames)
        self.last_ts = frames[-1][1]
        self.last_message = time.monotonic()
        self._write(self.pipeline.feed(self.linktype, frames, part << POS_BITS))

    def _write(self, txs: list[Transaction]) -> None:
        for tx in txs:
            self.delivery.deliver(self.record(tx), tx)
            self.counters.records += 1

    def record(self, tx: Transaction) -> dict[str, Any]:
        rec = to_record(tx, self.delivery.strings)
        msg = tx.request if tx.request is not None else tx.response
        assert msg is not None
        fp = f"kafka:{self.url.topic}:{msg.pos >> POS_BITS}"
        rec["event_id"] = event_id(fp, msg.pos & POS_MASK, msg.pos_index)
        return rec

    def _idle_sweep(self, now: float) -> None:
        """Capture time moves only with packets: while the topic is silent, let it follow the wall
        clock, so connections idle past `idle_timeout` are closed and their requests written."""
        if not self.last_ts or now - self.last_message < IDLE_SWEEP_SECONDS:
            return
        flows = self.pipeline.flows
        flows.sweep(self.last_ts + (now - self.last_message))
        if flows.out:
            txs, flows.out = flows.out, []
            self._write(txs)

    # Rebalances and commits -----------------------------------------------------------------------

    def _assigned(self, parts: list[int]) -> None:
        self.counters.assigned += len(parts)
        self.held.update(parts)
        log("info", f"group {self.group}: partitions {_ids(parts)} of {self.url.topic} assigned; holding "
                    f"{_ids(sorted(self.held))}")

    def _revoked(self, parts: list[int], lost: bool) -> None:
        if not self.held.intersection(parts):
            return  # given up already (at a stop)
        if lost:
            self.counters.lost += len(parts)
        else:
            self.counters.revoked += len(parts)
        log("info", f"group {self.group}: partitions {_ids(parts)} of {self.url.topic} "
                    f"{'lost (this member was presumed dead)' if lost else 'revoked'}")
        self._let_go(parts, "rebalance", commit=not lost)

    def _let_go(self, parts: list[int], reason: str | None, *, commit: bool) -> None:
        """Give partitions up: commit where their next owner begins (computed while their connections
        are still open), and with a `reason` close those connections and write their records."""
        gone = {p for p in parts if p in self.held}
        if not gone:
            return
        offsets = self._offsets(gone)
        if reason is not None:
            closed, txs = self.pipeline.close_where(lambda pos: pos >> POS_BITS in gone, reason)
            self.counters.rebalance_closed += closed
            self._write(txs)
        if commit:
            self._commit_offsets(offsets)
        self.held -= gone
        for p in gone:
            self.next_offset.pop(p, None)

    def _offsets(self, parts: set[int]) -> dict[int, int]:
        pins = self.pipeline.pins(lambda pos: pos >> POS_BITS)
        out = {}
        for p in parts:
            nxt = self.next_offset.get(p)
            if nxt is None:
                continue  # nothing read here: the committed offset stands
            pin = pins.get(p)
            out[p] = min(nxt, (pin & POS_MASK)) if pin is not None else nxt
        return out

    def _commit(self, parts: set[int]) -> None:
        self._commit_offsets(self._offsets(parts))

    def _commit_offsets(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        if not self.delivery.flush(FLUSH_SECONDS):
            self.counters.commits_held += 1
            return
        why = self.member.commit(offsets)
        if why is None:
            self.counters.commits += 1
            self.last_commit_wall = time.time()
        else:
            self.counters.commit_errors += 1
            log("warning", f"group {self.group}: committing offsets of {self.url.topic} failed ({why}); a restart "
                           "or the next owner repeats more records (with the same event_id)")

    def _update_health(self) -> None:
        """Snapshot for the Prometheus output (its scrapes read this, not the live structures)."""
        age = time.time() - self.last_commit_wall if self.last_commit_wall else None
        kafka = {k: v for k, v in asdict(self.counters).items() if k not in ("records", "frames")}
        self.health = Health.from_pipeline(self.pipeline.stats(), rule_errors=dict(self.delivery.rules.errors),
                                           checkpoint_age_seconds=age, kafka=kafka)

    def _health(self) -> Health:
        return dataclasses.replace(self.health, outputs=self.delivery.stats(),
                                   delivery=dataclasses.asdict(self.delivery.counters))

    def status_line(self) -> str:
        st = self.pipeline.stats()
        c = self.counters
        return (f"records {c.records:,}, frames {c.frames:,}, partitions {_ids(sorted(self.held))}, "
                f"rebalance_closed {c.rebalance_closed:,}, skipped {c.bad_key + c.bad_value:,}, commits {c.commits:,} "
                f"(errors {c.commit_errors:,}, held {c.commits_held:,}), connections "
                f"{st['connections']['active']:,}, gaps {st['tcp']['gaps']:,}")

    def stats(self) -> dict[str, Any]:
        return {**asdict(self.counters), **self.pipeline.stats()}


def _buckets(config: Config) -> tuple[float, ...]:
    from watcher.config.model import PrometheusOutputConfig

    for o in config.outputs:
        if isinstance(o, PrometheusOutputConfig):
            return tuple(o.buckets_ms)
    return tuple(DEFAULT_BUCKETS_MS)


def _ids(parts: list[int]) -> str:
    return ",".join(map(str, parts)) or "none"
