"""Sans-I/O HTTP/1.x message parser for one direction of a connection.

Fed bytes, gaps and end-of-stream in stream order (`data`, `gap`, `eof`); reports message heads,
message ends and anomalies to a `MessageSink` (the conversation that pairs requests with
responses). It keeps no body bytes: bodies are counted. A parser never raises on input: what a
strict server would refuse is a named anomaly, and after a gap or unframeable bytes it looks for
the next message start and counts what it skipped (that recovery is in resync.py).
"""

from __future__ import annotations

from typing import Protocol

from analyzers.http.framing import Framing, cached_body_framing
from analyzers.http.head import (
    MAX_HEAD_BYTES,
    VERSIONED,
    Headers,
    RequestHead,
    ResponseHead,
    head_end,
    is_binary,
    parse_header_block,
    parse_request_head,
    parse_response_head_cached,
    request_line_kind,
)
from analyzers.http.resync import bad_start, junk, oversized, resync, start_resync
from analyzers.http.state import State
from analyzers.side import Side

# Chunk-size and trailer lines are short; a longer one is garbage or an attack on the parser.
MAX_LINE_BYTES = 8 * 1024
# A chunk size with more hex digits than this overflows 64 bits.
MAX_CHUNK_SIZE_DIGITS = 16
_TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HEX = frozenset(b"0123456789abcdefABCDEF")


# The members the per-segment paths compare with, as plain names: looking one up on its enum class
# costs more than the comparison (a tenth of a microsecond per head, in a profile of a busy capture).
_HEAD, _BODY, _CHUNK_DATA, _CHUNK_END, _CLOSE_BODY, _TUNNEL = (
    State.HEAD, State.BODY, State.CHUNK_DATA, State.CHUNK_END, State.CLOSE_BODY, State.TUNNEL)
_NO_BODY, _BY_LENGTH, _CLIENT, _SERVER = Framing.NONE, Framing.LENGTH, Side.CLIENT, Side.SERVER


class MessageSink(Protocol):
    """What a parser reports to; implemented by the conversation."""

    def on_head(self, parser: MessageParser, head: RequestHead | ResponseHead, first_ts: float,
                ts: float) -> str | None:
        """A head is complete. For a response, return the method of the request it answers."""

    def on_begin(self, parser: MessageParser) -> None:
        """The first byte of a message: unfinished work starts here."""

    def on_end(self, parser: MessageParser, ts: float) -> None:
        """The current message is complete (or cut short: see `parser.truncated`)."""

    def on_anomaly(self, parser: MessageParser, name: str) -> None:
        """Something a strict peer would reject; counted and attached to the message."""

    def on_gap(self, parser: MessageParser, n: int, ts: float) -> None:
        """`n` bytes of this direction were not captured where whole messages may have been."""

    def headless_response(self) -> bool:
        """True when the next response answers a one-line (HTTP/0.9) request: it may have no
        status line, its body then running to the close."""

    def on_late_headers(self, parser: MessageParser, headers: Headers, anomalies: tuple[str, ...]) -> None:
        """Header lines followed a one-line request line: they are that request's headers."""


