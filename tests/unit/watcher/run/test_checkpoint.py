"""watcher/run/checkpoint.py: the saved position survives a round trip, is replaced atomically, and
a file that cannot be used (missing, corrupt, another version) gives None and a one-line warning
instead of stopping the service."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from watcher.run import checkpoint as ckpt
from watcher.run.checkpoint import Checkpoint, Mark

RESUME = Mark("0123456789abcdef01234567", 1_700_000_000.123456, 1_048_576, "cap.pcap3")
EMITTED = Mark("89abcdef0123456789abcdef", 1_700_000_060.5, 24, "cap.pcap4")


def test_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state"  # created by save
    saved = Checkpoint(RESUME, EMITTED, 1_700_000_100.25)
    ckpt.save(str(state), saved)
    assert ckpt.load(str(state)) == (saved, None)
    assert os.listdir(state) == ["checkpoint.json"]
    raw = json.loads((state / "checkpoint.json").read_text())
    assert raw == {"version": ckpt.VERSION, "written_at": 1_700_000_100.25,
                   "resume": {"fp": RESUME.fp, "first_ts": RESUME.first_ts, "offset": 1_048_576, "name": "cap.pcap3"},
                   "emitted": {"fp": EMITTED.fp, "first_ts": 1_700_000_060.5, "offset": 24, "name": "cap.pcap4"}}


def test_round_trip_without_emitted_mark(tmp_path: Path) -> None:
    saved = Checkpoint(RESUME, None, 1_700_000_100.0)
    ckpt.save(str(tmp_path), saved)
    assert ckpt.load(str(tmp_path)) == (saved, None)


def test_save_replaces_the_previous_one(tmp_path: Path) -> None:
    ckpt.save(str(tmp_path), Checkpoint(RESUME, None, 1.0))
    newer = Checkpoint(EMITTED, EMITTED, 2.0)
    ckpt.save(str(tmp_path), newer)
    assert ckpt.load(str(tmp_path)) == (newer, None)
    assert os.listdir(tmp_path) == ["checkpoint.json"]


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up halfway through writing the new file: the old one is still what loads,
    and no half-written temporary file is left behind."""
    old = Checkpoint(RESUME, EMITTED, 1.0)
    ckpt.save(str(tmp_path), old)
    real_write = os.write

    def write_half(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", write_half)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(str(tmp_path), Checkpoint(EMITTED, None, 2.0))
    monkeypatch.undo()
    assert ckpt.load(str(tmp_path)) == (old, None)
    assert os.listdir(tmp_path) == ["checkpoint.json"]


def test_missing_is_a_first_start(tmp_path: Path) -> None:
    """No checkpoint yet is normal (first start, or a new state dir): None and nothing to warn about."""
    assert ckpt.load(str(tmp_path)) == (None, None)
    assert ckpt.load(str(tmp_path / "no such dir")) == (None, None)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "cannot be read (Expecting value: line 1 column 1 (char 0))"),
    (b'{"version": 1, "resume": {"fp": "ab', "cannot be read (Unterminated string starting at"),
    (b"\xff\xfe\x00garbage", "cannot be read ("),
    (b"[1, 2]", "is not valid ("),
    (b'{"version": 1, "written_at": 5, "emitted": null}', "is not valid ('resume')"),
    (b'{"version": 1, "written_at": 5, "resume": {"fp": "x", "first_ts": "soon", "offset": 0}, "emitted": null}',
     "is not valid (could not convert string to float: 'soon')"),
])
def test_corrupt_gives_a_warning_and_none(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_bytes(content)
    checkpoint, warning = ckpt.load(str(tmp_path))
    assert checkpoint is None and warning is not None
    assert warning.startswith(f"checkpoint {path} {problem}")
    assert warning.endswith("; starting from the oldest capture in the spool")
    assert "\n" not in warning


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_version_gives_a_warning_and_none(tmp_path: Path, version: object) -> None:
    raw = {"version": version, "written_at": 5.0, "emitted": None,
           "resume": {"fp": RESUME.fp, "first_ts": RESUME.first_ts, "offset": 24, "name": ""}}
    (tmp_path / "checkpoint.json").write_text(json.dumps(raw))
    assert ckpt.load(str(tmp_path)) == (None, f"checkpoint {tmp_path / 'checkpoint.json'} is not valid (version "
                                              f"{version!r}, expected {ckpt.VERSION}); starting from the oldest "
                                              "capture in the spool")


def test_unreadable_path_gives_a_warning(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").mkdir()  # a directory where the file should be
    checkpoint, warning = ckpt.load(str(tmp_path))
    assert checkpoint is None and warning is not None and "Is a directory" in warning
