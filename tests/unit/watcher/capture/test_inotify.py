"""watcher/inotify.py: real files in tmp dirs give exact hints; the directory may vanish and return.

The kernel merges an event identical to the last one queued, so bursts of writes here alternate
between two files whenever a test asserts raw counts.
"""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.env import missing, need_root, need_tool

from watcher.capture import inotify
from watcher.capture.inotify import DirWatcher, Hint, coalesce, parse_events

GONE, BACK, OVERFLOW = Hint("dir_gone", None), Hint("dir_back", None), Hint("overflow", None)
IN_ISDIR, IN_IGNORED, IN_UNMOUNT, IN_Q_OVERFLOW = 0x40000000, 0x8000, 0x2000, 0x4000


def H(kind: str, name: bytes) -> Hint:
    return Hint(kind, name)


def readable(w: DirWatcher, timeout: float = 0.0) -> bool:
    return bool(select.select([w], [], [], timeout)[0])


def write_file(path: bytes | Path, data: bytes = b"x") -> None:
    with open(path, "wb") as f:
        f.write(data)


def raw_event(wd: int, mask: int, name: bytes = b"", cookie: int = 0) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""  # the kernel's padding
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


@pytest.fixture
def watch(spool: Path) -> Iterator[DirWatcher]:
    with DirWatcher(str(spool)) as w:
        assert w.present and w.read() == []
        yield w


def test_parse_events_keeps_raw_names_and_drops_padding() -> None:
    buf = (raw_event(1, 0x100, b"cap.pcap") + raw_event(1, 0x2, b"cap\xff.pcap")
           + raw_event(-1, IN_Q_OVERFLOW) + raw_event(2, 0x80, b"n" * 16, cookie=7))
    assert parse_events(buf) == [(1, 0x100, 0, b"cap.pcap"), (1, 0x2, 0, b"cap\xff.pcap"),
                                 (-1, IN_Q_OVERFLOW, 0, b""), (2, 0x80, 7, b"n" * 16)]
    assert len(raw_event(1, 0x100, b"cap.pcap")) == 32 and parse_events(b"") == []


