"""Where the service is in the spool, saved so that a restart loses nothing and repeats nothing.

Two marks, each a capture generation (by content fingerprint) and a record offset in it:
- `resume`: where reading starts again. It is at or before the start of every unfinished
  transaction, so replaying from it rebuilds them.
- `emitted`: the last record whose transactions have all been written. On replay, transactions
  completed at or before it were written already and are suppressed.
After SIGTERM both are exact: nothing is lost or written twice. After kill -9 the file is as old as
the last save (a few seconds): records written since are written again, with the same `event_id`.

With them, `connections`: what identifies the open connections (analyzers.identities: uid, depth,
sides, where each side's stream is), so that a connection going on across a restart keeps its uid,
its trans_depth and its flags. At most MAX_CONNECTIONS, the most recently active; one whose
message had begun names the packet it continues at as a mark ([fp, offset]).

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
# The file is read only up to this size. A checkpoint is a few hundred bytes (two marks) and the
# open connections (under 850 KB at most: MAX_CONNECTIONS), while a file filled with garbage costs
# at most 1 MiB of memory and a few milliseconds at start.
MAX_BYTES = 1 << 20
# Open connections saved at most. An entry takes about 210 bytes here (IPv4, fields one a line) and
# 420 at worst (IPv6 written out in full, a start mark with the longest fingerprint), so 2,000 stay
# under 850 KB, within MAX_BYTES (a test checks it); a web server's keep-alive connections open at
# one moment are usually far fewer. The most recently active are kept; the others, counted,
# are picked up midstream after a restart.
MAX_CONNECTIONS = 2000
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


# A saved connection: analyzers.Identity's fields, its `start` a mark's (fp, offset) or None.
Connection = tuple[Any, ...]


@dataclass(frozen=True)
class Checkpoint:
    resume: Mark
    emitted: Mark | None
    written_at: float
    connections: tuple[Connection, ...] = ()


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
        return None, _warning(path, f"is too big (over {MAX_BYTES:,} bytes; a checkpoint is under 850 KB)")
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
    connections = tuple((*c[:-1], tuple(c[-1]) if c[-1] is not None else None)
                        for c in raw.get("connections", ()))
    return Checkpoint(_mark(raw["resume"]), _mark(emitted) if emitted is not None else None,
                      float(raw["written_at"]), connections), None


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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_port(v: Any) -> bool:
    return _is_int(v) and 0 <= v <= 0xFFFF


def _is_seq(v: Any) -> bool:
    return v is None or (_is_int(v) and 0 <= v < 1 << 32)


def _is_start(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and 0 < len(v[0]) <= 128
                         and _is_offset(v[1]))


# A saved connection's fields, in order (analyzers.Identity), with what each must be.
CONNECTION_FIELDS: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("client_ip", "an address", lambda v: isinstance(v, str) and 0 < len(v) <= 45),
    ("client_port", "a port", _is_port),
    ("server_ip", "an address", lambda v: isinstance(v, str) and 0 < len(v) <= 45),
    ("server_port", "a port", _is_port),
    ("uid", "a connection uid", lambda v: isinstance(v, str) and 0 < len(v) <= 32),
    ("first_ts", "a number", _is_number),
    ("last_ts", "a number", _is_number),
    ("syn", "true or false", lambda v: isinstance(v, bool)),
    ("depth", "a whole number >= 0", _is_offset),
    ("client_gap", "a whole number or null", lambda v: v is None or _is_int(v)),
    ("server_gap", "true or false", lambda v: isinstance(v, bool)),
    ("client_seq", "a sequence number or null", _is_seq),
    ("server_seq", "a sequence number or null", _is_seq),
    ("start", "[fingerprint, offset] or null", _is_start),
)


def _connections(value: Any, name: str) -> str | None:
    if not isinstance(value, list):
        return f"{name} is {_show(value)}, expected an array"
    if len(value) > MAX_CONNECTIONS:
        return f"{name} holds {len(value):,} entries, expected at most {MAX_CONNECTIONS:,}"
    for i, entry in enumerate(value):
        if not isinstance(entry, list) or len(entry) != len(CONNECTION_FIELDS):
            return f"{name}[{i}] is {_show(entry)}, expected an array of {len(CONNECTION_FIELDS)} fields"
        for (field, what, ok), v in zip(CONNECTION_FIELDS, entry, strict=True):
            if not ok(v):
                return f"{name}[{i}].{field} is {_show(v)}, expected {what}"
    return None


SCHEMA: Mapping[str, tuple[bool, Check]] = {
    "version": (True, lambda v, _: None if type(v) is int and v == VERSION else
                f"version {_show(v)}, expected {VERSION}"),
    "written_at": (True, _expect("a number", _is_number)),
    "resume": (True, _object(MARK_SCHEMA)),
    "emitted": (True, _object(MARK_SCHEMA, nullable=True)),
    "connections": (False, _connections),  # not in files written before it was
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
    if checkpoint.connections:
        data["connections"] = [list(c) for c in checkpoint.connections]
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
