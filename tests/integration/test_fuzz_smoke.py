"""The fuzz campaign's CI part: a short atheris run of each target, and every saved input replayed.

bench/fuzz.py runs the targets of tests/helpers/fuzz.py under atheris (libFuzzer) for minutes;
here each runs SMOKE_SECONDS with a fixed seed (no crash, no hang past the per-input timeout, RSS
under the limit), then in this process every seed and every input that once failed is replayed
under a time limit, and a large bounded input of each structured target is measured with
tracemalloc. The fixes those inputs led to are tested in the rooms that had the bugs (see each
entry of REGRESSIONS).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import pytest
from helpers import fuzz
from helpers.env import REPO, missing

SMOKE_SECONDS = 20  # per target: enough for each to get past its seeds into mutated inputs
# Below this many executions in SMOKE_SECONDS the run did not really fuzz (the http target, the
# slowest, feeds each input four times and does 30-40 a second on a loaded 2-CPU machine).
MIN_EXECUTIONS = 100
# Peak Python allocation for one input of the size limits (MAX_FRAMES frames; MAX_STREAM bytes
# each way): a few MB is the pipeline's tables and buffers; tens would mean something keeps
# what it should drop.
PEAK_ALLOC_LIMIT = 16 * 1024 * 1024

# Inputs that once failed, by target, each with what it found (bench/fuzz.py writes them as files;
# they are kept here as literals).
REGRESSIONS: dict[str, list[bytes]] = {
    "http": [
        # Server junk, then a status line in the same segment: its response was written whole and
        # not when cut (transactions: tests/unit/analyzers/http/test_transactions.py,
        # test_a_status_line_after_a_servers_junk_in_the_same_segment_is_not_written).
        b"\x05" + bytes(21) + b"\x07CONNECT h:Z80 HTTP/1.1\r\n\rHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        bytes(18) + b"\x07GET / HTTP/1.1\r\nHost: a\r\n\x01\x00\x00\x00\x00\x00\x00\r\r\n\x00\x00\x00HTTP/1.1 200 OK"
        b"\r\nContent-Length: 2\r\n\r\nhi",
    ],
    "reader": [],
    "pipeline": [],
}


@pytest.fixture(scope="module")
def atheris_installed() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        missing("atheris is not installed (setup.cfg's `test` extra; scripts/test installs it)")


@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_smoke_run(target: str, atheris_installed: None, tmp_path: object) -> None:
    p = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz.py"), "--target", target,
                        "--seconds", str(SMOKE_SECONDS), "--seed", "1", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=SMOKE_SECONDS * 6)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(p.stdout.splitlines()[-1])
    assert summary["crashes"] == []
    assert summary["target"] == target
    assert summary["executions"] >= MIN_EXECUTIONS, summary
    assert summary["cov"] > 0 and summary["corpus"] >= summary["seeds"] > 0, summary
    assert 0 < summary["peak_rss_mb"] < 1024, summary


@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_seeds_and_saved_inputs_replay(target: str) -> None:
    fn, seeds = fuzz.TARGETS[target]
    inputs = seeds() + REGRESSIONS[target]
    assert len(inputs) >= 3
    try:
        for data in inputs:
            with fuzz.time_limit():
                fn(data)
    finally:
        fuzz.cleanup()


def test_the_http_target_checks_what_it_claims() -> None:
    # Its records for the first seed are the transaction the seed scripts, the same cut any way.
    s = fuzz.Script(fuzz.http_seeds()[1])
    for size in (1448, 1, 7):
        recs = fuzz.run_segments(s.segments(fuzz._pieces(lambda pos, size=size: size)))
        assert [(r["trans_depth"], r["method"], r["uri"], r["status_code"], r["info_code"]) for r in recs] == [
            (1, "POST", "/p", 200, 100), (2, "GET", "/2", 304, None)]
    # and a record that breaks the format is caught
    bad = dict(recs[0], flags=["not-a-flag"])
    with pytest.raises(AssertionError):
        fuzz.check_record(bad)
    with pytest.raises(AssertionError):
        fuzz.check_depths([recs[0], recs[0]])


@pytest.mark.parametrize("target,data", [
    ("pipeline", bytes((i * 37 + 11) % 256 for i in range(fuzz.MAX_FRAMES * 64))),
    ("http", bytes([0x73]) + bytes(range(18)) + b"GET /" + b"a" * (fuzz.MAX_STREAM - 5) + b"\0\0\0"
     + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * (fuzz.MAX_STREAM // 6)),
])
def test_memory_of_one_input_is_bounded(target: str, data: bytes) -> None:
    fn = fuzz.TARGETS[target][0]
    tracemalloc.start()
    try:
        with fuzz.time_limit(60):
            fn(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0 < peak < PEAK_ALLOC_LIMIT, peak
