"""Sans-I/O HTTP/1.x message parser for one direction of a connection.

Fed bytes, gaps and end-of-stream in stream order (`data`, `gap`, `eof`); reports message heads,
message ends and anomalies to a `MessageSink` (the conversation that pairs requests with
responses). It keeps no body bytes: bodies are counted. A parser never raises on input: what a
strict server would refuse is a named anomaly, and after a gap or unframeable bytes it looks for
the next message start (resync) and counts what it skipped.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Protocol

from analyzers.http_framing import Framing, body_framing
from analyzers.http_head import (
    RequestHead,
    ResponseHead,
    looks_like_request_line,
    parse_request_head,
    parse_response_head,
)

# A head larger than this is not a web client's (browsers and servers stop at 8-64 KiB).
MAX_HEAD_BYTES = 64 * 1024
# Chunk-size and trailer lines are short; a longer one is garbage or an attack on the parser.
MAX_LINE_BYTES = 8 * 1024
# While resynchronising, keep this much of the unmatched tail so a message start split across
# packets is still found.
RESYNC_KEEP_BYTES = 8 * 1024
# A chunk size with more hex digits than this overflows 64 bits.
MAX_CHUNK_SIZE_DIGITS = 16

_METHODS = (rb"GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE"
            rb"|LOCK|UNLOCK|REPORT|SEARCH|QUERY|PURGE|SUBSCRIBE|NOTIFY|MKCALENDAR|LINK|UNLINK")
_REQUEST_START = re.compile(rb"(?<![A-Za-z])(?:" + _METHODS + rb") [^\s]+ HTTP/\d\.\d\r?\n")
_RESPONSE_START = re.compile(rb"HTTP/\d\.\d \d{3}[ \r\n]")
_VERSIONED_LINE = re.compile(rb"\s+HTTP/\d+\.\d+\s*\Z", re.IGNORECASE)
_TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class State(IntEnum):
    HEAD = 0
    BODY = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_END = 4
    TRAILER = 5
    CLOSE_BODY = 6
    RESYNC = 7
    TUNNEL = 8
    NOT_HTTP = 9
    DONE = 10


class MessageSink(Protocol):
    """What a parser reports to; implemented by the conversation."""

    def on_head(self, parser: MessageParser, head: RequestHead | ResponseHead, first_ts: float,
                ts: float) -> str | None:
        """A head is complete. For a response, return the method of the request it answers."""

    def on_end(self, parser: MessageParser, ts: float) -> None:
        """The current message is complete (or cut short: see `parser.truncated`)."""

    def on_anomaly(self, parser: MessageParser, name: str) -> None:
        """Something a strict peer would reject; counted and attached to the message."""

    def on_gap(self, parser: MessageParser, n: int, ts: float) -> None:
        """`n` bytes of this direction were not captured."""

    def headless_response(self) -> bool:
        """True when the next response answers an HTTP/0.9 request (no status line, body to close)."""


class MessageParser:
    """One direction's message framing. `is_request` chooses the start-line grammar."""

    __slots__ = (
        "body_len",
        "buf",
        "first_ts",
        "gap_in_message",
        "in_message",
        "is_request",
        "last_ts",
        "line_checked",
        "messages",
        "remaining",
        "sink",
        "skipped_bytes",
        "state",
        "truncated",
    )

    def __init__(self, is_request: bool, sink: MessageSink, resync: bool = False) -> None:
        self.is_request = is_request
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

    # Input --------------------------------------------------------------------------------------

    def data(self, data: bytes, ts: float) -> None:
        """Take the next bytes of the stream."""
        if self.state == State.BODY and len(data) < self.remaining:  # the hot path: body bytes
            self.remaining -= len(data)
            self.body_len += len(data)
            self.last_ts = ts
            return
        pos, n = 0, len(data)
        while pos < n:
            st = self.state
            if st == State.BODY or st == State.CHUNK_DATA:
                take = min(self.remaining, n - pos)
                pos += take
                self.remaining -= take
                self.body_len += take
                self.last_ts = ts
                if not self.remaining:
                    if st == State.BODY:
                        self._end(ts)
                    else:
                        self.state = State.CHUNK_END
            elif st == State.HEAD:
                pos = self._head(data, pos, ts)
            elif st == State.CLOSE_BODY:
                self.body_len += n - pos
                self.last_ts = ts
                pos = n
            elif st == State.CHUNK_SIZE or st == State.CHUNK_END or st == State.TRAILER:
                pos = self._line(data, pos, ts)
            elif st == State.RESYNC:
                pos = self._resync(data, pos, ts)
            else:  # TUNNEL, NOT_HTTP, DONE: not ours to parse
                pos = n

    def gap(self, n: int, ts: float) -> None:
        """`n` bytes were lost in capture here. Bodies of known length absorb the gap; otherwise
        the current message is cut short and the parser resynchronises."""
        self.sink.on_gap(self, n, ts)
        st = self.state
        if st in (State.TUNNEL, State.NOT_HTTP, State.DONE):
            return
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
            if st == State.BODY:  # the rest of this body and the start of what followed
                self.remaining = 0
                self._end(ts)
                self._start_resync()
                return
        if self.in_message:
            self.gap_in_message = True
            self.truncated = True
            self._end(ts)
        self._start_resync()

    def eof(self, ts: float) -> None:
        """The stream ended (FIN, RST, eviction or end of capture)."""
        st = self.state
        if st == State.CLOSE_BODY:
            self._end(ts)
        elif st == State.HEAD and self.buf:
            self.sink.on_anomaly(self, "incomplete_head")
        elif st in (State.BODY, State.CHUNK_SIZE, State.CHUNK_DATA, State.CHUNK_END, State.TRAILER):
            self.truncated = st != State.TRAILER
            self._end(ts)
        self.buf = bytearray()
        self.state = State.DONE

    # States -------------------------------------------------------------------------------------

    def _head(self, data: bytes, pos: int, ts: float) -> int:
        buf = self.buf
        n = len(data)
        if not buf:
            while pos < n and data[pos] in b"\r\n":  # empty lines between messages are allowed
                pos += 1
            if pos == n:
                return pos
            if not self.is_request and self.sink.headless_response():
                self._begin(ts)
                self.sink.on_head(self, ResponseHead("0.9", 0, "", {}, ()), ts, ts)
                self.state = State.CLOSE_BODY
                return pos
            if not self._plausible_start(data[pos]):
                return pos
            self._begin(ts)
            end = _head_end(data, pos)
            if end >= 0 and self._start_line_ok(data[pos:data.index(b"\n", pos)]):
                # The usual case: the whole head is in this segment; no copy into the buffer.
                return self._complete_head(data[pos:end], end, ts)
        scan = max(0, len(buf) - 3)
        old = len(buf)
        buf += data[pos:] if pos else data
        if not self.line_checked:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._oversized()
                return n
            self.line_checked = True
            line = bytes(buf[:nl]).rstrip(b"\r")
            if self.is_request and not _VERSIONED_LINE.search(line):
                # HTTP/0.9, or a line no server can read: either way the head is this one line.
                if not looks_like_request_line(line) and self.messages == 0 and _binary(line):
                    return self._not_http(n)
                return self._complete_head(bytes(buf[:nl + 1]), pos + nl + 1 - old, ts)
            if not self.is_request and line[:5].upper() != b"HTTP/":
                self.sink.on_anomaly(self, "bad_status_line")
                self.in_message = False
                self._start_resync()
                self._resync(bytes(buf), 0, ts)
                return n
        end = _head_end(buf, scan)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._oversized()
            return n
        return self._complete_head(bytes(buf[:end]), pos + end - old, ts)

    def _start_line_ok(self, line: bytes) -> bool:
        """Whether a head can take the no-copy path: a versioned request line or a status line."""
        if self.is_request:
            return _VERSIONED_LINE.search(line.rstrip(b"\r")) is not None
        return line[:5].upper() == b"HTTP/"

    def _complete_head(self, head: bytes, consumed: int, ts: float) -> int:
        """Parse a complete head, report it, and set up its body's framing. Returns `consumed`."""
        self.buf = bytearray()
        self.line_checked = False
        self.messages += 1
        if self.is_request:
            parsed: RequestHead | ResponseHead | None = parse_request_head(head)
            method = self.sink.on_head(self, parsed, self.first_ts, ts)  # type: ignore[arg-type]
        else:
            parsed = parse_response_head(head)
            if parsed is None:
                self.sink.on_anomaly(self, "bad_status_line")
                self.in_message = False
                self._start_resync()
                return consumed
            method = self.sink.on_head(self, parsed, self.first_ts, ts)
        framing, length, anomalies = body_framing(parsed, method)  # type: ignore[arg-type]
        for name in anomalies:
            self.sink.on_anomaly(self, name)
        self.last_ts = ts
        if framing == Framing.NONE:
            self._end(ts)
        elif framing == Framing.LENGTH:
            self.state = State.BODY
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
            self._start_resync()
        return consumed

    def _line(self, data: bytes, pos: int, ts: float) -> int:
        """Chunk-size lines, the CRLF after chunk data, and trailer lines."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self.buf += data[pos:]
            if len(self.buf) > MAX_LINE_BYTES:
                self.sink.on_anomaly(self, "oversized_chunk_line")
                self._cut_short(ts)
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

    def _resync(self, data: bytes, pos: int, ts: float) -> int:
        buf = self.buf
        buf += data[pos:] if pos else data
        pattern = _REQUEST_START if self.is_request else _RESPONSE_START
        m = pattern.search(buf)
        if m is None:
            keep = RESYNC_KEEP_BYTES if self.is_request else 16
            if len(buf) > keep:
                self.skipped_bytes += len(buf) - keep
                del buf[:-keep]
            return len(data)
        self.skipped_bytes += m.start()
        rest = bytes(buf[m.start():])
        self.buf = bytearray()
        self.state = State.HEAD
        self.data(rest, ts)
        return len(data)

    # Helpers ------------------------------------------------------------------------------------

    def _begin(self, ts: float) -> None:
        self.in_message = True
        self.first_ts = ts
        self.last_ts = ts
        self.body_len = 0
        self.gap_in_message = False
        self.truncated = False

    def _end(self, ts: float) -> None:
        self.last_ts = ts
        if self.state != State.TUNNEL:
            self.state = State.HEAD
        self.in_message = False
        self.sink.on_end(self, ts)

    def _cut_short(self, ts: float) -> None:
        self.truncated = True
        self._end(ts)
        self._start_resync()

    def _start_resync(self) -> None:
        self.state = State.RESYNC
        self.buf = bytearray()
        self.line_checked = False

    def _oversized(self) -> None:
        self.sink.on_anomaly(self, "oversized_head")
        self.skipped_bytes += len(self.buf)
        self.in_message = False
        self._start_resync()

    def _plausible_start(self, first: int) -> bool:
        """A message starts with a token character (request) or 'H' (status line)."""
        if self.is_request and first in _TOKEN_BYTES:
            return True
        if not self.is_request and first in b"Hh":
            return True
        if self.messages == 0 and self.is_request:
            self._not_http(0)
        else:
            self.sink.on_anomaly(self, "bad_request_line" if self.is_request else "bad_status_line")
            self._start_resync()
        return False

    def _not_http(self, n: int) -> int:
        """The first bytes of a client are not HTTP (TLS, SSH, ...): stop parsing this direction."""
        self.sink.on_anomaly(self, "not_http")
        self.buf = bytearray()
        self.in_message = False
        self.state = State.NOT_HTTP
        return n


def _head_end(buf: bytearray | bytes, scan: int) -> int:
    """Offset just past the blank line ending a head (CRLF or bare LF lines), or -1."""
    crlf = buf.find(b"\n\r\n", scan)
    lf = buf.find(b"\n\n", scan)
    if crlf < 0:
        return lf + 2 if lf >= 0 else -1
    if lf < 0 or crlf < lf:
        return crlf + 3
    return lf + 2


def _binary(line: bytes) -> bool:
    return any(b < 0x20 and b != 0x09 for b in line) or not line.isascii()
