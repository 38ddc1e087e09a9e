"""Accuracy on real captures: nginx and real clients, tshark and nginx's own log as the truth.

For each capture the multiset of (client ip, client port, method, uri) must equal what tshark finds
with full reassembly, and every status must equal nginx's access log (tshark misreads responses
after a pipelined HEAD and aborted downloads; nginx's log decides there, see the corpus README).
The same is checked on a capture this test records itself with the corpus's own script.
"""

from __future__ import annotations

import collections
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.env import CORPUS, corpus, need_root, need_tool, read_records


def tshark_requests(requests_tsv: Path) -> collections.Counter[tuple[str, int, str, str]]:
    """(src, sport, method, uri) of every request tshark found (gt_tshark.py's columns)."""
    found: collections.Counter[tuple[str, int, str, str]] = collections.Counter()
    for line in requests_tsv.read_text().splitlines():
        c = line.split("\t")
        found[(c[2], int(c[3]), c[7], c[9])] += 1
    return found


# (client ip, client port, which connection from that port: 0, 1, ... in time, request number on it)
Key = tuple[str, int, int, int]


def nginx_log(access_log: Path) -> dict[Key, dict[str, Any]]:
    """nginx's lines by `Key` (a busy capture reuses client ports: nginx's $connection tells apart
    the connections that shared one)."""
    lines = {}
    conns: dict[tuple[str, int], list[str]] = collections.defaultdict(list)  # $connection, in order
    for line in access_log.read_text().splitlines():
        f = shlex.split(line)
        seen = conns[(f[1], int(f[2]))]
        if f[7] not in seen:
            seen.append(f[7])
        lines[(f[1], int(f[2]), seen.index(f[7]), int(f[8]))] = {"request": f[3], "status": int(f[4]),
                                                                  "body": int(f[5])}
    return lines


def record_keys(records: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Records by `Key`, the connections from one port told apart by their uid, in time order."""
    conns: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    for r in sorted(records, key=lambda r: r["ts"]):
        seen = conns[(r["src_ip"], r["src_port"])]
        if r["uid"] not in seen:
            seen.append(r["uid"])
    return {(r["src_ip"], r["src_port"], conns[(r["src_ip"], r["src_port"])].index(r["uid"]), r["trans_depth"]): r
            for r in records}


def check_against_truth(capture: Path, base: Path) -> dict[str, Any]:
    """Assert the capture's records against tshark's and nginx's view; return pcapwatch's counters."""
    records, result, err = read_records(capture)
    assert result.files_failed == 0, err
    # A head the client never finished (it sent part of one and closed) is a record of what was read,
    # flagged truncated; tshark does not count it as a request.
    partial = [r for r in records if "incomplete_head" in r["anomalies"]]
    ours = collections.Counter((r["src_ip"], r["src_port"], r["method"], r["uri"]) for r in records
                               if r["method"] and r not in partial)
    truth = tshark_requests(base.with_name(base.name + ".gt.requests.tsv"))
    assert ours == truth, f"only ours: {ours - truth}; only tshark: {truth - ours}"

    nginx = nginx_log(base.with_name(base.name + ".access.log"))
    by_key = record_keys(records)
    assert len(by_key) == len(records), "two records for one (client, connection, trans_depth)"
    for key, rec in by_key.items():
        assert key in nginx, f"record not in nginx's log: {rec}"
        if rec in partial:
            # nginx logs a head that never completed as 400 and sends nothing (0 bytes): on the wire
            # it has no answer, and our record says so.
            assert (nginx[key]["status"], nginx[key]["body"]) == (400, 0), (rec, nginx[key])
            assert (rec["status_code"], rec["flags"], rec["reason"]) == (None, ["no_response", "truncated"],
                                                                         "closed"), rec
        else:
            assert rec["status_code"] == nginx[key]["status"], (rec, nginx[key])
    assert not {k: v for k, v in nginx.items() if k not in by_key}, "nginx logged requests we have no record of"
    assert len(partial) == result.stats["anomalies"].get("incomplete_head", 0) > 0
    return result.stats


@pytest.mark.parametrize("name", ["mix", "mix1500"])
def test_corpus_capture_matches_tshark_and_nginx(name: str) -> None:
    capture = corpus("local", f"{name}.pcap")
    stats = check_against_truth(capture, capture.with_suffix(""))
    # 892 requests tshark sees + 2 garbage lines nginx answered 400 + 2 heads the client never finished
    assert stats["transactions"] == 896
    assert stats["tcp"]["gaps"] == 0


def test_corpus_statuses_where_tshark_is_wrong() -> None:
    """The six 200s tshark misses (aborted downloads, responses after a pipelined HEAD) are ours."""
    capture = corpus("local", "mix.pcap")
    records, _, _ = read_records(capture)
    ours = collections.Counter(r["status_code"] for r in records)
    summary = json.loads(corpus("local", "mix.gt.summary.json").read_text())
    manifest = json.loads(corpus("local", "mix.manifest.json").read_text())
    assert summary["by_status"]["200"] + 6 == manifest["nginx_access_log"]["by_status"]["200"] == ours[200]
    # Pipelined GET, HEAD, GET on one connection: the HEAD's response has Content-Length but no
    # body, so the third response starts right after the HEAD's head.
    pipelined = sorted((r for r in records if r["src_port"] == 58100), key=lambda r: r["trans_depth"])
    assert [(r["method"], r["uri"], r["status_code"], r["response_body_len"]) for r in pipelined] == [
        ("GET", "/100k.bin", 200, 102400), ("HEAD", "/100k.bin", 200, 0), ("GET", "/1k.bin?after=head", 200, 1024)]


@pytest.mark.slow
def test_fresh_capture_of_real_clients(tmp_path: Path) -> None:
    """Record real curl/ab/wrk/raw clients against a real nginx now, then compare with tshark live."""
    need_root()
    need_tool("tcpdump", "tshark", "nginx", "wrk", "ab", "curl")
    tools = CORPUS / "tools"
    if not (tools / "mkcapture.sh").exists():
        corpus("tools", "mkcapture.sh")
    capture = tmp_path / "fresh.pcap"
    made = subprocess.run([str(tools / "mkcapture.sh"), "mix", str(capture)], capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    gt = subprocess.run([sys.executable, str(tools / "gt_tshark.py"), str(capture)], capture_output=True,
                        text=True, timeout=300)
    assert gt.returncode == 0, gt.stderr[-2000:]
    stats = check_against_truth(capture, capture.with_suffix(""))
    manifest = json.loads(capture.with_suffix(".manifest.json").read_text())
    if manifest["tcpdump"]["dropped_by_kernel"] == 0:
        assert stats["tcp"]["gaps"] == 0
