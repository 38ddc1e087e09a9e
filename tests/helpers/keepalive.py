"""Keep-alive HTTP traffic built segment by segment: many connections at once, each with several
requests and pauses between them, so that any point of the capture finds some connections idle
between requests and some in the middle of one (what a restart of the service meets)."""

from __future__ import annotations

import random

from helpers.pcapgen import Conn, Segment

T0 = 1_700_000_000 * 10**9


def get(uri: str) -> bytes:
    return f"GET {uri} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def keepalive(seed: int = 1, connections: int = 6, requests: tuple[int, int] = (3, 6),
              first: int = 0, midstream: tuple[int, ...] = (), mss: tuple[int, ...] = (7, 1460)) -> list[Segment]:
    """`connections` connections (numbered from `first`), each `requests` requests long, their
    packets interleaved in time. Those in `midstream` lose their handshake (picked up midstream)."""
    rng = random.Random(seed)
    out: list[Segment] = []
    for n in range(first, first + connections):
        segs: list[Segment] = []
        c = Conn(segs, n)
        t = T0 + n * 7_000_000
        c.open(t)
        if n in midstream:
            del segs[:]
        t += 10_000
        for k in range(rng.randint(*requests)):
            body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 40, 3000, 9000])))
            t = c.send(t, True, get(f"/{n}/{k}"), mss=rng.choice(mss))
            t = c.send(t + 3000, False, ok(body))
            t += rng.randint(1_000_000, 20_000_000)
        c.close(t)
        out += segs
    out.sort(key=lambda s: s.ts_ns)
    return out
