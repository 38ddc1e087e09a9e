from __future__ import annotations

from helpers.replaytx import transaction

from watcher.replay.policy import (
    Policy,
    SkipReason,
    Target,
    allowed_target,
    build_request,
    parse_target,
    sampled,
    skip_reason,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TARGET = Target("http://127.0.0.1:8081", "127.0.0.1", 8081, "")


def test_defaults_replay_only_safe_methods_without_credentials() -> None:
    p = Policy()
    assert skip_reason(transaction(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", OK), p) is None
    assert skip_reason(transaction(b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"), p) is None
    post = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    assert skip_reason(transaction(post, OK), p) == SkipReason.METHOD
    assert skip_reason(transaction(post, OK), Policy(methods=frozenset({"POST"}))) is None
    auth = b"GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: Basic eA==\r\n\r\n"
    cookie = b"GET /a HTTP/1.1\r\nHost: h\r\nCookie: s=1\r\n\r\n"
    assert skip_reason(transaction(auth, OK), p) == SkipReason.CREDENTIALS
    assert skip_reason(transaction(cookie, OK), p) == SkipReason.CREDENTIALS
    assert skip_reason(transaction(auth, OK), Policy(allow_credentials=True)) is None


def test_body_not_kept_or_too_large_is_not_replayed() -> None:
    p = Policy(methods=frozenset({"POST"}))
    post = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    assert skip_reason(transaction(post, OK, methods=frozenset({"GET"})), p) == SkipReason.BODY_NOT_KEPT
    big = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 70000\r\n\r\n" + bytes(70000)
    assert skip_reason(transaction(big, OK), p) == SkipReason.BODY_TOO_LARGE


def test_request_sent_drops_hop_by_hop_sets_the_id_and_keeps_the_body() -> None:
    raw = (b"PUT /x?q=1 HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive, X-Trace\r\nX-Trace: 1\r\n"
           b"Keep-Alive: 5\r\nTE: trailers\r\nX-Request-ID: old\r\nAccept: */*\r\nContent-Length: 4\r\n\r\nbody")
    tx = transaction(raw, OK)
    req = build_request(tx, "ev1", Policy(methods=frozenset({"PUT"})), TARGET)
    assert (req.method, req.target, req.body) == ("PUT", "/x?q=1", b"body")
    assert req.headers == [("host", "shop.test"), ("accept", "*/*"), ("X-Request-ID", "ev1"),
                           ("content-length", "4")]
    req = build_request(tx, "ev1", Policy(host="shadow.test", id_header="X-Trace-Id"), TARGET)
    assert req.headers[0] == ("host", "shadow.test")
    assert ("X-Trace-Id", "ev1") in req.headers and ("x-request-id", "old") in req.headers


def test_targets_and_sampling() -> None:
    t = parse_target("http://127.0.0.1:8081/base/")
    assert isinstance(t, Target) and (t.host, t.port, t.prefix) == ("127.0.0.1", 8081, "/base")
    assert isinstance(parse_target("https://x"), str)
    assert isinstance(parse_target("http://:80"), str)
    assert allowed_target("http://a:1/", ["http://a:1"]) and not allowed_target("http://b:1", ["http://a:1"])
    picked = sum(sampled(f"C{i}", 25.0) for i in range(4000))
    assert 900 < picked < 1100
    assert all(sampled(f"C{i}", 25.0) == sampled(f"C{i}", 25.0) for i in range(100))


def test_a_body_with_a_capture_gap_or_cut_short_is_not_replayed() -> None:
    from collections import Counter

    from analyzers import BodyKeep, Endpoints
    from analyzers.http.transactions import Conversation

    p = Policy(methods=frozenset({"POST"}))
    conv = Conversation(Endpoints("C1", "10.0.0.1", 1, "10.1.0.1", 80, False), Counter())
    conv.bodies = BodyKeep(frozenset({"POST"}))
    conv.client.data(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123", 1.0)
    conv.client.gap(3, 2.0)
    conv.client.data(b"789", 3.0)
    conv.server.data(OK, 4.0)
    tx, = conv.out
    assert skip_reason(tx, p) == SkipReason.BODY_GAP
