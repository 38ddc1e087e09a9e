"""`pcapwatch run` and its checkpoint file: one that cannot be used (nested 100,000 deep, over the
size cap, garbage, of the wrong schema or version) is one warning line naming the file and the
problem, and the service starts from the oldest capture and writes every record once. A run
checkpoints right after its first batch is written (not only on the timer), so a kill -9 a moment
later repeats nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.env import read_records
from helpers.liveenv import Service, wait_for
from helpers.pcapgen import LINKTYPE_ETHERNET, Conn, Segment, frames, pcap_bytes, split_pcap

from watcher.run import checkpoint as ckpt

CONNECTIONS, PER_CONNECTION = 20, 5


def small_capture() -> bytes:
    segs: list[Segment] = []
    t = 1_700_000_000 * 10**9
    for n in range(CONNECTIONS):
        c = Conn(segs, n + 1)
        c.open(t)
        for k in range(PER_CONNECTION):
            t = c.send(t + 3000, True, f"GET /c/{n}/{k} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
            t = c.send(t, False, b"HTTP/1.1 204 No Content\r\n\r\n")
        c.close(t)
        t += 3000
    return pcap_bytes(LINKTYPE_ETHERNET, frames(segs))


def setup(base: Path, checkpoint_seconds: float = 1.0) -> tuple[Path, bytes, list[dict[str, Any]]]:
    data = small_capture()
    ref = base / "ref" / "cap.pcap"
    ref.parent.mkdir()
    ref.write_bytes(data)
    expected, _, _ = read_records(ref)
    assert len(expected) == CONNECTIONS * PER_CONNECTION
    for d in ("spool", "state"):
        (base / d).mkdir()
    cfg = {"spool": {"dir": str(base / "spool"), "rescan_seconds": 0.5},
           "state": {"dir": str(base / "state"), "checkpoint_seconds": checkpoint_seconds},
           "outputs": [{"name": "records", "type": "jsonl", "path": str(base / "records.jsonl")}]}
    conf = base / "pcapwatch.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    return conf, data, expected


def lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(x) for x in data.split(b"\n")[:-1]]


def same(records: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return [(r["uid"], r["trans_depth"], r["uri"]) for r in records] == \
        [(r["uid"], r["trans_depth"], r["uri"]) for r in expected]


VALID = json.dumps({"version": 1, "written_at": 5.0, "emitted": None,
                    "resume": {"fp": "0123456789abcdef01234567", "first_ts": 1.0, "offset": 24}}).encode()
BAD = {
    "nested": (b"[" * 100_000, "cannot be read (nested too deeply to be a checkpoint)"),
    "huge": (VALID + b" " * ckpt.MAX_BYTES, "is too big (over 1,048,576 bytes; a checkpoint is under 850 KB)"),
    "garbage": (b"\x00\xffPK\x03\x04 not json", "cannot be read ("),
    "schema": (VALID.replace(b'"offset": 24', b'"offset": "24"'),
               "is not valid (resume.offset is '24', expected a whole number >= 0)"),
    "version": (VALID.replace(b'"version": 1', b'"version": 2'), "is not valid (version 2, expected 1)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_checkpoint_that_cannot_be_used_is_one_line_and_the_service_starts_over(tmp_path: Path, case: str) -> None:
    conf, data, expected = setup(tmp_path)
    content, problem = BAD[case]
    path = tmp_path / "state" / "checkpoint.json"
    path.write_bytes(content)
    (tmp_path / "spool" / "cap.pcap").write_bytes(data)
    svc = Service(conf, tmp_path / "pcapwatch.stderr")
    try:
        svc.wait_ready()
        wait_for("every record", lambda: len(lines(tmp_path / "records.jsonl")) >= len(expected), 15)
        time.sleep(0.5)  # nothing more comes
    finally:
        assert svc.stop() == 0, svc.log()
    assert same(lines(tmp_path / "records.jsonl"), expected)  # every record once, in order
    warnings = svc.lines("warning")
    assert len(warnings) == 1, svc.log()
    assert warnings[0].startswith(f"pcapwatch: warning: checkpoint {path} {problem}")
    assert warnings[0].endswith("; starting from the oldest capture in the spool")
    assert "pcapwatch: info: watching " + str(tmp_path / "spool") + " (starting from the oldest capture)" in svc.log()
    assert "Traceback" not in svc.log() and svc.lines("error") == []
    # The file was replaced by a good one.
    assert ckpt.load(str(tmp_path / "state"))[0] is not None


def test_the_first_batch_is_checkpointed_at_once_so_kill_9_repeats_nothing(tmp_path: Path) -> None:
    conf, data, expected = setup(tmp_path, checkpoint_seconds=60.0)  # the timer is not what saves it
    out = tmp_path / "records.jsonl"
    state = str(tmp_path / "state")
    svc = Service(conf, tmp_path / "pcapwatch.stderr")
    try:
        svc.wait_ready()
        time.sleep(1.5)  # past the checkpoint a second after start (nothing to save then); the next is in 60 s
        last = len(data) - len(split_pcap(data)[1][-1])  # the last pcap record's offset
        (tmp_path / "cap.pcap").write_bytes(data)
        os.replace(tmp_path / "cap.pcap", tmp_path / "spool" / "cap.pcap")  # whole at once: one batch
        t0 = time.monotonic()
        wait_for("every record", lambda: len(lines(out)) >= len(expected), 15)
        wait_for("a checkpoint past every record", lambda: (c := ckpt.load(state)[0]) is not None
                 and c.emitted is not None and c.emitted.offset == last, 5)
        assert time.monotonic() - t0 < 3.0
        assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
        svc = Service(conf, tmp_path / "pcapwatch.stderr")
        svc.wait_ready()
        time.sleep(1.5)  # a rescan and more: it would have written them again by now
    finally:
        assert svc.stop() == 0, svc.log()
    assert same(lines(out), expected)  # each once
    assert "records suppressed; outputs: records 0 written (0 bytes)" in svc.log()
