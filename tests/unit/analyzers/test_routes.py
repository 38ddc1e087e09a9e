"""analyzers/routes.py: which path segments become {id}, request-target forms, explicit patterns, and the
hard cap on distinct routes (100,000 distinct ids give a bounded number of labels)."""

from __future__ import annotations

import pytest

from analyzers.routes import (
    DEFAULT_MAX_ROUTES,
    MAX_ROUTE_CHARS,
    OTHER,
    RoutePattern,
    RouteTemplater,
    split_uri,
    template_path,
    template_segment,
)

SEGMENTS = [
    # identifiers
    ("123", "{id}"),
    ("0", "{id}"),
    ("9f3c0a1b", "{id}"),  # 8 hex digits with a decimal digit
    ("9F3C0A1B2C3D4E5F", "{id}"),
    ("123e4567-e89b-12d3-a456-426614174000", "{id}"),
    ("123E4567E89B12D3A456426614174000", "{id}"),  # UUID without dashes
    ("dGhpcyBpcyBhIHRva2VuIDEy", "{id}"),  # base64 with digits
    ("aB3_xY9-kL2mN4pQ", "{id}"),  # 16 URL-safe characters, 4 digits
    ("c2VjcmV0LXRva2VuLTE5OTk=", "{id}"),  # padded
    ("dGhpcyBpcyBhIHRva2Vu1", "{id}"),  # one digit among mixed case
    ("k3j5h6g7f8d9s0a1z", "{id}"),  # lower-case base36
    ("cafebabecafe", "{id}"),  # 12+ hex letters: no word is that long in a-f
    ("jane.doe@mail.test", "{email}"),
    ("jane.doe%40mail.test", "{email}"),
    ("123.json", "{id}.json"),
    ("9f3c0a1b2c.png", "{id}.png"),
    ("x" * 65, "{id}"),  # a segment this long is data
    # kept
    ("", ""),
    ("users", "users"),
    ("v1", "v1"),
    ("deadbeef", "deadbeef"),  # hex letters only: a word
    ("abc123", "abc123"),  # short
    ("release-notes-2", "release-notes-2"),  # 15 characters
    ("getting-started-guide", "getting-started-guide"),  # long, no digits
    ("GettingStartedGuide", "GettingStartedGuide"),  # mixed case, no digit
    ("python-install-guide-3", "python-install-guide-3"),  # one digit, one case: a slug
    ("app.css", "app.css"),
    ("index.html", "index.html"),
    ("x" * 64, "x" * 64),
]


@pytest.mark.parametrize(("segment", "expected"), SEGMENTS, ids=[s[:20] or "empty" for s, _ in SEGMENTS])
def test_template_segment(segment: str, expected: str) -> None:
    assert template_segment(segment) == expected


def test_template_path() -> None:
    assert template_path("/users/123/orders/9f3c0a1b2c3d4e5f") == "/users/{id}/orders/{id}"
    assert template_path("/") == "/"
    assert template_path("/a//b/") == "/a//b/"
    assert template_path("/files/123.json/raw") == "/files/{id}.json/raw"


URIS = [
    ("/a/b?x=1", ("/a/b", "x=1")),
    ("/a/b", ("/a/b", None)),
    ("/a?", ("/a", "")),
    ("/a#frag", ("/a", None)),
    ("/a?x=1#frag", ("/a", "x=1")),
    ("http://h:8080/p/q?x=1", ("/p/q", "x=1")),
    ("http://h", ("/", None)),
    ("http://h?x=1", ("/", "x=1")),
]


@pytest.mark.parametrize(("uri", "expected"), URIS, ids=[u for u, _ in URIS])
def test_split_uri(uri: str, expected: tuple[str, str | None]) -> None:
    assert split_uri(uri) == expected


def test_route_of_targets() -> None:
    r = RouteTemplater()
    assert r.route(None) is None
    assert r.route("*") == "*"
    assert r.route("db.internal:443") == "{authority}"
    assert r.route("/users/42?token=abc") == "/users/{id}"  # the query never reaches a label
    assert r.route("http://h/users/43") == "/users/{id}"
    assert r.routes == {"/users/{id}"}
    assert r.stats() == {"routes": 1, "route_overflow": 0}


def test_explicit_patterns_first_in_order_and_outside_the_cap() -> None:
    r = RouteTemplater([RoutePattern("^/api/v1/search", "/api/v1/search"), RoutePattern("^/api/", "/api/*")],
                       max_routes=1)
    assert r.route("/api/v1/search/shoes?q=1") == "/api/v1/search"
    assert r.route("/api/v2/items/12") == "/api/*"
    assert r.route("/a") == "/a"  # the one automatic slot
    assert r.route("/b") == OTHER
    assert r.route("/api/x") == "/api/*"  # explicit routes still pass once the cap is reached
    assert r.stats() == {"routes": 1, "route_overflow": 1}


def test_100000_distinct_ids_give_one_label() -> None:
    r = RouteTemplater()
    labels = {r.route(f"/users/{i}/orders/{i * 7919:x}deadbeef") for i in range(100_000)}
    assert labels == {"/users/{id}/orders/{id}"}
    assert r.stats() == {"routes": 1, "route_overflow": 0}


def test_100000_distinct_words_are_capped_with_other_counted() -> None:
    """Segments templating cannot recognise (short letter-only words) still give at most max_routes labels."""
    r = RouteTemplater()
    labels: set[str | None] = set()
    for i in range(100_000):
        word = "".join(chr(ord("a") + (i // 26 ** k) % 26) for k in range(4))
        labels.add(r.route(f"/wiki/{word}"))
    assert len(labels) == DEFAULT_MAX_ROUTES + 1
    assert OTHER in labels
    assert r.stats() == {"routes": DEFAULT_MAX_ROUTES, "route_overflow": 100_000 - DEFAULT_MAX_ROUTES}
    assert r.route("/wiki/aaaa") == "/wiki/aaaa"  # a label already handed out stays


def test_over_long_route_goes_to_other() -> None:
    r = RouteTemplater()
    long_path = "/" + "/".join(["seg"] * (MAX_ROUTE_CHARS // 4 + 1))
    assert r.route(long_path) == OTHER
    assert r.stats() == {"routes": 0, "route_overflow": 1}
