"""IP fragment reassembly: `Fragments` on its own (orders, overlaps, every bound, timeouts in
capture time) and through `FrameDecoder` and `Pipeline` (IPv4, IPv6 with extension headers,
tenants, the counts that keep frames = TCP packets + skipped)."""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import asdict

import pytest
from helpers import encap
from helpers import pcapgen as g
from helpers.pcapgen import Segment

from analyzers.pipeline import Pipeline
from analyzers.tcp.fragments import (
    IPV4_TIMEOUT,
    MAX_DATAGRAM_PAYLOAD,
    MAX_FRAGMENTS_PER_DATAGRAM,
    MAX_PENDING_BYTES,
    FragmentCounters,
    Fragments,
)
from analyzers.tcp.frames import ACK, FrameDecoder

PAYLOAD = bytes(range(256)) * 4  # 1024 bytes
KEY = ("a", "b", 6, 1)


def pieces(data: bytes, size: int) -> list[tuple[int, bool, bytes]]:
    return [(o, o + size < len(data), data[o:o + size]) for o in range(0, len(data), size)]


def feed(parts: list[tuple[int, bool, bytes]], key: object = KEY, ts: float = 0.0,
         f: Fragments | None = None) -> tuple[list[tuple[int, bytes] | None], dict[str, int]]:
    f = f or Fragments(IPV4_TIMEOUT, FragmentCounters())
    out = [f.add(key, o, more, data, ts, 6) for o, more, data in parts]
    return out, {k: v for k, v in asdict(f.counters).items() if v}


@pytest.mark.parametrize("order", ["in-order", "reversed", "shuffled"])
def test_any_order_completes_on_the_last_missing_piece(order: str) -> None:
    parts = pieces(PAYLOAD, 128)
    if order == "reversed":
        parts.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(parts)
    out, counts = feed(parts)
    assert out[:-1] == [None] * (len(parts) - 1) and out[-1] == (6, PAYLOAD)
    assert counts == {"fragments": 8, "datagrams": 1}


def test_overlap_keeps_the_first_copy_and_counts_a_difference() -> None:
    a = (0, True, PAYLOAD[:600])
    b = (512, False, b"X" * 88 + PAYLOAD[600:])  # bytes 512..600 differ from what is held
    out, counts = feed([a, b])
    assert out[-1] == (6, PAYLOAD)
    assert counts == {"fragments": 2, "datagrams": 1, "overlaps": 1, "overlap_mismatches": 1}
    out, counts = feed([b, a])  # the other way round, the other copy was first
    assert out[-1] == (6, PAYLOAD[:512] + b"X" * 88 + PAYLOAD[600:])
    assert counts["overlaps"] == counts["overlap_mismatches"] == 1


def test_a_fragment_spanning_several_holes_fills_them_all() -> None:
    parts = [(0, True, PAYLOAD[:100]), (300, True, PAYLOAD[300:400]), (900, False, PAYLOAD[900:]),
             (0, True, PAYLOAD[:900])]
    out, counts = feed(parts)
    assert out[-1] == (6, PAYLOAD)
    assert counts == {"fragments": 4, "datagrams": 1, "overlaps": 1}


def test_duplicates_are_ignored_and_counted() -> None:
    parts = pieces(PAYLOAD, 256)
    out, counts = feed([parts[0], parts[0], parts[1], parts[2], parts[1], parts[3]])
    assert out[-1] == (6, PAYLOAD) and counts["duplicates"] == 2 and "overlaps" not in counts


def test_two_datagrams_and_two_keys_stay_apart() -> None:
    f = Fragments(IPV4_TIMEOUT, FragmentCounters())
    other = bytes(reversed(PAYLOAD))
    for (o, m, d), (_o, _m, e) in zip(pieces(PAYLOAD, 512), pieces(other, 512), strict=True):
        r1, r2 = f.add(KEY, o, m, d, 0, 6), f.add(("a", "b", 6, 2), o, m, e, 0, 6)
    assert (r1, r2) == ((6, PAYLOAD), (6, other))


