"""transactions.Conversation: both directions parsed and paired into transactions, as records.

Each scenario is a list of steps on the two directions (data, gap, end of stream, with capture
times). It is fed whole, then one byte at a time, then (short scenarios) split in two at every
offset of every data step; the records and anomaly counts must be the same every time.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from analyzers.http.anomalies import Anomaly
from analyzers.http.messages import Endpoints, Transaction
from analyzers.http.transactions import Conversation
from analyzers.records import Flag, to_record

ENDPOINTS = Endpoints("CunitTestConn0001", "10.0.0.1", 40000, "10.0.0.2", 80, False)

Step = tuple[str, str, Any, float]  # (side "c"/"s", "data"/"gap"/"eof", bytes | int | None, ts)
Splitter = Callable[[int, bytes], list[bytes]]
# The record fields a scenario decides (the others are the connection's or covered in test_records).
FIELDS = ("trans_depth", "method", "uri", "version", "status_code", "info_code", "request_body_len",
          "response_body_len", "ttfb_ms", "duration_ms", "flags", "anomalies", "reason")


def C(data: bytes, ts: float) -> Step:
    return ("c", "data", data, ts)


def S(data: bytes, ts: float) -> Step:
    return ("s", "data", data, ts)


def CGAP(n: int, ts: float) -> Step:
    return ("c", "gap", n, ts)


def SGAP(n: int, ts: float) -> Step:
    return ("s", "gap", n, ts)


def CEOF(ts: float) -> Step:
    return ("c", "eof", None, ts)


def SEOF(ts: float) -> Step:
    return ("s", "eof", None, ts)


def whole(i: int, data: bytes) -> list[bytes]:
    return [data]


def bytewise(i: int, data: bytes) -> list[bytes]:
    return [data[k:k + 1] for k in range(len(data))]


def play(steps: list[Step], reason: str = "closed", split: Splitter = whole,
         resync: bool = False) -> tuple[Conversation, Counter[str]]:
    counts: Counter[str] = Counter()
    conv = Conversation(ENDPOINTS, counts, resync)
    for i, (side, kind, arg, ts) in enumerate(steps):
        parser = conv.client if side == "c" else conv.server
        if kind == "data":
            for piece in split(i, arg):
                parser.data(piece, ts)
        elif kind == "gap":
            parser.gap(arg, ts)
        else:
            parser.eof(ts)
    conv.close(reason)
    return conv, counts


def splitters(steps: list[Step]) -> Iterator[tuple[str, Splitter]]:
    yield "bytewise", bytewise
    if sum(len(a) for _, k, a, _ in steps if k == "data") > 400:
        return
    for i, (_side, kind, arg, _ts) in enumerate(steps):
        if kind != "data":
            continue
        for cut in range(1, len(arg)):
            def split(j: int, data: bytes, i: int = i, cut: int = cut) -> list[bytes]:
                return [data[:cut], data[cut:]] if j == i else [data]
            yield f"step {i} cut at {cut}", split


def outcome(steps: list[Step], reason: str = "closed",
            resync: bool = False) -> tuple[list[dict[str, Any]], Counter[str], Conversation]:
    """Records, anomaly counts and conversation of feeding `steps` whole, after checking that
    every other segmentation gives the same records and counts."""
    conv, counts = play(steps, reason, whole, resync)
    records = [to_record(tx) for tx in conv.out]
    for name, split in splitters(steps):
        other, other_counts = play(steps, reason, split, resync)
        assert [to_record(tx) for tx in other.out] == records, f"fed {name}"
        assert other_counts == counts, f"fed {name}"
    return records, counts, conv


def brief(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in FIELDS} for r in records]


def rec(depth: int, method: str | None, uri: str | None, status: int | None, ttfb: float | None,
        duration: float | None, **kw: Any) -> dict[str, Any]:
    """An expected record (FIELDS only); keyword arguments override the defaults."""
    r: dict[str, Any] = {
        "trans_depth": depth, "method": method, "uri": uri, "version": "1.1", "status_code": status,
        "info_code": None, "request_body_len": 0, "response_body_len": 0, "ttfb_ms": ttfb,
        "duration_ms": duration, "flags": [], "anomalies": [], "reason": None,
    }
    for k, v in kw.items():
        assert k in r, k
        r[k] = v
    return r


def pairs(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(method, uri, status, flags, reason): the pairing, for scenarios where depths are not the point."""
    return [(r["method"], r["uri"], r["status_code"], r["flags"], r["reason"]) for r in records]


OK0 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
BAD400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def get(uri: str, version: str = "1.1") -> bytes:
    return f"GET {uri} HTTP/{version}\r\nHost: h\r\n\r\n".encode()


# Message sequences ----------------------------------------------------------------------------


def test_keep_alive_sequence() -> None:
    steps = [
        C(get("/a"), 1.0), S(OK5, 1.25),
        C(b"POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\n", 2.0), C(b"data", 2.5),
        S(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n", 3.0), S(b"ok", 3.5),
        C(get("/c"), 4.0), S(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 4.125),
    ]
    records, counts, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 250.0, 250.0, response_body_len=5),
        rec(2, "POST", "/b", 201, 500.0, 1500.0, request_body_len=4, response_body_len=2),
        rec(3, "GET", "/c", 404, 125.0, 125.0),
    ]
    assert counts == Counter()


