"""Hints that a spool directory changed, from inotify: the one module that imports pyinotify.

Events are only hints: the service rescans the directory on any of them, and on a timer anyway, so
nothing here has to be exact beyond "something happened, maybe to this name". The service's own
loop waits on `fileno()` with select; no pyinotify thread or loop runs.

pyinotify 0.9.6 is used for what it does right: creating the inotify instance and adding and
removing watches. Its `Notifier.read_events` decodes every name as strict UTF-8, so one file
named b"cap\\xff.pcap" raises UnicodeDecodeError and the rest of that batch is lost; and
`add_watch` refuses bytes paths (returns -3) and raises UnicodeEncodeError on a str path holding
surrogate escapes. So events are read and parsed here, names kept as raw bytes, and a directory is
watched through the `/proc/self/fd/N` link of a descriptor opened on it: any bytes path works,
and the watch lands on exactly the inode we opened, whose identity `poll_dir()` compares later.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import warnings
from typing import NamedTuple

with warnings.catch_warnings():
    # pyinotify imports asyncore, which warns on 3.11 and comes from pyasyncore on 3.12+.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyinotify  # type: ignore[import-untyped]

KINDS = ("created", "modified", "closed", "moved_in", "moved_out", "deleted", "overflow", "dir_gone", "dir_back")

# Mask bit -> hint kind for events about a name inside the directory, as data.
FILE_KINDS: tuple[tuple[int, str], ...] = (
    (pyinotify.IN_CREATE, "created"),
    (pyinotify.IN_MODIFY, "modified"),
    (pyinotify.IN_CLOSE_WRITE, "closed"),
    (pyinotify.IN_MOVED_TO, "moved_in"),
    (pyinotify.IN_MOVED_FROM, "moved_out"),
    (pyinotify.IN_DELETE, "deleted"),
)
# Events meaning the watch no longer follows the directory at our path (IN_UNMOUNT and IN_IGNORED
# arrive without being asked for: the filesystem went away, or the kernel dropped the watch).
SELF_GONE = pyinotify.IN_DELETE_SELF | pyinotify.IN_MOVE_SELF | pyinotify.IN_UNMOUNT | pyinotify.IN_IGNORED
# IN_ONLYDIR: refuse to watch anything but a directory. IN_Q_OVERFLOW is always delivered.
WATCH_MASK = (
    pyinotify.IN_CREATE | pyinotify.IN_MODIFY | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_MOVED_TO
    | pyinotify.IN_MOVED_FROM | pyinotify.IN_DELETE | pyinotify.IN_DELETE_SELF | pyinotify.IN_MOVE_SELF
    | pyinotify.IN_ONLYDIR
)

# struct inotify_event: wd, mask, cookie, len, then `len` bytes of NUL-padded name.
EVENT_HEADER = struct.Struct("iIII")
# One read takes at least one event of 16 + NAME_MAX + 1 bytes; 64 KiB takes thousands at once.
READ_CHUNK = 64 * 1024
# Per read() call: a full default queue (16384 events of short names, 32 bytes each) is 512 KiB, so
# 4 MiB drains it in one call; anything beyond stays readable for the next turn of the loop.
MAX_READ_BYTES = 4 << 20


class Hint(NamedTuple):
    """Something changed: `kind` is one of KINDS; `name` is the raw file name, None for the dir."""

    kind: str
    name: bytes | None


def parse_events(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """(wd, mask, cookie, name) for each inotify_event in `buf`; names stay bytes, padding dropped."""
    events = []
    off = 0
    while off + EVENT_HEADER.size <= len(buf):
        wd, mask, cookie, length = EVENT_HEADER.unpack_from(buf, off)
        off += EVENT_HEADER.size
        name = buf[off:off + length].partition(b"\0")[0]
        off += length
        events.append((wd, mask, cookie, name))
    return events


def coalesce(hints: list[Hint], counters: dict[str, int]) -> list[Hint]:
    """Drop a "modified" repeating one for the same name with no other hint for it in between.

    Only "modified" bursts go: dropping a repeated "created" after a "deleted" would misstate the end
    state, and the order of everything else is kept.
    """
    out: list[Hint] = []
    modified: set[bytes | None] = set()
    for hint in hints:
        if hint.kind == "modified":
            if hint.name in modified:
                counters["coalesced"] += 1
                continue
            modified.add(hint.name)
        elif hint.name is None:
            modified.clear()
        else:
            modified.discard(hint.name)
        out.append(hint)
    return out


class DirWatcher:
    """Watches one directory; survives it being missing, deleted, moved away, or replaced.

    `counters` has one entry per hint kind (counted before coalescing, so "overflow" is overflows
    and "dir_back" is watch re-adds), plus "events" (raw inotify events read), "coalesced" (hints
    dropped by `coalesce`) and "stale" (events for a watch already given up). Each hint is returned
    once, by whichever of `read()` / `poll_dir()` produced it, in the order things were noticed.
    """

    def __init__(self, directory: str | bytes) -> None:
        self.directory = os.fsencode(directory)
        self.counters: dict[str, int] = dict.fromkeys((*KINDS, "events", "coalesced", "stale"), 0)
        self.last_error: str | None = None  # why the directory is not watched, for the service's log
        self._pending: list[Hint] = []
        self._wd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the watched directory
        self._wm = pyinotify.WatchManager()
        self._fd: int = self._wm.get_fd()
        self._closed = False
        # pyinotify calls inotify_init() through ctypes: the fd is blocking and would be inherited
        # by tcpdump under --capture. Neither suits a select loop in a supervising process.
        os.set_blocking(self._fd, False)
        os.set_inheritable(self._fd, False)
        if not self._watch():
            self._emit(Hint("dir_gone", None))

    @property
    def present(self) -> bool:
        """True while the directory is watched."""
        return self._wd is not None

    def fileno(self) -> int:
        """The inotify descriptor: readable when kernel events are pending."""
        if self._closed:
            raise ValueError("DirWatcher is closed")
        return self._fd

    def read(self) -> list[Hint]:
        """Pending hints, without blocking; [] when there are none. Retries a lost watch."""
        self.fileno()
        for wd, mask, _cookie, name in parse_events(self._drain()):
            self.counters["events"] += 1
            self._handle(wd, mask, name)
        if self._wd is None and self._watch():
            self._emit(Hint("dir_back", None))
        return self._take()

    def poll_dir(self) -> list[Hint]:
        """The cheap periodic check: one stat while watched, one open attempt while not.

        Returns [Hint("dir_back")] when the watch was (re-)added, [dir_gone] when the path no longer
        leads to the watched directory, [dir_gone, dir_back] when another directory took its place,
        preceded by any hint not yet returned (the "dir_gone" of a directory missing at start).
        """
        self.fileno()
        if self._wd is not None and self._identity() != self._ident:
            self._lose()
        if self._wd is None and self._watch():
            self._emit(Hint("dir_back", None))
        return self._take()

    def close(self) -> None:
        """Release the inotify instance (and with it every watch); idempotent."""
        if not self._closed:
            self._closed = True
            self._wm.close()

    def __enter__(self) -> DirWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, wd: int, mask: int, name: bytes) -> None:
        if mask & pyinotify.IN_Q_OVERFLOW:
            self._emit(Hint("overflow", None))
            return
        if wd != self._wd:  # queued before we dropped that watch (including its own IN_IGNORED)
            self.counters["stale"] += 1
            return
        for bit, kind in FILE_KINDS:
            if mask & bit:
                self._emit(Hint(kind, name))
        if mask & SELF_GONE:
            self._lose()

    def _emit(self, hint: Hint) -> None:
        self.counters[hint.kind] += 1
        self._pending.append(hint)

    def _take(self) -> list[Hint]:
        hints, self._pending = self._pending, []
        return coalesce(hints, self.counters)

    def _drain(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while total < MAX_READ_BYTES:
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def _watch(self) -> bool:
        """Watch the directory now at our path; False (and `last_error` says why) if we cannot."""
        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            self.last_error = f"cannot open {os.fsdecode(self.directory)!r}: {err.strerror}"
            return False
        try:
            st = os.fstat(dfd)
            try:
                added = self._wm.add_watch(f"/proc/self/fd/{dfd}", WATCH_MASK, quiet=False)
            except pyinotify.WatchManagerError as err:
                self.last_error = f"cannot watch {os.fsdecode(self.directory)!r}: {err}"
                return False
        finally:
            os.close(dfd)
        self._wd = next(iter(added.values()))
        self._ident = (st.st_dev, st.st_ino)
        self.last_error = None
        return True

    def _lose(self) -> None:
        """Give up the current watch and say so; events still queued for it become stale."""
        wd, self._wd, self._ident = self._wd, None, None
        with contextlib.suppress(pyinotify.WatchManagerError):  # the kernel may have dropped it already
            self._wm.rm_watch(wd, quiet=False)
        self._wm.watches.pop(wd, None)
        self.last_error = f"{os.fsdecode(self.directory)!r} is gone"
        self._emit(Hint("dir_gone", None))
