"""`pcapwatch export`'s writer: any input's frames as the libpcap file pycapa's consumer writes."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from helpers.pcapgen import write_pcap, write_pcapng

from watcher.read.export import export_captures

HEADER = struct.pack("IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
T0 = 1_795_360_562 * 10**9  # ns


def _rec(micros: int, frame: bytes) -> bytes:
    return struct.pack("IIII", micros // 10**6, micros % 10**6, len(frame), len(frame)) + frame


def test_microsecond_pcap_copied_record_for_record(tmp_path: Path) -> None:
    frames = [(T0 + 156_422_000, b"a" * 60), (T0 + 999_999_000, b"b" * 1514), (T0 + 1_000_000_000, b"c" * 42)]
    src = write_pcap(tmp_path / "in.pcap", 1, frames, big_endian=True)
    out, err = io.BytesIO(), io.StringIO()
    r = export_captures([str(src)], out, err)
    assert err.getvalue() == "" and r.packets == 3 and r.read.files_failed == 0
    assert out.getvalue() == HEADER + b"".join(_rec(ts // 1000, f) for ts, f in frames)


def test_nanoseconds_rounded_to_the_nearest_microsecond(tmp_path: Path) -> None:
    src = write_pcap(tmp_path / "ns.pcap", 1, [(T0 + 1_499, b"x" * 60), (T0 + 1_500, b"y" * 60),
                                               (T0 + 999_999_999, b"z" * 60)], nanos=True)
    out = io.BytesIO()
    export_captures([str(src)], out, io.StringIO())
    assert out.getvalue() == HEADER + _rec(T0 // 1000 + 1, b"x" * 60) + _rec(T0 // 1000 + 2, b"y" * 60) + \
        _rec(T0 // 1000 + 10**6, b"z" * 60)


def test_one_link_type_per_file_others_counted(tmp_path: Path) -> None:
    src = write_pcapng(tmp_path / "two.pcapng", [113, 1], [(0, T0, b"s" * 40), (1, T0 + 1000, b"e" * 60),
                                                          (0, T0 + 2000, b"t" * 40)])
    out, err = io.BytesIO(), io.StringIO()
    r = export_captures([str(src)], out, err)
    assert (r.packets, r.other_linktype, r.linktype) == (2, 1, 113)
    assert out.getvalue() == struct.pack("IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 113) + \
        _rec(T0 // 1000, b"s" * 40) + _rec(T0 // 1000 + 2, b"t" * 40)
    assert err.getvalue() == ("pcapwatch: left out 1 frames of another link type than the first frame's (113): "
                              "one pcap file holds one link type; export them separately\n")


def test_no_frames_still_a_valid_capture_and_broken_input_named(tmp_path: Path) -> None:
    empty = write_pcap(tmp_path / "empty.pcap", 1, [])
    (tmp_path / "junk.pcap").write_bytes(b"junk" * 10)
    out, err = io.BytesIO(), io.StringIO()
    r = export_captures([str(empty), str(tmp_path / "junk.pcap")], out, err)
    assert out.getvalue() == HEADER and r.packets == 0 and r.read.files_failed == 1
    assert f"{tmp_path / 'junk.pcap'}: offset 0: not a pcap or pcapng file" in err.getvalue()
