"""Message body framing, decided in one place, following RFC 9112 section 6.3 step by step.

A passive observer cannot refuse a message: where a server would answer 400, we name the anomaly
and pick the framing the peers most likely used, or `UNKNOWN` when nothing can be trusted (the
parser then looks for the next message start).
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

from analyzers.http.head import Headers, RequestHead, ResponseHead

# Content-Length values above this cannot be real (and overflow 64-bit parsers): a smuggling probe.
MAX_CONTENT_LENGTH = (1 << 63) - 1


class Framing(IntEnum):
    NONE = 0  # no body
    LENGTH = 1  # Content-Length bytes
    CHUNKED = 2
    CLOSE = 3  # until the connection closes (responses only)
    TUNNEL = 4  # CONNECT 2xx or 101: the rest is another protocol
    UNKNOWN = 5  # cannot tell where the body ends: resynchronise at the next message


FramingResult = tuple[Framing, int, tuple[str, ...]]  # framing, content length, anomalies


def body_framing(head: RequestHead | ResponseHead, request_method: str | None) -> FramingResult:
    """Return (framing, content length, anomalies) for a parsed head.

    `request_method` is the method of the request a response answers (None if unknown).
    """
    return message_framing(head, request_method) or header_framing(head.headers, isinstance(head, ResponseHead))


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
    anomalies: list[str] = []
    if te:  # step 3
        if cl:
            anomalies.append("content_length_and_transfer_encoding")
        codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
        if codings and codings[-1] == "chunked":
            if codings.count("chunked") > 1:
                anomalies.append("chunked_applied_twice")
            return Framing.CHUNKED, 0, tuple(anomalies)
        anomalies.append("transfer_encoding_not_chunked")
        return (Framing.CLOSE if is_response else Framing.UNKNOWN), 0, tuple(anomalies)
    if cl:  # steps 4 and 5
        lengths = {v.strip() for raw in cl for v in raw.split(",")}
        if len(cl) > 1 or any("," in v for v in cl):
            anomalies.append("duplicate_content_length" if len(lengths) == 1 else "conflicting_content_length")
        if len(lengths) == 1:
            (text,) = lengths
            if text.isdigit() and text.isascii():
                n = int(text)
                if n <= MAX_CONTENT_LENGTH:
                    return (Framing.LENGTH if n else Framing.NONE), n, tuple(anomalies)
                anomalies.append("content_length_overflow")
            else:
                anomalies.append("bad_content_length")
        return (Framing.CLOSE if is_response else Framing.UNKNOWN), 0, tuple(anomalies)
    if is_response:  # step 7
        return Framing.CLOSE, 0, ()
    return Framing.NONE, 0, ()  # step 6


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
