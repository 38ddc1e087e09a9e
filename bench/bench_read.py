#!/usr/bin/env python3
"""How fast and how big `pcapwatch read` is on a large capture, next to tshark and httpry.

Each tool reads the same file; the table gives wall and CPU time, MB/s, packets/s, transactions/s
(each tool's own count of requests), peak RSS (the child's ru_maxrss from `os.wait4`, or the summed
RSS of its worker processes when larger: see `measured`) and pcapwatch's ratios to the others.
The file is read once before timing, so every tool runs on a warm page cache and the figures
measure parsing, not the disk. Medians of `--repeat` runs.

- pcapwatch: the venv's console script, `pcapwatch read FILE -o /dev/null --stats json`.
- tshark: exactly the command of ../shared/corpus/tools/gt_tshark.py (full reassembly,
  `-d tcp.port==PORT,http` from the capture's manifest), output to a temp file.
- httpry: `httpry -r FILE 'tcp port PORT'`; httpry's default filter is ports 80/8080 only, so
  without the port it would find nothing in a capture on mkcapture.sh's random port.

Usage:
  bench_read.py --capture FILE [--port PORT] [--repeat N] [--tools pcapwatch,tshark,httpry]
  bench_read.py --make SIZE_MB [--out FILE] ...   (as root: mkcapture.sh load -M 1500 ...)
  bench_read.py --capture FILE --tools pcapwatch --profile   (py-spy: top functions by own time)
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO.parent / "shared" / "corpus" / "tools"
MKCAPTURE = TOOLS_DIR / "mkcapture.sh"
GT_TSHARK = TOOLS_DIR / "gt_tshark.py"
BENCH_DIR = Path("/tmp/pcapwatch-bench")
ALL_TOOLS = ("pcapwatch", "tshark", "httpry")
# mkcapture.sh options for a benchmark capture (its header lists them): a private netns whose lo has
# a NIC-like 1500-byte MTU and no offloads, snaplen 2000. Loopback wrk writes about 1 GB per 5 s
# burst, so the default bursts overshoot a 1000 MB target to 2 GB; 1 s bursts stop near 1.1 GB. With
# tcpdump's default 64 MiB buffer about 4% of packets were dropped on 2 CPUs; 512 MiB dropped none,
# so nginx's access log stays exact ground truth for the capture.
MAKE_OPTS = ("-M", "1500", "-L", "2000", "-b", "1", "-B", "524288")
# The slowest tool (tshark) takes about a minute per GB; a run past this is hung, not slow.
RUN_TIMEOUT_S = 3600
# Making a 1 GB capture takes about 10 s of wrk plus setup; mkcapture.sh itself stops wrk after 30 s.
MAKE_TIMEOUT_S = 600
WARM_CHUNK = 16 << 20
PROFILE_TOP = 15
PROFILE_HZ = 1000


# ---------------------------------------------------------------------------------------------
# captures


def sidecar(capture: str | Path, suffix: str) -> Path:
    """mkcapture.sh's name for a file beside the capture (`base.manifest.json`, `base.access.log`)."""
    return Path(str(capture).split(".pcap")[0] + suffix)


def default_capture(size_mb: int) -> Path:
    return BENCH_DIR / f"load1500-{size_mb}mb.pcap"


