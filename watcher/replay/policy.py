"""What may be replayed, and the request that is sent for a transaction.

Safety first: nothing is replayed but to an allowed target; only GET, HEAD and OPTIONS unless more
methods are listed; requests carrying credentials (Authorization, Cookie) only when allowed; a body
only when it was kept whole (no capture gap, not over the size limit).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from analyzers import DEFAULT_BODY_LIMIT, RequestHead, Transaction

DEFAULT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
CREDENTIALS = ("authorization", "cookie")
# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded. Content-Length is set
# from the body sent, Expect would wait for a 100 the replay does not need.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
                        "content-length", "expect"})
DEFAULT_ID_HEADER = "X-Request-ID"


class SkipReason:
    """Why a transaction was not replayed (metric label values)."""

    NO_REQUEST = "no_request"
    METHOD = "method"
    CREDENTIALS = "credentials"
    BODY_TOO_LARGE = "body_too_large"
    BODY_GAP = "body_gap"
    BODY_INCOMPLETE = "body_incomplete"
    BODY_NOT_KEPT = "body_not_kept"
    SAMPLED_OUT = "sampled_out"
    QUEUE_FULL = "queue_full"
    SHUTDOWN = "shutdown"  # queued when the service stopped


@dataclass(frozen=True, slots=True)
class Target:
    """Where replays go: scheme http, host, port, and the path prefix put before each target."""

    url: str
    host: str
    port: int
    prefix: str


def parse_target(url: str) -> Target | str:
    """A target URL, or a one-line message saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return f"replay target {url!r}: only http:// targets are supported; give http://HOST[:PORT]"
    if not parts.hostname:
        return f"replay target {url!r}: no host; give http://HOST[:PORT]"
    try:
        port = parts.port or 80
    except ValueError:
        return f"replay target {url!r}: bad port; give http://HOST[:PORT]"
    return Target(url, parts.hostname, port, parts.path.rstrip("/"))


def allowed_target(url: str, allow: list[str]) -> bool:
    """Whether `url` is one of the allow-listed targets (compared without a trailing slash)."""
    return url.rstrip("/") in {a.rstrip("/") for a in allow}


@dataclass(frozen=True, slots=True)
class Policy:
    methods: frozenset[str] = DEFAULT_METHODS
    allow_credentials: bool = False
    body_limit: int = DEFAULT_BODY_LIMIT
    host: str | None = None  # rewrite Host to this; None keeps the original
    id_header: str = DEFAULT_ID_HEADER
    percent: float = 100.0  # share of connections replayed, sampled by connection uid
    extra_drop: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    event_id: str

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT


def skip_reason(tx: Transaction, policy: Policy) -> str | None:
    """None if `tx` may be replayed, else why not (a `SkipReason`)."""
    req = tx.request
    if req is None or not isinstance(req.head, RequestHead) or req.head.method is None or req.head.uri is None:
        return SkipReason.NO_REQUEST
    head = req.head
    if head.method not in policy.methods:
        return SkipReason.METHOD
    if not policy.allow_credentials and any(name in head.headers for name in CREDENTIALS):
        return SkipReason.CREDENTIALS
    if req.body_skip == "too_large":
        return SkipReason.BODY_TOO_LARGE
    if req.gap:
        return SkipReason.BODY_GAP
    if req.truncated or not req.done:
        return SkipReason.BODY_INCOMPLETE
    if req.body_len and req.body is None:
        return SkipReason.BODY_NOT_KEPT
    if policy.percent < 100.0 and not sampled(tx.conn.uid, policy.percent):
        return SkipReason.SAMPLED_OUT
    return None


def sampled(uid: str, percent: float) -> bool:
    """Deterministic by connection: the same connection is always in or out of a sample."""
    return zlib.crc32(uid.encode()) % 10000 < percent * 100


def build_request(tx: Transaction, event_id: str, policy: Policy, target: Target) -> Request:
    """The request sent for `tx` (which `skip_reason` let through)."""
    req = tx.request
    assert req is not None and isinstance(req.head, RequestHead)
    head = req.head
    assert head.method is not None and head.uri is not None
    drop = set(HOP_BY_HOP) | policy.extra_drop | {policy.id_header.lower()}
    conn_opts = head.headers.get("connection")
    for option in (conn_opts if isinstance(conn_opts, list) else [conn_opts] if conn_opts else []):
        drop.update(v.strip().lower() for v in option.split(","))
    headers: list[tuple[str, str]] = []
    for name, value in head.headers.items():
        if name in drop:
            continue
        if name == "host" and policy.host is not None:
            continue
        for v in value if isinstance(value, list) else [value]:
            headers.append((name, v))
    if policy.host is not None:
        headers.insert(0, ("host", policy.host))
    elif "host" not in head.headers:
        headers.insert(0, ("host", f"{target.host}:{target.port}"))
    headers.append((policy.id_header, event_id))
    uri = head.uri
    if uri.startswith(("http://", "https://")):  # absolute form (to a proxy): send origin form
        parts = urlsplit(uri)
        uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = req.body or b""
    if body or head.method in ("POST", "PUT", "PATCH"):
        headers.append(("content-length", str(len(body))))
    return Request(head.method, target.prefix + uri, headers, body, event_id)