def test_timeout_is_capture_time_from_the_first_fragment() -> None:
    f = Fragments(IPV4_TIMEOUT, FragmentCounters())
    parts = pieces(PAYLOAD, 512)
    assert f.add(KEY, *parts[0][:3], 100.0, 6) is None
    assert f.add(KEY, *parts[1][:3], 100.0 + IPV4_TIMEOUT, 6) == (6, PAYLOAD)  # just in time
    assert f.add(KEY, *parts[0][:3], 200.0, 6) is None
    assert f.add(KEY, *parts[1][:3], 200.0 + IPV4_TIMEOUT + 0.001, 6) is None  # expired first
    c = f.counters
    assert (c.datagrams, c.dropped_timeout, c.dropped_fragments, len(f.pending)) == (1, 1, 1, 1)
    f.close()
    assert (c.dropped_at_end, c.dropped_fragments, f.pending, f.pending_bytes) == (1, 2, {}, 0)


def test_too_many_fragments() -> None:
    parts = pieces(PAYLOAD * 2, 8)[:MAX_FRAGMENTS_PER_DATAGRAM + 1]
    out, counts = feed(parts)
    assert out == [None] * len(parts)
    assert counts == {"fragments": MAX_FRAGMENTS_PER_DATAGRAM + 1, "dropped_too_many": 1,
                      "dropped_fragments": MAX_FRAGMENTS_PER_DATAGRAM + 1}


def test_past_the_largest_datagram() -> None:
    out, counts = feed([(MAX_DATAGRAM_PAYLOAD - 8, False, b"x" * 16)])
    assert out == [None] and counts["dropped_too_big"] == 1


@pytest.mark.parametrize("parts", [
    [(0, True, PAYLOAD[:512]), (1024, True, b"x" * 8), (512, False, PAYLOAD[512:])],  # data past the end
    [(512, False, PAYLOAD[512:]), (256, False, PAYLOAD[256:512])],  # two different ends
    [(512, True, PAYLOAD[512:]), (0, False, PAYLOAD[:256])],  # an end before data held
], ids=["past-end", "two-ends", "end-before-data"])
def test_inconsistent_datagrams_are_dropped(parts: list[tuple[int, bool, bytes]]) -> None:
    out, counts = feed(parts)
    assert out == [None] * len(parts) and counts["dropped_inconsistent"] == 1


def test_pending_bytes_are_bounded_oldest_dropped_first() -> None:
    f = Fragments(IPV4_TIMEOUT, FragmentCounters())
    n = MAX_PENDING_BYTES // 60_000 + 5
    for i in range(n):
        f.add(("k", i), 0, True, b"x" * 60_000, 0, 6)
    assert f.pending_bytes <= MAX_PENDING_BYTES
    assert f.counters.dropped_memory == n - len(f.pending) > 0
    assert next(iter(f.pending)) == ("k", n - len(f.pending))  # the newest stayed


def test_cost_is_linear_in_the_input() -> None:
    """Tiny-fragment floods: time per fragment does not grow with the number of fragments."""
    def flood(datagrams: int) -> float:
        f = Fragments(IPV4_TIMEOUT, FragmentCounters())
        t = time.perf_counter()
        for d in range(datagrams):
            for k in reversed(range(MAX_FRAGMENTS_PER_DATAGRAM)):
                f.add(d, k * 8, True, b"12345678", d * 0.01, 6)
        return time.perf_counter() - t
    small, large = min(flood(20) for _ in range(3)), min(flood(160) for _ in range(3))
    assert large / small < 8 * 2.5  # 8 times the input: well under 8 squared


# Through the decoder and the pipeline ----------------------------------------------------------

