"""The checkpoint position of `publish --follow`: past the longest run of settled frames."""

from __future__ import annotations

from watcher.publish.follow import Settled


def test_position_moves_only_over_settled_prefix() -> None:
    s = Settled()
    a, b, c, d = (s.add(end) for end in (100, 200, 300, 400))
    assert (a, b, c, d) == (0, 1, 2, 3) and s.position is None
    s.settle(c)  # another partition's delivery came back first
    assert s.position is None
    s.settle(a)
    assert s.position == 100
    s.settle(b)
    assert s.position == 300  # b and the c settled earlier
    e = s.add(500)
    s.settle(e)
    assert s.position == 300  # d still out
    s.settle(d)
    assert s.position == 500 and s.first == 5 and not s.ends
