"""Recovery for the HTTP parser: after a gap, junk or an oversized head, find the next message start
and count what was passed over; decide early that a client is not speaking HTTP at all.

Off the hot path: a parser comes here only when its input did not parse. These functions act on
a `MessageParser`'s own fields, as its methods would; they live apart so that the state machine
in parser.py reads as the normal case.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from analyzers.http.head import MAX_HEAD_BYTES
from analyzers.http.state import State
from analyzers.side import Side

if TYPE_CHECKING:
    from analyzers.http.parser import MessageParser

# While resynchronising, keep this much of the unmatched tail so a message start split across
# packets is still found.
RESYNC_KEEP_BYTES = 8 * 1024
# Bytes a client may send before its first request is found, before we call it another protocol.
NOT_HTTP_PROBE_BYTES = 4096

_METHODS = (rb"GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE"
            rb"|LOCK|UNLOCK|REPORT|SEARCH|QUERY|PURGE|SUBSCRIBE|NOTIFY|MKCALENDAR|LINK|UNLINK")
_REQUEST_START = re.compile(rb"(?:" + _METHODS + rb") [^\s]+ HTTP/\d\.\d\r?\n")
_RESPONSE_START = re.compile(rb"HTTP/\d\.\d \d{3}[ \r\n]")
# First bytes of a TLS record (handshake, alert, change cipher spec, application data) or of an
# SSLv2 hello: certainly not HTTP, decided at once.
_TLS_FIRST_BYTES = frozenset({0x14, 0x15, 0x16, 0x17, 0x80})


def start_resync(p: MessageParser) -> None:
    """From here on, look for the next message start."""
    p.state = State.RESYNC
    p.buf = bytearray()
    p.line_checked = False


def resync(p: MessageParser, data: bytes, pos: int, ts: float) -> int:
    """Look for a message start in what is buffered plus `data[pos:]`; parse on from it if found."""
    buf = p.buf
    buf += data[pos:] if pos else data
    pattern = _REQUEST_START if p.side is Side.CLIENT else _RESPONSE_START
    m = pattern.search(buf)
    if m is None:
        keep = RESYNC_KEEP_BYTES if p.side is Side.CLIENT else 16
        if len(buf) > keep:
            p.skipped_bytes += len(buf) - keep
            del buf[:-keep]
        if p.probing and p.skipped_bytes + len(buf) > NOT_HTTP_PROBE_BYTES:
            not_http(p)
        return len(data)
    if p.probing:
        p.probing = False
        p.sink.on_anomaly(p, "junk_before_first_message")
    p.skipped_bytes += m.start()
    rest = bytes(buf[m.start():])
    p.buf = bytearray()
    p.state = State.HEAD
    p.data(rest, ts)
    return len(data)


def junk(p: MessageParser, data: bytes, ts: float) -> int:
    """What should have been a message start is not one: look for the next one in it."""
    p.in_message = False
    p.probing = p.side is Side.CLIENT and p.messages == 0
    start_resync(p)
    resync(p, data, 0, ts)
    return len(data)


def oversized(p: MessageParser, head: bytes, ts: float) -> int:
    """A head over the limit: dropped. Resync resumes right after its first MAX_HEAD_BYTES
    bytes, wherever the segments happened to end, so the outcome does not depend on them."""
    p.sink.on_anomaly(p, "oversized_head")
    p.skipped_bytes += MAX_HEAD_BYTES
    p.in_message = False
    p.probing = False  # it had the shape of a message: this is HTTP
    start_resync(p)
    resync(p, head[MAX_HEAD_BYTES:], 0, ts)
    return len(head)


def bad_start(p: MessageParser, first: int) -> None:
    """A message should start here but `first` cannot begin one (a request starts with a token
    character, a status line with 'H'). At a client's start this may be another protocol: TLS is
    given up on at once, anything else is probed; later it is a named anomaly. Then resync."""
    if p.side is Side.CLIENT and p.messages == 0:
        if first in _TLS_FIRST_BYTES:
            not_http(p)
            return
        p.probing = True  # junk where the first request should be: HTTP, or not?
    else:
        p.sink.on_anomaly(p, "bad_request_line" if p.side is Side.CLIENT else "bad_status_line")
    start_resync(p)


def not_http(p: MessageParser) -> None:
    """The first bytes of a client are not HTTP (TLS, SSH, ...): stop parsing this direction."""
    p.sink.on_anomaly(p, "not_http")
    p.buf = bytearray()
    p.in_message = False
    p.state = State.NOT_HTTP
