"""watcher/spool.py: generations found in a real tmp directory, named by content, ordered by time.

Files are written here byte by byte (pcapgen's pcap/pcapng writers, gzip from the stdlib), the
way tcpdump leaves them: a ring slot rewritten in place keeps its name and inode, `-z gzip` adds a
.gz twin and removes the plain file, a file just opened holds only its header.
"""

from __future__ import annotations

import errno
import gzip
import os
import pwd
import struct
import time
from pathlib import Path

import pytest
from helpers import pcapgen as g
from helpers.env import file_modes_bind_root

from watcher.capture.spool import GZIP_SETTLE_SECONDS, HEAD_BYTES, Spool, State, file_fingerprint, fingerprint

RECORD = 16 + 60  # record header + a 60-byte frame
HEADER = 24


def pcap(first_ts: float, n: int = 5) -> bytes:
    """A µs Ethernet pcap of `n` 60-byte frames 1 ms apart (the spool never decodes them)."""
    t0 = round(first_ts * 1e9)
    return g.pcap_bytes(g.LINKTYPE_ETHERNET, [(t0 + i * 10**6, bytes([i]) * 60) for i in range(n)])


def write(path: Path, data: bytes, age: float = 0.0) -> Path:
    path.write_bytes(data)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


def rewrite_in_place(path: Path, data: bytes) -> None:
    """What tcpdump's ring does to its oldest file: same inode, truncated and written anew."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def scanned(spool: Spool) -> list[str]:
    spool.scan(time.time())
    return [gen.name for gen in spool.ordered()]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(str(tmp_path))


def test_ordered_by_first_packet_not_by_name(tmp_path: Path, spool: Spool) -> None:
    for name, ts in (("cap.pcap2", 1_700_000_100.0), ("cap.pcap10", 1_700_000_050.0), ("a", 1_700_000_200.0),
                     ("b.pcap", 1_700_000_075.0)):
        write(tmp_path / name, pcap(ts))
    assert scanned(spool) == ["cap.pcap10", "b.pcap", "cap.pcap2", "a"]
    gens = spool.ordered()
    assert [gen.first_ts for gen in gens] == [1_700_000_050.0, 1_700_000_075.0, 1_700_000_100.0, 1_700_000_200.0]
    assert [spool.has_newer(gen) for gen in gens] == [True, True, True, False]
    assert spool.next_unfinished() is gens[0]
    assert (spool.counters.generations, spool.notes) == (4, [])


def test_same_first_packet_time_orders_by_path(tmp_path: Path, spool: Spool) -> None:
    """Two captures whose first packets have the same time and length but not the same bytes
    (two tcpdumps on two interfaces writing into one spool) are two generations."""
    t0 = 1_700_000_000 * 10**9
    write(tmp_path / "y", g.pcap_bytes(g.LINKTYPE_ETHERNET, [(t0, b"y" * 60), (t0 + 10**6, b"y" * 60)]))
    write(tmp_path / "x", g.pcap_bytes(g.LINKTYPE_ETHERNET, [(t0, b"x" * 60)]))
    assert scanned(spool) == ["x", "y"]


def first_packet(data: bytes) -> bytes:
    """The captured bytes of a little-endian pcap's first record."""
    caplen = int.from_bytes(data[32:36], "little")
    return data[40:40 + caplen]


def test_generation_is_named_by_content(tmp_path: Path, spool: Spool) -> None:
    data = pcap(1_700_000_000.0)
    path = write(tmp_path / "cap.pcap", data)
    spool.scan(time.time())
    (gen,) = spool.ordered()
    st = path.stat()
    assert (gen.fp, gen.first_ts, gen.path, gen.head, gen.size, gen.compressed, gen.state, gen.ino) == (
        fingerprint(data, 1_700_000_000.0, first_packet(data)), 1_700_000_000.0, str(path), data[:40], len(data),
        False,
        State.PENDING, st.st_ino)
    # the same content under another name (a copy, a .gz) has the same fingerprint
    write(tmp_path / "copy", data, age=GZIP_SETTLE_SECONDS + 1)
    spool.scan(time.time())
    assert (spool.ordered(), gen.twins) == ([gen], {str(tmp_path / "copy")})


