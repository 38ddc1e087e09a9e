"""watcher/run/checkpoint.py: the saved position survives a round trip, is replaced atomically, and
a file that cannot be used (missing, corrupt, too big, nested, another version, any field of the
wrong type) gives None and a one-line warning instead of stopping the service."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from watcher.run import checkpoint as ckpt
from watcher.run.checkpoint import Checkpoint, Mark

RESUME = Mark("0123456789abcdef01234567", 1_700_000_000.123456, 1_048_576, "cap.pcap3")
EMITTED = Mark("89abcdef0123456789abcdef", 1_700_000_060.5, 24, "cap.pcap4")


def test_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state"  # created by save
    saved = Checkpoint(RESUME, EMITTED, 1_700_000_100.25)
    ckpt.save(str(state), saved)
    assert ckpt.load(str(state)) == (saved, None)
    assert os.listdir(state) == ["checkpoint.json"]
    raw = json.loads((state / "checkpoint.json").read_text())
    assert raw == {"version": ckpt.VERSION, "written_at": 1_700_000_100.25,
                   "resume": {"fp": RESUME.fp, "first_ts": RESUME.first_ts, "offset": 1_048_576, "name": "cap.pcap3"},
                   "emitted": {"fp": EMITTED.fp, "first_ts": 1_700_000_060.5, "offset": 24, "name": "cap.pcap4"}}


def test_round_trip_without_emitted_mark(tmp_path: Path) -> None:
    saved = Checkpoint(RESUME, None, 1_700_000_100.0)
    ckpt.save(str(tmp_path), saved)
    assert ckpt.load(str(tmp_path)) == (saved, None)


def test_save_replaces_the_previous_one(tmp_path: Path) -> None:
    ckpt.save(str(tmp_path), Checkpoint(RESUME, None, 1.0))
    newer = Checkpoint(EMITTED, EMITTED, 2.0)
    ckpt.save(str(tmp_path), newer)
    assert ckpt.load(str(tmp_path)) == (newer, None)
    assert os.listdir(tmp_path) == ["checkpoint.json"]


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up halfway through writing the new file: the old one is still what loads,
    and no half-written temporary file is left behind."""
    old = Checkpoint(RESUME, EMITTED, 1.0)
    ckpt.save(str(tmp_path), old)
    real_write = os.write

    def write_half(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", write_half)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(str(tmp_path), Checkpoint(EMITTED, None, 2.0))
    monkeypatch.undo()
    assert ckpt.load(str(tmp_path)) == (old, None)
    assert os.listdir(tmp_path) == ["checkpoint.json"]


def test_missing_is_a_first_start(tmp_path: Path) -> None:
    """No checkpoint yet is normal (first start, or a new state dir): None and nothing to warn about."""
    assert ckpt.load(str(tmp_path)) == (None, None)
    assert ckpt.load(str(tmp_path / "no such dir")) == (None, None)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "cannot be read (Expecting value: line 1 column 1 (char 0))"),
    (b'{"version": 1, "resume": {"fp": "ab', "cannot be read (Unterminated string starting at"),
    (b"\xff\xfe\x00garbage", "cannot be read ("),
    (b"[1, 2]", "is not valid ("),
    (b'{"version": 1, "written_at": 5, "emitted": null}', "is not valid (resume is missing)"),
    (b'{"version": 1, "written_at": 5, "resume": {"fp": "x", "first_ts": "soon", "offset": 0}, "emitted": null}',
     "is not valid (resume.first_ts is 'soon', expected a number)"),
])
def test_corrupt_gives_a_warning_and_none(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_bytes(content)
    checkpoint, warning = ckpt.load(str(tmp_path))
    assert checkpoint is None and warning is not None
    assert warning.startswith(f"checkpoint {path} {problem}")
    assert warning.endswith("; starting from the oldest capture in the spool")
    assert "\n" not in warning


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_version_gives_a_warning_and_none(tmp_path: Path, version: object) -> None:
    raw = {"version": version, "written_at": 5.0, "emitted": None,
           "resume": {"fp": RESUME.fp, "first_ts": RESUME.first_ts, "offset": 24, "name": ""}}
    (tmp_path / "checkpoint.json").write_text(json.dumps(raw))
    assert ckpt.load(str(tmp_path)) == (None, f"checkpoint {tmp_path / 'checkpoint.json'} is not valid (version "
                                              f"{version!r}, expected {ckpt.VERSION}); starting from the oldest "
                                              "capture in the spool")


def test_unreadable_path_gives_a_warning(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").mkdir()  # a directory where the file should be
    checkpoint, warning = ckpt.load(str(tmp_path))
    assert checkpoint is None and warning is not None and "Is a directory" in warning


def _warned(tmp_path: Path, content: bytes) -> str:
    (tmp_path / "checkpoint.json").write_bytes(content)
    checkpoint, warning = ckpt.load(str(tmp_path))
    assert checkpoint is None and warning is not None
    prefix, suffix = f"checkpoint {tmp_path / 'checkpoint.json'} ", "; starting from the oldest capture in the spool"
    assert warning.startswith(prefix) and warning.endswith(suffix) and "\n" not in warning, warning
    return warning[len(prefix):-len(suffix)]


@pytest.mark.parametrize("opener", [b"[", b"{\"a\":"])
def test_deeply_nested_is_one_line_not_a_recursion_error(tmp_path: Path, opener: bytes) -> None:
    assert _warned(tmp_path, opener * 100_000) == "cannot be read (nested too deeply to be a checkpoint)"


def test_too_big_is_refused_before_parsing(tmp_path: Path) -> None:
    good = json.dumps({"version": 1, "written_at": 5.0, "emitted": None,
                       "resume": {"fp": RESUME.fp, "first_ts": 1.0, "offset": 24, "name": ""}}).encode()
    assert ckpt.MAX_BYTES == 1 << 20
    # Whitespace is valid JSON: the size alone refuses it.
    assert _warned(tmp_path, good + b" " * (ckpt.MAX_BYTES + 1 - len(good))) == \
        "is too big (over 1,048,576 bytes; a checkpoint is under 850 KB)"
    (tmp_path / "checkpoint.json").write_bytes(good + b" " * (ckpt.MAX_BYTES - len(good)))  # exactly at the cap
    assert ckpt.load(str(tmp_path))[0] == Checkpoint(Mark(RESUME.fp, 1.0, 24, ""), None, 5.0)


def _with(**changes: object) -> bytes:
    raw: dict[str, object] = {"version": 1, "written_at": 5.0,
                              "resume": {"fp": RESUME.fp, "first_ts": 1.0, "offset": 24, "name": "cap.pcap"},
                              "emitted": {"fp": EMITTED.fp, "first_ts": 2.0, "offset": 48}}
    for key, value in changes.items():
        where, _, field = key.partition("__")
        if field:
            part = raw[where]
            assert isinstance(part, dict)
            if value is KeyError:
                del part[field]
            else:
                part[field] = value
        elif value is KeyError:
            del raw[where]
        else:
            raw[where] = value
    return json.dumps(raw).encode()


@pytest.mark.parametrize(("content", "problem"), [
    (b'"a string"', "the file holds 'a string', expected an object"),
    (b"[]", "the file holds an array, expected an object"),
    (b"null", "the file holds None, expected an object"),
    (_with(version=True), "version True, expected 1"),
    (_with(version=1.0), "version 1.0, expected 1"),
    (_with(written_at=KeyError), "written_at is missing"),
    (_with(written_at="now"), "written_at is 'now', expected a number"),
    (_with(written_at=False), "written_at is False, expected a number"),
    (b'{"version": 1, "written_at": NaN, "resume": {}, "emitted": null}', "written_at is nan, expected a number"),
    (_with(resume=[1, 2]), "resume is an array, expected an object"),
    (_with(resume=None), "resume is None, expected an object"),
    (_with(resume__fp=KeyError), "resume.fp is missing"),
    (_with(resume__fp=""), "resume.fp is '', expected a non-empty string of at most 128 characters"),
    (_with(resume__fp="f" * 129), "resume.fp is 'fffffffffffffffffffffffffffffffffffffff..., expected a non-empty "
                                  "string of at most 128 characters"),
    (_with(resume__fp={"deep": [1]}), "resume.fp is an object, expected a non-empty string of at most 128 characters"),
    (_with(resume__offset=-1), "resume.offset is -1, expected a whole number >= 0"),
    (_with(resume__offset=2.5), "resume.offset is 2.5, expected a whole number >= 0"),
    (_with(resume__offset=True), "resume.offset is True, expected a whole number >= 0"),
    (_with(resume__first_ts=[]), "resume.first_ts is an array, expected a number"),
    (_with(resume__name=7), "resume.name is 7, expected a string"),
    (_with(resume__extra=1), "unknown field resume.'extra'"),
    (_with(emitted=KeyError), "emitted is missing"),
    (_with(emitted=5), "emitted is 5, expected an object or null"),
    (_with(emitted__offset="12"), "emitted.offset is '12', expected a whole number >= 0"),
    (_with(sessions=[]), "unknown field 'sessions'"),  # ('connections' is a field now)
])
def test_every_field_is_checked(tmp_path: Path, content: bytes, problem: str) -> None:
    assert _warned(tmp_path, content) == f"is not valid ({problem})"


def test_a_valid_file_loads_with_and_without_optional_name(tmp_path: Path) -> None:
    """`name` is for people (any file name, even one with a newline, round-trips); emitted's is absent."""
    (tmp_path / "checkpoint.json").write_bytes(_with(resume__name="cap\n.pcap"))
    assert ckpt.load(str(tmp_path)) == (Checkpoint(Mark(RESUME.fp, 1.0, 24, "cap\n.pcap"),
                                                   Mark(EMITTED.fp, 2.0, 48, ""), 5.0), None)
    (tmp_path / "checkpoint.json").write_bytes(_with())
    assert ckpt.load(str(tmp_path)) == (Checkpoint(Mark(RESUME.fp, 1.0, 24, "cap.pcap"), Mark(EMITTED.fp, 2.0, 48, ""),
                                                   5.0), None)


def test_a_fifo_or_device_in_its_place_is_one_line_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    os.mkfifo(path)  # nobody writes it: reading would wait for ever
    assert ckpt.load(str(tmp_path)) == (None, f"checkpoint {path} cannot be read (not a regular file); starting "
                                              "from the oldest capture in the spool")
    path.unlink()
    path.symlink_to("/dev/zero")  # endless
    assert ckpt.load(str(tmp_path)) == (None, f"checkpoint {path} cannot be read (not a regular file); starting "
                                              "from the oldest capture in the spool")


# Open connections' identities (analyzers.identities) ---------------------------------------------

IDLE = ("10.0.0.1", 40000, "10.0.0.2", 80, "CAbcdefghijklmnopq", 1_700_000_000.5, 1_700_000_010.25, True, 3, None,
        False, 1000, 5000, None)
BUSY = ("2001:db8::1", 40001, "2001:db8::2", 8080, "CBbcdefghijklmnopq", 1.0, 2.0, False, 7, 2, True, None, None,
        (RESUME.fp, 1_048_600))


def test_connections_round_trip(tmp_path: Path) -> None:
    saved = Checkpoint(RESUME, EMITTED, 5.0, (IDLE, BUSY))
    ckpt.save(str(tmp_path), saved)
    assert ckpt.load(str(tmp_path)) == (saved, None)


def test_the_most_connections_saved_fit_the_size_cap(tmp_path: Path) -> None:
    """MAX_CONNECTIONS entries of the longest kind (IPv6 addresses written out in full, the
    largest numbers, a start mark) stay under MAX_BYTES and load."""
    ip = "ffff:" * 7 + "ffff"
    worst = (ip, 65535, ip, 65535, "C" + "z" * 17, 1_700_000_000.123456, 1_799_999_999.999999, False, 10**9, 10**9,
             True, None, None, ("f" * 128, 1 << 40))
    saved = Checkpoint(RESUME, EMITTED, 5.0, (worst,) * ckpt.MAX_CONNECTIONS)
    ckpt.save(str(tmp_path), saved)
    size = (tmp_path / "checkpoint.json").stat().st_size
    assert size < ckpt.MAX_BYTES, size
    assert ckpt.load(str(tmp_path)) == (saved, None)


def _entry(**changes: object) -> list[object]:
    entry: list[object] = list(IDLE)
    names = [f for f, _what, _ok in ckpt.CONNECTION_FIELDS]
    for key, value in changes.items():
        entry[names.index(key)] = value
    return entry


@pytest.mark.parametrize(("connections", "problem"), [
    ({}, "connections is an object, expected an array"),
    ([[1, 2]], "connections[0] is an array, expected an array of 14 fields"),
    ([_entry(), _entry(client_port=70000)], "connections[1].client_port is 70000, expected a port"),
    ([_entry(syn=1)], "connections[0].syn is 1, expected true or false"),
    ([_entry(client_seq=1 << 32)], "connections[0].client_seq is 4294967296, expected a sequence number or null"),
    ([_entry(depth=-1)], "connections[0].depth is -1, expected a whole number >= 0"),
    ([_entry(uid=[])], "connections[0].uid is an array, expected a connection uid"),
    ([_entry(start=["fp"])], "connections[0].start is an array, expected [fingerprint, offset] or null"),
    ([_entry()] * (ckpt.MAX_CONNECTIONS + 1), "connections holds 2,001 entries, expected at most 2,000"),
])
def test_every_connection_field_is_checked(tmp_path: Path, connections: object, problem: str) -> None:
    assert _warned(tmp_path, _with(connections=connections)) == f"is not valid ({problem})"