def test_pipelining_three_requests_in_one_write() -> None:
    steps = [
        C(get("/a") + get("/b") + get("/c"), 1.0),
        S(OK5 + b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n", 1.5),
        S(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 2.0),
    ]
    records, _, conv = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 500.0, 500.0, response_body_len=5),
        rec(2, "GET", "/b", 404, 500.0, 500.0),
        rec(3, "GET", "/c", 200, 1000.0, 1000.0, response_body_len=3),
    ]
    assert all(tx.request is not None and tx.response is not None for tx in conv.out)


def test_head_response_has_no_body_and_the_next_pipelined_response_pairs() -> None:
    steps = [
        C(b"HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n" + get("/b"), 1.0),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + OK5, 1.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "HEAD", "/big", 200, 500.0, 500.0),
        rec(2, "GET", "/b", 200, 500.0, 500.0, response_body_len=5),
    ]


def test_100_continue_then_body_then_103_then_final() -> None:
    steps = [
        C(b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 1.0),
        S(b"HTTP/1.1 100 Continue\r\n\r\n", 1.1),
        C(b"hello", 1.25),
        S(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", 1.5),
        S(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 2.0),
        C(get("/next"), 3.0), S(OK0, 3.5),
    ]
    records, _, conv = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/up", 201, 750.0, 1000.0, info_code=103, request_body_len=5, response_body_len=2),
        rec(2, "GET", "/next", 200, 500.0, 500.0),
    ]
    assert len(conv.out) == 2  # interim responses make no transaction of their own


