"""flows.FlowTable: connections from decoded packets, client/server roles, and how they end."""

from __future__ import annotations

import ipaddress
from typing import Any

from analyzers.flows import RST_GRACE_SECONDS, FlowTable
from analyzers.records import to_record
from analyzers.side import Side
from analyzers.tcp.frames import ACK, FIN, RST, SYN
from analyzers.tcp.limits import HOLE_WAIT_SECONDS

PSH = 0x08
OK0 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
OK2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TLS_HELLO = bytes.fromhex("16030100f4010000f00303") + bytes(range(32))


def ip(text: str) -> int:
    """An IPv4 address as frames.py decodes it."""
    return int(ipaddress.IPv4Address(text))


def get(uri: str) -> bytes:
    return f"GET {uri} HTTP/1.1\r\nHost: h\r\n\r\n".encode()


class Tcp:
    """One TCP connection's packets, with sequence numbers kept for both sides."""

    def __init__(self, table: FlowTable, client: tuple[str, int] = ("10.0.0.1", 40000),
                 server: tuple[str, int] = ("10.0.0.2", 80), cisn: int = 1000, sisn: int = 5000) -> None:
        self.table = table
        self.caddr, self.cport = ip(client[0]), client[1]
        self.saddr, self.sport = ip(server[0]), server[1]
        self.cseq, self.sseq = cisn, sisn

    def c(self, ts: float, payload: bytes = b"", flags: int = ACK | PSH, seq: int | None = None) -> None:
        """A packet from the client (at the next sequence number unless `seq` is given)."""
        if seq is not None:
            self.table.packet(ts, (self.caddr, self.saddr, self.cport, self.sport, seq, self.sseq, flags, payload))
            return
        self.table.packet(ts, (self.caddr, self.saddr, self.cport, self.sport, self.cseq, self.sseq, flags, payload))
        self.cseq += len(payload) + (1 if flags & (SYN | FIN) else 0)

    def s(self, ts: float, payload: bytes = b"", flags: int = ACK | PSH) -> None:
        """A packet from the server."""
        self.table.packet(ts, (self.saddr, self.caddr, self.sport, self.cport, self.sseq, self.cseq, flags, payload))
        self.sseq += len(payload) + (1 if flags & (SYN | FIN) else 0)

    def handshake(self, ts: float) -> None:
        self.c(ts, flags=SYN)
        self.s(ts + 0.001, flags=SYN | ACK)
        self.c(ts + 0.002, flags=ACK)

    def close(self, ts: float) -> None:
        self.c(ts, flags=FIN | ACK)
        self.s(ts + 0.001, flags=FIN | ACK)
        self.c(ts + 0.002, flags=ACK)


def records(table: FlowTable) -> list[dict[str, Any]]:
    out = [to_record(tx) for tx in table.out]
    table.out.clear()
    return out


def who(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["method"], r["uri"], r["status_code"],
            r["flags"], r["reason"])


def test_handshake_request_response_fin_both_ways() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.s(1.2, OK2)
    t.close(1.3)
    (r,) = records(ft)
    assert who(r) == ("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/a", 200, [], None)
    assert (r["ts"], r["ttfb_ms"], r["duration_ms"], r["response_body_len"]) == (1.1, 100.0, 100.0, 2)
    assert r["uid"].startswith("C") and len(r["uid"]) == 18
    c = ft.counters
    assert (c.connections, c.midstream, c.closed, c.reset, ft.active, len(ft.table)) == (1, 0, 1, 0, 0, 0)


def test_syn_ack_seen_first_makes_its_sender_the_server() -> None:
    ft = FlowTable()
    t = Tcp(ft, client=("10.0.0.1", 8080), server=("10.0.0.2", 40000))  # ports that would mislead a guess
    t.cseq += 1
    t.s(1.0, flags=SYN | ACK)
    t.c(1.1, get("/a"))
    t.s(1.2, OK0)
    (r,) = records(ft)
    assert who(r) == ("10.0.0.1", 8080, "10.0.0.2", 40000, "GET", "/a", 200, [], None)
    assert ft.counters.midstream == 0


