"""A packet whose analysis raises, in the middle of real traffic: it costs its connection only.

The capture is the corpus's real nginx traffic (`mix.pcap`) with two packets added in its middle:
a LAND pair (a SYN then an RST whose source and destination address and port are equal; it made the
flow table raise KeyError, and the service crash and replay in a loop), and a synthetic failure
(tests/helpers/faulty.py: the analysis of one request's first packet raises, whatever happens to the
real bug). Cut in three files like tcpdump's `-C` and dropped into the spool one by one:
- `run` logs one line per failing packet with the file and offset, counts them (the status line),
  writes every other record exactly once, and never restarts (one process, exit 0 at SIGTERM);
- `read` of the same files exits 1, says the same lines, and writes every other record: the same
  records the service wrote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import pcapgen as g
from helpers.env import corpus
from helpers.liveenv import PCAPWATCH, Service, wait_for, write_config

from analyzers import Pipeline, split_records
from analyzers.tcp.frames import ACK, RST, SYN
from watcher.capture.pcapfile import CaptureParser

FAULTY = [sys.executable, str(Path(__file__).parent.parent / "helpers" / "faulty.py")]
NAMES = ("cap.pcap", "cap.pcap1", "cap.pcap2")  # as tcpdump -C names them
READ_FIELDS = ("ts", "uid", "trans_depth", "src_ip", "src_port", "dst_ip", "dst_port", "method", "host", "uri",
               "version", "user_agent", "referrer", "request_body_len", "status_code", "status_msg", "info_code",
               "response_body_len", "response_content_type", "ttfb_ms", "duration_ms", "flags", "anomalies",
               "reason", "pcap_file")


def payload(rec: bytes) -> bytes:
    """The TCP payload of one Ethernet + IPv4 or IPv6 record (with its 16-byte header)."""
    frame = rec[16:]
    if frame[12:14] == b"\x08\x00":
        ip_len = (frame[14] & 0x0F) * 4
        (total,) = struct.unpack_from("!H", frame, 16)
    elif frame[12:14] == b"\x86\xdd" and frame[20] == 6:  # TCP right after the fixed header
        ip_len = 40
        total = 40 + struct.unpack_from("!H", frame, 18)[0]
    else:
        return b""
    doff = (frame[14 + ip_len + 12] >> 4) * 4
    return frame[14 + ip_len + doff:14 + total]


def land(ts_ns: int) -> list[bytes]:
    a = bytes([10, 9, 9, 9])
    segs = [g.Segment(ts_ns, a, a, 80, 80, 1, 0, SYN, b""), g.Segment(ts_ns + 1000, a, a, 80, 80, 2, 0, RST | ACK, b"")]
    return g.split_pcap(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segs)))[1]


def build(staging: Path) -> tuple[list[Path], bytes, int]:
    """The three files; the synthetic failure's trigger; how many packets fail in the analyzers as
    they are (the LAND pair's one while its bug is there, and the trigger's)."""
    header, recs = g.split_pcap(corpus("local", "mix.pcap").read_bytes())
    firsts = [p[:p.find(b"\r\n")] for p in map(payload, recs)]
    counts = Counter(firsts)
    start = 2 * len(recs) // 3
    i = next(k for k in range(start, len(recs)) if firsts[k].startswith(b"GET /") and counts[firsts[k]] == 1)
    trigger = firsts[i] + b"\r\n"
    mid = len(recs) // 2
    sec, usec = struct.unpack_from("<II", recs[mid])
    recs[mid + 1:mid + 1] = land((sec * 10**6 + usec) * 1000 + 1000)
    cuts = [0, len(recs) // 3, 2 * len(recs) // 3, len(recs)]
    paths = []
    for n, name in enumerate(NAMES):
        p = staging / name
        p.write_bytes(header + b"".join(recs[cuts[n]:cuts[n + 1]]))
        paths.append(p)
    p = Pipeline()  # the analyzers as they are, without the synthetic failure
    for path in paths:
        data = path.read_bytes()
        parser = CaptureParser()
        parser.header(data, 0)
        layout = parser.record_layout()
        assert layout is not None
        p.feed_records(data, split_records(data, 24, len(data), layout)[0], layout)
    return paths, trigger, p.stats()["connections"]["internal_errors"] + 1


def canonical(records: list[dict[str, Any]]) -> Counter[str]:
    """The records as `read` writes them: the service adds event_id, route, tags and headers."""
    return Counter(json.dumps({k: v for k, v in r.items() if k in READ_FIELDS}, sort_keys=True) for r in records)


def test_a_failing_packet_costs_its_connection_in_run_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging, spool, state = tmp_path / "staging", tmp_path / "spool", tmp_path / "state"
    staging.mkdir()
    spool.mkdir()
    paths, trigger, failing = build(staging)
    monkeypatch.setenv("PCAPWATCH_TEST_FAIL_ON", trigger.decode())
    # read: exit 1, one line per failing packet, every other record
    out = tmp_path / "read.jsonl"
    done = subprocess.run([*FAULTY, *PCAPWATCH, "read", "--workers", "1", *map(str, paths), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    read_errors = done.stderr.splitlines()
    assert len(read_errors) == failing, read_errors
    where = [re.match(r"pcapwatch: error: (\S+) offset (\d+): analysing this packet failed \((.*?)\); its "
                      r"connection was closed \(reason internal_error\)", line) for line in read_errors]
    assert all(where), read_errors
    assert "KeyError: 'synthetic failure'" in [m[3] for m in where if m]
    read_records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(tuple(r) == READ_FIELDS for r in read_records)
    uri = trigger.split(b" ")[1].decode()
    assert uri not in {r["uri"] for r in read_records}
    # run: the files dropped one by one; the same lines (spool paths), counted, the same records once
    config = write_config(tmp_path / "pcapwatch.yaml", spool, state, tmp_path / "run.jsonl")
    svc = Service(config, tmp_path / "pcapwatch.stderr", prefix=FAULTY)
    try:
        svc.wait_ready()
        for path in paths:
            os.rename(path, spool / path.name)
            time.sleep(0.5)
        run_out = tmp_path / "run.jsonl"
        wait_for("every record", lambda: run_out.exists() and len(run_out.read_text().splitlines())
                 >= len(read_records), 60)
        time.sleep(1.0)  # nothing more comes
        before = len(svc.lines("info"))
        svc.send(signal.SIGUSR1)
        wait_for("the status line", lambda: len(svc.lines("info")) > before)
        status = svc.lines("info")[before]
        assert svc.proc.poll() is None
    finally:
        code = svc.stop()
    assert code == 0, svc.log()
    assert f"packets failed {failing}," in status, status
    run_errors = svc.lines("error")
    assert run_errors == [line.replace(str(staging), str(spool)) for line in read_errors]
    assert len([line for line in svc.lines("info") if "info: watching " in line]) == 1  # never restarted
    run_records = [json.loads(line) for line in run_out.read_text().splitlines()]
    assert len({r["event_id"] for r in run_records}) == len(run_records)  # each once
    assert canonical(run_records) == canonical(read_records)
    print(f"\n{len(run_records)} records, {failing} packets failed: {[m[3] for m in where if m]}")
