"""What one packet's exception costs: its connection, never the analyzer.

A bug met on some input (an exception while analysing one packet) must not stop the analysis, nor,
in the service, turn every restart into a replay up to the same packet. The pipeline catches it
around its per-packet loops (free in CPython 3.11 while nothing raises) and resumes with the next
packet; here the packet is counted, its connection closed with reason `internal_error` (what it
had finished is kept), and the error noted with the packet's input position for the caller, who
says it with the file and offset. Pure, as the rest of `analyzers`: nothing is logged here.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzers.flows import FlowTable
from analyzers.tcp.frames import FrameDecoder


@dataclass(frozen=True, slots=True)
class AnalysisError:
    """The analysis of one packet raised; its connection was closed (reason `internal_error`)."""

    pos: int  # the packet's input position (see Cursor)
    error: str  # the exception, as `Type: message`


class Faults:
    def __init__(self) -> None:
        self.errors: list[AnalysisError] = []  # since `take`
        self._keys = FrameDecoder(reassemble=False)  # finds a failed packet's connection, counting nothing

    def failed(self, flows: FlowTable, e: Exception, pos: int, linktype: int, frame: bytes) -> None:
        """The packet at `pos` raised `e`: close its connection (found by decoding the frame again,
        with a decoder that keeps no state) and note the error."""
        flows.cursor.pos = pos
        try:
            d = self._keys.link_decoder(linktype)(frame)
        except Exception:
            d = None
        flows.counters.internal_errors += 1
        entry = flows.table.get((d[0], d[2], d[1], d[3])) if d is not None else None
        if entry is not None:
            flows.end(entry[0], "internal_error")  # what it had finished is kept
        self.errors.append(AnalysisError(pos, f"{type(e).__name__}: {e}"))

    def take(self) -> list[AnalysisError]:
        errors, self.errors = self.errors, []
        return errors
