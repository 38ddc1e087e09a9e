"""`pcapwatch run` writing to a full disk: a jsonl output on a 2 MB tmpfs the test mounts, filled
with a file of its own until only ROOM bytes are left, then given its space back.

An output that may drop: written + dropped + buffered add up to the records made (those of
`pcapwatch read` of the same capture) at every status line; every line of the file is a whole
record, none twice, in order; the log says it once: the failure, the buffer filling, the recovery,
the count dropped. A `required: true` output drops nothing: analysis waits for it, the checkpoint's
`emitted` mark stops exactly before the first record it has not written (also across a SIGTERM
and a restart), and once there is space every record is in the file exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.env import need_root, need_tool, read_records
from helpers.liveenv import Service, strict_jsonl, wait_for
from helpers.pcapgen import LINKTYPE_ETHERNET, Conn, Segment, frames, pcap_bytes

# About 2.3 KB of capture per transaction: the reader's 1 MiB batches make ~450 records each, fewer
# than BUFFER, so the buffer fills only when the disk does.
CONNECTIONS, PER_CONNECTION = 250, 12  # 3,000 transactions, ~1.55 MB of records (fits 2 MB)
BODY = 2000
BUFFER = 500
ROOM = 300_000  # bytes left on the tmpfs: ~580 records
TMPFS_SIZE = "2m"
OUT = re.compile(r"outputs: records (?P<written>[\d,]+) written \((?P<bytes>[\d,]+) bytes\), "
                 r"(?P<dropped>[\d,]+) dropped, (?P<buffered>[\d,]+) buffered")


@dataclass
class Capture:
    data: bytes
    done_offsets: list[int]  # per transaction: file offset of the pcap record that completes it
    last_offset: int  # of the last pcap record


def keepalive_capture() -> Capture:
    """CONNECTIONS connections one after the other, each with PER_CONNECTION GETs answered with
    BODY bytes; and where each transaction's last response segment is in the file."""
    segs: list[Segment] = []
    last_of: list[int] = []
    t = 1_700_000_000 * 10**9
    for n in range(CONNECTIONS):
        c = Conn(segs, n + 1)
        c.open(t)
        t += 3000
        for k in range(PER_CONNECTION):
            t = c.send(t, True, f"GET /item/{n}/{k}?q=x HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
            t = c.send(t, False, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                                 + str(BODY).encode() + b"\r\n\r\n" + b"x" * BODY)
            last_of.append(max(i for i, s in enumerate(segs) if s.payload and s.sport == c.sp))
        c.close(t)
        t += 3000
    packets = frames(segs)
    offsets, off = [], 24
    for _, frame in packets:
        offsets.append(off)
        off += 16 + len(frame)
    return Capture(pcap_bytes(LINKTYPE_ETHERNET, packets), [offsets[i] for i in last_of], offsets[-1])


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Capture, list[dict[str, Any]]]:
    """The capture and `pcapwatch read`'s records of it (under the name the spool gives it)."""
    cap = keepalive_capture()
    path = tmp_path_factory.mktemp("reference") / "cap.pcap"
    path.write_bytes(cap.data)
    records, _, _ = read_records(path)
    assert len(records) == CONNECTIONS * PER_CONNECTION == len(cap.done_offsets)
    return cap, records


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    need_root()
    need_tool("mount", "umount")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(directory: Path, leave: int) -> Path:
    st = os.statvfs(directory)
    filler = directory / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def config(base: Path, out: Path, **output: Any) -> Path:
    cfg = {"spool": {"dir": str(base / "spool"), "rescan_seconds": 0.5},
           "state": {"dir": str(base / "state"), "checkpoint_seconds": 1.0},
           "outputs": [{"name": "records", "type": "jsonl", "path": str(out), "buffer": BUFFER, **output}]}
    (base / "spool").mkdir(exist_ok=True)
    path = base / "pcapwatch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def put(spool: Path, data: bytes) -> None:
    tmp = spool.parent / ".cap.pcap.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, spool / "cap.pcap")


def outputs(svc: Service) -> dict[str, int]:
    """The output's counters from a status line (SIGUSR1)."""
    before = len(svc.lines("info"))
    svc.send(signal.SIGUSR1)
    wait_for("a status line", lambda: any(OUT.search(x) for x in svc.lines("info")[before:]), 10)
    m = next(m for x in svc.lines("info")[before:] if (m := OUT.search(x)))
    return {k: int(v.replace(",", "")) for k, v in m.groupdict().items()}


def sink_lines(svc: Service) -> list[str]:
    return [x for x in svc.lines() if "output records" in x]