def test_file_fingerprint_is_the_generations(tmp_path: Path, spool: Spool) -> None:
    """What `replay` derives a file's event_ids from is what `run` derives them from."""
    path = write(tmp_path / "cap.pcap", pcap(1_700_000_000.0))
    write(tmp_path / "junk", b"no capture at all")
    write(tmp_path / "empty.pcap", pcap(1_700_000_000.0, n=0))
    spool.scan(time.time())
    (gen,) = spool.ordered()
    assert file_fingerprint(str(path)) == gen.fp
    assert file_fingerprint(str(tmp_path / "junk")) is None
    assert file_fingerprint(str(tmp_path / "empty.pcap")) is None


def test_growing_file_stays_one_generation(tmp_path: Path, spool: Spool) -> None:
    path = write(tmp_path / "cap.pcap", pcap(1_700_000_000.0, 2))
    spool.scan(time.time())
    path.write_bytes(pcap(1_700_000_000.0, 9))  # tcpdump appended 7 records
    spool.scan(time.time())
    (gen,) = spool.ordered()
    assert (gen.size, spool.counters.generations, spool.counters.lost) == (HEADER + 9 * RECORD, 1, 0)


def test_ring_slot_rewritten_before_read_is_a_new_generation_and_a_loss(tmp_path: Path, spool: Spool) -> None:
    path = write(tmp_path / "cap.pcap0", pcap(1_700_000_000.0, 5))
    spool.scan(time.time())
    (old,) = spool.ordered()
    old.state, old.read_offset = State.READING, HEADER + 2 * RECORD  # the reader got 2 records in
    inode = path.stat().st_ino
    rewrite_in_place(path, pcap(1_700_000_100.0, 3))
    assert path.stat().st_ino == inode
    spool.scan(time.time())
    gens = spool.ordered()
    assert [(gen.first_ts, gen.state, gen.path, gen.ino) for gen in gens] == [
        (1_700_000_000.0, State.LOST, str(path), inode), (1_700_000_100.0, State.PENDING, str(path), inode)]
    assert (spool.counters.generations, spool.counters.lost, spool.counters.lost_bytes) == (2, 1, 3 * RECORD)
    assert spool.notes == [f"error: {path}: rewritten by tcpdump's ring before it was read: about {3 * RECORD:,} "
                           f"bytes of capture lost (read {HEADER + 2 * RECORD:,}), more if tcpdump filled other files "
                           "meanwhile; pcapwatch is falling behind tcpdump"]
    assert spool.next_unfinished() is gens[1]


def test_ring_slot_rewritten_after_read_is_no_loss(tmp_path: Path, spool: Spool) -> None:
    path = write(tmp_path / "cap.pcap0", pcap(1_700_000_000.0, 5))
    spool.scan(time.time())
    (old,) = spool.ordered()
    spool.done(old)
    rewrite_in_place(path, pcap(1_700_000_100.0, 3))
    spool.scan(time.time())
    assert [gen.state for gen in spool.ordered()] == [State.DONE, State.PENDING]
    assert (spool.counters.lost, spool.counters.lost_bytes, spool.notes) == (0, 0, [])


