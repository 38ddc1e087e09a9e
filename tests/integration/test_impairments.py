"""Real traffic, impaired the ways networks and capturing hosts impair it, gives the same transactions.

The corpus captures are read into segments and impaired by `tests/pcapgen.py` (seeded): payloads
re-cut into 1..50-byte segments, 5% of packets captured twice, segments reordered, the capture cut
into rotation files mid-connection, all of it at once, and heads fed one byte at a time. Records
are compared with the original file's by (uid, trans_depth), without `pcap_file`.

Reordering moves bytes to a later packet, so the capture time at which they became readable moves
too: there the timing fields may differ by at most the time span of a reordering window, and
everything else must be equal. Losing segments loses only the transactions whose bytes they held;
which those are is computed here from the segments' stream ranges and an HTTP framing of the
original streams independent of the analyzer's.
"""

from __future__ import annotations

import functools
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import impair
from helpers import pcapgen as g
from helpers.env import corpus, read_records
from helpers.pcapgen import ConnKey, Segment

from analyzers.tcp.frames import SYN

Record = dict[str, Any]
Key = tuple[str, int]  # (uid, trans_depth)
TIMING = ("ts", "ttfb_ms", "duration_ms")
CAPTURES = ["mix1500.pcap", "mix.pcap"]
# Reordering windows: 6 packets, spanning at most 1 ms of capture time.
REORDER_WINDOW = 6
REORDER_SPAN_NS = 1_000_000


@functools.cache
def _original(name: str) -> tuple[list[Record], list[Segment], dict[str, Any]]:
    path = corpus("local", name)
    records, result, err = read_records(path)
    assert (result.files_failed, err) == (0, "")
    return records, g.read_segments(path), result.stats


def original(name: str) -> tuple[list[Record], list[Segment]]:
    """The corpus capture's records and its segments."""
    records, segs, _stats = _original(name)
    return records, segs


def by_key(records: list[Record]) -> dict[Key, Record]:
    """Records without `pcap_file`, keyed by (uid, trans_depth); keys must be unique."""
    out = {(r["uid"], r["trans_depth"]): {k: v for k, v in r.items() if k != "pcap_file"} for r in records}
    assert len(out) == len(records), "duplicate (uid, trans_depth)"
    return out


def read_impaired(tmp_path: Path, parts: list[list[Segment]]) -> tuple[list[Record], dict[str, Any]]:
    """Write the parts as rotation files and read them as one run."""
    paths = g.write_rotation(tmp_path, "cap.pcap", parts)
    records, result, err = read_records(*paths)
    assert (result.files_failed, err) == (0, "")
    assert result.stats["frames"] == sum(map(len, parts))
    return records, result.stats


def record_diffs(want: dict[Key, Record], got: dict[Key, Record], span_s: float = 0.0,
                 keys: set[Key] | None = None) -> list[tuple[Key, str, Any, Any]]:
    """(key, field, wanted, got) for each difference, and missing or extra records.

    With `span_s`, timing fields may differ by what moving bytes by up to `span_s` of capture time
    explains. `keys` limits the comparison to those records (extra records are always reported).
    """
    bad: list[tuple[Key, str, Any, Any]] = []
    for key in sorted(want if keys is None else keys):
        w, r = want[key], got.get(key)
        if r is None:
            bad.append((key, "missing", w, None))
            continue
        for f, v in w.items():
            if r[f] == v:
                continue
            if span_s and f == "ts" and abs(r[f] - v) <= span_s + 1e-6:
                continue
            if span_s and f in TIMING and None not in (r[f], v) and abs(r[f] - v) <= span_s * 1000 + 0.002:
                continue
            bad.append((key, f, v, r[f]))
    bad += [(key, "extra", None, r) for key, r in sorted(got.items()) if key not in want]
    return bad