def test_entries_streams_and_parsers_speak_side_whoever_is_seen_first() -> None:
    """The table's entry for a packet names its sender's side and the peer's; the connection's
    streams and parsers are indexed by side, the same whether the client or the server was seen
    first (the seen-first order stays inside the table)."""
    for first in ("SYN", "SYN-ACK", "response midstream"):
        ft = FlowTable()
        t = Tcp(ft)
        if first == "SYN":
            t.handshake(1.0)
        elif first == "SYN-ACK":
            t.cseq += 1
            t.s(1.0, flags=SYN | ACK)
        else:
            t.s(1.0, OK0)
        t.c(1.1, get("/a"))
        conn, side, peer = ft.table[(t.caddr, t.cport, t.saddr, t.sport)]
        assert (side, peer) == (Side.CLIENT, Side.SERVER), first
        assert ft.table[(t.saddr, t.sport, t.caddr, t.cport)] == (conn, Side.SERVER, Side.CLIENT), first
        assert conn.streams[Side.CLIENT].offset == len(get("/a")), first
        assert conn.conv is not None and conn.parsers == (conn.conv.client, conn.conv.server), first
        assert [p.side for p in conn.parsers] == [Side.CLIENT, Side.SERVER], first
        assert conn.first is (Side.CLIENT if first == "SYN" else Side.SERVER), first


def test_one_fin_does_not_close() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.c(1.2, flags=FIN | ACK)
    t.s(1.3, OK0)
    assert [who(r) for r in records(ft)] == [("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/a", 200, [], None)]
    assert (ft.active, ft.counters.closed) == (1, 0)
    t.s(1.4, flags=FIN | ACK)
    assert (ft.active, ft.counters.closed) == (0, 1)


def test_rst_closes_and_flushes_unanswered_requests() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.s(1.2, flags=RST | ACK)
    # The RST is believed when its sender has not gone on sending for RST_GRACE_SECONDS (a
    # refused RST is followed by more data in sequence): the sweep or the next packet says so.
    assert records(ft) == []
    ft.sweep(1.2 + RST_GRACE_SECONDS + 0.01)
    assert [who(r) for r in records(ft)] == [
        ("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/a", None, ["no_response"], "reset")]
    assert (ft.counters.reset, ft.counters.closed, ft.active) == (1, 0, 0)


def test_midstream_client_found_by_request_line() -> None:
    ft = FlowTable()
    t = Tcp(ft, client=("10.0.0.1", 8080), server=("10.0.0.2", 50000))  # ports say the opposite
    t.c(1.0, get("/a"))
    t.s(1.1, OK0)
    (r,) = records(ft)
    assert who(r) == ("10.0.0.1", 8080, "10.0.0.2", 50000, "GET", "/a", 200, ["midstream"], None)
    assert ft.counters.midstream == 1


def test_midstream_client_found_by_status_line() -> None:
    ft = FlowTable()
    t = Tcp(ft, client=("10.0.0.1", 80), server=("10.0.0.2", 50000))
    t.s(1.0, OK2)
    t.c(1.1, get("/b"))
    t.s(1.2, OK0)
    assert [who(r) for r in records(ft)] == [
        ("10.0.0.1", 80, "10.0.0.2", 50000, None, None, 200, ["midstream", "no_request"], "no_request"),
        ("10.0.0.1", 80, "10.0.0.2", 50000, "GET", "/b", 200, ["midstream"], None),
    ]


def test_midstream_client_found_by_port() -> None:
    """Neither first packet is a start line: the well-known port names the server."""
    for server_speaks_first in (False, True):
        ft = FlowTable()
        t = Tcp(ft, client=("10.0.0.1", 40000), server=("10.0.0.2", 8080))
        if server_speaks_first:
            t.s(1.0, b"rest of a response body\n")
        else:
            t.c(1.0, b"rest of a request body\n")
        t.c(1.1, get("/c"))
        t.s(1.2, OK0)
        assert [who(r) for r in records(ft)] == [
            ("10.0.0.1", 40000, "10.0.0.2", 8080, "GET", "/c", 200, ["midstream"], None)], server_speaks_first


def test_one_client_port_to_two_servers() -> None:
    ft = FlowTable()
    t1 = Tcp(ft, server=("10.0.0.2", 80))
    t2 = Tcp(ft, server=("10.0.0.3", 80))
    t1.handshake(1.0)
    t2.handshake(1.0)
    t1.c(1.1, get("/one"))
    t2.c(1.1, get("/two"))
    t2.s(1.2, OK2)
    t1.s(1.3, OK0)
    rs = records(ft)
    assert [who(r) for r in rs] == [
        ("10.0.0.1", 40000, "10.0.0.3", 80, "GET", "/two", 200, [], None),
        ("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/one", 200, [], None),
    ]
    assert rs[0]["uid"] != rs[1]["uid"]
    assert (ft.counters.connections, ft.active) == (2, 2)


