"""The spool directory as a sequence of capture generations, in the order tcpdump wrote them.

A *generation* is one capture file's content, wherever it lives: tcpdump's ring rewrites the
oldest file in place (same name, same inode), and `-z gzip` replaces `cap.pcap3` by
`cap.pcap3.gz`. So a generation is identified by its content, a fingerprint of its first bytes
and its first packet's time, not by its name; it is ordered by that first packet's time. Scanning
notices new generations, a file rewritten before it was read (data loss, counted in bytes), and a
compressed twin of a generation already known.

A file the service may not read (its permissions) is reported once, counted, and tried again at
every scan, quietly: once readable it is read as any other (after the files read meanwhile); if it
is rewritten or removed before that, its content is counted lost like a ring's overwritten file.
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import hashlib
import os
import pwd
import stat
from dataclasses import dataclass, field
from enum import Enum

from watcher.capture.pcapfile import CaptureError, CaptureParser, capture_kind
from watcher.capture.sources import DEFAULT_GUNZIP, Capture, GunzipLimits

# The pcap header and the first record header; with the first packet's time, unique per file.
FINGERPRINT_BYTES = 40
# Enough of a file to hold its first complete record (a snaplen-sized packet at most).
HEAD_BYTES = 300_000
# A .gz still growing is gzip(1) at work: read it only once it has not changed for this long.
GZIP_SETTLE_SECONDS = 1.0
# Files that only grew keep their identity without being read again; every this-many scans all
# changed files are identified anyway (a file rewritten and regrown between two looks).
FULL_SCAN_EVERY = 10


class State(Enum):
    PENDING = "pending"
    READING = "reading"
    DONE = "done"
    LOST = "lost"  # rewritten or deleted before it was read completely


@dataclass
class Generation:
    fp: str
    first_ts: float
    path: str
    dev: int
    ino: int
    head: bytes  # the first FINGERPRINT_BYTES of content, to notice an in-place rewrite
    compressed: bool
    size: int  # bytes on disk when last seen
    mtime_ns: int
    state: State = State.PENDING
    read_offset: int = 0  # content bytes consumed (maintained by the reader)
    index: int = -1  # processing order, assigned when reading starts
    size_at_done: int = 0  # its size when taken for finished: growing past it means it was not
    missing_since: float = 0.0  # when its file was found missing (waiting for a .gz twin)
    twins: set[str] = field(default_factory=set)  # other paths holding the same content (.gz)
    unreadable: bool = False  # its file cannot be read now (permissions): passed over until it can

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class SpoolCounters:
    generations: int = 0
    done: int = 0
    lost: int = 0
    lost_bytes: int = 0
    not_captures: int = 0
    reopened: int = 0  # taken for finished, then written to again
    unreadable: int = 0  # files found unreadable (permissions), once per file until it is readable
    failed: int = 0  # files read up to a corrupt spot (the rest of each skipped)


class Spool:
    """Tracks the generations in one directory. Not thread-safe: the reader thread owns it."""

    def __init__(self, directory: str, pattern: str = "*", gunzip: GunzipLimits = DEFAULT_GUNZIP) -> None:
        self.directory = directory
        self.pattern = pattern
        self.gunzip = gunzip  # how far a .gz may expand (limits.gunzip_*), for the generation readers
        self.generations: dict[str, Generation] = {}  # by fingerprint
        self.by_path: dict[str, tuple[int, int, int, int, str | None]] = {}  # path -> dev, ino, size, mtime, fp
        self.counters = SpoolCounters()
        self.notes: list[str] = []  # one-line messages for the log, taken by the caller
        self.ignored: set[str] = set()
        self.unreadable: dict[str, int] = {}  # path -> size last seen, of files that cannot be read now
        self.largest = 0  # the largest capture file seen: about tcpdump's -C size
        self.ring_wrapped = False  # a file was rewritten in place: this spool is a -W ring
        self.scans = 0
        self.full_scan = False
        self.listing_error: int | None = None  # errno of the directory's listing, said once until it changes
        self.listing_failures = 0  # scans that could not list the directory

    def scan(self, now: float) -> None:
        """Look at the directory: new generations, rewritten files, compressed twins."""
        self.scans += 1
        self.full_scan = self.scans % FULL_SCAN_EVERY == 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError as e:
            self._cannot_list(e)
            return
        if self.listing_error is not None:
            self.listing_error = None
            self.notes.append(f"info: spool {self.directory} can be listed again")
        seen = set()
        stats = []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not fnmatch.fnmatch(name, self.pattern):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                stats.append((entry.path, st))
                self.largest = max(self.largest, st.st_size)  # first: loss estimates below use it
        for path, st in stats:
            seen.add(path)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            known = self.by_path.get(path)
            if path in self.unreadable:
                self._examine(path, st, now)  # tried again at every scan, whatever its size and time
                continue
            if known is not None and known[:4] == key:
                continue
            if (known is not None and known[4] is not None and known[:2] == key[:2] and st.st_size >= known[2]
                    and not self.full_scan and self._same_head(path, known[4])):
                # The same file, grown, still starting with the same bytes: appended to, the same
                # content. Cheaper than identifying it again, which reads its first record.
                self.by_path[path] = (*key, known[4])
                self._grew(known[4], st)
                continue
            self._examine(path, st, now)
        for path in list(self.by_path):
            if path not in seen:
                self._vanished(path)
        for path in [p for p in self.unreadable if p not in seen]:
            size = self.unreadable.pop(path)
            if path not in self.by_path:  # no generation of it known: nobody else reports it
                self._lost_unread(path, size, "removed")

    def _examine(self, path: str, st: os.stat_result, now: float) -> None:
        compressed = path.endswith(".gz")
        if compressed and now - st.st_mtime < GZIP_SETTLE_SECONDS:
            return  # gzip is still writing it; look again later
        try:
            ident = _identify(path)
        except OSError as e:
            self._cannot_read(path, st, e)
            return
        old = self.by_path.get(path)
        if path in self.unreadable:
            del self.unreadable[path]
            self.notes.append(f"info: {path}: readable now, reading it")
            if old is not None and old[4] in self.generations:
                self.generations[old[4]].unreadable = False
        if isinstance(ident, CaptureError):  # corrupt before its first packet: nothing to read
            if path not in self.ignored:
                self.ignored.add(path)
                self.counters.failed += 1
                self.notes.append(f"error: {path}: {ident}; nothing in it is read")
            self.by_path[path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, None)
            return
        if ident is None:
            if path not in self.ignored and (st.st_size > HEAD_BYTES or _foreign(path)):
                self.ignored.add(path)
                self.counters.not_captures += 1
                self.notes.append(f"warning: {path}: not a capture file, ignored")
            self.by_path[path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, None)
            return  # too short yet (tcpdump just opened it), or not a capture at all
        fp, first_ts, head, is_gz = ident
        if old is not None and old[4] is not None and old[4] != fp:
            self._overwritten(self.generations.get(old[4]), path)
        self.by_path[path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, fp)
        gen = self.generations.get(fp)
        if gen is None:
            self.generations[fp] = Generation(fp, first_ts, path, st.st_dev, st.st_ino, head, is_gz,
                                              st.st_size, st.st_mtime_ns)
            self.counters.generations += 1
        elif gen.path == path:
            self._grew(fp, st)
        else:
            gen.twins.add(path)  # the .gz of a plain file (or the reverse): same content
            if gen.path not in self.by_path:  # its own file is gone already (gzip deleted it)
                self._move(gen)

    def cannot_read(self, gen: Generation, error: OSError) -> None:
        """The reader could not open a generation's file (permissions): passed over until a scan
        finds it readable."""
        gen.unreadable = True
        self._unreadable_note(gen.path, error)
        self.unreadable.setdefault(gen.path, gen.size)

    def _cannot_read(self, path: str, st: os.stat_result, error: OSError) -> None:
        size = st.st_size
        before = self.unreadable.get(path)
        self._unreadable_note(path, error)
        known = self.by_path.get(path)
        gen = self.generations.get(known[4]) if known is not None and known[4] is not None else None
        if gen is not None and gen.path == path:
            gen.unreadable = True
            if size < gen.size:  # rewritten in place (tcpdump's ring) while it could not be read
                self.by_path[path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, None)
                self.ring_wrapped = True
                self.lose(gen, gen.size, "rewritten by tcpdump's ring before it could be read")
        elif before is not None and size < before:
            self._lost_unread(path, before, "rewritten by tcpdump's ring")
        self.unreadable[path] = size

    def _cannot_list(self, error: OSError) -> None:
        """The spool cannot be listed: said once, with the user and the fix; the scans go on quietly."""
        self.listing_failures += 1
        if error.errno == self.listing_error:
            return
        self.listing_error = error.errno
        d = self.directory
        fix = (f"e.g. install -d -m 2750 -o tcpdump -g {_group()} {d} (tcpdump's user writes, the service's "
               "group reads; README: 'The spool')")
        again = "it is looked at again at every scan, quietly, and said when it can be listed"
        if error.errno == errno.ENOENT:
            self.notes.append(f"error: spool {d} does not exist (pcapwatch runs as user {_user()}): create it, {fix}, "
                              f"or set spool.dir to where tcpdump writes; {again}")
        elif error.errno == errno.ENOTDIR:
            self.notes.append(f"error: spool {d} is not a directory: set spool.dir to the directory tcpdump writes "
                              f"into; {again}")
        else:
            self.notes.append(f"error: spool {d} cannot be listed ({error.strerror or error}) as user {_user()}, the "
                              f"user pcapwatch runs as: give it read and search permission on the directory and its "
                              f"parents, {fix}; {again}")

    def _unreadable_note(self, path: str, error: OSError) -> None:
        if path in self.unreadable:
            return  # said once; tried again quietly
        self.counters.unreadable += 1
        self.notes.append(f"error: {path}: cannot be read ({error.strerror or error}) as user {_user()}, "
                          "the user pcapwatch runs as: make the file readable to that user (chmod, chgrp, or "
                          "tcpdump -Z); it is tried again until it can be read")

    def _lost_unread(self, path: str, size: int, how: str) -> None:
        """A file never read (it could not be) is gone: its content is lost, counted."""
        self.counters.lost += 1
        self.counters.lost_bytes += size
        self.notes.append(f"error: {path}: {how} before it could be read: about {size:,} bytes of capture lost")

    def _same_head(self, path: str, fp: str) -> bool:
        gen = self.generations.get(fp)
        if gen is None or gen.compressed:
            return False
        try:
            with open(path, "rb") as f:
                return f.read(FINGERPRINT_BYTES) == gen.head
        except OSError:
            return False

    def _grew(self, fp: str, st: os.stat_result) -> None:
        gen = self.generations.get(fp)
        if gen is None:
            return
        gen.size, gen.mtime_ns = st.st_size, st.st_mtime_ns
        if gen.state == State.DONE and not gen.compressed and st.st_size > gen.size_at_done:
            # Taken for finished (a newer file appeared), yet tcpdump still writes to it: read on.
            gen.state = State.PENDING
            self.counters.reopened += 1

    def _vanished(self, path: str) -> None:
        """A file is gone: fine if read or if a twin holds its content (gzip did it)."""
        fp = self.by_path.pop(path)[4]
        gen = self.generations.get(fp) if fp else None
        if gen is None:
            return
        gen.twins.discard(path)
        if gen.path != path:
            return
        if gen.twins:
            self._move(gen)
            return
        if gen.unreadable:  # the reader passes it over: nobody else will notice it is gone
            self.unreadable.pop(path, None)
            self.lose(gen, gen.size, "removed before it could be read")
            return
        if gen.state in (State.PENDING, State.READING):
            # The reader may still hold it open and finish it (an unlinked file stays readable);
            # it reports the loss itself if it cannot.
            gen.twins.clear()

    def _overwritten(self, gen: Generation | None, path: str) -> None:
        if gen is None or gen.path != path:
            return
        if gen.twins:
            self._move(gen)
            return
        self.ring_wrapped = True
        if gen.state in (State.PENDING, State.READING):
            self.lose(gen, gen.size, "rewritten by tcpdump's ring before it was read")

    @staticmethod
    def _move(gen: Generation) -> None:
        """The generation now lives in its twin (cap.pcap3 -> cap.pcap3.gz)."""
        gen.path = min(gen.twins)
        gen.twins.discard(gen.path)
        gen.compressed = gen.path.endswith(".gz")

    def lose(self, gen: Generation, size: int, why: str) -> None:
        """Count and report a generation whose unread part is gone."""
        if gen.state in (State.DONE, State.LOST):
            return
        # The file kept growing after the last look: the ring's largest file is the better guess
        # of how much it held (tcpdump -C fills each file to the same size).
        size = max(size, self.largest if not gen.compressed else 0)
        lost = max(size - gen.read_offset, 0) if not gen.compressed else max(size, 0)
        gen.state = State.LOST
        self.counters.lost += 1
        self.counters.lost_bytes += lost
        self.notes.append(f"error: {gen.path}: {why}: about {lost:,} bytes of capture lost "
                          f"(read {gen.read_offset:,}), more if tcpdump filled other files meanwhile; pcapwatch "
                          "is falling behind tcpdump")

    def done(self, gen: Generation) -> None:
        gen.state = State.DONE
        gen.size_at_done = max(gen.size, gen.read_offset)
        self.counters.done += 1

    def ordered(self) -> list[Generation]:
        """Generations in the order tcpdump wrote them."""
        return sorted(self.generations.values(), key=lambda g: (g.first_ts, g.path))

    def next_unfinished(self) -> Generation | None:
        for gen in self.ordered():
            if gen.state in (State.PENDING, State.READING) and not gen.unreadable:
                return gen
        return None

    def has_newer(self, gen: Generation) -> bool:
        """Whether tcpdump has moved on to a later file (so `gen` will not grow any more)."""
        return any(g.first_ts > gen.first_ts or (g.first_ts == gen.first_ts and g.path > gen.path)
                   for g in self.generations.values() if g is not gen)

    def skip_before(self, first_ts: float) -> int:
        """Mark generations older than `first_ts` done (a restart resumes after them)."""
        n = 0
        for gen in self.generations.values():
            if gen.first_ts < first_ts and gen.state == State.PENDING:
                gen.state = State.DONE
                n += 1
        return n

    def unread_bytes(self) -> int:
        """Bytes on disk not yet read: the lag behind tcpdump."""
        return sum(max(g.size - g.read_offset, 0) for g in self.generations.values()
                   if g.state in (State.PENDING, State.READING) and not g.compressed)

    def ring_bytes(self) -> int:
        """An estimate of the ring's capacity once it has wrapped (the files present times the
        largest); 0 before that, or for -G rotation, where files are never rewritten."""
        if not self.ring_wrapped:
            return 0
        sizes = [v[2] for v in self.by_path.values() if v[4] is not None]
        return len(sizes) * max(sizes) if sizes else 0

    def forget_old(self, keep: int = 4096) -> None:
        """Bound memory: forget finished generations beyond the newest `keep`."""
        finished = [g for g in self.ordered() if g.state in (State.DONE, State.LOST)]
        live = {v[4] for v in self.by_path.values()}
        for gen in finished[:-keep] if len(finished) > keep else []:
            if gen.fp not in live:
                del self.generations[gen.fp]


def _foreign(path: str) -> bool:
    """Whether a file's first bytes say it is no capture at all (not just not written yet)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and capture_kind(head) is None


