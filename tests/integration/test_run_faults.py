"""`pcapwatch run` when things go wrong around it: it falls behind until tcpdump's ring overwrites
a file it has not read, or a file that is no good capture lands in the spool. Either way it says
so once, on stderr, naming the file, and carries on: later requests are all written, once.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.env import read_records
from helpers.liveenv import Live, live_env, wait_until
from helpers.traffic import Clients, key, request_plan, sent_keys

SMALL = (("GET", "/1k.bin"), ("GET", "/10k.bin"), ("GET", "/missing.html"))
BIG = (("GET", "/100k.bin"),)
RING_FILE_BYTES = 1_000_000  # tcpdump -C 1
LOSS_LINE = re.compile(r"pcapwatch: error: (?P<path>\S+): rewritten by tcpdump's ring "
                       r"(before it was read|while being read): about (?P<lost>[\d,]+) bytes of capture lost "
                       r"\(read (?P<read>[\d,]+)\), more if tcpdump filled other files meanwhile; "
                       r"pcapwatch is falling behind tcpdump")
LAG_LINE = re.compile(r"pcapwatch: warning: [\d,]+ bytes of capture unread \(\d+% of tcpdump's ring")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_env(tmp_path) as env:
        yield env


@pytest.mark.slow
def test_ring_overwrites_a_file_while_the_service_is_stopped(live: Live) -> None:
    """SIGSTOP while reading cap.pcap0; 6 MB of traffic turn the ring of 3 x 1 MB twice over;
    SIGCONT: cap.pcap0's unread part is counted lost with one error line naming it, and what the
    ring still holds is read exactly as `pcapwatch read` reads a copy of it."""
    snapshot = live.base / "snapshot"
    with live.ring("-C", "1", "-W", "3"), live.service() as svc:
        before = Clients(live.port, request_plan(20, mix=SMALL), rate=40.0, close=True).run()
        assert len(live.wait_records(20)) == 20
        assert sorted(os.listdir(live.spool)) == ["cap.pcap0"]
        svc.send(signal.SIGSTOP)
        try:
            during = Clients(live.port, request_plan(60, first=20, mix=BIG), rate=60.0, close=True).run()
            time.sleep(1.5)  # tcpdump -U has written everything (libpcap hands packets over within 1 s)
            shutil.copytree(live.spool, snapshot)
        finally:
            svc.send(signal.SIGCONT)
        assert svc.wait_log("lost")
        after = Clients(live.port, request_plan(20, first=80, mix=SMALL), rate=40.0, close=True).run()
        uris = {s.uri for s in after}
        wait_until(lambda: uris <= {r["uri"] for r in live.records()}, 15)
        time.sleep(0.5)
        status = svc.status()
        errors, warnings = svc.lines("error"), svc.lines("warning")
    records = live.records()
    ring_copy, _, _ = read_records(*sorted(snapshot.iterdir(), key=lambda p: p.stat().st_mtime))
    assert len(errors) == 1, errors
    m = LOSS_LINE.fullmatch(errors[0])
    assert m is not None and m["path"] == str(live.spool / "cap.pcap0"), errors
    lost, read = int(m["lost"].replace(",", "")), int(m["read"].replace(",", ""))
    assert (status["lost"], status["lost_bytes"]) == (1, lost)
    # tcpdump -C 1 moves on once a file passes 1,000,000 bytes: at least that much of cap.pcap0's
    # first content existed, and all of it past `read` was overwritten unread
    assert lost >= RING_FILE_BYTES - read, errors
    assert all(LAG_LINE.match(w) for w in warnings), warnings
    # before the stop, and after SIGCONT: each request once
    assert Counter(key(r) for r in records[:20]) == sent_keys(before)
    assert Counter(key(r) for r in records if r["uri"] in uris) == sent_keys(after)
    # in between: exactly what the ring's files still held
    middle = [key(r) for r in records[20:] if r["uri"] not in uris]
    assert Counter(middle) == Counter(key(r) for r in ring_copy)
    assert 0 < len(middle) < len(during)


def pcap(first_ts: float, n: int, tail: bytes = b"") -> bytes:
    """A µs Ethernet pcap of `n` 60-byte records 1 ms apart, then `tail` (raw bytes)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(n):
        sec, usec = divmod(round((first_ts + i / 1000) * 1e6), 10**6)
        out.append(struct.pack("<IIII", sec, usec, 60, 60) + bytes(60))
    return b"".join(out) + tail


GARBAGE_RECORD = struct.pack("<IIII", 0, 0, 0xFFFFFF, 0xFFFFFF) + bytes(60)  # claims 16 MB captured
CUT_RECORD = struct.pack("<IIII", 0, 0, 60, 60) + bytes(20)  # 40 of its 60 bytes missing
# What is dropped into the spool, when its first packet was (seconds before now), and the one line
# pcapwatch must write about it.
DROPPED = {
    "not_a_capture": (None, 0, "warning: {path}: not a capture file, ignored"),
    "corrupt_now": (GARBAGE_RECORD, 0, "error: {path}: offset 404: record claims 16777215 captured bytes"),
    "corrupt_old": (GARBAGE_RECORD, 3600, "error: {path}: offset 404: record claims 16777215 captured bytes"),
    "truncated_old": (CUT_RECORD, 3600, "warning: {path}: the last record is cut short (36 bytes)"),
}


@pytest.mark.parametrize("case", DROPPED)
def test_a_bad_file_dropped_into_the_spool(live: Live, case: str) -> None:
    """Between two rounds of requests a file lands in the spool: one line about it, then the
    service goes on as if it were not there (no request lost, none written twice)."""
    tail, age, line = DROPPED[case]
    dropped = live.spool / "dropped.pcap"
    with live.ring("-C", "1", "-W", "4"), live.service() as svc:
        first = Clients(live.port, request_plan(20, mix=SMALL), rate=40.0).run()
        assert len(live.wait_records(20)) == 20
        data = random.Random(5).randbytes(5000) if tail is None else pcap(time.time() - age, 5, tail)
        dropped.write_bytes(data)
        svc.wait_log(str(dropped), timeout=5)
        second = Clients(live.port, request_plan(20, first=20, mix=SMALL), rate=40.0).run()
        live.wait_records(40, timeout=10)
        time.sleep(1.0)
        lines = [x for x in svc.lines() if ": info: " not in x]
    got, expected = Counter(key(r) for r in live.records()), sent_keys(first + second)
    problems = []
    if not (len(lines) == 1 and lines[0].startswith("pcapwatch: " + line.format(path=dropped))):
        problems.append(f"expected one line starting {line.format(path=dropped)!r}, got {lines}")
    if missing := sorted(k[1] for k in expected - got):
        problems.append(f"{len(missing)} requests never written: {missing}")
    if twice := sorted(k[1] for k, n in got.items() if n > 1):
        problems.append(f"{len(twice)} requests written more than once: {twice}")
    if problems:
        pytest.fail("; ".join(problems))
    assert got == expected
