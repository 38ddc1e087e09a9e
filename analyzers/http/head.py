"""Parse a complete HTTP/1.x message head. The only module that imports dpkt.

dpkt parses the header block of a head whose end we found ourselves (its whole-message parser
cannot frame a HEAD response or partial input, see STYLE.md). The start line we split ourselves,
because dpkt rejects methods it does not know and a passive observer must record them.
Strings are made text by `analyzers.http.text.escape`: valid UTF-8 stays text, any other byte and
every control character is kept as a ``\\xNN`` escape, so nothing from the wire is lost and no
control character reaches a log.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import lru_cache

import dpkt.http

from analyzers.http.anomalies import Anomaly
from analyzers.http.text import escape, utf8_text
from analyzers.side import Side

Headers = dict[str, "str | list[str]"]

# A head larger than this is not a web client's (browsers and servers stop at 8-64 KiB).
MAX_HEAD_BYTES = 64 * 1024
# Distinct header blocks remembered with their parse. A client repeats the same headers (same
# user agent, cookies, accept lists) request after request, so most blocks are parsed once by dpkt.
# Parsed header dicts are shared between messages: treat them as read-only.
HEADER_CACHE_SIZE = 4096
# Only blocks up to this size are cached: 4096 x 4 KiB keeps the cache under ~20 MB even when a
# peer sends nothing but large, distinct heads (which could otherwise hold 4096 x 64 KiB).
CACHED_BLOCK_BYTES = 4096

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# What separates the parts of a request line: spaces and tabs (a bare CR, VT or FF is a byte of the
# target, not a separator, whatever `bytes.split()` thinks).
_SEPARATORS = re.compile(rb"[ \t]+")
# Control bytes a head may not hold anywhere (TAB, and CR and LF at line ends, aside).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Something in a header block that two servers may read differently: a bare CR, a bare LF line
# end, a control byte, a line of white space only. Blocks without any take the plain path.
_ODD_BLOCK = re.compile(rb"\r(?!\n)|(?<!\r)\n|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|(?:^|\n)[ \t]+\r?\n")
_VERSION = re.compile(rb"HTTP/(\d+\.\d+)\Z", re.IGNORECASE)
# The usual request line: a token, one space, a target of printable ASCII but the backslash, one
# space, HTTP/x.y. `read_request_line` finds nothing to name or escape in it, so one match does its
# work (nearly every request; the split, the separator regex and the escapes cost ~3 us a request).
_PLAIN_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([!-\[\]-~]+) HTTP/(\d+\.\d+)\Z")
_OBS_FOLD = re.compile(rb"\r?\n[ \t]+")
# A header line with white space before its colon (RFC 9112 5.1: a smuggling probe, servers must
# reject it) or with no colon at all.
_BAD_HEADER_LINE = re.compile(rb"^(?:[^:\r\n]*[ \t]:|[^:\r\n]+\r?$)", re.MULTILINE)
# White space that may sit inside a value but must not reach a log raw.
_VALUE_CONTROL = re.compile(rb"\t|\r(?!\n)")
_STATUS = re.compile(rb"(HTTP/\d+\.\d+)[ \t]+([1-9]\d\d)(?:[ \t]+(.*))?\Z", re.IGNORECASE | re.DOTALL)
# Bytes a header block cannot hand to dpkt as they are (it decodes ASCII, dropping the rest):
# controls, DEL, non-ASCII and the backslash, as `\\xNN`; the block keeps CR, LF, TAB. Values with
# non-ASCII bytes are then turned into text (`utf8_text`).
_NEEDS_ESCAPE_BLOCK = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\xff\\]")


def _esc(m: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % m.group()[0]


def _escape_block(raw: bytes) -> bytes:
    """Like `escape` for a whole header block, keeping its line structure (CR, LF, TAB)."""
    if _NEEDS_ESCAPE_BLOCK.search(raw):
        return _NEEDS_ESCAPE_BLOCK.sub(_esc, raw)
    return raw


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str | None  # None when the request line could not be parsed
    uri: str | None
    version: str | None  # "1.1", "1.0", "0.9"
    headers: Headers
    anomalies: tuple[Anomaly, ...]
    # The headers as a server that stops at a white-space-only line, or keeps a bare CR inside a
    # value, reads them; None when that reading is the same as `headers` (see `read_header_block`).
    other_headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: Headers
    anomalies: tuple[Anomaly, ...]
    other_headers: Headers | None = None  # as in RequestHead


# The shapes of a request line, which decide how much of the stream is the head.
VERSIONED = 0  # METHOD target HTTP/x.y: headers follow, up to a blank line
SHORT = 1  # METHOD target: HTTP/0.9, the line is the whole request
BAD = 2  # anything else: the line is all we can take as this request


def _parts(line: bytes) -> list[bytes]:
    return [p for p in _SEPARATORS.split(line) if p]


def request_line_kind(line: bytes) -> int:
    """VERSIONED, SHORT or BAD for a request line without its line end."""
    parts = _parts(line)
    if len(parts) >= 2 and parts[-1][:5].upper() == b"HTTP/":
        return VERSIONED
    if len(parts) == 2 and _TOKEN.match(parts[0]):
        return SHORT
    return BAD


# Bytes of a token (RFC 9110 5.6.2): what a method, and so a request, starts with.
TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def can_start(first: int, side: Side) -> bool:
    """Whether byte `first` can begin a message: a token character for a request, 'H' for a status line."""
    return first in TOKEN_BYTES if side is Side.CLIENT else first == 0x48 or first == 0x68  # "H", "h"


def start_line_ok(line: bytes, side: Side) -> bool:
    """Whether a first line (up to its LF, CR or not) opens a head with header lines: a versioned
    request line, or a status line."""
    if side is Side.CLIENT:
        line = line.rstrip(b"\r")
        return _PLAIN_REQUEST_LINE.match(line) is not None or request_line_kind(line) == VERSIONED
    return status_line_ok(line)


def status_line_ok(line: bytes) -> bool:
    """Whether a response's first line (up to its LF) is a status line `HTTP/x.y NNN ...`."""
    return _STATUS.match(line.rstrip(b"\r")) is not None


