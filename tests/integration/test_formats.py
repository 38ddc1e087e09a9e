"""The same real traffic in every capture format and link layer gives the same records.

The corpus captures (tcpdump on loopback, Ethernet link type) are read into TCP segments and
written again by `tests/pcapgen.py` as pcap (µs/ns, little/big endian), pcapng, and over every
link layer the decoder supports, and over IPv6 with an extension header. The records must equal
the original file's, in the same order, field for field; only `pcap_file` (the file name) may
differ, and over IPv6 the addresses (mapped ::ffff:a.b.c.d) and so the connection uids.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import pcapgen as g
from helpers.env import corpus, need_tool, read_records
from helpers.pcapgen import Segment

Record = dict[str, Any]
Writer = Callable[[Path, list[Segment]], Path]


@functools.cache
def original(name: str) -> tuple[list[Record], list[Segment]]:
    """The corpus capture's records (as read from the file itself) and its segments."""
    path = corpus("local", name)
    with open(path, "rb") as f:
        magic, linktype = struct.unpack("<I16xI", f.read(24))
    assert (magic, linktype & 0xFFFF) == (0xA1B2C3D4, g.LINKTYPE_ETHERNET), "corpus is µs pcap, Ethernet"
    records, result, err = read_records(path)
    assert (result.files_failed, err) == (0, "")
    return records, g.read_segments(path)


def without_file(records: list[Record]) -> list[Record]:
    return [{k: v for k, v in r.items() if k != "pcap_file"} for r in records]


def ordered_diffs(want: list[Record], got: list[Record]) -> list[tuple[int, str, Any, Any]]:
    """(position, field, wanted, got) for every differing field of records compared in order."""
    bad = [(i, f, w[f], r.get(f)) for i, (w, r) in enumerate(zip(want, got, strict=False))
           for f in w if w[f] != r.get(f)]
    if len(want) != len(got):
        bad.append((min(len(want), len(got)), "count", len(want), len(got)))
    return bad


def pcap_writer(link: str = "ethernet", *, nanos: bool = False, big_endian: bool = False,
                ipv4_options: bytes = b"") -> Writer:
    def write(path: Path, segs: list[Segment]) -> Path:
        packets = g.frames(segs, link, ipv4_options=ipv4_options)
        return g.write_pcap(path, g.LINKS[link].linktype, packets, nanos=nanos, big_endian=big_endian)
    return write


def pcapng_writer(*, nanos: bool = False, big_endian: bool = False) -> Writer:
    def write(path: Path, segs: list[Segment]) -> Path:
        packets = [(0, ts, f) for ts, f in g.frames(segs, "ethernet")]
        return g.write_pcapng(path, [g.LINKTYPE_ETHERNET], packets, nanos=nanos, big_endian=big_endian)
    return write


def write_ip_link_types(path: Path, segs: list[Segment]) -> Path:
    """LINKTYPE_IPV4 (228) holds only IPv4 and 229 only IPv6: one pcapng interface of each."""
    packets = []
    for s in segs:
        ip = g.ip_packet(s)
        packets.append((0 if g.ip_version(ip) == 4 else 1, s.ts_ns, ip))
    return g.write_pcapng(path, [g.LINKTYPE_IPV4, g.LINKTYPE_IPV6], packets, nanos=True)


def write_alternating_interfaces(path: Path, segs: list[Segment]) -> Path:
    """Consecutive packets on interfaces of different link types (Ethernet, SLL2, loop)."""
    names = ["ethernet", "sll2", "loop"]
    packets = []
    for i, s in enumerate(segs):
        ifid = i % 3
        packets.append((ifid, s.ts_ns, g.LINKS[names[ifid]].wrap(g.ip_packet(s))))
    return g.write_pcapng(path, [g.LINKS[n].linktype for n in names], packets)