def fingerprint(head: bytes, first_ts: float, first_packet: bytes = b"") -> str:
    """Identity of a capture file's content: its first bytes, its first packet and that packet's time."""
    return hashlib.blake2b(head[:FINGERPRINT_BYTES] + first_packet + repr(first_ts).encode(),
                           digest_size=12).hexdigest()


def _group() -> str:
    """The name of the group the service runs as: the spool's group should be it."""
    gid = os.getegid()
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def file_fingerprint(path: str) -> str | None:
    """The fingerprint a spool gives this capture file (its Generation's `fp`, what `run`'s
    `event_id`s derive from); None when it is no capture, or corrupt before its first packet.
    OSError when it cannot be read."""
    ident = _identify(path)
    return ident[0] if isinstance(ident, tuple) else None


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _identify(path: str) -> tuple[str, float, bytes, bool] | CaptureError | None:
    """(fingerprint, first packet time, first bytes, compressed), or None if not a capture (yet),
    or the CaptureError of a capture corrupt before its first packet. OSError when the file cannot
    be read (permissions); not when it is gone already."""
    try:
        cap = Capture(path)
    except FileNotFoundError:
        return None
    try:
        data = b""
        for chunk in cap.chunks(HEAD_BYTES):
            data += chunk
            if len(data) >= HEAD_BYTES:
                break
    except CaptureError:  # a .gz cut short (gzip at work) or corrupt: the reader will tell which
        cap.close()
        return None
    try:
        batches = CaptureParser().parse(data, 0)[0]
        for _link, frames in batches:
            if frames:
                ts = frames[0][1]
                return fingerprint(data, ts, frames[0][2]), ts, data[:FINGERPRINT_BYTES], bool(cap.compressed)
    except CaptureError as e:
        return e if capture_kind(data[:4]) in ("pcap", "pcapng") else None  # else: not a capture at all
    finally:
        cap.close()
    return None
