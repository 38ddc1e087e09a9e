"""The checkpoint held back until every `required: true` output has written what it claims.

Without required outputs the checkpoint is what it always was: where the service is (a
non-required output that cannot keep up drops, counted). With them, each transaction delivered is
noted with where it was completed (`done_pos`) and how many records each required output had been
given by then; an output acknowledges records in the order given (`Sink.acked`: written, or
refused for good). The first transaction some required output has not acknowledged, U, bounds
what may be saved:
- `emitted` stops just before U's position, so a restart suppresses only what was written;
- `resume` is one taken at an earlier checkpoint, before U was completed (then U and everything
  after it were unfinished or not begun, so a replay from there rebuilds them), or the last one
  saved, or (on a first start) the first record this run read.

The notes cost a tuple per transaction, only with required outputs; each checkpoint lets go of
those acknowledged, so they are at most a checkpoint interval's transactions plus what the required
outputs hold (which their buffers bound: the service stops feeding a full required output).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from watcher.run.checkpoint import Checkpoint, Mark
from watcher.sinks.base import Sink

Owed = tuple[tuple[Sink, int], ...]  # each required output, and the records it had been given


@dataclass(frozen=True)
class Place:
    """Where a checkpoint taken now would resume (as a mark and as this run's position), and the
    position of the last record analysed by then."""

    resume: Mark
    resume_pos: int | None  # None: the previous run's (its generations are not this run's)
    last_pos: int


class Pending:
    def __init__(self, saved_resume: Mark | None) -> None:
        self._notes: collections.deque[tuple[int, Owed]] = collections.deque()  # (done_pos, owed)
        self._places: collections.deque[Place] = collections.deque()
        self._saved = Place(saved_resume, None, -1) if saved_resume is not None else None

    def __len__(self) -> int:
        return len(self._notes)

    def start_at(self, first: Place) -> None:
        """The first record this run analyses: where a first start resumes until a checkpoint is saved."""
        if self._saved is None:
            self._saved = first

    def delivered(self, done_pos: int, owed: Owed) -> None:
        """A transaction went to the outputs; `owed`: the required outputs' counts after it."""
        if owed:
            self._notes.append((done_pos, owed))

    def checkpoint(self, here: Place, emitted: Mark | None,
                   mark_of: Callable[[int], Mark | None]) -> tuple[Checkpoint, int | None] | None:
        """The checkpoint to save now and its resume position (None: not this run's), or None to
        keep the saved one."""
        notes = self._notes
        while notes and all(sink.acked() >= n for sink, n in notes[0][1]):
            notes.popleft()
        if not notes:  # every required output has written everything: where the service is
            self._places.clear()
            self._saved = here
            return Checkpoint(here.resume, emitted, 0.0), here.resume_pos
        first = min(pos for pos, _ in notes)  # done positions grow in delivery order; min() does not rely on it
        places = self._places
        if not places or places[-1].last_pos != here.last_pos:
            places.append(here)  # usable once the first unacknowledged is one completed after it
        else:
            places[-1] = here
        while len(places) > 1 and places[1].last_pos < first:
            places.popleft()
        if places and places[0].last_pos < first:
            self._saved = places.popleft()
        held = mark_of(first - 1)
        if self._saved is None or held is None:
            return None
        return Checkpoint(self._saved.resume, held, 0.0), self._saved.resume_pos

    def outputs_replaced(self, kept: set[Sink]) -> None:
        """A reload closed some outputs: they owe nothing more (what they could not write at close
        was dropped, counted and logged by the sink)."""
        self._notes = collections.deque((pos, tuple((s, n) for s, n in owed if s in kept))
                                        for pos, owed in self._notes)