def capture_complete(capture: str | Path, size_mb: int = 0) -> dict[str, Any] | None:
    """The capture's manifest if mkcapture.sh finished it, else None.

    mkcapture.sh writes the manifest last, after tcpdump has exited, and records every file's size:
    a missing manifest, or a file whose size differs from it (a later interrupted run rewrote it),
    means the capture is not the complete one the manifest describes.
    """
    man_path = sidecar(capture, ".manifest.json")
    if not Path(capture).is_file() or not man_path.is_file() or not sidecar(capture, ".access.log").is_file():
        return None
    try:
        man = json.loads(man_path.read_text())
        files = {os.path.realpath(f["path"]): f["bytes"] for f in man["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    real = os.path.realpath(capture)
    if files.get(real) != os.path.getsize(real) or sum(files.values()) < size_mb * 1_000_000:
        return None
    return man


def make_capture(out: str | Path, size_mb: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run mkcapture.sh's load scenario at MTU 1500 until `size_mb`; return {manifest, seconds, cmd}.

    Needs root, tcpdump, nginx, wrk, ab, curl, capinfos, ip and ethtool (mkcapture.sh's header).
    The time taken and the command go to `base.made.json`, its output to `base.mkcapture.log`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # wrk writes over 200 MB/s here; -d bounds the run if it is much slower somewhere.
    cmd = ["bash", str(MKCAPTURE), "load", str(out), *MAKE_OPTS, "-s", str(size_mb), "-d", str(max(30, size_mb // 20))]
    log(f"making {out}: {' '.join(cmd)}")
    t0 = time.perf_counter()
    with open(sidecar(out, ".mkcapture.log"), "w") as mk_log:
        p = subprocess.Popen(cmd, stdout=mk_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            rc = p.wait(MAKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)  # its trap stops tcpdump, wrk, nginx and removes the netns
            p.wait(60)
            raise RuntimeError(f"mkcapture.sh ran over {MAKE_TIMEOUT_S} s: interrupted") from None
    seconds = time.perf_counter() - t0
    man = capture_complete(out, size_mb)
    if rc != 0 or man is None:
        raise RuntimeError(f"mkcapture.sh failed (exit {rc}); see {sidecar(out, '.mkcapture.log')}")
    made = {"cmd": cmd, "seconds": round(seconds, 1), "size_mb": size_mb}
    sidecar(out, ".made.json").write_text(json.dumps(made, indent=1) + "\n")
    log(f"made {out} ({os.path.getsize(out) / 1e6:,.0f} MB) in {seconds:.1f} s")
    return {"manifest": man, **made}


# A cached capture whose tcpdump lost more than this share of the packets was made on a machine too
# busy to capture (say, while packages were installing): its nginx log is no longer the truth of
# what is in the file, so it is made again rather than reused.
MAX_REUSED_DROP_SHARE = 0.001
# A capture made with more drops than that is made again, at most this many times in all: a passing
# burst of load elsewhere on the machine spoils one attempt, not the next.
MAKE_ATTEMPTS = 3


def ensure_capture(out: str | Path, size_mb: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Reuse a complete capture at `out`, or make it; return {manifest, seconds (of making, if known)}.
    A cached one that tcpdump made with many drops is made again (MAX_REUSED_DROP_SHARE)."""
    man = capture_complete(out, size_mb)
    if man is not None and drop_share(man) > MAX_REUSED_DROP_SHARE:
        log(f"{out}: tcpdump dropped {drop_share(man):.1%} of the packets when it was made: making it again")
        man = None
    if man is None:
        for attempt in range(1, MAKE_ATTEMPTS + 1):
            made = make_capture(out, size_mb, log)
            share = drop_share(made["manifest"])
            if share <= MAX_REUSED_DROP_SHARE or attempt == MAKE_ATTEMPTS:
                return made
            log(f"{out}: tcpdump dropped {share:.1%} of the packets (the machine was busy): making it again")
    made_path = sidecar(out, ".made.json")
    made = json.loads(made_path.read_text()) if made_path.is_file() else {}
    log(f"reusing complete capture {out}")
    return {"manifest": man, **made}


def drop_share(manifest: dict[str, Any]) -> float:
    """The share of the packets tcpdump's kernel buffer dropped while the capture was made."""
    dropped = int(manifest.get("tcpdump", {}).get("dropped_by_kernel") or 0)
    captured = int(manifest.get("capture_packets") or 0)
    return dropped / (dropped + captured) if dropped else 0.0


def access_log_lines(capture: str | Path) -> int | None:
    p = sidecar(capture, ".access.log")
    if not p.is_file():
        return None
    with open(p, "rb") as f:
        return sum(1 for _ in f)


def packet_count(capture: str | Path, manifest: dict[str, Any] | None) -> int | None:
    """Packets in the file: from the manifest when it describes just this file, else capinfos."""
    if manifest and len(manifest.get("files", [])) == 1 and manifest.get("capture_packets"):
        return int(manifest["capture_packets"])
    if shutil.which("capinfos"):
        out = subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(capture)], capture_output=True, text=True)
        fields = out.stdout.strip().split("\t")
        if out.returncode == 0 and len(fields) >= 2 and fields[-1].isdigit():
            return int(fields[-1])
    return None


def warm(capture: str | Path) -> float:
    """Read the whole file once so each tool meets a warm page cache; return the seconds it took."""
    t0 = time.perf_counter()
    with open(capture, "rb", buffering=0) as f:
        while f.read(WARM_CHUNK):
            pass
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# measuring one child


# Linux keeps the pre-exec memory's peak in the exec'd child's ru_maxrss (exec_mmap records the
# old mm's high-water mark), so a child forked from a big process (pytest after a large in-process
# test) reports the parent's RSS. A tiny interpreter in between (about 7 MB) forks the measured
# program and reports that child's own wait4 rusage and wall time.
# wait4's ru_maxrss is the largest single process among the child and the workers it reaped, not
# their sum, so every SAMPLE_S seconds the measurer also reads every process of its session (the
# program and its workers): the peak of their summed RSS (which counts pages a forked worker shares
# with its parent once per process, so it errs high), the sum of each one's own peak (VmHWM, higher
# still) and, while there is more than one process, the peak of their summed PSS (shared pages
# split between the sharers: the memory the processes occupy together). PSS costs a walk of the
# page tables, ms per process, so a lone process is left to ru_maxrss.
SAMPLE_S = 0.05
_MEASURER = """\
import os, select, sys, time
out, interval = sys.argv[1], float(sys.argv[2])
me = os.getpid()
sid = os.getsid(0)
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[3], sys.argv[3:])
    except OSError as e:
        sys.stderr.write("cannot run %s: %s\\n" % (sys.argv[3], e))
    os._exit(127)


def kb(fields, key):
    v = fields.get(key)
    return int(v.split()[0]) if v else 0


def fields_of(path):
    with open(path, "rb") as f:
        return dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)


poll = select.poll()
poll.register(os.pidfd_open(pid), select.POLLIN)
peak_rss = peak_pss = 0
hwm = {}
while not poll.poll(interval * 1000):
    tree = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                st = f.read()
            if int(st[st.rindex(b")") + 2:].split()[3]) == sid:
                tree.append(name)
        except (OSError, ValueError, IndexError):
            continue
    rss = pss = 0
    for name in tree:
        try:
            status = fields_of("/proc/%s/status" % name)
            rss += kb(status, b"VmRSS")
            hwm[name] = max(hwm.get(name, 0), kb(status, b"VmHWM"))  # a zombie has none
            if len(tree) > 1:
                pss += kb(fields_of("/proc/%s/smaps_rollup" % name), b"Pss")
        except (OSError, ValueError, IndexError):
            continue
    peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    f.write("%r %r %d %d %d %d %d" % (wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, peak_rss, peak_pss,
                                      sum(hwm.values()), os.waitstatus_to_exitcode(status)))
"""


@dataclass
class Measured:
    wall_s: float
    cpu_s: float  # user + system of the child and its reaped workers
    max_rss_kb: int  # wait4 ru_maxrss: the largest single process
    tree_rss_kb: int  # peak of the sampled sum of RSS over the program and its workers (0: too short)
    tree_pss_kb: int  # peak of the sampled sum of PSS while several processes ran (0: never several)
    tree_hwm_kb: int  # sum of each process's own peak RSS: an upper bound on the tree's peak
    exit_code: int

    @property
    def peak_kb(self) -> int:
        """The memory the run occupied at its peak, all its processes together, shared pages once."""
        return max(self.max_rss_kb, self.tree_pss_kb)


@dataclass
class Run:
    m: Measured
    transactions: int | None  # the tool's own count of requests


def measured(cmd: Sequence[str], stdout: Path, stderr: Path) -> Measured:
    """Run `cmd` with stdout and stderr to files; its wall and CPU time, peak RSS and exit code."""
    result = Path(str(stdout) + ".rusage")
    result.unlink(missing_ok=True)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", _MEASURER, str(result), str(SAMPLE_S), *cmd],
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            p.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the measurer and the program it runs
            p.wait()
            raise RuntimeError(f"{cmd[0]} still running after {RUN_TIMEOUT_S} s: killed") from None
    wall, cpu, rss, tree_rss, tree_pss, hwm, rc = result.read_text().split()
    result.unlink()
    return Measured(float(wall), float(cpu), int(rss), int(tree_rss), int(tree_pss), int(hwm), int(rc))


def pcapwatch_exe() -> str:
    beside = Path(sys.executable).parent / "pcapwatch"
    for p in (beside, REPO / ".venv" / "bin" / "pcapwatch"):
        if p.exists():
            return str(p)
    found = shutil.which("pcapwatch")
    if found is None:
        raise SystemExit("pcapwatch not found: run with the project venv's python")
    return found


def load_gt_tshark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gt_tshark", GT_TSHARK)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {GT_TSHARK}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_pcapwatch(capture: str, port: int | None, tmp: Path, extra: Sequence[str] = ()) -> Run:
    cmd = [pcapwatch_exe(), "read", capture, "-o", os.devnull, "--stats", "json", "--no-progress", *extra]
    m = measured(cmd, tmp / "pcapwatch.out", tmp / "pcapwatch.err")
    n = None
    for line in reversed((tmp / "pcapwatch.err").read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            n = json.loads(line)["transactions"]
            break
    return Run(m, n)


def run_tshark(capture: str, port: int | None, tmp: Path, extra: Sequence[str] = ()) -> Run:
    gt = load_gt_tshark()
    m = measured(gt.tshark_cmd(capture, port), tmp / "tshark.out", tmp / "tshark.err")
    col = gt.FIELDS.index("http.request.method")
    n = 0
    with open(tmp / "tshark.out", "rb") as f:
        for raw in f:
            cols = raw.rstrip(b"\n").split(b"\t")
            if len(cols) > col and cols[col]:
                n += cols[col].count(gt.AGG.encode()) + 1  # pipelined requests in one frame, as gt_tshark
    return Run(m, n)


def run_httpry(capture: str, port: int | None, tmp: Path, extra: Sequence[str] = ()) -> Run:
    cmd = ["httpry", "-q", "-r", capture] + ([f"tcp port {port}"] if port else [])
    m = measured(cmd, tmp / "httpry.out", tmp / "httpry.err")
    n = 0
    with open(tmp / "httpry.out", "rb") as f:
        for raw in f:
            cols = raw.split(b"\t", 4)
            if len(cols) > 3 and cols[3] == b">":  # direction: > request, < response
                n += 1
    return Run(m, n)


# Each takes (capture, port, temp dir, extra options for that tool).
RUNNERS: dict[str, Callable[[str, int | None, Path, Sequence[str]], Run]] = {
    "pcapwatch": run_pcapwatch, "tshark": run_tshark, "httpry": run_httpry}


# ---------------------------------------------------------------------------------------------
# the benchmark


def bench(capture: str, port: int | None, tools: Sequence[str], repeat: int,
          log: Callable[[str], None] = print, pcapwatch_args: Sequence[str] = ()) -> dict[str, Any]:
    """Run every tool `repeat` times (interleaved) on a warm cache; medians and ratios."""
    size = os.path.getsize(capture)
    man = capture_complete(capture)
    packets = packet_count(capture, man)
    log(f"warming the page cache: {size / 1e6:,.1f} MB read in {warm(capture):.2f} s")
    load_before = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {t: [] for t in tools}
    with tempfile.TemporaryDirectory(prefix="pcapwatch-bench.") as d:
        for i in range(repeat):
            for tool in tools:
                r = RUNNERS[tool](capture, port, Path(d), pcapwatch_args if tool == "pcapwatch" else ())
                runs[tool].append(r)
                m = r.m
                log(f"run {i + 1}/{repeat} {tool}: {m.wall_s:.2f} s ({m.cpu_s:.2f} s CPU), peak "
                    f"{_mb(m.peak_kb):,.0f} MB (largest process {_mb(m.max_rss_kb):,.0f} MB, summed RSS "
                    f"{_mb(m.tree_rss_kb):,.0f} MB, summed PSS {_mb(m.tree_pss_kb):,.0f} MB), "
                    f"{r.transactions} transactions, exit {m.exit_code}")
    results: dict[str, Any] = {}
    for tool, rs in runs.items():
        wall = statistics.median(r.m.wall_s for r in rs)
        n = rs[0].transactions
        results[tool] = {
            "wall_s": round(wall, 3),
            "best_wall_s": round(min(r.m.wall_s for r in rs), 3),  # least disturbed by other load
            "cpu_s": round(statistics.median(r.m.cpu_s for r in rs), 3),
            "mb_per_s": round(size / 1e6 / wall, 2),
            "packets_per_s": round(packets / wall) if packets else None,
            "transactions": n,
            "transactions_per_s": round(n / wall) if n is not None else None,
            "peak_rss_mb": _mb(statistics.median(r.m.peak_kb for r in rs)),
            "largest_process_rss_mb": _mb(statistics.median(r.m.max_rss_kb for r in rs)),
            "summed_rss_mb": _mb(statistics.median(r.m.tree_rss_kb for r in rs)),
            "summed_pss_mb": _mb(statistics.median(r.m.tree_pss_kb for r in rs)),
            "sum_of_process_peaks_mb": _mb(statistics.median(r.m.tree_hwm_kb for r in rs)),
            "exit_codes": sorted({r.m.exit_code for r in rs}),
            "transactions_all_runs": sorted({r.transactions for r in rs}, key=lambda x: (x is None, x)),
            "runs_wall_s": [round(r.m.wall_s, 3) for r in rs],
        }
    ratios: dict[str, Any] = {}
    if "pcapwatch" in results:
        pw = results["pcapwatch"]
        for other in tools:
            if other != "pcapwatch":
                o = results[other]
                ratios[f"vs_{other}"] = {
                    "speedup": round(o["wall_s"] / pw["wall_s"], 2),  # > 1: pcapwatch is faster
                    "cpu_speedup": round(o["cpu_s"] / pw["cpu_s"], 2),
                    "rss_ratio": round(pw["peak_rss_mb"] / o["peak_rss_mb"], 2),  # < 1: pcapwatch is smaller
                }
    return {"capture": os.path.realpath(capture), "bytes": size, "packets": packets, "port": port,
            "access_log_lines": access_log_lines(capture), "repeat": repeat, "page_cache": "warm",
            "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)], "pcapwatch_args": list(pcapwatch_args),
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "tools": results, "ratios": ratios}


def table(res: dict[str, Any]) -> str:
    pk = f"{res['packets']:,} packets" if res["packets"] else "packets unknown"
    acc = f", nginx access log {res['access_log_lines']:,} requests" if res["access_log_lines"] is not None else ""
    lines = [f"{res['capture']}: {res['bytes'] / 1e6:,.1f} MB, {pk}{acc}",
             f"median of {res['repeat']} run(s), warm page cache, {res['cpus']} CPUs; peak RSS: the child's "
             f"wait4 ru_maxrss, or with worker processes their PSS summed every {SAMPLE_S} s if larger",
             f"load average before/after: {res['loadavg'][0]:.2f} / {res['loadavg'][1]:.2f} "
             "(above 0.5 before: other work shared the CPUs)",
             *([f"pcapwatch read options: {' '.join(res['pcapwatch_args'])}"] if res["pcapwatch_args"] else []),
             "",
             f"{'tool':<10} {'wall s':>9} {'best s':>8} {'CPU s':>8} {'MB/s':>8} {'packets/s':>11} {'trans/s':>9} "
             f"{'transactions':>13} {'peak RSS MB':>12}"]
    for tool, r in res["tools"].items():
        lines.append(f"{tool:<10} {r['wall_s']:>9.2f} {r['best_wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
                     f"{r['mb_per_s']:>8.1f} {_num(r['packets_per_s']):>11} {_num(r['transactions_per_s']):>9} "
                     f"{_num(r['transactions']):>13} {r['peak_rss_mb']:>12,.1f}")
    for name, q in res["ratios"].items():
        other = name[3:]
        lines.append(f"pcapwatch vs {other}: {q['speedup']:.2f}x the speed "
                     f"({'faster' if q['speedup'] >= 1 else 'slower'}; CPU time {q['cpu_speedup']:.2f}x), "
                     f"{q['rss_ratio']:.2f}x the peak RSS")
    return "\n".join(lines) + "\n"


def _mb(kib: float) -> float:
    return round(kib / 1024, 1)


def _num(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


# ---------------------------------------------------------------------------------------------
# profile


def profile(capture: str, out_dir: Path, top: int = PROFILE_TOP) -> str:
    """py-spy `pcapwatch read`; the top functions by own time (leaf samples) and by total time."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        raise SystemExit("py-spy is not installed: <venv>/bin/pip install py-spy (not a project dependency)")
    raw = out_dir / "pcapwatch.pyspy.txt"
    read = [pcapwatch_exe(), "read", capture, "-o", os.devnull, "--no-progress"]
    # One process, so every sample is real work (a parent merging workers' output mostly waits).
    if "--workers" in subprocess.run([*read[:2], "--help"], capture_output=True, text=True).stdout:
        read += ["--workers", "1"]
    cmd = [spy, "record", "--format", "raw", "--function", "--nonblocking", "--rate", str(PROFILE_HZ),
           "-o", str(raw), "--", *read]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=RUN_TIMEOUT_S)
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"py-spy of `{' '.join(read[1:])}`: {samples:,} samples at {PROFILE_HZ} Hz; raw stacks in {raw}", "",
           f"top {top} by own time:", f"{'own %':>7} {'total %':>8}  function"]
    for f, n in own.most_common(top):
        out.append(f"{100 * n / samples:>7.1f} {100 * total[f] / samples:>8.1f}  {f}")
    return "\n".join(out) + "\n"


def _frame(f: str) -> str:
    """'feed (analyzers/pipeline.py:27)' -> 'feed (analyzers/pipeline.py)', paths relative to the repo."""
    name, _, where = f.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for root in (str(REPO) + os.sep, sys.prefix + os.sep):
        path = path.replace(root, "")
    return f"{name} ({path})"


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--capture", metavar="FILE", help="benchmark this existing capture")
    src.add_argument("--make", type=int, metavar="SIZE_MB",
                     help="make (or reuse, if complete) a load capture of this size at MTU 1500; needs root")
    ap.add_argument("--out", metavar="FILE", help=f"where --make writes (default {BENCH_DIR}/load1500-SIZEmb.pcap)")
    ap.add_argument("--force", action="store_true", help="with --make: regenerate even if a complete one exists")
    ap.add_argument("--port", type=int, help="HTTP port (default: from the capture's manifest)")
    ap.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per tool; medians (default 3)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated (default %(default)s)")
    ap.add_argument("--pcapwatch-args", default="", metavar="ARGS",
                    help="extra options for `pcapwatch read`, e.g. '--workers 1'")
    ap.add_argument("--profile", action="store_true",
                    help="also py-spy one pcapwatch run and print the top functions by own time")
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON result here")
    a = ap.parse_args(argv)
    tools = [t for t in a.tools.split(",") if t]
    bad = [t for t in tools if t not in RUNNERS]
    if bad or a.repeat < 1:
        ap.error(f"unknown tool(s) {bad}; choose from {','.join(ALL_TOOLS)}" if bad else "--repeat must be >= 1")
    for t in tools:
        if t != "pcapwatch" and shutil.which(t) is None and not Path("/usr/sbin", t).exists():
            ap.error(f"{t} is not installed")

    def log(msg: str) -> None:
        sys.stderr.write(f"[bench] {msg}\n")

    made: dict[str, Any] = {}
    if a.make is not None and os.geteuid() != 0:
        ap.error("--make runs mkcapture.sh, which needs root (tcpdump on lo, a network namespace)")
    if a.make is not None:
        out = Path(a.out) if a.out else default_capture(a.make)
        if a.force:
            made = make_capture(out, a.make, log)
        else:
            made = ensure_capture(out, a.make, log)
        capture = str(out)
    else:
        capture = a.capture
        if not os.path.isfile(capture):
            ap.error(f"{capture}: no such file")
    port = a.port
    if port is None:
        man = sidecar(capture, ".manifest.json")
        if man.is_file():
            port = json.loads(man.read_text()).get("port")
    res = bench(capture, port, tools, a.repeat, log, shlex.split(a.pcapwatch_args))
    if made.get("seconds") is not None:
        res["make_seconds"] = made["seconds"]
    sys.stdout.write(table(res))
    if made.get("seconds") is not None:
        sys.stdout.write(f"capture generated by mkcapture.sh in {made['seconds']:.1f} s\n")
    if a.profile:
        with tempfile.TemporaryDirectory(prefix="pcapwatch-prof.") as d:
            keep = BENCH_DIR if BENCH_DIR.is_dir() else Path(d)
            sys.stdout.write("\n" + profile(capture, keep))
    line = json.dumps(res, sort_keys=True)
    sys.stdout.write(line + "\n")
    if a.json_out:
        Path(a.json_out).write_text(line + "\n")
    failed = {t: r["exit_codes"] for t, r in res["tools"].items() if r["exit_codes"] != [0]}
    if failed:
        log(f"some runs exited non-zero: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
