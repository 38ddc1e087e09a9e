"""Which end of a TCP connection: the client (who opened it, who sends requests) or the server.

One word for direction everywhere in the analyzers: a connection's streams and parsers are indexed
by it, a parser knows its side, the conversation files anomalies by it. It lives in its own module
at the top of `analyzers/` because both rooms need it and neither may host it for the other:
`tcp/` must not import `http/`, and `http/` never sees a segment, so it has no business importing
`tcp/` either. This module imports nothing.

The flow table alone knows which side sent the first packet it saw; it translates that to a `Side`
when it opens a connection, so nothing outside it counts directions as 0 and 1.
"""

from __future__ import annotations

from enum import IntEnum


class Side(IntEnum):
    """An `IntEnum` so that a pair indexed by side (`streams[side]`) needs no lookup table.

    On Python 3.11 reading a member off the class (`Side.CLIENT`) costs a tenth of a microsecond:
    per-packet code takes its sides from the flow table's entry instead, and the parser compares
    with module-level names, as it does for its states.
    """

    CLIENT = 0
    SERVER = 1

    @property
    def peer(self) -> Side:
        """The other end."""
        return _PEERS[self]


_PEERS = (Side.SERVER, Side.CLIENT)
