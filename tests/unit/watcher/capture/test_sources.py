"""watcher/sources.py: gzip read transparently, stdin, and directories in the order tcpdump wrote them.

Small captures are built here with struct (timestamps chosen per test); the stdin and directory
end-to-end checks use the first records of the corpus capture mix.pcap so real records come out.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import pcapgen as g
from helpers.env import corpus, file_modes_bind_root, read_records

from analyzers.pipeline import split_records
from watcher.capture import sources
from watcher.capture.pcapfile import CaptureError, Frame
from watcher.capture.sources import DEFAULT_GUNZIP, Capture, GunzipLimits, RangeReader, Records, expand

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
NOTE = "skipped, not a capture file"


def pcap(*timestamps: float, payload: bytes = b"\x00" * 14) -> bytes:
    """A µs pcap (Ethernet) with one record per timestamp."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts in timestamps:
        sec, usec = divmod(round(ts * 1e6), 10**6)
        out.append(struct.pack("<IIII", sec, usec, len(payload), len(payload)) + payload)
    return b"".join(out)


def pcapng(*timestamps: float) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)), block(1, struct.pack("<HHI", 1, 0, 0))]
    for ts in timestamps:
        t = round(ts * 1e6)
        out.append(block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, 16, 16) + bytes(16)))
    return b"".join(out)


def frames(path: Path | str) -> list[tuple[int, list[Frame]]]:
    """Frames by link type, one batch per frame: batch boundaries follow read sizes, which gzip changes."""
    cap = Capture(str(path))
    try:  # small reads: many parse calls
        return [(link, [f]) for batches in cap.batches(chunk=7) for link, fs in batches for f in fs]
    finally:
        cap.close()


def names(files: list[str]) -> list[str]:
    return [Path(f).name for f in files]


# gzip ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [pcap, pcapng])
def test_gzip_read_transparently(tmp_path: Path, make: Any) -> None:
    data = make(1.5, 2.25, 3.0)
    plain = tmp_path / "cap.pcap"
    plain.write_bytes(data)
    gz = tmp_path / "cap.pcap.gz"
    gz.write_bytes(gzip.compress(data))
    disguised = tmp_path / "cap2.pcap"  # tcpdump -z gzip output renamed: found by content, not name
    disguised.write_bytes(gzip.compress(data))
    want = frames(plain)
    assert [f[1] for _, fs in want for f in fs] == [1.5, 2.25, 3.0]
    assert frames(gz) == want
    assert frames(disguised) == want
    assert Capture(str(gz)).compressed and Capture(str(disguised)).compressed
    assert not Capture(str(plain)).compressed


def test_gzip_offsets_are_of_the_uncompressed_capture(tmp_path: Path) -> None:
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(pcap(1, 2)))
    assert [f[0] for _, fs in frames(gz) for f in fs] == [24, 24 + 16 + 14]


# stdin -----------------------------------------------------------------------------------------


def mix_prefix(n: int) -> bytes:
    data = corpus("local", "mix.pcap").read_bytes()
    off = 24
    for _ in range(n):
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return data[:off]


def run(*args: str, **kw: Any) -> tuple[list[dict[str, Any]], str, int]:
    p = subprocess.run([*PCAPWATCH, "read", *args], capture_output=True, timeout=120, **kw)
    return [json.loads(line) for line in p.stdout.splitlines()], p.stderr.decode(), p.returncode


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_stdin(tmp_path: Path, compressed: bool) -> None:
    data = mix_prefix(60)
    ref = tmp_path / "ref.pcap"
    ref.write_bytes(data)
    want, err, code = run(str(ref))
    # 9 transactions, and a head the prefix cuts: written as read (`GET /1k.bin?sp`, truncated)
    assert (len(want), err, code) == (10, "", 0)
    assert (want[-1]["uri"], want[-1]["anomalies"], want[-1]["reason"]) == ("/1k.bin?sp", ["incomplete_head"],
                                                                          "capture_end")
    want = [dict(r, pcap_file="-") for r in want]  # stdin's records name "-"
    body = gzip.compress(data) if compressed else data
    piped = run("-", input=body)  # a pipe, as from `tcpdump -w - | pcapwatch read -`
    assert piped == (want, "", 0)
    src = tmp_path / "stdin.bin"
    src.write_bytes(body)
    with src.open("rb") as f:  # a redirected file: `pcapwatch read - < cap.pcap`
        assert run("-", stdin=f) == (want, "", 0)


