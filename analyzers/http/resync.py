"""Where the next HTTP message starts in bytes that did not parse, and whether they can be HTTP at all.

Pure scanning, off the hot path: after a gap, junk or an oversized head the parser (parser.py and its mixin
recovery.py, which make every state change) asks here where to pick up again, how much of an unmatched tail
to keep while it looks, and whether a client's first byte rules HTTP out.
"""

from __future__ import annotations

import re
from enum import StrEnum

from analyzers.side import Side

# While resynchronising, keep this much of the unmatched tail so a message start split across
# packets is still found: a request line can be long (its target), ...
RESYNC_KEEP_BYTES = 8 * 1024
# ... a status line's start (`HTTP/1.1 200 `) is short.
RESYNC_KEEP_RESPONSE_BYTES = 16
# Bytes a client may send before its first request is found, before we call it another protocol.
NOT_HTTP_PROBE_BYTES = 4096

# A request line's shape: a token, then white space (one space or more, or tabs, as lenient
# servers take it), a target, white space, a version and the line end. The token starts where a run of
# token bytes starts (so each run is tried once: linear in the buffer) ...
_TOKEN_CLASS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_START = re.compile(rb"(?<!" + _TOKEN_CLASS + rb")(" + _TOKEN_CLASS + rb"+)[ \t]+[^\s]+[ \t]+"
                            rb"HTTP/\d\.\d[ \t]*\r?\n")
# ... and the method is the run's longest tail that has a method's usual form: upper-case letters,
# digits, `-` and `_`, any name (`BAN`, `M-SEARCH`), not a fixed list. Body bytes right before it
# (`q=abcGET`) are not part of it; a lower-case word (`a b HTTP/1.1` inside a target) is no method.
_METHOD_TAIL = re.compile(rb"[A-Z][A-Z0-9_\-]*\Z")
_RESPONSE_START = re.compile(rb"HTTP/\d\.\d \d{3}[ \r\n]")
# First bytes of a TLS record (handshake, alert, change cipher spec, application data) or of an
# SSLv2 hello: certainly not HTTP, decided at once.
_TLS_FIRST_BYTES = frozenset({0x14, 0x15, 0x16, 0x17, 0x80})


class NotHttp(StrEnum):
    """What a connection that is not HTTP/1.x speaks instead, as far as its first bytes tell."""

    TLS = "tls"  # a TLS record or an SSLv2 hello
    HTTP2 = "http2"  # the HTTP/2 connection preface (prior knowledge, RFC 9113 3.4)
    OTHER = "other"  # anything else: a shell, SSH, a database protocol, ...


# HTTP/2's client connection preface: its first line has a request line's shape, method PRI.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def find_start(buf: bytes | bytearray, side: Side) -> int:
    """Offset in `buf` of the first request line (or status line) in the shape of a real one, or -1."""
    if side is Side.SERVER:
        m = _RESPONSE_START.search(buf)
        return -1 if m is None else m.start()
    for m in _REQUEST_START.finditer(buf):
        tail = _METHOD_TAIL.search(m.group(1))
        if tail is not None:
            return m.start() + tail.start()
    return -1


def keep_while_looking(side: Side) -> int:
    """How many bytes of an unmatched tail to keep: a start may be split across packets."""
    return RESYNC_KEEP_BYTES if side is Side.CLIENT else RESYNC_KEEP_RESPONSE_BYTES


def rules_out_http(first: int) -> bool:
    """Whether a client's first byte alone says it speaks another protocol (TLS)."""
    return first in _TLS_FIRST_BYTES
