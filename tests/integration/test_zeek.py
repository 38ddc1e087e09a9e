"""pcapwatch against Zeek on Zeek's own HTTP test traces (shared corpus, zeek/).

For every test in zeek/INDEX.tsv our records are compared with Zeek's expected http.log on
method, host, uri and status_code wherever Zeek defines them (Zeek's unset ``-`` is "no opinion"),
transactions matched on the connection 4-tuple as Zeek writes it (originator first) and
trans_depth; a transaction only one side logs is a difference too. Every remaining difference
must be listed, with its reason, in tests/data/zeek-differences.md: an unlisted difference fails,
and so does a listed one that no longer occurs, so the file stays true.

Conventions, checked on these baselines: both Zeek and we write a byte that is not printable ASCII
(and a backslash) as ``\\xNN``, so strings are compared as the bytes on the wire after undoing
each side's escapes. The one convention that does differ is the URI: Zeek logs
``unescaped_URI``, the target with its ``%XX`` (and ``%uXXXX``) groups decoded by
``unescape_URI`` in Zeek's HTTP.cc, while we log the target as sent. `zeek_unescape_uri` applies
Zeek's rule to our URI before comparing, so only a different parse shows up as a difference.

Every file under zeek/traces/ (those with no baseline, the .gz and .pcapng ones too) must read
without an exception or an error and give well-formed records.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import zeeklog
from helpers.env import CORPUS, corpus, read_records

from watcher.cli import main as cli_main

ZEEK = CORPUS / "zeek"
DIFFERENCES = Path(__file__).resolve().parent.parent / "data" / "zeek-differences.md"
COMPARED = ("method", "host", "uri", "status_code")
ZEEK_ID = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
ANY = "*"  # connection or depth column of a difference in a log cut without the id columns
TABLE_HEADER = ("test", "connection", "trans_depth", "field", "zeek", "ours", "reason")
# A reason must explain; a few words cannot say what each side does and why ours is acceptable.
MIN_REASON_CHARS = 80

RECORD_FIELDS = {
    "ts": (float,), "uid": (str,), "trans_depth": (int,), "src_ip": (str,), "src_port": (int,),
    "dst_ip": (str,), "dst_port": (int,), "method": (str, None), "host": (str, None),
    "uri": (str, None), "version": (str, None), "user_agent": (str, None), "referrer": (str, None),
    "request_body_len": (int,), "status_code": (int, None), "status_msg": (str, None),
    "info_code": (int, None), "response_body_len": (int,), "response_content_type": (str, None),
    "ttfb_ms": (float, int, None), "duration_ms": (float, int, None), "flags": (list,),
    "anomalies": (list,), "reason": (str, None), "pcap_file": (str, None),
}
FLAGS = {"gap", "midstream", "no_response", "no_request", "truncated", "tunnel"}
_OUR_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z")
_HEX = frozenset(b"0123456789abcdefABCDEF")


# Normalisation -------------------------------------------------------------------------------


def our_bytes(value: str) -> bytes:
    """Wire bytes of one of our strings: every \\xNN is an escape (we escape the backslash too)."""
    return _OUR_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value).encode("latin-1")


def zeek_unescape_uri(raw: bytes) -> bytes:
    """What Zeek logs as `uri` for the target `raw`: HTTP.cc unescape_URI, step by step.

    ``%XX`` decodes; ``%uXXXX`` decodes to one byte when it starts ``00``, two otherwise; a ``%``
    or ``%X`` at the very end stays as it is; ``%%`` drops the first ``%`` and reads on from the
    second; any other ``%`` is kept with the byte after it.
    """
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != 0x25:  # '%'
            out.append(c)
            i += 1
            continue
        i += 1
        if i == n:
            out.append(0x25)
            break
        if i + 1 == n:
            out += b"%" + raw[i:i + 1]
            break
        if raw[i] == 0x25:
            continue  # the second '%' starts the next escape
        if raw[i] in _HEX and raw[i + 1] in _HEX:
            out.append(int(raw[i:i + 2], 16))
            i += 2
        elif n - i >= 5 and raw[i] == 0x75 and all(b in _HEX for b in raw[i + 1:i + 5]):  # 'u'
            if raw[i + 1:i + 3] != b"00":
                out.append(int(raw[i + 1:i + 3], 16))
            out.append(int(raw[i + 3:i + 5], 16))
            i += 5
        else:
            out += b"%" + raw[i:i + 1]
            i += 1
    return bytes(out)


# Comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Difference:
    """One field of one transaction on which Zeek and we disagree, as written in the table."""

    test: str
    connection: str  # "orig_h orig_p resp_h resp_p" as Zeek writes it, or "*"
    trans_depth: str
    field: str  # method, host, uri, status_code, or "transaction" (logged by one side only)
    zeek: str  # JSON of Zeek's value (after the log's markers are read), or logged/absent
    ours: str  # JSON of our record's value, or logged/absent

    def row(self) -> str:
        cells = (self.test, self.connection, self.trans_depth, self.field, self.zeek, self.ours)
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


@dataclass
class Outcome:
    differences: list[Difference]
    transactions: int = 0  # Zeek transactions matched with one of ours
    fields: int = 0  # fields Zeek defines on those, compared
    agreeing: int = 0


def _render(value: Any) -> str:
    return json.dumps(value)


def _same(name: str, zeek: str, ours: Any) -> bool:
    if ours is None:
        return False
    if name == "status_code":
        return int(zeek) == ours
    ours_raw = our_bytes(ours)
    if name == "uri":
        ours_raw = zeek_unescape_uri(ours_raw)
    return zeeklog.wire_bytes(zeek) == ours_raw


def compare(test: str, log: zeeklog.ZeekLog, records: list[dict[str, Any]]) -> Outcome:
    """Differences between Zeek's log and our records, matched by 4-tuple and trans_depth."""
    fields = [f for f in COMPARED if f in log.fields]
    if log.has(*ZEEK_ID, "trans_depth"):
        return _compare_matched(test, log, records, fields)
    return _compare_unmatched(test, log, records, fields)


