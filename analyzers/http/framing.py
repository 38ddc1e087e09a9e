"""Message body framing, decided in one place, following RFC 9112 section 6.3 step by step.

A passive observer cannot refuse a message: where a server would answer 400, we name the anomaly
and pick the framing the peers most likely used, or `UNKNOWN` when nothing can be trusted (the
parser then looks for the next message start).
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

from analyzers.http.anomalies import Anomaly
from analyzers.http.head import Headers, RequestHead, ResponseHead

# Content-Length values above this cannot be real (and overflow 64-bit parsers): a smuggling probe.
MAX_CONTENT_LENGTH = (1 << 63) - 1


# Chunk-size and trailer lines are short; a longer one is garbage or an attack on the parser.
MAX_LINE_BYTES = 8 * 1024
# A chunk size with more hex digits than this overflows 64 bits.
MAX_CHUNK_SIZE_DIGITS = 16
_HEX = frozenset(b"0123456789abcdefABCDEF")


class Framing(IntEnum):
    NONE = 0  # no body
    LENGTH = 1  # Content-Length bytes
    CHUNKED = 2
    CLOSE = 3  # until the connection closes (responses only)
    TUNNEL = 4  # CONNECT 2xx or 101: the rest is another protocol
    UNKNOWN = 5  # cannot tell where the body ends: resynchronise at the next message


FramingResult = tuple[Framing, int, tuple[Anomaly, ...]]  # framing, content length, anomalies

AMBIGUOUS_FRAMING = {Framing.NONE: Anomaly.AMBIGUOUS_FRAMING_NONE, Framing.LENGTH: Anomaly.AMBIGUOUS_FRAMING_LENGTH,
                     Framing.CHUNKED: Anomaly.AMBIGUOUS_FRAMING_CHUNKED, Framing.CLOSE: Anomaly.AMBIGUOUS_FRAMING_CLOSE,
                     Framing.UNKNOWN: Anomaly.AMBIGUOUS_FRAMING_UNKNOWN}


def body_framing(head: RequestHead | ResponseHead, request_method: str | None) -> FramingResult:
    """Return (framing, content length, anomalies) for a parsed head.

    `request_method` is the method of the request a response answers (None if unknown).
    """
    decided = message_framing(head, request_method)
    if decided is not None:
        return decided
    is_response = isinstance(head, ResponseHead)
    framing = header_framing(head.headers, is_response)
    if head.other_headers is not None and header_framing(head.other_headers, is_response)[:2] != framing[:2]:
        # A server reading the head the other way would frame this body differently: say which
        # reading was followed (every line read), as the framing it gave.
        framing = (framing[0], framing[1], (*framing[2], AMBIGUOUS_FRAMING[framing[0]]))
    return framing


def message_framing(head: RequestHead | ResponseHead, request_method: str | None) -> FramingResult | None:
    """RFC 9112 6.3 steps 1 and 2: what the status and the request's method decide, or None.

    Split from `header_framing`, which depends only on two header values and is cached.
    """
    if isinstance(head, RequestHead):
        if head.version == "0.9":
            return Framing.NONE, 0, ()
    else:
        status = head.status
        if status == 101:
            return Framing.TUNNEL, 0, ()
        if request_method == "HEAD" or 100 <= status < 200 or status in (204, 304):  # step 1
            return Framing.NONE, 0, ()
        if request_method == "CONNECT" and 200 <= status < 300:  # step 2
            return Framing.TUNNEL, 0, ()
    return None


def header_framing(headers: Headers, is_response: bool) -> FramingResult:
    """RFC 9112 6.3 steps 3 to 7: what Transfer-Encoding and Content-Length decide."""
    return _te_cl_framing(tuple(_values(headers, "transfer-encoding")),
                          tuple(_values(headers, "content-length")), is_response)


@lru_cache(maxsize=1024)
def _te_cl_framing(te: tuple[str, ...], cl: tuple[str, ...], is_response: bool) -> FramingResult:
    anomalies: list[Anomaly] = []
    if te:  # step 3
        if cl:
            anomalies.append(Anomaly.CONTENT_LENGTH_AND_TRANSFER_ENCODING)
        codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
        if codings and codings[-1] == "chunked":
            if codings.count("chunked") > 1:
                anomalies.append(Anomaly.CHUNKED_APPLIED_TWICE)
            return Framing.CHUNKED, 0, tuple(anomalies)
        anomalies.append(Anomaly.TRANSFER_ENCODING_NOT_CHUNKED)
        return (Framing.CLOSE if is_response else Framing.UNKNOWN), 0, tuple(anomalies)
    if cl:  # steps 4 and 5
        lengths = {v.strip() for raw in cl for v in raw.split(",")}
        if len(cl) > 1 or any("," in v for v in cl):
            anomalies.append(Anomaly.DUPLICATE_CONTENT_LENGTH if len(lengths) == 1
                             else Anomaly.CONFLICTING_CONTENT_LENGTH)
        if len(lengths) == 1:
            (text,) = lengths
            if text.isdigit() and text.isascii():
                n = int(text)
                if n <= MAX_CONTENT_LENGTH:
                    return (Framing.LENGTH if n else Framing.NONE), n, tuple(anomalies)
                anomalies.append(Anomaly.CONTENT_LENGTH_OVERFLOW)
            else:
                anomalies.append(Anomaly.BAD_CONTENT_LENGTH)
        return (Framing.CLOSE if is_response else Framing.UNKNOWN), 0, tuple(anomalies)
    if is_response:  # step 7
        return Framing.CLOSE, 0, ()
    return Framing.NONE, 0, ()  # step 6


def chunk_size(line: bytes) -> int | Anomaly:
    """The size on a chunk-size line (RFC 9112 7.1, extensions ignored), or why there is none."""
    text = line.split(b";", 1)[0].strip()
    if not text or not _HEX.issuperset(text):
        return Anomaly.BAD_CHUNK_SIZE
    if len(text.lstrip(b"0")) > MAX_CHUNK_SIZE_DIGITS or int(text, 16) >= 1 << 63:
        return Anomaly.CHUNK_SIZE_OVERFLOW
    return int(text, 16)


def chunk_size_oddity(line: bytes) -> Anomaly | None:
    """White space before a chunk size, or after it with no extension (`5 `): RFC 9112 7.1 allows
    white space only before a `;`. Servers differ on it."""
    size, semi, _ = line.partition(b";")
    if size[:1] in (b" ", b"\t") or (not semi and size[-1:] in (b" ", b"\t")):
        return Anomaly.CHUNK_SIZE_WHITESPACE
    return None


def _values(headers: Headers, name: str) -> list[str]:
    v = headers.get(name)
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


# Framings remembered (by the identity of the shared head or header dict) before starting over.
FRAMING_CACHE_SIZE = 1024
_remembered: dict[int, tuple[object, str | None, FramingResult]] = {}


def cached_body_framing(head: RequestHead | ResponseHead, method: str | None) -> FramingResult:
    """`body_framing`, remembered for the last method seen with each response head and with each
    request header block: parsed heads and header dicts are shared by the messages that repeat
    them (see head.py's caches), and framing depends only on them."""
    key_obj: object = head if isinstance(head, ResponseHead) else head.headers
    hit = _remembered.get(id(key_obj))
    if (hit is not None and hit[0] is key_obj and hit[1] == method
            and (isinstance(head, ResponseHead) or head.version != "0.9")):
        return hit[2]
    result = body_framing(head, method)
    if isinstance(head, RequestHead) and head.version == "0.9":
        return result
    if len(_remembered) >= FRAMING_CACHE_SIZE:
        _remembered.clear()
    _remembered[id(key_obj)] = (key_obj, method, result)
    return result