def mid_connection_cuts(segs: list[Segment], n: int = 2) -> list[int]:
    """Cut points in the middle of the `n` connections with most packets (so inside a response)."""
    conns = sorted(g.connections(segs).values(), key=len, reverse=True)[:n]
    return sorted(idx[len(idx) // 2] for idx in conns)


def spanning(segs: list[Segment], at: int) -> int:
    """How many connections have packets on both sides of the cut before `at`."""
    before = {g.conn_key(s) for s in segs[:at]}
    return len(before & {g.conn_key(s) for s in segs[at:]})


# Re-segmentation, duplicates, reordering, rotation ---------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES)
def test_resegmented_into_1_to_50_bytes(tmp_path: Path, capture: str) -> None:
    records, segs = original(capture)
    resegmented = impair.resegment(segs, random.Random(1), 1, 50)
    assert max(len(s.payload) for s in resegmented) == 50
    got, stats = read_impaired(tmp_path, [resegmented])
    assert record_diffs(by_key(records), by_key(got)) == []
    assert (stats["tcp"]["gaps"], stats["tcp"]["overlap_mismatch_segments"]) == (0, 0)


@pytest.mark.parametrize("capture", CAPTURES)
def test_five_percent_duplicated(tmp_path: Path, capture: str) -> None:
    records, segs = original(capture)
    duplicated = impair.duplicate(segs, random.Random(2), 0.05)
    assert len(duplicated) - len(segs) == round(len(segs) * 0.05)
    got, stats = read_impaired(tmp_path, [duplicated])
    assert record_diffs(by_key(records), by_key(got)) == []
    assert (stats["tcp"]["gaps"], stats["tcp"]["overlap_mismatch_segments"]) == (0, 0)


@pytest.mark.parametrize("capture", CAPTURES)
def test_reordered_within_windows(tmp_path: Path, capture: str) -> None:
    """Same transactions; timing moves by at most a window's span, and only where packets moved."""
    records, segs = original(capture)
    reordered, moved = impair.reorder(segs, random.Random(3), REORDER_WINDOW, REORDER_SPAN_NS)
    assert moved > len(segs) // 20
    got, _stats = read_impaired(tmp_path, [reordered])
    want, have = by_key(records), by_key(got)
    assert record_diffs(want, have, REORDER_SPAN_NS / 1e9) == []
    moved_ports = {port for s, o in zip(reordered, segs, strict=True) if s._replace(ts_ns=o.ts_ns) != o
                   for port in (s.sport, s.dport)}
    still = {k for k, r in want.items() if r["src_port"] not in moved_ports}  # connections left in order
    assert len(still) > 100
    assert record_diffs(want, have, keys=still) == []


@pytest.mark.parametrize("capture", CAPTURES)
def test_reordering_loses_no_bytes(tmp_path: Path, capture: str) -> None:
    """Reordered segments are all there: the analyzer must not report a gap or open extra connections."""
    _records, segs, base = _original(capture)
    reordered, _moved = impair.reorder(segs, random.Random(3), REORDER_WINDOW, REORDER_SPAN_NS)
    _got, stats = read_impaired(tmp_path, [reordered])
    assert stats["tcp"]["out_of_order_segments"] > 0
    assert (stats["tcp"]["gaps"], stats["tcp"]["gap_bytes"]) == (0, 0)
    assert stats["connections"]["connections"] == base["connections"]["connections"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_packets_in_flight_after_a_reset_open_no_connection(capture: str) -> None:
    """The aborted downloads' server keeps sending after the client's RST: those segments belong to
    the connection that was reset, not to a new one picked up midstream."""
    _records, segs, stats = _original(capture)
    started = {g.conn_key(s) for s in segs if s.flags & SYN}
    assert len(started) == len(g.connections(segs))
    assert (stats["connections"]["connections"], stats["connections"]["midstream"]) == (len(started), 0)


@pytest.mark.parametrize("capture", CAPTURES)
def test_cut_into_three_rotation_files_mid_connection(tmp_path: Path, capture: str) -> None:
    records, segs = original(capture)
    cuts = mid_connection_cuts(segs)
    assert all(spanning(segs, at) >= 1 for at in cuts)
    got, _stats = read_impaired(tmp_path, impair.cut(segs, cuts))
    assert {r["pcap_file"] for r in got} == {"cap.pcap", "cap.pcap1", "cap.pcap2"}
    assert record_diffs(by_key(records), by_key(got)) == []


@pytest.mark.parametrize("capture", CAPTURES)
def test_all_impairments_combined(tmp_path: Path, capture: str) -> None:
    records, segs = original(capture)
    rng = random.Random(4)
    impaired = impair.resegment(segs, rng, 1, 50)
    impaired = impair.duplicate(impaired, rng, 0.05)
    impaired, moved = impair.reorder(impaired, rng, REORDER_WINDOW, REORDER_SPAN_NS)
    assert moved > len(segs) // 20
    cuts = mid_connection_cuts(impaired)
    assert all(spanning(impaired, at) >= 1 for at in cuts)
    got, _stats = read_impaired(tmp_path, impair.cut(impaired, cuts))
    assert record_diffs(by_key(records), by_key(got), REORDER_SPAN_NS / 1e9) == []


@pytest.mark.parametrize("capture", CAPTURES)
def test_one_byte_at_a_time(tmp_path: Path, capture: str) -> None:
    """The HTTP parser fed one byte per segment: whole connections up to 16 KiB, and in every other
    connection each segment up to 512 bytes (heads, chunk-size lines, small bodies)."""
    records, segs = original(capture)
    conns = g.connections(segs)
    small = {k for k, idx in conns.items() if sum(len(segs[i].payload) for i in idx) <= 16384}
    assert len(small) > 300
    one = impair.resegment(segs, random.Random(5), 1, 1,
                           select=lambda s: len(s.payload) <= 512 or g.conn_key(s) in small)
    assert max(len(s.payload) for s in one if g.conn_key(s) in small) == 1
    got, stats = read_impaired(tmp_path, [one])
    assert record_diffs(by_key(records), by_key(got)) == []
    assert stats["tcp"]["gaps"] == 0


# Loss ------------------------------------------------------------------------------------------


@dataclass
class Message:
    start: int  # stream offsets
    end: int
    head_end: int
    method: str = ""
    status: int = 0
    body_len: int = 0


@dataclass
class Conn:
    key: ConnKey
    client: tuple[bytes, int]
    segments: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # index -> (direction, start, end)
    requests: list[Message] = field(default_factory=list)
    responses: list[Message] = field(default_factory=list)  # one per request, interim 1xx included


_CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


def _streams(segs: list[Segment], idx: list[int]) -> tuple[Conn, bytes, bytes] | None:
    """A connection's client and server byte streams, and each data segment's range in them."""
    syns = [segs[i] for i in idx if segs[i].flags & SYN]
    if len(syns) != 2:
        return None
    syn = next(s for s in syns if not s.flags & 0x10)
    other = next(s for s in syns if s.flags & 0x10)
    conn = Conn(g.conn_key(syn), (syn.src, syn.sport))
    base = {(syn.src, syn.sport): (0, syn.seq + 1), (other.src, other.sport): (1, other.seq + 1)}
    bufs = (bytearray(), bytearray())
    for i in idx:
        s = segs[i]
        if not s.payload:
            continue
        d, b = base[(s.src, s.sport)]
        start = (s.seq - b) % g.SEQ_MOD
        end = start + len(s.payload)
        buf = bufs[d]
        if len(buf) < end:
            buf.extend(b"\0" * (end - len(buf)))
        buf[start:end] = s.payload
        conn.segments[i] = (d, start, end)
    return conn, bytes(bufs[0]), bytes(bufs[1])


def _frame_requests(stream: bytes) -> list[Message] | None:
    out, pos = [], 0
    while pos < len(stream):
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0 or _CHUNKED.search(stream, pos, end):
            return None
        head = stream[pos:end + 4]
        m = _CL.search(head)
        n = int(m.group(1)) if m else 0
        out.append(Message(pos, end + 4 + n, end + 4, head.split(b" ", 1)[0].decode("latin-1"), body_len=n))
        pos = end + 4 + n
    return out if pos == len(stream) else None


def _frame_responses(stream: bytes, requests: list[Message]) -> list[Message] | None:
    out, pos = [], 0
    for req in requests:
        start = pos
        while True:
            end = stream.find(b"\r\n\r\n", pos)
            if end < 0 or not stream.startswith(b"HTTP/1.", pos):
                return None
            head = stream[pos:end + 4]
            status = int(head[9:12])
            pos = end + 4
            if not 100 <= status < 200:
                break
        m = _CL.search(head)
        if req.method == "HEAD" or status in (204, 304):
            n = 0
        elif m:
            n = int(m.group(1))
        elif _CHUNKED.search(head):
            body_start = pos
            while True:
                nl = stream.find(b"\r\n", pos)
                if nl < 0:
                    return None
                size = int(stream[pos:nl].split(b";")[0], 16)
                pos = nl + 2 + size + 2
                if size == 0:
                    break
            n = pos - body_start  # (the analyzer counts decoded bytes; only used for ranges here)
            out.append(Message(start, pos, end + 4, status=status, body_len=-1))
            continue
        else:
            return None
        out.append(Message(start, pos + n, end + 4, status=status, body_len=n))
        pos += n
    return out if pos == len(stream) else None


def framed_connections(records: list[Record], segs: list[Segment]) -> dict[str, Conn]:
    """Connections (by uid) whose streams this simple framing explains exactly, checked against the
    original records: same number of transactions, same methods, statuses and Content-Length bodies."""
    by_client: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        by_client.setdefault((r["src_ip"], r["src_port"]), []).append(r)
    out = {}
    for idx in g.connections(segs).values():
        found = _streams(segs, idx)
        if found is None:
            continue
        conn, client, server = found
        recs = sorted(by_client.get((g.address_text(conn.client[0]), conn.client[1]), []),
                      key=lambda r: r["trans_depth"])
        reqs = _frame_requests(client)
        resps = _frame_responses(server, reqs) if reqs else None
        if not recs or resps is None or len(recs) != len(reqs or []) or any(r["flags"] for r in recs):
            continue
        assert reqs is not None
        pairs = [(q.method, p.status) for q, p in zip(reqs, resps, strict=True)]
        if [(r["method"], r["status_code"]) for r in recs] != pairs:
            continue
        assert all(p.body_len in (-1, r["response_body_len"]) for p, r in zip(resps, recs, strict=True))
        conn.requests, conn.responses = reqs, resps
        out[recs[0]["uid"]] = conn
    return out


def _inside(seg: tuple[int, int, int], d: int, lo: int, hi: int) -> bool:
    return seg[0] == d and lo <= seg[1] and seg[2] <= hi


def choose_drops(conns: dict[str, Conn], rng: random.Random) -> dict[str, list[int]]:
    """Segments to lose, by kind: strictly inside a Content-Length response body, strictly inside a
    chunked body, exactly one whole request head (of a request without body), part of a request
    head that spans several segments."""
    kinds: dict[str, list[tuple[str, int]]] = {"cl_body": [], "chunked_body": [], "whole_head": [], "part_head": []}
    for uid, c in conns.items():
        for q, p in zip(c.requests, c.responses, strict=True):
            head = [i for i, s in c.segments.items() if s[0] == 0 and s[1] < q.head_end and s[2] > q.start]
            if len(head) == 1 and c.segments[head[0]][1:] == (q.start, q.head_end) and q.end == q.head_end:
                kinds["whole_head"].append((uid, head[0]))
            elif len(head) >= 3:
                kinds["part_head"] += [(uid, i) for i in sorted(head)[1:-1]]
            body = sorted(i for i, s in c.segments.items() if _inside(s, 1, p.head_end, p.end))
            if body:
                kinds["chunked_body" if p.body_len < 0 else "cl_body"].append((uid, body[len(body) // 2]))
    counts = {"cl_body": 3, "chunked_body": 1, "whole_head": 2, "part_head": 1}
    out: dict[str, list[int]] = {}
    for kind, n in counts.items():
        candidates = sorted(kinds[kind])
        assert len(candidates) >= n, f"the capture has no {kind} segment to drop"
        for uid, i in rng.sample(candidates, n):
            out.setdefault(uid, []).append(i)
    return out


@functools.cache
def loss_scenario(capture: str) -> tuple[dict[Key, Record], dict[Key, Record], dict[Key, bool]]:
    """Records before and after losing the chosen segments, and the transactions the loss touches
    (key -> True when a whole request head was among the lost bytes)."""
    records, segs = original(capture)
    conns = framed_connections(records, segs)
    assert len(conns) > 100
    drops = choose_drops(conns, random.Random(6))
    touched: dict[Key, bool] = {}
    for uid, indexes in drops.items():
        c = conns[uid]
        lost = [c.segments[i] for i in indexes]
        for k, (q, p) in enumerate(zip(c.requests, c.responses, strict=True), start=1):
            hits = [s for s in lost if (s[0] == 0 and s[1] < q.end and s[2] > q.start)
                    or (s[0] == 1 and s[1] < p.end and s[2] > p.start)]
            if hits:
                touched[(uid, k)] = any(s[0] == 0 and s[1] <= q.start and s[2] >= q.head_end for s in hits)
    assert len(touched) >= 6
    with tempfile.TemporaryDirectory() as tmp:
        got, _stats = read_impaired(Path(tmp), [impair.drop(segs, [i for v in drops.values() for i in v])])
    return by_key(records), by_key(got), touched


@pytest.mark.parametrize("capture", CAPTURES)
def test_lost_segments_spare_the_other_transactions(capture: str) -> None:
    """Every transaction none of whose bytes were lost is recorded exactly as without the loss."""
    want, have, touched = loss_scenario(capture)
    assert record_diffs(want, have, keys=set(want) - set(touched)) == []


@pytest.mark.parametrize("capture", CAPTURES)
def test_lost_segments_flag_their_transactions(capture: str) -> None:
    """A transaction that lost bytes is recorded with the `gap` flag; it may be missing only when
    its whole request head was lost."""
    _want, have, touched = loss_scenario(capture)
    wrong = {}
    for key, head_lost in touched.items():
        r = have.get(key)
        if (r is None and not head_lost) or (r is not None and "gap" not in r["flags"]):
            wrong[key] = (r["flags"], r["reason"], r["method"]) if r else None
    assert wrong == {}


# Capture order is not wire order (issue 9) -----------------------------------------------------


def _permuted(segs: list[Segment], seed: int) -> tuple[list[Segment], int, int]:
    """Data segments permuted in windows of 2-8 per direction, ACKs in place; how many moved, and
    how many now come after a peer packet acknowledging them."""
    permuted, moved = impair.permute(segs, random.Random(seed), 2, 8, REORDER_SPAN_NS)
    high_ack: dict[tuple[bytes, int], int] = {}  # per receiver: the last ACK it sent (unwrapped enough)
    after_ack = 0
    for s in permuted:
        if s.payload:
            acked = high_ack.get((s.dst, s.dport))
            if acked is not None and 0 < (acked - s.seq) % g.SEQ_MOD < g.SEQ_MOD // 2:
                after_ack += 1
        if s.flags & 0x10:
            high_ack[(s.src, s.sport)] = s.ack
    return permuted, moved, after_ack


@pytest.mark.parametrize("capture", CAPTURES)
def test_permuted_past_their_acks(tmp_path: Path, capture: str) -> None:
    """Segments after the ACK that covers them are late, not lost: the same records, no gap, no
    retransmission (timing moves by at most a window's span)."""
    records, segs, base = _original(capture)
    permuted, moved, after_ack = _permuted(segs, 7)
    print(f"{capture}: {moved} segments moved, {after_ack} after the peer's ACK of them")
    assert moved > len(segs) // 20 and after_ack > 100
    got, stats = read_impaired(tmp_path, [permuted])
    assert record_diffs(by_key(records), by_key(got), REORDER_SPAN_NS / 1e9) == []
    tcp = stats["tcp"]
    assert (tcp["gaps"], tcp["gap_bytes"], tcp["retransmitted_segments"]) == (
        0, 0, base["tcp"]["retransmitted_segments"])
    assert tcp["late_segments_filled"] > 0 and tcp["holes_expired"] == 0


@functools.cache
def permuted_loss_scenario(capture: str) -> tuple[dict[Key, Record], dict[Key, Record], set[Key], int]:
    """1% of the data segments lost, then the rest permuted as above. The transactions the loss
    touches are those a lost segment's stream range overlaps (request or response), in the
    connections whose streams `framed_connections` explains exactly; segments are lost only there."""
    records, segs = original(capture)
    conns = framed_connections(records, segs)
    rng = random.Random(8)
    candidates = sorted((uid, i) for uid, c in conns.items() for i in c.segments)
    data_segments = sum(1 for s in segs if s.payload)
    drops = rng.sample(candidates, round(data_segments / 100))
    touched: set[Key] = set()
    for uid, i in drops:
        c = conns[uid]
        d, lo, hi = c.segments[i]
        for k, (q, p) in enumerate(zip(c.requests, c.responses, strict=True), start=1):
            m = q if d == 0 else p
            if lo < m.end and hi > m.start:
                touched.add((uid, k))
    lossy = impair.drop(segs, [i for _uid, i in drops])
    permuted, _moved, _after = _permuted(lossy, 9)
    with tempfile.TemporaryDirectory() as tmp:
        got, _stats = read_impaired(Path(tmp), [permuted])
    return by_key(records), by_key(got), touched, len(drops)


@pytest.mark.parametrize("capture", CAPTURES)
def test_permuted_and_one_percent_lost_spares_the_other_transactions(capture: str) -> None:
    want, have, touched, dropped = permuted_loss_scenario(capture)
    print(f"{capture}: {dropped} segments lost, {len(touched)} of {len(want)} transactions touched")
    assert dropped >= 10 and len(touched) >= 5
    assert record_diffs(want, have, REORDER_SPAN_NS / 1e9, keys=set(want) - touched) == []
