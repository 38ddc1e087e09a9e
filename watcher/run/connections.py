"""Open connections across a restart: their identities between the pipeline and the checkpoint.

A connection that goes on across a restart keeps its uid, its trans_depth and its flags
(analyzers.identities): each checkpoint saves the open connections' identities, and the next start
gives them back to the pipeline. One whose message had begun continues at the packet that began
it, named in the checkpoint by a mark ([fingerprint, offset]: generation indexes start over in each
run); once this run reads that generation, the mark becomes this run's position.
"""

from __future__ import annotations

from collections.abc import Mapping

from analyzers import START_UNKNOWN, Identity, Pipeline
from watcher.capture.spool import Generation
from watcher.run.checkpoint import MAX_CONNECTIONS, Connection
from watcher.run.resume import POS_BITS, mark


class Connections:
    def __init__(self, pipeline: Pipeline, saved: tuple[Connection, ...] = ()) -> None:
        """`saved`: the connections the last checkpoint saved, given back to the pipeline."""
        self.pipeline = pipeline
        # Restored connections waiting for their packet: by generation fingerprint, (offset, uid).
        self.starts: dict[str, list[tuple[int, str]]] = {}
        self.saved = 0  # in the last checkpoint
        self.not_saved = 0  # left out of checkpoints past MAX_CONNECTIONS (or their file forgotten), in all
        self.restore(saved)

    def restore(self, saved: tuple[Connection, ...]) -> None:
        """Give the pipeline the connections a checkpoint saved."""
        idents = []
        for c in saved:
            start = c[-1]
            if start is not None:
                self.starts.setdefault(start[0], []).append((start[1], c[4]))
            idents.append(Identity._make((*c[:-1], None if start is None else START_UNKNOWN)))
        if idents:
            self.pipeline.restore_identities(idents)

    def reading(self, gen: int, generations: Mapping[int, Generation]) -> None:
        """Before generation `gen`'s frames are analysed: the connections that continue in it."""
        if not self.starts:
            return
        g = generations.get(gen)
        for offset, uid in self.starts.pop(g.fp, []) if g is not None else []:
            self.pipeline.identity_start(uid, (gen << POS_BITS) | offset)

    def to_save(self, generations: Mapping[int, Generation]) -> tuple[Connection, ...]:
        """The open connections' identities, for a checkpoint of where the service is now."""
        idents, left_out = self.pipeline.identities(MAX_CONNECTIONS)
        saved: list[Connection] = []
        for ident in idents:
            start: tuple[str, int] | None = None
            if ident.start == START_UNKNOWN:  # restored, its file not reached yet: as it was saved
                start = self._waiting(ident.uid)
            elif ident.start is not None:
                m = mark(ident.start, generations)
                if m is None:
                    left_out += 1
                    continue
                start = (m.fp, m.offset)
            saved.append((*ident[:-1], start))
        self.saved = len(saved)
        self.not_saved += left_out
        return tuple(saved)

    def status(self) -> str:
        return f"connections saved {self.saved:,} (not saved {self.not_saved:,})"

    def _waiting(self, uid: str) -> tuple[str, int] | None:
        for fp, starts in self.starts.items():
            for offset, u in starts:
                if u == uid:
                    return fp, offset
        return None
