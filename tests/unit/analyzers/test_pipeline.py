"""pipeline: `feed_records` (the fast path, on pcap record bytes) against `feed` (the reference, one
tuple per frame); `split_records`; and `Router`, which splits a capture's frames between workers.

`feed_records` must be `feed` made cheaper, nothing else: every case here runs both on the same
capture and compares every output line, every input position a transaction carries, every counter
and the restart pin. The traffic is built here (many connections interleaved, bodies of many
segments, chunked, pipelined, HEAD, 100-continue, a tunnel, TLS, resets, idle time, port reuse),
then written in every link layer the fast path decodes itself and several it leaves to the
decoder, and impaired the ways tests/pcapgen.py impairs: re-cut, duplicated, reordered, lost.
The shared corpus captures go through the same comparison when they are there.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from helpers import impair
from helpers import pcapgen as g
from helpers.env import CORPUS
from helpers.pcapgen import Conn, Segment

from analyzers.http.messages import Transaction
from analyzers.pipeline import Pipeline, split_records
from analyzers.shard import Router
from analyzers.tcp.frames import ACK, RecordLayout
from watcher.capture.pcapfile import CaptureParser, Frame
from watcher.read.lines import record_line

PSH = 0x08
T0 = 1_700_000_000 * 10**9


def get(uri: str, extra: bytes = b"") -> bytes:
    return f"GET {uri} HTTP/1.1\r\nHost: h.test\r\nUser-Agent: t/1\r\n".encode() + extra + b"\r\n"


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def chunked(body: bytes, size: int = 3000) -> bytes:
    parts = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(0, len(body), size):
        parts.append(b"%x\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n")
    return b"".join(parts) + b"0\r\n\r\n"


def traffic(seed: int = 1) -> list[Segment]:
    """Many connections at once, every kind of exchange the fast path has to tell apart."""
    rng = random.Random(seed)
    streams: list[list[Segment]] = []
    for n in range(12):
        out: list[Segment] = []
        c = Conn(out, n, 8080 if n % 5 == 4 else 80)
        t = T0 + n * 3_000_000
        c.open(t)
        t += 10_000
        for k in range(rng.randint(2, 5)):
            body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 10, 1500, 4000, 20000])))
            kind = (n + k) % 6
            if kind == 0:  # plain GET, body over many segments
                t = c.send(t, True, get(f"/{n}/{k}?q=1"))
                t = c.send(t + 5000, False, ok(body))
            elif kind == 1:  # chunked
                t = c.send(t, True, get(f"/chunked/{k}"))
                t = c.send(t + 5000, False, chunked(body))
            elif kind == 2:  # pipelined GET, HEAD, GET in one segment
                t = c.send(t, True, get("/a") + b"HEAD /b HTTP/1.1\r\nHost: h.test\r\n\r\n" + get("/c"))
                t = c.send(t + 5000, False, ok(b"aa") + ok(body)[:ok(body).index(b"\r\n\r\n") + 4] + ok(b"cc"))
            elif kind == 3:  # POST with 100-continue, body sent after the interim response
                post = b"POST /up HTTP/1.1\r\nHost: h.test\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                t = c.send(t, True, post % len(body))
                t = c.send(t + 1000, False, b"HTTP/1.1 100 Continue\r\n\r\n")
                t = c.send(t + 1000, True, body)
                t = c.send(t + 1000, False, ok(b"done"))
            elif kind == 4:  # a head in tiny segments, a body in odd ones
                t = c.send(t, True, get(f"/tiny/{k}"), mss=7)
                t = c.send(t + 5000, False, ok(body), mss=977)
            else:  # response without length, ended by the close
                t = c.send(t, True, get("/close", b"Connection: close\r\n"))
                t = c.send(t + 5000, False, b"HTTP/1.0 200 OK\r\n\r\n" + body)
                break
            t += rng.randint(1_000, 2_000_000)
        if n != 7:  # left open: the late connection below comes after the idle timeout
            c.close(t, reset=n % 4 == 3)
        streams.append(out)
    # A TLS connection (ignored after its first bytes), a tunnel, and a port reused with a new ISN.
    out = []
    tls = Conn(out, 40, 443)
    tls.open(T0 + 500_000)
    tls.send(T0 + 600_000, True, bytes.fromhex("16030100f4010000f00303") + bytes(300))
    tls.send(T0 + 700_000, False, bytes(3000))
    tls.close(T0 + 800_000)
    streams.append(out)
    out = []
    tun = Conn(out, 41, 3128)
    tun.open(T0 + 900_000)
    tun.send(T0 + 1_000_000, True, b"CONNECT x.test:443 HTTP/1.1\r\nHost: x.test:443\r\n\r\n")
    tun.send(T0 + 1_100_000, False, b"HTTP/1.1 200 Connection established\r\n\r\n")
    tun.send(T0 + 1_200_000, True, bytes(5000))
    tun.send(T0 + 1_300_000, False, bytes(9000))
    tun.close(T0 + 1_400_000)
    streams.append(out)
    for round_ in range(2):
        out = []
        again = Conn(out, 42)
        again.cseq += round_ * 7_777_777
        again.open(T0 + 2_000_000 + round_ * 50_000_000)
        again.send(T0 + 2_100_000 + round_ * 50_000_000, True, get(f"/again/{round_}"))
        again.send(T0 + 2_200_000 + round_ * 50_000_000, False, ok(b"x" * 3000))
        again.close(T0 + 2_300_000 + round_ * 50_000_000)
        streams.append(out)
    out = []
    late = Conn(out, 43)
    late.open(T0 + 400 * 10**9)
    late.send(T0 + 400 * 10**9 + 100_000, True, get("/late"))
    late.send(T0 + 400 * 10**9 + 200_000, False, ok(b"late"))
    streams.append(out)
    merged = [s for out in streams for s in out]
    merged.sort(key=lambda s: s.ts_ns)  # stable: each connection keeps its own order
    return merged


def odd_frames(linktype: int) -> list[g.Packet]:
    """Frames the fast path must leave to the decoder, each with its own count or outcome."""
    s = Segment(T0 + 1, bytes([10, 9, 9, 9]), bytes([10, 1, 0, 1]), 40000, 80, 1, 1, ACK | PSH, b"GET /o HTTP/1.1\r\n")
    ip = g.ip_packet(s)
    udp = g.ipv4_header(s.src, s.dst, 8, proto=g.PROTO_UDP) + struct.pack("!HHHH", 53, 53, 8, 0)
    fragment = g.ipv4_header(s.src, s.dst, len(ip) - 20, frag=0x2000) + ip[20:]
    tso = ip[:2] + b"\0\0" + ip[4:]  # total length 0, as written by a host doing segmentation offload
    bad_tcp = ip[:32] + bytes([0x30]) + ip[33:]  # TCP data offset 3
    wrap = {g.LINKTYPE_ETHERNET: g.ethernet, g.LINKTYPE_LINUX_SLL: g.sll, g.LINKTYPE_LINUX_SLL2: g.sll2,
            g.LINKTYPE_RAW: lambda ip: ip, g.LINKTYPE_NULL: g.null, g.LINKTYPE_LOOP: g.loop}[linktype]
    frames = [wrap(x) for x in (udp, fragment, tso, bad_tcp)]
    frames.append(wrap(ip)[:-5])  # snapped: the capture holds less than the IP header says
    frames.append(wrap(ip)[:20])  # cut inside the headers
    return [(T0 + 1 + i, f) for i, f in enumerate(frames)]


# Running both ----------------------------------------------------------------------------------


Outcome = tuple[list[tuple[Any, ...]], dict[str, Any], int | None]


def describe(tx: Transaction) -> tuple[Any, ...]:
    """Everything a transaction carries out: its line, and the input positions of its parts."""
    pos = [(m.pos, m.pos_index) for m in (tx.request, tx.response) if m is not None]
    return record_line(tx), tx.done_pos, pos


def reference(data: bytes, base: int = 0) -> Outcome:
    """`feed`, on the frames CaptureParser cuts out."""
    p = Pipeline()
    p.set_source("cap.pcap")
    txs: list[Transaction] = []
    batches, _ = CaptureParser().parse(data, 0)
    for linktype, frames in batches:
        txs += p.feed(linktype, frames, base)
    pin = p.pin()
    txs += p.close()
    return [describe(tx) for tx in txs], p.stats(), pin


def fast(data: bytes, base: int = 0, window: int = 1 << 20) -> Outcome:
    """`feed_records`, on the bytes themselves, in windows of about `window` bytes (ending
    anywhere, as reads do: an unfinished record waits for the next window)."""
    p = Pipeline()
    p.set_source("cap.pcap")
    parser = CaptureParser()
    start = parser.header(data, 0)
    layout = parser.record_layout()
    assert layout is not None
    txs: list[Transaction] = []
    pos = start
    while pos < len(data):
        end = min(len(data), pos + window)
        offsets, stop = split_records(data, pos, end, layout)
        if stop == pos:
            window *= 2
            continue
        txs += p.feed_records(data, offsets, layout, base)
        pos = stop
    pin = p.pin()
    txs += p.close()
    return [describe(tx) for tx in txs], p.stats(), pin


def same(data: bytes, **kw: Any) -> Outcome:
    want = reference(data)
    got = fast(data, **kw)
    assert got[0] == want[0]
    assert got[1:] == want[1:]
    return want


# The fast path against the reference -----------------------------------------------------------

# name -> (pcapgen link, its link type, pcapgen options)
LINKS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "ethernet": ("ethernet", g.LINKTYPE_ETHERNET, {}),
    "sll": ("sll", g.LINKTYPE_LINUX_SLL, {}),
    "sll2": ("sll2", g.LINKTYPE_LINUX_SLL2, {}),
    "vlan": ("vlan", g.LINKTYPE_ETHERNET, {}),  # EtherType 0x8100: every frame through the decoder
    "raw": ("raw", g.LINKTYPE_RAW, {}),
    "null": ("null", g.LINKTYPE_NULL, {}),
    "ipv4-options": ("ethernet", g.LINKTYPE_ETHERNET, {"ipv4_options": b"\x01" * 4}),
}


@pytest.mark.parametrize("name", sorted(LINKS))
def test_every_link_layer(name: str) -> None:
    link, linktype, kw = LINKS[name]
    packets = g.frames(traffic(), link, **kw)
    want = same(g.pcap_bytes(linktype, packets))
    assert len(want[0]) > 40
    assert want[1]["connections"]["idle_timeouts"] == 1
    assert want[1]["connections"]["not_http"] == 1
    assert want[1]["connections"]["reset"] >= 2


def test_ipv6() -> None:
    same(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(g.to_ipv6(traffic()))))


@pytest.mark.parametrize("nanos", [False, True], ids=["us", "ns"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_timestamp_resolutions_and_byte_orders(nanos: bool, big_endian: bool) -> None:
    same(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(traffic()), nanos=nanos, big_endian=big_endian))


@pytest.mark.parametrize("linktype", [g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL, g.LINKTYPE_LINUX_SLL2,
                                      g.LINKTYPE_RAW, g.LINKTYPE_NULL, g.LINKTYPE_LOOP])
def test_frames_the_decoder_skips_are_counted_the_same(linktype: int) -> None:
    link = {g.LINKTYPE_ETHERNET: "ethernet", g.LINKTYPE_LINUX_SLL: "sll", g.LINKTYPE_LINUX_SLL2: "sll2",
            g.LINKTYPE_RAW: "raw", g.LINKTYPE_NULL: "null", g.LINKTYPE_LOOP: "loop"}[linktype]
    packets = sorted(g.frames(traffic(), link) + odd_frames(linktype) * 3, key=lambda p: p[0])
    want = same(g.pcap_bytes(linktype, packets))
    assert want[1]["frames_skipped"]  # the odd frames were seen and counted


IMPAIRMENTS: dict[str, Callable[[list[Segment], random.Random], list[Segment]]] = {
    "recut": lambda s, rng: impair.resegment(s, rng, 1, 700),
    "duplicated": lambda s, rng: impair.duplicate(s, rng, 0.1),
    "reordered": lambda s, rng: impair.reorder(s, rng)[0],
    "lost": lambda s, rng: impair.drop(s, rng.sample(range(len(s)), len(s) // 25)),
    "all": lambda s, rng: impair.drop(impair.reorder(impair.duplicate(impair.resegment(s, rng, 1, 700), rng), rng)[0],
                                 rng.sample(range(len(s)), len(s) // 40)),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("impairment", sorted(IMPAIRMENTS))
def test_impaired_traffic(impairment: str, seed: int) -> None:
    rng = random.Random(seed)
    segments = IMPAIRMENTS[impairment](traffic(seed), rng)
    same(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments)))


@pytest.mark.parametrize("window", [100, 1500, 64 * 1024])
def test_windows_ending_anywhere_and_positions_from_a_base(window: int) -> None:
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(traffic()))
    want = reference(data, base=5 << 40)
    assert fast(data, base=5 << 40, window=window) == want


@pytest.mark.parametrize("name", ["mix.pcap", "mix1500.pcap"])
def test_corpus_captures(name: str) -> None:
    path = CORPUS / "local" / name
    if not path.exists():
        pytest.skip(f"shared corpus not available: {path}")
    data = path.read_bytes()
    same(data)
    segments = g.read_segments(path)
    rng = random.Random(3)
    same(g.pcap_bytes(g.LINKTYPE_LINUX_SLL, g.frames(IMPAIRMENTS["all"](segments, rng), "sll")))


# split_records ---------------------------------------------------------------------------------


def layout_of(data: bytes) -> tuple[int, RecordLayout]:
    parser = CaptureParser()
    start = parser.header(data, 0)
    layout = parser.record_layout()
    assert layout is not None
    return start, layout


def frame_offsets(data: bytes) -> list[int]:
    batches, _ = CaptureParser().parse(data, 0)
    return [f[0] for _link, frames in batches for f in frames]


def test_split_records_walks_every_record_and_stops_at_an_incomplete_one() -> None:
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(traffic()[:50]))
    start, layout = layout_of(data)
    offsets = frame_offsets(data)
    got, stop = split_records(data, start, len(data), layout)
    assert (list(got), stop) == (offsets, len(data))
    cut = offsets[30] + 20  # inside record 30: header whole, frame not
    got, stop = split_records(data[:cut], start, cut, layout)
    assert (list(got), stop) == (offsets[:30], offsets[30])
    got, stop = split_records(data, start, offsets[30] + 7, layout)  # header itself cut
    assert (list(got), stop) == (offsets[:30], offsets[30])


@pytest.mark.parametrize("field", ["caplen", "fraction"])
def test_split_records_stops_at_a_corrupt_record(field: str) -> None:
    data = bytearray(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(traffic()[:20])))
    start, layout = layout_of(bytes(data))
    offsets = frame_offsets(bytes(data))
    at = offsets[12]
    if field == "caplen":
        struct.pack_into("<I", data, at + 8, layout.max_caplen + 1)
    else:
        struct.pack_into("<I", data, at + 4, layout.max_fraction)
    got, stop = split_records(bytes(data), start, len(data), layout)
    assert (list(got), stop) == (offsets[:12], at)


# Router ----------------------------------------------------------------------------------------


def conn_of(frame: bytes, linktype: int) -> tuple[Any, ...] | None:
    from analyzers.tcp.frames import FrameDecoder

    d = FrameDecoder().decode(linktype, frame)
    if d is None:
        return None
    a, b = (d[0], d[2]), (d[1], d[3])
    return (a, b) if a <= b else (b, a)


def raw_ports(frame: bytes, linktype: int) -> int | None:
    """sport ^ dport read where plain IPv4 + TCP would have them, for frames that do not decode
    (on raw IP, the first fragment of a datagram: it goes to its connection's worker, which
    reassembles it)."""
    link_len = {g.LINKTYPE_ETHERNET: 14, g.LINKTYPE_LINUX_SLL2: 20, g.LINKTYPE_RAW: 0}.get(linktype)
    if link_len is None or len(frame) < link_len + 40:
        return None
    type_at = 12 if linktype == g.LINKTYPE_ETHERNET else 0
    if (link_len and frame[type_at:type_at + 2] != b"\x08\x00") or frame[link_len] != 0x45 or frame[link_len + 9] != 6:
        return None
    if not link_len and not frame[6] & 0x20:  # raw: only a first fragment (more fragments set)
        return None
    sport, dport = struct.unpack_from("!HH", frame, link_len + 20)
    return int(sport ^ dport)


@pytest.mark.parametrize("link", ["ethernet", "sll2", "vlan", "raw"])
def test_router_gives_each_connection_to_one_worker(link: str) -> None:
    """Each connection to one worker, both ways; a frame that does not decode to worker 0, unless
    its bytes hold plain IPv4 + TCP headers: then to the worker of the ports they hold (the one
    whose decoder will count it)."""
    linktype = LINKS[link][1]
    packets = sorted(g.frames(traffic(), link) + odd_frames(linktype), key=lambda p: p[0])
    data = g.pcap_bytes(linktype, packets)
    start, layout = layout_of(data)
    router = Router(3)
    shares, stop = router.split(data, start, len(data), layout)
    assert stop == len(data)
    assert sorted(off for s in shares for off in s) == frame_offsets(data)
    assert all(list(s) == sorted(s) for s in shares)
    owner: dict[Any, int] = {}
    for k, share in enumerate(shares):
        for off in share:
            caplen = struct.unpack_from("<I", data, off + 8)[0]
            frame = data[off + 16:off + 16 + caplen]
            conn = conn_of(frame, linktype)
            if conn is not None:
                assert owner.setdefault(conn, k) == k
            elif (ports := raw_ports(frame, linktype)) is not None:
                assert router.owners[ports] == k
            else:
                assert k == 0
    assert sorted(owner.values()).count(0) < len(owner)  # not all on one worker
    assert router.loads == [len(s) for s in shares]


@pytest.mark.parametrize("order", [1, -1], ids=["in-order", "reversed"])
@pytest.mark.parametrize("form", ["records", "frames"])
def test_router_keeps_a_datagrams_fragments_with_its_connection(order: int, form: str) -> None:
    """Every fragment goes to the worker of the connection its datagram belongs to, the first
    fragment before or after the rest (looked for ahead)."""
    from helpers import encap

    packets = []
    for n, (ts, frame) in enumerate(g.frames(traffic(), "ethernet")):
        ip = frame[14:18] + n.to_bytes(2, "big") + frame[20:]  # a unique IP id
        if len(ip) > 120:
            packets += [(ts, frame[:14] + f) for f in encap.fragment4(ip, pieces=3)[::order]]
        else:
            packets.append((ts, frame))
    router = Router(3)
    conns: dict[Any, set[int]] = {}
    if form == "records":
        data = g.pcap_bytes(g.LINKTYPE_ETHERNET, packets)
        start, layout = layout_of(data)
        shares, _stop = router.split(data, start, len(data), layout)
        owned = [(k, data[off + 16:off + 16 + struct.unpack_from("<I", data, off + 8)[0]])
                 for k, share in enumerate(shares) for off in share]
    else:
        frames = [(i, ts / 1e9, f) for i, (ts, f) in enumerate(packets)]
        owned = [(k, f[2]) for k, share in enumerate(router.route_frames(g.LINKTYPE_ETHERNET, frames)) for f in share]
    by_id = {}  # IP id -> connection, from the first fragments
    for _k, frame in owned:
        if struct.unpack_from("!H", frame, 20)[0] == 0x2000:  # more fragments, offset 0
            by_id[frame[18:20]] = conn_of_first(frame)
    fragments = 0
    for k, frame in owned:
        if struct.unpack_from("!H", frame, 20)[0] & 0x3FFF:
            fragments += 1
            conn = by_id[frame[18:20]]
        else:
            conn = conn_of(frame, g.LINKTYPE_ETHERNET)
        if conn is not None:
            conns.setdefault(conn, set()).add(k)
    assert fragments > 100
    assert all(len(ks) == 1 for ks in conns.values())


def conn_of_first(frame: bytes) -> tuple[Any, ...]:
    """The connection of a first fragment, read from its TCP header."""
    src, dst = frame[26:30], frame[30:34]
    sport, dport = struct.unpack_from("!HH", frame, 34)
    a, b = (int.from_bytes(src, "big"), sport), (int.from_bytes(dst, "big"), dport)
    return (a, b) if a <= b else (b, a)


def test_router_spreads_new_connections_by_load() -> None:
    """Each connection opened goes to the worker given the fewest frames so far."""
    segments: list[Segment] = []
    sizes = [40, 10, 10, 10, 10]  # requests per connection; opened one after another
    t = T0
    for n, requests in enumerate(sizes):
        c = Conn(segments, n)
        c.open(t)
        for k in range(requests):
            t = c.send(t + 10_000, True, get(f"/{k}"))
            t = c.send(t + 10_000, False, ok(b"x" * 100))
        c.close(t)
        t += 10_000
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments))
    start, layout = layout_of(data)
    router = Router(2)
    router.split(data, start, len(data), layout)
    # The first connection fills worker 0; the next ones all go to worker 1 until it catches up.
    assert [router.owners[(30000 + 2 * n) ^ 80] for n in range(len(sizes))] == [0, 1, 1, 1, 1]


def test_router_same_owners_whatever_the_byte_order_and_format() -> None:
    """Owners are kept by the ports' XOR in network order: a connection continued in a file of the
    other byte order, or in pcapng, stays with its worker."""
    segments = traffic()
    half = len(segments) // 2
    router = Router(2)
    first = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments[:half]))
    start, layout = layout_of(first)
    router.split(first, start, len(first), layout)
    owners = dict(router.owners)
    second = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments[half:]), big_endian=True)
    start, layout = layout_of(second)
    shares, _ = router.split(second, start, len(second), layout)
    frames: list[Frame] = [(i, 0.0, f) for i, (_ts, f) in enumerate(g.frames(segments[half:]))]
    routed = router.route_frames(g.LINKTYPE_ETHERNET, frames)
    for k, share in enumerate(shares):
        for off in share:
            sport, dport = struct.unpack_from("!HH", second, off + 16 + 34)
            if (sport ^ dport) in owners:
                assert owners[sport ^ dport] == k
    assert [[f[0] for f in r] for r in routed] == [[frame_offsets(second).index(off) for off in s] for s in shares]


def test_workers_together_give_what_one_gives() -> None:
    """One pipeline per worker's share: the same lines between them, the same counters summed."""
    packets = sorted(g.frames(traffic()) + odd_frames(g.LINKTYPE_ETHERNET), key=lambda p: p[0])
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, packets)
    lines, stats, _pin = reference(data)
    start, layout = layout_of(data)
    shares, _ = Router(2).split(data, start, len(data), layout)
    got: list[Any] = []
    parts: list[dict[str, Any]] = []
    for share in shares:
        p = Pipeline()
        p.set_source("cap.pcap")
        txs = p.feed_records(data, share, layout) + p.close()
        got += [describe(tx) for tx in txs]
        parts.append(p.stats())
    from watcher.read.parallel import merge_stats

    assert sorted(got) == sorted(lines)
    merged = merge_stats(parts)
    assert merged["tcp"].pop("buffered_bytes_limit") == 2 * stats["tcp"].pop("buffered_bytes_limit")
    assert merged == stats