def test_gzip_twin_is_the_same_generation(tmp_path: Path, spool: Spool) -> None:
    """tcpdump -z gzip: cap.pcap1.gz appears beside cap.pcap1, then cap.pcap1 goes."""
    data = pcap(1_700_000_000.0, 5)
    plain = write(tmp_path / "cap.pcap1", data)
    spool.scan(time.time())
    (gen,) = spool.ordered()
    gz = write(tmp_path / "cap.pcap1.gz", gzip.compress(data), age=GZIP_SETTLE_SECONDS + 1)
    spool.scan(time.time())
    assert spool.ordered() == [gen]
    assert (gen.path, gen.twins, gen.compressed) == (str(plain), {str(gz)}, False)
    plain.unlink()
    spool.scan(time.time())
    assert spool.ordered() == [gen]
    assert (gen.path, gen.twins, gen.compressed, gen.state) == (str(gz), set(), True, State.PENDING)
    assert (spool.counters.generations, spool.counters.lost, spool.notes) == (1, 0, [])


def test_gzip_still_being_written_is_left_for_later(tmp_path: Path, spool: Spool) -> None:
    data = pcap(1_700_000_000.0, 5)
    gz = write(tmp_path / "cap.pcap1.gz", gzip.compress(data))  # mtime now: gzip may still write
    assert scanned(spool) == []
    t = time.time() - GZIP_SETTLE_SECONDS - 1
    os.utime(gz, (t, t))
    assert scanned(spool) == ["cap.pcap1.gz"]
    (gen,) = spool.ordered()
    assert (gen.compressed, gen.fp) == (True, fingerprint(data, 1_700_000_000.0, first_packet(data)))


def test_non_capture_file_noted_once(tmp_path: Path, spool: Spool) -> None:
    notes = write(tmp_path / "README.txt", b"not a capture\n")
    assert scanned(spool) == []
    assert scanned(spool) == []
    notes.write_bytes(b"not a capture, still\n")
    assert scanned(spool) == []
    assert spool.notes == [f"warning: {notes}: not a capture file, ignored"]
    assert (spool.counters.not_captures, spool.counters.generations) == (1, 0)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_header_only_file_is_not_ready(tmp_path: Path, spool: Spool, fmt: str) -> None:
    """tcpdump has just opened the file: no packet yet, so no first time to order it by."""
    t0 = 1_700_000_000 * 10**9
    packets = [(t0 + i * 10**6, bytes(60)) for i in range(3)]
    if fmt == "pcap":
        whole = g.pcap_bytes(g.LINKTYPE_ETHERNET, packets)
        header = whole[:HEADER]
    else:
        whole = g.pcapng_bytes([g.LINKTYPE_ETHERNET], [(0, ts, frame) for ts, frame in packets])
        header = g.pcapng_bytes([g.LINKTYPE_ETHERNET], [])
    path = write(tmp_path / "cap.pcap", header)
    assert scanned(spool) == []
    path.write_bytes(whole[:len(header) + 10])  # a first record begun, not complete
    assert scanned(spool) == []
    assert (spool.notes, spool.counters.not_captures) == ([], 0)
    path.write_bytes(whole)
    assert scanned(spool) == ["cap.pcap"]
    assert spool.ordered()[0].first_ts == 1_700_000_000.0


def test_pattern_and_hidden_files(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), "cap*")
    write(tmp_path / "cap.pcap", pcap(1_700_000_000.0))
    write(tmp_path / "other.pcap", pcap(1_700_000_001.0))
    write(tmp_path / ".cap.pcap.swp", pcap(1_700_000_002.0))
    assert scanned(spool) == ["cap.pcap"]
    assert spool.notes == []


def test_skip_before_marks_older_generations_done(tmp_path: Path, spool: Spool) -> None:
    for i in range(3):
        write(tmp_path / f"cap.pcap{i}", pcap(1_700_000_000.0 + i))
    spool.scan(time.time())
    assert spool.skip_before(1_700_000_001.0) == 1
    assert [gen.state for gen in spool.ordered()] == [State.DONE, State.PENDING, State.PENDING]


# files the service may not read ----------------------------------------------------------------


@pytest.fixture
def permissions(monkeypatch: pytest.MonkeyPatch) -> None:
    file_modes_bind_root(monkeypatch)