def test_100_continue_alone_sets_info_code() -> None:
    steps = [
        C(b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1.0),
        S(b"HTTP/1.1 100 Continue\r\n\r\n", 1.5), C(b"abc", 2.0), S(OK0, 2.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [rec(1, "PUT", "/f", 200, 500.0, 1500.0, info_code=100, request_body_len=3)]


def test_204_and_304_have_no_body() -> None:
    steps = [
        C(get("/a") + get("/b") + get("/c"), 1.0),
        S(b"HTTP/1.1 204 No Content\r\n\r\n", 1.5),
        S(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n" + OK5, 2.0),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 204, 500.0, 500.0),
        rec(2, "GET", "/b", 304, 1000.0, 1000.0),
        rec(3, "GET", "/c", 200, 1000.0, 1000.0, response_body_len=5),
    ]


def test_content_length_bodies_both_ways() -> None:
    steps = [
        C(b"PUT /f HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello", 1.0), C(b" world", 1.5),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nstor", 2.0), S(b"ed!", 2.25),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [rec(1, "PUT", "/f", 200, 500.0, 1250.0, request_body_len=11, response_body_len=7)]


def test_chunked_with_extensions_and_trailers_both_ways() -> None:
    steps = [
        C(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n0\r\nX-Sum: 1\r\n\r\n", 1.0),
        S(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
          b"A;a=\"b c\"\r\n0123456789\r\n2\r\nxy\r\n0\r\nX-T: done\r\n\r\n", 1.5),
        C(get("/n"), 2.0), S(OK0, 2.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/c", 200, 500.0, 500.0, request_body_len=4, response_body_len=12),
        rec(2, "GET", "/n", 200, 500.0, 500.0),
    ]


def test_close_delimited_response_ends_at_eof() -> None:
    steps = [
        C(get("/a"), 1.0),
        S(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst ", 1.5), S(b"second", 2.0),
        SEOF(2.5), CEOF(2.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/a", 200, 500.0, 1500.0, response_body_len=12)]


def test_http10() -> None:
    steps = [
        C(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1.0),
        S(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi", 1.25),
        C(get("/b", "1.0"), 2.0),
        S(b"HTTP/1.0 404 Not Found\r\n\r\nnope", 2.25), SEOF(2.5), CEOF(2.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 250.0, 250.0, version="1.0", response_body_len=2),
        rec(2, "GET", "/b", 404, 250.0, 500.0, version="1.0", response_body_len=4),
    ]


def test_http09_request_and_headless_response() -> None:
    steps = [C(b"GET /x\r\n", 1.0), S(b"<html>HTTP/1.1 200 OK\r\n", 1.5), S(b"</html>", 2.0), SEOF(3.0)]
    records, _, conv = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/x", None, 500.0, 2000.0, version="0.9", response_body_len=30)]
    assert conv.out[0].response is not None


def test_connect_then_tunnel_bytes_are_not_parsed() -> None:
    hello = bytes.fromhex("16030100f4010000f00303") + b"GET /inner HTTP/1.1\r\n\r\n"
    steps = [
        C(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", 1.0),
        S(b"HTTP/1.1 200 Connection Established\r\n\r\n", 1.5),
        C(hello, 2.0), S(b"\x16\x03\x03\x00\x10HTTP/1.1 200 OK\r\n\r\n", 2.5),
        CGAP(100, 3.0), SEOF(4.0), CEOF(4.0),
    ]
    records, counts, _ = outcome(steps)
    assert brief(records) == [rec(1, "CONNECT", "example.test:443", 200, 500.0, 500.0, flags=["tunnel"])]
    assert counts == Counter()


def test_cleartext_http_inside_a_connect_tunnel_is_a_conversation_of_its_own() -> None:
    """After the 2xx, what the client and server say is the tunnel's conversation: its transactions
    are records on the same connection (depths going on), `host` the tunnel's target, flag tunnel."""
    steps = [
        C(b"CONNECT inner.test:80 HTTP/1.1\r\nHost: inner.test:80\r\n\r\n", 1.0),
        S(b"HTTP/1.1 200 Connection Established\r\n\r\n", 1.5),
        C(b"GET /in HTTP/1.1\r\nHost: inner.test\r\nUser-Agent: u\r\n\r\n" + get("/in2"), 2.0),
        S(OK5 + OK0, 2.5), SEOF(3.0), CEOF(3.0),
    ]
    records, counts, conv = outcome(steps)
    assert brief(records) == [
        rec(1, "CONNECT", "inner.test:80", 200, 500.0, 500.0, flags=["tunnel"]),
        rec(2, "GET", "/in", 200, 500.0, 500.0, response_body_len=5, flags=["tunnel"]),
        rec(3, "GET", "/in2", 200, 500.0, 500.0, flags=["tunnel"]),
    ]
    assert [r["host"] for r in records] == ["inner.test:80"] * 3
    assert {r["uid"] for r in records} == {ENDPOINTS.uid}
    assert records[1]["user_agent"] == "u"
    assert counts == Counter()
    assert (conv.counters.tunnels, conv.counters.tunnel_not_http) == (1, {})


@pytest.mark.parametrize(("inside", "kind"), [
    ([C(bytes.fromhex("16030100f4010000f00303") + bytes(32), 2.0), S(bytes.fromhex("160303003d02") + bytes(16), 2.5)],
     "tls"),
    ([S(b"220 mail.test ESMTP\r\n", 2.0), C(b"EHLO me\r\n", 2.5), S(b"250 mail.test\r\n", 2.6)], "other"),
])
def test_other_protocols_inside_a_connect_tunnel_are_counted_and_skipped(inside: list[Step], kind: str) -> None:
    steps = [C(b"CONNECT inner.test:443 HTTP/1.1\r\n\r\n", 1.0), S(b"HTTP/1.1 200 OK\r\n\r\n", 1.5),
             *inside, C(get("/not-parsed"), 2.8), SEOF(3.0), CEOF(3.0)]
    records, counts, conv = outcome(steps)
    assert brief(records) == [rec(1, "CONNECT", "inner.test:443", 200, 500.0, 500.0, flags=["tunnel"])]
    assert counts == Counter()
    assert (conv.counters.tunnels, conv.counters.tunnel_not_http, conv.counters.not_http) == (1, {kind: 1}, {})


def test_connect_refused_is_not_a_tunnel() -> None:
    steps = [
        C(b"CONNECT h:443 HTTP/1.1\r\n\r\n", 1.0),
        S(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n\r\nno!", 1.5),
        C(get("/after"), 2.0), S(OK0, 2.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "CONNECT", "h:443", 407, 500.0, 500.0, response_body_len=3),
        rec(2, "GET", "/after", 200, 500.0, 500.0),
    ]


def test_upgrade_101_then_websocket_bytes() -> None:
    steps = [
        C(b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 1.0),
        S(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello", 1.5),
        C(b"\x81\x85abcd\x00\x01\x02\x03\x04GET / HTTP/1.1\r\n\r\n", 2.0),
        S(b"\x88\x00HTTP/1.1 200 OK\r\n\r\n", 2.5), SEOF(3.0), CEOF(3.0),
    ]
    records, counts, _ = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/chat", 101, 500.0, 500.0, flags=["tunnel"])]
    assert counts == Counter()


@pytest.mark.parametrize("reason", ["closed", "reset", "idle_timeout", "capture_end"])
def test_request_without_response_at_close(reason: str) -> None:
    steps = [C(get("/a"), 1.0), C(b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok", 2.0)]
    records, _, conv = outcome(steps, reason)
    assert brief(records) == [
        rec(1, "GET", "/a", None, None, None, flags=["no_response"], reason=reason),
        rec(2, "POST", "/b", None, None, None, request_body_len=2, flags=["no_response"], reason=reason),
    ]
    assert [tx.response for tx in conv.out] == [None, None]


def test_response_without_request() -> None:
    records, _, conv = outcome([S(OK5, 1.0), C(get("/a"), 2.0), S(OK0, 2.5)])
    assert brief(records) == [
        rec(1, None, None, 200, None, None, response_body_len=5, flags=["no_request"], reason="no_request"),
        rec(2, "GET", "/a", 200, 500.0, 500.0),
    ]
    assert conv.out[0].request is None


def test_response_before_its_request_started_is_not_paired_with_it() -> None:
    """A response cannot answer a request that began after it (capture lost the real one)."""
    records, _, _ = outcome([C(get("/late"), 2.0), S(OK0, 1.0), S(OK5, 2.5)])
    assert pairs(records) == [(None, None, 200, ["no_request"], "no_request"), ("GET", "/late", 200, [], None)]


def test_garbage_request_line_answered_by_400() -> None:
    steps = [C(b"GARBAGE\r\n\r\n", 1.0), S(BAD400, 1.5), SEOF(2.0), CEOF(2.0)]
    records, _, _ = outcome(steps)
    assert brief(records) == [rec(1, None, None, 400, 500.0, 500.0, anomalies=["bad_request_line"])]


def test_head_anomalies_are_counted() -> None:
    """Every anomaly on a record is also in the analyzer's counts (the stats users see)."""
    steps = [
        C(b"GARBAGE\r\n\r\n", 1.0), S(BAD400, 1.1),
        C(b"GET /a b HTTP/1.1\r\nHost: a\r\nHost: b\r\nBad Name: x\r\n\r\n", 2.0), S(OK0, 2.1),
    ]
    records, counts, _ = outcome(steps)
    assert [r["anomalies"] for r in records] == [
        ["bad_request_line"], ["space_in_request_target", "bad_header_line", "duplicate_host"]]
    assert counts == Counter(bad_request_line=1, space_in_request_target=1, bad_header_line=1, duplicate_host=1)


# Framing anomalies ----------------------------------------------------------------------------


def test_content_length_and_transfer_encoding() -> None:
    steps = [
        C(b"POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"3\r\nabc\r\n0\r\n\r\n" + get("/n"), 1.0),
        S(OK0 + OK0, 1.5),
    ]
    records, counts, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/s", 200, 500.0, 500.0, request_body_len=3,
            anomalies=["content_length_and_transfer_encoding"]),
        rec(2, "GET", "/n", 200, 500.0, 500.0),
    ]
    assert counts == Counter(content_length_and_transfer_encoding=1)


def test_duplicate_content_length() -> None:
    steps = [C(b"POST /d HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc" + get("/n"), 1.0),
             S(OK0 + b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", 1.5)]
    records, counts, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/d", 200, 500.0, 500.0, request_body_len=3, anomalies=["duplicate_content_length"]),
        rec(2, "GET", "/n", 200, 500.0, 500.0, response_body_len=2, anomalies=["duplicate_content_length"]),
    ]
    assert counts == Counter(duplicate_content_length=2)


@pytest.mark.parametrize(
    ("value", "anomaly"),
    [
        ("3\r\nContent-Length: 4", "conflicting_content_length"),
        ("3, 4", "conflicting_content_length"),
        ("abc", "bad_content_length"),
        ("-1", "bad_content_length"),
        (str(1 << 64), "content_length_overflow"),
        (str(1 << 63), "content_length_overflow"),
    ],
)
def test_unusable_request_content_length_answered_by_400(value: str, anomaly: str) -> None:
    """RFC 9112 6.3 step 5: the server answers 400 and closes; the body bytes are not a request."""
    steps = [
        C(f"POST /x HTTP/1.1\r\nContent-Length: {value}\r\n\r\nabcd".encode(), 1.0),
        S(BAD400, 1.5), SEOF(2.0), CEOF(2.0),
    ]
    records, counts, _ = outcome(steps)
    assert brief(records) == [rec(1, "POST", "/x", 400, 500.0, 500.0, anomalies=[anomaly])]
    assert counts == Counter({anomaly: 1})


def test_unusable_response_content_length_reads_to_close() -> None:
    steps = [C(get("/a"), 1.0), S(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(1 << 64).encode() + b"\r\n\r\n"
                                    b"body until close", 1.5), SEOF(2.0)]
    records, counts, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 500.0, 1000.0, response_body_len=16, anomalies=["content_length_overflow"])]
    assert counts == Counter(content_length_overflow=1)


@pytest.mark.parametrize(
    ("size", "anomaly"),
    [(b"zz", "bad_chunk_size"), (b"-1", "bad_chunk_size"), (b"", "bad_chunk_size"),
     (b"10000000000000000", "chunk_size_overflow"), (b"fffffffffffffffff", "chunk_size_overflow")],
)
def test_bad_chunk_size_truncates_and_the_next_request_pairs(size: bytes, anomaly: str) -> None:
    steps = [
        C(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n" + size + b"\r\nxyz\r\n0\r\n\r\n", 1.0),
        S(OK0, 1.5), C(get("/n"), 2.0), S(OK0, 2.5),
    ]
    records, counts, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/c", 200, 500.0, 500.0, request_body_len=2, flags=["truncated"], anomalies=[anomaly]),
        rec(2, "GET", "/n", 200, 500.0, 500.0),
    ]
    assert counts == Counter({anomaly: 1})


def test_oversized_head_is_dropped_whatever_the_segmentation() -> None:
    """Over 64 KiB a head's headers are dropped: its request line is a record, named and cut short,
    whether it came in one segment or many."""
    big = b"GET /big HTTP/1.1\r\nX-Pad: " + b"a" * (64 * 1024) + b"\r\n\r\n"
    steps = [C(get("/first"), 1.0), S(OK0, 1.5), C(big + get("/n"), 2.0)]
    expected = [rec(1, "GET", "/first", 200, 500.0, 500.0),
                rec(2, "GET", "/big", None, None, None, flags=["no_response", "truncated"],
                    anomalies=["oversized_head"], reason="closed"),
                rec(3, "GET", "/n", None, None, None, flags=["no_response"], reason="closed")]
    for split in (bytewise, whole):
        conv, counts = play(steps, split=split)
        assert brief([to_record(tx) for tx in conv.out]) == expected, split.__name__
        assert counts == Counter(oversized_head=1), split.__name__


def test_bad_status_line_still_answers_its_request() -> None:
    """RFC 9112 9.3.2: responses come in request order, so an unreadable response still uses up
    the request it answers; the next response must pair with the next request."""
    steps = [
        C(get("/a"), 1.0), S(b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1.5),
        C(get("/b"), 2.0), S(OK5, 2.5),
    ]
    records, counts, _ = outcome(steps)
    assert counts["bad_status_line"] == 1
    assert [(r["method"], r["uri"], r["status_code"]) for r in records] == [("GET", "/a", None), ("GET", "/b", 200)]
    assert "bad_status_line" in records[0]["anomalies"]


def test_bad_status_line_from_a_non_http_server() -> None:
    steps = [C(get("/a"), 1.0), S(b"SSH-2.0-OpenSSH_9.6\r\n", 1.5), SEOF(2.0), CEOF(2.0)]
    records, counts, _ = outcome(steps)
    assert pairs(records) == [("GET", "/a", None, ["no_response"], "bad_response")]
    assert counts == Counter(bad_status_line=1)


def test_tls_client_hello_is_not_http() -> None:
    hello = bytes.fromhex("16030100f4010000f00303") + bytes(range(32)) + b"\r\n"
    records, counts, conv = outcome([C(hello, 1.0), C(get("/x"), 2.0), CEOF(3.0)])
    assert records == []
    assert counts == Counter(not_http=1)
    assert conv.not_http


NOT_HTTP_CASES = {
    # A reverse shell on a watched port: commands, their output.
    "shell": [C(b"id\n", 1.0), S(b"uid=0(root) gid=0(root)\n", 1.5), C(b"ls -la /\n", 2.0), S(b"total 0\n", 2.5),
              CEOF(3.0), SEOF(3.0)],
    # The listener speaks first (a prompt, a banner).
    "banner": [S(b"$ ", 1.0), C(b"id\n", 1.5), S(b"uid=0(root)\n$ ", 2.0), CEOF(3.0), SEOF(3.0)],
    # Lowercase one-word-and-argument lines have HTTP/0.9's shape; the server never answers.
    "silent server": [C(b"cat /etc/passwd\nexit\n", 1.0), CEOF(2.0), SEOF(2.0)],
    # HTTP/2 with prior knowledge: the preface, then binary frames both ways.
    "http2": [C(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 1.0),
              S(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", 1.5), CEOF(2.0), SEOF(2.0)],
    "tls": [C(bytes.fromhex("16030100f4010000f00303") + bytes(32), 1.0),
            S(bytes.fromhex("160303003d020000390303") + bytes(32), 1.5), CEOF(2.0), SEOF(2.0)],
}


@pytest.mark.parametrize("name", sorted(NOT_HTTP_CASES))
def test_other_protocols_are_no_records_and_counted_by_kind(name: str) -> None:
    records, counts, conv = outcome(NOT_HTTP_CASES[name])
    assert records == []
    assert conv.not_http
    kind = name if name in ("http2", "tls") else "other"
    assert conv.counters.not_http == {kind: 1}
    assert counts["not_http"] == 1


def test_a_status_line_after_a_servers_junk_in_the_same_segment_is_not_written() -> None:
    # Found by bench/fuzz.py (target http): the server speaks first, junk then a status line. The
    # junk makes the connection another protocol; whole, the parser went on to the status line in
    # the same bytes and its response was written, cut in two segments it was not.
    steps = [S(b"\x07CONNECT h:Z80 HTTP/1.1\r\n\rHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1.0),
             CEOF(2.0), SEOF(2.0)]
    records, counts, conv = outcome(steps)
    assert records == []
    assert conv.not_http and conv.counters.not_http == {"other": 1}
    assert counts == Counter(bad_status_line=1, not_http=1)


def test_many_lines_nobody_answers_are_given_up_on_early() -> None:
    steps = [C(b"echo x\n" * 40, 1.0)]
    conv, _ = play(steps, "closed")
    assert conv.not_http and conv.out == [] and conv.counters.not_http == {"other": 1}


def test_a_garbage_line_the_server_answers_with_a_status_is_a_transaction() -> None:
    """What nginx answers 400 is HTTP, whatever the client sent: the record stays."""
    records, counts, conv = outcome([C(b"GARBAGE\r\n\r\n", 1.0), S(BAD400, 1.5), SEOF(2.0), CEOF(2.0)])
    assert pairs(records) == [(None, None, 400, [], None)]
    assert not conv.not_http and counts == Counter(bad_request_line=1)


def test_plain_http_is_http() -> None:
    _, _, conv = outcome([C(get("/x"), 1.0)])
    assert not conv.not_http


@pytest.mark.parametrize(
    ("lines", "anomaly"),
    [
        (b"X-Long: part1\r\n  part2\r\n", "obs_fold"),  # RFC 9112 5.2
        (b"Bad Name: x\r\n", "bad_header_line"),
        (b"NoColon\r\n", "bad_header_line"),
        (b"Content-Length : 3\r\n", "bad_header_line"),  # white space before the colon (RFC 9112 5.1)
    ],
)
def test_bad_header_lines_are_named(lines: bytes, anomaly: str) -> None:
    steps = [C(b"POST /h HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n", 1.0), S(BAD400, 1.5), SEOF(2.0), CEOF(2.0)]
    records, _, _ = outcome(steps)
    assert len(records) == 1
    assert (records[0]["method"], records[0]["status_code"]) == ("POST", 400)
    assert anomaly in records[0]["anomalies"]


# Gaps -----------------------------------------------------------------------------------------


def test_gap_inside_content_length_body() -> None:
    steps = [
        C(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0), CGAP(4, 1.25), C(b"hij", 1.5),
        S(OK0, 2.0), C(get("/n"), 3.0), S(OK0, 3.5),
    ]
    records, _, conv = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/p", 200, 500.0, 1000.0, request_body_len=10, flags=["gap"]),
        rec(2, "GET", "/n", 200, 500.0, 500.0),
    ]
    assert conv.out[0].request is not None and conv.out[0].request.gap


def test_gap_inside_response_body_keeps_pipelined_pairing() -> None:
    """A gap that a Content-Length body absorbs loses no message: pairing must not skip a request."""
    steps = [
        C(get("/a") + get("/b") + get("/c"), 1.0),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1.5), SGAP(4, 1.75), S(b"hij" + OK0 + OK5, 2.0),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 500.0, 1000.0, response_body_len=10, flags=["gap"]),
        rec(2, "GET", "/b", 200, 1000.0, 1000.0),
        rec(3, "GET", "/c", 200, 1000.0, 1000.0, response_body_len=5),
    ]


def test_gap_larger_than_rest_of_body_resyncs_at_next_request() -> None:
    lost = b"defghij" + b"GET /q HTTP/1.1\r\nHo"  # rest of the body and the next head's start
    steps = [
        C(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0),
        CGAP(len(lost), 1.25), C(b"st: h\r\n\r\n", 1.25), S(OK0, 1.5), S(OK0, 2.5),
        C(get("/n"), 3.0), S(OK5, 3.5),
    ]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/p", 200, 250.0, 500.0, request_body_len=10, flags=["gap"]),
        rec(2, None, None, 200, None, None, flags=["gap", "no_request"], reason="no_request"),
        rec(3, "GET", "/n", 200, 500.0, 500.0, response_body_len=5),
    ]


def test_resync_after_a_body_ending_in_a_letter() -> None:
    """The bytes before a request line are usually the end of a body; `...q=abc` then `GET` must
    still be found as the next request."""
    lost = b"defghij" + b"POST /q HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
    steps = [
        C(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0), S(OK0, 1.5),
        CGAP(len(lost), 2.0), C(b"q=abc", 2.0), S(OK0, 2.5),
        C(get("/n"), 3.0), S(OK5, 3.5),
    ]
    records, _, _ = outcome(steps)
    assert pairs(records) == [
        ("POST", "/p", 200, ["gap"], None),
        (None, None, 200, ["gap", "no_request"], "no_request"),
        ("GET", "/n", 200, [], None),
    ]


def test_gap_in_head_drops_the_message_and_resyncs() -> None:
    steps = [
        C(b"GET /a HTTP/1.1\r\nHo", 1.0), CGAP(5, 1.0), C(b"\r\n\r\n", 1.0), S(OK5, 1.5),
        C(get("/n"), 2.0), S(OK0, 2.5),
    ]
    records, _, _ = outcome(steps)
    assert pairs(records) == [(None, None, 200, ["gap", "no_request"], "no_request"), ("GET", "/n", 200, [], None)]


def test_gap_swallowing_a_whole_request_answered_at_once() -> None:
    steps = [
        C(get("/a"), 1.0), S(OK5, 1.1), CGAP(len(get("/b")), 2.0), S(OK5, 2.1),
        C(get("/c"), 3.0), S(OK0, 3.1),
    ]
    records, _, _ = outcome(steps)
    assert pairs(records) == [
        ("GET", "/a", 200, [], None), (None, None, 200, ["gap", "no_request"], "no_request"),
        ("GET", "/c", 200, [], None)]


def test_gap_swallowing_a_whole_pipelined_request() -> None:
    """Which of three pipelined responses answered a request lost in capture cannot be known from
    the bytes: /a's pairing is sure (it came before the gap), the ones after are flagged `gap`."""
    steps = [
        C(get("/a"), 1.0), CGAP(len(get("/b")), 1.0), C(get("/c"), 1.0),
        S(OK5 + OK5 + OK0, 2.0),
    ]
    records, _, _ = outcome(steps)
    assert [(r["method"], r["uri"], r["status_code"], r["response_body_len"], r["flags"]) for r in records] == [
        ("GET", "/a", 200, 5, []), ("GET", "/c", 200, 5, ["gap"]), (None, None, 200, 0, ["no_request"])]


def test_gap_swallowing_a_whole_response() -> None:
    steps = [
        C(get("/a"), 1.0), S(OK5, 1.1), C(get("/b"), 2.0), SGAP(len(OK5), 2.1),
        C(get("/c"), 3.0), S(OK0, 3.1),
    ]
    records, _, conv = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 100.0, 100.0, response_body_len=5),
        rec(2, "GET", "/b", None, None, None, flags=["gap", "no_response"], reason="gap"),
        rec(3, "GET", "/c", 200, 100.0, 100.0),
    ]
    assert conv.out[1].response is None


def test_gap_swallowing_a_whole_pipelined_response() -> None:
    steps = [C(get("/a") + get("/b") + get("/c"), 1.0), S(OK5, 1.5), SGAP(len(OK5), 2.0), S(OK0, 2.5)]
    records, _, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "GET", "/a", 200, 500.0, 500.0, response_body_len=5),
        rec(2, "GET", "/b", None, None, None, flags=["gap", "no_response"], reason="gap"),
        rec(3, "GET", "/c", 200, 1500.0, 1500.0),
    ]


def test_midstream_conversation_resyncs_both_ways() -> None:
    steps = [C(b"rest of a body\r\n" + get("/a"), 1.0), S(b"tail of a response " + OK0 + OK5, 1.5)]
    records, _, _ = outcome(steps, resync=True)
    assert [(*p, r["trans_depth"], r["response_body_len"]) for p, r in zip(pairs(records), records, strict=True)] == [
        ("GET", "/a", 200, [], None, 1, 0), (None, None, 200, ["no_request"], "no_request", 2, 5)]


# Robustness -----------------------------------------------------------------------------------

_REQUESTS = [
    get("/a"), get("/x", "1.0"), b"GET /x\r\n", b"HEAD /h HTTP/1.1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"CONNECT h:443 HTTP/1.1\r\n\r\n", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    b"CONNECT in:80 HTTP/1.1\r\n\r\n", b"GET /\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"id\n",
    b"GET /a HTTP/1.1\r\nX: a\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\r\nContent-Length: 3\r\n\r\nabc",
]
_RESPONSES = [
    OK0, OK5, b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nto close",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n", BAD400,
    b"HTTP/1.1 200 Connection established\r\n\r\n", b"uid=0\n",
]
_FRAGMENTS = [
    b"\r\n", b"\n", b"0\r\n", b"\r\n\r\n", b"GET ", b" HTTP/1.1\r\n", b"HTTP/1.1 ", b"zz\r\n",
    b"Content-Length: 99999999999999999999999\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n",
    b"\x16\x03\x01\x02\x00", b"  folded\r\n", b"Bad Name: x\r\n", b"\x00\xff\x7f\\",
]
_FLAGS = {"midstream", "gap", "no_response", "no_request", "truncated", "tunnel"}


def _random_steps(rng: random.Random) -> list[Step]:
    steps: list[Step] = []
    ts = 1.0
    for _ in range(rng.randrange(1, 10)):
        side = rng.choice("cs")
        ts += rng.choice((0.0, 0.001, 0.25))
        roll = rng.random()
        if roll < 0.07:
            steps.append((side, "gap", rng.randrange(1, 60), ts))
            continue
        valid = _REQUESTS if side == "c" else _RESPONSES
        if roll < 0.6:
            data = rng.choice(valid)
        elif roll < 0.75:
            data = rng.choice(_FRAGMENTS)
        elif roll < 0.88:
            msg = rng.choice(valid)
            i = rng.randrange(len(msg))
            data = msg[:i] + bytes([rng.randrange(256)]) + msg[i + 1:]
        else:
            data = rng.randbytes(rng.randrange(1, 48))
        steps.append((side, "data", data, ts))
    if rng.random() < 0.5:
        steps.append(("s", "eof", None, ts + 0.5))
    if rng.random() < 0.3:
        steps.append(("c", "eof", None, ts + 0.5))
    return steps


def _check_well_formed(txs: list[Transaction], reason: str) -> None:
    seen: set[int] = set()
    depths = []
    for tx in txs:
        assert tx.request is not None or tx.response is not None
        if tx.request is None:
            assert tx.reason == "no_request"
        elif tx.response is None:
            assert tx.reason in (reason, "gap", "bad_response")
        else:
            assert tx.reason is None
        for msg in (tx.request, tx.response):
            if msg is not None:
                assert id(msg) not in seen  # no message in two transactions
                seen.add(id(msg))
                assert msg.body_len >= 0
                assert msg.first_ts <= msg.last_ts
        r = to_record(tx)
        depths.append(r["trans_depth"])
        assert r["trans_depth"] >= 1
        assert set(r["flags"]) <= _FLAGS and len(set(r["flags"])) == len(r["flags"])
        assert ("no_request" in r["flags"]) == (tx.request is None)
        assert ("no_response" in r["flags"]) == (tx.response is None)
        assert (r["ttfb_ms"] is None) == (r["duration_ms"] is None) == (tx.request is None or tx.response is None)
        assert r["ttfb_ms"] is None or 0 <= r["ttfb_ms"] <= r["duration_ms"] + 1e-6
        assert r["status_code"] is None or 100 <= r["status_code"] <= 999
        assert all(isinstance(a, Anomaly) and a for a in r["anomalies"])  # named: members, never bare strings
        assert all(isinstance(f, Flag) for f in r["flags"])
        json.dumps(r, allow_nan=False)
    assert len(set(depths)) == len(depths)


def _cut_as(pieces: dict[int, list[bytes]]) -> Splitter:
    def split(i: int, data: bytes) -> list[bytes]:
        return pieces[i]
    return split


def test_random_input_never_raises_and_gives_well_formed_transactions() -> None:
    """2000 seeded inputs mixing valid messages, fragments, mutations and random bytes, each fed
    whole and in random pieces: no exception, well-formed transactions, the same records."""
    rng = random.Random(20240601)
    produced = 0
    for case in range(2000):
        steps = _random_steps(rng)
        resync = rng.random() < 0.2
        conv, counts = play(steps, "closed", whole, resync)
        _check_well_formed(conv.out, "closed")
        pieces: dict[int, list[bytes]] = {}
        for i, (_side, kind, arg, _ts) in enumerate(steps):
            if kind == "data":
                cuts = sorted(rng.sample(range(1, len(arg)), min(len(arg) - 1, rng.randrange(0, 6))))
                pieces[i] = [arg[a:b] for a, b in zip([0, *cuts], [*cuts, len(arg)], strict=True)]
        other, other_counts = play(steps, "closed", _cut_as(pieces), resync)
        assert [to_record(tx) for tx in other.out] == [to_record(tx) for tx in conv.out], f"case {case}: {steps}"
        assert other_counts == counts, f"case {case}"
        assert all(isinstance(name, Anomaly) for name in counts), f"case {case}: {counts}"
        produced += len(conv.out)
    assert produced > 2000  # the mix is mostly HTTP: most cases make transactions


# Bounds -----------------------------------------------------------------------------------------


def test_pipeline_overflow_writes_the_oldest_and_pairs_their_late_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound the oldest request is written without response; the answers that still come
    are written alone (a HEAD's framed without a body), and pairing resumes in step."""
    monkeypatch.setattr("analyzers.http.transactions.MAX_UNANSWERED_REQUESTS", 2)
    head = b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"
    steps = [C(get("/a") + head + get("/b") + get("/c"), 1.0),
             S(OK5 + OK5.replace(b"hello", b"") + OK0 + OK0, 2.0)]
    records, _counts, conv = outcome(steps)
    assert pairs(records) == [
        ("GET", "/a", None, ["no_response"], "pipeline_overflow"),
        ("HEAD", "/h", None, ["no_response"], "pipeline_overflow"),
        (None, None, 200, ["no_request"], "pipeline_overflow"),
        (None, None, 200, ["no_request"], "pipeline_overflow"),
        ("GET", "/b", 200, [], None),
        ("GET", "/c", 200, [], None),
    ]
    assert [r["response_body_len"] for r in records] == [0, 0, 5, 0, 0, 0]
    assert [r["trans_depth"] for r in records] == [1, 2, 5, 6, 3, 4]
    assert (conv.counters.pipeline_overflow, conv.counters.overflow_responses) == (2, 2)


# Heads that never complete ----------------------------------------------------------------------


def test_request_line_without_line_end_that_the_server_answered() -> None:
    """`GET /` and nothing more; the server answers 400 and closes: one record, request and answer."""
    steps = [C(b"GET /", 1.0), S(BAD400, 2.0), SEOF(2.5), CEOF(3.0)]
    records, counts, _ = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/", 400, 1000.0, 1000.0, flags=["truncated"],
                                  anomalies=["incomplete_head"])]
    assert counts == {"incomplete_head": 1}


def test_head_without_final_blank_line_then_the_client_closes() -> None:
    steps = [C(b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n", 1.0), CEOF(2.0), S(BAD400, 2.5), SEOF(3.0)]
    records, _, _ = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/a", 400, 500.0, 1500.0, flags=["truncated"],
                                  anomalies=["incomplete_head"])]
    assert (records[0]["host"], records[0]["user_agent"]) == ("h", "u")


def test_head_cut_by_the_end_of_the_capture() -> None:
    steps = [C(get("/a"), 1.0), S(OK0, 1.5), C(b"GET /b HTTP/1.1\r\nHo", 2.0), CEOF(3.0)]
    records, _, _ = outcome(steps, reason="capture_end")
    assert pairs(records) == [("GET", "/a", 200, [], None),
                              ("GET", "/b", None, ["no_response", "truncated"], "capture_end")]
    assert records[1]["anomalies"] == ["incomplete_head"]


# HTTP/0.9 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"<html>hello</html>\r\n\r\n" * 50, b"HTTP is fun\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"])
def test_http09_request_and_raw_body_until_close(body: bytes) -> None:
    steps = [C(b"GET /path\r\n", 1.0), S(body[:7], 1.5), S(body[7:], 2.0), SEOF(2.5), CEOF(3.0)]
    records, counts, _ = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/path", None, 500.0, 1500.0, version="0.9",
                                  response_body_len=len(body))]
    assert counts == {}


# Smuggling --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hidden", "oddity"), [(b"\r\r\n", "whitespace_line"), (b"X-A: a\r", "bare_cr")])
def test_request_smuggled_behind_a_hidden_transfer_encoding_is_recorded(hidden: bytes, oddity: str) -> None:
    """The front server reads Content-Length (it stops at the odd line), the back one reads every
    line, chunked: two requests. The POST's record says which reading was followed; the GET is one."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    covered = b"0\r\n\r\n" + smuggled
    post = (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n" % len(covered) + hidden
            + b"Transfer-Encoding: chunked\r\n\r\n" + covered)
    steps = [C(post, 1.0), S(OK0 + OK5, 1.5)]
    records, counts, _ = outcome(steps)
    assert brief(records) == [
        rec(1, "POST", "/a", 200, 500.0, 500.0,
            anomalies=[oddity, "content_length_and_transfer_encoding", "ambiguous_framing_chunked"]),
        rec(2, "GET", "/smuggled", 200, 500.0, 500.0, response_body_len=5),
    ]
    assert counts == {oddity: 1, "content_length_and_transfer_encoding": 1, "ambiguous_framing_chunked": 1}


def test_transactions_waiting_for_proof_of_http_keep_the_restart_pin() -> None:
    """A lower-case one-line request and a raw answer prove nothing: the transaction is held, not
    written, so a restart must replay from its start (the pin stays); at the close, nobody having
    spoken HTTP, the connection is another protocol."""
    conv = Conversation(ENDPOINTS, Counter(), pin=7)
    conv.client.data(b"get /x\r\n", 1.0)
    conv.server.data(b"some output\n", 1.5)
    conv.server.eof(2.0)
    assert (conv.out, len(conv.unproven), conv.pin) == ([], 1, 7)
    conv.client.eof(2.0)
    conv.close("closed")
    assert (conv.out, conv.not_http, conv.counters.not_http) == ([], True, {"other": 1})


def test_request_line_cut_before_its_version_answered_with_a_bare_body() -> None:
    """`GET /path` and the client's FIN, then HTTP/0.9's kind of answer: one record, the body its."""
    steps = [C(b"GET /path", 1.0), CEOF(1.5), S(b"<html>hi</html>", 2.0), SEOF(2.5)]
    records, counts, conv = outcome(steps)
    assert brief(records) == [rec(1, "GET", "/path", None, 500.0, 1500.0, version="0.9", flags=["truncated"],
                                  anomalies=["incomplete_head"], response_body_len=15)]
    assert counts == {"incomplete_head": 1} and not conv.not_http
