from __future__ import annotations

from watcher.replay.breaker import Breaker, BreakerState


def test_opens_after_threshold_probes_with_backoff_and_logs_once_each_way() -> None:
    now = [0.0]
    logs: list[str] = []
    b = Breaker(logs.append, lambda: now[0], threshold=3, probe_delay=1.0, max_probe_delay=4.0)
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.state is BreakerState.OPEN and len(logs) == 1 and "down" in logs[0]
    assert not b.allow()
    now[0] = 1.0
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()  # probe failed: next after 2 s
    now[0] = 2.9
    assert not b.allow()
    now[0] = 3.0
    assert b.allow()
    b.failure()  # then 4 s (the cap)
    now[0] = 6.9
    assert not b.allow()
    now[0] = 7.0
    assert b.allow()
    b.failure()
    now[0] = 11.0
    assert b.allow()
    assert len(logs) == 1
    b.success()
    assert b.state is BreakerState.CLOSED and len(logs) == 2 and "resumes" in logs[1]
    assert b.allow() and b.allow()
    b.failure()
    b.success()
    assert len(logs) == 2 and b.opened == 1
