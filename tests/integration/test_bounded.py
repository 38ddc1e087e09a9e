"""Memory stays bounded whatever the input: a SYN flood and a 1 GB real capture.

The connection table is the one structure that grows with the input; past `--max-connections`
it must evict. These tests run the installed `pcapwatch read` as a child process, so the bound
covers the interpreter, the reader's buffers and the table together. Its memory is measured by
`bench_read.measured`: the child's `os.wait4` ru_maxrss (taken through a small measuring process,
since a child forked straight from pytest reports pytest's RSS: Linux keeps the pre-exec
high-water mark) and, when pcapwatch splits the work over worker processes, the peak of their
summed PSS (each shared page counted once). Both must stay under the bound.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers.env import REPO, corpus, missing, need_root, need_tool, read_records

MB = 1024  # KiB
# The bound we hold pcapwatch to whatever the capture: the default table bound (100,000
# connections, about 1 KB each) plus the interpreter, read chunks and workers fit inside it.
PEAK_RSS_LIMIT_MB = 300
SYN_FLOOD_CONNECTIONS = 1_000_000
LOAD_SIZE_MB = 1000
# Cached across runs: making it takes minutes of real load; bench/bench_read.py reuses it too.
LOAD_CAPTURE = Path("/tmp/pcapwatch-bench/load1500-1000mb.pcap")
# When tcpdump dropped packets, some requests are missing from the capture: below this share of
# nginx's log something is wrong with us, not with the capture.
MIN_SHARE_WITH_DROPS = 0.999


def _bench(name: str) -> ModuleType:
    """A script of bench/ as a module (bench/ is tooling, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench_read = _bench("bench_read")
mksynflood = _bench("mksynflood")


def read_child(capture: Path, tmp: Path, *args: str) -> tuple[dict[str, Any], Any]:
    """`pcapwatch read` as a child: (its --stats json counters, bench_read.Measured)."""
    exe = Path(sys.executable).parent / "pcapwatch"
    if not exe.exists():
        missing(f"the pcapwatch console script is not installed beside {sys.executable}")
    cmd = [str(exe), "read", str(capture), "-o", os.devnull, "--stats", "json", "--no-progress", *args]
    m = bench_read.measured(cmd, tmp / "read.out", tmp / "read.err")
    err = (tmp / "read.err").read_text()
    stats_lines = [line for line in err.splitlines() if line.startswith("{")]
    assert stats_lines, f"no --stats json line on stderr: {err[-2000:]}"
    return json.loads(stats_lines[-1]), m


def memory(m: Any) -> str:
    return (f"peak {m.peak_kb / MB:.0f} MB (largest process {m.max_rss_kb / MB:.0f} MB, summed RSS "
            f"{m.tree_rss_kb / MB:.0f} MB, summed PSS {m.tree_pss_kb / MB:.0f} MB), {m.wall_s:.1f} s")


def test_capture_cache_reused_only_when_complete(tmp_path: Path) -> None:
    """The cached 1 GB capture is reused only as mkcapture.sh finished it: manifest, log, same size."""
    cap = tmp_path / "load.pcap"
    cap.write_bytes(b"x" * 1000)
    manifest = {"files": [{"path": str(cap), "bytes": 1000}], "port": 1}
    assert bench_read.capture_complete(cap) is None  # no manifest: mkcapture.sh did not finish
    (tmp_path / "load.manifest.json").write_text(json.dumps(manifest))
    assert bench_read.capture_complete(cap) is None  # no access log
    (tmp_path / "load.access.log").write_text("")
    assert bench_read.capture_complete(cap) == manifest
    assert bench_read.capture_complete(cap, size_mb=1) is None  # smaller than asked for
    cap.write_bytes(b"x" * 999)  # a later, interrupted run rewrote it
    assert bench_read.capture_complete(cap) is None


def test_synflood_capture_is_what_it_says(tmp_path: Path) -> None:
    """The generator: N distinct client ip:port pairs, SYN only, one server, all decodable."""
    path = tmp_path / "syn.pcap"
    size = mksynflood.write_synflood(path, 130_000, server_port=8080)
    assert size == 24 + 130_000 * 70 == path.stat().st_size
    assert len({mksynflood.client(i) for i in range(130_000)}) == 130_000
    records, result, _err = read_records(path)
    assert records == []
    s = result.stats
    assert s["frames"] == s["tcp_packets"] == 130_000
    assert s["frames_skipped"] == {}
    assert s["connections"]["connections"] == 130_000
    assert s["connections"]["midstream"] == 0
    assert s["connections"]["untracked_packets"] == 0


def test_synflood_evicts_past_max_connections(tmp_path: Path) -> None:
    """Past the bound the table evicts: at capture end at most `max` remain, so the rest were evicted."""
    n, bound = 200_000, 20_000
    path = tmp_path / "syn.pcap"
    mksynflood.write_synflood(path, n)
    records, result, _err = read_records(path, max_connections=bound)
    c = result.stats["connections"]
    assert records == []
    assert result.stats["transactions"] == 0
    assert c["connections"] == n
    assert n - bound <= c["evicted"] <= n
    # All SYNs fall within 0.2 s of capture time and none closes: eviction is the only way out.
    assert (c["closed"], c["reset"], c["idle_timeouts"], c["active"]) == (0, 0, 0, 0)


@pytest.mark.slow  # 12-20 s: a million packets through the whole pipeline
def test_synflood_million_connections_peak_rss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "syn.pcap"
    mksynflood.write_synflood(path, SYN_FLOOD_CONNECTIONS)
    stats, m = read_child(path, tmp_path)
    c = stats["connections"]
    with capsys.disabled():
        sys.stderr.write(f"\n[bounded] {SYN_FLOOD_CONNECTIONS:,} SYNs: {memory(m)}, evicted {c['evicted']:,}\n")
    assert m.exit_code == 0
    assert stats["transactions"] == 0
    assert stats["frames"] == SYN_FLOOD_CONNECTIONS
    assert c["connections"] == SYN_FLOOD_CONNECTIONS
    assert c["evicted"] > 0
    assert c["evicted"] >= SYN_FLOOD_CONNECTIONS - 100_000  # the default --max-connections
    assert m.max_rss_kb <= PEAK_RSS_LIMIT_MB * MB, memory(m)
    assert m.peak_kb <= PEAK_RSS_LIMIT_MB * MB, memory(m)


@pytest.mark.slow  # makes a 1 GB capture under real load once (about 10 s, cached in /tmp), reads it
def test_load_capture_1gb_peak_rss_and_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cached = bench_read.capture_complete(LOAD_CAPTURE, LOAD_SIZE_MB)
    if cached is None or bench_read.drop_share(cached) > bench_read.MAX_REUSED_DROP_SHARE:
        need_root()
        need_tool("tcpdump", "capinfos", "nginx", "wrk", "ab", "curl", "ip", "ethtool")
        corpus("tools", "mkcapture.sh")
    made = bench_read.ensure_capture(LOAD_CAPTURE, LOAD_SIZE_MB, log=lambda m: None)
    man = made["manifest"]
    nginx_requests = bench_read.access_log_lines(LOAD_CAPTURE)
    stats, m = read_child(LOAD_CAPTURE, tmp_path)
    size_mb = LOAD_CAPTURE.stat().st_size / 1e6
    n = stats["transactions"]
    with capsys.disabled():
        sys.stderr.write(
            f"\n[bounded] {LOAD_CAPTURE}: {size_mb:,.0f} MB, {stats['frames']:,} packets, made in "
            f"{made.get('seconds', '?')} s; pcapwatch read {size_mb / m.wall_s:.1f} MB/s, {memory(m)}; "
            f"{n:,} transactions vs nginx {nginx_requests:,}, tcpdump dropped {man['tcpdump']['dropped_by_kernel']}\n")
    assert m.exit_code == 0
    assert stats["files_failed"] == 0
    assert stats["frames"] == man["capture_packets"]
    assert m.max_rss_kb <= PEAK_RSS_LIMIT_MB * MB, memory(m)
    assert m.peak_kb <= PEAK_RSS_LIMIT_MB * MB, memory(m)
    if man["tcpdump"]["dropped_by_kernel"] == 0:
        # Every packet nginx saw is in the file: nginx's log is exact ground truth.
        assert n == nginx_requests
    else:
        assert n >= MIN_SHARE_WITH_DROPS * nginx_requests
