"""Comparing a shadow's answer with the captured one: status, body (length and a hash of the
decoded body, after masks), chosen headers (less the ignored ones), latency."""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analyzers import ResponseHead, Transaction

if TYPE_CHECKING:  # the client (http.client, ssl) is loaded only by a replay that sends
    from watcher.replay.client import Answer

DEFAULT_HEADERS = ("content-type",)
# Decompressing a body to hash it stops here: a compressed body is not allowed to become a bomb.
MAX_DECODED_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class CompareSpec:
    headers: tuple[str, ...] = DEFAULT_HEADERS  # lower case
    ignore_headers: frozenset[str] = frozenset({"date", "set-cookie", "server", "etag", "last-modified"})
    masks: tuple[re.Pattern[bytes], ...] = field(default_factory=tuple)  # body parts replaced before hashing


def decoded(body: bytes, encoding: str | None) -> bytes:
    """The body with its Content-Encoding (gzip, deflate) undone, as far as it decodes."""
    enc = (encoding or "").strip().lower()
    if enc not in ("gzip", "x-gzip", "deflate"):
        return body
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS)
        return d.decompress(body, MAX_DECODED_BYTES)
    except zlib.error:
        return body


def body_hash(body: bytes, encoding: str | None, spec: CompareSpec) -> tuple[int, str]:
    data = decoded(body, encoding)
    for mask in spec.masks:
        data = mask.sub(b"<masked>", data)
    return len(data), hashlib.blake2b(data, digest_size=12).hexdigest()


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, list):
        return ", ".join(value)
    return value


def original_latency(tx: Transaction) -> float | None:
    """Seconds from the request's first byte to the response's last, as captured."""
    if tx.request is None or tx.response is None:
        return None
    return max(0.0, tx.response.last_ts - tx.request.first_ts)


@dataclass(frozen=True, slots=True)
class Original:
    """What a comparison needs of the captured answer, taken when the request is queued: the
    queue then holds a hash, not the response body."""

    status: int | None
    headers: dict[str, str | None]  # the compared ones
    body: tuple[int, str] | None  # (length, hash) of the decoded, masked body; None: not kept
    latency: float | None


def original(tx: Transaction, spec: CompareSpec) -> Original:
    resp = tx.response
    head = resp.head if resp is not None and isinstance(resp.head, ResponseHead) else None
    if head is None or resp is None:
        return Original(None, {}, None, original_latency(tx))
    body = None
    if resp.body is not None:
        body = body_hash(resp.body, _header(head.headers, "content-encoding"), spec)
    headers = {name: _header(head.headers, name) for name in spec.headers if name not in spec.ignore_headers}
    return Original(head.status, headers, body, original_latency(tx))


def compare(orig: Original | Transaction, answer: Answer, spec: CompareSpec) -> dict[str, Any]:
    """The `replay` part of a record: the shadow's answer, the original's, and `match` per field."""
    if not isinstance(orig, Original):
        orig = original(orig, spec)
    known = orig.status is not None
    shadow_len, shadow_hash = body_hash(answer.body, answer.headers.get("content-encoding"), spec)
    out: dict[str, Any] = {"status": answer.status, "body_len": shadow_len, "body_hash": shadow_hash,
                           "latency": round(answer.latency, 6), "attempts": answer.attempts}
    match: dict[str, bool | None] = {}
    match["status"] = orig.status == answer.status if known else None
    if orig.body is not None:
        out["original_body_len"], out["original_body_hash"] = orig.body
        match["body"] = orig.body == (shadow_len, shadow_hash)
    else:
        match["body"] = None  # the original body was not kept: not compared
    headers: dict[str, Any] = {}
    for name in spec.headers:
        if name in spec.ignore_headers:
            continue
        mine = answer.headers.get(name)
        headers[name] = mine
        match[f"header:{name}"] = mine == orig.headers.get(name) if known else None
    out["headers"] = headers
    out["original_latency"] = round(orig.latency, 6) if orig.latency is not None else None
    out["match"] = match
    out["matched"] = all(v is not False for v in match.values())
    return out
