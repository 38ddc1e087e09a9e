"""Fuzz targets: functions of one `bytes` that raise only when an invariant breaks.

Used by bench/fuzz.py (atheris, coverage-guided, minutes per target) and by
tests/integration/test_fuzz_smoke.py (a short run in CI, then every saved crash input replayed).
The engine hands a target arbitrary bytes; each target turns them into its input:

- `reader`: the bytes are a capture file (pcap, pcapng, or gzip of either): read it the way
  `pcapwatch read` does (pcap records walked in place by `Pipeline.feed_records`, pcapng as
  frames), in read chunks of a fuzzed size. Only `CaptureError` may come out.
- `pipeline`: the bytes script a list of frames (link type, IPv4/IPv6, TCP flags/seq/ack,
  payloads, or raw bytes): fed to `Pipeline.feed`; every record must be well formed.
- `http`: the bytes script a TCP conversation (client and server streams cut into exchanges and
  segments at fuzzed points, optionally duplicated/overlapped/reordered): fed through reassembly
  and the HTTP parser; `trans_depth` is 1..n per uid, and cut into segments differently the
  same streams give the same records.

Seeds are made at run time by the project's own code (pcapgen, and slices of the shared corpus's
mix.pcap when it is there): nothing captured is stored in the repository.
"""

from __future__ import annotations

import gzip
import os
import signal
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analyzers import Pipeline, Strings, Transaction, split_records, to_record
from analyzers.http.anomalies import Anomaly
from analyzers.records import Flag
from analyzers.tcp.frames import ACK, FIN, RST, SYN
from helpers.env import CORPUS
from helpers.pcapgen import (
    LINKS,
    PSH,
    Conn,
    Segment,
    frames,
    ip_packet,
    pcap_bytes,
    pcapng_bytes,
    to_ipv6,
)
from watcher.capture.pcapfile import CaptureError
from watcher.capture.sources import Capture, Records

# Per-input bounds: an input that takes longer is a hang; inputs are capped so one run is small.
TIME_LIMIT_S = 5.0  # the slowest legitimate input here runs well under 0.1 s
MAX_FRAMES = 256  # pipeline target: frames per input
MAX_STREAM = 8192  # http target: bytes per direction

LINK_NAMES = sorted(LINKS)
RECORD_KEYS = {
    "ts": float, "uid": str, "trans_depth": int, "src_ip": str, "src_port": int, "dst_ip": str,
    "dst_port": int, "method": (str, type(None)), "host": (str, type(None)), "uri": (str, type(None)),
    "version": (str, type(None)), "user_agent": (str, type(None)), "referrer": (str, type(None)),
    "request_body_len": int, "status_code": (int, type(None)), "status_msg": (str, type(None)),
    "info_code": (int, type(None)), "response_body_len": int, "response_content_type": (str, type(None)),
    "ttfb_ms": (float, type(None)), "duration_ms": (float, type(None)), "flags": list, "anomalies": list,
    "reason": (str, type(None)), "pcap_file": (str, type(None)),
}
REASONS = {None, "closed", "reset", "gap", "idle_timeout", "evicted", "capture_end", "port_reuse", "bad_response",
           "pipeline_overflow", "no_request"}  # README "The record"


class Hang(Exception):
    """An input ran past TIME_LIMIT_S."""


@contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    """SIGALRM-based per-input limit (main thread only): raises Hang inside the target."""
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"input ran over {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Take:
    """Consumes fuzz bytes as small integers and byte strings; zeros once they run out."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def int(self, n: int = 1) -> int:
        v = int.from_bytes(self.data[self.pos:self.pos + n], "big")
        self.pos += n
        return v

    def bytes(self, n: int) -> bytes:
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


# Records --------------------------------------------------------------------------------------


def check_record(rec: dict[str, Any]) -> None:
    """A record has exactly the documented keys, of their types, and known flags/anomalies/reasons."""
    assert set(rec) == set(RECORD_KEYS), sorted(set(rec) ^ set(RECORD_KEYS))
    for k, t in RECORD_KEYS.items():
        v = rec[k]
        assert isinstance(v, t) and not isinstance(v, bool), (k, v)
    assert rec["trans_depth"] >= 1, rec
    flags, anomalies = rec["flags"], rec["anomalies"]
    assert all(isinstance(f, Flag) for f in flags), flags
    assert len(set(flags)) == len(flags), flags
    assert all(isinstance(a, Anomaly) for a in anomalies), anomalies
    assert rec["reason"] in REASONS, rec["reason"]
    assert 0 <= rec["src_port"] < 65536 and 0 <= rec["dst_port"] < 65536
    assert rec["request_body_len"] >= 0 and rec["response_body_len"] >= 0


def records(txs: list[Transaction]) -> list[dict[str, Any]]:
    out = [to_record(t, Strings.UTF8) for t in txs]
    for rec in out:
        check_record(rec)
    return out


def check_depths(recs: list[dict[str, Any]], repeats: bool = False) -> None:
    """Each uid's records are trans_depth 1..n. With `repeats`, a uid may hold several runs 1..k:
    a uid is a hash of the client's address and port, the server's and the first packet's time,
    so a connection whose first packet comes again after it ended (a stretch of the capture
    repeated, as the reader target's mutations make) is a second connection with the same uid."""
    depths: dict[str, list[int]] = {}
    for r in recs:
        depths.setdefault(r["uid"], []).append(r["trans_depth"])
    for uid, ds in depths.items():
        if not repeats:
            assert sorted(ds) == list(range(1, len(ds) + 1)), (uid, ds)
        else:
            assert all(ds.count(d) <= ds.count(d - 1) for d in set(ds) if d > 1) and 1 in ds, (uid, ds)


# Target 1: the capture reader -------------------------------------------------------------------

_TMP: list[Path] = []


def _scratch() -> Path:
    """The file the reader target writes its input to: PCAPWATCH_FUZZ_SCRATCH when bench/fuzz.py
    names it (libFuzzer exits without Python's cleanup: the script removes it), else a temp file."""
    if not _TMP and (named := os.environ.get("PCAPWATCH_FUZZ_SCRATCH")):
        _TMP.append(Path(named))
    if not _TMP:
        fd, name = tempfile.mkstemp(prefix="pcapwatch-fuzz-", suffix=".cap", dir="/dev/shm" if os.path.isdir(
            "/dev/shm") else None)
        os.close(fd)
        _TMP.append(Path(name))
    return _TMP[0]


def cleanup() -> None:
    for p in _TMP:
        p.unlink(missing_ok=True)
    _TMP.clear()


def reader(data: bytes) -> None:
    """The first byte picks the read chunk size and whether to gzip; the rest is the file."""
    if not data:
        return
    mode, body = data[0], data[1:]
    chunk = (64, 1000, 65536, 1 << 20)[mode & 3]
    if mode & 4:
        body = gzip.compress(body, compresslevel=1, mtime=0)
    path = _scratch()
    path.write_bytes(body)
    pipeline = Pipeline()
    cap = Capture(str(path))
    out: list[Transaction] = []
    try:
        for item in cap.read(chunk):
            if isinstance(item, Records):
                offsets, item.used = split_records(item.buf, item.start, len(item.buf), item.layout)
                assert item.start <= item.used <= len(item.buf), (item.start, item.used, len(item.buf))
                out += pipeline.feed_records(item.buf, offsets, item.layout, item.base)
            else:
                for linktype, fs in item:
                    out += pipeline.feed(linktype, fs)
    except CaptureError as e:
        assert e.offset >= 0 and str(e), e
    finally:
        cap.close()
    out += pipeline.close()
    check_depths(records(out), repeats=True)


def reader_seeds() -> list[bytes]:
    """Small valid captures of every format (mode byte 0: as is, 4: gzipped), and corpus slices."""
    segs = conversation_segments(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    seeds = []
    for name in ("ethernet", "vlan", "sll2", "raw", "null"):
        link = LINKS[name]
        seeds.append(b"\0" + pcap_bytes(link.linktype, frames(segs, name)))
    seeds.append(b"\1" + pcap_bytes(1, frames(to_ipv6(segs)), nanos=True, big_endian=True))
    ng = pcapng_bytes([1], [(0, ts, f) for ts, f in frames(segs)])
    seeds += [b"\0" + ng, b"\4" + ng, b"\6" + seeds[0][1:]]
    seeds += mix_slices()
    return seeds


def mix_slices(n: int = 6, size: int = 16384) -> list[bytes]:
    """The shared corpus's mix.pcap: its header plus stretches of records, when it is present."""
    mix = CORPUS / "local" / "mix.pcap"
    if not mix.exists():
        return []
    raw = mix.read_bytes()
    out = []
    step = max(1, (len(raw) - 24) // n)
    for i in range(n):
        start = 24 + i * step
        # find a record start: walk records from the header (cheap enough for a few slices)
        out.append(b"\2" + raw[:24] + _records_from(raw, start, size))
    return out


def _records_from(raw: bytes, start: int, size: int) -> bytes:
    off = 24
    while off + 16 <= len(raw) and off < start:
        off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
    end = off
    while end + 16 <= len(raw) and end - off < size:
        end += 16 + struct.unpack_from("<I", raw, end + 8)[0]
    return raw[off:min(end, len(raw))]


# Target 2: the pipeline fed frames --------------------------------------------------------------

FLAG_BITS = (SYN, ACK, FIN, RST, PSH)
ADDRS = [bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([127, 0, 0, 1])]
PORTS = [80, 8080, 40000, 40001]


def pipeline_frames(data: bytes) -> list[tuple[int, list[tuple[int, float, bytes]]]]:
    """Batches of (linktype, [(offset, ts, frame)]) scripted by the bytes."""
    t = Take(data)
    batches: list[tuple[int, list[tuple[int, float, bytes]]]] = []
    ts, seqs = 1_700_000_000.0, [1000, 5000, 9000, 0xFFFFFF00]
    n = 0
    while t.left() > 0 and n < MAX_FRAMES:
        op = t.int()
        if op & 0x80:  # a raw frame of some link type
            linktype = (0, 1, 101, 108, 113, 228, 229, 276, 104, 9, 1)[t.int() % 11]
            frame = t.bytes(t.int() % 200)
        else:
            name = LINK_NAMES[t.int() % len(LINK_NAMES)]
            linktype = LINKS[name].linktype
            a, b = ADDRS[op & 1], ADDRS[op >> 1 & 1] if op & 0x40 else ADDRS[(op & 1) ^ 1]
            sp, dp = PORTS[op >> 2 & 3], PORTS[op >> 4 & 1]
            flags = 0
            bits = t.int()
            for i, f in enumerate(FLAG_BITS):
                if bits >> i & 1:
                    flags |= f
            seq = (seqs[bits >> 5 & 3] + t.int(2) - 128) % (1 << 32)
            ack = (seqs[bits >> 6 & 3 ^ 1] + t.int(2) - 128) % (1 << 32)
            payload = t.bytes(t.int() % 120)
            if op & 0x20 and payload[:1] == b"G":
                payload = b"GET /" + payload[1:] + b" HTTP/1.1\r\nHost: h\r\n\r\n"
            seg = Segment(int(ts * 1e9), a, b, sp, dp, seq, ack, flags, payload)
            if bits & 0x80:
                seg = to_ipv6([seg])[0]
            frame = LINKS[name].wrap(ip_packet(seg))
            if op & 0x10 and t.int() & 1:  # cut the frame short
                frame = frame[:t.int() % (len(frame) + 1)]
        ts += (t.int() % 8) * 0.25 - 0.25  # sometimes backwards
        if not batches or batches[-1][0] != linktype:
            batches.append((linktype, []))
        batches[-1][1].append((n * 64, ts, frame))
        n += 1
    return batches


def pipeline(data: bytes) -> None:
    p = Pipeline(max_connections=8, idle_timeout=2.0)
    out: list[Transaction] = []
    for linktype, fs in pipeline_frames(data):
        out += p.feed(linktype, fs)
    out += p.close()
    check_depths(records(out), repeats=True)  # the frames may repeat a connection's first one
    stats = p.stats()
    assert stats["transactions"] == len(out), (stats["transactions"], len(out))


def pipeline_seeds() -> list[bytes]:
    return [
        bytes([0x00, 0, SYN, 0, 128, 0, 128, 0, 1, 0x01, 0, SYN | ACK, 0, 128, 0, 128, 0, 1,
               0x20, 0, ACK | PSH, 0, 128, 0, 128, 3]) + b"Gxy" + bytes([1]),
        bytes([0x80, 1, 60]) + bytes(range(60)),
        bytes(range(256)),
    ]


# Target 3: HTTP through reassembly --------------------------------------------------------------


def conversation_segments(client: bytes, server: bytes) -> list[Segment]:
    out: list[Segment] = []
    c = Conn(out, 1)
    c.open(1_000_000_000)
    t = c.send(1_000_010_000, True, client)
    t = c.send(t, False, server)
    c.close(t)
    return out


class Script:
    """A conversation: exchanges of (client bytes, server bytes), with cut points and impairments."""

    def __init__(self, data: bytes) -> None:
        t = Take(data)
        self.opts = t.int()
        self.cuts = [t.int(2) for _ in range(8)]
        self.seed = t.int(2)
        rest = t.data[t.pos:]
        sep = rest.find(b"\0\0\0")  # client stream, then server stream
        client, server = (rest, b"") if sep < 0 else (rest[:sep], rest[sep + 3:])
        client, server = client[:MAX_STREAM], server[:MAX_STREAM]
        parts = 1 + (self.opts & 3)
        cc = sorted({x % (len(client) + 1) for x in self.cuts[:parts - 1]})
        sc = sorted({x % (len(server) + 1) for x in self.cuts[4:4 + parts - 1]})
        self.client = [client[a:b] for a, b in zip([0, *cc], [*cc, len(client)], strict=True)]
        self.server = [server[a:b] for a, b in zip([0, *sc], [*sc, len(server)], strict=True)]
        self.ending = self.opts >> 2 & 3  # FIN, RST, nothing, server FIN first

    def segments(self, split: Callable[[bytes, int], list[bytes]], impair: bool = False) -> list[Segment]:
        out: list[Segment] = []
        c = Conn(out, 1)
        t = 1_000_000_000
        c.open(t)
        rnd = _Rand(self.seed)
        for i in range(max(len(self.client), len(self.server))):
            for client, parts in ((True, self.client), (False, self.server)):
                if i >= len(parts) or not parts[i]:
                    continue
                t += 1_000_000
                start = len(out)
                for piece in split(parts[i], i):
                    c._seg(t, client, ACK | PSH, piece)
                if impair:
                    _impair(out, start, rnd, self.opts)
                c._seg(t, not client, ACK)  # the peer acknowledges the whole part
        t += 1_000_000
        if self.ending == 0:
            c.close(t)
        elif self.ending == 1:
            c.close(t, reset=True)
        elif self.ending == 3:
            c._seg(t, False, FIN | ACK)
            c._seg(t, True, FIN | ACK)
        return out


class _Rand:
    """A small deterministic generator (xorshift), so a script's impairments replay exactly."""

    def __init__(self, seed: int) -> None:
        self.x = seed * 2654435761 % (1 << 32) or 1

    def __call__(self, n: int) -> int:
        x = self.x
        x ^= x << 13 & 0xFFFFFFFF
        x ^= x >> 17
        x ^= x << 5 & 0xFFFFFFFF
        self.x = x
        return x % n if n > 0 else 0


def _impair(out: list[Segment], start: int, rnd: _Rand, opts: int) -> None:
    """Within one part (before the peer's ACK): duplicate, overlap with the same bytes, reorder."""
    segs = out[start:]
    if not segs:
        return
    if opts & 0x10:  # duplicate some segments
        segs = [s for s in segs for _ in range(1 + (rnd(4) == 0))]
    if opts & 0x20 and len(segs) > 1:  # a segment covering two neighbours (same bytes)
        i = rnd(len(segs) - 1)
        a, b = segs[i], segs[i + 1]
        if (a.seq + len(a.payload)) % (1 << 32) == b.seq:
            segs.insert(i + 2, a._replace(payload=a.payload + b.payload))
    if opts & 0x40:  # swap neighbours
        for _ in range(len(segs) // 2):
            i = rnd(len(segs) - 1) if len(segs) > 1 else 0
            if i + 1 < len(segs):
                segs[i], segs[i + 1] = segs[i + 1], segs[i]
    out[start:] = segs


def _pieces(sizes: Callable[[int], int]) -> Callable[[bytes, int], list[bytes]]:
    def split(b: bytes, i: int) -> list[bytes]:
        out, pos = [], 0
        while pos < len(b):
            n = max(1, sizes(pos))
            out.append(b[pos:pos + n])
            pos += n
        return out
    return split


def run_segments(segs: list[Segment]) -> list[dict[str, Any]]:
    p = Pipeline()
    out = p.feed(1, [(i * 64, s.ts_ns / 1e9, f) for i, (s, (_, f)) in enumerate(zip(segs, frames(segs),
                                                                                    strict=True))])
    out += p.close()
    recs = records(out)
    check_depths(recs)
    return recs


SPLIT_FIELDS = ("ts", "ttfb_ms", "duration_ms")  # capture times: the same, as every part has one time


def http(data: bytes) -> None:
    s = Script(data)
    rnd = _Rand(s.seed ^ 0x5A5A)
    whole = run_segments(s.segments(_pieces(lambda pos: 1448)))
    fuzzed = run_segments(s.segments(_pieces(lambda pos: 1 + rnd(s.cuts[pos % 8] % 64 + 1))))
    ones = run_segments(s.segments(_pieces(lambda pos: 1))) if sum(map(len, s.client + s.server)) <= 2048 else whole
    assert fuzzed == whole, _diff(whole, fuzzed)
    assert ones == whole, _diff(whole, ones)
    if s.opts & 0x70:  # duplicates, same-byte overlaps and swaps within a part: checked, not compared
        run_segments(s.segments(_pieces(lambda pos: 1 + rnd(16)), impair=True))


def _diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    if len(a) != len(b):
        return f"{len(a)} records against {len(b)}: {a} / {b}"
    for x, y in zip(a, b, strict=True):
        if x != y:
            return str({k: (x[k], y[k]) for k in x if x[k] != y.get(k)})
    return ""


def http_seeds() -> list[bytes]:
    def seed(opts: int, client: bytes, server: bytes) -> bytes:
        return bytes([opts]) + bytes(16) + b"\0\7" + client + b"\0\0\0" + server
    return [
        seed(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
        seed(1, b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                b"GET /2 HTTP/1.1\r\n\r\n",
             b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
             b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        seed(0x72, b"HEAD / HTTP/1.0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
             b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody"),
        seed(0x05, b"CONNECT h:80 HTTP/1.1\r\n\r\nGET /in HTTP/1.1\r\nHost: h\r\n\r\n",
             b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        seed(0x03, b"GET /0.9\r\n", b"raw body until close"),
    ]


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], list[bytes]]]] = {
    "reader": (reader, reader_seeds),
    "pipeline": (pipeline, pipeline_seeds),
    "http": (http, http_seeds),
}
