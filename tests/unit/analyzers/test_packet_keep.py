"""packet_keep and the pipeline keeping packets: the bounds let go exactly what they say, counted,
and a transaction carries its connection's frames, byte for byte, up to the one that completed it."""

from __future__ import annotations

import pytest
from helpers import pcapgen as g
from helpers.pcapgen import Conn, Segment

from analyzers.http.messages import Transaction
from analyzers.packet_keep import PACKET_OVERHEAD, Kept, PacketKeep
from analyzers.pipeline import Pipeline, split_records
from analyzers.tcp.frames import FrameDecoder
from watcher.capture.pcapfile import CaptureParser

T0 = 1_700_000_000 * 10**9
COST = 100 + PACKET_OVERHEAD  # what one 100-byte frame counts for


def add(keep: PacketKeep, kept: Kept | None, n: int, opened: bool = False) -> Kept:
    for _ in range(n):
        kept = keep.add(kept, 1.0, 1, b"x" * 100, opened)
    assert kept is not None
    return kept


def test_per_connection_bound_keeps_the_handshake_and_the_latest() -> None:
    keep = PacketKeep(connection_bytes=10 * COST, total_bytes=1 << 30)
    kept = add(keep, None, 23, opened=True)
    assert [p[0] for p in kept.snapshot()] == [0, 1, 2, *range(16, 23)]
    assert (keep.counters.packets, keep.counters.let_go, keep.counters.held_bytes) == (23, 13, 10 * COST)


def test_a_connection_seen_midstream_has_no_handshake_to_keep() -> None:
    keep = PacketKeep(connection_bytes=4 * COST, total_bytes=1 << 30)
    kept = add(keep, None, 9, opened=False)
    assert [p[0] for p in kept.snapshot()] == [5, 6, 7, 8]
    assert keep.counters.let_go == 5


def test_total_bound_lets_the_least_recently_active_connection_go() -> None:
    keep = PacketKeep(connection_bytes=1 << 30, total_bytes=10 * COST)
    a = add(keep, None, 4)
    b = add(keep, None, 4)
    add(keep, a, 1)  # a is now more recent than b
    c = add(keep, None, 2)  # 11 packets: b's 4 go
    assert (len(a.snapshot()), len(b.snapshot()), len(c.snapshot())) == (5, 0, 2)
    assert (keep.counters.evicted, keep.counters.connections, keep.counters.held_bytes) == (4, 2, 7 * COST)
    add(keep, b, 1)  # b active again: kept anew, counted again
    assert (len(b.snapshot()), keep.counters.connections, keep.counters.held_bytes) == (1, 3, 8 * COST)


def test_the_newest_connection_is_never_its_own_victim() -> None:
    keep = PacketKeep(connection_bytes=1 << 30, total_bytes=3 * COST)
    kept = add(keep, None, 5)
    assert len(kept.snapshot()) == 5 and keep.counters.evicted == 0


def test_forget_releases_and_snapshots_stay() -> None:
    keep = PacketKeep()
    kept = add(keep, None, 3)
    snap = kept.snapshot()
    keep.forget(kept)
    keep.forget(kept)  # twice is harmless
    keep.forget(None)
    assert (keep.counters.held_bytes, keep.counters.connections, len(snap)) == (0, 0, 3)


# The pipeline ----------------------------------------------------------------------------------


def get(uri: str) -> bytes:
    return f"GET {uri} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def two_connections() -> bytes:
    """Two keep-alive connections, interleaved, two transactions each, the second body 5 segments;
    then a connection that is not HTTP."""
    segs: list[Segment] = []
    a, b, x = Conn(segs, 1), Conn(segs, 2), Conn(segs, 3)
    t = T0
    a.open(t)
    b.open(t + 500)
    for uri, body in (("/one", b"1" * 10), ("/two", b"2" * 7000)):
        t = a.send(t + 10_000, True, get(uri))
        t = b.send(t + 10_000, True, get(uri + "?b"))
        t = a.send(t + 10_000, False, ok(body))
        t = b.send(t + 10_000, False, ok(body))
    x.open(t + 10_000)
    x.send(t + 20_000, True, b"\x16\x03\x01 not http at all")
    a.close(t + 30_000)
    b.close(t + 40_000, reset=True)
    return g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segs))


def frames_of(data: bytes) -> list[tuple[int, float, bytes]]:
    (batch,), _ = CaptureParser().parse(data, 0)
    assert batch[0] == g.LINKTYPE_ETHERNET
    return list(batch[1])


def ports(frame: bytes) -> frozenset[int]:
    d = FrameDecoder().link_decoder(g.LINKTYPE_ETHERNET)(frame)
    assert d is not None
    return frozenset((d[2], d[3]))


def run(data: bytes, fast: bool, keep: bool = True) -> tuple[list[Transaction], Pipeline]:
    p = Pipeline()
    if keep:
        p.keep_packets(10_000_000)
    if fast:
        parser = CaptureParser()
        start = parser.header(data, 0)
        layout = parser.record_layout()
        assert layout is not None
        offsets, _ = split_records(data, start, len(data), layout)
        txs = p.feed_records(data, offsets, layout)
    else:
        (batch,), _ = CaptureParser().parse(data, 0)
        txs = p.feed(batch[0], batch[1])
    return txs + p.close(), p


@pytest.mark.parametrize("fast", [False, True], ids=["feed", "feed_records"])
def test_transactions_carry_their_connections_frames_up_to_their_completion(fast: bool) -> None:
    data = two_connections()
    frames = frames_of(data)
    txs, p = run(data, fast)
    assert len(txs) == 4
    for tx in txs:
        conn = frozenset((tx.conn.client_port, tx.conn.server_port))
        upto = [(off, ts, f) for off, ts, f in frames if ports(f) == conn and off <= tx.done_pos]
        assert tx.packets is not None
        kept = tx.packets.packets()
        assert [(p[1], p[2], p[3]) for p in kept] == [(ts, 1, f) for _, ts, f in upto]
        assert [p[0] for p in kept] == list(range(len(upto)))
        assert len(upto) >= 5  # the handshake, a request, a response at least
    st = p.stats()["packets_kept"]
    # Every packet of the two HTTP connections but the ACK after both FINs (the connection is gone
    # by then), and the other connection's handshake and first payload, after which it is let go.
    http = [f for _, _, f in frames if ports(f) in ({30002, 80}, {30004, 80})]
    assert st["packets"] == len(http) - 1 + 4
    assert (st["held_bytes"], st["connections"], st["let_go"], st["evicted"]) == (0, 0, 0, 0)


def test_nothing_is_kept_unless_asked() -> None:
    txs, p = run(two_connections(), fast=True, keep=False)
    assert len(txs) == 4 and all(tx.packets is None for tx in txs)
    assert "packets_kept" not in p.stats()
    p.keep_packets(5000, 9000)
    p.keep_packets(6000, 8000)  # new bounds, the same store
    assert p.flows.keep is not None and (p.flows.keep.connection_bytes, p.flows.keep.total_bytes) == (6000, 8000)
    p.keep_packets(None)
    assert p.flows.keep is None
