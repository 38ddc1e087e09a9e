"""Where the service is in the spool, saved so that a restart loses nothing and repeats nothing.

Two marks, each a capture generation (by content fingerprint) and a record offset in it:
- `resume`: where reading starts again. It is at or before the start of every unfinished
  transaction, so replaying from it rebuilds them.
- `emitted`: the last record whose transactions have all been written. On replay, transactions
  completed at or before it were written already and are suppressed.
After SIGTERM both are exact: nothing is lost or written twice. After kill -9 the file is as old as
the last save (a few seconds): records written since are written again, with the same `event_id`.

The file is replaced atomically (temp file, fsync, rename, fsync of the directory). A file that
cannot be used, whatever is wrong with it (unreadable, larger than MAX_BYTES, not JSON, nested
deeper than any checkpoint is, another version, a field missing, unknown or of the wrong type), is
reported in one line naming the file and the problem, and ignored: the service then starts from the
oldest capture. Fields are checked one by one against SCHEMA and MARK_SCHEMA.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from watcher.sinks.base import running_user

FILE_NAME = "checkpoint.json"
VERSION = 1
# The file is read only up to this size. A checkpoint is a few hundred bytes (two marks); 1 MiB
# leaves room for thousands of times that (state added to it later) while a file filled with
# garbage costs at most 1 MiB of memory and a few milliseconds at start.
MAX_BYTES = 1 << 20
# What the messages show of a wrong value.
SHOW_CHARS = 40


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


def make_dir(state_dir: str) -> None:
    """Create the state directory if need be; OSError whose message is one line for the user: the
    key, the path that failed, the user, the fix."""
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as e:
        failed = e.filename or state_dir
        raise OSError(e.errno, f"state.dir {state_dir}: cannot create {failed} ({e.strerror or e}) as user "
                               f"{running_user()}, the user pcapwatch runs as: make "
                               f"{os.path.dirname(os.path.normpath(failed))} writable by that user, or set state.dir "
                               "(or --state) to a directory it may write (under systemd: /var/lib/pcapwatch, the "
                               "unit's StateDirectory=)") from None


def load(state_dir: str) -> tuple[Checkpoint | None, str | None]:
    """The saved checkpoint, or (None, a one-line warning) when there is none usable."""
    path = path_in(state_dir)
    for stale in glob.glob(glob.escape(path) + ".tmp.*"):  # left by a run killed while saving
        with contextlib.suppress(OSError):
            os.unlink(stale)
    try:
        data = _read(path)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, _warning(path, f"cannot be read ({e.strerror or e})")
    if len(data) > MAX_BYTES:
        return None, _warning(path, f"is too big (over {MAX_BYTES:,} bytes; a checkpoint is a few hundred)")
    try:
        raw = json.loads(data)
    except RecursionError:
        return None, _warning(path, "cannot be read (nested too deeply to be a checkpoint)")
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        return None, _warning(path, f"cannot be read ({e})")
    problem = check(raw)
    if problem:
        return None, _warning(path, f"is not valid ({problem})")
    emitted = raw["emitted"]
    return Checkpoint(_mark(raw["resume"]), _mark(emitted) if emitted is not None else None,
                      float(raw["written_at"])), None


def _read(path: str) -> bytes:
    """At most MAX_BYTES + 1 bytes of a regular file (a FIFO or device there must not hang or flood
    the start: OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _warning(path: str, problem: str) -> str:
    return f"checkpoint {path} {problem}; starting from the oldest capture in the spool"


def _show(value: Any) -> str:
    """A wrong value for a message: its repr (escaped: one line), cut short; containers by kind."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value[:SHOW_CHARS + 1] if isinstance(value, str) else value)
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS] + "..."


def _expect(what: str, ok: Callable[[Any], bool]) -> Check:
    """A check of a plain value: `name is VALUE, expected WHAT` when `ok` says no."""
    return lambda v, name: None if ok(v) else f"{name} is {_show(v)}, expected {what}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_offset(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# A field's check: what is wrong with the value of the field `name` (one line), or None.
Check = Callable[[Any, str], "str | None"]

MARK_SCHEMA: Mapping[str, tuple[bool, Check]] = {  # field: (required, check)
    "fp": (True, _expect("a non-empty string of at most 128 characters",
                         lambda v: isinstance(v, str) and 0 < len(v) <= 128)),
    "first_ts": (True, _expect("a number", _is_number)),
    "offset": (True, _expect("a whole number >= 0", _is_offset)),
    "name": (False, _expect("a string", lambda v: isinstance(v, str))),  # for people: any file name
}


def _object(schema: Mapping[str, tuple[bool, Check]], nullable: bool = False) -> Check:
    """The check of an object of `schema`'s fields (or null)."""
    def check_object(value: Any, where: str) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            return f"{where} is {_show(value)}, expected an object" + (" or null" if nullable else "")
        prefix = f"{where}." if where else ""
        for key in value:
            if key not in schema:
                return f"unknown field {prefix}{_show(key)}"
        for key, (required, check_field) in schema.items():
            if key in value:
                problem = check_field(value[key], prefix + key)
                if problem:
                    return problem
            elif required:
                return f"{prefix}{key} is missing"
        return None
    return check_object


SCHEMA: Mapping[str, tuple[bool, Check]] = {
    "version": (True, lambda v, _: None if type(v) is int and v == VERSION else
                f"version {_show(v)}, expected {VERSION}"),
    "written_at": (True, _expect("a number", _is_number)),
    "resume": (True, _object(MARK_SCHEMA)),
    "emitted": (True, _object(MARK_SCHEMA, nullable=True)),
}


def check(raw: Any) -> str | None:
    """What is wrong with a parsed checkpoint file, field by field (the first problem), or None."""
    if not isinstance(raw, dict):
        return f"the file holds {_show(raw)}, expected an object"
    return _object(SCHEMA)(raw, "")


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
    """A mark that `check` has passed."""
    return Mark(raw["fp"], float(raw["first_ts"]), raw["offset"], raw.get("name", ""))
