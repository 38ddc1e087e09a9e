"""Crafted captures that try to hide requests from a passive monitor with one packet, each read by
`pcapwatch read` with its exact records asserted; and the LAND packet that used to crash the reader.

- an RST a billion bytes outside the window (RFC 5961 stacks ignore it): ignored, counted;
- an RST the endpoint refuses (signed with TCP-MD5, or simply followed by more data in sequence
  from its sender): the connection goes on, the RST counted as refused;
- a forged ACK 100 MB ahead: no gap, no bytes taken for retransmissions;
- an inserted first copy of a request with a bad TCP checksum (the server drops it): the real copy
  sent after it wins, and the record says the two differed (`retransmission_mismatch`); one with
  a TTL too low to reach the server cannot be told from the real one by the capture: it wins, but
  not silently;
- a LAND SYN (same address and port at both ends) in the middle of real traffic: every record of
  the traffic is still written.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

from helpers import pcapgen as g
from helpers.env import corpus, read_records
from helpers.liveenv import read_jsonl, service, wait_until
from helpers.pcapgen import ACK, PSH, RST, SYN, Conn, Segment

T0 = 1_700_000_000 * 10**9
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
MD5_OPTION = bytes([19, 18]) + bytes(range(16))  # TCP-MD5 signature (RFC 2385): kind 19, length 18


def get(uri: str) -> bytes:
    return f"GET {uri} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode()


def frame(s: Segment, options: bytes = b"") -> bytes:
    """Ethernet + IPv4 + TCP (with `options`) of one segment, checksums right."""
    tcp = g.tcp_header(s, s.src, s.dst, options) + s.payload
    return g.ethernet(g.ipv4_header(s.src, s.dst, len(tcp)) + tcp)


def read(tmp_path: Path, packets: list[tuple[int, bytes]]) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    path = g.write_pcap(tmp_path / "cap.pcap", g.LINKTYPE_ETHERNET, packets)
    records, result, err = read_records(path)
    assert (err, result.files_failed) == ("", 0)
    return [(r["method"], r["uri"], r["status_code"], r["flags"], r["anomalies"], r["reason"]) for r in records], \
        result.stats


def two_requests(control: list[tuple[Segment, bytes]] | None = None) -> tuple[Conn, list[tuple[int, bytes]]]:
    """GET /a and its answer, then `control` (segments with their TCP options), then GET /b and its
    answer, then the close; as frames."""
    out: list[Segment] = []
    c = Conn(out, 1)
    c.open(T0)
    t = c.send(T0 + 10_000, True, get("/a"))
    t = c.send(t + 1000, False, OK)
    head = [(s.ts_ns, frame(s)) for s in out]
    out.clear()
    mid = [(s.ts_ns, frame(s, opts)) for s, opts in (control or [])]
    t += 100_000  # after `control`, whose times after_first() gives
    t = c.send(t, True, get("/b"))
    t = c.send(t + 1000, False, OK)
    c.close(t + 1000)
    return c, head + mid + [(s.ts_ns, frame(s)) for s in out]


def client_segment(c: Conn, ts: int, seq: int, flags: int, payload: bytes = b"") -> Segment:
    return Segment(ts, c.c, c.s, c.cp, c.sp, seq % (1 << 32), c.sseq, flags, payload)


def server_segment(c: Conn, ts: int, ack: int, flags: int = ACK) -> Segment:
    return Segment(ts, c.s, c.c, c.sp, c.cp, c.sseq, ack % (1 << 32), flags, b"")


BOTH = [("GET", "/a", 200, [], [], None), ("GET", "/b", 200, [], [], None)]


def after_first(gap_ns: int = 50_000) -> tuple[Conn, int]:
    """The connection as `two_requests` leaves it after GET /a and its answer, and a time then."""
    probe = Conn([], 1)
    probe.open(T0)
    t = probe.send(T0 + 10_000, True, get("/a"))
    return probe, probe.send(t + 1000, False, OK) + gap_ns


def test_rst_far_out_of_window_is_ignored(tmp_path: Path) -> None:
    c, t = after_first()
    _c, packets = two_requests([(client_segment(c, t, c.cseq + 1_000_000_000, RST | ACK), b"")])
    records, stats = read(tmp_path, packets)
    assert records == BOTH
    assert (stats["connections"]["resets_out_of_window"], stats["connections"]["reset"]) == (1, 0)


def test_signed_rst_refused_by_the_server(tmp_path: Path) -> None:
    """The RST, exactly at the next sequence number, carries a TCP-MD5 signature the server does
    not accept (a forgery): the client goes on with its next request in sequence, and so do the
    records."""
    c, t = after_first()
    _c, packets = two_requests([(client_segment(c, t, c.cseq, RST | ACK), MD5_OPTION)])
    records, stats = read(tmp_path, packets)
    assert records == BOTH
    assert (stats["connections"]["resets_refused"], stats["connections"]["reset"]) == (1, 0)


def test_rst_followed_by_data_in_sequence(tmp_path: Path) -> None:
    c, t = after_first()
    _c, packets = two_requests([(client_segment(c, t, c.cseq, RST | ACK), b"")])
    records, stats = read(tmp_path, packets)
    assert records == BOTH
    assert (stats["connections"]["resets_refused"], stats["connections"]["reset"]) == (1, 0)


def test_rst_with_a_bad_checksum_is_dropped(tmp_path: Path) -> None:
    """In a flow whose checksums are right, an RST with a wrong one never reached a stack."""
    c, t = after_first()
    rst = frame(client_segment(c, t, c.cseq, RST | ACK))
    at = 14 + 20 + 16
    rst = rst[:at] + struct.pack("!H", struct.unpack_from("!H", rst, at)[0] ^ 0x0F0F) + rst[at + 2:]
    _c, packets = two_requests()
    packets.insert(next(k for k, (ts, _f) in enumerate(packets) if ts > t), (t, rst))
    records, stats = read(tmp_path, packets)
    assert records == BOTH
    assert (stats["tcp"]["checksum_dropped_segments"], stats["connections"]["resets_refused"],
            stats["connections"]["reset"]) == (1, 0, 0)


def test_forged_ack_far_ahead(tmp_path: Path) -> None:
    c, t = after_first()
    _c, packets = two_requests([(server_segment(c, t, c.cseq + 100_000_000), b"")])
    records, stats = read(tmp_path, packets)
    assert records == BOTH
    assert (stats["tcp"]["gaps"], stats["tcp"]["gap_bytes"], stats["tcp"]["retransmitted_segments"]) == (0, 0, 0)


def _insertion(first: bytes) -> list[tuple[int, bytes]]:
    """Handshake; the request sent first as `first` (a frame), then for real; the answer; close."""
    out: list[Segment] = []
    c = Conn(out, 1)
    c.open(T0)
    seq = c.cseq
    real = get("/r1-secret")
    c.send(T0 + 20_000, True, real)
    t = c.send(T0 + 30_000, False, OK)
    c.close(t + 1000)
    frames = [(s.ts_ns, frame(s)) for s in out]
    assert len(get("/r1-benign")) == len(real) and out[3].seq == seq
    return [*frames[:3], (T0 + 10_000, first), *frames[3:]]


def test_inserted_copy_with_a_bad_checksum_loses(tmp_path: Path) -> None:
    c = Conn([], 1)
    fake = frame(client_segment(c, T0 + 10_000, c.cseq + 1, ACK | PSH, get("/r1-benign")))
    csum = 14 + 20 + 16
    fake = fake[:csum] + struct.pack("!H", struct.unpack_from("!H", fake, csum)[0] ^ 0x5555) + fake[csum + 2:]
    records, stats = read(tmp_path, _insertion(fake))
    assert records == [("GET", "/r1-secret", 200, [], ["retransmission_mismatch"], None)]
    assert (stats["tcp"]["checksum_dropped_segments"], stats["tcp"]["retransmission_mismatch_segments"]) == (1, 1)
    assert stats["anomalies"] == {"retransmission_mismatch": 1}


def test_inserted_copy_with_a_low_ttl_is_flagged(tmp_path: Path) -> None:
    """A copy that dies on the way (TTL) looks right in the capture: the first copy is kept, as
    every monitor must, but the record says its bytes were sent again differently."""
    c = Conn([], 1)
    fake = bytearray(frame(client_segment(c, T0 + 10_000, c.cseq + 1, ACK | PSH, get("/r1-benign"))))
    fake[14 + 8] = 1  # TTL 1 (the IP header checksum is not what the analyzer reads)
    records, stats = read(tmp_path, _insertion(bytes(fake)))
    assert records == [("GET", "/r1-benign", 200, [], ["retransmission_mismatch"], None)]
    assert stats["tcp"]["retransmission_mismatch_segments"] == 1


def land_capture(tmp_path: Path) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """mix.pcap with a LAND SYN (and an RST of it) from 10.9.9.9:139 to itself in the middle; and
    mix.pcap's own records and counters."""
    path = corpus("local", "mix.pcap")
    want, result, err = read_records(path)
    assert err == ""
    segs = g.read_segments(path)
    land = bytes([10, 9, 9, 9])
    mid = len(segs) // 2
    attack = [Segment(segs[mid].ts_ns, land, land, 139, 139, 77, 0, SYN, b""),
              Segment(segs[mid].ts_ns + 1, land, land, 139, 139, 78, 0, RST, b"")]
    frames = g.frames(segs[:mid] + attack + segs[mid:])
    return g.write_pcap(tmp_path / "land.pcap", g.LINKTYPE_ETHERNET, frames), want, result.stats


