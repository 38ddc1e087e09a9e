"""Sans-I/O HTTP/1.x message parser for one direction of a connection.

Fed bytes, gaps and end-of-stream in stream order (`data`, `gap`, `eof`); reports message heads,
message ends and anomalies to a `MessageSink` (sink.py: the conversation that pairs requests with
responses). Bodies are counted, not kept (unless the sink asks: body_keep.py). It never raises on input: what a strict
server would refuse is a named anomaly, and after a gap or unframeable bytes it looks for the next
message start and counts what it skipped. Every change of its state is made by its own methods (as
in h11's `_state.py`): here, and for input that did not parse in recovery.py, its mixin; the pure
questions it asks of the bytes are answered in head.py, framing.py (bodies, chunk lines) and
resync.py (where the next message starts). The promise its calls to
the sink keep (every message that starts ends once) is written down in sink.py.
"""

from __future__ import annotations

from analyzers.http.anomalies import Anomaly
from analyzers.http.body_keep import KeptBody
from analyzers.http.framing import MAX_LINE_BYTES, cached_body_framing, chunk_size, chunk_size_oddity
from analyzers.http.head import (
    MAX_HEAD_BYTES,
    TOKEN_BYTES,
    RequestHead,
    ResponseHead,
    can_start,
    head_end,
    header_line_ahead,
    is_binary,
    parse_header_block,
    parse_request_head,
    parse_response_head_cached,
    start_line_ok,
    status_line_ok,
)
from analyzers.http.recovery import Recovery
from analyzers.http.resync import (
    HTTP2_PREFACE,
    NotHttp,
)
from analyzers.http.sink import MessageSink
from analyzers.http.state import AFTER_HEAD, ENDS_WITH_HEAD, State
from analyzers.side import Side

# The members the per-segment paths compare with, as plain names: looking one up on its enum class
# costs more than the comparison (a tenth of a microsecond per head, in a profile of a busy capture).
_HEAD, _BODY, _CHUNK_DATA, _CHUNK_END, _CLOSE_BODY, _TUNNEL = (
    State.HEAD, State.BODY, State.CHUNK_DATA, State.CHUNK_END, State.CLOSE_BODY, State.TUNNEL)
_CLIENT, _SERVER = Side.CLIENT, Side.SERVER
_BARE_LF = Anomaly.BARE_LF