# Bounds -----------------------------------------------------------------------------------------

# 400,000 unanswered requests held ~884 MB before the queue was bounded; now what is held is one
# connection's MAX_UNANSWERED_REQUESTS requests and a batch's transactions.
PIPELINED_REQUESTS = 400_000
PIPELINED_PEAK_BYTES = 48 << 20


@pytest.mark.slow
def test_unanswered_pipelined_requests_are_bounded() -> None:
    import tracemalloc

    from analyzers.http.transactions import MAX_UNANSWERED_REQUESTS

    segs: list[Segment] = []
    c = Conn(segs, 1)
    c.open(T0)
    request = b"GET /p HTTP/1.1\r\nHost: h.test\r\n\r\n"
    t = c.send(T0 + 10_000, True, request * PIPELINED_REQUESTS)
    c.close(t)
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segs))
    del segs
    start, layout = layout_of(data)
    offsets, stop = split_records(data, start, len(data), layout)
    assert stop == len(data)
    p = Pipeline()
    reasons: dict[str | None, int] = {}
    depths: list[int] = []
    tracemalloc.start()
    try:
        for i in range(0, len(offsets), 256):
            for tx in p.feed_records(data, offsets[i:i + 256], layout):
                reasons[tx.reason] = reasons.get(tx.reason, 0) + 1
                assert tx.request is not None and tx.response is None
                depths.append(tx.request.depth)
        for tx in p.close():
            reasons[tx.reason] = reasons.get(tx.reason, 0) + 1
            assert tx.request is not None
            depths.append(tx.request.depth)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    overflow = PIPELINED_REQUESTS - MAX_UNANSWERED_REQUESTS
    assert reasons == {"pipeline_overflow": overflow, "closed": MAX_UNANSWERED_REQUESTS}
    assert depths == list(range(1, PIPELINED_REQUESTS + 1))
    assert p.stats()["http"]["pipeline_overflow"] == overflow
    print(f"peak {peak / 1e6:.1f} MB")
    assert peak < PIPELINED_PEAK_BYTES, f"peak {peak / 1e6:.1f} MB"