def header_line_ahead(buf: bytes | bytearray) -> bool | None:
    """After a one-line request: whether `buf` starts with a header line (``Name:``), not a new
    request; None while it is all token characters and cannot tell yet."""
    i = 0
    while i < len(buf) and buf[i] in TOKEN_BYTES:
        i += 1
    if i == len(buf):
        return None
    return buf[i] == 0x3A and i > 0  # ":"


def looks_like_request_line(line: bytes) -> bool:
    """True when `line` (without its line end) has the shape ``METHOD target [HTTP/x.y]``."""
    parts = line.split()
    if len(parts) == 3:
        return bool(_TOKEN.match(parts[0])) and bool(_VERSION.match(parts[2]))
    return len(parts) == 2 and parts[0].isupper() and bool(_TOKEN.match(parts[0]))


RequestLine = tuple[str | None, str | None, str | None, tuple[Anomaly, ...]]


def parse_request_line(line: bytes) -> RequestLine:
    """Split a request line into (method, uri, version, anomalies): `read_request_line`, with the
    usual line's shortcut (tests/unit/analyzers/http/test_head.py checks that the two agree)."""
    m = _PLAIN_REQUEST_LINE.match(line)
    if m is not None:
        return m[1].decode("ascii"), m[2].decode("ascii"), m[3].decode("ascii"), ()
    return read_request_line(line)


def read_request_line(line: bytes) -> RequestLine:
    """Split a request line into (method, uri, version, anomalies), keeping what can be kept.

    Like Zeek, a line with a malformed version or a missing target still gives its method and
    target, with the anomaly named; only a line of neither shape gives (None, None, None).
    """
    parts = _parts(line)
    kind = request_line_kind(line)
    anomalies = []
    if b"\r" in line:
        anomalies.append(Anomaly.BARE_CR)
    if _CONTROL.search(line):
        anomalies.append(Anomaly.CONTROL_CHAR)
    if kind == SHORT:
        return escape(parts[0]), escape(parts[1]), "0.9", tuple(anomalies)
    if kind == BAD:
        return None, None, None, (Anomaly.BAD_REQUEST_LINE, *anomalies)
    if not _TOKEN.match(parts[0]):
        anomalies.append(Anomaly.BAD_METHOD)
    if len(parts) == 2:
        anomalies.append(Anomaly.MISSING_REQUEST_TARGET)
    elif len(parts) > 3:
        anomalies.append(Anomaly.SPACE_IN_REQUEST_TARGET)  # spaces inside the target: keep them
    m = _VERSION.match(parts[-1])
    if m is None:
        anomalies.append(Anomaly.BAD_HTTP_VERSION)
    version = m.group(1).decode("ascii") if m else None
    return escape(parts[0]), escape(b" ".join(parts[1:-1])), version, tuple(anomalies)


def parse_request_head(head: bytes) -> RequestHead:
    """Parse a request head (start line through the blank line)."""
    line, lf, block = head.partition(b"\n")
    method, uri, version, line_anomalies = parse_request_line(line[:-1] if line.endswith(b"\r") else line)
    headers, anomalies, other = read_header_block(block)
    if lf and not line.endswith(b"\r"):
        line_anomalies += (Anomaly.BARE_LF,)
    if line_anomalies:  # the block's own are each named once already
        anomalies = _once(line_anomalies + anomalies)
    return RequestHead(method, uri, version, headers, anomalies, other)