def test_land_packet_in_real_traffic(tmp_path: Path) -> None:
    """It used to be stored under one key twice and deleted twice (KeyError: the read died)."""
    lands, want, stats = land_capture(tmp_path)
    got, result, err = read_records(lands)
    assert (err, result.files_failed) == ("", 0)
    strip = [{k: v for k, v in r.items() if k != "pcap_file"} for r in want]
    assert [{k: v for k, v in r.items() if k != "pcap_file"} for r in got] == strip
    assert result.stats["connections"]["self_connections"] == 1
    assert result.stats["connections"]["connections"] == stats["connections"]["connections"] + 1


def test_land_packet_through_the_service(tmp_path: Path) -> None:
    """`pcapwatch run` on the same capture: every record, no error, still running."""
    lands, want, _stats = land_capture(tmp_path)
    (tmp_path / "spool").mkdir()
    conf, out = tmp_path / "pcapwatch.yaml", tmp_path / "out.jsonl"
    conf.write_text(f"spool: {{dir: {tmp_path / 'spool'}, rescan_seconds: 0.5}}\n"
                    f"state: {{dir: {tmp_path / 'state'}, checkpoint_seconds: 1.0}}\n"
                    f"outputs:\n  - {{name: records, type: jsonl, path: {out}}}\n")
    with service(conf, tmp_path / "stderr") as svc:
        shutil.copy(lands, tmp_path / "spool" / "cap.pcap")
        assert wait_until(lambda: out.exists() and len(read_jsonl(out)) >= len(want) - 1, 60)
        assert svc.proc.poll() is None
        assert svc.lines("error") == [] and svc.lines("warning") == []
    got = read_jsonl(out)  # the last connection's records may come at the service's stop
    assert sorted((r["uid"], r["trans_depth"], r["uri"], r["status_code"]) for r in got) == sorted(
        (r["uid"], r["trans_depth"], r["uri"], r["status_code"]) for r in want)
