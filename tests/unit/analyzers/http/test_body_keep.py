"""Request bodies kept for replay: only when asked, only wanted methods, bounded, the same on the
fast path (`feed_records`) as on `feed`, fed whole or one byte at a time."""

from __future__ import annotations

from collections import Counter

import pytest
from helpers import pcapgen as g
from helpers.pcapgen import Conn, Segment

from analyzers import BodyKeep, Pipeline, Transaction, split_records
from analyzers.http.body_keep import KeptBody, wants_body
from analyzers.http.messages import Endpoints
from analyzers.http.transactions import Conversation
from watcher.capture.pcapfile import CaptureParser

T0 = 1_700_000_000 * 10**9
BIG = bytes(range(256)) * 40  # 10240 bytes, over several segments
ENDPOINTS = Endpoints("C1", "10.0.0.1", 30000, "10.1.0.1", 80, False)


def post(uri: str, body: bytes, method: str = "POST") -> bytes:
    return f"{method} {uri} HTTP/1.1\r\nHost: h.test\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def chunked_post(uri: str, body: bytes, size: int = 1000) -> bytes:
    parts = [f"POST {uri} HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n".encode()]
    for i in range(0, len(body), size):
        parts.append(b"%x\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n")
    return b"".join(parts) + b"0\r\n\r\n"


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def capture() -> bytes:
    out: list[Segment] = []
    c = Conn(out, 1)
    c.open(T0)
    t = T0 + 10_000
    for req in (post("/small", b"a=1&b=2"), post("/big", BIG), chunked_post("/chunked", BIG),
                post("/put", b"put-body", "PUT"), b"GET /get HTTP/1.1\r\nHost: h.test\r\n\r\n",
                post("/huge", BIG * 10)):
        t = c.send(t, True, req)
        t = c.send(t + 1000, False, OK)
    c.close(t)
    return g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(out))


def bodies(txs: list[Transaction]) -> dict[str, tuple[bytes | None, str | None]]:
    out = {}
    for tx in txs:
        assert tx.request is not None and tx.request.head is not None
        out[tx.request.head.uri] = (tx.request.body, tx.request.body_skip)  # type: ignore[union-attr]
    return out


def run(data: bytes, keep: BodyKeep | None, fast: bool) -> list[Transaction]:
    p = Pipeline()
    p.keep_bodies(keep)
    parser = CaptureParser()
    txs: list[Transaction] = []
    if fast:
        start = parser.header(data, 0)
        layout = parser.record_layout()
        assert layout is not None
        offsets, _ = split_records(data, start, len(data), layout)
        txs += p.feed_records(data, offsets, layout)
    else:
        batches, _ = parser.parse(data, 0)
        for linktype, frames in batches:
            txs += p.feed(linktype, frames)
    return txs + p.close()


@pytest.mark.parametrize("fast", [False, True])
def test_bodies_kept_for_wanted_methods_up_to_the_limit(fast: bool) -> None:
    keep = BodyKeep(frozenset({"POST"}), limit=len(BIG))
    got = bodies(run(capture(), keep, fast))
    assert got == {
        "/small": (b"a=1&b=2", None),
        "/big": (BIG, None),
        "/chunked": (BIG, None),  # chunk data without its framing
        "/put": (None, None),  # PUT not wanted
        "/get": (None, None),
        "/huge": (None, "too_large"),  # announced bigger than the limit
    }


@pytest.mark.parametrize("fast", [False, True])
def test_off_by_default_keeps_nothing(fast: bool) -> None:
    got = bodies(run(capture(), None, fast))
    assert all(v == (None, None) for v in got.values())
    assert len(got) == 6


def test_chunked_body_over_the_limit_is_dropped_and_marked() -> None:
    keep = BodyKeep(frozenset({"POST"}), limit=len(BIG) - 1)
    got = bodies(run(capture(), keep, True))
    assert got["/chunked"] == (None, "too_large")
    assert got["/big"] == (None, "too_large")
    assert got["/small"] == (b"a=1&b=2", None)


def test_one_byte_at_a_time_and_a_gap_marks_the_request() -> None:
    conv = Conversation(ENDPOINTS, Counter())
    conv.bodies = BodyKeep(frozenset({"POST"}))
    for i, b in enumerate(post("/x", b"hello world")):
        conv.client.data(bytes([b]), 1.0 + i)
    conv.server.data(OK, 100.0)
    tx, = conv.out
    assert tx.request is not None and tx.request.body == b"hello world" and not tx.request.gap
    conv.out.clear()
    conv.client.data(post("/y", b"0123456789")[:-6], 200.0)
    conv.client.gap(3, 201.0)
    conv.client.data(b"789", 202.0)
    conv.server.data(OK, 203.0)
    tx, = conv.out
    assert tx.request is not None and tx.request.gap  # replay refuses it (policy: "body_gap")


def test_wants_body_and_kept_body_bound() -> None:
    keep = BodyKeep(frozenset({"POST"}), limit=10)
    assert wants_body(keep, "GET", {"content-length": "5"}) is None
    assert wants_body(keep, "POST", {}) is None
    assert wants_body(keep, "POST", {"content-length": "0"}) is None
    assert wants_body(keep, "POST", {"content-length": "11"}) == -1
    assert wants_body(keep, "POST", {"content-length": ["5", "5"]}) == 10
    assert wants_body(keep, "POST", {"transfer-encoding": "chunked"}) == 10
    k = KeptBody(4)
    k.add(b"ab")
    k.add(b"cd")
    assert bytes(k.data) == b"abcd" and not k.over
    k.add(b"e")
    assert k.over and not k.data


@pytest.mark.parametrize("fast", [False, True])
def test_response_bodies_of_wanted_methods_when_asked(fast: bool) -> None:
    out: list[Segment] = []
    c = Conn(out, 2)
    c.open(T0)
    t = c.send(T0 + 10_000, True, b"GET /a HTTP/1.1\r\nHost: h.test\r\n\r\n")
    t = c.send(t + 1000, False, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG)
    t = c.send(t + 1000, True, post("/p", b"x"))
    t = c.send(t + 1000, False, OK)
    t = c.send(t + 1000, True, b"GET /close HTTP/1.1\r\nHost: h.test\r\n\r\n")
    t = c.send(t + 1000, False, b"HTTP/1.0 200 OK\r\n\r\n" + BIG)
    c.close(t)
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(out))
    txs = run(data, BodyKeep(frozenset({"GET"}), responses=True), fast)
    got = {tx.request.head.uri: tx.response.body for tx in txs}  # type: ignore[union-attr]
    assert got == {"/a": BIG, "/p": None, "/close": BIG}
