from __future__ import annotations

from watcher.replay.limiter import BoundedQueue, Rate


def test_rate_spaces_grants_evenly() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    r = Rate(200.0, lambda: now[0], sleep)
    for _ in range(2000):
        r.acquire()
    assert abs(now[0] - 1999 / 200) < 1e-6
    assert Rate(None).interval == 0.0


def test_queue_overflow_is_counted_and_does_not_block() -> None:
    q: BoundedQueue[int] = BoundedQueue(2)
    assert q.offer(1) and q.offer(2) and not q.offer(3) and not q.offer(4)
    assert q.dropped == 2 and q.depth() == 2
    assert q.take() == 1 and q.take() == 2 and q.take(timeout=0.01) is None
    q.close(1)
    assert q.take() is None