def test_port_reuse_with_a_new_isn() -> None:
    ft = FlowTable()
    old = Tcp(ft, cisn=1000)
    old.handshake(1.0)
    old.c(1.1, get("/old"))
    old.c(1.15, get("/old"), seq=1001)  # a retransmission: the same bytes again
    old.c(1.2, flags=SYN, seq=1000)  # not a new connection: the same ISN (a retransmitted SYN)
    assert ft.counters.port_reuse == 0
    new = Tcp(ft, cisn=900000, sisn=77000)
    new.handshake(5.0)
    new.c(5.1, get("/new"))
    new.s(5.2, OK0)
    rs = records(ft)
    assert [who(r) for r in rs] == [
        ("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/old", None, ["no_response"], "port_reuse"),
        ("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/new", 200, [], None),
    ]
    assert rs[0]["uid"] != rs[1]["uid"]
    assert (ft.counters.port_reuse, ft.counters.connections, ft.active) == (1, 2, 1)
    assert ft.tcp.retransmitted_segments == 1


def test_port_reuse_after_a_connection_without_payload() -> None:
    """A SYN with a new ISN starts a new connection even if the old one never carried data
    (its close was not captured); its bytes must not be read as 899,000 bytes past the old ISN."""
    ft = FlowTable()
    Tcp(ft, cisn=1000).handshake(1.0)
    new = Tcp(ft, cisn=900000, sisn=77000)
    new.handshake(5.0)
    new.c(5.1, get("/new"))
    new.s(5.2, OK0)
    assert [who(r) for r in records(ft)] == [("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/new", 200, [], None)]
    assert (ft.counters.port_reuse, ft.tcp.gaps, ft.tcp.gap_bytes) == (1, 0, 0)


def test_idle_timeout_by_capture_time() -> None:
    ft = FlowTable(idle_timeout=60.0)
    a = Tcp(ft, client=("10.0.0.1", 40000))
    b = Tcp(ft, client=("10.0.0.9", 41000))
    a.handshake(100.0)
    a.c(100.1, get("/a"))
    b.handshake(100.2)
    b.c(150.0, get("/b"))
    assert (records(ft), ft.counters.idle_timeouts) == ([], 0)
    b.s(170.5, OK0)  # 70 s after a's last packet; the sweep runs every 10 s of capture time
    assert [who(r) for r in records(ft)] == [
        ("10.0.0.9", 41000, "10.0.0.2", 80, "GET", "/b", 200, [], None),
        ("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/a", None, ["no_response"], "idle_timeout"),
    ]
    assert (ft.counters.idle_timeouts, ft.active) == (1, 1)


def test_max_connections_evicts_the_least_recent() -> None:
    ft = FlowTable(max_connections=3)
    conns = [Tcp(ft, client=("10.0.0.1", 40000 + i)) for i in range(4)]
    for i, t in enumerate(conns[:3]):
        t.handshake(1.0 + i)
        t.c(1.5 + i, get(f"/{i}"))
    conns[0].s(10.0, OK0)  # connection 0 is now the most recent; 1 the least
    assert [r["uri"] for r in records(ft)] == ["/0"]
    conns[3].handshake(11.0)
    assert [who(r) for r in records(ft)] == [
        ("10.0.0.1", 40001, "10.0.0.2", 80, "GET", "/1", None, ["no_response"], "evicted")]
    assert (ft.counters.evicted, ft.counters.connections, ft.active) == (1, 4, 3)


def test_non_http_connection_is_ignored_and_counted() -> None:
    ft = FlowTable()
    t = Tcp(ft, server=("10.0.0.2", 443))
    t.handshake(1.0)
    t.c(1.1, TLS_HELLO)
    t.s(1.2, b"\x16\x03\x03\x00\x40" + bytes(64))
    t.c(1.3, b"\x17\x03\x03\x00\x20" + get("/x"))
    t.close(1.4)
    assert records(ft) == []
    c = ft.counters
    # After the second FIN the connection is gone: the last ACK is a late packet of a closed one.
    assert (c.not_http, c.ignored_packets, c.closed, c.late_packets, c.untracked_packets, ft.active) == (
        1, 4, 1, 1, 0, 0)
    assert ft.anomalies == {"not_http": 1}