def as_read(records: list[dict[str, Any]], expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The service's records in the fields of `read`'s (the service adds its rules' and
    redaction's: event_id, route, tags, headers)."""
    keys = list(expected[0])
    added = {"event_id", "route", "tags", "request_headers", "response_headers"}
    assert all(set(r) - set(keys) == added for r in records)
    return [{k: r[k] for k in keys} for r in records]


def emitted_offset(state: Path) -> int:
    return int(json.loads((state / "checkpoint.json").read_text())["emitted"]["offset"])


def test_full_disk_drops_are_counted_and_logged_and_every_line_is_whole(
        tmp_path: Path, capture: tuple[Capture, list[dict[str, Any]]]) -> None:
    cap, expected = capture
    total = len(expected)
    with tmpfs(tmp_path / "out") as out:
        filler = fill(out, ROOM)
        path = out / "records.jsonl"
        svc = Service(config(tmp_path, path), tmp_path / "pcapwatch.stderr")
        try:
            svc.wait_ready()
            put(tmp_path / "spool", cap.data)
            wait_for("every record made", lambda: svc.status()["records"] == total)
            wait_for("the buffer full", lambda: outputs(svc)["buffered"] == BUFFER)
            full = outputs(svc)
            assert full["written"] + full["dropped"] + full["buffered"] == total
            assert 0 < full["written"] < total - BUFFER and full["dropped"] > 0
            # Written means in the file, whole lines only, bytes and all.
            assert full["written"] == len(strict_jsonl(path)) and full["bytes"] == path.stat().st_size
            assert sink_lines(svc) == [
                "pcapwatch: warning: jsonl output records: No space left on device; buffering and retrying with "
                "backoff",
                f"pcapwatch: warning: jsonl output records: buffer full ({BUFFER} records): dropping new records "
                "until it has room (counted)"]
            filler.unlink()
            wait_for("the buffer written", lambda: outputs(svc)["buffered"] == 0)
        finally:
            assert svc.stop() == 0, svc.log()
        after = outputs_from_stop_line(svc)
        records = strict_jsonl(path)
    dropped = full["dropped"]
    assert after == {"written": full["written"] + BUFFER, "bytes": sum(len(json.dumps(r, separators=(",", ":"))) + 1
                                                                         for r in records),
                     "dropped": dropped, "buffered": 0}
    assert after["written"] + after["dropped"] == total == len(records) + dropped
    # Drop-newest: what is in the file is the first records made, each once, in order.
    assert as_read(records, expected) == expected[:len(records)]
    lines = sink_lines(svc)
    assert len(lines) == 4, lines
    assert re.fullmatch(r"pcapwatch: info: jsonl output records: writing again after \d+\.\d s", lines[2])
    assert re.fullmatch(rf"pcapwatch: warning: jsonl output records: dropped {dropped:,} records while its buffer "
                        rf"was full \(\d+\.\d s\); {dropped:,} dropped in all", lines[3])
    assert not [x for x in svc.lines() if "reconnected" in x or "still failing" in x or "Traceback" in x]


def outputs_from_stop_line(svc: Service) -> dict[str, int]:
    stop = [x for x in svc.lines("info") if x.startswith("pcapwatch: info: stopped: ")]
    assert len(stop) == 1, svc.log()
    m = OUT.search(stop[0])
    assert m, stop[0]
    return {k: int(v.replace(",", "")) for k, v in m.groupdict().items()}


@pytest.mark.parametrize("restart", [False, True], ids=["space-back-while-running", "sigterm-then-restart"])
def test_required_output_drops_nothing_and_the_checkpoint_waits(
        tmp_path: Path, capture: tuple[Capture, list[dict[str, Any]]], restart: bool) -> None:
    cap, expected = capture
    total = len(expected)
    state = tmp_path / "state"
    with tmpfs(tmp_path / "out") as out:
        filler = fill(out, ROOM)
        path = out / "records.jsonl"
        conf = config(tmp_path, path, required=True)
        svc = Service(conf, tmp_path / "pcapwatch.stderr")
        try:
            svc.wait_ready()
            put(tmp_path / "spool", cap.data)
            assert svc.wait_log(f"pcapwatch: warning: output records is required and its buffer is full ({BUFFER} "
                                "records): analysis waits for it, the capture files wait in the spool", 20), svc.log()
            blocked = outputs(svc)
            written = len(strict_jsonl(path))
            assert blocked["dropped"] == 0 and blocked["written"] == written
            # Analysis stopped within a batch of the buffer: not everything was made.
            made = svc.status()["records"]
            assert blocked["written"] + blocked["buffered"] == made < total
            # The checkpoint claims exactly what the output wrote: it stops just before the first
            # record not in the file (saved each second; give it two).
            wait_for("the checkpoint held", lambda: (state / "checkpoint.json").exists()
                     and emitted_offset(state) == cap.done_offsets[written] - 1, 5)
            if restart:
                assert svc.stop() == 0, svc.log()
                assert emitted_offset(state) == cap.done_offsets[written] - 1
                assert len(strict_jsonl(path)) == written
                assert svc.lines("warning")[-1] == (
                    f"pcapwatch: warning: {made - written:,} transactions not written by the required outputs: the "
                    "checkpoint stops before them, the next start writes them")
                svc = Service(conf, tmp_path / "pcapwatch.stderr")
                svc.wait_ready()
            filler.unlink()
            wait_for("every record written", lambda: outputs(svc)["written"] == total - (written if restart else 0))
        finally:
            assert svc.stop() == 0, svc.log()
        records = strict_jsonl(path)
    assert as_read(records, expected) == expected  # each once, in order
    assert len({r["event_id"] for r in records}) == total
    after = outputs_from_stop_line(svc)
    assert (after["dropped"], after["buffered"]) == (0, 0)
    assert emitted_offset(state) == cap.last_offset  # all done: where the service is
    log = svc.log()
    assert "Traceback" not in log and "reconnected" not in log
    if not restart:
        assert re.search(r"pcapwatch: info: output records has room again after \d+\.\d s: analysis goes on", log)