def odd_connections() -> list[Segment]:
    """A CONNECT tunnel with HTTP inside, HTTP/0.9, a shell, HTTP/2's preface, a head never finished."""
    out: list[Segment] = []
    tun = Conn(out, 50, 3128)
    tun.open(T0)
    t = tun.send(T0 + 10_000, True, b"CONNECT in.test:80 HTTP/1.1\r\nHost: in.test:80\r\n\r\n")
    t = tun.send(t + 1000, False, b"HTTP/1.1 200 Connection established\r\n\r\n")
    t = tun.send(t + 1000, True, get("/in/1") + get("/in/2"))
    t = tun.send(t + 1000, False, ok(b"y" * 5000) + chunked(b"z" * 7000))
    tun.close(t + 1000)
    old = Conn(out, 51)
    old.open(T0 + 100_000)
    t = old.send(T0 + 110_000, True, b"GET /old\r\n")
    t = old.send(t + 1000, False, b"HTTP is not a status line here\r\n" + b"w" * 4000)
    old.close(t + 1000)
    shell = Conn(out, 52)
    shell.open(T0 + 200_000)
    t = shell.send(T0 + 210_000, True, b"id\n")
    t = shell.send(t + 1000, False, b"uid=0(root) gid=0(root)\n")
    shell.close(t + 1000)
    h2 = Conn(out, 53)
    h2.open(T0 + 300_000)
    t = h2.send(T0 + 310_000, True, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    h2.close(t + 1000)
    cut = Conn(out, 54)
    cut.open(T0 + 400_000)
    t = cut.send(T0 + 410_000, True, b"GET /cut HTTP/1.1\r\nHost: h.test\r\n")
    cut.close(t + 1000)
    out.sort(key=lambda s: s.ts_ns)
    return out


def test_tunnels_http09_other_protocols_and_cut_heads_through_both_paths() -> None:
    lines, stats, _pin = same(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(odd_connections())), window=1500)
    got = sorted((r["src_port"], r["trans_depth"], r["method"], r["host"], r["uri"], r["version"], r["status_code"],
                  r["response_body_len"], r["flags"], r["anomalies"])
                 for r in (json.loads(line) for line, _done, _pos in lines))
    assert got == [
        (30100, 1, "CONNECT", "in.test:80", "in.test:80", "1.1", 200, 0, ["tunnel"], []),
        (30100, 2, "GET", "in.test:80", "/in/1", "1.1", 200, 5000, ["tunnel"], []),
        (30100, 3, "GET", "in.test:80", "/in/2", "1.1", 200, 7000, ["tunnel"], []),
        (30102, 1, "GET", None, "/old", "0.9", None, 4032, [], []),
        (30108, 1, "GET", "h.test", "/cut", "1.1", None, 0, ["no_response", "truncated"], ["incomplete_head"]),
    ]
    assert stats["http"]["not_http"] == {"tls": 0, "http2": 1, "other": 1}
    assert stats["http"]["tunnels"] == 1
    assert stats["connections"]["not_http"] == 2


