from __future__ import annotations

import gzip
import re

from helpers.replaytx import transaction

from watcher.replay.client import Answer
from watcher.replay.compare import CompareSpec, body_hash, compare
from watcher.replay.summary import Summary, percentile

REQ = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"


def resp(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def test_match_per_field() -> None:
    tx = transaction(REQ, resp(b"hello"), took=0.25)
    same = compare(tx, Answer(200, {"content-type": "text/plain"}, b"hello", 0.1, 1), CompareSpec())
    assert same["match"] == {"status": True, "body": True, "header:content-type": True} and same["matched"]
    assert same["original_latency"] == 0.25 and same["latency"] == 0.1 and same["body_len"] == 5
    other = compare(tx, Answer(500, {"content-type": "text/html"}, b"hellO", 0.1, 1), CompareSpec())
    assert other["match"] == {"status": False, "body": False, "header:content-type": False}
    assert not other["matched"]


def test_decoded_bodies_and_masks() -> None:
    tx = transaction(REQ, resp(gzip.compress(b"id=123 rest"), b"Content-Encoding: gzip\r\n"))
    plain = Answer(200, {"content-type": "text/plain"}, b"id=456 rest", 0.1, 1)
    assert compare(tx, plain, CompareSpec())["match"]["body"] is False
    masked = CompareSpec(masks=(re.compile(rb"id=\d+"),))
    assert compare(tx, plain, masked)["match"]["body"] is True
    assert body_hash(gzip.compress(b"abc"), "gzip", CompareSpec()) == body_hash(b"abc", None, CompareSpec())
    ignored = CompareSpec(headers=("content-type", "date"), ignore_headers=frozenset({"date"}))
    assert set(compare(tx, plain, ignored)["match"]) == {"status", "body", "header:content-type"}


def test_summary_percentages_and_percentiles() -> None:
    s = Summary()
    for i in range(4):
        s.answered("GET /a", {"match": {"status": i != 0, "body": i < 2}, "latency": 0.01 * (i + 1),
                              "original_latency": 0.002})
    s.failed("GET /a", "read_timeout")
    row, = s.rows()
    assert row["count"] == 5 and row["status_match_pct"] == 75.0 and row["body_match_pct"] == 50.0
    assert row["p50_shadow_ms"] == 20.0 and row["p99_shadow_ms"] == 40.0 and row["p50_original_ms"] == 2.0
    assert row["failures"] == {"read_timeout": 1}
    lines = s.table().splitlines()
    assert lines[0].split()[:4] == ["route", "count", "status%", "body%"]
    assert lines[1].split() == ["GET", "/a", "5", "75.0", "50.0", "2.0ms", "20.0ms", "2.0ms", "40.0ms",
                                "read_timeout=1"]
    assert percentile([], 50) is None and percentile([3.0, 1.0, 2.0], 50) == 2.0