SEG = Segment(10**9, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80, 1000, 2000, ACK | g.PSH,
              b"GET /frag HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"p" * 900 + b"\r\n\r\n")
SEG6 = SEG._replace(src=ipaddress.ip_address("2001:db8::1").packed, dst=ipaddress.ip_address("2001:db8::2").packed)


def decode_all(frames: list[bytes]) -> tuple[list[object], dict[str, int]]:
    dec = FrameDecoder()
    out = [dec.decode(1, f) for f in frames]
    return out, dict(dec.skipped)


@pytest.mark.parametrize("order", [1, -1], ids=["in-order", "reversed"])
def test_ipv4_fragments_decode_to_the_packet(order: int) -> None:
    frames = [g.ethernet(p, pad=False) for p in encap.fragment4(g.ip_packet(SEG), pieces=4)][::order]
    out, skipped = decode_all(frames)
    assert out[:-1] == [None] * 3 and g.decoder_result(out[-1]) == (*SEG[1:],)
    assert skipped == {"ip_fragment": 3}


@pytest.mark.parametrize("order", [1, -1], ids=["in-order", "reversed"])
def test_ipv6_fragments_decode_to_the_packet(order: int) -> None:
    frames = [g.ethernet(p, pad=False) for p in encap.fragment6(g.ip_packet(SEG6), 77, overlap=8)][::order]
    out, skipped = decode_all(frames)
    assert g.decoder_result(out[-1]) == (*SEG6[1:],) and skipped == {"ip_fragment": len(frames) - 1}


def test_ipv6_atomic_fragment_is_a_whole_packet() -> None:
    """RFC 6946: a fragment header with offset 0 and no more fragments is the whole packet."""
    ip = bytearray(g.ip_packet(SEG6, ipv6_ext=[g.IPV6_HOP_BY_HOP, g.IPV6_FRAGMENT]))
    ip[40 + 8 + 3] = 0  # the fragment header's M bit off
    out, skipped = decode_all([g.ethernet(bytes(ip))])
    assert g.decoder_result(out[0]) == (*SEG6[1:],) and skipped == {}


def test_fragments_of_two_tenants_stay_apart() -> None:
    frags = encap.fragment4(g.ip_packet(SEG), pieces=2)
    a = [encap.vxlan(g.ethernet(p, pad=False), 1) for p in frags]
    b = [encap.vxlan(g.ethernet(p, pad=False), 2) for p in frags]
    out, skipped = decode_all([a[0], b[0], a[1], b[1]])
    assert out[0] is None and out[1] is None and skipped == {"ip_fragment": 2}
    assert [d[0].tenant for d in out[2:]] == ["vxlan:1", "vxlan:2"]  # type: ignore[index, union-attr]


def test_pipeline_counts_fragments_and_what_was_never_completed() -> None:
    frags = [g.ethernet(p, pad=False) for p in encap.fragment4(g.ip_packet(SEG), pieces=3)]
    p = Pipeline()
    p.feed(1, [(i, 1.0, f) for i, f in enumerate(frags[:2])])
    p.close()
    s = p.stats()
    assert (s["frames"], s["tcp_packets"], s["frames_skipped"]) == (2, 0, {"ip_fragment": 2})
    assert {k: v for k, v in s["ip_fragments"].items() if v} == {"fragments": 2, "dropped_at_end": 1,
                                                                 "dropped_fragments": 2}
    assert s["undecoded"] == {}


def test_a_pending_fragment_pins_the_input_until_its_datagram_completes() -> None:
    """A restart must replay from the first fragment of a datagram still incomplete."""
    frags = [g.ethernet(p, pad=False) for p in encap.fragment4(g.ip_packet(SEG), pieces=3)]
    p = Pipeline()
    p.feed(1, [(100, 1.0, frags[0]), (200, 1.0, frags[1])], base=1000)
    assert p.pin() == 1100
    p.feed(1, [(300, 1.0, frags[2])], base=1000)
    assert p.pin() == 1100  # now the connection, opened by that packet (at its first fragment), pins
    p.close()
    assert p.pin() is None and p.decoder.pin() is None
