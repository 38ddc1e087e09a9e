"""Input positions, and what makes a restart exactly-once: marks, replay suppression, event ids.

A position is a generation index (the order this run read the capture files in) shifted left by
POS_BITS, plus a content offset in that file. Checkpoints store positions as marks (a file's content
fingerprint and an offset), since generation indexes start over in every run. After a restart,
transactions completed at or before the saved `emitted` mark were written by the previous run and
are suppressed; `event_id` derives from where a transaction's request head is in the input, so a
record written again after kill -9 carries the same id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from analyzers import Transaction
from watcher.capture.spool import Generation
from watcher.run.checkpoint import Mark

POS_BITS = 40  # a position is generation index << 40 | content offset (files up to 1 TB)
POS_MASK = (1 << POS_BITS) - 1


def event_id(fp: str, offset: int, index: int) -> str:
    """Stable id of a transaction: where its request head was completed in the input."""
    return hashlib.blake2b(f"{fp}:{offset}:{index}".encode(), digest_size=10).hexdigest()


def mark(pos: int, generations: Mapping[int, Generation]) -> Mark | None:
    """A position as a mark that survives the run (None if its generation is forgotten)."""
    g = generations.get(pos >> POS_BITS)
    return Mark(g.fp, g.first_ts, pos & POS_MASK, g.name) if g else None


def place(pos: int, generations: Mapping[int, Generation]) -> tuple[str, int]:
    """(capture file, offset) of a position, for messages."""
    g = generations.get(pos >> POS_BITS)
    return g.path if g is not None else "(a capture file no longer tracked)", pos & POS_MASK


def record_origin(tx: Transaction, generations: Mapping[int, Generation]) -> tuple[str | None, str | None]:
    """(event_id, capture file name) of a transaction, from its request head's position."""
    msg = tx.request if tx.request is not None else tx.response
    assert msg is not None
    g = generations.get(msg.pos >> POS_BITS)
    if g is None:
        return None, None
    return event_id(g.fp, msg.pos & POS_MASK, msg.pos_index), g.name


class Replay:
    """Decides which transactions a restarted run already wrote (those done at or before `emitted`)."""

    def __init__(self, emitted: Mark | None) -> None:
        self.emitted = emitted
        self.emitted_pos: int | None = None  # `emitted` in this run's positions, once known

    def suppressed(self, gen: int, tx: Transaction, generations: Mapping[int, Generation]) -> bool:
        mark_ = self.emitted
        if mark_ is None:
            return False
        if self.emitted_pos is None:
            g = generations[gen]
            if g.fp == mark_.fp:
                self.emitted_pos = (gen << POS_BITS) | mark_.offset
            elif g.first_ts > mark_.first_ts:
                self.emitted_pos = (gen << POS_BITS) - 1  # its generation is gone: all is newer
            else:
                return True  # still in a generation before it
        if tx.done_pos <= self.emitted_pos:
            return True
        if tx.done_pos >> POS_BITS > self.emitted_pos >> POS_BITS:
            self.emitted = None  # past it for good
        return False
