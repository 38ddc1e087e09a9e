"""`pcapwatch read` on broken inputs: one line per problem file, no traceback, good files intact.

The valid inputs are the first records of the corpus capture mix.pcap cut into files here (parsed
with struct, not with the code under test). Each bad file is read alone and between two good files
that continue one another (one capture, rotated): the good files' records must be exactly those of
reading the good files alone, and the exit status says whether any input had errors.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.env import corpus, need_tool
from helpers.pcapgen import split_pcap

from watcher.cli import main

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
LINE = re.compile(r"^pcapwatch: ")
Capture = tuple[bytes, list[bytes]]  # (24-byte global header, raw records with their 16-byte headers)


@pytest.fixture(scope="module")
def mix() -> Capture:
    return split_pcap(corpus("local", "mix.pcap").read_bytes())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run(*args: str | Path, **kw: Any) -> tuple[list[dict[str, Any]], list[str], int]:
    """`pcapwatch read ARGS` as a subprocess: (records, stderr lines, exit status)."""
    p = subprocess.run([*PCAPWATCH, "read", *map(str, args)], capture_output=True, timeout=120, **kw)
    err = p.stderr.decode()
    assert "Traceback" not in err, err
    assert "Traceback" not in p.stdout.decode(errors="replace")
    return [json.loads(line) for line in p.stdout.splitlines()], err.splitlines(), p.returncode


@pytest.fixture
def good(tmp_path: Path, mix: Capture) -> tuple[Path, Path, list[dict[str, Any]]]:
    """good1 (records 0-19) and good2 (20-59) of one capture, and what reading both gives."""
    head, recs = mix
    g1 = write(tmp_path / "good" / "good1.pcap", head + b"".join(recs[:20]))
    g2 = write(tmp_path / "good" / "good2.pcap", head + b"".join(recs[20:60]))
    records, err, code = run(g1, g2)
    assert (err, code) == ([], 0)
    # Reading the two as one capture is reading the 60 records in one file (only pcap_file differs).
    whole, _, _ = run(write(tmp_path / "whole" / "whole.pcap", head + b"".join(recs[:60])))
    assert [dict(r, pcap_file=None) for r in records] == [dict(r, pcap_file=None) for r in whole]
    # 9 transactions, and the head the 60th record cuts, written as read (truncated, incomplete_head)
    assert len(records) == 10 and records[-1]["anomalies"] == ["incomplete_head"]
    return g1, g2, records


def big_record_gzip_cut(head: bytes) -> bytes:
    """A gzip file cut before its first pcap record is complete: nothing in it is readable."""
    rec = struct.pack("<IIII", 1, 0, 4000, 4000) + random.Random(3).randbytes(4000)
    gz = gzip.compress(head + rec)
    return gz[:len(gz) // 2]


def corrupt_gzip_header(data: bytes) -> bytes:
    gz = bytearray(gzip.compress(data))
    gz[2] = 7  # compression method: only 8 (deflate) exists
    return bytes(gz)


def garbage_after_header(head: bytes) -> bytes:
    return head + random.Random(8).randbytes(3000)


# name: (file name, contents from (header, records), offset named in the error or None for gzip)
BAD: dict[str, tuple[str, Callable[[Capture], bytes], int | None]] = {
    "bad_magic": ("bad.pcap", lambda c: b"NOTPCAP!" + bytes(200), 0),
    "empty": ("empty.pcap", lambda c: b"", 0),
    "truncated_global_header": ("short.pcap", lambda c: c[0][:10], 0),
    "truncated_record": ("cut.pcap", lambda c: c[0] + c[1][0][:40], 24),
    "caplen_7fffffff": ("huge.pcap", lambda c: c[0] + struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 0x7FFFFFFF)
                        + bytes(100), 24),
    "random_bytes": ("random.pcap", lambda c: random.Random(7).randbytes(5000), 0),
    "garbage_after_header": ("garbage.pcap", lambda c: garbage_after_header(c[0]), 24),
    "corrupt_gzip": ("corrupt.pcap.gz", lambda c: corrupt_gzip_header(c[0] + b"".join(c[1][:20])), None),
    "truncated_gzip": ("cut.pcap.gz", lambda c: big_record_gzip_cut(c[0]), None),
}


def error_line(path: Path, offset: int | None) -> re.Pattern[str]:
    where = rf"offset {offset}: " if offset is not None else r"offset \d+: "
    return re.compile(rf"^pcapwatch: error: {re.escape(str(path))}: {where}\S.*$")


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_alone(case: str, tmp_path: Path, mix: Capture) -> None:
    name, make, offset = BAD[case]
    bad = write(tmp_path / name, make(mix))
    records, err, code = run(bad)
    assert records == []
    assert len(err) == 1, err
    assert error_line(bad, offset).match(err[0]), err[0]
    assert code == 1


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_between_good_files(case: str, tmp_path: Path, mix: Capture,
                                     good: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    g1, g2, expected = good
    name, make, offset = BAD[case]
    bad = write(tmp_path / name, make(mix))
    records, err, code = run(g1, bad, g2)
    assert records == expected
    assert len(err) == 1, err
    assert error_line(bad, offset).match(err[0]), err[0]
    assert code == 1


def test_bad_file_messages_say_what_went_wrong(tmp_path: Path, mix: Capture) -> None:
    """The problem, in words a user can act on."""
    want = {
        "bad_magic": "not a pcap or pcapng file (starts with 4e4f5450)",
        "empty": "the file is empty (0 bytes)",
        "truncated_global_header": "pcap header cut short: 10 of 24 bytes",
        "truncated_record": "the last record is cut short (40 bytes at the end of the file)",
        "caplen_7fffffff": "record claims 2147483647 captured bytes",
        "corrupt_gzip": "gzip data is corrupt or cut short",
        "truncated_gzip": "gzip data is corrupt or cut short",
    }
    for case, text in want.items():
        name, make, _ = BAD[case]
        bad = write(tmp_path / case / name, make(mix))
        _, err, _ = run(bad)
        assert text in err[0], (case, err)


def test_header_only_is_a_note_not_an_error(tmp_path: Path, mix: Capture,
                                            good: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    """tcpdump writes the header before any packet: an empty capture is valid, worth one note."""
    g1, g2, expected = good
    empty = write(tmp_path / "header-only.pcap", mix[0])
    assert run(empty) == ([], [f"pcapwatch: {empty}: no packets in this file (header only)"], 0)
    records, err, code = run(g1, empty, g2)
    assert (records, err, code) == (expected, [f"pcapwatch: {empty}: no packets in this file (header only)"], 0)


def test_missing_directory(tmp_path: Path, good: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    g1, g2, expected = good
    missing = tmp_path / "no" / "such" / "dir"
    line = f"pcapwatch: error: {missing}: cannot open: No such file or directory"
    assert run(missing) == ([], [line], 1)
    assert run(g1, missing, g2) == (expected, [line], 1)


def test_unreadable_file(tmp_path: Path, good: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    """chmod 000; as root the read permission check is bypassed, so drop the capabilities that do it."""
    g1, g2, expected = good
    locked = write(tmp_path / "locked.pcap", g1.read_bytes())
    locked.chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        need_tool("setpriv")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search", "--"]
    line = f"pcapwatch: error: {locked}: cannot open: Permission denied"
    for args, want in (([locked], []), ([g1, locked, g2], expected)):
        p = subprocess.run([*prefix, *PCAPWATCH, "read", *map(str, args)], capture_output=True, timeout=60)
        records = [json.loads(line) for line in p.stdout.splitlines()]
        assert (records, p.stderr.decode().splitlines(), p.returncode) == (want, [line], 1)


# partly readable files: everything before the problem is processed -----------------------------


def same_name_plain(tmp_path: Path, name: str, data: bytes) -> list[dict[str, Any]]:
    """Records of `data` read as a file called `name` (records carry the file name)."""
    records, _, _ = run(write(tmp_path / "expected" / name, data))
    return records


def test_truncated_record_after_valid_records(tmp_path: Path, mix: Capture) -> None:
    head, recs = mix
    bad = write(tmp_path / "cut.pcap", head + b"".join(recs[:20]) + recs[20][:50])
    expected = same_name_plain(tmp_path, "cut.pcap", head + b"".join(recs[:20]))
    records, err, code = run(bad)
    assert len(expected) == 3
    assert records == expected
    assert err == [f"pcapwatch: error: {bad}: offset {24 + sum(map(len, recs[:20]))}: the last record is cut "
                   "short (50 bytes at the end of the file): tcpdump was stopped while writing, or the file "
                   "was truncated; the rest of this file is skipped"]
    assert code == 1


def test_garbage_after_valid_records(tmp_path: Path, mix: Capture) -> None:
    head, recs = mix
    bad = write(tmp_path / "g.pcap", garbage_after_header(head + b"".join(recs[:20])))
    expected = same_name_plain(tmp_path, "g.pcap", head + b"".join(recs[:20]))
    records, err, code = run(bad)
    assert records == expected
    assert len(err) == 1
    assert error_line(bad, 24 + sum(map(len, recs[:20]))).match(err[0]), err
    assert code == 1


def test_gzip_crc_error_keeps_the_decompressed_records(tmp_path: Path, mix: Capture) -> None:
    """A bad CRC is only found after all the data was decompressed: all of it is readable."""
    head, recs = mix
    plain = head + b"".join(recs[:60])
    gz = bytearray(gzip.compress(plain))
    gz[-8] ^= 0xFF  # the CRC32 in the trailer
    bad = write(tmp_path / "crc.pcap.gz", bytes(gz))
    expected = same_name_plain(tmp_path, "crc.pcap.gz", plain)
    records, err, code = run(bad)
    assert len(expected) == 10  # 9 transactions and the head the 60th record cuts
    assert records == expected
    assert len(err) == 1 and error_line(bad, None).match(err[0]) and "CRC" in err[0], err
    assert code == 1


def test_truncated_gzip_keeps_the_readable_prefix(tmp_path: Path, mix: Capture) -> None:
    """`tcpdump -z gzip` still compressing, or a copy cut short: the records decompressed are used."""
    head, recs = mix
    plain = head + b"".join(recs[:60])
    gz = gzip.compress(plain)
    cut = gz[:len(gz) * 7 // 10]
    prefix = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)
    assert 24 < len(prefix) < len(plain)
    bad = write(tmp_path / "cut.pcap.gz", cut)
    expected = same_name_plain(tmp_path, "cut.pcap.gz", prefix)
    records, err, code = run(bad)
    assert len(expected) >= 6
    assert records == expected
    assert len(err) == 1 and error_line(bad, None).match(err[0]), err
    assert code == 1


# exit status -----------------------------------------------------------------------------------


def test_exit_status(tmp_path: Path, mix: Capture, good: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    g1, g2, _ = good
    bad = write(tmp_path / "bad.pcap", b"NOTPCAP!")
    assert run(g1, g2)[2] == 0
    assert run(g1, bad)[2] == 1
    assert run(bad, bad)[1:] == ([f"pcapwatch: error: {bad}: offset 0: not a pcap or pcapng file (starts with "
                                  "4e4f5450); the rest of this file is skipped"] * 2, 1)
    for usage in ([], ["--stats", "xml", str(g1)], ["--max-connections", "0", str(g1)],
                  ["--idle-timeout", "soon", str(g1)], ["--no-such-option", str(g1)]):
        p = subprocess.run([*PCAPWATCH, "read", *usage], capture_output=True, timeout=60)
        assert p.returncode == 2, usage
        assert p.stdout == b""
        assert p.stderr.startswith(b"usage: pcapwatch") and b"Traceback" not in p.stderr
    p = subprocess.run([*PCAPWATCH, "frobnicate"], capture_output=True, timeout=60)
    assert p.returncode == 2


# light fuzzing ---------------------------------------------------------------------------------

FUZZ_CASES = 300


def mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One random damage: bit flips, a cut, inserted bytes or an overwritten 32-bit word."""
    b = bytearray(data)
    kind = rng.choice(["flip", "cut", "insert", "word"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "cut":
        del b[rng.randrange(len(b)):]
    elif kind == "insert":
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    else:
        i = rng.randrange(0, max(1, len(b) - 4)) & ~3 if rng.random() < 0.5 else rng.randrange(len(b) - 4)
        b[i:i + 4] = rng.randbytes(4)
    return kind, bytes(b)


@contextlib.contextmanager
def sigpipe_kept() -> Iterator[None]:
    """`pcapwatch read` sets SIGPIPE to its default; keep pytest's own setting."""
    old = signal.getsignal(signal.SIGPIPE)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, old)


def main_in_process(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["read", str(path)])
    for line in out.getvalue().splitlines():
        json.loads(line)
    return code, err.getvalue()


def to_pcapng(capture: Capture) -> bytes:
    """The same records as pcapng (SHB, one Ethernet IDB, EPBs), built field by field."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)), block(1, struct.pack("<HHI", 1, 0, 0))]
    for rec in capture[1]:
        sec, usec, caplen, origlen = struct.unpack_from("<IIII", rec)
        ticks = sec * 10**6 + usec
        out.append(block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, caplen, origlen) + rec[16:]))
    return b"".join(out)


def fuzz(tmp_path: Path, valid: bytes, seed: int, suffix: str) -> None:
    """FUZZ_CASES seeded mutations run in-process (an escaping exception is what a traceback would be),
    then every 30th as a real process."""
    rng = random.Random(seed)
    failures: list[str] = []
    codes: dict[int, int] = {}
    sample: list[Path] = []
    with sigpipe_kept():
        for n in range(FUZZ_CASES):
            kind, data = mutate(rng, valid)
            path = write(tmp_path / f"m{n:03d}{suffix}", data)
            try:
                code, err = main_in_process(path)
            except Exception as e:
                failures.append(f"#{n} {kind}: {type(e).__name__}: {e}")
                continue
            codes[code] = codes.get(code, 0) + 1
            bad_lines = [line for line in err.splitlines() if not LINE.match(line)]
            if code not in (0, 1) or bad_lines:
                failures.append(f"#{n} {kind}: exit {code}, stderr {err!r}")
            if n % 30 == 0:
                sample.append(path)
    assert not failures, f"{len(failures)} of {FUZZ_CASES} failed:\n" + "\n".join(failures)
    assert codes.get(1, 0) > 0 and codes.get(0, 0) > 0  # both outcomes were exercised
    for path in sample:
        p = subprocess.run([*PCAPWATCH, "read", str(path)], capture_output=True, timeout=60)
        assert p.returncode in (0, 1)
        assert b"Traceback" not in p.stderr
        assert all(LINE.match(line) for line in p.stderr.decode().splitlines())


def test_fuzz_pcap(tmp_path: Path, mix: Capture) -> None:
    head, recs = mix
    fuzz(tmp_path, head + b"".join(recs[:20]), 20240611, ".pcap")


def test_fuzz_pcapng(tmp_path: Path, mix: Capture) -> None:
    fuzz(tmp_path, to_pcapng((mix[0], mix[1][:20])), 20240612, ".pcapng")
