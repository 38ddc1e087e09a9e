#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of the capture reader, the pipeline and HTTP through reassembly.

    .venv/bin/python bench/fuzz.py --target reader|pipeline|http --minutes 10
    .venv/bin/python bench/fuzz.py --target http --seconds 20 --seed 1     # the CI smoke run
    .venv/bin/python bench/fuzz.py --target reader --replay FILE...        # run saved inputs once

The targets are in tests/helpers/fuzz.py; seeds are made there at run time. libFuzzer stops at
the first crash: this script starts it again (same corpus directory, so nothing learned is lost)
until the time is up, and keeps every crashing input in --crashes (default /tmp/pcapwatch-fuzz/
TARGET/crashes). Per input: -timeout (a hang is a crash) and -rss_limit_mb (memory bounded).
At the end it prints executions, executions/s, coverage (libFuzzer's `cov`/`ft`), peak RSS and
crashes, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 5  # per input; the slowest legitimate inputs take well under 0.1 s
RSS_LIMIT_MB = 1024  # the process with atheris is about 100 MB; an input bloating it past this is a bug


def child(target: str, args: list[str]) -> None:
    """Run inside the fuzzing process: instrument the project, then hand over to libFuzzer."""
    import atheris

    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    with atheris.instrument_imports(include=["analyzers", "watcher", "helpers.fuzz"]):
        from helpers import fuzz
    fn = fuzz.TARGETS[target][0]
    atheris.Setup([sys.argv[0], *args], fn)
    try:
        atheris.Fuzz()
    finally:
        fuzz.cleanup()


def write_seeds(target: str, corpus: Path) -> int:
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from helpers import fuzz

    corpus.mkdir(parents=True, exist_ok=True)
    seeds = fuzz.TARGETS[target][1]()
    for i, s in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(s)
    return len(seeds)


def replay(target: str, files: list[str]) -> int:
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from helpers import fuzz

    fn, bad = fuzz.TARGETS[target][0], 0
    for f in files:
        try:
            with fuzz.time_limit():
                fn(Path(f).read_bytes())
            print(f"ok   {f}")
        except Exception as e:  # every failure is reported, then the next input runs
            bad += 1
            print(f"FAIL {f}: {type(e).__name__}: {e}")
    fuzz.cleanup()
    return 1 if bad else 0


STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.M)
COV = re.compile(r"cov: (\d+) ft: (\d+)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, choices=["reader", "pipeline", "http"])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, help="instead of --minutes")
    ap.add_argument("--seed", type=int, default=0, help="libFuzzer -seed (0: random)")
    ap.add_argument("--workdir", type=Path, help="corpus and crashes (default /tmp/pcapwatch-fuzz/TARGET)")
    ap.add_argument("--max-len", type=int, default=65536)
    ap.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once and stop")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ns, rest = ap.parse_known_args(argv)
    if ns.child:
        child(ns.target, rest)
        return 0
    if ns.replay:
        return replay(ns.target, ns.replay)
    seconds = ns.seconds if ns.seconds is not None else ns.minutes * 60
    work = ns.workdir or Path("/tmp/pcapwatch-fuzz") / ns.target
    corpus, crashes = work / "corpus", work / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    nseeds = write_seeds(ns.target, corpus)
    scratch = work / "scratch.cap"  # the reader target's input file, removed here at the end
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PCAPWATCH_FUZZ_SCRATCH": str(scratch), "PYTHONPATH": path}
    start, execs, runs, cov, ft, peak = time.monotonic(), 0, 0, 0, 0, 0
    found: list[str] = []
    log = work / "fuzz.log"
    with log.open("w") as logf:
        while (left := seconds - (time.monotonic() - start)) >= 1:
            runs += 1
            before = set(os.listdir(crashes))
            cmd = [sys.executable, __file__, "--child", "--target", ns.target, str(corpus),
                   f"-max_total_time={int(left)}", f"-timeout={TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                   f"-max_len={ns.max_len}", f"-seed={ns.seed + runs - 1 if ns.seed else 0}",
                   f"-artifact_prefix={crashes}/", "-print_final_stats=1"]
            p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace")
            logf.write(p.stdout)
            stats = {k: int(v) for k, v in STAT.findall(p.stdout)}
            execs += stats.get("number_of_executed_units", 0)
            peak = max(peak, stats.get("peak_rss_mb", 0))
            if m := COV.findall(p.stdout):
                cov, ft = max(cov, int(m[-1][0])), max(ft, int(m[-1][1]))
            new = sorted(set(os.listdir(crashes)) - before)
            found += [str(crashes / n) for n in new]
            if p.returncode != 0 and not new:
                tail = "\n".join(p.stdout.splitlines()[-30:])
                print(f"fuzz: the fuzzing process failed (exit {p.returncode}) without a crash input:\n{tail}",
                      file=sys.stderr)
                return 2
            if p.returncode == 0:
                break
    scratch.unlink(missing_ok=True)
    took = time.monotonic() - start
    summary = {"target": ns.target, "seconds": round(took, 1), "executions": execs,
               "executions_per_s": round(execs / took, 1) if took else 0, "cov": cov, "ft": ft,
               "peak_rss_mb": peak, "seeds": nseeds, "corpus": len(os.listdir(corpus)), "restarts": runs - 1,
               "crashes": found, "log": str(log)}
    print(f"{ns.target}: {execs:,} executions in {took:.0f} s ({summary['executions_per_s']:,}/s), "
          f"cov {cov} ft {ft}, corpus {summary['corpus']}, peak RSS {peak} MB, {len(found)} crashes")
    for f in found:
        print(f"  crash: {f}   (replay: bench/fuzz.py --target {ns.target} --replay {f})")
    print(json.dumps(summary))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
