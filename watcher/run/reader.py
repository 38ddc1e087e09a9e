"""The reader thread: spool generations in order, tailed, into a bounded queue of frame batches.

It alone touches the spool: scans (on inotify hints, and on a timer, since hints can be lost),
opens the oldest unfinished generation, reads what is there, and waits when it has caught up with
tcpdump. When the queue is full it blocks: the analyzer sets the pace, memory stays bounded, and
the unread data waits on disk (the lag metric tells how much).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from dataclasses import dataclass
from typing import Any

from watcher.capture.pcapfile import CaptureError, Frame
from watcher.capture.spool import Generation, Spool, State
from watcher.capture.tail import GenerationReader, Rewritten
from watcher.run.checkpoint import Mark

# After tcpdump moved to the next file, a record still incomplete at the end of the previous one
# gets this long to be completed (tcpdump flushes and closes the file as it rotates).
ROTATION_GRACE_SECONDS = 1.0
# While tailing, how long to sleep between looks when inotify is unavailable.
POLL_SECONDS = 0.2
# A capture file that vanished may reappear compressed (tcpdump -z gzip): how long to wait for it.
GZIP_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Batch:
    gen: int  # generation index (see Reader.generations)
    linktype: int
    frames: list[Frame]
    end: int  # content offset just past the last frame: where reading would continue


class Reader(threading.Thread):
    """Produces `Batch`es; `generations` maps a batch's `gen` index to its Generation."""

    def __init__(self, spool: Spool, batches: queue.Queue[Batch], wake_fd: int, rescan_seconds: float,
                 resume: Mark | None, log: Any, watcher: Any = None) -> None:
        super().__init__(name="pcapwatch-reader", daemon=True)
        self.spool = spool
        self.batches = batches
        self.wake_fd = wake_fd
        self.rescan_seconds = rescan_seconds
        self.resume = resume
        self.log = log
        self.watcher = watcher
        self.generations: dict[int, Generation] = {}
        self.next_index = 0
        self.stop_r, self.stop_w = os.pipe()
        self.stopping = False
        self.caught_up = False  # nothing unread on disk right now
        self.error: BaseException | None = None
        self.last_scan = 0.0
        self.scan_failing = False  # said once until a scan succeeds

    def stop(self) -> None:
        self.stopping = True
        os.write(self.stop_w, b"x")

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the service, which stops
            self.error = e
            self.log("error", f"reader thread failed: {e!r}")
            os.write(self.wake_fd, b"!")

    def _run(self) -> None:
        self._scan()
        start = self._apply_resume()
        reader: GenerationReader | None = None
        grace_until = 0.0
        while not self.stopping:
            gen = self.spool.next_unfinished()
            if gen is None:
                self.caught_up = True
                self._wait()
                continue
            if reader is None or reader.gen is not gen:
                if reader is not None:
                    reader.close()
                reader = self._open(gen, start.pop(gen.fp, gen.read_offset))
                if reader is None:
                    continue
            try:
                for link, frames in reader.read():
                    gen.read_offset = reader.offset
                    self._put(Batch(gen.index, link, frames, reader.offset))
                    if self.stopping:
                        return
                gen.read_offset = reader.offset
                gen.size = max(gen.size, reader.size())
            except Rewritten:
                self._scan()  # the ring's current sizes make the estimate of what was lost
                self.spool.lose(gen, max(gen.size, reader.offset), "rewritten by tcpdump's ring while being read")
                reader.close()
                reader = None
                continue
            except CaptureError as e:
                self.log("error", f"{gen.path}: {e}; the rest of this file is skipped")
                self.spool.counters.failed += 1
                self.spool.done(gen)
                reader.close()
                reader = None
                continue
            except PermissionError as e:  # a .gz is opened anew to be read: its permissions changed
                self.spool.cannot_read(gen, e)
                reader.close()
                reader = None
                continue
            except OSError as e:
                self.spool.lose(gen, gen.size, f"cannot be read ({e.strerror})")
                reader.close()
                reader = None
                continue
            except Exception as e:  # a bug met on this file: it costs this file, never the thread
                self._failed(gen, e)
                with contextlib.suppress(Exception):
                    reader.close()
                reader = None
                continue
            self._rescan_if_due()
            if self.spool.has_newer(gen) or (gen.compressed and gen.state == State.READING):
                if not gen.compressed and reader.size() > reader.offset + len(reader.pending):
                    continue  # tcpdump wrote more since read() met the end: read it before calling it done
                now = time.monotonic()
                if reader.pending and not gen.compressed:
                    if not grace_until:
                        grace_until = now + ROTATION_GRACE_SECONDS
                    if now < grace_until:
                        self._wait(min(POLL_SECONDS, grace_until - now))
                        continue
                    self.log("warning", f"{gen.path}: the last record is cut short ({len(reader.pending)} bytes); "
                                        "tcpdump was stopped while writing it")
                grace_until = 0.0
                self.spool.done(gen)
                reader.close()
                reader = None
                continue
            self.caught_up = True
            self._wait()
        if reader is not None:
            reader.close()

    def _open(self, gen: Generation, start: int) -> GenerationReader | None:
        try:
            reader = GenerationReader(gen, start, self.spool.gunzip)
        except FileNotFoundError:
            # tcpdump -z: gzip deletes the plain file once its .gz is written; the .gz becomes
            # this generation's file when the next scan finds it settled. Wait for that a while.
            now = time.monotonic()
            if not gen.missing_since:
                gen.missing_since = now
            if now - gen.missing_since < GZIP_WAIT_SECONDS:
                self._wait(POLL_SECONDS)
                self._scan()
                return None
            self.spool.lose(gen, gen.size, "deleted before it was read")
            return None
        except PermissionError as e:
            # Its permissions changed since the scan read its start: passed over until a scan
            # finds it readable again (then read), or it is gone (then counted lost).
            self.spool.cannot_read(gen, e)
            return None
        except OSError as e:
            self.spool.lose(gen, gen.size, f"cannot be opened ({e.strerror})")
            return None
        except CaptureError as e:  # resuming mid-file: its header does not parse any more
            self.log("error", f"{gen.path}: {e}; the rest of this file is skipped")
            self.spool.counters.failed += 1
            self.spool.done(gen)
            return None
        except Exception as e:  # a bug met on this file: it costs this file, never the thread
            self._failed(gen, e)
            return None
        gen.state = State.READING
        gen.index = self.next_index
        gen.read_offset = start
        self.generations[gen.index] = gen
        self.next_index += 1
        return reader

    def _failed(self, gen: Generation, e: Exception) -> None:
        """An unexpected error reading `gen`: the rest of it is skipped, named and counted."""
        self.log("error", f"{gen.path}: reading this file failed ({type(e).__name__}: {e}); the rest of this file "
                          "is skipped and pcapwatch goes on with the next; this is a bug in pcapwatch: please "
                          "report it with this file")
        self.spool.counters.failed += 1
        self.spool.done(gen)

    def _apply_resume(self) -> dict[str, int]:
        """Skip what a previous run finished; returns {fingerprint: offset} to start at."""
        mark = self.resume
        if mark is None:
            return {}
        self.spool.skip_before(mark.first_ts)
        if mark.fp in self.spool.generations:
            return {mark.fp: mark.offset}
        self.log("error", f"the capture file the last run stopped in ({mark.name or mark.fp}) was overwritten "
                          "while pcapwatch was not running: its unread part is lost; going on with the next")
        self.spool.counters.lost += 1
        for gen in self.spool.generations.values():
            if gen.first_ts <= mark.first_ts and gen.state == State.PENDING:
                gen.state = State.DONE
        return {}

    def _put(self, batch: Batch) -> None:
        self.caught_up = False
        while not self.stopping:
            try:
                self.batches.put(batch, timeout=0.5)
            except queue.Full:
                continue
            with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
                os.write(self.wake_fd, b".")
            return

    def _wait(self, timeout: float | None = None) -> None:
        """Sleep until inotify says something changed, the rescan timer fires, or stop."""
        if timeout is None:
            timeout = self.rescan_seconds if self.watcher is not None else POLL_SECONDS
        fds = [self.stop_r] + ([self.watcher.fileno()] if self.watcher is not None and self.watcher.present else [])
        readable, _, _ = select.select(fds, [], [], timeout)
        if self.watcher is not None:
            hints = self.watcher.read() if self.watcher.fileno() in readable else []
            hints += self.watcher.poll_dir()
            if hints:
                self._scan()
        self._rescan_if_due()

    def _rescan_if_due(self) -> None:
        if time.monotonic() - self.last_scan >= self.rescan_seconds:
            self._scan()

    def _scan(self) -> None:
        self.last_scan = time.monotonic()
        try:
            self.spool.scan(time.time())
        except Exception as e:  # a bug met on some file in the spool: the next scan tries again
            if not self.scan_failing:
                self.log("error", f"scanning {self.spool.directory} failed ({type(e).__name__}: {e}); trying "
                                  "again at each scan; this is a bug in pcapwatch: please report it")
            self.scan_failing = True
            return
        if self.scan_failing:
            self.log("info", f"scanning {self.spool.directory} works again")
            self.scan_failing = False
        for note in self.spool.notes:
            level, _, text = note.partition(": ")
            self.log(level, text)
        self.spool.notes.clear()
        self.spool.forget_old()