def _compare_matched(test: str, log: zeeklog.ZeekLog, records: list[dict[str, Any]],
                     fields: list[str]) -> Outcome:
    zeek_rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in log.rows:
        conn = " ".join(str(row[k]) for k in ZEEK_ID)
        zeek_rows[(conn, str(row["trans_depth"]))].append(row)
    ours: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        conn = f"{r['src_ip']} {r['src_port']} {r['dst_ip']} {r['dst_port']}"
        ours[(conn, str(r["trans_depth"]))].append(r)
    out = Outcome([])
    for key in sorted(set(zeek_rows) | set(ours)):
        zs, rs = zeek_rows.get(key, []), ours.get(key, [])
        for i in range(max(len(zs), len(rs))):
            if i >= len(rs):
                out.differences.append(Difference(test, *key, "transaction", "logged", "absent"))
                continue
            if i >= len(zs):
                out.differences.append(Difference(test, *key, "transaction", "absent", "logged"))
                continue
            out.transactions += 1
            for name in fields:
                zv = zs[i][name]
                if zv is None:  # unset: Zeek has no value to compare with
                    continue
                out.fields += 1
                if _same(name, zv, rs[i][name]):
                    out.agreeing += 1
                else:
                    shown = int(zv) if name == "status_code" else zv
                    out.differences.append(Difference(test, *key, name, _render(shown), _render(rs[i][name])))
    return out


def _compare_unmatched(test: str, log: zeeklog.ZeekLog, records: list[dict[str, Any]],
                       fields: list[str]) -> Outcome:
    """A log cut to a few columns: compare the counts and each field's values as multisets."""
    out = Outcome([])
    if len(log.rows) != len(records):
        out.differences.append(Difference(test, ANY, ANY, "transaction", str(len(log.rows)), str(len(records))))
    out.transactions = min(len(log.rows), len(records))
    for name in fields:
        zs = sorted(_render(int(v) if name == "status_code" else v) for row in log.rows
                    if (v := row[name]) is not None)
        rs = sorted(_render(r[name]) for r in records)
        missing, extra = _multiset_minus(zs, rs), _multiset_minus(rs, zs)
        out.fields += len(zs)
        out.agreeing += len(zs) - len(missing)
        if missing or extra:
            out.differences.append(Difference(test, ANY, ANY, name, ",".join(missing), ",".join(extra)))
    return out


def _multiset_minus(a: list[str], b: list[str]) -> list[str]:
    rest = list(b)
    left = []
    for v in a:
        if v in rest:
            rest.remove(v)
        else:
            left.append(v)
    return left