class MessageParser:
    """One side's message framing. `side` chooses the start-line grammar: requests or responses."""

    __slots__ = (
        "body_len",
        "buf",
        "first_ts",
        "gap_in_message",
        "in_message",
        "last_ts",
        "line_checked",
        "messages",
        "one_line",
        "probing",
        "remaining",
        "side",
        "sink",
        "skipped_bytes",
        "state",
        "truncated",
    )

    def __init__(self, side: Side, sink: MessageSink, resync: bool = False) -> None:
        self.side = side
        self.sink = sink
        self.state = State.RESYNC if resync else State.HEAD
        self.buf = bytearray()
        self.remaining = 0
        self.body_len = 0
        self.first_ts = 0.0
        self.last_ts = 0.0
        self.gap_in_message = False  # bytes of the current message were lost
        self.truncated = False  # the current message ended before its framing said
        self.messages = 0  # heads parsed
        self.skipped_bytes = 0  # bytes passed over while resynchronising
        self.line_checked = False
        self.in_message = False
        self.one_line = False  # the last request was a single line: header lines may follow
        self.probing = False  # junk at a client's start: give up as not HTTP past a budget

    # Input --------------------------------------------------------------------------------------

    def data(self, data: bytes, ts: float) -> None:
        """Take the next bytes of the stream."""
        st = self.state
        if st is _BODY and len(data) < self.remaining:  # the hot path: body bytes
            self.remaining -= len(data)
            self.body_len += len(data)
            self.last_ts = ts
            return
        pos, n = 0, len(data)
        if st is _HEAD and not self.buf:
            pos = self._whole_head(data, ts)
        while pos < n:
            st = self.state
            if st is _BODY or st is _CHUNK_DATA:
                take = min(self.remaining, n - pos)
                pos += take
                self.remaining -= take
                self.body_len += take
                self.last_ts = ts
                if not self.remaining:
                    if st is _BODY:
                        self._end(ts)
                    else:
                        self.state = _CHUNK_END
            elif st is _HEAD:
                pos = self._head(data, pos, ts)
            elif st is _CLOSE_BODY:
                self.body_len += n - pos
                self.last_ts = ts
                pos = n
            elif st == State.CHUNK_SIZE or st == State.CHUNK_END or st == State.TRAILER:
                pos = self._line(data, pos, ts)
            elif st == State.RESYNC:
                pos = resync(self, data, pos, ts)
            elif st == State.PEEK_STATUS:
                pos = self._peek_status(data, pos, ts)
            elif st == State.LATE_HEADERS:
                pos = self._late_headers(data, pos, ts)
            else:  # TUNNEL, NOT_HTTP, DONE: not ours to parse
                pos = n

    def gap(self, n: int, ts: float) -> None:
        """`n` bytes were lost in capture here. Bodies of known length absorb the gap; otherwise
        the current message is cut short and the parser resynchronises."""
        st = self.state
        if st in (State.TUNNEL, State.NOT_HTTP, State.DONE):
            return
        if st == State.PEEK_STATUS:
            self._headless(ts)
            st = self.state
        if st == State.CLOSE_BODY:
            self.gap_in_message = True
            self.body_len += n
            return
        if st == State.BODY or st == State.CHUNK_DATA:
            self.gap_in_message = True
            if n <= self.remaining:
                self.remaining -= n
                self.body_len += n
                if not self.remaining:
                    if st == State.BODY:
                        self._end(ts)
                    else:
                        self.state = State.CHUNK_END
                return
            self.body_len += self.remaining
            self.remaining = 0
        if st == State.HEAD and self.in_message:
            self.sink.on_anomaly(self, "head_cut_by_gap")  # that message is lost: say so
        if self.in_message:
            self.gap_in_message = True
            self.truncated = st != State.BODY  # a Content-Length body was complete, gap or not
            self._end(ts)
        # Whole messages may have been lost with these bytes: the pairing must know.
        self.sink.on_gap(self, n, ts)
        start_resync(self)

    def eof(self, ts: float) -> None:
        """The stream ended (FIN, RST, eviction or end of capture)."""
        st = self.state
        if st == State.PEEK_STATUS:
            self._headless(ts)
            self._end(ts)
        elif st == State.CLOSE_BODY:
            self._end(ts)
        elif st == State.HEAD and self.buf:
            self.sink.on_anomaly(self, "incomplete_head")
        elif st in (State.BODY, State.CHUNK_SIZE, State.CHUNK_DATA, State.CHUNK_END, State.TRAILER):
            self.truncated = st != State.TRAILER
            self._end(ts)
        self.buf = bytearray()
        self.state = State.DONE

    # States -------------------------------------------------------------------------------------

    def _whole_head(self, data: bytes, ts: float) -> int:
        """The usual start of a message: a segment that begins with a whole head. Does what `_head`
        does in that case, minus the calls it needs for every other one; returns 0 (nothing
        consumed) when the case is not this one, and `_head` takes it from the start."""
        first = data[0]
        if self.side is _CLIENT:
            if first not in _TOKEN_BYTES or self.one_line:
                return 0
        elif (first != 0x48 and first != 0x68) or self.sink.headless_response():  # "H", "h"
            return 0
        end = head_end(data, 0)
        if end < 0 or end > MAX_HEAD_BYTES:
            return 0
        line = data[:data.index(b"\n")]
        if not self._start_line_ok(line):
            return 0
        self._begin(ts)
        return self._complete_head(data[:end], end, ts)

    def _head(self, data: bytes, pos: int, ts: float) -> int:
        buf = self.buf
        n = len(data)
        if not buf:
            while pos < n and data[pos] in b"\r\n":  # empty lines between messages are allowed
                pos += 1
            if pos == n:
                return pos
            if self.side is _SERVER and self.sink.headless_response():
                self._begin(ts)
                self.state = State.PEEK_STATUS
                return pos
            if self.one_line and self.side is _CLIENT:
                self.state = State.LATE_HEADERS
                return pos
            first = data[pos]
            if not (first in _TOKEN_BYTES if self.side is _CLIENT else first in b"Hh"):
                bad_start(self, first)
                return pos
            self._begin(ts)
            end = head_end(data, pos)
            if end >= 0 and self._start_line_ok(data[pos:data.index(b"\n", pos)]):
                if end - pos > MAX_HEAD_BYTES:
                    return oversized(self, data[pos:], ts)
                # The usual case: the whole head is in this segment; no copy into the buffer.
                return self._complete_head(data[pos:end], end, ts)
        scan = max(0, len(buf) - 3)
        old = len(buf)
        buf += data[pos:] if pos else data
        if not self.line_checked:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    return oversized(self, bytes(buf), ts)
                return n
            self.line_checked = True
            line = bytes(buf[:nl]).rstrip(b"\r")
            if self.side is _CLIENT and request_line_kind(line) != VERSIONED:
                if self.messages == 0 and is_binary(line):
                    return junk(self, bytes(buf), ts)
                # HTTP/0.9, or a line no server can read: either way the head is this one line.
                return self._complete_head(bytes(buf[:nl + 1]), pos + nl + 1 - old, ts)
            if self.side is _SERVER and line[:5].upper() != b"HTTP/":
                self.sink.on_anomaly(self, "bad_status_line")
                return junk(self, bytes(buf), ts)
        end = head_end(buf, scan)
        if end > MAX_HEAD_BYTES or (end < 0 and len(buf) > MAX_HEAD_BYTES):
            return oversized(self, bytes(buf), ts)
        if end < 0:
            return n
        return self._complete_head(bytes(buf[:end]), pos + end - old, ts)

    def _start_line_ok(self, line: bytes) -> bool:
        """Whether a head can take the no-copy path: a versioned request line or a status line."""
        if self.side is _CLIENT:
            return request_line_kind(line.rstrip(b"\r")) == VERSIONED
        return line[:5].upper() == b"HTTP/"

    def _peek_status(self, data: bytes, pos: int, ts: float) -> int:
        """After a one-line request: a reply starting ``HTTP/`` has a head; anything else is an
        HTTP/0.9 body running to the close. Decided on the first five bytes, however they arrive."""
        take = min(5 - len(self.buf), len(data) - pos)
        self.buf += data[pos:pos + take]
        pos += take
        got = bytes(self.buf).upper()
        if got == b"HTTP/":
            self.state = State.HEAD
            self.line_checked = False
        elif not b"HTTP/".startswith(got):
            self._headless(ts)
        return pos

    def _headless(self, ts: float) -> None:
        self.sink.on_head(self, ResponseHead("0.9", 0, "", {}, ()), self.first_ts, ts)
        self.state = State.CLOSE_BODY
        self.body_len = len(self.buf)
        self.buf = bytearray()

    def _late_headers(self, data: bytes, pos: int, ts: float) -> int:
        """After a one-line request: header lines (``Name:``) belong to it; anything else is the
        next request. Decided on the first byte that is not a token character."""
        scan = max(0, len(self.buf) - 3)
        old = len(self.buf)
        self.buf += data[pos:]
        buf = self.buf
        if self.line_checked is False:
            i = 0
            while i < len(buf) and buf[i] in _TOKEN_BYTES:
                i += 1
            if i == len(buf):
                return len(data)  # still a token: header name or method, cannot tell yet
            if buf[i] != 0x3A or i == 0:  # not "Name:": a new message starts here
                self.one_line = False
                rest = bytes(buf)
                self.buf = bytearray()
                self.state = State.HEAD
                self.data(rest, ts)
                return len(data)
            self.line_checked = True
        end = head_end(buf, scan)
        if end > MAX_HEAD_BYTES or (end < 0 and len(buf) > MAX_HEAD_BYTES):
            self.one_line = False
            return oversized(self, bytes(buf), ts) and len(data)
        if end < 0:
            return len(data)
        headers, anomalies = parse_header_block(bytes(buf[:end]))
        self.sink.on_late_headers(self, headers, ("headers_after_short_request_line", *anomalies))
        self.one_line = False
        self.line_checked = False
        self.buf = bytearray()
        self.state = State.HEAD
        return pos + end - old

    def _complete_head(self, head: bytes, consumed: int, ts: float) -> int:
        """Parse a complete head, report it, and set up its body's framing. Returns `consumed`."""
        if self.buf:
            self.buf = bytearray()
        self.line_checked = False
        self.messages += 1
        if self.side is _CLIENT:
            parsed: RequestHead | ResponseHead | None = parse_request_head(head)
            self.one_line = head.count(b"\n") <= 1
            method = self.sink.on_head(self, parsed, self.first_ts, ts)  # type: ignore[arg-type]
        else:
            parsed = parse_response_head_cached(head)
            if parsed is None:
                self.sink.on_anomaly(self, "bad_status_line")
                self.in_message = False
                start_resync(self)
                return consumed
            method = self.sink.on_head(self, parsed, self.first_ts, ts)
        framing, length, anomalies = cached_body_framing(parsed, method)  # type: ignore[arg-type]
        for name in anomalies:
            self.sink.on_anomaly(self, name)
        self.last_ts = ts
        if framing is _NO_BODY:
            self._end(ts)
        elif framing is _BY_LENGTH:
            self.state = _BODY
            self.remaining = length
        elif framing == Framing.CHUNKED:
            self.state = State.CHUNK_SIZE
        elif framing == Framing.CLOSE:
            self.state = State.CLOSE_BODY
        elif framing == Framing.TUNNEL:
            self._end(ts)
            self.state = State.TUNNEL
        else:
            self._end(ts)
            start_resync(self)
        return consumed

    def _line(self, data: bytes, pos: int, ts: float) -> int:
        """Chunk-size lines, the CRLF after chunk data, and trailer lines."""
        nl = data.find(b"\n", pos)
        if (nl < 0 and len(self.buf) + len(data) - pos > MAX_LINE_BYTES) or len(self.buf) + nl - pos > MAX_LINE_BYTES:
            # Like an oversized head: resync resumes after the first MAX_LINE_BYTES of the line.
            rest = (bytes(self.buf) + data[pos:])[MAX_LINE_BYTES:]
            self.sink.on_anomaly(self, "oversized_chunk_line")
            self._cut_short(ts)
            resync(self, rest, 0, ts)
            return len(data)
        if nl < 0:
            self.buf += data[pos:]
            return len(data)
        line = bytes(self.buf) + data[pos:nl] if self.buf else data[pos:nl]
        self.buf = bytearray()
        self.last_ts = ts
        line = line.rstrip(b"\r")
        st = self.state
        if st == State.CHUNK_END:
            if line.strip():
                self.sink.on_anomaly(self, "bad_chunk_terminator")
                self.state = State.CHUNK_SIZE
                self._chunk_size(line, ts)
            else:
                self.state = State.CHUNK_SIZE
        elif st == State.CHUNK_SIZE:
            self._chunk_size(line, ts)
        elif not line:  # TRAILER: an empty line ends the message
            self._end(ts)
        return nl + 1

    def _chunk_size(self, line: bytes, ts: float) -> None:
        text = line.split(b";", 1)[0].strip()
        if not text or not _HEX.issuperset(text):
            self.sink.on_anomaly(self, "bad_chunk_size")
            self._cut_short(ts)
        elif len(text.lstrip(b"0")) > MAX_CHUNK_SIZE_DIGITS or int(text, 16) >= 1 << 63:
            self.sink.on_anomaly(self, "chunk_size_overflow")
            self._cut_short(ts)
        else:
            size = int(text, 16)
            if size:
                self.remaining = size
                self.state = State.CHUNK_DATA
            else:
                self.state = State.TRAILER

    # Helpers ------------------------------------------------------------------------------------

    def _begin(self, ts: float) -> None:
        self.sink.on_begin(self)
        self.in_message = True
        self.first_ts = ts
        self.last_ts = ts
        self.body_len = 0
        self.gap_in_message = False
        self.truncated = False

    def _end(self, ts: float) -> None:
        self.last_ts = ts
        if self.state is not _TUNNEL:
            self.state = _HEAD
        self.in_message = False
        self.sink.on_end(self, ts)

    def _cut_short(self, ts: float) -> None:
        self.truncated = True
        self._end(ts)
        start_resync(self)
