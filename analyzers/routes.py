"""Route templates for metric labels: `/users/123/orders/9f3c...` becomes `/users/{id}/orders/{id}`.

A path is a label only once its variable parts are gone, or a dashboard grows one time series per
user. Explicit patterns from the configuration are tried first (each yields one fixed route, so they
never add cardinality); otherwise every segment that looks like an identifier (a number, a UUID,
long hex, a base64-ish token, an e-mail address) is replaced. Whatever slips through, a hard cap on
distinct routes sends the rest to one `other` bucket, and counts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Distinct routes kept as labels. Prometheus handles thousands of series per metric well; ten
# metrics x status classes x 1000 routes is the most a default dashboard should carry.
DEFAULT_MAX_ROUTES = 1000
OTHER = "other"
# A route longer than this is not a label anyone reads; it goes to the `other` bucket.
MAX_ROUTE_CHARS = 256
# Paths remembered with their label: a site's traffic repeats a few thousand paths, and a label,
# once given, never changes (the cap only grows full), so the answer can be kept.
ROUTE_CACHE_SIZE = 4096

_NUMBER = re.compile(r"\d+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z")
# Hex of 8+ digits with at least one decimal digit (commit ids, content hashes; not words like
# "deadbeef"), or of 12+ without: no word is that long in the letters a-f.
_HEX = re.compile(r"(?:(?=[a-fA-F]*\d)[0-9a-fA-F]{8,}|[0-9a-fA-F]{12,})\Z")
# A token: 16+ characters of the URL-safe base64 alphabet (padding allowed) that look random:
# two digits, or a digit among mixed case. Session ids, signed ids, dated slugs; not word slugs.
_TOKEN = re.compile(r"[A-Za-z0-9_\-+]{16,}={0,2}\Z")
_TOKEN_MIN_LEN = 16
_EMAIL = re.compile(r"[^@/]+(?:@|%40)[^@/]+\.[^@/]+\Z")
# A segment this long is data, whatever it looks like.
_LONG_SEGMENT = 64
# "123.json", "9f3c2a1b.png": the stem is the identifier, the extension stays.
_EXTENSION = re.compile(r"(.+?)(\.[A-Za-z][A-Za-z0-9]{0,7})\Z")


@dataclass(frozen=True, slots=True)
class RoutePattern:
    """An explicit route: a path matching `match` (re.search) is labelled `route`, as written."""

    match: str
    route: str


def split_uri(uri: str) -> tuple[str, str | None]:
    """(path, query) of a request target; absolute-form `http://host/p?q` gives ("/p", "q")."""
    if not uri.startswith("/") and "://" in uri:
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        uri = rest[slash:] if slash >= 0 else "/" + rest[len(rest.split("?", 1)[0]):]
    path, sep, query = uri.partition("?")
    path = path.partition("#")[0]
    return path, (query.partition("#")[0] if sep else None)


def template_segment(segment: str) -> str:
    """One path segment with an identifier replaced by {id} (or {email}); other segments unchanged."""
    if not segment:
        return segment
    if len(segment) > _LONG_SEGMENT:
        return "{id}"
    if _EMAIL.match(segment):
        return "{email}"
    if _is_id(segment):
        return "{id}"
    m = _EXTENSION.match(segment)
    if m and _is_id(m.group(1)):
        return "{id}" + m.group(2)
    return segment


def _is_id(text: str) -> bool:
    return bool(_NUMBER.match(text) or _UUID.match(text) or _HEX.match(text) or _is_token(text))


def _is_token(text: str) -> bool:
    if len(text) < _TOKEN_MIN_LEN or not _TOKEN.match(text):
        return False
    digits = sum(c.isdigit() for c in text)
    return digits >= 2 or (digits == 1 and not text.islower() and not text.isupper())


def template_path(path: str) -> str:
    """Every identifier-like segment of `path` replaced (no cap, no explicit patterns)."""
    return "/".join(template_segment(s) for s in path.split("/"))


class RouteTemplater:
    """Maps request targets to bounded route labels; one per process, so the cap holds across records."""

    __slots__ = ("_cache", "_patterns", "max_routes", "overflow", "routes")

    def __init__(self, patterns: Sequence[RoutePattern] = (), max_routes: int = DEFAULT_MAX_ROUTES) -> None:
        self._patterns = tuple((re.compile(p.match), p.route) for p in patterns)
        self.max_routes = max_routes
        self.routes: set[str] = set()  # the labels handed out so far
        self.overflow = 0  # targets sent to `other` because the cap was reached or the route was too long
        self._cache: dict[str, tuple[str, int]] = {}  # path -> (label, overflow it counts)

    def route(self, uri: str | None) -> str | None:
        """The label for a request target: None without a request; `*` and authority forms as such."""
        if uri is None:
            return None
        if uri == "*":
            return "*"
        if not uri.startswith("/") and "://" not in uri:
            return "{authority}"  # CONNECT host:port
        path, _ = split_uri(uri)
        hit = self._cache.get(path)
        if hit is not None:
            self.overflow += hit[1]
            return hit[0]
        before = self.overflow
        label = self._label(path)
        if len(self._cache) >= ROUTE_CACHE_SIZE:
            self._cache.clear()
        self._cache[path] = (label, self.overflow - before)
        return label

    def _label(self, path: str) -> str:
        for rx, fixed in self._patterns:
            if rx.search(path):
                return fixed  # bounded by the configuration itself: outside the cap
        return self._admit(template_path(path))

    def _admit(self, route: str) -> str:
        if route in self.routes:
            return route
        if len(self.routes) >= self.max_routes or len(route) > MAX_ROUTE_CHARS:
            self.overflow += 1
            return OTHER
        self.routes.add(route)
        return route

    def stats(self) -> dict[str, int]:
        """Counters for the service's health metrics."""
        return {"routes": len(self.routes), "route_overflow": self.overflow}
