"""The `pcapwatch` command as a user runs it: help, -o, --stats, pipes, the terminal-only output.

Counts are checked against facts about mix.pcap that do not come from pcapwatch: its manifest
(tcpdump's packet count, the file size) and a count of its TCP connections done here with struct.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import pcapgen as g
from helpers.env import corpus

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
# progress.PROGRESS_MIN_BYTES is 64 MiB and the line is first drawn after 0.5 s: this many copies of
# mix.pcap (13 MB each) pass the first and, read by one process (~1.4 s here), the second.
COPIES_FOR_PROGRESS = 24


def run(*args: str | Path, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PCAPWATCH, *map(str, args)], capture_output=True, timeout=180, **kw)


@pytest.fixture(scope="module")
def mix() -> Path:
    return corpus("local", "mix.pcap")


@pytest.fixture(scope="module")
def mix_stdout(mix: Path) -> bytes:
    p = run("read", mix)
    assert (p.stderr, p.returncode) == (b"", 0)
    return p.stdout


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads(corpus("local", "mix.manifest.json").read_text())


def tcp_conversations(path: Path) -> dict[frozenset[tuple[bytes, int]], list[int]]:
    """TCP flags of every packet, per connection (4-tuple), from an Ethernet µs pcap."""
    data = path.read_bytes()
    convs: dict[frozenset[tuple[bytes, int]], list[int]] = {}
    off = 24
    while off < len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        p = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        if struct.unpack_from(">H", p, 12)[0] == 0x0800:
            src, dst, t = p[26:30], p[30:34], 14 + (p[14] & 15) * 4
        else:  # IPv6 without extension headers, as on loopback
            src, dst, t = p[22:38], p[38:54], 54
        sport, dport = struct.unpack_from(">HH", p, t)
        convs.setdefault(frozenset([(src, sport), (dst, dport)]), []).append(p[t + 13])
    return convs


def tcp_payload_bytes(path: Path) -> int:
    """Sum of TCP payload lengths (IP length minus IP and TCP headers) in an Ethernet µs pcap."""
    data = path.read_bytes()
    total, off = 0, 24
    while off < len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        p = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        if struct.unpack_from(">H", p, 12)[0] == 0x0800:
            ihl = (p[14] & 15) * 4
            total += struct.unpack_from(">H", p, 16)[0] - ihl - (p[14 + ihl + 12] >> 4) * 4
        else:
            total += struct.unpack_from(">H", p, 18)[0] - (p[54 + 12] >> 4) * 4
    return total


# help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["read", "--help"]])
def test_help_mentions_exit_statuses_and_examples(argv: list[str]) -> None:
    p = run(*argv)
    assert p.returncode == 0 and p.stderr == b""
    text = p.stdout.decode()
    assert "exit status:" in text
    for line in ("0  every input was read completely", "1  some input could not be read or is corrupt",
                 "2  bad command line", "3  the output could not be written"):
        assert line in text, line
    assert "examples:" in text
    assert "pcapwatch read cap.pcap" in text
    assert "pcapwatch read -" in text


def test_bare_command_prints_help_and_exits_2() -> None:
    p = run()
    assert p.returncode == 2
    assert p.stdout.startswith(b"usage: pcapwatch")


def test_read_help_lists_options() -> None:
    text = run("read", "--help").stdout.decode()
    for opt in ("-o OUT, --output OUT", "--stats [{text,json}]", "--progress, --no-progress",
                "--max-connections N", "--idle-timeout SECONDS"):
        assert opt in text, opt


# output ----------------------------------------------------------------------------------------


def test_output_file_same_as_stdout(tmp_path: Path, mix: Path, mix_stdout: bytes) -> None:
    out = tmp_path / "out.jsonl"
    p = run("read", mix, "-o", out)
    assert (p.stdout, p.stderr, p.returncode) == (b"", b"", 0)
    assert out.read_bytes() == mix_stdout
    lines = mix_stdout.splitlines()
    assert len(lines) == 896  # 892 requests tshark sees, 2 garbage lines, 2 heads never finished
    assert all(json.loads(line)["pcap_file"] == "mix.pcap" for line in lines)


def test_output_unwritable(tmp_path: Path, mix: Path) -> None:
    missing = tmp_path / "no" / "out.jsonl"
    p = run("read", mix, "-o", missing)
    assert p.returncode == 3
    assert p.stderr.decode() == f"pcapwatch: error: cannot write {missing}: No such file or directory\n"


@pytest.mark.parametrize("how", ["-o", "stdout"])
def test_output_device_full(mix: Path, how: str) -> None:
    """A failed write is an output problem (exit 3, one line), not a read error of the input."""
    if how == "-o":
        p = run("read", mix, mix, "-o", "/dev/full")
    else:
        with open("/dev/full", "wb") as full:
            p = subprocess.run([*PCAPWATCH, "read", str(mix), str(mix)], stdout=full, stderr=subprocess.PIPE,
                               timeout=180)
    assert p.returncode == 3
    assert p.stderr.decode() == "pcapwatch: error: writing records failed: No space left on device\n"


def test_pipe_closed_early(mix: Path, mix_stdout: bytes) -> None:
    """`pcapwatch read f | head -1`: ends at once on SIGPIPE, quietly."""
    cmd = " ".join(shlex.quote(a) for a in [*PCAPWATCH, "read", str(mix)])
    p = subprocess.run(["bash", "-o", "pipefail", "-c", f"{cmd} | head -1"], capture_output=True, timeout=60)
    assert p.stdout == mix_stdout.splitlines(keepends=True)[0]
    assert p.stderr == b""
    assert p.returncode == 128 + signal.SIGPIPE  # killed by SIGPIPE, as `cat` would be

    proc = subprocess.Popen([*PCAPWATCH, "read", str(mix)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first == mix_stdout.splitlines(keepends=True)[0]
    assert err == b""
    assert proc.returncode == -signal.SIGPIPE


# --stats ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_json(mix: Path, mix_stdout: bytes) -> dict[str, Any]:
    p = run("read", mix, "--stats", "json")
    assert p.stdout == mix_stdout and p.returncode == 0
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_stats_json_counts(stats_json: dict[str, Any], mix: Path, mix_stdout: bytes,
                           manifest: dict[str, Any]) -> None:
    s = stats_json
    assert (s["files"], s["files_failed"]) == (1, 0)
    assert s["bytes"] == mix.stat().st_size == manifest["files"][0]["bytes"]
    assert s["frames"] == s["tcp_packets"] == manifest["capture_packets"] == 7042
    assert s["frames_skipped"] == {}
    assert s["transactions"] == len(mix_stdout.splitlines()) == 896  # 2 of them heads never finished
    assert s["connections"]["active"] == 0
    assert s["connections"]["not_http"] == 0
    assert s["http"] == {"pipeline_overflow": 0, "overflow_responses": 0, "tunnels": 0,
                         "tunnel_not_http": {"tls": 0, "http2": 0, "other": 0},
                         "not_http": {"tls": 0, "http2": 0, "other": 0}}
    assert s["tcp"]["gaps"] == 0 and s["tcp"]["gap_bytes"] == 0  # tcpdump dropped nothing
    assert manifest["tcpdump"]["dropped_by_kernel"] == 0
    assert s["tcp_payload_bytes"] == tcp_payload_bytes(mix) == 12_452_197


def test_stats_connection_counts_match_the_capture(stats_json: dict[str, Any], mix: Path) -> None:
    """Every connection in mix.pcap starts with a SYN (tcpdump ran before the clients) and ends with
    FINs or a RST: no connection is midstream, and each is counted once."""
    convs = tcp_conversations(mix)
    assert all(flags[0] & 0x02 for flags in convs.values())  # first packet is the SYN
    reset = sum(1 for flags in convs.values() if any(f & 0x04 for f in flags))
    c = stats_json["connections"]
    assert (c["connections"], c["midstream"], c["reset"], c["closed"]) == (
        len(convs), 0, reset, len(convs) - reset)
    assert (len(convs), reset) == (367, 6)


def test_stats_text_summary(mix: Path, mix_stdout: bytes, stats_json: dict[str, Any],
                            manifest: dict[str, Any]) -> None:
    p = run("read", mix, "--stats")
    assert p.stdout == mix_stdout and p.returncode == 0
    lines = p.stderr.decode().splitlines()
    labels = [line.split()[0] for line in lines]
    assert labels == ["files", "frames", "connections", "transactions", "tcp", "http", "anomalies"]
    text = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    s = stats_json
    mb = manifest["files"][0]["bytes"] / 1e6
    assert text["files"] == f"1 (0 with errors), {mb:,.1f} MB"
    assert text["frames"] == "7,042 (skipped: none)"
    assert text["transactions"] == f"{len(mix_stdout.splitlines()):,}" == "896"
    c = s["connections"]
    assert text["connections"].startswith(f"{c['connections']:,} (midstream {c['midstream']:,}, ")
    assert text["connections"].endswith("not HTTP 0: tls 0, http2 0, other 0)")
    assert text["http"] == "pipeline overflow 0 (answers after it 0), CONNECT tunnels parsed 0 (not HTTP inside: " \
                           "tls 0, http2 0, other 0)"
    assert f"retransmitted {s['tcp']['retransmitted_segments']:,}," in text["tcp"]
    assert "gaps 0 (0 bytes)" in text["tcp"]
    want_anomalies = ", ".join(f"{k} {v:,}" for k, v in s["anomalies"].items()) or "none"
    assert text["anomalies"] == want_anomalies
    assert all(re.match(r"^  \S+ +\S", line) for line in lines)


def test_stats_count_what_is_not_http_by_kind(tmp_path: Path) -> None:
    """A capture with a TLS connection, HTTP/2 with prior knowledge, a shell on port 80 and a CONNECT
    tunnel with HTTP inside: the records are the HTTP ones, the rest is counted by kind."""
    segs: list[g.Segment] = []
    t0 = 1_700_000_000 * 10**9
    for n, (client, server) in enumerate([
        (bytes.fromhex("16030100f4010000f00303") + bytes(64), bytes.fromhex("160303003d020000390303") + bytes(64)),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
         b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"),
        (b"id\n", b"uid=0(root) gid=0(root)\n"),
    ]):
        c = g.Conn(segs, n + 1)
        c.open(t0 + n * 10**8)
        t = c.send(t0 + n * 10**8 + 10_000, True, client)
        c.close(c.send(t + 1000, False, server) + 1000)
    tun = g.Conn(segs, 9, 3128)
    tun.open(t0 + 10**9)
    t = tun.send(t0 + 10**9 + 10_000, True, b"CONNECT in.test:80 HTTP/1.1\r\n\r\n")
    t = tun.send(t + 1000, False, b"HTTP/1.1 200 Connection established\r\n\r\n")
    t = tun.send(t + 1000, True, b"GET /inside HTTP/1.1\r\nHost: in.test\r\n\r\n")
    tun.close(tun.send(t + 1000, False, b"HTTP/1.1 204 No Content\r\n\r\n") + 1000)
    segs.sort(key=lambda s: s.ts_ns)
    cap = tmp_path / "kinds.pcap"
    g.write_pcap(cap, g.LINKTYPE_ETHERNET, g.frames(segs))
    p = run("read", cap, "--stats", "json")
    assert p.returncode == 0
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(r["method"], r["host"], r["uri"], r["status_code"], r["flags"]) for r in records] == [
        ("CONNECT", None, "in.test:80", 200, ["tunnel"]), ("GET", "in.test:80", "/inside", 204, ["tunnel"])]
    s = json.loads(p.stderr.decode().splitlines()[-1])
    assert s["http"]["not_http"] == {"tls": 1, "http2": 1, "other": 1}
    assert (s["http"]["tunnels"], s["connections"]["not_http"], s["transactions"]) == (1, 3, 2)


# terminal-only output --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [[], ["--workers", "1"]], ids=["default", "one-process"])
def test_no_progress_or_summary_when_stderr_is_not_a_terminal(mix: Path, workers: list[str]) -> None:
    p = subprocess.run([*PCAPWATCH, "read", *workers, *[str(mix)] * COPIES_FOR_PROGRESS],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180)
    assert p.returncode == 0
    assert p.stderr == b""


def read_pty(argv: list[str]) -> tuple[str, int]:
    """Run with stderr on a pseudo-terminal; stdout discarded. Returns (terminal text, exit status)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode(errors="replace"), proc.returncode


def test_terminal_gets_progress_and_summary(mix: Path) -> None:
    """The control for the test above: the same run on a terminal shows both."""
    text, code = read_pty([*PCAPWATCH, "read", "--workers", "1", *[str(mix)] * COPIES_FOR_PROGRESS])
    assert code == 0
    assert re.search(r"\r[\d,]+ MB / [\d,]+ MB +[\d.]+% +[\d.]+ MB/s", text), text
    assert f"files         {COPIES_FOR_PROGRESS} (0 with errors)" in text
    assert "transactions" in text


def test_terminal_no_progress_when_turned_off(mix: Path) -> None:
    text, code = read_pty([*PCAPWATCH, "read", "--workers", "1", "--no-progress", *[str(mix)] * COPIES_FOR_PROGRESS])
    assert code == 0
    assert "\r" not in text.replace("\r\n", "\n")
    assert "transactions" in text
