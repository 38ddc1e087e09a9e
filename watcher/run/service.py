"""`pcapwatch run`: the service beside tcpdump.

Threads: the reader (watcher/run/reader.py) turns the spool into frame batches on a bounded queue;
this module's main loop analyses them, writes records, checkpoints, and handles signals and
reloads (watcher/run/control.py: handlers only write a byte to a socketpair, the loop turns that
into terminate, reload or status, the daemon model of nobodd). Everything the loop waits on is a
file descriptor.

Exactly-once across restarts rests on input positions (see watcher/run/checkpoint.py): a restart
replays from the checkpoint's `resume` mark and suppresses the transactions completed at or before
its `emitted` mark. `event_id` derives from where a transaction's request head is in the input, so
a record written twice after kill -9 carries the same id both times. The first checkpoint comes
right after the first batch's records are written, so even a run killed within a second leaves
one; a checkpoint never passes what a `required: true` output has not written (pending.py).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analyzers import Pipeline, Transaction, to_record
from watcher.capture.spool import Spool
from watcher.config.load import Config, ConfigError
from watcher.config.load import load as load_config
from watcher.health import with_known_labels
from watcher.metrics import Health, MetricsModel
from watcher.run import checkpoint as ckpt
from watcher.run.connections import Connections
from watcher.run.control import STOP, SignalPipe, drain, reload_outputs, restart_only
from watcher.run.delivery import CLOSE_SECONDS, Delivery
from watcher.run.pending import Pending, Place
from watcher.run.reader import Batch, Reader
from watcher.run.resume import POS_BITS, Replay, mark, place, record_origin
from watcher.run.sdnotify import Notifier, log
from watcher.run.wiring import dir_watcher, gunzip_limits, histogram_buckets
from watcher.text.faults import FaultLines

STATUS_SECONDS = 60.0
LAG_WARN_EVERY_SECONDS = 60.0
# Batches analysed per turn of the loop before signals and timers are looked at again.
BATCHES_PER_TURN = 8
# After SIGTERM the reader thread gets this long to notice; it is a daemon thread either way.
READER_JOIN_SECONDS = 2.0
# Outputs get this long to write what they hold before a checkpoint (at shutdown: CLOSE_SECONDS).
FLUSH_SECONDS = 2.0
# How often the health snapshot for the Prometheus output is refreshed.
HEALTH_SECONDS = 1.0
# While the capture is silent, how often idle connections are looked for (wall clock).
IDLE_SWEEP_SECONDS = 5.0
# Checkpoints at new capture files come at most this often: each one walks the connection table
# and fsyncs, and tiny rotation files on a busy link could otherwise ask for hundreds a second.
MIN_CHECKPOINT_SECONDS = 1.0
# While a required output's buffer is full, how often the loop looks whether it has room again.
WAIT_POLL_SECONDS = 0.1

@dataclass
class Counters:
    batches: int = 0
    frames: int = 0
    records: int = 0
    suppressed: int = 0  # replayed after a restart, written by the previous run already
    checkpoints: int = 0
    checkpoint_errors: int = 0
    output_errors: int = 0
    reloads: int = 0
    reload_errors: int = 0


class Service:
    def __init__(self, config: Config, config_path: str | None, capture: Any = None,
                 overrides: Callable[[Config], Config] | None = None) -> None:
        """`overrides` re-applies command-line options (--spool, --output...) to a config reloaded
        on SIGHUP, so a reload does not quietly drop them."""
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or (lambda c: c)
        self.capture = capture
        self.counters = Counters()
        self.notifier = Notifier()
        self.metrics = MetricsModel(buckets_ms=histogram_buckets(config))
        self.health = Health()
        self.metrics.set_health(self._health)
        self.delivery = Delivery(config, self.metrics, log)
        lim = config.limits
        self.pipeline = Pipeline(max_connections=lim.max_connections, idle_timeout=lim.idle_timeout)
        self._keep_packets(config)
        self.batches: queue.Queue[Batch] = queue.Queue(maxsize=lim.queue_batches)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signals = SignalPipe()
        self.spool = Spool(str(config.spool.dir), config.spool.pattern, gunzip_limits(config))
        self.state_dir = str(config.state.dir)
        self.saved, warning = ckpt.load(self.state_dir)
        if warning:
            log("warning", warning)
        self.replay = Replay(self.saved.emitted if self.saved else None)
        self.faults = FaultLines(lambda line: log("error", line))  # packets whose analysis raised
        self.connections = Connections(self.pipeline, self.saved.connections if self.saved else ())  # across restarts
        self.pending = Pending(self.saved.resume if self.saved else None)  # what required outputs owe
        self.last_pos: int | None = None  # position of the last record analysed
        self.next_pos: int | None = None  # where reading continues after it
        self.last_ts = 0.0  # capture time of the last record analysed
        self.last_progress = time.monotonic()
        self.stop = False
        self.new_file = False
        self.last_checkpoint_wall = 0.0
        self.first_checkpoint = True  # still due: right after the first batch
        self.backlog = True  # and another once the backlog found at start is read (bounds a restart's repeats)
        self.forgotten_bytes = 0  # read from generations no longer tracked
        self.reader = Reader(self.spool, self.batches, self.wake_w, config.spool.rescan_seconds,
                             self.saved.resume if self.saved else None, log, dir_watcher(str(config.spool.dir)))

    # The loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        with self.signals.handling():
            return self._run()

    def _run(self) -> int:
        ckpt.make_dir(self.state_dir)
        if self.capture is not None:
            self.capture.start()
        self.reader.start()
        where = f"resuming at {self.saved.resume.name or self.saved.resume.fp} offset " \
                f"{self.saved.resume.offset}" if self.saved else "starting from the oldest capture"
        pcap = f"; packets of matching connections to {', '.join(self.delivery.pcap_writers)}" \
            if self.delivery.pcap_writers else ""
        log("info", f"watching {self.config.spool.dir} ({where}); records to "
                    f"{', '.join(self.delivery.sinks)}{pcap}")
        self.notifier.ready("watching " + str(self.config.spool.dir))
        now = time.monotonic()
        # Soon after start too: a run that lives a second must not leave its work unsaved.
        next_checkpoint = now + min(self.config.state.checkpoint_seconds, MIN_CHECKPOINT_SECONDS)
        last_checkpoint = now
        next_status = now + STATUS_SECONDS
        watchdog = self.notifier.watchdog_interval()
        next_ping = now
        next_lag_warn = 0.0
        next_health = now
        next_idle_sweep = now + IDLE_SWEEP_SECONDS
        exit_code = 0
        while not self.stop:
            timeout = max(0.0, min(next_checkpoint, next_status, next_ping if watchdog else next_status)
                          - time.monotonic())
            if self.delivery.waiting is not None:
                timeout = min(timeout, WAIT_POLL_SECONDS)
            readable, _, _ = select.select([self.signals.fileno(), self.wake_r], [], [], timeout)
            if self.signals.fileno() in readable:
                self._signals()
                if self.stop:
                    break
            if self.wake_r in readable:
                drain(self.wake_r)
            try:
                self._analyse()
            except OSError as e:
                log("error", f"writing records failed: {e.strerror or e}; stopping so that systemd restarts "
                             "pcapwatch (the checkpoint keeps what was not written)")
                exit_code = 1
                break
            if self.reader.error is not None:
                log("error", "the reader thread stopped; exiting so that the service is restarted")
                exit_code = 1
                break
            if self.capture is not None:
                self.capture.poll()
            now = time.monotonic()
            caught_up = self.counters.batches > 0 and self.reader.caught_up and self.batches.empty()
            first = (self.first_checkpoint and self.counters.batches > 0) or (self.backlog and caught_up)
            if first or now >= next_checkpoint or (self.new_file and now >= last_checkpoint + MIN_CHECKPOINT_SECONDS):
                # Also on reaching a new capture file: a restart then never resumes in a file that
                # tcpdump's ring is about to reuse.
                self.first_checkpoint &= not self.counters.batches
                self.backlog &= not caught_up
                self._checkpoint()
                self.new_file = False
                last_checkpoint = now
                # The first one is followed by another a second later (a short run loses little).
                next_checkpoint = now + (min(self.config.state.checkpoint_seconds, MIN_CHECKPOINT_SECONDS) if first
                                         else self.config.state.checkpoint_seconds)
            self.faults.tick()
            if now >= next_status:
                self.notifier.status(self.status_line())
                next_status = now + STATUS_SECONDS
            if watchdog and now >= next_ping:
                if self._making_progress(now, watchdog):
                    self.notifier.watchdog()
                next_ping = now + watchdog
            if now >= next_lag_warn and self._lagging():
                next_lag_warn = now + LAG_WARN_EVERY_SECONDS
            if now >= next_health:
                self._update_health()
                next_health = now + HEALTH_SECONDS
            if now >= next_idle_sweep:
                self._idle_sweep(now)
                next_idle_sweep = now + IDLE_SWEEP_SECONDS
        self.faults.flush()
        self.notifier.stopping("stopping")
        self.reader.stop()
        self.reader.join(READER_JOIN_SECONDS)
        self.delivery.close(CLOSE_SECONDS)  # what the outputs could not write by then is dropped, counted
        self._checkpoint()  # after: only what a required output wrote is claimed
        if len(self.pending):
            log("warning", f"{len(self.pending):,} transactions not written by the required outputs: the checkpoint "
                           "stops before them, the next start writes them")
        if self.capture is not None:
            self.capture.stop()
        log("info", f"stopped: {self.counters.records:,} records made, {self.counters.suppressed:,} replayed "
                    f"records suppressed; outputs: {self.delivery.summary()}")
        return exit_code

    def _signals(self) -> None:
        for signum in self.signals.received():
            if signum in STOP:
                self.stop = True
            elif signum == signal.SIGHUP:
                self.reload()
            elif signum == signal.SIGUSR1:
                log("info", self.status_line())

    # Analysis -----------------------------------------------------------------------------------

    def _analyse(self) -> None:
        for _ in range(BATCHES_PER_TURN):
            if self.delivery.blocked():  # a required output's buffer is full: the files wait in the spool
                return
            try:
                batch = self.batches.get_nowait()
            except queue.Empty:
                return
            base = batch.gen << POS_BITS
            if self.next_pos is not None and batch.gen != self.next_pos >> POS_BITS:
                self.new_file = True
            if self.next_pos is None and batch.frames:
                self._first_place(base + batch.frames[0][0])
            self.connections.reading(batch.gen, self.reader.generations)
            txs = self.pipeline.feed(batch.linktype, batch.frames, base)
            for error in self.pipeline.take_errors():  # one line each (rate-limited): file and offset
                self.faults.report(*place(error.pos, self.reader.generations), error.error)
            self.counters.batches += 1
            self.counters.frames += len(batch.frames)
            if batch.frames:
                self.last_pos = base + batch.frames[-1][0]
                self.last_ts = batch.frames[-1][1]
            self.next_pos = base + batch.end
            self.last_progress = time.monotonic()
            if txs:
                self._write(batch.gen, txs)

    def _first_place(self, pos: int) -> None:
        first = mark(pos, self.reader.generations)
        if first is not None:
            self.pending.start_at(Place(first, pos, -1))

    def _idle_sweep(self, now: float) -> None:
        """Capture time only moves with packets: while the capture is silent and everything has
        been read, let it follow the wall clock, so connections idle past `idle_timeout` are
        closed and their unanswered requests written."""
        if self.next_pos is None or not self.reader.caught_up or not self.batches.empty() or self.delivery.waiting:
            return
        flows = self.pipeline.flows
        flows.sweep(self.last_ts + (now - self.last_progress))
        if flows.out:
            txs, flows.out = flows.out, []
            self._write(self.next_pos >> POS_BITS, txs)

    def _write(self, gen: int, txs: list[Transaction]) -> None:
        for tx in txs:
            if self.replay.suppressed(gen, tx, self.reader.generations):
                self.counters.suppressed += 1
                continue
            self.delivery.deliver(self.record(tx), tx)
            self.pending.delivered(tx.done_pos, self.delivery.owed())
            self.counters.records += 1

    def record(self, tx: Transaction) -> dict[str, Any]:
        rec = to_record(tx, self.delivery.strings)
        rec["event_id"], name = record_origin(tx, self.reader.generations)
        if name is not None:
            rec["pcap_file"] = name
        return rec

    def _flush(self) -> None:
        """Let the outputs write what they hold before a checkpoint claims it written. A dead
        output does not hold the checkpoint back: it drops what its buffer cannot keep, counted."""
        if not self.delivery.flush(FLUSH_SECONDS):
            self.counters.output_errors += 1

    # Checkpoints, status, reload ----------------------------------------------------------------

    def _checkpoint(self) -> None:
        """Save where the service is, or the newest earlier place every required output has written."""
        if self.next_pos is None:
            return  # nothing analysed in this run: the saved checkpoint still holds
        self._flush()
        pin = self.pipeline.pin()
        resume_pos = min(pin, self.next_pos) if pin is not None else self.next_pos
        resume = mark(resume_pos, self.reader.generations)
        emitted = mark(self.last_pos, self.reader.generations) if self.last_pos is not None else None
        if resume is None:
            return
        here = Place(resume, resume_pos, self.last_pos if self.last_pos is not None else -1)
        ready = self.pending.checkpoint(here, emitted, lambda pos: mark(pos, self.reader.generations))
        if ready is None:
            return  # a required output has not written what this run did: the saved checkpoint holds
        checkpoint, saved_resume_pos = ready
        if checkpoint.emitted == emitted:  # where the service is now (not held back for a required output)
            checkpoint = dataclasses.replace(checkpoint, connections=self.connections.to_save(self.reader.generations))
        try:
            ckpt.save(self.state_dir, dataclasses.replace(checkpoint, written_at=time.time()))
            self.counters.checkpoints += 1
            self.last_checkpoint_wall = time.time()
            if saved_resume_pos is not None:
                self._forget_generations(saved_resume_pos)
        except OSError as e:
            self.counters.checkpoint_errors += 1
            log("error", f"cannot write the checkpoint in {self.state_dir}: {e.strerror}; a restart would "
                         "repeat more records")

    def _forget_generations(self, resume_pos: int) -> None:
        """Bound memory: generations before the resume point are needed no more."""
        oldest = resume_pos >> POS_BITS
        gens = self.reader.generations
        for index in [i for i in list(gens) if i < oldest - 1]:
            gen = gens.pop(index, None)
            if gen is not None:
                self.forgotten_bytes += gen.read_offset  # the bytes counter must not go down

    def lag(self) -> tuple[int, float]:
        """(bytes, seconds) behind tcpdump: unread capture on disk, and the age of the last record
        analysed while anything is unread."""
        unread = self.spool.unread_bytes() + sum(len(f[2]) for b in list(self.batches.queue) for f in b.frames)
        behind = unread > 0 and not (self.reader.caught_up and self.batches.empty())
        return unread, (max(time.time() - self.last_ts, 0.0) if behind and self.last_ts else 0.0)

    def _lagging(self) -> bool:
        ring = self.config.spool.ring_bytes or self.spool.ring_bytes()  # 0: unknown, no percentage
        unread, seconds = self.lag()
        if ring and unread > self.config.spool.lag_warn_fraction * ring:
            log("warning", f"{unread:,} bytes of capture unread ({unread / ring:.0%} of tcpdump's ring, "
                           f"{seconds:.0f} s behind): if this reaches 100%, tcpdump overwrites files before "
                           "they are read")
            return True
        return False

    def _making_progress(self, now: float, interval: float) -> bool:
        """The watchdog is fed only while the pipeline moves: batches analysed lately, or nothing
        waiting to be analysed and a live reader."""
        waiting = self.delivery.waiting is not None  # for a required output: a restart would not help
        return (now - self.last_progress < 2 * interval or self.batches.empty() or waiting) and self.reader.is_alive()

    def status_line(self) -> str:
        unread, seconds = self.lag()
        st = self.pipeline.stats()
        sp = self.spool.counters
        c = self.counters
        return (f"records {c.records:,}, lag {unread:,} bytes / {seconds:.1f} s, queue {self.batches.qsize()}/"
                f"{self.batches.maxsize}, files done {sp.done:,}, lost {sp.lost:,} ({sp.lost_bytes:,} bytes), "
                f"unreadable {len(self.spool.unreadable):,} now ({sp.unreadable:,} in all), failed {sp.failed:,}, "
                f"connections {st['connections']['active']:,} (evicted {st['connections']['evicted']:,}), "
                f"gaps {st['tcp']['gaps']:,}, anomalies {sum(st['anomalies'].values()):,}, "
                f"packets failed {st['connections']['internal_errors']:,}, {self.connections.status()}"
                f"{self.delivery.waiting_text()}; outputs: {self.delivery.summary()}")

    def reload(self) -> None:
        """SIGHUP: re-read the config (keep the running one if the new one is invalid) and reopen
        the outputs (logrotate)."""
        self.notifier.reloading("reloading")
        self.counters.reloads += 1
        try:
            new = self.overrides(load_config(self.config_path)) if self.config_path else self.config
        except ConfigError as e:
            self._refuse("; ".join(e.errors) if getattr(e, "errors", None) else str(e))
            return
        for warning in restart_only(self.config, new):
            log("warning", warning)
        self.delivery, opened = reload_outputs(self.delivery, self.config, new, self.metrics, log)
        self.pending.outputs_replaced(set(self.delivery.sinks.values()))
        if not opened:
            self.notifier.ready("reload refused: outputs")
            return
        self.pipeline.flows.max_connections = new.limits.max_connections
        self.pipeline.flows.idle_timeout = new.limits.idle_timeout
        self.spool.gunzip = gunzip_limits(new)  # one attribute: the reader thread takes it at its next .gz
        self._keep_packets(new)
        self.config = new
        log("info", "reloaded the configuration and reopened the outputs")
        self.notifier.ready("reloaded")

    def _keep_packets(self, config: Config) -> None:
        """Connections' packets are kept while, and only while, some rule has a pcap action."""
        lim = config.limits
        wanted = bool(self.delivery.rules.pcaps)
        self.pipeline.keep_packets(lim.pcap_connection_bytes if wanted else None, lim.pcap_total_bytes)
        self.pipeline.keep_bodies(self.delivery.replays.body_keep())  # for replay actions, only then

    def _refuse(self, why: str) -> None:
        self.counters.reload_errors += 1
        log("error", f"reload: the new configuration is not valid, keeping the running one: {why}")
        self.notifier.ready("reload refused: invalid configuration")

    def _update_health(self) -> None:
        """Snapshot the service's health for the Prometheus output (its scrapes read this, not the
        live structures the main loop is changing)."""
        unread, seconds = self.lag()
        sp = self.spool.counters
        age = time.time() - self.last_checkpoint_wall if self.last_checkpoint_wall else None
        self.health = Health.from_pipeline(
            self.pipeline.stats(), files=sp.done, files_lost=sp.lost, lost_bytes=sp.lost_bytes,
            files_unreadable=sp.unreadable, files_unreadable_now=len(self.spool.unreadable), files_failed=sp.failed,
            spool_unlistable=int(self.spool.listing_error is not None),
            bytes=self.forgotten_bytes + sum(g.read_offset for g in list(self.reader.generations.values())),
            lag_bytes=unread, lag_seconds=seconds,
            rule_errors=dict(self.delivery.rules.errors), queue_depth=self.batches.qsize(),
            queue_capacity=self.batches.maxsize, checkpoint_age_seconds=age)

    def _health(self) -> Health:
        return with_known_labels(dataclasses.replace(self.health, outputs=self.delivery.stats(),
                                                     delivery=dataclasses.asdict(self.delivery.counters),
                                                     replay=tuple(self.delivery.replays.families())),
                                 (r.name for r in self.delivery.rules.rules))