def unreadable_line(path: Path) -> str:
    user = f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    return (f"error: {path}: cannot be read (Permission denied) as user {user}, the user pcapwatch runs as: make "
            "the file readable to that user (chmod, chgrp, or tcpdump -Z); it is tried again until it can be read")


@pytest.mark.parametrize("size", ["small", "large"])
def test_unreadable_file_said_once_counted_and_read_once_readable(tmp_path: Path, spool: Spool,
                                                                 permissions: None, size: str) -> None:
    """Small or larger than HEAD_BYTES: 'cannot be read (Permission denied)', never 'not a capture';
    tried again at every scan without a word, and a generation like any other once chmod allows."""
    n = 5 if size == "small" else HEAD_BYTES // RECORD + 10
    t0 = 1_700_000_000 * 10**9
    path = write(tmp_path / "cap.pcap", g.pcap_bytes(g.LINKTYPE_ETHERNET, [(t0 + i * 10**6, bytes([i % 256]) * 60)
                                                                         for i in range(n)]))
    path.chmod(0)
    for _ in range(3):
        assert scanned(spool) == []
    assert spool.notes == [unreadable_line(path)]
    assert (spool.counters.unreadable, spool.counters.not_captures, spool.counters.lost) == (1, 0, 0)
    assert list(spool.unreadable) == [str(path)]
    path.chmod(0o644)
    assert scanned(spool) == ["cap.pcap"]
    assert spool.notes[1:] == [f"info: {path}: readable now, reading it"]
    assert spool.unreadable == {}
    assert spool.next_unfinished() is spool.ordered()[0]
    assert spool.counters.unreadable == 1


def test_unreadable_file_removed_is_lost(tmp_path: Path, spool: Spool, permissions: None) -> None:
    path = write(tmp_path / "cap.pcap", pcap(1_700_000_000.0))
    path.chmod(0)
    scanned(spool)
    path.unlink()
    assert scanned(spool) == []
    assert spool.notes[1:] == [f"error: {path}: removed before it could be read: about {HEADER + 5 * RECORD:,} "
                               "bytes of capture lost"]
    assert (spool.counters.lost, spool.counters.lost_bytes, spool.unreadable) == (1, HEADER + 5 * RECORD, {})


def test_unreadable_file_rewritten_by_the_ring_is_lost(tmp_path: Path, spool: Spool, permissions: None) -> None:
    """tcpdump (root) truncates and rewrites the slot; its mode stays 000: the old content is lost,
    the new one waits to be readable, said once."""
    path = write(tmp_path / "cap.pcap0", pcap(1_700_000_000.0, 20))
    path.chmod(0)
    scanned(spool)
    path.chmod(0o600)  # tcpdump runs as root: the mode does not stop it
    rewrite_in_place(path, pcap(1_700_000_100.0, 3))
    path.chmod(0)
    assert scanned(spool) == []
    assert spool.notes[1:] == [f"error: {path}: rewritten by tcpdump's ring before it could be read: about "
                               f"{HEADER + 20 * RECORD:,} bytes of capture lost"]
    assert (spool.counters.lost, spool.counters.unreadable) == (1, 1)
    path.chmod(0o644)
    assert scanned(spool) == ["cap.pcap0"]
    assert spool.ordered()[0].first_ts == 1_700_000_100.0


def test_generation_unreadable_when_opened_is_passed_over_until_readable(tmp_path: Path, spool: Spool,
                                                                         permissions: None) -> None:
    """Identified, then chmod 000 before the reader opened it (the reader calls cannot_read): the
    next file is read meanwhile; a scan finds it readable again and it is next."""
    a = write(tmp_path / "a", pcap(1_700_000_000.0))
    write(tmp_path / "b", pcap(1_700_000_100.0))
    assert scanned(spool) == ["a", "b"]
    gen_a, gen_b = spool.ordered()
    a.chmod(0)
    with pytest.raises(PermissionError) as e:
        os.open(a, os.O_RDONLY)
    spool.cannot_read(gen_a, e.value)
    assert spool.next_unfinished() is gen_b
    scanned(spool)
    assert spool.notes == [unreadable_line(a)]
    assert spool.next_unfinished() is gen_b
    a.chmod(0o644)
    scanned(spool)
    assert spool.notes[1:] == [f"info: {a}: readable now, reading it"]
    assert (gen_a.unreadable, spool.next_unfinished()) == (False, gen_a)
    assert spool.counters.unreadable == 1


