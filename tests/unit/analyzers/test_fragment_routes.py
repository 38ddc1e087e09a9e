"""FragmentRoutes on its own: a datagram's fragments follow its first fragment, in order or not,
and a datagram id is forgotten when its datagram is done, so a reused id routes afresh."""

from __future__ import annotations

from collections.abc import Iterator

from analyzers.fragment_routes import MAX_FRAGMENT_OWNERS, FragmentRoutes, frames_after
from analyzers.tcp.frames import Decoded, FragmentHint

FIRST: Decoded = (1, 2, 40000, 80, 0, 0, 0x18, b"")


def owner_of(d: Decoded) -> int:
    return 2 if d[2] == 40000 else 1


def route(routes: FragmentRoutes, hint: FragmentHint, ahead: list[FragmentHint] | None = None) -> int:
    queue = list(ahead or [])
    taken: list[FragmentHint | None] = []

    def decode(frame: bytes, ts: float = 0.0) -> None:
        taken.append(queue.pop(0))

    def last() -> FragmentHint | None:
        return taken.pop()

    def frames() -> Iterator[bytes]:
        return iter([b""] * len(queue))

    return routes.owner(hint, decode, last, frames if ahead is not None else None, owner_of)


def test_in_order_the_rest_follow_the_first_and_the_last_forgets() -> None:
    r = FragmentRoutes()
    assert route(r, FragmentHint("k", FIRST, False)) == 2
    assert route(r, FragmentHint("k", None, False)) == 2
    assert route(r, FragmentHint("k", None, True)) == 2
    assert r.owners == {}


def test_reversed_the_first_is_found_ahead_and_forgets() -> None:
    r = FragmentRoutes()
    ahead = [FragmentHint("other", None, True), FragmentHint("k", None, False), FragmentHint("k", FIRST, False)]
    assert route(r, FragmentHint("k", None, True), ahead) == 2
    assert route(r, FragmentHint("k", None, False)) == 2
    assert route(r, FragmentHint("k", FIRST, False)) == 2
    assert r.owners == {}


def test_a_first_never_seen_sends_the_datagram_to_worker_0() -> None:
    r = FragmentRoutes()
    assert route(r, FragmentHint("k", None, True), [FragmentHint("x", FIRST, False)]) == 0
    assert route(r, FragmentHint("k", None, False)) == 0


def test_remembered_datagrams_are_bounded() -> None:
    r = FragmentRoutes()
    for i in range(MAX_FRAGMENT_OWNERS + 10):
        route(r, FragmentHint(i, FIRST, False))
    assert len(r.owners) == MAX_FRAGMENT_OWNERS and 0 not in r.owners


def test_frames_after_is_bounded() -> None:
    frames = [(i, 0.0, bytes([i % 256])) for i in range(200)]
    got = list(frames_after(frames, 10))
    assert len(got) == 64 and got[0] == bytes([10])
