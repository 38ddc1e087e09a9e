"""Where one direction's HTTP parser stands in its stream: the states, and where a head leads, as data.

Apart from parser.py (and recovery.py, its mixin), which make every move between them, as h11's tables
are apart from its moves.
"""

from __future__ import annotations

from enum import IntEnum

from analyzers.http.framing import Framing


class State(IntEnum):
    HEAD = 0  # at or inside a message head
    BODY = 1  # inside a Content-Length body: `remaining` bytes to go
    CHUNK_SIZE = 2  # expecting a chunk-size line
    CHUNK_DATA = 3  # inside a chunk: `remaining` bytes to go
    CHUNK_END = 4  # expecting the CRLF after a chunk's data
    TRAILER = 5  # trailer lines after the last chunk, up to an empty line
    CLOSE_BODY = 6  # a body that runs to the end of the stream
    RESYNC = 7  # looking for the next message start after bytes that did not parse
    TUNNEL = 8  # CONNECT 2xx or 101: the rest is another protocol
    NOT_HTTP = 9  # a client whose first bytes are not HTTP: nothing more is parsed
    DONE = 10  # the stream has ended
    PEEK_STATUS = 11  # answer to a one-line request: a status line, or HTTP/0.9's bare body?
    LATE_HEADERS = 12  # header lines after a one-line request: they belong to it
    CARRY = 13  # inside a CONNECT tunnel: the bytes are handed to the parser of the conversation inside


# Where a complete head leaves the parser, by its body's framing. In the last three the message ends
# with its head: the next head follows, or another protocol, or (a body no one can frame) a resync.
AFTER_HEAD = {Framing.LENGTH: State.BODY, Framing.CHUNKED: State.CHUNK_SIZE, Framing.CLOSE: State.CLOSE_BODY,
              Framing.NONE: State.HEAD, Framing.TUNNEL: State.TUNNEL, Framing.UNKNOWN: State.RESYNC}
ENDS_WITH_HEAD = frozenset({State.HEAD, State.TUNNEL, State.RESYNC, State.CARRY})
