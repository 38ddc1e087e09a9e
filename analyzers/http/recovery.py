"""What a message parser does with input that did not parse: heads it could not read whole (cut by
the end of the stream, answered before they ended, over the size limit), bytes where no message
can start, a client that speaks another protocol; and how it finds the next message start.

These are `MessageParser`'s own moves (parser.py), kept in this mixin to hold each module under
the house's size: the state is the parser's, in its slots, and changes only through its methods,
in the two files. The pure scanning they rely on is in resync.py and head.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analyzers.http.anomalies import Anomaly
from analyzers.http.head import MAX_HEAD_BYTES, RequestHead, ResponseHead, partial_head
from analyzers.http.resync import NOT_HTTP_PROBE_BYTES, NotHttp, find_start, keep_while_looking, rules_out_http
from analyzers.http.sink import MessageSink
from analyzers.http.state import State
from analyzers.side import Side


class Recovery:
    """The parser's recovery moves (a mixin of `MessageParser`, which holds the state)."""

    if not TYPE_CHECKING:  # no slots of its own (the parser's hold the state); mypy checks the parser's
        __slots__ = ()
    side: Side
    sink: MessageSink[Any]
    state: State
    buf: bytearray
    line_checked: bool
    in_message: bool
    probing: bool
    skipped_bytes: int
    messages: int
    not_http_kind: NotHttp
    first_ts: float
    last_ts: float
    truncated: bool

    if TYPE_CHECKING:
        def data(self, data: bytes, ts: float) -> None: ...

        def _end(self, ts: float) -> None: ...

        def _headless(self, ts: float) -> None: ...

    def answered(self) -> None:
        """The peer answered a head still incomplete here: it is taken as read, cut short, and the
        next message looked for after it."""
        if self.state is State.HEAD and self.in_message and self.buf:
            self._partial_head(self.last_ts)
            if not self.in_message:
                self._start_resync()

    def _partial_head(self, ts: float) -> None:
        """The stream ended inside a head (or the peer answered it): what was read of it is a
        message cut short, if its start line was (see head.partial_head); else only the anomaly is."""
        parsed = partial_head(bytes(self.buf), self.side) if self.in_message else None
        if parsed is None and self.side is Side.SERVER and self.in_message and self.sink.headless_response():
            self._headless(ts)  # HTTP/0.9's answer: its few bytes began like a status line
            self._end(ts)
        else:
            self._cut_head(parsed, Anomaly.INCOMPLETE_HEAD, ts)

    def _cut_head(self, parsed: RequestHead | ResponseHead | None, why: Anomaly, ts: float) -> None:
        """A head that could not be read whole: its start line (`parsed`, if there is one) is a
        message, named `why` and cut short; else `why` alone is reported."""
        if parsed is not None:
            self.messages += 1
            self.sink.on_head(self, parsed, self.first_ts, ts)
        self.sink.on_anomaly(self, why)
        if parsed is not None:
            self.truncated = True
            self._end(ts)

    def _start_resync(self) -> None:
        """From here on, look for the next message start."""
        self.state = State.RESYNC
        self.buf = bytearray()
        self.line_checked = False

    def _resync(self, data: bytes, pos: int, ts: float) -> int:
        """Look for a message start in what is buffered plus `data[pos:]`; parse on from it if found."""
        buf = self.buf
        buf += data[pos:] if pos else data
        start = find_start(buf, self.side)
        if start < 0:
            excess = len(buf) - keep_while_looking(self.side)
            if excess > 0:
                self.skipped_bytes += excess
                del buf[:excess]
            if self.probing and self.skipped_bytes + len(buf) > NOT_HTTP_PROBE_BYTES:
                self._not_http(NotHttp.OTHER)
            return len(data)
        if self.probing:
            self.probing = False
            self.sink.on_anomaly(self, Anomaly.JUNK_BEFORE_FIRST_MESSAGE)
        self.skipped_bytes += start
        rest = bytes(buf[start:])
        self.buf = bytearray()
        self.state = State.HEAD
        self.data(rest, ts)
        return len(data)

    def _junk(self, data: bytes, ts: float, probing: bool) -> int:
        """What should have been a message start is not one: look for the next one in it. `probing`:
        it came where a client's first request should be, so it may be another protocol."""
        self.in_message = False
        self.probing = probing
        self._start_resync()
        self._resync(data, 0, ts)
        return len(data)

    def _oversized(self, head: bytes, ts: float) -> int:
        """A head over the limit: its start line, when that ended within the limit, is a message cut
        short (its headers dropped); the rest is skipped. Resync resumes right after its first
        MAX_HEAD_BYTES bytes, wherever the segments happened to end, so the outcome does not
        depend on them. It had the shape of a message: this is HTTP, no longer probed."""
        nl = head.find(b"\n", 0, MAX_HEAD_BYTES)
        self._cut_head(partial_head(head[:nl + 1], self.side) if nl >= 0 and self.in_message else None,
                       Anomaly.OVERSIZED_HEAD, ts)
        self.skipped_bytes += MAX_HEAD_BYTES
        self._junk(head[MAX_HEAD_BYTES:], ts, False)
        return len(head)

    def _bad_start(self, first: int) -> None:
        """`first` cannot begin the message that should start here. At a client's start it may be another
        protocol: TLS is given up on at once, anything else probed; later it is an anomaly. Then resync."""
        if self.side is Side.CLIENT and self.messages == 0:
            if rules_out_http(first):
                self._not_http(NotHttp.TLS)
                return
            self.probing = True  # junk where the first request should be: HTTP, or not?
        else:
            self.sink.on_anomaly(self, Anomaly.BAD_REQUEST_LINE if self.side is Side.CLIENT
                                 else Anomaly.BAD_STATUS_LINE)
        self._start_resync()

    def _not_http(self, kind: NotHttp) -> None:
        """The first bytes of a client are not HTTP/1.x (TLS, HTTP/2, SSH, ...): stop parsing this direction."""
        self.not_http_kind = kind
        self.sink.on_anomaly(self, Anomaly.NOT_HTTP)
        self.buf = bytearray()
        self.in_message = False
        self.state = State.NOT_HTTP
