"""`pcapwatch run` beside a real tcpdump ring on loopback, real nginx and real HTTP clients.

The service runs the whole time while tcpdump rotates (-C size ring wrapping several times, -G
time rotation with strftime names, -C ring with -z gzip replacing each closed file by its .gz).
What it writes must be exactly what the clients did (method, uri, status per request, each once)
and exactly what tshark finds in a second, non-rotating tcpdump of the same traffic. A service
started behind a ring that has not rotated yet must not cry wolf about the ring. Then the latency
from a request on the wire to its record in the output file, with tcpdump -U.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.env import need_tool
from helpers.liveenv import Live, live_env
from helpers.traffic import Clients, key, request_plan, sent_keys, tshark_transactions

pytestmark = pytest.mark.slow

# `-z gzip` refuses to replace the .gz left by the ring's previous turn ("already exists; not
# overwritten"), so from the second turn on the plain files stay; ops who want the .gz to replace
# the plain file every time give tcpdump a `gzip -f` script, written here in the test's dir.
FORCE_GZIP = "gzip-f.sh"
# tcpdump options, spool file name, requests and their rate. 240 requests of the default plan are
# ~12.5 MB of capture: with -C 1 that is 12 files, a ring of 4 written three times over. The rate
# (~3.5 MB/s) leaves the service over a second of slack before tcpdump reuses a file.
RINGS = {
    "size": (("-C", "1", "-W", "4"), "cap.pcap", 240, 30.0),
    "time": (("-G", "1"), "cap-%Y%m%d-%H%M%S.pcap", 240, 20.0),
    "gzip": (("-C", "1", "-W", "4", "-z", "gzip"), "cap.pcap", 240, 30.0),
    "gzip-f": (("-C", "1", "-W", "4", "-z", FORCE_GZIP), "cap.pcap", 240, 30.0),
}
MIN_ROTATIONS = 10
LATENCY_REQUESTS = 240
LATENCY_P99_LIMIT = 3.0
DEFAULT_CHECKPOINT_SECONDS = 5.0  # conf/pcapwatch.yaml


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_env(tmp_path) as env:
        yield env


@pytest.mark.parametrize("ring", RINGS)
def test_every_request_once_while_tcpdump_rotates(live: Live, ring: str) -> None:
    need_tool("tshark")
    options, name, n, rate = RINGS[ring]
    if FORCE_GZIP in options:
        script = live.base / FORCE_GZIP
        script.write_text('#!/bin/sh\nexec gzip -f "$1"\n')
        script.chmod(0o755)
        options = tuple(str(script) if o == FORCE_GZIP else o for o in options)
    plan = request_plan(n)
    with live.copy(), live.ring(*options, name=name), live.service() as svc:
        sent = Clients(live.port, plan, rate=rate).run()
        live.wait_records(n)
        time.sleep(1.0)  # anything written twice would show up now
        status = svc.status()
    records = live.records()
    expected = sent_keys(sent)
    assert len(sent) == n and all(v == 1 for v in expected.values())
    assert Counter(key(r) for r in records) == expected
    assert len(records) == n
    assert len({r["event_id"] for r in records}) == n and None not in {r["event_id"] for r in records}
    assert tshark_transactions(live.base / "full.pcap", live.port) == expected
    assert status["files_done"] >= MIN_ROTATIONS, status
    assert (status["records"], status["lost"], status["lost_bytes"], status["gaps"], status["anomalies"]) == (
        n, 0, 0, 0, 0)
    # a lag warning here is the estimate of the ring's size at startup, which
    # test_no_ring_warning_when_starting_behind_a_young_ring shows without depending on timing
    assert [line for line in svc.lines() if ": info: " not in line and " bytes of capture unread " not in line] == []
    files = sorted(p.name for p in live.spool.iterdir())
    if ring == "size":
        assert files == ["cap.pcap0", "cap.pcap1", "cap.pcap2", "cap.pcap3"]
    elif ring == "gzip":  # the first turn's .gz, and the later turns' plain files gzip would not compress
        assert files == sorted(f"cap.pcap{i}{gz}" for i in range(4) for gz in ("", ".gz"))
    elif ring == "gzip-f":  # each closed file replaced by its .gz; only the one open when tcpdump stopped is plain
        plain = [f for f in files if not f.endswith(".gz")]
        assert len(plain) == 1 and files == sorted([*plain, *(f"cap.pcap{i}.gz" for i in range(4))])
    else:
        assert len(files) >= MIN_ROTATIONS and all(f.startswith("cap-2") and f.endswith(".pcap") for f in files)


def test_no_ring_warning_when_starting_behind_a_young_ring(live: Live) -> None:
    """tcpdump -C 5 -W 4 (a 20 MB ring) has written 3 MB into its first file when pcapwatch starts:
    3 MB to catch up is 15% of the ring, far from an overwrite, so no lag warning; every record."""
    sent_before = 30  # 100 KB each
    with live.ring("-C", "5", "-W", "4"):
        sent = Clients(live.port, request_plan(sent_before, mix=(("GET", "/100k.bin"),)), rate=200.0).run()
        time.sleep(0.5)
        with live.service() as svc:
            live.wait_records(sent_before)
            time.sleep(0.5)
            lines = [line for line in svc.lines() if ": info: " not in line]
    assert Counter(key(r) for r in live.records()) == sent_keys(sent)
    assert lines == []


@pytest.mark.parametrize("mode", ["buffered", "immediate"])
def test_latency_from_wire_to_record(live: Live, mode: str) -> None:
    """Client send time to the record's appearance in the output file, polled every 10 ms.

    With -U alone libpcap hands packets to tcpdump in blocks, after up to its buffer timeout;
    --immediate-mode takes that away, and what is left is pcapwatch's own delay. The checkpoint
    interval is the default one (5 s): records must not wait for the checkpoint to be written.
    """
    plan = request_plan(LATENCY_REQUESTS, mix=(("GET", "/1k.bin"), ("GET", "/10k.bin")))
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        offset, partial = 0, b""
        while not done.is_set():
            with open(live.out, "rb") as f:
                f.seek(offset)
                data = f.read()
            now = time.time()
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                seen.setdefault(json.loads(line)["uri"], now)
            time.sleep(0.01)

    immediate = ("--immediate-mode", "-s", "65535") if mode == "immediate" else ()
    config = live.config(state={"checkpoint_seconds": DEFAULT_CHECKPOINT_SECONDS})
    with live.ring("-C", "1", "-W", "4", *immediate), live.service(config=config):
        live.out.touch()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            sent = Clients(live.port, plan, rate=20.0, connections=4).run()
            live.wait_records(len(plan))
            time.sleep(0.1)
        finally:
            done.set()
            poller.join(5)
    assert sorted(seen) == sorted(s.uri for s in sent)
    delays = sorted(seen[s.uri] - s.t_send for s in sent)
    p50 = statistics.median(delays)
    p99 = delays[int(0.99 * (len(delays) - 1))]
    print(f"\n{mode} tcpdump: wire-to-record latency over {len(delays)} requests: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms")
    assert p99 < LATENCY_P99_LIMIT
