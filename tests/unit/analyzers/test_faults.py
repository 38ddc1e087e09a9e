"""faults: one packet's exception costs its connection (closed, `internal_error`), never the
analysis; the same through `feed` and `feed_records`, the error noted with the packet's position."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import pcapgen as g
from helpers.faulty import failing_data
from helpers.keepalive import keepalive

from analyzers.flows import FlowTable
from analyzers.http.messages import Transaction
from analyzers.http.parser import MessageParser
from analyzers.pipeline import Pipeline, split_records
from analyzers.tcp.frames import ACK, RST, SYN
from watcher.capture.pcapfile import CaptureParser
from watcher.read.lines import record_line

BOOM = b"GET /2/1 "  # the second request of connection 2: its analysis raises


def run(data: bytes, fast: bool) -> tuple[list[str], Pipeline]:
    p = Pipeline()
    p.set_source("cap.pcap")
    txs: list[Transaction] = []
    if fast:
        parser = CaptureParser()
        start = parser.header(data, 0)
        layout = parser.record_layout()
        assert layout is not None
        offsets, _ = split_records(data, start, len(data), layout)
        txs += p.feed_records(data, offsets, layout)
    else:
        for linktype, frames in CaptureParser().parse(data, 0)[0]:
            txs += p.feed(linktype, frames)
    txs += p.close()
    return [record_line(t) for t in txs], p


def capture(segments: list[g.Segment]) -> bytes:
    return g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments))


def boom_offset(data: bytes) -> int:
    """The file offset of the record holding BOOM."""
    return data.index(BOOM) - 16 - 14 - 20 - 20


def traffic() -> list[g.Segment]:
    return keepalive(seed=3, mss=(1460,))


@pytest.fixture
def raising(monkeypatch: pytest.MonkeyPatch) -> None:
    make_raise(monkeypatch)


def make_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MessageParser, "data", failing_data(BOOM, lambda: ValueError("synthetic failure")))


@pytest.mark.parametrize("fast", [False, True])
def test_a_packet_that_raises_costs_its_connection_only(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    data = capture(traffic())
    want, _ = run(data, fast)
    make_raise(monkeypatch)
    got, p = run(data, fast)
    assert [line for line in got if '"/2/' not in line] == [line for line in want if '"/2/' not in line]
    assert [line for line in got if '"/2/' in line] == [line for line in want if '"/2/0"' in line]
    c = p.stats()["connections"]
    assert c["internal_errors"] == 1 and c["dropped_broken"] == 0
    assert c["late_packets"] > 0  # its later packets: counted, not a new connection


def uri(line: str) -> str:
    return line.split('"uri":"')[1].split('"')[0]


@pytest.mark.parametrize("fast", [False, True])
def test_the_error_says_where(raising: None, fast: bool) -> None:
    data = capture(traffic())
    _, p = run(data, fast)
    errors = p.take_errors()
    assert [(e.pos, e.error) for e in errors] == [(boom_offset(data), "ValueError: synthetic failure")]
    assert p.take_errors() == []


def test_without_failure_nothing_is_counted() -> None:
    data = capture(traffic())
    lines, p = run(data, True)
    assert len(lines) == sum(1 for s in traffic() if s.payload.startswith(b"GET "))
    assert p.stats()["connections"]["internal_errors"] == 0 and p.take_errors() == []


@pytest.mark.parametrize("fast", [False, True])
def test_closing_that_raises_drops_the_connection(monkeypatch: pytest.MonkeyPatch, raising: None,
                                                  fast: bool) -> None:
    real = FlowTable._finish

    def finish(self: FlowTable, conn: Any, reason: str) -> None:
        if reason == "internal_error":
            raise KeyError("broken state")
        real(self, conn, reason)

    monkeypatch.setattr(FlowTable, "_finish", finish)
    data = capture(traffic())
    got, p = run(data, fast)
    c = p.stats()["connections"]
    assert c["internal_errors"] == 1 and c["dropped_broken"] == 1 and c["active"] == 0
    assert [uri(line) for line in got if '"/2/' in line] == ["/2/0"]
    assert len([line for line in got if '"/2/' not in line]) == sum(
        1 for s in keepalive(seed=3) if s.payload.startswith(b"GET ") and b" /2/" not in s.payload)


def land(ts_ns: int) -> list[g.Segment]:
    """A SYN then an RST whose source and destination address and port are equal."""
    a = bytes([10, 9, 9, 9])
    return [g.Segment(ts_ns, a, a, 80, 80, 1, 0, SYN, b""), g.Segment(ts_ns + 1000, a, a, 80, 80, 2, 0, RST | ACK, b"")]


@pytest.mark.parametrize("fast", [False, True])
def test_a_land_pair_costs_nothing_else(fast: bool) -> None:
    segs = traffic()
    mid = segs[len(segs) // 2].ts_ns
    with_land = sorted(segs + land(mid + 1), key=lambda s: s.ts_ns)
    want, _ = run(capture(segs), fast)
    got, p = run(capture(with_land), fast)
    assert got == want
    errors = p.take_errors()
    assert p.stats()["connections"]["internal_errors"] == len(errors) <= 1  # 1 while the LAND bug is there