def test_mask_mapping(watch: DirWatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mask bit the kernel can send for the watch, fed as crafted events."""
    wd = watch._wd
    assert wd is not None
    buf = b"".join([
        raw_event(wd, 0x100, b"a"), raw_event(wd, 0x2, b"a"), raw_event(wd, 0x8, b"a"),
        raw_event(wd, 0x40, b"a", 5), raw_event(wd, 0x80, b"b", 5), raw_event(wd, 0x200, b"b"),
        raw_event(wd, 0x100 | IN_ISDIR, b"sub"), raw_event(-1, IN_Q_OVERFLOW),
        raw_event(wd + 100, 0x100, b"other-watch"), raw_event(wd, 0x400), raw_event(wd, IN_IGNORED),
    ])
    monkeypatch.setattr(watch, "_drain", lambda: buf)
    monkeypatch.setattr(watch, "_watch", lambda: False)  # stay gone: only the mapping is under test
    assert watch.read() == [H("created", b"a"), H("modified", b"a"), H("closed", b"a"), H("moved_out", b"a"),
                            H("moved_in", b"b"), H("deleted", b"b"), H("created", b"sub"), OVERFLOW, GONE]
    # The foreign wd and the IN_IGNORED following IN_DELETE_SELF are stale.
    assert (watch.counters["events"], watch.counters["stale"], watch.counters["overflow"]) == (11, 2, 1)
    for mask in (0x800, IN_UNMOUNT, IN_IGNORED):  # IN_MOVE_SELF, and the two the kernel sends unasked
        watch._wd = wd
        monkeypatch.setattr(watch, "_drain", lambda m=mask: raw_event(wd, m))
        assert watch.read() == [GONE]


def test_create_append_close_rename_delete(spool: Path, watch: DirWatcher) -> None:
    fd = os.open(spool / "cap.pcap", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"header")
    os.write(fd, b"record")
    os.close(fd)
    assert watch.read() == [H("created", b"cap.pcap"), H("modified", b"cap.pcap"), H("closed", b"cap.pcap")]
    os.rename(spool / "cap.pcap", spool / "cap.pcap1")
    assert watch.read() == [H("moved_out", b"cap.pcap"), H("moved_in", b"cap.pcap1")]
    outside = spool.parent / "elsewhere"
    write_file(outside)
    os.rename(outside, spool / "in.pcap")
    os.rename(spool / "cap.pcap1", outside)
    assert watch.read() == [H("moved_in", b"in.pcap"), H("moved_out", b"cap.pcap1")]
    os.unlink(spool / "in.pcap")
    (spool / "sub").mkdir()
    assert watch.read() == [H("deleted", b"in.pcap"), H("created", b"sub")]
    assert watch.read() == []


def test_non_utf8_names_are_kept_as_bytes(spool: Path, watch: DirWatcher) -> None:
    d = os.fsencode(spool)
    write_file(os.path.join(d, b"cap\xff.pcap"))
    os.rename(os.path.join(d, b"cap\xff.pcap"), os.path.join(d, b"\xfe\xfd1"))
    os.unlink(os.path.join(d, b"\xfe\xfd1"))
    assert watch.read() == [H("created", b"cap\xff.pcap"), H("modified", b"cap\xff.pcap"),
                            H("closed", b"cap\xff.pcap"), H("moved_out", b"cap\xff.pcap"),
                            H("moved_in", b"\xfe\xfd1"), H("deleted", b"\xfe\xfd1")]


@pytest.mark.parametrize("as_str", [False, True])
def test_non_utf8_directory_name(tmp_path: Path, as_str: bool) -> None:
    """pyinotify's add_watch refuses bytes and cannot encode surrogates; both forms work here."""
    d = os.path.join(os.fsencode(tmp_path), b"spool\xfe")
    os.mkdir(d)
    with DirWatcher(os.fsdecode(d) if as_str else d) as w:
        assert w.present and w.directory == d
        write_file(os.path.join(d, b"\xffa"))
        assert w.read() == [H("created", b"\xffa"), H("modified", b"\xffa"), H("closed", b"\xffa")]


def test_fileno_readable_after_event(spool: Path, watch: DirWatcher) -> None:
    fd = watch.fileno()
    assert not os.get_blocking(fd) and not os.get_inheritable(fd)
    assert not readable(watch) and watch.read() == []
    (spool / "a").touch()
    assert readable(watch, timeout=2.0)
    assert watch.read() == [H("created", b"a"), H("closed", b"a")]
    assert not readable(watch)


def test_burst_of_modify_coalesced_per_read(spool: Path, tmp_path: Path) -> None:
    a, b = os.open(spool / "a", os.O_WRONLY | os.O_CREAT), os.open(spool / "b", os.O_WRONLY | os.O_CREAT)
    try:
        with DirWatcher(str(spool)) as w:
            for _ in range(3):
                os.write(a, b"x")
                os.write(b, b"y")
            assert w.read() == [H("modified", b"a"), H("modified", b"b")]
            assert (w.counters["events"], w.counters["modified"], w.counters["coalesced"]) == (6, 6, 4)
            os.write(a, b"x")
            assert w.read() == [H("modified", b"a")]  # coalescing never spans two read() calls
    finally:
        os.close(a)
        os.close(b)


def test_coalesce_keeps_order_changing_hints() -> None:
    counters = {"coalesced": 0}
    mod, closed = H("modified", b"a"), H("closed", b"a")
    assert coalesce([mod, H("modified", b"b"), mod, mod], counters) == [mod, H("modified", b"b")]
    assert coalesce([mod, closed, mod], counters) == [mod, closed, mod]
    assert coalesce([mod, GONE, BACK, mod], counters) == [mod, GONE, BACK, mod]
    churn = [H("created", b"a"), H("deleted", b"a"), H("created", b"a")]
    assert coalesce(churn, counters) == churn
    assert counters == {"coalesced": 2}


def test_directory_deleted_then_recreated(spool: Path, watch: DirWatcher) -> None:
    (spool / "cap.pcap").touch()
    assert len(watch.read()) == 2
    shutil.rmtree(spool)
    assert readable(watch, timeout=2.0)
    assert watch.read() == [H("deleted", b"cap.pcap"), GONE]
    assert not watch.present and watch.last_error is not None and "No such file" in watch.last_error
    assert watch.poll_dir() == [] and watch.read() == []
    spool.mkdir()
    assert not readable(watch)  # nothing watches the new directory yet: the periodic check finds it
    assert watch.poll_dir() == [BACK] and watch.present and watch.last_error is None
    (spool / "cap.pcap").touch()
    assert watch.read() == [H("created", b"cap.pcap"), H("closed", b"cap.pcap")]
    assert {k: watch.counters[k] for k in ("dir_gone", "dir_back", "stale", "events")} == {
        "dir_gone": 1, "dir_back": 1, "stale": 1, "events": 7}


def test_directory_recreated_before_read(spool: Path, watch: DirWatcher) -> None:
    spool.rmdir()
    spool.mkdir()
    assert watch.read() == [GONE, BACK]  # read() retries the watch itself
    (spool / "x").mkdir()
    assert watch.read() == [H("created", b"x")]


def test_directory_moved_away(spool: Path, watch: DirWatcher) -> None:
    moved = spool.parent / "spool.old"
    spool.rename(moved)
    assert watch.read() == [GONE]
    (moved / "late").touch()  # the old directory is no longer watched
    assert watch.read() == [] and watch.counters["stale"] == 1  # IN_IGNORED of the removed watch
    spool.mkdir()
    assert watch.poll_dir() == [BACK]
    (spool / "new").touch()
    assert watch.read() == [H("created", b"new"), H("closed", b"new")]


def test_directory_replaced_found_by_poll_dir(spool: Path, watch: DirWatcher) -> None:
    """Another directory renamed over ours: the stat check sees it before the events are read."""
    other = spool.parent / "other"
    other.mkdir()
    other.rename(spool)
    assert watch.poll_dir() == [GONE, BACK]
    assert watch.read() == [] and watch.counters["stale"] == 2  # IN_DELETE_SELF, IN_IGNORED: delivered once
    (spool / "f").touch()
    assert watch.read() == [H("created", b"f"), H("closed", b"f")]


def test_missing_at_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with DirWatcher(str(spool)) as w:
        assert not w.present and w.last_error is not None and "No such file" in w.last_error
        assert w.poll_dir() == [GONE]
        assert w.poll_dir() == [] and w.read() == []
        spool.mkdir()
        assert w.poll_dir() == [BACK]
        (spool / "cap.pcap").touch()
        assert w.read() == [H("created", b"cap.pcap"), H("closed", b"cap.pcap")]
        assert (w.counters["dir_gone"], w.counters["dir_back"]) == (1, 1)


def test_missing_at_start_appears_before_first_read(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with DirWatcher(spool.as_posix().encode()) as w:
        spool.mkdir()
        assert w.read() == [GONE, BACK] and w.present


def test_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "spool"
    f.touch()
    with DirWatcher(str(f)) as w:
        assert w.poll_dir() == [GONE] and w.last_error is not None and "Not a directory" in w.last_error
        f.unlink()
        f.mkdir()
        assert w.poll_dir() == [BACK]


def test_queue_overflow(spool: Path) -> None:
    """More events than the kernel queue holds (its real size, no sysctl changed) end in one overflow."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 1 << 20:
        pytest.skip(f"max_queued_events is {limit}: too many writes for a unit test")
    a, b = os.open(spool / "a", os.O_WRONLY | os.O_CREAT), os.open(spool / "b", os.O_WRONLY | os.O_CREAT)
    try:
        with DirWatcher(str(spool)) as w:
            for _ in range(limit // 2 + 10):  # alternate so the kernel cannot merge them
                os.write(a, b"x")
                os.write(b, b"y")
            assert w.read() == [H("modified", b"a"), H("modified", b"b"), OVERFLOW]
            assert (w.counters["events"], w.counters["modified"], w.counters["overflow"]) == (limit + 1, limit, 1)
            os.write(a, b"x")
            assert w.read() == [H("modified", b"a")]  # the queue works again after the overflow
    finally:
        os.close(a)
        os.close(b)


def test_read_is_bounded_and_rest_stays_readable(spool: Path, watch: DirWatcher,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inotify, "READ_CHUNK", 64)  # two 32-byte events per os.read
    monkeypatch.setattr(inotify, "MAX_READ_BYTES", 64)  # and one os.read per read()
    for name in ("a", "b", "c"):
        (spool / name).mkdir()
    assert watch.read() == [H("created", b"a"), H("created", b"b")]
    assert readable(watch)
    assert watch.read() == [H("created", b"c")] and not readable(watch)


def test_close(spool: Path) -> None:
    w = DirWatcher(str(spool))
    fd = w.fileno()
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.read()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_unmount_then_underlying_directory(tmp_path: Path) -> None:
    """IN_UNMOUNT (then IN_IGNORED): the path now leads to the directory under the mount point."""
    need_root()
    need_tool("mount", "umount")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "pcapwatch-test", str(mnt)],
                      capture_output=True, timeout=10).returncode != 0:
        missing("cannot mount a tmpfs (no CAP_SYS_ADMIN)")
    try:
        with DirWatcher(str(mnt)) as w:
            (mnt / "f").touch()
            assert w.read() == [H("created", b"f"), H("closed", b"f")]
            subprocess.run(["umount", str(mnt)], check=True, timeout=10)
            assert w.read() == [GONE, BACK] and w.counters["stale"] == 1
            (mnt / "g").touch()
            assert w.read() == [H("created", b"g"), H("closed", b"g")]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10)
