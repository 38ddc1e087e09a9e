"""Where the service is in the spool, saved so that a restart loses nothing and repeats nothing.

Two marks, each a capture generation (by content fingerprint) and a record offset in it:
- `resume`: where reading starts again. It is at or before the start of every unfinished
  transaction, so replaying from it rebuilds them.
- `emitted`: the last record whose transactions have all been written. On replay, transactions
  completed at or before it were written already and are suppressed.
After SIGTERM both are exact: nothing is lost or written twice. After kill -9 the file is as old as
the last save (a few seconds): records written since are written again, with the same `event_id`.

The file is replaced atomically (temp file, fsync, rename, fsync of the directory). A file that
cannot be read is reported and ignored: the service then starts from the oldest capture.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

FILE_NAME = "checkpoint.json"
VERSION = 1


@dataclass(frozen=True)
class Mark:
    """A record's place: the generation holding it (fingerprint, first packet time, file name at
    the time, for people) and its content offset in that generation."""

    fp: str
    first_ts: float
    offset: int
    name: str = ""


@dataclass(frozen=True)
class Checkpoint:
    resume: Mark
    emitted: Mark | None
    written_at: float


def path_in(state_dir: str) -> str:
    return os.path.join(state_dir, FILE_NAME)


def load(state_dir: str) -> tuple[Checkpoint | None, str | None]:
    """The saved checkpoint, or (None, a one-line warning) when there is none usable."""
    path = path_in(state_dir)
    for stale in glob.glob(glob.escape(path) + ".tmp.*"):  # left by a run killed while saving
        with contextlib.suppress(OSError):
            os.unlink(stale)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:
        return None, f"checkpoint {path} cannot be read ({e}); starting from the oldest capture in the spool"
    try:
        if raw.get("version") != VERSION:
            raise ValueError(f"version {raw.get('version')!r}, expected {VERSION}")
        emitted = raw.get("emitted")
        return Checkpoint(_mark(raw["resume"]), _mark(emitted) if emitted else None,
                          float(raw["written_at"])), None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return None, f"checkpoint {path} is not valid ({e}); starting from the oldest capture in the spool"


def save(state_dir: str, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically; raises OSError (the caller reports it and goes on)."""
    os.makedirs(state_dir, exist_ok=True)
    path = path_in(state_dir)
    tmp = f"{path}.tmp.{os.getpid()}"
    data: dict[str, Any] = {"version": VERSION, "written_at": checkpoint.written_at or time.time(),
                            "resume": asdict(checkpoint.resume),
                            "emitted": asdict(checkpoint.emitted) if checkpoint.emitted else None}
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data, indent=1).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _mark(raw: dict[str, Any]) -> Mark:
    return Mark(str(raw["fp"]), float(raw["first_ts"]), int(raw["offset"]), str(raw.get("name", "")))