def test_packets_of_unknown_connections_without_payload_are_untracked() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.c(1.0, flags=ACK)
    t.s(1.1, flags=FIN | ACK)
    assert (ft.counters.untracked_packets, ft.counters.connections, ft.active) == (2, 0, 0)


def test_out_of_order_request_segments_are_reassembled() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    first, second = b"GET /split HTTP/1.1\r\n", b"Host: h\r\n\r\n"
    t.cseq += len(first)
    t.c(1.1, second)
    t.cseq -= len(first) + len(second)
    t.c(1.2, first)
    t.cseq += len(second)
    t.s(1.3, OK0)
    assert [who(r) for r in records(ft)] == [("10.0.0.1", 40000, "10.0.0.2", 80, "GET", "/split", 200, [], None)]
    assert ft.tcp.out_of_order_segments == 1


def test_ack_past_a_lost_response_segment_makes_a_gap() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    t.s(1.2, head + b"abc")
    t.sseq += 4  # "defg" never reaches the capture
    t.s(1.3, b"hij")
    t.c(1.4, get("/b"), flags=ACK | PSH)  # the client acknowledges all ten body bytes
    t.s(1.5, OK0)
    assert records(ft) == []  # "defg" may still turn up later in the capture
    t.c(1.4 + HOLE_WAIT_SECONDS, b"", flags=ACK)  # it has not: a gap
    rs = records(ft)
    assert [(r["uri"], r["status_code"], r["response_body_len"], r["flags"]) for r in rs] == [
        ("/a", 200, 10, ["gap"]), ("/b", 200, 0, [])]
    assert (ft.tcp.gaps, ft.tcp.gap_bytes) == (1, 4)


def test_close_all_at_capture_end() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.s(1.2, b"HTTP/1.1 200 OK\r\n\r\npartial body")
    ft.close_all()
    assert [(r["uri"], r["status_code"], r["response_body_len"], r["flags"], r["reason"]) for r in records(ft)] == [
        ("/a", 200, 12, [], None)]
    assert ft.active == 0


# Hostile and unusual control packets (issue 9) -------------------------------------------------


def test_land_packet_is_counted_and_ignored() -> None:
    """Source and destination address and port equal: one key for both directions. It used to be
    stored twice under that key and deleted twice at its end (KeyError)."""
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    land = ip("10.0.0.9")
    ft.packet(1.05, (land, land, 139, 139, 77, 0, SYN, b""))
    ft.packet(1.06, (land, land, 139, 139, 78, 0, RST, b""))
    t.c(1.1, get("/a"))
    t.s(1.2, OK0)
    ft.packet(1.3, (land, land, 139, 139, 77, 0, SYN, b""))
    ft.close_all()
    assert [who(r)[4:] for r in records(ft)] == [("GET", "/a", 200, [], None)]
    assert (ft.counters.self_connections, ft.active, len(ft.table)) == (2, 0, 0)


def test_tcp_fast_open_data_on_the_syn() -> None:
    """The SYN's data starts one past its sequence number: `GET`, not `ET`, and no gap after it."""
    ft = FlowTable()
    t = Tcp(ft)
    req = get("/tfo")
    t.c(1.0, req[:20], flags=SYN)
    t.s(1.001, flags=SYN | ACK)
    t.c(1.002, req[20:], flags=ACK | PSH)
    t.s(1.003, OK0)
    t.close(1.1)
    assert [(r["method"], r["uri"], r["status_code"], r["flags"]) for r in records(ft)] == [("GET", "/tfo", 200, [])]
    assert ft.tcp.gaps == 0


def test_rst_far_out_of_window_is_ignored() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.s(1.2, OK0)
    t.c(1.3, flags=RST | ACK, seq=t.cseq + 1_000_000_000)  # RFC 5961 stacks ignore it
    t.c(1.4, get("/b"))
    t.s(1.5, OK0)
    t.close(1.6)
    assert [who(r)[5:] for r in records(ft)] == [("/a", 200, [], None), ("/b", 200, [], None)]
    assert (ft.counters.resets_out_of_window, ft.counters.reset, ft.counters.closed) == (1, 0, 1)


def test_rst_refused_by_its_endpoint_data_goes_on_in_sequence() -> None:
    """An RST in window that the endpoint did not take (a forged or unsigned one where TCP-MD5 or
    TCP-AO is in use): its sender goes on sending in sequence, and so does the connection."""
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.c(1.15, flags=RST | ACK, seq=t.cseq)  # exactly at the next sequence number
    t.s(1.2, OK0)  # held while the RST is in doubt
    t.c(1.3, get("/b"))  # the client goes on: the RST was refused
    t.s(1.4, OK0)
    t.close(1.5)
    assert [who(r)[5:] for r in records(ft)] == [("/a", 200, [], None), ("/b", 200, [], None)]
    assert (ft.counters.resets_refused, ft.counters.reset, ft.counters.closed) == (1, 0, 1)