def partial_head(buf: bytes, side: Side) -> RequestHead | ResponseHead | None:
    """What can be kept of a head the stream ended inside: the start line (a request line read up
    to the end, `METHOD target`, counts even without its line end; its version only if complete)
    and the header lines that ended. None when not even that much was read."""
    nl = buf.rfind(b"\n")
    line = buf if nl < 0 else buf[:buf.index(b"\n")]
    if side is Side.CLIENT:
        if nl < 0:
            parts = line.split(b" ")
            if len(parts) < 2 or not parts[0] or not _TOKEN.match(parts[0]) or not parts[1]:
                return None
            if request_line_kind(line) != VERSIONED:  # `GET /pa`: the target so far, no version
                return RequestHead(escape(parts[0]), escape(b" ".join(parts[1:])), None, {}, ())
        head = parse_request_head(buf if nl < 0 else buf[:nl + 1])
        return head if head.method is not None else None
    return parse_response_head(buf if nl < 0 else buf[:nl + 1])


def parse_response_head(head: bytes) -> ResponseHead | None:
    """Parse a response head; None when the status line is not one."""
    line, _, block = head.partition(b"\n")
    m = _STATUS.match(line.rstrip(b"\r"))
    if not m:
        return None
    headers, anomalies, other = read_header_block(block)
    if b"\n" in head and not line.endswith(b"\r"):
        anomalies = _once((Anomaly.BARE_LF, *anomalies))
    version = m.group(1)[5:].decode("ascii")
    return ResponseHead(version, int(m.group(2)), escape(m.group(3) or b""), headers, anomalies, other)


def _once(anomalies: tuple[Anomaly, ...]) -> tuple[Anomaly, ...]:
    return tuple(dict.fromkeys(anomalies)) if len(anomalies) > 1 else anomalies


def parse_header_block(block: bytes) -> tuple[Headers, tuple[Anomaly, ...]]:
    """Parse the header lines of a head: (headers, anomalies); see `read_header_block`."""
    return read_header_block(block)[:2]


def read_header_block(block: bytes) -> tuple[Headers, tuple[Anomaly, ...], Headers | None]:
    """Parse the header lines of a head: (headers, anomalies, the other reading's headers or None).
    Blocks of ordinary size are cached; large ones (rare, or an attack) are parsed each time, so the
    cache stays small whatever comes."""
    if len(block) <= CACHED_BLOCK_BYTES:
        return _read_header_block(block)
    return _read_uncached(block)


def _read_uncached(block: bytes) -> tuple[Headers, tuple[Anomaly, ...], Headers | None]:
    anomalies: list[Anomaly] = []
    other: Headers | None = None
    if _ODD_BLOCK.search(block):
        block, other_block = _two_readings(block, anomalies)
        if other_block != block:
            other = parse_headers(other_block, [])
    headers = parse_headers(block, anomalies)
    return headers, tuple(dict.fromkeys(anomalies)), None if other == headers else other


_read_header_block = lru_cache(maxsize=HEADER_CACHE_SIZE)(_read_uncached)


def _two_readings(block: bytes, anomalies: list[Anomaly]) -> tuple[bytes, bytes]:
    """Every line of an odd header block, read two ways, each rewritten with CRLF line ends: ours
    takes every line (a white-space-only line is passed over; what follows a bare CR is a header
    line of its own too, the value keeping the CR as a byte), so that no header hides; the other
    stops at a white-space-only line and sees no line after a bare CR, as some servers do (dpkt,
    like them, would stop there and hide the rest). The oddities are named."""
    ours: list[bytes] = []
    other: list[bytes] = []
    other_done = False
    for raw in block.split(b"\n")[:-1]:  # the piece after the last LF is not a line
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if len(line) == len(raw):
            anomalies.append(Anomaly.BARE_LF)
        if not line:  # the blank line that ends the head
            break
        if _CONTROL.search(line):
            anomalies.append(Anomaly.CONTROL_CHAR)
        if not line.strip(b" \t\r"):
            anomalies.append(Anomaly.WHITESPACE_LINE)
            other_done = True
            continue
        if b"\r" not in line:
            ours.append(line)
        else:  # the value keeps the CR; what follows it, if a header line, is one too
            anomalies.append(Anomaly.BARE_CR)
            first, *rest = line.split(b"\r")
            ours += [line] if first.strip(b" \t") else []
            ours += [piece for piece in rest if b":" in piece and piece[:1] not in b" \t"]
        if not other_done:
            other.append(line)
    return b"".join(x + b"\r\n" for x in ours) + b"\r\n", b"".join(x + b"\r\n" for x in other) + b"\r\n"


