"""Checkpoints held back until every `required: true` output has written what they claim.

At each checkpoint the service makes a candidate: the marks it would save (watcher/run/checkpoint.py)
and, for each required output, how many records it had been given by then. A candidate is saved once
each of those outputs has acknowledged that many (`Sink.acked`: written, or refused for good, in the
order given), so the saved `emitted` mark never passes a record a required output has not written,
and a restart writes it then. Without required outputs a candidate is ready at once: the checkpoint
is what it always was (a non-required output that cannot keep up drops, counted).

Candidates wait in order. One owing the same counts as the one before it replaces it (both become
ready at the same moment), so while a required output is down the queue grows only with what it
is given, which its buffer bounds (the service stops feeding a full required output).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass

from watcher.run.checkpoint import Checkpoint
from watcher.sinks.base import Sink


@dataclass(frozen=True)
class Candidate:
    checkpoint: Checkpoint
    resume_pos: int  # the resume mark as this run's position (generations before it can be forgotten)
    owed: tuple[tuple[Sink, int], ...]  # each required output, and the records it must have acknowledged


class Pending:
    def __init__(self) -> None:
        self._queue: collections.deque[Candidate] = collections.deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, candidate: Candidate) -> None:
        if self._queue and self._queue[-1].owed == candidate.owed:
            self._queue[-1] = candidate
        else:
            self._queue.append(candidate)

    def ready(self) -> Candidate | None:
        """The newest candidate every required output has acknowledged (those before it are done
        with), or None when the oldest still waits."""
        best = None
        while self._queue and all(sink.acked() >= n for sink, n in self._queue[0].owed):
            best = self._queue.popleft()
        return best

    def outputs_replaced(self, kept: set[Sink]) -> None:
        """A reload closed some outputs: they owe nothing more (what they could not write at close
        was dropped, counted and logged by the sink)."""
        self._queue = collections.deque(
            dataclasses.replace(c, owed=tuple((s, n) for s, n in c.owed if s in kept)) for c in self._queue)
