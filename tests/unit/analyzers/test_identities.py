"""identities: a restart anywhere in a capture changes no record.

The service's restart, simulated as it works: a first pipeline reads the capture up to some
record and is stopped; the checkpoint keeps its resume position (the pin, or where reading
stopped), the last record analysed (`emitted`) and the open connections' identities; a second
pipeline restores the identities, reads from the resume position, and its transactions completed
at or before `emitted` are suppressed (written by the first). What both write must be, line for
line (uid, trans_depth, midstream and every other field), what one uninterrupted run writes, for a
stop after every record of the capture.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from helpers import pcapgen as g
from helpers.impair import permute, reorder
from helpers.keepalive import keepalive

from analyzers.identities import Identity, _unsettled
from analyzers.pipeline import Pipeline
from analyzers.tcp.frames import SYN
from watcher.capture.pcapfile import CaptureParser, Frame
from watcher.read.lines import record_line


def frames_of(segments: list[g.Segment]) -> tuple[int, list[Frame]]:
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments))
    (batch,), _ = CaptureParser().parse(data, 0)
    return batch


def whole(linktype: int, frames: list[Frame]) -> list[str]:
    p = Pipeline()
    return [record_line(t) for t in p.feed(linktype, frames) + p.close()]


def restarted(linktype: int, frames: list[Frame], k: int, limit: int = 1000,
              every: int = 0) -> tuple[list[str], Pipeline]:
    """Stopped after the first `k` records, restarted as the service does; with `every`, the
    first run also took a checkpoint after every `every` records before."""
    a = Pipeline()
    lines: list[str] = []
    for i in range(0, k, every or k):
        lines += [record_line(t) for t in a.feed(linktype, frames[i:min(i + (every or k), k)])]
        if every:
            a.pin()
            a.identities(limit)
    pin = a.pin()
    next_pos = frames[k][0] if k < len(frames) else frames[-1][0] + 1
    resume = min(pin, next_pos) if pin is not None else next_pos
    emitted = frames[k - 1][0]
    saved, _left_out = a.identities(limit)
    b = Pipeline()
    b.restore_identities([Identity(*i) for i in saved])
    txs = b.feed(linktype, [f for f in frames if f[0] >= resume]) + b.close()
    return lines + [record_line(t) for t in txs if t.done_pos > emitted], b


@pytest.mark.parametrize(("seed", "midstream"), [(1, ()), (2, (1, 3)), (5, (0,))])
def test_a_restart_after_any_record_changes_nothing(seed: int, midstream: tuple[int, ...]) -> None:
    linktype, frames = frames_of(keepalive(seed=seed, connections=5, requests=(2, 4), midstream=midstream))
    want = whole(linktype, frames)
    assert any('"midstream"' in line for line in want) == bool(midstream)
    restored = 0
    for k in range(1, len(frames) + 1):
        got, b = restarted(linktype, frames, k)
        assert got == want, f"stopped after record {k}"
        restored += b.stats()["connections"]["restored"]
    assert restored > len(frames) // 2  # most stops find connections to continue


def test_ipv6() -> None:
    linktype, frames = frames_of(g.to_ipv6(keepalive(seed=4, connections=3, requests=(2, 3))))
    want = whole(linktype, frames)
    for k in range(1, len(frames) + 1, 3):
        assert restarted(linktype, frames, k)[0] == want


def test_identities_are_plain_values_and_bounded() -> None:
    linktype, frames = frames_of(keepalive(seed=1, connections=5, requests=(4, 4)))
    a = Pipeline()
    a.feed(linktype, frames[:len(frames) // 2])
    saved, left_out = a.identities(1000)
    assert saved and left_out == 0
    for ident in saved:
        assert all(v is None or type(v) in (str, int, float, bool) for v in ident)
    two, left_out = a.identities(2)
    assert len(two) == 2 and left_out == len(saved) - 2
    assert [i.uid for i in two] == [i.uid for i in sorted(saved, key=lambda i: -i.last_ts)[:2]]


def test_a_syn_on_saved_ports_is_a_new_connection_and_silence_expires_them() -> None:
    segs = keepalive(seed=1, connections=1, requests=(2, 2))
    linktype, frames = frames_of(segs)
    a = Pipeline()
    a.feed(linktype, frames[:-3])  # before the close: idle between requests
    saved, _ = a.identities(10)
    assert len(saved) == 1
    b = Pipeline()
    b.restore_identities(saved)
    syn = [f for f, s in zip(frames, segs, strict=True) if s.flags & SYN][:3]
    b.feed(linktype, syn)
    # The new connection has no HTTP yet (it pins: nothing to save); the saved identity is gone.
    assert b.identities(10) == ((), 0) and b.stats()["connections"]["restored"] == 0
    c = Pipeline(idle_timeout=60)
    c.restore_identities(saved)
    assert c.identities(10)[0] == saved  # not taken up yet: saved again
    c.flows.sweep(frames[-1][1] + 30)
    assert c.identities(10)[0] == saved
    c.flows.sweep(frames[-1][1] + 1000)  # (capture time moves with other connections' packets)
    assert c.identities(10)[0] == () and c.stats()["connections"]["restore_expired"] == 1


@pytest.mark.parametrize(("seed", "impair", "every"), [(1, permute, 0), (2, permute, 3), (3, reorder, 0),
                                                      (4, reorder, 5), (5, permute, 1), (6, permute, 4)])
def test_a_restart_while_busy_or_in_flux_changes_nothing(seed: int, impair: Any, every: int) -> None:
    """Capture order is not wire order (data segments reordered, or permuted past the peer's ACK
    as `-i any` and busy loopback captures show them): stops fall while a hole waits for its late
    segment, server data is parked until the request it answers shows up, or a message's segments
    come out of order. Such a connection falls back on the identity an earlier checkpoint (every
    `every` records) saved while it was idle, or is rebuilt from its first packet; the restart
    still writes exactly the uninterrupted run's records."""
    segs, moved = impair(keepalive(seed=seed, connections=4, requests=(2, 4), mss=(7, 300)), random.Random(seed))
    assert moved >= 4
    linktype, frames = frames_of(segs)
    want = whole(linktype, frames)
    in_flux = 0
    for k in range(1, len(frames) + 1):
        a = Pipeline()
        a.feed(linktype, frames[:k])
        in_flux += any(_unsettled(c) for c in a.flows._connections())
        got, _b = restarted(linktype, frames, k, every=every)
        assert got == want, f"stopped after record {k}"
    assert in_flux >= 2  # stops that found a connection in flux