def parse_headers(block: bytes, anomalies: list[Anomaly]) -> Headers:
    """Header block to {lower-case name: value or list of values}, via dpkt."""
    text = not block.isascii()
    block = _escape_block(block)
    if b"\n " in block or b"\n\t" in block:
        # obs-fold (RFC 9112 5.2): a line starting with white space continues the previous one.
        # dpkt would take it for a header of its own; unfold as a lenient server does, and say so.
        anomalies.append(Anomaly.OBS_FOLD)
        block = _OBS_FOLD.sub(b" ", block)
    if _BAD_HEADER_LINE.search(block):
        # dpkt keeps `Name : v` as a header named "name " and a line without colon as a header
        # with no value: name the anomaly, keep `Name` and drop colon-less lines.
        anomalies.append(Anomaly.BAD_HEADER_LINE)
        block = b"\n".join(_repair_line(ln) for ln in block.split(b"\n") if b":" in ln or not ln.strip())
    try:
        headers: Headers = dict(dpkt.http.parse_headers(io.BytesIO(block)))
    except dpkt.UnpackError:
        # dpkt refuses the whole block for one line whose name holds white space: drop those.
        if Anomaly.BAD_HEADER_LINE not in anomalies:
            anomalies.append(Anomaly.BAD_HEADER_LINE)
        kept = [ln for ln in block.split(b"\n") if len(ln.split(b":", 1)[0].split()) == 1 or not ln.strip()]
        headers = dict(dpkt.http.parse_headers(io.BytesIO(b"\n".join(kept))))
    if _VALUE_CONTROL.search(block):
        headers = {k: _escape_value(v) for k, v in headers.items()}
    if text:
        headers = {k: _utf8_value(v) for k, v in headers.items()}
    return headers


def _repair_line(line: bytes) -> bytes:
    name, colon, value = line.partition(b":")
    return name.strip() + colon + value if colon else line


def _escape_value(v: str | list[str]) -> str | list[str]:
    if isinstance(v, list):
        return [_escape_value(x) for x in v]  # type: ignore[misc]
    return v.replace("\t", "\\x09").replace("\r", "\\x0d")


def _utf8_value(v: str | list[str]) -> str | list[str]:
    if isinstance(v, list):
        return [utf8_text(x) for x in v]
    return utf8_text(v)


def header(headers: Headers, name: str) -> str | None:
    """The value of header `name` (lower case); the last one when it repeats."""
    v = headers.get(name)
    if isinstance(v, list):
        return v[-1]
    return v


# Distinct response heads remembered with their parse: a busy server repeats a few dozen per second
# (one per resource and status, changing with the Date header). Heads longer than the size limit
# are parsed each time, so the cache stays under 4 MB whatever a peer sends.
RESPONSE_HEAD_CACHE_SIZE = 1024
RESPONSE_HEAD_CACHE_MAX_BYTES = 4096


def parse_response_head_cached(head: bytes) -> ResponseHead | None:
    """`parse_response_head`, remembered for heads of ordinary size."""
    return _response_head(head) if len(head) <= RESPONSE_HEAD_CACHE_MAX_BYTES else parse_response_head(head)


@lru_cache(maxsize=RESPONSE_HEAD_CACHE_SIZE)
def _response_head(head: bytes) -> ResponseHead | None:
    """`parse_response_head`, remembered: a server sends the same head bytes over and over (the
    same file, the same Date within a second), and a parsed head is immutable."""
    return parse_response_head(head)


def speaks_http(head: RequestHead | ResponseHead) -> bool:
    """Whether a head shows its connection speaks HTTP: a status line, a request line with an HTTP
    version, or HTTP/0.9's `GET target`, whole or cut short (a shell's `ls /tmp` has that shape
    too, in lower case)."""
    if isinstance(head, ResponseHead):
        return head.status != 0  # 0: HTTP/0.9's headless answer, which any bytes could be
    return head.method is not None and head.uri is not None and (
        head.version not in (None, "0.9") or head.method.isupper())


def head_end(buf: bytearray | bytes, scan: int) -> int:
    """Offset just past the blank line ending a head (CRLF or bare LF lines), or -1."""
    crlf = buf.find(b"\n\r\n", scan)
    lf = buf.find(b"\n\n", scan)
    if crlf < 0:
        return lf + 2 if lf >= 0 else -1
    if lf < 0 or crlf < lf:
        return crlf + 3
    return lf + 2


def is_binary(line: bytes) -> bool:
    """Control characters (but TAB) or bytes that are not UTF-8: not a text line. Valid UTF-8 is
    text, as it is in the records (a one-line request for /Köln is a request)."""
    if any(b < 0x20 and b != 0x09 for b in line):
        return True
    if line.isascii():
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
