"""side.Side: the one word for a connection's direction."""

from __future__ import annotations

from analyzers.side import Side


def test_each_side_has_the_other_as_peer() -> None:
    assert (Side.CLIENT.peer, Side.SERVER.peer) == (Side.SERVER, Side.CLIENT)
    assert all(side.peer.peer is side for side in Side)


def test_a_side_indexes_a_pair_client_first() -> None:
    pair = ("client's", "server's")
    assert (pair[Side.CLIENT], pair[Side.SERVER]) == pair
    assert [pair[side.peer] for side in Side] == ["server's", "client's"]
    assert 1 << Side.CLIENT | 1 << Side.SERVER == 3  # one bit per side, as FlowTable keeps FINs