def restarts(linktype: int, frames: list[Frame], stops: list[int], every: int) -> list[str]:
    """Runs stopped after each record index in `stops` (ascending), each restarted as the service
    does from the one before, with a checkpoint every `every` records in each run."""
    lines: list[str] = []
    saved: tuple[Identity, ...] = ()
    resume, emitted = frames[0][0], -1
    for stop in [*stops, len(frames)]:
        p = Pipeline()
        if saved:
            p.restore_identities(saved)
        todo = [f for f in frames[:stop] if f[0] >= resume]
        for i in range(0, len(todo), every):
            lines += [record_line(t) for t in p.feed(linktype, todo[i:i + every]) if t.done_pos > emitted]
            p.pin()
            p.identities(1000)
        if stop == len(frames):
            return lines + [record_line(t) for t in p.close() if t.done_pos > emitted]
        pin = p.pin()
        resume = min(pin, frames[stop][0]) if pin is not None else frames[stop][0]
        emitted = frames[stop - 1][0]
        saved = p.identities(1000)[0]
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("seed", "impair"), [(1, None), (2, permute), (3, reorder), (4, permute)])
def test_restart_after_restart_changes_nothing(seed: int, impair: Any) -> None:
    """A restored connection busy or in flux at the next stop falls back on the identity it was
    restored with (its first packet is not in that run): stops every 5-15 records, checkpoints
    every 3, the uninterrupted run's records."""
    segs = keepalive(seed=seed, connections=4, requests=(3, 5), mss=(7, 300))
    if impair is not None:
        segs = impair(segs, random.Random(seed))[0]
    linktype, frames = frames_of(segs)
    want = whole(linktype, frames)
    rng = random.Random(seed)
    for _ in range(8):
        stops, k = [], 0
        while True:
            k += rng.randint(5, 15)
            if k >= len(frames):
                break
            stops.append(k)
        assert restarts(linktype, frames, stops, every=3) == want, stops


def test_a_request_answered_before_its_body_is_not_lost_by_a_restart() -> None:
    """nginx answers a POST to a static file with 405 before the request body has come: the record
    waits for the body, so it is done at the body's packet, not at the answer's. A stop between the
    two must not take it for written (the replay would suppress it: a record lost)."""
    segs: list[g.Segment] = []
    c = g.Conn(segs, 1)
    t = 1_700_000_000 * 10**9
    c.open(t)
    t = c.send(t + 10_000, True, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    t = c.send(t + 1000, False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    t = c.send(t + 1000, True, b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
    t = c.send(t + 1000, False, b"HTTP/1.1 405 Not Allowed\r\nContent-Length: 0\r\n\r\n")
    t = c.send(t + 1000, True, b"x" * 1000)
    t = c.send(t + 1000, True, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
    t = c.send(t + 1000, False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.close(t + 1000)
    linktype, frames = frames_of(segs)
    want = whole(linktype, frames)
    assert ['"/b"' in line and '"request_body_len":1000' in line for line in want] == [False, True, False]
    for k in range(1, len(frames) + 1):
        for every in (0, 1, 2):
            assert restarted(linktype, frames, k, every=every)[0] == want, (k, every)