# The differences file -------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """Split a Markdown table row on unescaped pipes."""
    inner = line.strip()[1:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def listed_differences() -> dict[Difference, str]:
    """The table of tests/data/zeek-differences.md: difference -> reason."""
    listed: dict[Difference, str] = {}
    in_table = False
    for n, line in enumerate(DIFFERENCES.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if tuple(cells) == TABLE_HEADER:
            in_table = True
            continue
        if not in_table or set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue
        assert len(cells) == len(TABLE_HEADER), f"{DIFFERENCES.name}:{n}: {len(cells)} cells: {line}"
        diff = Difference(*cells[:6])
        assert diff not in listed, f"{DIFFERENCES.name}:{n}: listed twice: {line}"
        listed[diff] = cells[6]
    return listed


# Tests ---------------------------------------------------------------------------------------


def _index() -> list[tuple[str, str, str]]:
    index = ZEEK / "INDEX.tsv"
    if not index.exists():
        return []
    rows = [line.split("\t") for line in index.read_text().splitlines()[1:] if line.strip()]
    return [(t, tr, b) for t, tr, b in rows]


INDEX = _index()


def test_corpus_present() -> None:
    """The comparisons below are generated from the index: make its absence loud (or a skip)."""
    index = corpus("zeek", "INDEX.tsv")
    assert len(INDEX) == len(index.read_text().splitlines()) - 1 > 0


def _outcome(test: str, trace: str, baseline: str) -> Outcome | None:
    records, result, err = read_records(corpus("zeek", trace))
    assert result.errors == [] and err == ""
    log_path = ZEEK / baseline / "http.log"
    if not log_path.exists():
        return None
    return compare(test, zeeklog.read(log_path), records)


@pytest.mark.parametrize(("test", "trace", "baseline"), INDEX, ids=[row[0] for row in INDEX])
def test_zeek_http_log(test: str, trace: str, baseline: str) -> None:
    """Our records agree with Zeek's http.log except for the differences listed, all of them."""
    outcome = _outcome(test, trace, baseline)
    if outcome is None:
        # Zeek's test compares other logs only (http-pending-state-growth: a line count and
        # weird.log); nothing of http.log to compare, and the trace is read in the test below.
        script = (ZEEK / baseline / "test.zeek").read_text()
        assert "btest-diff http.log" not in script and "btest-diff-cut -m http.log" not in script
        return
    listed = {d for d in listed_differences() if d.test == test}
    found = set(outcome.differences)
    unlisted, stale = sorted(found - listed), sorted(listed - found)
    message = []
    if unlisted:
        message.append("differences from Zeek not in tests/data/zeek-differences.md (a bug, or list it "
                       "there with the reason read from the trace):")
        message += [d.row() for d in unlisted]
    if stale:
        message.append("listed in tests/data/zeek-differences.md but no longer occurring:")
        message += [d.row() for d in stale]
    if message:
        pytest.fail("\n".join(message), pytrace=False)


def test_differences_file_is_well_formed() -> None:
    """Each listed difference names an indexed test and a field, with a reason that explains."""
    corpus("zeek", "INDEX.tsv")
    tests = {row[0] for row in INDEX}
    listed = listed_differences()
    assert listed, "the table header was not found"
    for diff, reason in listed.items():
        assert diff.test in tests, diff
        assert diff.field in (*COMPARED, "transaction"), diff
        assert len(reason) >= MIN_REASON_CHARS, f"reason too short to explain: {diff.row()}"


def _traces() -> list[Path]:
    root = ZEEK / "traces"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


TRACES = _traces()


def _well_formed(r: dict[str, Any], name: str) -> None:
    assert set(r) == set(RECORD_FIELDS), set(r) ^ set(RECORD_FIELDS)
    for key, types in RECORD_FIELDS.items():
        v = r[key]
        ok = (v is None and None in types) or any(
            t is not None and isinstance(v, t) and not (t is int and isinstance(v, bool)) for t in types)
        assert ok, f"{key}={v!r} is not one of {types}"
        if isinstance(v, str):
            assert _PRINTABLE.match(v), f"{key}={v!r} holds a raw control or non-ASCII character"
    ipaddress.ip_address(r["src_ip"])
    ipaddress.ip_address(r["dst_ip"])
    assert 0 <= r["src_port"] <= 65535 and 0 <= r["dst_port"] <= 65535
    assert r["trans_depth"] >= 1
    assert r["request_body_len"] >= 0 and r["response_body_len"] >= 0
    assert r["status_code"] is None or 100 <= r["status_code"] <= 999
    assert set(r["flags"]) <= FLAGS and len(set(r["flags"])) == len(r["flags"])
    assert all(isinstance(a, str) and a for a in r["anomalies"])
    if "no_response" in r["flags"]:
        assert r["status_code"] is None and r["reason"] is not None
    if "no_request" in r["flags"]:
        assert r["method"] is None and r["uri"] is None
    assert r["pcap_file"] == name
    assert r["uid"].startswith("C")


def _trace_id(p: Path) -> str:
    return str(p.relative_to(ZEEK / "traces"))


@pytest.mark.parametrize("path", TRACES, ids=[_trace_id(p) for p in TRACES])
def test_every_trace_reads_cleanly(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No exception, no error, exit 0, and every record well formed with one record per depth."""
    records, result, err = read_records(path)
    assert (result.files, result.files_failed, result.errors, err) == (1, 0, [], "")
    seen: set[tuple[str, int]] = set()
    for r in records:
        _well_formed(r, path.name)
        key = (r["uid"], r["trans_depth"])
        assert key not in seen, f"two records for {key}"
        seen.add(key)
    assert result.stats["transactions"] == len(records)
    out = tmp_path / "out.jsonl"
    sigpipe = signal.getsignal(signal.SIGPIPE)
    try:
        status = cli_main(["read", str(path), "-o", str(out)])
    finally:
        signal.signal(signal.SIGPIPE, sigpipe)  # the CLI resets it for `| head`; not ours to keep
    assert (status, capsys.readouterr().err) == (0, "")
    assert [json.loads(line) for line in out.read_text().splitlines()] == records



# The helpers themselves (no corpus needed) ------------------------------------------------------

_FULL_LOG = (
    "#separator \\x09\n"
    "#set_separator\t,\n"
    "#empty_field\t(empty)\n"
    "#unset_field\t-\n"
    "#path\thttp\n"
    "#fields\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\ttrans_depth\tmethod\thost\turi\tstatus_code\ttags\n"
    "#types\taddr\tport\taddr\tport\tcount\tstring\tstring\tstring\tcount\tset[string]\n"
    "10.0.0.1\t1000\t10.0.0.2\t80\t1\tGET\t\\x2d\t(empty)\t200\ta,b\n"
    "10.0.0.1\t1000\t10.0.0.2\t80\t2\t-\t-\t/a\\x5cb\\x0d\t-\t(empty)\n"
    "#close\t2024-01-01-00-00-00\n"
)


def test_zeeklog_reads_markers_sets_and_escapes() -> None:
    log = zeeklog.parse(_FULL_LOG)
    assert log.path == "http" and log.has(*ZEEK_ID, "trans_depth", *COMPARED)
    first, second = log.rows
    assert (first["method"], first["host"], first["uri"], first["status_code"], first["tags"]) == (
        "GET", "\\x2d", "", "200", ["a", "b"])
    assert zeeklog.wire_bytes(first["host"]) == b"-"  # a value equal to the unset marker, escaped
    assert (second["method"], second["host"], second["status_code"], second["tags"]) == (None, None, None, [])
    assert zeeklog.wire_bytes(second["uri"]) == b"/a\\b\r"


def test_zeeklog_reads_a_btest_diff_cut_extract() -> None:
    log = zeeklog.parse("### BTest baseline data generated by btest-diff.\nuid\tstatus_code\tstatus_msg\n"
                        "CHhAvVGS1DHFjwGM9\t206\tPartial Content\nC2\t-\t(empty)\n")
    assert log.types is None and log.fields == ["uid", "status_code", "status_msg"]
    assert [r["status_code"] for r in log.rows] == ["206", None]
    assert [r["status_msg"] for r in log.rows] == ["Partial Content", ""]
    with pytest.raises(ValueError, match="columns"):
        zeeklog.parse("a\tb\n1\n")


@pytest.mark.parametrize(("raw", "logged"), [
    (b"/a%20b", b"/a b"),
    (b"/x?f=%22t.json%22%3d", b'/x?f="t.json"='),
    (b"/%", b"/%"),  # percent-end-of-line: '%' at the end stays
    (b"/%5", b"/%5"),  # a partial escape at the end stays
    (b"/%%41", b"/A"),  # '%%': the first '%' is dropped
    (b"/%zz", b"/%zz"),  # not hex: kept
    (b"/%u0041", b"/A"),
    (b"/%u2603", b"/\x26\x03"),
    (b"/%u12", b"/%u12"),
    (b"/plain", b"/plain"),
])
def test_zeek_unescape_uri(raw: bytes, logged: bytes) -> None:
    assert zeek_unescape_uri(raw) == logged


def _record(port: int, depth: int, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"src_ip": "10.0.0.1", "src_port": port, "dst_ip": "10.0.0.2", "dst_port": 80,
                         "trans_depth": depth, "method": "GET", "host": None, "uri": "/", "status_code": 200}
    r.update(kw)
    return r


def test_compare_matches_by_tuple_and_depth() -> None:
    log = zeeklog.parse(_FULL_LOG)
    records = [_record(1000, 1, host="-", uri="", status_code=None),
               _record(1000, 2, uri="/a\\x5cb\\x0d", method=None),
               _record(1001, 1)]
    out = compare("t", log, records)
    conn = "10.0.0.1 1000 10.0.0.2 80"
    assert out.differences == [
        Difference("t", conn, "1", "status_code", "200", "null"),
        Difference("t", "10.0.0.1 1001 10.0.0.2 80", "1", "transaction", "absent", "logged"),
    ]
    # depth 1: method, host, uri agree, status differs; depth 2: only the uri is defined by Zeek
    assert (out.transactions, out.fields, out.agreeing) == (2, 5, 4)
    out = compare("t", log, records[:1])
    assert Difference("t", conn, "2", "transaction", "logged", "absent") in out.differences
