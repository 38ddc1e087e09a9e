"""The replay action's service side, against an in-process shadow: bodies wanted, records handed
back, metric families that add up."""

from __future__ import annotations

import time

from helpers.replaytx import transaction
from helpers.shadow import Shadow

from analyzers import BodyKeep, Replay
from watcher.replay.actions import ReplayActions

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nok /a\n"


def test_replays_hand_back_records_and_count() -> None:
    shadow = Shadow()
    logs: list[str] = []
    try:
        acts = ReplayActions(logs.append)
        assert acts.body_keep() is None
        r = Replay("r", shadow.url, methods=("GET", "POST"), body_limit=1000, concurrency=1)
        acts.configure((r,))
        assert acts.body_keep() == BodyKeep(frozenset({"GET", "POST"}), 1000, responses=True)
        get = transaction(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", OK)
        auth = transaction(b"GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\n\r\n", OK)
        for i, tx in enumerate((get, get, auth)):
            acts.offer((r, r), tx, {"uri": "/a", "event_id": f"e{i}"})  # the same action twice: sent once
        deadline = time.monotonic() + 5
        got: list[dict] = []
        while len(got) < 2 and time.monotonic() < deadline:
            got += acts.take()
            time.sleep(0.01)
        assert [(g["event_id"], g["replay"]["matched"]) for g in got] == [("e0", True), ("e1", True)]
        assert shadow.log == ["GET /a e0 0", "GET /a e1 0"]
        fams = {f.name: f for f in acts.families()}
        assert fams["pcapwatch_replay_matched_total"].samples == (((shadow.url,), 3.0),)
        assert fams["pcapwatch_replay_replayed_total"].samples == (((shadow.url,), 2.0),)
        assert fams["pcapwatch_replay_skipped_total"].samples == ((("credentials",), 1.0),)
        assert fams["pcapwatch_replay_failed_total"].samples == ()
        assert fams["pcapwatch_replay_latency_ratio"].series[0][1][-1] == 2  # both observed
        assert fams["pcapwatch_replay_breaker_open"].samples == (((shadow.url,), 0.0),)
        acts.configure(())  # the rule is gone: its replayer finishes, its counts stay
        assert acts.body_keep() is None
        fams = {f.name: f for f in acts.families()}
        assert fams["pcapwatch_replay_replayed_total"].samples == (((shadow.url,), 2.0),)
        assert fams["pcapwatch_replay_queue_depth"].samples == ()
        assert logs == []
    finally:
        shadow.close()


def test_stopping_lets_the_queue_go_counted() -> None:
    shadow = Shadow({"/slow": {"delay": 0.3}})
    try:
        acts = ReplayActions(print)
        r = Replay("r", shadow.url, concurrency=1, queue=100)
        acts.configure((r,))
        tx = transaction(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", OK)
        for i in range(10):
            acts.offer((r,), tx, {"event_id": f"e{i}"})
        time.sleep(0.1)  # the first is in flight
        t0 = time.monotonic()
        acts.close()
        assert time.monotonic() - t0 < 1.0  # not 10 x 0.3 s
        c = acts.replayers[r].counters
        assert c.replayed == 1 and c.skipped == {"shutdown": 9}
        assert c.replayed + sum(c.skipped.values()) + sum(c.failed.values()) == c.offered == 10
    finally:
        shadow.close()