class MessageParser(Recovery):
    """One side's message framing. `side` chooses the start-line grammar: requests or responses."""

    __slots__ = ("body_len", "buf", "first_ts", "gap_in_message", "in_message", "inner", "keep", "last_ts",
                 "lf_named", "line_checked", "messages", "not_http_kind", "one_line", "probing", "remaining", "side",
                 "sink", "skipped_bytes", "state", "truncated")

    def __init__(self, side: Side, sink: MessageSink[MessageParser], resync: bool = False) -> None:
        self.side = side
        self.sink = sink
        self.state = State.RESYNC if resync else State.HEAD
        self.buf = bytearray()
        self.remaining = self.body_len = 0  # bytes of the body (or chunk) to come; of the message so far
        self.first_ts = self.last_ts = 0.0  # the current message's first and latest bytes
        self.gap_in_message = False  # bytes of the current message were lost
        self.truncated = False  # the current message ended before its framing said
        self.lf_named = False  # the current message's bare LF line ends have been named
        self.messages = 0  # heads parsed
        self.skipped_bytes = 0  # bytes passed over while resynchronising
        self.line_checked = False  # the buffered head's first line has been looked at
        self.in_message = False  # a message has begun and not ended
        self.one_line = False  # the last request was a single line: header lines may follow
        self.probing = False  # junk at a client's start: give up as not HTTP past a budget
        self.not_http_kind = NotHttp.OTHER  # what the client spoke instead, once it is NOT_HTTP
        self.inner: MessageParser | None = None  # CARRY: the parser the tunnel's bytes go to
        self.keep: KeptBody | None = None  # the current body's bytes, when asked for (body_keep.py)

    # Input --------------------------------------------------------------------------------------

    def data(self, data: bytes, ts: float) -> None:
        """Take the next bytes of the stream."""
        st = self.state
        if st is _BODY and len(data) < self.remaining and self.keep is None:  # the hot path: body bytes
            self.remaining -= len(data)
            self.body_len += len(data)
            self.last_ts = ts
            return
        pos, n = 0, len(data)
        if st is _HEAD and not self.buf:
            pos = self._whole_head(data, ts)
        while pos < n:
            st = self.state
            if self.keep is not None and (st is _BODY or st is _CHUNK_DATA or st is _CLOSE_BODY):
                self.keep.add(data[pos:n if st is _CLOSE_BODY else pos + self.remaining])  # body_keep.py
            if st is _BODY or st is _CHUNK_DATA:
                take = min(self.remaining, n - pos)
                pos += take
                self.last_ts = ts
                self._count(take, ts)
            elif st is _HEAD:
                pos = self._head(data, pos, ts)
            elif st is _CLOSE_BODY:
                self.body_len += n - pos
                self.last_ts = ts
                pos = n
            elif st == State.CHUNK_SIZE or st == State.CHUNK_END or st == State.TRAILER:
                pos = self._line(data, pos, ts)
            elif st == State.RESYNC:
                pos = self._resync(data, pos, ts)
            elif st == State.PEEK_STATUS:
                pos = self._peek_status(data, pos, ts)
            elif st == State.LATE_HEADERS:
                pos = self._late_headers(data, pos, ts)
            elif st == State.CARRY:
                pos = self._carry(data, pos, ts)
            else:  # TUNNEL, NOT_HTTP, DONE: not ours to parse
                pos = n

    def gap(self, n: int, ts: float) -> None:
        """`n` bytes were lost in capture here. Bodies of known length absorb the gap; otherwise
        the current message is cut short and the parser resynchronises."""
        st = self.state
        if st in (State.TUNNEL, State.NOT_HTTP, State.DONE):
            return
        if st == State.CARRY:
            self.inner.gap(n, ts)  # type: ignore[union-attr]  # set with CARRY
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
                self._count(n, ts)
                return
            self.body_len += self.remaining
            self.remaining = 0
        if st == State.HEAD and self.in_message:
            self.sink.on_anomaly(self, Anomaly.HEAD_CUT_BY_GAP)  # that message is lost: say so
        if self.in_message:
            self.gap_in_message = True
            self.truncated = st != State.BODY  # a Content-Length body was complete, gap or not
            self._end(ts)
        # Whole messages may have been lost with these bytes: the pairing must know.
        self.sink.on_gap(self, n, ts)
        self._start_resync()

    def eof(self, ts: float) -> None:
        """The stream ended (FIN, RST, eviction or end of capture)."""
        st = self.state
        if st == State.CARRY:
            self.inner.eof(ts)  # type: ignore[union-attr]  # set with CARRY
        elif st == State.PEEK_STATUS:
            self._headless(ts)
            self._end(ts)
        elif st == State.CLOSE_BODY:
            self._end(ts)
        elif st == State.HEAD and self.buf:
            self._partial_head(ts)
        elif st in (State.BODY, State.CHUNK_SIZE, State.CHUNK_DATA, State.CHUNK_END, State.TRAILER):
            self.truncated = st != State.TRAILER
            self._end(ts)
        self.buf = bytearray()
        self.state = State.DONE

    def carry(self, inner: MessageParser) -> None:
        """A CONNECT tunnel opened: the rest of this stream goes to `inner`, the parser of the
        conversation inside it (on the side whose head opened it, from `_complete_head`)."""
        self.inner = inner
        st = self.state
        if st in (State.TUNNEL, State.NOT_HTTP, State.DONE):
            return
        if self.in_message and st is not _HEAD:  # a message sent after the CONNECT: cut by the switch
            self.truncated = True
            self._end(self.last_ts)
        pending = bytes(self.buf) if st in (_HEAD, State.RESYNC, State.LATE_HEADERS) else b""
        self.buf = bytearray()
        self.in_message = self.line_checked = self.one_line = False
        self.state = State.CARRY
        if pending:  # bytes the client sent into the tunnel before the 2xx was seen
            inner.data(pending, self.last_ts)

    def _carry(self, data: bytes, pos: int, ts: float) -> int:
        inner = self.inner
        assert inner is not None
        inner.data(data[pos:] if pos else data, ts)
        if inner.state in (State.TUNNEL, State.NOT_HTTP):
            self.state = _TUNNEL  # nothing more for the inner parser: bytes are dropped from here
        return len(data)

    def tunnel(self) -> None:
        """The other side switched protocols (CONNECT 2xx, 101): the rest of this stream is not HTTP.
        A message still open here gets no `on_end` (the sink, which calls this, knows it)."""
        self.state = State.TUNNEL

    # States -------------------------------------------------------------------------------------

    def _whole_head(self, data: bytes, ts: float) -> int:
        """The usual start of a message, a segment that begins with a whole head: `_head`'s work minus
        the calls other cases need. Returns 0 (nothing consumed) in any other case, for `_head`."""
        first = data[0]
        if self.side is _CLIENT:
            if first not in TOKEN_BYTES or self.one_line:
                return 0
            end = head_end(data, 0)
            if end < 0 or end > MAX_HEAD_BYTES or not start_line_ok(data[:data.index(b"\n")], _CLIENT):
                return 0
            self._begin(ts)
            return self._complete_head(data[:end], end, ts)
        if (first != 0x48 and first != 0x68) or self.sink.headless_response():  # "H", "h"
            return 0
        end = head_end(data, 0)
        if end < 0 or end > MAX_HEAD_BYTES:
            return 0
        # The head parsed (and remembered) now: None is a first line that is no status line, the
        # question `start_line_ok` would ask of it, so the status line is matched once, not twice.
        head = data[:end]
        response = parse_response_head_cached(head)
        if response is None:
            return 0
        self._begin(ts)
        return self._complete_head(head, end, ts, response)

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
            if not can_start(first, self.side):
                self._bad_start(first)
                return pos
            self._begin(ts)
            end = head_end(data, pos)
            if end >= 0 and start_line_ok(data[pos:data.index(b"\n", pos)], self.side):
                if end - pos > MAX_HEAD_BYTES:
                    return self._oversized(data[pos:], ts)
                # The usual case: the whole head is in this segment; no copy into the buffer.
                return self._complete_head(data[pos:end], end, ts)
        scan, old = max(0, len(buf) - 3), len(buf)  # a head's end may straddle the old and new bytes
        buf += data[pos:] if pos else data
        self.last_ts = ts
        if not self.line_checked:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    return self._oversized(bytes(buf), ts)
                return n
            self.line_checked = True
            line = bytes(buf[:nl])
            if self.side is _CLIENT and not start_line_ok(line, _CLIENT):
                if self.messages == 0 and is_binary(line.rstrip(b"\r")):
                    self._junk(bytes(buf), ts, True)
                    return n  # all of `data` is in `buf`, which the resync took over
                # HTTP/0.9, or a line no server can read: either way the head is this one line.
                return self._complete_head(bytes(buf[:nl + 1]), pos + nl + 1 - old, ts)
            if self.side is _SERVER and not status_line_ok(line):
                if self.sink.headless_response():  # HTTP/0.9's answer, a body that starts "HTTP/"
                    self._headless(ts)
                    return n
                self.sink.on_anomaly(self, Anomaly.BAD_STATUS_LINE)
                skip = nl + 1 if line[:5].upper() == b"HTTP/" else 0  # resync would find it again
                self.skipped_bytes += skip
                self._junk(bytes(buf[skip:]), ts, False)
                return n
        end = head_end(buf, scan)
        if end > MAX_HEAD_BYTES or (end < 0 and len(buf) > MAX_HEAD_BYTES):
            return self._oversized(bytes(buf), ts)
        if end < 0:
            return n
        return self._complete_head(bytes(buf[:end]), pos + end - old, ts)

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
        buf = self.buf
        scan, old = max(0, len(buf) - 3), len(buf)  # a head's end may straddle the old and new bytes
        buf += data[pos:]
        if self.line_checked is False:
            ahead = header_line_ahead(buf)
            if ahead is None:
                return len(data)  # still a token: header name or method, cannot tell yet
            if not ahead:  # a new message starts here
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
            return self._oversized(bytes(buf), ts) and len(data)
        if end < 0:
            return len(data)
        headers, anomalies = parse_header_block(bytes(buf[:end]))
        self.sink.on_late_headers(self, headers, (Anomaly.HEADERS_AFTER_SHORT_REQUEST_LINE, *anomalies))
        self.one_line = False
        self.line_checked = False
        self.buf = bytearray()
        self.state = State.HEAD
        return pos + end - old

    def _complete_head(self, head: bytes, consumed: int, ts: float, response: ResponseHead | None = None) -> int:
        """Parse a complete head (a response's may come parsed), report it, and set up its body's
        framing. Returns `consumed`."""
        if self.buf:
            self.buf = bytearray()
        self.line_checked = False
        if self.side is _CLIENT and not self.messages and head.startswith(HTTP2_PREFACE[:16]):
            self._not_http(NotHttp.HTTP2)  # `PRI * HTTP/2.0`: HTTP/2 with prior knowledge
            return consumed
        self.messages += 1
        if self.side is _CLIENT:
            parsed: RequestHead | ResponseHead | None = parse_request_head(head)
            self.one_line = head.count(b"\n") <= 1
            method = self.sink.on_head(self, parsed, self.first_ts, ts)  # type: ignore[arg-type]
        else:
            parsed = response if response is not None else parse_response_head_cached(head)
            if parsed is None:
                self.sink.on_anomaly(self, Anomaly.BAD_STATUS_LINE)
                self.in_message = False
                self._start_resync()
                return consumed
            method = self.sink.on_head(self, parsed, self.first_ts, ts)
        self.lf_named = _BARE_LF in parsed.anomalies  # type: ignore[union-attr]
        framing, length, anomalies = cached_body_framing(parsed, method)  # type: ignore[arg-type]
        for name in anomalies:
            self.sink.on_anomaly(self, name)
        self.last_ts = ts
        self.remaining = length
        after = AFTER_HEAD[framing]
        if self.inner is not None and (after is _TUNNEL or after is _HEAD):
            after = State.CARRY  # a CONNECT's 2xx (204 too): the conversation inside the tunnel follows
        if after in ENDS_WITH_HEAD:
            self._end(ts)
        self.state = after  # nothing is buffered (above): RESYNC starts clean
        return consumed

    def _line(self, data: bytes, pos: int, ts: float) -> int:
        """Chunk-size lines, the CRLF after chunk data, and trailer lines."""
        nl = data.find(b"\n", pos)
        if (nl < 0 and len(self.buf) + len(data) - pos > MAX_LINE_BYTES) or len(self.buf) + nl - pos > MAX_LINE_BYTES:
            # Like an oversized head: resync resumes after the first MAX_LINE_BYTES of the line.
            rest = (bytes(self.buf) + data[pos:])[MAX_LINE_BYTES:]
            self.sink.on_anomaly(self, Anomaly.OVERSIZED_CHUNK_LINE)
            self._cut_short(ts)
            self._resync(rest, 0, ts)
            return len(data)
        if nl < 0:
            self.buf += data[pos:]
            return len(data)
        line = bytes(self.buf) + data[pos:nl] if self.buf else data[pos:nl]
        self.buf = bytearray()
        self.last_ts = ts
        if line[-1:] != b"\r" and not self.lf_named:  # named once a message, head or chunk lines
            self.lf_named = True
            self.sink.on_anomaly(self, Anomaly.BARE_LF)
        line = line.rstrip(b"\r")
        st = self.state
        if st == State.CHUNK_END:
            self.state = State.CHUNK_SIZE
            if line.strip():  # no CRLF after the data: take the line for the next chunk's size
                self.sink.on_anomaly(self, Anomaly.BAD_CHUNK_TERMINATOR)
                self._chunk_size(line, ts)
        elif st == State.CHUNK_SIZE:
            self._chunk_size(line, ts)
        elif not line:  # TRAILER: an empty line ends the message
            self._end(ts)
        return nl + 1

    def _chunk_size(self, line: bytes, ts: float) -> None:
        size = chunk_size(line)
        if (line[:1] in b" \t" or line[-1:] in b" \t") and line and chunk_size_oddity(line):
            self.sink.on_anomaly(self, Anomaly.CHUNK_SIZE_WHITESPACE)
        if isinstance(size, Anomaly):
            self.sink.on_anomaly(self, size)
            self._cut_short(ts)
        elif size:
            self.remaining = size
            self.state = State.CHUNK_DATA
        else:
            self.state = State.TRAILER

    # Helpers ------------------------------------------------------------------------------------

    def _begin(self, ts: float) -> None:
        self.sink.on_begin(self)
        self.in_message = True
        self.first_ts = self.last_ts = ts
        self.body_len = 0
        self.gap_in_message = self.truncated = self.lf_named = False

    def _end(self, ts: float) -> None:
        self.last_ts = ts
        if self.state is not _TUNNEL:
            self.state = _HEAD
        self.in_message = False
        self.sink.on_end(self, ts)

    def _count(self, n: int, ts: float) -> None:
        """`n` bytes of a body or a chunk, no more than remain: counted; the last ends it."""
        self.remaining -= n
        self.body_len += n
        if not self.remaining:
            if self.state is _BODY:
                self._end(ts)
            else:
                self.state = _CHUNK_END

    def _cut_short(self, ts: float) -> None:
        self.truncated = True
        self._end(ts)
        self._start_resync()