def test_stdin_slow_writer(tmp_path: Path) -> None:
    """A capture arriving in pieces (tcpdump -U through a pipe) gives the same records."""
    data = mix_prefix(60)
    want, _, _ = run("-", input=data)
    p = subprocess.Popen([*PCAPWATCH, "read", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdin is not None
        for i in range(0, len(data), 40_000):
            p.stdin.write(data[i:i + 40_000])
            p.stdin.flush()
            time.sleep(0.02)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert ([json.loads(line) for line in out.splitlines()], err, p.returncode) == (want, b"", 0)


def test_stdin_gzip_magic_split_across_reads() -> None:
    """The gzip magic may arrive one byte at a time through a pipe: the format is decided on two
    bytes, however many reads that takes."""
    data = mix_prefix(60)
    want, _, _ = run("-", input=data)
    body = gzip.compress(data)
    p = subprocess.Popen([*PCAPWATCH, "read", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdin is not None
        p.stdin.write(body[:1])
        p.stdin.flush()
        time.sleep(0.3)  # the reader's first read returns the lone first byte
        p.stdin.write(body[1:])
        p.stdin.flush()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (err.decode(), p.returncode) == ("", 0)
    assert [json.loads(line) for line in out.splitlines()] == want


# directories -----------------------------------------------------------------------------------


def test_dir_tcpdump_C_names(tmp_path: Path) -> None:
    """`-C` without `-W`: cap.pcap, cap.pcap1 ... cap.pcap12, numbers unpadded (not name order)."""
    order = ["cap.pcap"] + [f"cap.pcap{i}" for i in range(1, 13)]
    for i, name in reversed(list(enumerate(order))):  # created newest first: no help from mtime
        (tmp_path / name).write_bytes(pcap(1000 + i, 1000.5 + i))
    files, notes = expand([str(tmp_path)])
    assert names(files) == order
    assert files[0] == str(tmp_path / "cap.pcap")
    assert notes == []


def test_dir_same_first_timestamp_natural_order(tmp_path: Path) -> None:
    """Files without a first record (header only) keep tcpdump's numbering: 2 before 10."""
    for name in ["cap.pcap10", "cap.pcap2", "cap.pcap", "cap.pcap1"]:
        (tmp_path / name).write_bytes(pcap())
    assert names(expand([str(tmp_path)])[0]) == ["cap.pcap", "cap.pcap1", "cap.pcap2", "cap.pcap10"]


def test_dir_wrapped_ring(tmp_path: Path) -> None:
    """A ring that wrapped: 04..09 hold the oldest packets, 00..03 were rewritten since."""
    newest_slot = 3
    for slot in range(10):
        age = (slot - newest_slot - 1) % 10  # 0 = oldest
        (tmp_path / f"cap.pcap{slot:02d}").write_bytes(pcap(2000 + 10 * age, 2000 + 10 * age + 9))
    files, notes = expand([str(tmp_path)])
    assert names(files) == [f"cap.pcap{s:02d}" for s in [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]]
    assert notes == []


def test_dir_G_strftime_names(tmp_path: Path) -> None:
    """`-G 3600 -w cap-%d%m%Y-%H.pcap`: day first, so name order is not time order."""
    hours = [("cap-31122023-23.pcap", 1704063600), ("cap-01012024-00.pcap", 1704067200),
             ("cap-01012024-01.pcap", 1704070800), ("cap-02012024-00.pcap", 1704153600),
             ("cap-10012024-00.pcap", 1704844800)]
    for name, ts in reversed(hours):
        (tmp_path / name).write_bytes(pcapng(ts + 0.25, ts + 60))
    files, _ = expand([str(tmp_path)])
    assert names(files) == [n for n, _ in hours]


def test_dir_gzip_rotations(tmp_path: Path) -> None:
    """`-z gzip`: finished files are compressed, the current one is not; order by first packet."""
    (tmp_path / "cap.pcap0.gz").write_bytes(gzip.compress(pcap(30.0)))
    (tmp_path / "cap.pcap1.gz").write_bytes(gzip.compress(pcap(10.0)))
    (tmp_path / "cap.pcap2").write_bytes(pcap(20.0))
    assert names(expand([str(tmp_path)])[0]) == ["cap.pcap1.gz", "cap.pcap2", "cap.pcap0.gz"]


def test_dir_skips_non_captures_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "cap.pcap").write_bytes(pcap(5))
    (tmp_path / "cap.pcap1").write_bytes(pcapng(6))
    (tmp_path / "README.txt").write_text("rotation files of the front proxy\n")
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / ".cap.pcap.swp").write_bytes(pcap(1))  # hidden: passed over silently
    (tmp_path / "old").mkdir()  # subdirectories are not descended
    (tmp_path / "old" / "cap.pcap").write_bytes(pcap(0))
    files, notes = expand([str(tmp_path)])
    assert names(files) == ["cap.pcap", "cap.pcap1"]
    assert notes == [f"{tmp_path / 'README.txt'}: {NOTE}", f"{tmp_path / 'notes.json'}: {NOTE}"]


def test_expand_keeps_files_and_stdin_in_given_order(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "b.pcap").write_bytes(pcap(2))
    (d / "a.pcap").write_bytes(pcap(3))
    files, notes = expand(["x.pcap", str(d), "-", "missing.pcap"])
    assert files == ["x.pcap", str(d / "b.pcap"), str(d / "a.pcap"), "-", "missing.pcap"]
    assert notes == []


def test_dir_end_to_end_ring_is_one_capture(tmp_path: Path) -> None:
    """mix.pcap's first 200 records cut into a wrapped ring read as a directory: the same records
    as the single file (only pcap_file differs), with one note for the stray file."""
    data = mix_prefix(200)
    recs, off = [], 24
    while off < len(data):
        n = 16 + struct.unpack_from("<I", data, off + 8)[0]
        recs.append(data[off:off + n])
        off += n
    single = tmp_path / "single.pcap"
    single.write_bytes(data)
    want, _, _ = run(str(single))
    ring = tmp_path / "ring"
    ring.mkdir()
    slot_of_part = [7, 8, 9, 0, 1]  # oldest part in slot 07: the ring wrapped
    for part, slot in enumerate(slot_of_part):
        (ring / f"cap.pcap{slot:02d}").write_bytes(data[:24] + b"".join(recs[part * 40:(part + 1) * 40]))
    (ring / "index.html").write_text("<html></html>")
    got, err, code = run(str(ring))
    assert (err, code) == (f"pcapwatch: {ring / 'index.html'}: {NOTE}\n", 0)
    assert len(want) == 17
    assert [dict(r, pcap_file=None) for r in got] == [dict(r, pcap_file=None) for r in want]
    # each request names the rotation file its first byte was in
    assert {r["pcap_file"] for r in got} <= {f"cap.pcap{s:02d}" for s in slot_of_part}
    assert got[0]["pcap_file"] == "cap.pcap07"


# read: classic pcap records handed out in place ------------------------------------------------


def walked(path: Path | str, chunk: int, take: float = 1.0) -> tuple[list[tuple[int, Frame]], Any]:
    """Frames as a consumer of `Capture.read` sees them, taking a share `take` of each `Records`
    (the rest comes back as batches), and the error the read ended with, as (offset, problem)."""
    out: list[tuple[int, Frame]] = []
    cap = Capture(str(path))
    try:
        for item in cap.read(chunk):
            if isinstance(item, Records):
                offsets, stop = split_records(item.buf, item.start, len(item.buf), item.layout)
                keep = int(len(offsets) * take)
                item.used = offsets[keep] if keep < len(offsets) else stop
                for off in offsets[:keep]:
                    sec, frac, caplen, _orig = item.layout.header.unpack_from(item.buf, off)
                    out.append((item.layout.linktype, (item.base + off, sec + frac * item.layout.scale,
                                                       item.buf[off + 16:off + 16 + caplen])))
            else:
                out += [(link, f) for link, fs in item for f in fs]
    except CaptureError as e:
        return out, (e.offset, e.problem)
    finally:
        cap.close()
    return out, None


def batched(path: Path | str) -> tuple[list[tuple[int, Frame]], Any]:
    out: list[tuple[int, Frame]] = []
    cap = Capture(str(path))
    try:
        for batches in cap.batches():
            out += [(link, f) for link, fs in batches for f in fs]
    except CaptureError as e:
        return out, (e.offset, e.problem)
    finally:
        cap.close()
    return out, None


def varied(n: int) -> bytes:
    """A µs pcap whose records differ in size, so that reads end at every kind of place."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(n):
        payload = bytes([i % 251]) * (i * 37 % 300)
        out.append(struct.pack("<IIII", 1_700_000_000 + i, i * 1000, len(payload), len(payload)) + payload)
    return b"".join(out)


@pytest.mark.parametrize("chunk", [1, 5, 16, 17, 100, 1000, 4096, 1 << 20])
@pytest.mark.parametrize("take", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_read_gives_what_batches_give(tmp_path: Path, chunk: int, take: float, compressed: bool) -> None:
    """Whatever the read size, however much of each `Records` the consumer takes: the same frames,
    offsets and times as `batches`. A record cut by a read is put together on its own."""
    data = varied(60)
    path = tmp_path / "cap.pcap"
    path.write_bytes(gzip.compress(data) if compressed else data)
    want = batched(path)
    assert len(want[0]) == 60 and want[1] is None
    assert walked(path, chunk, take) == want


@pytest.mark.parametrize("damage", ["corrupt", "cut"])
@pytest.mark.parametrize("chunk", [7, 333, 1 << 20])
def test_read_ends_with_the_error_batches_end_with(tmp_path: Path, damage: str, chunk: int) -> None:
    data = bytearray(varied(30))
    if damage == "corrupt":
        rec = 24
        for _ in range(20):
            rec += 16 + struct.unpack_from("<I", data, rec + 8)[0]
        struct.pack_into("<I", data, rec + 8, 0xFFFFFF)  # caplen no capture can have
    else:
        del data[-5:]
    path = tmp_path / "cap.pcap"
    path.write_bytes(bytes(data))
    want = batched(path)
    assert want[1] is not None
    assert walked(path, chunk) == want


def test_read_of_pcapng_comes_as_batches(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcapng"
    path.write_bytes(pcapng(1.5, 2.5))
    cap = Capture(str(path))
    try:
        items = list(cap.read())
    finally:
        cap.close()
    assert items and not any(isinstance(i, Records) for i in items)
    assert walked(path, 1 << 20) == batched(path)


def test_records_left_unset_by_the_consumer_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    path.write_bytes(varied(3))
    cap = Capture(str(path))
    try:
        with pytest.raises(ValueError, match=r"Records\.used"):
            for _item in cap.read():
                pass
    finally:
        cap.close()


# RangeReader: a worker reads what the feeder walked --------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_range_reader_reads_by_position(tmp_path: Path, compressed: bool) -> None:
    data = varied(200)
    path = tmp_path / "cap.pcap"
    path.write_bytes(gzip.compress(data) if compressed else data)
    reader = RangeReader(str(path))
    try:
        # Increasing starts; a range may begin before the end of the one before (a record read again).
        for pos, size in [(0, 24), (24, 5000), (4990, 100), (5000, 1), (9000, len(data) - 9000)]:
            assert reader.read(pos, size)[:size] == data[pos:pos + size]
        with pytest.raises(CaptureError, match="changed while it was read"):
            reader.read(len(data) - 10, 20)
    finally:
        reader.close()


def test_range_reader_of_a_file_cut_since_it_was_walked(tmp_path: Path) -> None:
    data = varied(50)
    path = tmp_path / "cap.pcap"
    path.write_bytes(data)
    reader = RangeReader(str(path))
    try:
        path.write_bytes(data[:1000])  # rewritten shorter, as a tcpdump ring reuses a file name
        with pytest.raises(CaptureError) as e:
            reader.read(500, 2000)
        assert e.value.offset == 1000
    finally:
        reader.close()


# gzip bombs: decompressed in bounded steps, stopped at the limits --------------------------------


def chunk_sizes(path: Path, chunk: int, limits: GunzipLimits = DEFAULT_GUNZIP) -> tuple[list[int], CaptureError | None]:
    cap = Capture(str(path), limits)
    sizes: list[int] = []
    try:
        for data in cap.chunks(chunk):
            sizes.append(len(data))
    except CaptureError as e:
        return sizes, e
    finally:
        cap.close()
    return sizes, None


def test_gzip_is_decompressed_in_steps_of_at_most_the_chunk(tmp_path: Path) -> None:
    """Even 1000:1 data never comes out in pieces larger than asked for: memory stays bounded."""
    bomb = g.write_gzip_bomb(tmp_path / "zeros.pcap.gz", 8 << 20)
    sizes, error = chunk_sizes(bomb, 65536)
    assert error is None
    assert sum(sizes) == 8 << 20
    assert max(sizes) == 65536
    assert len(sizes) == 128


def test_gzip_bomb_stopped_at_the_ratio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the first GUNZIP_RATIO_AFTER_BYTES, 200 times the compressed bytes read is the end:
    what came before is delivered, the error names the compressed offset and the limit's key."""
    monkeypatch.setattr(sources, "GUNZIP_RATIO_AFTER_BYTES", 4 << 20)
    bomb = g.write_gzip_bomb(tmp_path / "bomb.pcap.gz", 64 << 20)
    sizes, error = chunk_sizes(bomb, 1 << 20)
    assert error is not None
    # the first step past 4 MiB: the ratio (about 1000) is over 200 as soon as it is judged
    assert sizes == [1 << 20] * 4
    consumed = error.offset
    assert 0 < consumed < bomb.stat().st_size
    assert error.problem == (f"gzip data expands more than 200 times ({consumed:,} compressed bytes gave "
                             f"{5 << 20:,}; limits.gunzip_max_ratio): too much for a capture file, likely a "
                             "decompression bomb")


def test_gzip_ratio_not_judged_on_a_small_file(tmp_path: Path) -> None:
    """A small file of identical packets compresses as well as a bomb: harmless, read whole."""
    path = g.write_gzip_bomb(tmp_path / "small.pcap.gz", 4 << 20)
    assert path.stat().st_size * 200 < 4 << 20
    sizes, error = chunk_sizes(path, 1 << 20)
    assert (sum(sizes), error) == (4 << 20, None)


def test_gzip_stopped_at_the_size_limit(tmp_path: Path) -> None:
    """limits.gunzip_max_bytes: a file that compresses normally but expands past it; the records
    before it come out, then one error with the limit."""
    import random as _random

    rng = _random.Random(3)
    data = pcap(*[1.0 + i for i in range(3000)], payload=rng.randbytes(1000))
    path = tmp_path / "big.pcap.gz"
    path.write_bytes(gzip.compress(data))
    limits = GunzipLimits(max_bytes=1_000_000, max_ratio=200)
    cap = Capture(str(path), limits)
    got: list[Frame] = []
    with pytest.raises(CaptureError) as e:
        for batches in cap.batches(chunk=65536):
            got += [f for _link, fs in batches for f in fs]
    cap.close()
    assert e.value.problem == ("gzip data expands past 1,000,000 bytes (limits.gunzip_max_bytes): too large for a "
                               "capture file, likely a decompression bomb")
    assert len(got) == (1_000_000 // 65536 * 65536 - 24) // 1016
    assert [f[1] for f in got] == [1.0 + i for i in range(len(got))]


def test_read_of_a_bomb_fails_that_file_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pcapwatch read`: one line naming the bomb, counted as failed (exit status 1), and the next
    file read whole."""
    monkeypatch.setattr(sources, "GUNZIP_RATIO_AFTER_BYTES", 4 << 20)
    bomb = g.write_gzip_bomb(tmp_path / "bomb.pcap.gz", 64 << 20)
    good = tmp_path / "good.pcap"
    good.write_bytes(pcap(5.0, 6.0))
    _records, result, err = read_records(bomb, good)
    lines = err.splitlines()
    assert (result.files, result.files_failed, len(lines)) == (2, 1, 1)
    assert lines[0].startswith(f"pcapwatch: error: {bomb}: offset ")
    assert lines[0].endswith("likely a decompression bomb; the rest of this file is skipped")
    # read decompresses 4 MiB at a time: the records of the first step, then good.pcap's 2
    assert result.stats["frames"] == ((4 << 20) - 24) // 65551 + 2


def test_gzip_member_header_that_never_ends(tmp_path: Path) -> None:
    """FNAME set and no terminating zero for megabytes: not a header, and not held in memory."""
    path = tmp_path / "noname.gz"
    path.write_bytes(b"\x1f\x8b\x08\x08" + bytes(6) + b"x" * (3 << 20))
    sizes, error = chunk_sizes(path, 65536)
    assert sizes == [] and error is not None
    assert (error.offset, error.problem) == (0, "gzip data is corrupt (a member header longer than 1,048,576 bytes)")


GZIP_MUTATIONS = 400


def test_mutated_gzip_captures_raise_nothing_but_capture_error(tmp_path: Path) -> None:
    """Damaged gzip files (header, deflate data, trailer, a second member): Capture.batches gives
    frames and at most a CaptureError, nothing else (seeded, bounded loop)."""
    import random as _random

    valid = gzip.compress(pcap(*[1.0 + i / 10 for i in range(40)], payload=bytes(range(60)))) + gzip.compress(
        pcapng(7.0, 8.0))
    path = tmp_path / "m.gz"
    for seed in range(GZIP_MUTATIONS):
        rng = _random.Random(seed)
        b = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(b))
            if rng.random() < 0.6:
                b[at] ^= 1 << rng.randrange(8)
            elif rng.random() < 0.5:
                del b[at:]
            else:
                b[at:at] = rng.randbytes(rng.randint(1, 8))
        path.write_bytes(bytes(b))
        try:
            frames(path)
        except CaptureError:
            pass
        except Exception as e:  # the point: anything else fails, with how to reproduce
            pytest.fail(f"seed {seed}: {type(e).__name__}: {e} on {bytes(b).hex()}")


def test_dir_keeps_an_unreadable_file_for_read_to_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not 'not a capture file': `read` tries it, says 'Permission denied', counts it failed (exit
    status 1), and reads the others."""
    file_modes_bind_root(monkeypatch)
    (tmp_path / "cap.pcap").write_bytes(pcap(5))
    locked = tmp_path / "cap.pcap1"
    locked.write_bytes(pcap(6))
    locked.chmod(0)
    files, notes = expand([str(tmp_path)])
    assert (names(files), notes) == (["cap.pcap", "cap.pcap1"], [])
    _records, result, err = read_records(tmp_path)
    assert (result.files, result.files_failed) == (2, 1)
    assert err == f"pcapwatch: error: {locked}: cannot open: Permission denied\n"
