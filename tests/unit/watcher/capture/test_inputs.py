"""capture/inputs.py: one door for files and kafka:// topics; frames with whole-µs times."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.pcapgen import write_pcap, write_pcapng

from watcher.capture.inputs import open_input, timed_frames
from watcher.capture.pycapa import KafkaUrlError
from watcher.capture.sources import Capture

T0 = 1_795_360_562 * 10**9


def _all(path: Path) -> list[tuple[int, int, int, bytes]]:
    cap = open_input(str(path))
    try:
        return [t for item in cap.read() for t in timed_frames(item)]
    finally:
        cap.close()


def test_a_file_is_a_capture_and_a_bad_address_is_refused(tmp_path: Path) -> None:
    f = write_pcap(tmp_path / "a.pcap", 1, [(T0, b"x" * 60)])
    cap = open_input(str(f))
    assert isinstance(cap, Capture) and cap.name == "a.pcap"
    cap.close()
    with pytest.raises(KafkaUrlError, match="write kafka://HOST:PORT/TOPIC"):
        open_input("kafka://nowhere/t")


@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_records_times_in_whole_microseconds(tmp_path: Path, nanos: bool) -> None:
    packets = [(T0 + 156_422_000 + (499 if nanos else 0), b"a" * 60), (T0 + 999_999_600, b"b" * 70)]
    f = write_pcap(tmp_path / "a.pcap", 1, packets, nanos=nanos)
    got = _all(f)
    assert [(lt, micros, frame) for lt, _pos, micros, frame in got] == [
        (1, T0 // 1000 + 156_422, b"a" * 60),
        (1, T0 // 1000 + (1_000_000 if nanos else 999_999), b"b" * 70)]  # ns rounded to the nearest µs
    assert [pos for _lt, pos, _m, _f in got] == [24, 24 + 16 + 60]


def test_pcapng_frames_through_their_float_times(tmp_path: Path) -> None:
    f = write_pcapng(tmp_path / "a.pcapng", [1, 113], [(0, T0 + 1_000, b"e" * 60), (1, T0 + 2_000, b"s" * 40)])
    assert [(lt, m, fr) for lt, _p, m, fr in _all(f)] == [(1, T0 // 1000 + 1, b"e" * 60),
                                                          (113, T0 // 1000 + 2, b"s" * 40)]
