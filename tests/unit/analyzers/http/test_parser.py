"""http_parser.MessageParser: one direction's framing, fed bytes, gaps and end of stream.

Like h11's tests, every case is fed whole, then one byte at a time, then (inputs of a few hundred
bytes) split in two at every offset: the events reported to the sink must be the same each time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import pytest

from analyzers.http.anomalies import Anomaly
from analyzers.http.framing import MAX_LINE_BYTES
from analyzers.http.head import MAX_HEAD_BYTES, Headers, RequestHead, ResponseHead
from analyzers.http.parser import MessageParser, State
from analyzers.http.resync import NOT_HTTP_PROBE_BYTES
from analyzers.side import Side

Event = tuple[object, ...]
Op = tuple[str, object, float]  # ("data", bytes, ts) | ("gap", n, ts) | ("eof", None, ts)
Splitter = Callable[[int, bytes], list[bytes]]


class Recorder:
    """A MessageSink that writes down what the parser reports, in order."""

    def __init__(self, methods: tuple[str | None, ...] = (), headless: bool = False) -> None:
        self.events: list[Event] = []
        self.methods = deque(methods)  # the request method each response answers, in order
        self.headless = headless

    def on_head(self, parser: MessageParser, head: RequestHead | ResponseHead, first_ts: float,
                ts: float) -> str | None:
        assert all(isinstance(a, Anomaly) for a in head.anomalies), head.anomalies  # named, never bare strings
        if isinstance(head, RequestHead):
            self.events.append(("head", head.method, head.uri, head.version, list(head.anomalies), first_ts, ts))
            return None
        self.events.append(("head", head.status, head.reason, head.version, list(head.anomalies), first_ts, ts))
        return self.methods.popleft() if self.methods else None

    def on_begin(self, parser: MessageParser) -> None:
        pass

    def on_end(self, parser: MessageParser, ts: float) -> None:
        self.events.append(("end", parser.body_len, parser.gap_in_message, parser.truncated, ts))

    def on_anomaly(self, parser: MessageParser, name: str) -> None:
        assert isinstance(name, Anomaly), name
        self.events.append(("anomaly", name))

    def on_gap(self, parser: MessageParser, n: int, ts: float) -> None:
        self.events.append(("gap", n))

    def headless_response(self) -> bool:
        return self.headless

    def on_late_headers(self, parser: MessageParser, headers: Headers, anomalies: tuple[str, ...]) -> None:
        assert all(isinstance(a, Anomaly) for a in anomalies), anomalies
        self.events.append(("late_headers", headers, list(anomalies)))


def whole(i: int, data: bytes) -> list[bytes]:
    return [data]


def bytewise(i: int, data: bytes) -> list[bytes]:
    return [data[k:k + 1] for k in range(len(data))]


def run(ops: list[Op], side: Side = Side.CLIENT, split: Splitter = whole, resync: bool = False,
        methods: tuple[str | None, ...] = (), headless: bool = False) -> tuple[list[Event], MessageParser]:
    sink = Recorder(methods, headless)
    parser = MessageParser(side, sink, resync)
    for i, (kind, arg, ts) in enumerate(ops):
        if kind == "data":
            assert isinstance(arg, bytes)
            for piece in split(i, arg):
                parser.data(piece, ts)
        elif kind == "gap":
            assert isinstance(arg, int)
            parser.gap(arg, ts)
        else:
            parser.eof(ts)
    return sink.events, parser


def splitters(ops: list[Op]) -> Iterator[tuple[str, Splitter]]:
    """Byte at a time, then for short inputs every two-piece split of every data op."""
    yield "bytewise", bytewise
    if sum(len(a) for k, a, _ in ops if k == "data" and isinstance(a, bytes)) > 600:
        return
    for i, (kind, arg, _ts) in enumerate(ops):
        if kind != "data" or not isinstance(arg, bytes):
            continue
        for cut in range(1, len(arg)):
            def split(j: int, data: bytes, i: int = i, cut: int = cut) -> list[bytes]:
                return [data[:cut], data[cut:]] if j == i else [data]
            yield f"op {i} cut at {cut}", split


def events(ops: list[Op], side: Side = Side.CLIENT, **kw: object) -> list[Event]:
    """The events of feeding `ops` whole, after checking every other split gives the same."""
    expected, parser = run(ops, side, whole, **kw)  # type: ignore[arg-type]
    for name, split in splitters(ops):
        got, other = run(ops, side, split, **kw)  # type: ignore[arg-type]
        assert got == expected, f"fed {name}"
        assert (other.state, other.messages) == (parser.state, parser.messages), f"fed {name}"
    return expected


def D(data: bytes, ts: float = 1.0) -> Op:
    return ("data", data, ts)


def GAP(n: int, ts: float = 1.0) -> Op:
    return ("gap", n, ts)


def EOF(ts: float = 9.0) -> Op:
    return ("eof", None, ts)


# Requests -------------------------------------------------------------------------------------


def test_simple_request() -> None:
    assert events([D(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")]) == [
        ("head", "GET", "/", "1.1", [], 1.0, 1.0),
        ("end", 0, False, False, 1.0),
    ]


def test_head_split_across_packets_keeps_both_times() -> None:
    assert events([D(b"GET / HTTP/1.1\r\nHo", 1.0), D(b"st: h\r\n\r\n", 2.0)]) == [
        ("head", "GET", "/", "1.1", [], 1.0, 2.0),
        ("end", 0, False, False, 2.0),
    ]


def test_keep_alive_requests_with_bodies() -> None:
    assert events([
        D(b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 1.0),
        D(b"PUT /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", 2.0),
        D(b"c", 2.5),
        D(b"DELETE /c HTTP/1.1\r\n\r\n", 3.0),
    ]) == [
        ("head", "POST", "/a", "1.1", [], 1.0, 1.0), ("end", 5, False, False, 1.0),
        ("head", "PUT", "/b", "1.1", [], 2.0, 2.0), ("end", 3, False, False, 2.5),
        ("head", "DELETE", "/c", "1.1", [], 3.0, 3.0), ("end", 0, False, False, 3.0),
    ]


def test_empty_lines_between_requests_are_skipped() -> None:
    """RFC 9112 section 2.2: a server ignores empty lines before a request line."""
    assert events([D(b"\r\n\r\nGET /a HTTP/1.1\r\n\r\n\r\n\nGET /b HTTP/1.1\r\n\r\n")]) == [
        ("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("head", "GET", "/b", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


def test_bare_lf_head() -> None:
    """Read as CRLF heads are, and named: some servers refuse bare LF line ends."""
    assert events([D(b"GET /a HTTP/1.0\nHost: h\n\nGET /b HTTP/1.0\n\n")]) == [
        ("head", "GET", "/a", "1.0", ["bare_lf"], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("head", "GET", "/b", "1.0", ["bare_lf"], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


def test_http09_request_is_one_line() -> None:
    assert events([D(b"GET /x\r\n")]) == [
        ("head", "GET", "/x", "0.9", [], 1.0, 1.0),
        ("end", 0, False, False, 1.0),
    ]


def test_garbage_request_line_is_a_request_with_an_anomaly() -> None:
    assert events([D(b"GARBAGE\r\n\r\n")]) == [
        ("head", None, None, None, ["bad_request_line"], 1.0, 1.0),
        ("end", 0, False, False, 1.0),
    ]


def test_chunked_with_extensions_and_trailers() -> None:
    body = (b"5;name=value\r\nhello\r\n3;x;y=\"q\"\r\nabc\r\n0;last\r\n"
            b"Trailer-A: 1\r\nTrailer-B: 2\r\n\r\n")
    head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert events([D(head + body + b"GET /n HTTP/1.1\r\n\r\n")]) == [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0), ("end", 8, False, False, 1.0),
        ("head", "GET", "/n", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


def test_chunked_hex_sizes_and_bare_lf() -> None:
    body = b"A\nabcdefghij\n00000000000000000000001\nk\n0\n\n"
    assert events([D(b"POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n" + body)]) == [
        ("head", "POST", "/c", "1.1", ["bare_lf"], 1.0, 1.0), ("end", 11, False, False, 1.0),
    ]


def test_bad_chunk_size_cuts_the_message_and_resyncs() -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n"
    assert events([D(data)]) == [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0),
        ("anomaly", "bad_chunk_size"),
        ("end", 0, False, True, 1.0),
        ("head", "GET", "/n", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


@pytest.mark.parametrize("size", [b"10000000000000000", b"8000000000000000", b"ffffffffffffffffffff"])
def test_chunk_size_overflow(size: bytes) -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" + size + b"\r\nxyz"
    assert events([D(data), D(b"\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n", 2.0)]) == [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0),
        ("anomaly", "chunk_size_overflow"),
        ("end", 3, False, True, 1.0),
        ("head", "GET", "/n", "1.1", [], 2.0, 2.0), ("end", 0, False, False, 2.0),
    ]


def test_largest_chunk_size_is_not_an_overflow() -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nabc"
    evs, parser = run([D(data)])
    assert evs == [("head", "POST", "/c", "1.1", [], 1.0, 1.0)]
    assert (parser.state, parser.remaining, parser.body_len) == (State.CHUNK_DATA, (1 << 63) - 4, 3)


def test_bad_chunk_terminator_is_named_and_read_as_a_size() -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc2\r\nde\r\n0\r\n\r\n"
    assert events([D(data)]) == [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0),
        ("anomaly", "bad_chunk_terminator"),
        ("end", 5, False, False, 1.0),
    ]


def test_oversized_chunk_line_whatever_the_segmentation() -> None:
    """A chunk line over MAX_LINE_BYTES is an anomaly whether it arrives in one piece or many."""
    line = b"3;" + b"e" * (MAX_LINE_BYTES + 10) + b"\r\n"
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + line + b"abc\r\n0\r\n\r\n"
    expected: list[Event] = [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0),
        ("anomaly", "oversized_chunk_line"),
        ("end", 0, False, True, 1.0),
    ]
    assert run([D(data)], split=bytewise)[0] == expected
    assert run([D(data)])[0] == expected


FIRST = b"GET /first HTTP/1.1\r\n\r\n"
FIRST_EVENTS: list[Event] = [("head", "GET", "/first", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_oversized_head_whatever_the_segmentation() -> None:
    """A head over MAX_HEAD_BYTES keeps its request line, named and cut short (its headers are
    dropped), whether it arrives in one piece or many."""
    big = b"GET /big HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    ops = [D(FIRST), D(big + b"GET /n HTTP/1.1\r\n\r\n", 2.0)]
    expected = [*FIRST_EVENTS, ("head", "GET", "/big", "1.1", [], 2.0, 2.0), ("anomaly", "oversized_head"),
                ("end", 0, False, True, 2.0), ("head", "GET", "/n", "1.1", [], 2.0, 2.0),
                ("end", 0, False, False, 2.0)]
    assert run(ops, split=bytewise)[0] == expected
    assert run(ops)[0] == expected


def test_oversized_head_without_line_end() -> None:
    ops = [D(FIRST), D(b"GET /" + b"a" * (MAX_HEAD_BYTES + 1), 2.0),
           D(b" HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\n", 3.0)]
    assert events(ops) == [*FIRST_EVENTS, ("anomaly", "oversized_head"), ("head", "GET", "/n", "1.1", [], 3.0, 3.0),
                           ("end", 0, False, False, 3.0)]


def test_oversized_first_head_is_still_http() -> None:
    """The client's first head began with a valid request line: being too long does not make the
    connection another protocol (the resync after it must not run the not-HTTP probe)."""
    ops = [D(b"GET /big HTTP/1.1\r\nCookie: " + b"c" * MAX_HEAD_BYTES, 1.0), D(b"\r\n\r\n", 2.0),
           D(b"GET /n HTTP/1.1\r\n\r\n", 3.0)]
    assert run(ops)[0] == [("head", "GET", "/big", "1.1", [], 1.0, 1.0), ("anomaly", "oversized_head"),
                           ("end", 0, False, True, 1.0), ("head", "GET", "/n", "1.1", [], 3.0, 3.0),
                           ("end", 0, False, False, 3.0)]


def test_head_just_under_the_limit_is_parsed() -> None:
    head = b"GET /ok HTTP/1.1\r\nX-Pad: "
    head += b"a" * (MAX_HEAD_BYTES - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == MAX_HEAD_BYTES
    for split in (whole, bytewise):
        assert run([D(head)], split=split)[0] == [
            ("head", "GET", "/ok", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_tls_client_hello_is_not_http() -> None:
    hello = bytes.fromhex("16030100f4010000f00303") + bytes(range(32)) + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    evs, parser = run([D(hello)])
    assert evs == [("anomaly", "not_http")]
    assert parser.state == State.NOT_HTTP
    assert events([D(hello), D(b"GET /later HTTP/1.1\r\n\r\n", 2.0), EOF()]) == [("anomaly", "not_http")]


def test_http2_preface_is_not_http() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"
    evs = events([D(preface), D(b"GET /later HTTP/1.1\r\n\r\n", 2.0), EOF()])
    assert evs == [("anomaly", "not_http")]
    _, parser = run([D(preface)])
    assert (parser.state, parser.not_http_kind, parser.messages) == (State.NOT_HTTP, "http2", 0)


def test_pri_after_the_first_request_is_just_a_method() -> None:
    assert events([D(FIRST + b"PRI * HTTP/2.0\r\n\r\n")]) == [
        *FIRST_EVENTS, ("head", "PRI", "*", "2.0", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_binary_junk_then_a_request() -> None:
    assert events([D(b"\x00\x01\x02junk\r\n\r\n"), D(b"GET /a HTTP/1.1\r\n\r\n", 2.0)]) == [
        ("anomaly", "junk_before_first_message"),
        ("head", "GET", "/a", "1.1", [], 2.0, 2.0), ("end", 0, False, False, 2.0),
    ]


def test_no_request_in_the_first_bytes_is_not_http() -> None:
    data = b"\x03\x00\x00\x13\x0e\xe0\x00\x00" + bytes(range(256)) * 20  # an RDP connection request
    assert len(data) > NOT_HTTP_PROBE_BYTES
    evs, parser = run([D(data), D(b"GET /late HTTP/1.1\r\n\r\n", 2.0)])
    assert evs == [("anomaly", "not_http")]
    assert parser.state == State.NOT_HTTP
    assert run([D(data), D(b"GET /late HTTP/1.1\r\n\r\n", 2.0)], split=bytewise)[0] == evs


def test_binary_after_a_request_is_a_bad_request_line_not_a_protocol_switch() -> None:
    assert events([D(b"GET /a HTTP/1.1\r\n\r\n\x16\x03\x01zzzz GET /b HTTP/1.1\r\n\r\n")]) == [
        ("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("anomaly", "bad_request_line"),
        ("head", "GET", "/b", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


# End of stream --------------------------------------------------------------------------------


def test_eof_in_head_is_a_truncated_message_with_what_was_read() -> None:
    """The head never completed: the request line and the header lines that ended are the message,
    cut short (it used to vanish, leaving only the anomaly's count)."""
    evs, parser = run([D(b"GET / HTTP/1.1\r\nHost"), EOF()])
    assert evs == [("head", "GET", "/", "1.1", [], 1.0, 9.0), ("anomaly", "incomplete_head"),
                   ("end", 0, False, True, 9.0)]
    assert parser.state == State.DONE
    assert events([D(b"GET / HTTP/1.1\r\nHost"), EOF()]) == evs


@pytest.mark.parametrize(("data", "head"), [
    (b"GET /", ("GET", "/", None)),  # no line end: method and target as read, no version
    (b"GET /a b", ("GET", "/a b", None)),
    (b"POST /x HTTP/1.1", ("POST", "/x", "1.1")),
    (b"PUT /y HTTP/1.0\r\nHost: h\r\nContent-Len", ("PUT", "/y", "1.0")),
])
def test_eof_in_head_keeps_the_request_line(data: bytes, head: tuple[object, ...]) -> None:
    assert events([D(data, 1.0), EOF(2.0)]) == [("head", *head, [], 1.0, 2.0), ("anomaly", "incomplete_head"),
                                                ("end", 0, False, True, 2.0)]


@pytest.mark.parametrize("data", [b"GET", b"GET ", b"G\x00T /"])
def test_eof_in_head_without_a_method_and_target_is_only_the_anomaly(data: bytes) -> None:
    assert events([D(data), EOF()]) == [("anomaly", "incomplete_head")]


def test_eof_in_response_head_keeps_the_status() -> None:
    ops = [D(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX", 1.0), EOF(2.0)]
    assert events(ops, side=Side.SERVER, methods=("GET",)) == [
        ("head", 404, "Not Found", "1.1", [], 1.0, 2.0), ("anomaly", "incomplete_head"), ("end", 0, False, True, 2.0)]


def test_eof_in_body_is_truncated() -> None:
    assert events([D(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0), EOF(2.0)]) == [
        ("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 3, False, True, 2.0)]


def test_eof_in_chunked_body_is_truncated() -> None:
    assert events([D(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1.0), EOF(2.0)]) == [
        ("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 2, False, True, 2.0)]


def test_eof_in_trailer_ends_the_message() -> None:
    assert events([D(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nT: 1\r\n", 1.0),
                   EOF(2.0)]) == [("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 2, False, False, 2.0)]


def test_eof_between_messages_says_nothing() -> None:
    evs, parser = run([D(b"GET / HTTP/1.1\r\n\r\n"), EOF()])
    assert evs == [("head", "GET", "/", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]
    assert parser.state == State.DONE


# Responses ------------------------------------------------------------------------------------


def test_responses_content_length_chunked_and_close() -> None:
    ops = [
        D(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 1.0),
        D(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n", 2.0),
        D(b"HTTP/1.0 200 OK\r\n\r\nuntil", 3.0),
        D(b" the end", 4.0),
        EOF(5.0),
    ]
    assert events(ops, side=Side.SERVER, methods=("GET", "GET", "GET")) == [
        ("head", 200, "OK", "1.1", [], 1.0, 1.0), ("end", 3, False, False, 1.0),
        ("head", 200, "OK", "1.1", [], 2.0, 2.0), ("end", 2, False, False, 2.0),
        ("head", 200, "OK", "1.0", [], 3.0, 3.0), ("end", 13, False, False, 5.0),
    ]


def test_response_to_head_has_no_body() -> None:
    ops = [D(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 2\r\n\r\nno")]
    assert events(ops, side=Side.SERVER, methods=("HEAD", "GET")) == [
        ("head", 200, "OK", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("head", 404, "NF", "1.1", [], 1.0, 1.0), ("end", 2, False, False, 1.0),
    ]


def test_interim_responses_have_no_body() -> None:
    ops = [D(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
             b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")]
    assert events(ops, side=Side.SERVER, methods=("GET", "GET", "GET", "GET")) == [
        ("head", 100, "Continue", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("head", 103, "Early Hints", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("head", 204, "No Content", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("head", 304, "Not Modified", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


def test_101_then_other_protocol_is_not_parsed() -> None:
    ops = [D(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
           D(b"HTTP/1.1 200 OK\r\n\r\n", 2.0), GAP(10, 3.0), EOF()]
    evs = events(ops, side=Side.SERVER, methods=("GET",))
    assert evs == [("head", 101, "Switching Protocols", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_headless_response_to_http09() -> None:
    ops = [D(b"<html>hi</html>", 1.0), D(b"more", 2.0), EOF(3.0)]
    assert events(ops, side=Side.SERVER, headless=True) == [
        ("head", 0, "", "0.9", [], 1.0, 1.0), ("end", 19, False, False, 3.0)]


@pytest.mark.parametrize("line", [b"HTTX/1.1 200 OK", b"HTTP/1.1 2x0 OK", b"\x00\x01garbage", b"SSH-2.0-x",
                                  b"HTTP/1.1 004 OK"])
def test_bad_status_line_resyncs_at_next_response(line: bytes) -> None:
    ops = [D(b"HTTP/1.1 304 Not Modified\r\n\r\n"),
           D(line + b"\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 2.0)]
    assert events(ops, side=Side.SERVER, methods=("GET", "GET", "GET")) == [
        ("head", 304, "Not Modified", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("anomaly", "bad_status_line"),
        ("head", 204, "No Content", "1.1", [], 2.0, 2.0), ("end", 0, False, False, 2.0),
    ]


# Gaps -----------------------------------------------------------------------------------------
# The parser reports ("gap", n) to the conversation only where whole messages may have been lost
# (the pairing must then distrust its FIFO); a gap a body absorbs is only a flag on the message.


def test_gap_inside_content_length_body_is_absorbed() -> None:
    ops = [D(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0), GAP(4, 2.0), D(b"hij", 3.0),
           D(b"GET /n HTTP/1.1\r\n\r\n", 4.0)]
    assert events(ops) == [
        ("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 10, True, False, 3.0),
        ("head", "GET", "/n", "1.1", [], 4.0, 4.0), ("end", 0, False, False, 4.0),
    ]


def test_gap_ending_exactly_at_body_end() -> None:
    ops = [D(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0), GAP(7, 2.0),
           D(b"GET /n HTTP/1.1\r\n\r\n", 3.0)]
    assert events(ops) == [
        ("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 10, True, False, 2.0),
        ("head", "GET", "/n", "1.1", [], 3.0, 3.0), ("end", 0, False, False, 3.0),
    ]


def test_gap_beyond_body_end_resyncs_at_next_request() -> None:
    ops = [D(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1.0), GAP(20, 2.0),
           D(b"1.1\r\nHost: h\r\n\r\nGET /n HTTP/1.1\r\n\r\n", 3.0)]
    evs, parser = run(ops)
    assert evs == events(ops) == [
        ("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 10, True, False, 2.0), ("gap", 20),
        ("head", "GET", "/n", "1.1", [], 3.0, 3.0), ("end", 0, False, False, 3.0),
    ]
    assert parser.skipped_bytes == len(b"1.1\r\nHost: h\r\n\r\n")


def test_gap_inside_chunk_data() -> None:
    ops = [D(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1.0), GAP(2, 2.0),
           D(b"e\r\n0\r\n\r\n", 3.0)]
    assert events(ops) == [("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 5, True, False, 3.0)]


def test_gap_in_chunked_framing_cuts_the_message() -> None:
    ops = [D(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", 1.0), GAP(6, 2.0),
           D(b"\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n", 3.0)]
    assert events(ops) == [
        ("head", "POST", "/", "1.1", [], 1.0, 1.0), ("end", 5, True, True, 2.0), ("gap", 6),
        ("head", "GET", "/n", "1.1", [], 3.0, 3.0), ("end", 0, False, False, 3.0),
    ]


def test_gap_in_close_delimited_body_is_counted() -> None:
    ops = [D(b"HTTP/1.0 200 OK\r\n\r\nabc", 1.0), GAP(100, 2.0), D(b"xyz", 3.0), EOF(4.0)]
    assert events(ops, side=Side.SERVER, methods=("GET",)) == [
        ("head", 200, "OK", "1.0", [], 1.0, 1.0), ("end", 106, True, False, 4.0)]


def test_gap_in_head_drops_it_and_resyncs() -> None:
    ops = [D(b"GET /a HTTP/1.1\r\nHo", 1.0), GAP(5, 2.0), D(b"\r\n\r\nGET /n HTTP/1.1\r\n\r\n", 3.0)]
    evs, parser = run(ops)
    heads = [e for e in evs if e[0] == "head"]
    assert heads == [("head", "GET", "/n", "1.1", [], 3.0, 3.0)]
    assert parser.skipped_bytes == 4
    assert events(ops) == evs


def test_gap_between_messages_resyncs() -> None:
    ops = [D(b"GET /a HTTP/1.1\r\n\r\n", 1.0), GAP(19, 2.0), D(b"GET /c HTTP/1.1\r\n\r\n", 3.0)]
    assert events(ops) == [
        ("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0), ("gap", 19),
        ("head", "GET", "/c", "1.1", [], 3.0, 3.0), ("end", 0, False, False, 3.0),
    ]


# Resynchronisation ----------------------------------------------------------------------------


def no_anomalies(evs: list[Event]) -> list[Event]:
    return [e for e in evs if e[0] != "anomaly"]


def test_midstream_start_skips_to_first_request() -> None:
    junk = b"rest of an earlier body\r\n"
    ops = [D(junk + b"GET /a HTTP/1.1\r\n\r\n")]
    _, parser = run(ops, resync=True)
    assert no_anomalies(events(ops, resync=True)) == [
        ("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]
    assert parser.skipped_bytes == len(junk)


def test_midstream_start_skips_to_first_response() -> None:
    ops = [D(b"tail of a body HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    assert no_anomalies(events(ops, side=Side.SERVER, resync=True, methods=("GET",))) == [
        ("head", 200, "OK", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_midstream_tail_is_not_an_anomaly() -> None:
    """A parser started midstream (`resync=True`) expects the tail of a message first: that is
    what picking a connection up midway means (the record's flag says midstream), not something
    the peer did wrong. `junk_before_first_message` is for connections seen from their start."""
    ops = [D(b"rest of an earlier body\r\nGET /a HTTP/1.1\r\n\r\n")]
    assert events(ops, resync=True) == [("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_resync_finds_a_request_after_body_bytes_ending_in_a_letter() -> None:
    """Bodies are adjacent to the next request; `q=abc` then `GET ...` must still resync."""
    ops = [D(b"q=abc", 1.0), D(b"GET /n HTTP/1.1\r\nHost: h\r\n\r\n", 2.0)]
    assert no_anomalies(events(ops, resync=True)) == [
        ("head", "GET", "/n", "1.1", [], 2.0, 2.0), ("end", 0, False, False, 2.0)]


def test_resync_ignores_a_method_name_without_a_request_line_shape() -> None:
    ops = [D(b"to GET the file use HTTP GET\r\n"), D(b"POST /p HTTP/1.1\r\n\r\n", 2.0)]
    assert no_anomalies(events(ops, resync=True)) == [
        ("head", "POST", "/p", "1.1", [], 2.0, 2.0), ("end", 0, False, False, 2.0)]


def test_header_lines_after_a_one_line_request_belong_to_it() -> None:
    ops = [D(b"GET /x\r\nHost: h\r\nUser-Agent: u\r\n\r\nGET /y HTTP/1.1\r\n\r\n")]
    assert events(ops) == [
        ("head", "GET", "/x", "0.9", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
        ("late_headers", {"host": "h", "user-agent": "u"}, ["headers_after_short_request_line"]),
        ("head", "GET", "/y", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0),
    ]


@pytest.mark.parametrize("body", [b"HTTP/1.1 is not a status line\r\n\r\nrest", b"HTTP/2 x\n", b"HTTP/"])
def test_headless_response_that_starts_like_a_status_line(body: bytes) -> None:
    """HTTP/0.9's answer is the raw body, whatever its first bytes: one starting `HTTP/` that is no
    status line is still that body, not a bad status line."""
    ops = [D(body, 1.0), D(b"more", 2.0), EOF(3.0)]
    assert events(ops, side=Side.SERVER, headless=True) == [
        ("head", 0, "", "0.9", [], 1.0, 1.0 if b"\n" in body else 3.0), ("end", len(body) + 4, False, False, 3.0)]


def test_reply_to_a_one_line_request_with_a_status_line() -> None:
    ops = [D(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"), EOF(2.0)]
    assert events(ops, side=Side.SERVER, headless=True, methods=("GET",)) == [
        ("head", 400, "Bad Request", "1.0", [], 1.0, 1.0), ("end", 3, False, False, 1.0)]


# Smuggling: heads two servers read differently ---------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
SMUGGLED_EVENTS: list[Event] = [("head", "GET", "/smuggled", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def smuggling_post(hidden: bytes) -> bytes:
    """POST /a whose Content-Length covers a chunked body's end and a smuggled GET, its
    Transfer-Encoding hidden behind `hidden` (bytes that end a reading of the head early)."""
    covered = b"0\r\n\r\n" + SMUGGLED
    return (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n" % len(covered) + hidden
            + b"Transfer-Encoding: chunked\r\n\r\n" + covered)


@pytest.mark.parametrize(("hidden", "oddity"), [
    (b"\r\r\n", "whitespace_line"),  # a header line of only CR: dpkt (and some servers) end the head there
    (b" \t\r\n", "whitespace_line"),
    (b"X-A: a\r", "bare_cr"),  # a bare CR: the value keeps it, the line after it is read as well
])
def test_transfer_encoding_hidden_behind_an_odd_line_is_read_and_the_smuggled_request_recorded(
        hidden: bytes, oddity: str) -> None:
    assert events([D(smuggling_post(hidden))]) == [
        ("head", "POST", "/a", "1.1", [oddity], 1.0, 1.0),
        ("anomaly", "content_length_and_transfer_encoding"), ("anomaly", "ambiguous_framing_chunked"),
        ("end", 0, False, False, 1.0),
        *SMUGGLED_EVENTS,
    ]


def test_odd_line_that_changes_no_framing_is_named_without_an_ambiguity() -> None:
    assert events([D(b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\nUser-Agent: u\r\n\r\n")]) == [
        ("head", "GET", "/", "1.1", ["whitespace_line"], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_control_bytes_in_values_are_named() -> None:
    assert events([D(b"GET / HTTP/1.1\r\nHost: h\x00x\r\nX-A: \x1b[31m\r\n\r\n")]) == [
        ("head", "GET", "/", "1.1", ["control_char"], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_bare_cr_in_a_request_target_is_a_byte_of_it() -> None:
    assert events([D(b"GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n")]) == [
        ("head", "GET", "/a\\x0db", "1.1", ["bare_cr"], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_bare_lf_inside_a_crlf_head_is_named() -> None:
    assert events([D(b"GET / HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n")]) == [
        ("head", "GET", "/", "1.1", ["bare_lf"], 1.0, 1.0), ("end", 0, False, False, 1.0)]


@pytest.mark.parametrize("size", [b"5 ", b" 5", b"5\t"])
def test_white_space_around_a_chunk_size_is_named_and_read(size: bytes) -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n" + FIRST
    assert events([D(data)]) == [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0), ("anomaly", "chunk_size_whitespace"),
        ("end", 5, False, False, 1.0), *FIRST_EVENTS]


def test_white_space_before_a_chunk_extension_is_allowed() -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x=1\r\nhello\r\n0\r\n\r\n"
    assert events([D(data)]) == [("head", "POST", "/c", "1.1", [], 1.0, 1.0), ("end", 5, False, False, 1.0)]


@pytest.mark.parametrize("line", [b"BAN /admin HTTP/1.1", b"GET  /admin HTTP/1.1", b"PURGE\t/admin HTTP/1.1 "])
def test_resync_finds_any_method_and_odd_spacing(line: bytes) -> None:
    ops = [D(b"GET /a HTTP/1.1\r\n\r\n", 1.0), GAP(10, 2.0), D(b"tail of something\r\n" + line + b"\r\n\r\n", 3.0)]
    method = line.split()[0].decode()
    assert events(ops) == [
        ("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0), ("gap", 10),
        ("head", method, "/admin", "1.1", [], 3.0, 3.0), ("end", 0, False, False, 3.0)]


def test_oversized_response_head_keeps_its_status() -> None:
    big = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    ops = [D(big + b"HTTP/1.1 204 No Content\r\n\r\n", 1.0)]
    expected = [("head", 200, "OK", "1.1", [], 1.0, 1.0), ("anomaly", "oversized_head"), ("end", 0, False, True, 1.0),
                ("head", 204, "No Content", "1.1", [], 1.0, 1.0), ("end", 0, False, False, 1.0)]
    assert run(ops, side=Side.SERVER, methods=("GET", "GET"), split=bytewise)[0] == expected
    assert run(ops, side=Side.SERVER, methods=("GET", "GET"))[0] == expected


@pytest.mark.parametrize("line", [b"HTTP/1.1 200\rOK", b"HTTP/1.0 404\r\x00"])
def test_a_status_line_resync_would_find_again_is_passed_over(line: bytes) -> None:
    """A line that begins like a status line and is none: named, and looked past (not found again
    by the resync, which once made this recurse without end)."""
    ops = [D(b"junk" + line + b"\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")]
    assert events(ops, side=Side.SERVER, resync=True, methods=("GET",)) == [
        ("anomaly", "bad_status_line"), ("head", 204, "No Content", "1.1", [], 1.0, 1.0),
        ("end", 0, False, False, 1.0)]


def test_junk_after_empty_lines_is_not_parsed_twice() -> None:
    """Empty lines, then a binary first line: the resync takes over every buffered byte; none of
    them is read again (a request after them used to be reported twice)."""
    ops = [D(b"\n" * 40 + b"G\x00T /x\r\n" + b"GET /a HTTP/1.0\n\n")]
    assert events(ops) == [("anomaly", "junk_before_first_message"),
                           ("head", "GET", "/a", "1.0", ["bare_lf"], 1.0, 1.0), ("end", 0, False, False, 1.0)]


def test_bare_lf_in_chunk_lines_is_named_once() -> None:
    data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n2\r\nde\r\n0\n\n" + FIRST
    assert events([D(data)]) == [
        ("head", "POST", "/c", "1.1", [], 1.0, 1.0), ("anomaly", "bare_lf"), ("end", 5, False, False, 1.0),
        *FIRST_EVENTS]