def test_rst_confirmed_later_ends_at_its_own_time() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.s(1.2, flags=RST | ACK)
    t.c(1.25, get("/x"))  # in flight from the peer: held, then late
    t.c(1.2 + RST_GRACE_SECONDS + 1, get("/b"))  # too late to refute the RST
    assert [who(r)[4:] for r in records(ft)] == [("GET", "/a", None, ["no_response"], "reset")]
    assert (ft.counters.reset, ft.counters.late_packets, ft.active) == (1, 2, 0)


def test_forged_ack_far_ahead_hides_nothing() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    ft.packet(1.15, (t.saddr, t.caddr, t.sport, t.cport, t.sseq, (t.cseq + 100_000_000) % (1 << 32), ACK, b""))
    t.s(1.2, OK0)
    t.c(3.0, get("/b"))
    t.s(3.1, OK0)
    t.c(5.0, get("/c"))
    t.s(5.1, OK0)
    t.close(6.0)
    assert [who(r)[5:] for r in records(ft)] == [("/a", 200, [], None), ("/b", 200, [], None),
                                                 ("/c", 200, [], None)]
    assert (ft.tcp.gaps, ft.tcp.retransmitted_segments, ft.tcp.acks_beyond_seen) == (0, 0, 1)


def test_retransmission_with_other_bytes_flags_the_request() -> None:
    """Insertion: a first copy the server dropped (bad checksum, low TTL) was delivered; the real
    copy is a retransmission with other bytes: the request is flagged."""
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    seq = t.cseq
    t.c(1.1, get("/r1-benign"))
    t.c(1.15, get("/r1-secret"), seq=seq)
    t.s(1.2, OK0)
    t.close(1.3)
    (r,) = records(ft)
    assert (r["uri"], r["anomalies"]) == ("/r1-benign", ["retransmission_mismatch"])
    assert (ft.tcp.retransmission_mismatch_segments, ft.anomalies["retransmission_mismatch"]) == (1, 1)


def test_fin_far_out_of_window_is_ignored() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    t.c(1.15, flags=FIN | ACK, seq=t.cseq + 500_000_000)  # a blind FIN: the stream does not end there
    t.s(1.2, OK0)
    t.c(1.3, get("/b"))
    t.s(1.4, OK0)
    t.close(1.5)
    assert [who(r)[5:] for r in records(ft)] == [("/a", 200, [], None), ("/b", 200, [], None)]
    assert (ft.counters.fins_out_of_window, ft.counters.closed, ft.tcp.gaps) == (1, 1, 0)


def test_request_before_its_answer_when_the_capture_shows_them_the_other_way() -> None:
    """The response's ACK covers a request segment the capture shows only after the response: the
    response waits for it (HTTP pairs a response with a request already seen)."""
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    req = get("/late")
    seq = t.cseq
    t.cseq += len(req)  # the request is on the wire, its segment late in the capture
    t.s(1.2, OK0)
    t.c(1.21, req, seq=seq)
    t.close(1.3)
    rs = records(ft)
    assert [(r["uri"], r["status_code"], r["flags"], r["ts"]) for r in rs] == [("/late", 200, [], 1.21)]
    assert (ft.tcp.gaps, ft.tcp.retransmitted_segments) == (0, 0)


def test_data_sent_before_an_rst_but_captured_after_is_taken_and_does_not_refute_it() -> None:
    ft = FlowTable()
    t = Tcp(ft)
    t.handshake(1.0)
    t.c(1.1, get("/a"))
    seq = t.sseq
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    t.sseq += len(body)
    t.s(1.2, flags=RST | ACK)  # its number is past the response, captured after it
    ft.packet(1.21, (t.saddr, t.caddr, t.sport, t.cport, seq, t.cseq, ACK | PSH, body))
    ft.sweep(1.2 + RST_GRACE_SECONDS + 0.01)
    assert [who(r)[4:] for r in records(ft)] == [("GET", "/a", 200, [], None)]
    assert (ft.counters.resets_refused, ft.counters.reset, ft.counters.late_packets) == (0, 1, 0)
