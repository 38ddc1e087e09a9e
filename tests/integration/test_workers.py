"""`read` with worker processes (watcher/read/parallel.py) gives what one process gives.

The same inputs are read with `workers=1` and `workers=2` (and 3): the same records, each
connection's in order, the same counters (summed from the workers), the same problems reported
once each, whatever the inputs: classic pcap of either byte order, gzip, pcapng, connections
continued across rotation files of different formats, a corrupt file among good ones. A worker
that dies must not leave the read hanging.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import impair
from helpers import pcapgen as g
from helpers.env import CORPUS, read_records
from helpers.pcapgen import Segment

from analyzers.tcp.frames import ACK, FIN, SYN
from watcher.read import parallel as workers
from watcher.read.job import ReadResult, read_captures
from watcher.read.lines import open_output

PSH = 0x08
T0 = 1_700_000_000 * 10**9
SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]


def traffic(connections: int = 30, seed: int = 5, prefix: bytes = b"") -> list[Segment]:
    """Keep-alive connections, each several requests with bodies over many segments, interleaved;
    `prefix` begins every request target."""
    rng = random.Random(seed)
    out: list[Segment] = []
    for n in range(connections):
        c, s = bytes([10, 0, 0, n + 1]), bytes([10, 1, 1, 1])
        cp, sp = 40000 + 2 * n, 80
        cseq, sseq = 1000 + n, 90000 + n
        t = T0 + n * 1_000_000
        out.append(Segment(t, c, s, cp, sp, cseq, 0, SYN, b""))
        out.append(Segment(t + 100, s, c, sp, cp, sseq, cseq + 1, SYN | ACK, b""))
        cseq, sseq = cseq + 1, sseq + 1
        for k in range(rng.randint(1, 6)):
            t += rng.randint(1_000, 3_000_000)
            req = b"GET " + prefix + f"/{n}/{k} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
            out.append(Segment(t, c, s, cp, sp, cseq, sseq, ACK | PSH, req))
            cseq += len(req)
            body = bytes(rng.choice([0, 100, 5000, 30000]))
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            for i in range(0, len(resp), 1448):
                t += 50
                out.append(Segment(t, s, c, sp, cp, sseq, cseq, ACK | PSH, resp[i:i + 1448]))
                sseq += len(resp[i:i + 1448])
        t += 1000
        out.append(Segment(t, c, s, cp, sp, cseq, sseq, FIN | ACK, b""))
        out.append(Segment(t + 10, s, c, sp, cp, sseq, cseq + 1, FIN | ACK, b""))
    out.sort(key=lambda seg: seg.ts_ns)
    return out


def lines(records: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def same_as_one_process(paths: list[Path], shards: int = 2) -> tuple[list[dict[str, Any]], ReadResult, str]:
    one = read_records(*paths, workers=1)
    many = read_records(*paths, workers=shards)
    assert lines(many[0]) == lines(one[0])
    for key in ("files", "files_failed", "bytes_read", "errors"):
        assert getattr(many[1], key) == getattr(one[1], key), key
    stats_one, stats_many = dict(one[1].stats), dict(many[1].stats)
    # Each worker has its own reassembly buffer budget; everything else adds up exactly.
    assert stats_many["tcp"].pop("buffered_bytes_limit") == shards * stats_one["tcp"].pop("buffered_bytes_limit")
    assert stats_many == stats_one
    assert sorted(many[2].splitlines()) == sorted(one[2].splitlines())
    by_conn: dict[str, list[int]] = {}
    for r in many[0]:
        by_conn.setdefault(r["uid"], []).append(r["trans_depth"])
    assert all(depths == sorted(depths) for depths in by_conn.values())  # a connection's records in order
    return many


@pytest.mark.parametrize("shards", [2, 3])
def test_one_pcap(tmp_path: Path, shards: int) -> None:
    path = g.write_pcap(tmp_path / "cap.pcap", g.LINKTYPE_ETHERNET, g.frames(traffic()))
    records, result, _err = same_as_one_process([path], shards)
    assert len(records) > 60
    assert result.stats["frames"] == len(traffic())


@pytest.mark.parametrize(("strings", "prefix"), [("utf8", "/K\u00f6ln\\xff"), ("ascii", "/K\\xc3\\xb6ln\\xff")])
def test_strings_in_every_worker(tmp_path: Path, strings: str, prefix: str) -> None:
    """Workers write wire text in the form asked for, as one process does."""
    path = g.write_pcap(tmp_path / "cap.pcap", g.LINKTYPE_ETHERNET, g.frames(traffic(prefix=b"/K\xc3\xb6ln\xff")))
    one = read_records(path, workers=1, strings=strings)
    many = read_records(path, workers=2, strings=strings)
    assert lines(many[0]) == lines(one[0])
    assert len(one[0]) > 60 and all(r["uri"].startswith(prefix + "/") for r in one[0])


def test_utf8_bytes_from_every_worker(tmp_path: Path) -> None:
    """The output file's bytes, from one process and from workers (whose lines cross a pipe): UTF-8
    text as its bytes, and a capture file name that is not UTF-8 as its JSON escape (\\udce9), the
    same lines either way."""
    name = os.fsdecode(b"caf\xe9.pcap")  # "caf\udce9.pcap": a name of Latin-1 bytes
    path = g.write_pcap(tmp_path / name, g.LINKTYPE_ETHERNET, g.frames(traffic(prefix=b"/K\xc3\xb6ln")))
    outs = []
    for n in (1, 2):
        out_path = tmp_path / f"out{n}.jsonl"
        with open_output(str(out_path)) as out:
            read_captures([str(path)], out, io.StringIO(), workers=n)
        outs.append(out_path.read_bytes())
    one, many = (sorted(o.splitlines()) for o in outs)
    assert many == one and len(one) > 60
    assert all(b'"uri":"/K\xc3\xb6ln/' in line and line.endswith(b'"pcap_file":"caf\\udce9.pcap"}') for line in one)
    assert {json.loads(line)["pcap_file"] for line in one} == {name}


def test_rotation_files_of_every_format(tmp_path: Path) -> None:
    """Connections continue from one file into the next: big-endian pcap, gzip, pcapng, SLL."""
    parts = impair.cut(traffic(), [300, 700, 1100])
    paths = [
        g.write_pcap(tmp_path / "a.pcap", g.LINKTYPE_ETHERNET, g.frames(parts[0]), big_endian=True),
        tmp_path / "b.pcap.gz",
        g.write_pcapng(tmp_path / "c.pcapng", [g.LINKTYPE_ETHERNET], [(0, ts, f) for ts, f in g.frames(parts[2])]),
        g.write_pcap(tmp_path / "d.pcap", g.LINKTYPE_LINUX_SLL, g.frames(parts[3], "sll"), nanos=True),
    ]
    paths[1].write_bytes(gzip.compress(g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(parts[1]))))
    records, result, _err = same_as_one_process(paths)
    assert result.files == 4 and result.files_failed == 0
    assert {r["pcap_file"] for r in records} >= {"a.pcap", "b.pcap.gz", "c.pcapng"}


def test_a_corrupt_file_among_good_ones(tmp_path: Path) -> None:
    """Reported once, as one process reports it; the records before the damage and the other
    files are all there."""
    parts = impair.cut(traffic(), [500])
    packets = g.frames(parts[0])
    damaged = bytearray(g.pcap_bytes(g.LINKTYPE_ETHERNET, packets))
    at = 24 + sum(16 + len(frame) for _ts, frame in packets[:len(packets) // 2])
    damaged[at:at + 16] = b"\xff" * 16  # a record header no capture has
    paths = [tmp_path / "a.pcap", g.write_pcap(tmp_path / "b.pcap", g.LINKTYPE_ETHERNET, g.frames(parts[1])),
             tmp_path / "missing.pcap"]
    paths[0].write_bytes(bytes(damaged))
    _records, result, err = same_as_one_process(paths)
    assert result.files_failed == 2
    assert len(result.errors) == 2 and err.count("pcapwatch: error:") == 2


def test_corpus_capture() -> None:
    path = CORPUS / "local" / "mix1500.pcap"
    if not path.exists():
        pytest.skip(f"shared corpus not available: {path}")
    same_as_one_process([path])


def test_a_worker_that_dies_stops_the_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The others are stopped and the failure named, rather than waited for forever."""
    path = g.write_pcap(tmp_path / "cap.pcap", g.LINKTYPE_ETHERNET, g.frames(traffic()))

    def die(*args: Any) -> None:
        raise SystemExit(3)

    monkeypatch.setattr(workers, "_work", die)  # the forked workers run this
    with pytest.raises(RuntimeError, match="worker process failed: pcapwatch-worker"):
        read_captures([str(path)], io.StringIO(), io.StringIO(), workers=2)