def test_generation_unreadable_then_removed_is_lost(tmp_path: Path, spool: Spool, permissions: None) -> None:
    a = write(tmp_path / "a", pcap(1_700_000_000.0))
    assert scanned(spool) == ["a"]
    (gen,) = spool.ordered()
    a.chmod(0)
    spool.cannot_read(gen, PermissionError(13, "Permission denied", str(a)))
    a.unlink()
    scanned(spool)
    assert gen.state == State.LOST
    assert spool.notes == [unreadable_line(a), f"error: {a}: removed before it could be read: about "
                           f"{HEADER + 5 * RECORD:,} bytes of capture lost (read 0), more if tcpdump filled other "
                           "files meanwhile; pcapwatch is falling behind tcpdump"]
    assert (spool.counters.lost, spool.unreadable) == (1, {})


def test_capture_corrupt_before_its_first_packet_said_once(tmp_path: Path, spool: Spool) -> None:
    """No first packet to order it by, nothing to read: one error line with the offset, counted."""
    shb = struct.pack("<II", 0x0A0D0D0A, 28) + struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 14, 8)  # if_tsoffset, no room for its value
    idb = struct.pack("<II", 1, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    path = write(tmp_path / "odd.pcapng", shb + idb)
    assert scanned(spool) == []
    assert scanned(spool) == []
    assert spool.notes == [f"error: {path}: offset 44: pcapng interface option 14 claims 8 bytes but its block "
                           "holds 0 after it: the file is corrupt; nothing in it is read"]
    assert (spool.counters.failed, spool.counters.not_captures, spool.counters.generations) == (1, 0, 0)


def test_a_missing_spool_is_said_once_with_the_fix_then_recovers(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    sp = Spool(str(d))
    user, group = _whoami()
    for _ in range(3):
        sp.scan(time.time())
    assert sp.notes == [
        f"error: spool {d} does not exist (pcapwatch runs as user {user}): create it, e.g. install -d -m 2750 -o "
        f"tcpdump -g {group} {d} (tcpdump's user writes, the service's group reads; README: 'The spool'), or set "
        "spool.dir to where tcpdump writes; it is looked at again at every scan, quietly, and said when it can be "
        "listed"]
    assert sp.listing_failures == 3
    sp.notes.clear()
    d.mkdir()
    write(d / "cap.pcap", pcap(1000.0))
    sp.scan(time.time())
    assert sp.notes == [f"info: spool {d} can be listed again"]
    assert scanned(sp) == ["cap.pcap"]


def test_an_unlistable_spool_names_the_user_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    sp = Spool(str(d))
    user, group = _whoami()

    def refuse(path: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "scandir", refuse)
    sp.scan(time.time())
    sp.scan(time.time())
    assert sp.notes == [
        f"error: spool {d} cannot be listed (Permission denied) as user {user}, the user pcapwatch runs as: give it "
        f"read and search permission on the directory and its parents, e.g. install -d -m 2750 -o tcpdump -g {group} "
        f"{d} (tcpdump's user writes, the service's group reads; README: 'The spool'); it is looked at again at "
        "every scan, quietly, and said when it can be listed"]


def _whoami() -> tuple[str, str]:
    import grp

    uid = os.geteuid()
    return f"{pwd.getpwuid(uid).pw_name} (uid {uid})", grp.getgrgid(os.getegid()).gr_name
