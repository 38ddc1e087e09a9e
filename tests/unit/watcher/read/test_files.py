"""`pcapwatch read`: a packet whose analysis raises costs its connection (one line with the file
and offset, exit status 1); an unexpected error reading a file costs that file (named, counted);
outside text in its lines is escaped. Both with one process and with workers."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import pcapgen as g
from helpers.faulty import failing_data
from helpers.keepalive import keepalive

from analyzers.http.parser import MessageParser
from watcher.capture.sources import Capture
from watcher.cli import main

BOOM = b"GET /2/1 "


@pytest.fixture(autouse=True)
def _sigpipe() -> Iterator[None]:
    """`main` resets SIGPIPE for `read f | head`; not ours to keep (a later test writing to a closed
    socket would kill the test process)."""
    before = signal.getsignal(signal.SIGPIPE)
    yield
    signal.signal(signal.SIGPIPE, before)


def files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    name = "bad\n\x1b[31mname.pcap"
    first = tmp_path / name
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(keepalive(seed=3, mss=(1460,))))
    first.write_bytes(data)
    second = tmp_path / "next.pcap"
    g.write_pcap(second, g.LINKTYPE_ETHERNET, g.frames(keepalive(seed=4, first=10, mss=(1460,))))
    return first, second, data


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]], list[str]]:
    code = main(["read", "--stats", "json", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err.splitlines()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_packet_that_raises_is_one_line_and_exit_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    first, second, data = files(tmp_path)
    code, want, _ = run(capsys, "--workers", workers, str(first), str(second))
    assert code == 0
    monkeypatch.setattr(MessageParser, "data", failing_data(BOOM, lambda: KeyError("synthetic")))
    code, got, err = run(capsys, "--workers", workers, str(first), str(second))
    assert code == 1
    offset = data.index(BOOM) - 16 - 14 - 40
    shown = str(tmp_path) + "/bad\\x0a\\x1b[31mname.pcap"
    assert err[:-1] == [f"pcapwatch: error: {shown} offset {offset}: analysing this packet failed (KeyError: "
                        "'synthetic'); its connection was closed (reason internal_error) and the analysis goes on; "
                        "this is a bug in pcapwatch: please report it with this packet"]
    assert json.loads(err[-1])["connections"]["internal_errors"] == 1
    assert sorted(json.dumps(r) for r in got if not str(r["uri"]).startswith("/2/")) == sorted(
        json.dumps(r) for r in want if not str(r["uri"]).startswith("/2/"))  # (workers: in any order)
    assert [r["uri"] for r in got if str(r["uri"]).startswith("/2/")] == ["/2/0"]


def test_an_unexpected_error_reading_a_file_costs_that_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, _ = files(tmp_path)
    code, want, _ = run(capsys, "--workers", "1", str(second))
    real = Capture.read

    def read(self: Capture) -> object:
        if self.name.startswith("bad"):
            raise IndexError("a bug")
        return real(self)

    monkeypatch.setattr(Capture, "read", read)
    code, got, err = run(capsys, "--workers", "1", str(first), str(second))
    assert code == 1
    shown = str(tmp_path) + "/bad\\x0a\\x1b[31mname.pcap"
    assert err[:-1] == [f"pcapwatch: error: {shown}: reading this file failed (IndexError: a bug); the rest of "
                        "this file is skipped; this is a bug in pcapwatch: please report it with this file"]
    assert json.loads(err[-1])["files_failed"] == 1
    assert got == want