def test_a_file_cut_after_the_feeder_read_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that finds fewer bytes than the feeder walked (the file was rewritten in between)
    says so once, counts the file as failed, and goes on with the next file."""
    parts = impair.cut(traffic(), [600])
    a = g.write_pcap(tmp_path / "a.pcap", g.LINKTYPE_ETHERNET, g.frames(parts[0]))
    b = g.write_pcap(tmp_path / "b.pcap", g.LINKTYPE_ETHERNET, g.frames(parts[1]))
    real = workers.RangeReader

    class Shrunk(real):  # type: ignore[misc, valid-type]
        def read(self, pos: int, size: int) -> bytes:
            if self.cap.path == str(a):
                path = Path(self.cap.path)
                path.write_bytes(path.read_bytes()[:100])
            return super().read(pos, size)

    monkeypatch.setattr(workers, "RangeReader", Shrunk)
    out, err = io.StringIO(), io.StringIO()
    result = read_captures([str(a), str(b)], out, err, workers=2)
    assert result.files_failed == 1
    assert [e.split(":")[0] for e in result.errors] == [str(a)]
    assert "changed while it was read" in err.getvalue()
    assert {json.loads(line)["pcap_file"] for line in out.getvalue().splitlines()} >= {"b.pcap"}


def session_processes(sid: int) -> list[int]:
    """Processes still alive in session `sid` (zombies are dead: their parent will reap them)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            pids.append(int(entry))
    return pids


def test_output_closed_early_leaves_no_process_behind(tmp_path: Path) -> None:
    """`pcapwatch read f | head -c 100`: the parent dies of SIGPIPE; the feeder and the workers,
    which cannot write anywhere now, must go too rather than wait forever."""
    path = g.write_pcap(tmp_path / "cap.pcap", g.LINKTYPE_ETHERNET, g.frames(traffic(connections=250)))
    # Read 20 times over: more lines than the pipes between the processes hold, so that they are
    # still at work when the output closes.
    proc = subprocess.Popen([*PCAPWATCH, "read", "--workers", "2", *[str(path)] * 20], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(100).startswith(b'{"ts":')
        proc.stdout.close()
        assert proc.wait(timeout=30) == -signal.SIGPIPE
        deadline = time.monotonic() + 10
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session_processes(proc.pid) == []
    finally:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
