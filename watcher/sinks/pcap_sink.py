"""The `pcap` action's writer: a matching connection's packets to a pcap file Wireshark opens.

One file per connection per directory, named RULE-TIME-UID.pcap (the first matching rule, the
connection's first kept packet, its uid); a later match on the same connection appends the packets
kept since. Two caps keep the directory bounded: a file stops growing at `max_file_bytes` (what does
not fit gives way to the handshake and the matching transaction's packets; a later match on a full
file's connection starts NAME-2.pcap), and
past `max_bytes` for the directory its oldest .pcap files are removed, the way tcpdump's -W ring
forgets its oldest. Everything let go is counted. The files hold the packets as captured,
credentials included (redaction applies to records, not to packets): mode 0640, like the records.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from analyzers import HANDSHAKE_PACKETS, Packet
from watcher.capture.pcapfile import MAX_SNAPLEN
from watcher.sinks.base import FILE_MODE, Log, Record, SendError, Sink, stderr_log

DIR_MODE = 0o750
# Connections whose file is remembered for appending; an older one matching again gets a new file.
MAX_OPEN_CONNECTIONS = 10_000
# Snapshots waiting: each holds up to limits.pcap_connection_bytes of packets.
DEFAULT_PCAP_BUFFER = 64
GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
MAGIC_USEC = 0xA1B2C3D4
COUNTS = ("files_written", "packets_written", "files_removed", "packets_capped", "packets_other_linktype")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class PcapSinkConfig:
    """Where the files go and the two caps. Items submitted are `snapshot_item`'s.

    Not an output, so not a row of the schema's OUTPUT_TYPES: delivery makes one writer per directory
    that the rules' `pcap` actions name (the smallest caps of the rules naming it), and keeps a
    writer across a reload while its config compares equal."""

    name: str
    dir: Path
    max_bytes: int
    max_file_bytes: int
    buffer: int = DEFAULT_PCAP_BUFFER

    def build(self, log: Log = stderr_log) -> PcapSink:
        return PcapSink(self, log)


def snapshot_item(rule: str, uid: str, packets: tuple[Packet, ...], since: float) -> Record:
    """What `PcapSink.submit` takes: one transaction's connection, as kept when it completed;
    `since` is when the transaction began (its packets are what a full file must still take)."""
    return {"rule": rule, "uid": uid, "packets": packets, "since": since}


@dataclass(slots=True)
class _File:
    path: Path
    linktype: int
    next_serial: int  # packets with a lower serial are in the file (or were let go before it)
    capped: bool = False


class PcapSink(Sink):
    kind = "pcap output"

    def __init__(self, config: PcapSinkConfig, log: Log = stderr_log) -> None:
        super().__init__(config.name, config.buffer, batch=16, log=log)
        self.config = config
        self.counts = dict.fromkeys(COUNTS, 0)  # written by the worker only
        self._conns: OrderedDict[str, _File] = OrderedDict()  # uid -> its file, least recent first
        self._sizes: OrderedDict[Path, int] = OrderedDict()  # .pcap files in dir and their sizes, oldest first
        self._total = 0

    def stats(self) -> dict[str, int]:
        return {**super().stats(), **self.counts}

    def _connect(self) -> None:
        self.config.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        found = []
        for entry in os.scandir(self.config.dir):
            if entry.name.endswith(".pcap") and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append((st.st_mtime, Path(entry.path), st.st_size))
        self._sizes = OrderedDict((p, size) for _, p, size in sorted(found))
        self._total = sum(self._sizes.values())

    def _send(self, batch: list[Record]) -> int:
        for done, item in enumerate(batch):
            try:
                self._write(item["rule"], item["uid"], item["packets"], item["since"])
            except OSError as e:
                raise SendError(done, e) from e
        return len(batch)

    def _write(self, rule: str, uid: str, packets: tuple[Packet, ...], since: float) -> None:
        f = self._conns.get(uid)
        if f is not None and (f.capped or f.path not in self._sizes):
            f = None  # full, or removed by the directory cap: a new file
        new = [p for p in packets if f is None or p[0] >= f.next_serial]
        if not new:
            return
        if f is None:
            f = self._new_file(rule, uid, new[0])
            chunks = [GLOBAL_HEADER.pack(MAGIC_USEC, 2, 4, 0, 0, MAX_SNAPLEN, f.linktype)]
        else:
            self._conns.move_to_end(uid)
            chunks = []
        before = self._sizes.get(f.path, 0)
        size = sum(map(len, chunks))
        counts = self.counts
        f.next_serial = new[-1][0] + 1
        room = self.config.max_file_bytes - before - size
        for _serial, ts, _linktype, frame in self._fit(new, f, since, room):
            usec = round(ts * 1e6)
            chunks.append(RECORD_HEADER.pack(usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)))
            chunks.append(frame)
            size += RECORD_HEADER.size + len(frame)
            counts["packets_written"] += 1
        if not chunks:
            return
        self._make_room(size, keep=f.path)
        data = b"".join(chunks)
        fd = os.open(f.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)
        if not before:
            counts["files_written"] += 1
        self._sizes[f.path] = before + size
        self._sizes.move_to_end(f.path)
        self._total += size

    def _fit(self, new: list[Packet], f: _File, since: float, room: int) -> list[Packet]:
        """The packets that go into the file's `room` bytes: all if they fit; else the handshake and
        the matching transaction's (from `since`), in order, as many as fit. The rest is counted."""
        counts = self.counts
        same = [p for p in new if p[2] == f.linktype]
        counts["packets_other_linktype"] += len(new) - len(same)
        cost = sum(RECORD_HEADER.size + len(p[3]) for p in same)
        if cost <= room:
            return same
        chosen = [p for p in same if p[0] < HANDSHAKE_PACKETS or p[1] >= since]
        out = []
        for p in chosen:
            room -= RECORD_HEADER.size + len(p[3])
            if room < 0:
                f.capped = True
                break
            out.append(p)
        counts["packets_capped"] += len(same) - len(out)
        return out

    def _new_file(self, rule: str, uid: str, first: Packet) -> _File:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(first[1]))
        base = f"{_UNSAFE.sub('_', rule)[:64]}-{stamp}-{_UNSAFE.sub('_', uid)}"
        path, k = self.config.dir / f"{base}.pcap", 1
        while path in self._sizes or path.exists():
            k += 1
            path = self.config.dir / f"{base}-{k}.pcap"
        f = _File(path, first[2], first[0])
        self._conns[uid] = f
        while len(self._conns) > MAX_OPEN_CONNECTIONS:
            self._conns.popitem(last=False)
        return f

    def _make_room(self, size: int, keep: Path) -> None:
        """Remove the oldest files until `size` more bytes fit under the directory's cap."""
        while self._total + size > self.config.max_bytes:
            victim = next((p for p in self._sizes if p != keep), None)
            if victim is None:
                return
            self._total -= self._sizes.pop(victim)
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()
            self.counts["files_removed"] += 1

