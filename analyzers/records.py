"""Transactions to log records: the flat, Zeek-shaped dict every output writes.

Field names are the public interface (see README "Record"); strings from the wire arrive already
made text by `http.text.escape` (valid UTF-8 as text, other bytes as \\xNN), so a record holds no
raw control character; with `strings: ascii` they are written in the all-escaped form instead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from analyzers.http.head import Headers, RequestHead, ResponseHead, header
from analyzers.http.messages import Message, Transaction
from analyzers.http.text import Strings, ascii_text


class Flag(StrEnum):
    """What a record's `flags` can say about how its transaction was seen (README "The record"); the
    order here is the one `check` lists them in, a record's order is `record_flags`'."""

    GAP = "gap"
    MIDSTREAM = "midstream"
    NO_RESPONSE = "no_response"
    NO_REQUEST = "no_request"
    TRUNCATED = "truncated"
    TUNNEL = "tunnel"

    @property
    def reason(self) -> str:
        return FLAG_REASONS[self]


FLAG_REASONS: dict[Flag, str] = {
    Flag.GAP: "capture lost bytes of this transaction, or around it: the pairing may be a guess",
    Flag.MIDSTREAM: "the connection was picked up without its SYN (started before the capture)",
    Flag.NO_RESPONSE: "the request was never answered in the capture (`reason` says why)",
    Flag.NO_REQUEST: "a response whose request was not seen",
    Flag.TRUNCATED: "a message ended before its framing said it would",
    Flag.TUNNEL: "CONNECT or 101 Upgrade: what follows on the connection is not HTTP, or is the conversation inside "
                 "a CONNECT tunnel (then `host` is the tunnel's target)",
}


# The fields holding text from the wire: what `strings: ascii` writes in the all-escaped form.
WIRE_FIELDS = ("method", "host", "uri", "user_agent", "referrer", "status_msg", "response_content_type")


def to_record(tx: Transaction, strings: Strings = Strings.UTF8) -> dict[str, Any]:
    """One JSON-ready dict per transaction; `strings` says how wire text is written."""
    req, resp, conn = tx.request, tx.response, tx.conn
    rh = req.head if req is not None and isinstance(req.head, RequestHead) else None
    sh = resp.head if resp is not None and isinstance(resp.head, ResponseHead) else None
    flags = record_flags(tx)
    anomalies = record_anomalies(tx)
    first = req if req is not None else resp
    assert first is not None
    record: dict[str, Any] = {
        "ts": round(first.first_ts, 6),
        "uid": conn.uid,
        "trans_depth": (req or resp).depth,  # type: ignore[union-attr]
        "src_ip": conn.client_ip,
        "src_port": conn.client_port,
        "dst_ip": conn.server_ip,
        "dst_port": conn.server_port,
        "method": rh.method if rh else None,
        "host": _first(rh.headers.get("host")) if rh else None,
        "uri": rh.uri if rh else None,
        "version": (rh.version if rh else None) or (sh.version if sh else None),
        "user_agent": _first(rh.headers.get("user-agent")) if rh else None,
        "referrer": _first(rh.headers.get("referer")) if rh else None,
        "request_body_len": req.body_len if req is not None else 0,
        "status_code": (sh.status or None) if sh else None,
        "status_msg": sh.reason if sh and sh.status else None,
        "info_code": req.info_code if req is not None else None,
        "response_body_len": resp.body_len if resp is not None else 0,
        "response_content_type": header(sh.headers, "content-type") if sh else None,
        "ttfb_ms": _ms(resp.first_ts - req.last_ts) if req is not None and resp is not None else None,
        "duration_ms": _ms(resp.last_ts - req.first_ts) if req is not None and resp is not None else None,
        "flags": flags,
        "anomalies": anomalies,
        "reason": tx.reason,
        "pcap_file": first.pcap_file,
    }
    if strings == Strings.ASCII:
        for k in WIRE_FIELDS:
            v = record[k]
            if v is not None:
                record[k] = ascii_text(v)
    return record


def ascii_headers(headers: Headers) -> Headers:
    """A header dict with its values in the `strings: ascii` form (the dict itself when all are ASCII)."""
    if all(v.isascii() if isinstance(v, str) else all(map(str.isascii, v)) for v in headers.values()):
        return headers
    return {k: ascii_text(v) if isinstance(v, str) else [ascii_text(x) for x in v] for k, v in headers.items()}


def record_flags(tx: Transaction) -> list[Flag]:
    """The record's `flags`, in their documented order (shared with the direct JSON writer)."""
    req, resp = tx.request, tx.response
    flags: list[Flag] = []
    if tx.conn.midstream:
        flags.append(Flag.MIDSTREAM)
    if (req is not None and req.gap) or (resp is not None and resp.gap) or tx.reason == "gap":
        flags.append(Flag.GAP)
    if resp is None:
        flags.append(Flag.NO_RESPONSE)
    if req is None:
        flags.append(Flag.NO_REQUEST)
    if (req is not None and req.truncated) or (resp is not None and resp.truncated):
        flags.append(Flag.TRUNCATED)
    if tx.tunnel:
        flags.append(Flag.TUNNEL)
    return flags


def record_anomalies(tx: Transaction) -> list[str]:
    """The request's anomalies, then the response's."""
    req, resp = tx.request, tx.response
    return (req.anomalies if req is not None else []) + (resp.anomalies if resp is not None else [])


def _first(v: str | list[str] | None) -> str | None:
    if isinstance(v, list):
        return v[0]
    return v


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000.0, 3)


def message_of(tx: Transaction) -> Message:
    """The message that opened a transaction (for ordering)."""
    m = tx.request if tx.request is not None else tx.response
    assert m is not None
    return m
