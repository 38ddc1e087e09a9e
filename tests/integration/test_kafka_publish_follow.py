"""`pcapwatch publish --follow` beside a real tcpdump ring on loopback (tcpdump -C -W, real web
server and clients), to a real broker (Tansu). Two publishers follow the same spool, each with its
own checkpoint and topic: one is killed with -9 twice mid-run and started again (every frame on
Kafka, none lost: some may be there twice), the other stopped with SIGTERM twice and started again
(every frame exactly once). The frames are checked against a second, non-rotating tcpdump of the
same traffic, by pycapa's consumer (helpers/kafka.py).
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import kafka as hk
from helpers.liveenv import PCAPWATCH, Live, live_env, stop_process, wait_until
from helpers.traffic import Clients, request_plan

pytestmark = pytest.mark.slow

REQUESTS, RATE = 200, 25.0  # ~8 s of traffic, ~10 MB: five turns of a 2 MB file, the ring of 6 once around


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_env(tmp_path) as env:
        yield env


class Publisher:
    def __init__(self, live: Live, url: str, name: str) -> None:
        self.live, self.url, self.name = live, url, name
        self.state = live.base / f"state-{name}"
        self.err = live.base / f"publish-{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[int] = []

    def start(self) -> None:
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen([*PCAPWATCH, "publish", "--follow", str(self.live.spool), "--state",
                                          str(self.state), "--to", self.url], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, env=hk.pcapwatch_env())
        starts = len(self.runs) + 1
        assert wait_until(lambda: self.err.read_bytes().count(b": info: following ") >= starts, 20), \
            self.err.read_text()

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        code = stop_process(self.proc, sig, timeout=60)
        self.runs.append(code)
        return code

    def summaries(self) -> list[str]:
        return [line for line in self.err.read_text().splitlines() if line.startswith("pcapwatch: published ")]


def _frames(messages: dict[int, list[hk.Message]]) -> tuple[Counter[bytes], dict[bytes, int]]:
    """The frames on a topic (how often each), and each one's time in µs."""
    frames: Counter[bytes] = Counter()
    times: dict[bytes, int] = {}
    for msgs in messages.values():
        for k, v, _ in msgs:
            assert k is not None and v is not None
            frames[v] += 1
            times[v] = struct.unpack(">Q", k)[0]
    return frames, times


def test_follow_kill_and_sigterm(live: Live, tmp_path: Path) -> None:
    with hk.broker(tmp_path / "tansu.log") as broker:
        hk.create_topic(broker.address, "killed", 4)
        hk.create_topic(broker.address, "stopped", 4)
        killed = Publisher(live, broker.url("killed"), "killed")
        stopped = Publisher(live, broker.url("stopped"), "stopped")
        with live.copy(), live.ring("-C", "2", "-W", "6"):
            killed.start()
            stopped.start()
            clients = Clients(live.port, request_plan(REQUESTS), rate=RATE).start()
            for _ in range(2):
                time.sleep(2.5)
                killed.stop(signal.SIGKILL)
                stopped.stop(signal.SIGTERM)
                killed.start()
                stopped.start()
            sent = clients.join(60)
            time.sleep(2.0)  # the last packets reach the ring and the publishers
        assert len(sent) == REQUESTS
        for p in (killed, stopped):
            time.sleep(1.0)
            assert p.stop(signal.SIGTERM) == 0, p.err.read_text()
        stopped.start()  # after a clean stop, a restart has nothing to send again
        time.sleep(2.0)
        assert stopped.stop(signal.SIGTERM) == 0
        # the reference capture: the same packets, with times the second tcpdump took itself (a few µs
        # apart from the ring's)
        reference = list(hk.pcap_records(live.base / "full.pcap"))
        full = Counter(frame for _s, _u, frame in reference)
        full_times = {frame: sec * 1_000_000 + usec for sec, usec, frame in reference}
        on_killed, killed_times = _frames(hk.consume_all(broker.address, "killed"))
        on_stopped, stopped_times = _frames(hk.consume_all(broker.address, "stopped"))
    assert len(full) > 500 and set(full.values()) == {1}  # loopback: 64 KiB segments, each unique
    assert on_stopped == full  # every frame, once
    assert set(on_killed) == set(full) and sum(on_killed.values()) >= len(full)  # none lost
    assert max(abs(t - full_times[f]) for times in (killed_times, stopped_times) for f, t in times.items()) < 1000
    assert killed.runs == [-9, -9, 0] and stopped.runs == [0, 0, 0, 0]
    assert stopped.summaries()[-1].startswith("pcapwatch: published 0 frames: delivered 0, failed 0")
    assert "lost 0 (0 bytes)" in stopped.summaries()[-2]
    assert [line for line in stopped.err.read_text().splitlines()
            if ": info: " not in line and not line.startswith("pcapwatch: published ")] == []