VARIANTS: dict[str, Writer] = {
    "pcap-us-le": pcap_writer(),
    "pcap-us-be": pcap_writer(big_endian=True),
    "pcap-ns-le": pcap_writer(nanos=True),
    "pcap-ns-be": pcap_writer(nanos=True, big_endian=True),
    "pcapng-us": pcapng_writer(),
    "pcapng-ns": pcapng_writer(nanos=True),
    "pcapng-ns-be": pcapng_writer(nanos=True, big_endian=True),
    "vlan": pcap_writer("vlan"),
    "qinq": pcap_writer("qinq"),
    "sll": pcap_writer("sll"),
    "sll2": pcap_writer("sll2"),
    "raw": pcap_writer("raw"),
    "ipv4-ipv6-linktypes": write_ip_link_types,
    "null": pcap_writer("null"),
    "null-big-endian-host": pcap_writer("null-be"),
    "loop": pcap_writer("loop"),
    "ipv4-options": pcap_writer(ipv4_options=b"\x01" * 3 + b"\x07\x07\x04" + b"\0" * 4),
    "alternating-interfaces": write_alternating_interfaces,
}
# mix.pcap (64 KiB loopback segments) in a few of the formats; mix1500.pcap in all of them.
MIX_VARIANTS = ["pcap-ns-be", "pcapng-ns", "qinq", "sll2", "ipv4-ipv6-linktypes"]
CASES = [("mix1500.pcap", v) for v in VARIANTS] + [("mix.pcap", v) for v in MIX_VARIANTS]


@pytest.mark.parametrize(("capture", "variant"), CASES)
def test_same_records_in_every_format(tmp_path: Path, capture: str, variant: str) -> None:
    records, segs = original(capture)
    path = VARIANTS[variant](tmp_path / f"{variant}.cap", segs)
    got, result, err = read_records(path)
    assert (result.files_failed, err) == (0, "")
    assert result.stats["frames"] == len(segs)
    assert result.stats["frames_skipped"] == {}
    assert {r["pcap_file"] for r in got} == {path.name}
    assert ordered_diffs(without_file(records), without_file(got)) == []


@pytest.mark.parametrize("capture", ["mix1500.pcap", "mix.pcap"])
@pytest.mark.parametrize("ext", [[g.IPV6_HOP_BY_HOP], [g.IPV6_DEST_OPTS, g.IPV6_ROUTING]],
                         ids=["hop-by-hop", "dest-opts+routing"])
def test_same_records_over_ipv6(tmp_path: Path, capture: str, ext: list[int]) -> None:
    """IPv4 connections re-expressed over IPv6 (the capture's own IPv6 connections stay), every
    packet with extension headers: records differ only in the mapped addresses and the uids."""
    records, segs = original(capture)
    path = g.write_pcap(tmp_path / "v6.pcap", g.LINKTYPE_ETHERNET, g.frames(g.to_ipv6(segs), ipv6_ext=ext))
    got, result, err = read_records(path)
    assert (result.files_failed, err, result.stats["frames_skipped"]) == (0, "", {})
    assert {r["src_ip"] for r in got} | {r["dst_ip"] for r in got} == {"::ffff:7f00:1", "::1"}
    want = without_file(records)
    for r in want:
        r["src_ip"], r["dst_ip"] = (g.address_text(g.v4_mapped(ipaddress.ip_address(r[k]).packed))
                                    for k in ("src_ip", "dst_ip"))
    got = without_file(got)
    assert len(got) == len(want)
    uids = {(a["uid"], b["uid"]) for a, b in zip(want, got, strict=True)}
    assert len(uids) == len({a for a, _ in uids}) == len({b for _, b in uids}), "uids map one to one"
    assert [{**r, "uid": ""} for r in got] == [{**r, "uid": ""} for r in want]


@pytest.mark.parametrize("variant", ["pcap-ns-be", "pcapng-ns", "qinq", "sll2", "null", "loop"])
def test_tcpdump_reads_the_generated_files(tmp_path: Path, variant: str) -> None:
    """An independent reader agrees the files are well formed: every packet, every checksum right."""
    need_tool("tcpdump")
    _records, segs = original("mix1500.pcap")
    path = VARIANTS[variant](tmp_path / f"{variant}.cap", segs)
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn", "-vv"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    assert len(heads) == len(segs)
    assert out.count("(correct)") == len(segs)  # the TCP checksum, on each packet
    assert "incorrect" not in out and "truncated" not in out