# Positions grouped by partition (a Kafka source): pins per group, closing one group's connections -----


def _frames(segments: list[Segment]) -> list[Frame]:
    return [(i, ts / 1e9, f) for i, (ts, f) in enumerate(g.frames(segments))]


def test_pins_per_group_and_close_where() -> None:
    """Two connections fed as if from two partitions (positions 1 << 40 apart): each pins its own
    partition with its unanswered request; closing one partition's connections writes its request with
    the reason given and leaves the other connection (and its pin) alone."""
    a_segs: list[Segment] = []
    b_segs: list[Segment] = []
    a, b = Conn(a_segs, 1), Conn(b_segs, 2)
    for conn in (a, b):
        conn.open(T0)
        conn.send(T0 + 10_000_000, True, get("/x"))  # a request, no response yet
    p = Pipeline()
    p.feed(1, _frames(a_segs), 0 << 40)
    p.feed(1, _frames(b_segs), 1 << 40)
    pins = p.pins(lambda pos: pos >> 40)
    assert set(pins) == {0, 1} and pins[0] >> 40 == 0 and pins[1] >> 40 == 1
    assert pins == {0: 0, 1: 1 << 40}  # each at its connection's first packet (the handshake)
    assert p.pin() == pins[0]
    closed, txs = p.close_where(lambda pos: pos >> 40 == 1, "rebalance")
    assert closed == 1 and len(txs) == 1
    assert txs[0].response is None and txs[0].reason == "rebalance" and txs[0].request is not None
    assert txs[0].request.pos >> 40 == 1
    assert p.pins(lambda pos: pos >> 40) == {0: pins[0]}
    assert p.stats()["connections"]["active"] == 1
