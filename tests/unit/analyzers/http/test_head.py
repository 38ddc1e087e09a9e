"""http_head: start lines, header blocks and escaping of wire bytes, checked head by head."""

from __future__ import annotations

import random

import pytest

from analyzers.http.anomalies import Anomaly
from analyzers.http.head import (
    BAD,
    SHORT,
    VERSIONED,
    RequestHead,
    ResponseHead,
    can_start,
    escape,
    header,
    header_line_ahead,
    is_binary,
    looks_like_request_line,
    parse_headers,
    parse_request_head,
    parse_request_line,
    parse_response_head,
    read_request_line,
    request_line_kind,
    start_line_ok,
)
from analyzers.http.text import escape_ascii
from analyzers.side import Side
from unit.analyzers.http.test_parser import D, events

# escape() -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"/index.html?a=1&b=%20", "/index.html?a=1&b=%20"),
        (b"", ""),
        (b" ~", " ~"),  # the printable range's ends stay as they are
        (b"\x00\x01\x09\x0a\x0d\x1f", "\\x00\\x01\\x09\\x0a\\x0d\\x1f"),
        (b"\x7f", "\\x7f"),
        (b"\x80\xc3\xa9\xff", "\\x80\\xc3\\xa9\\xff"),
        (b"a\\b", "a\\x5cb"),  # a backslash is escaped too, so "\x" in a log always means a wire byte
        (b"\\x41", "\\x5cx41"),
    ],
)
def test_escape_ascii(raw: bytes, text: str) -> None:
    """The `strings: ascii` form (tests/unit/analyzers/http/test_text.py has the utf8 one); the two
    agree on every string without non-ASCII bytes."""
    assert escape_ascii(raw) == text
    if raw.isascii():
        assert escape(raw) == text


def test_escape_every_byte_is_printable_and_reversible() -> None:
    raw = bytes(range(256))
    text = escape(raw)
    assert all(0x20 <= ord(ch) < 0x7F for ch in text)
    decoded = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "\\":
            assert text[i + 1] == "x"
            decoded.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            decoded.append(ord(text[i]))
            i += 1
    assert bytes(decoded) == raw


# Request lines --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"GET / HTTP/1.1", True),
        (b"PROPFIND /dav HTTP/1.1", True),
        (b"FOO /x HTTP/1.0", True),  # an unknown method is still a request line
        (b"get / http/1.1", True),  # the version is matched case-insensitively
        (b"GET /x", True),  # HTTP/0.9
        (b"get /x", False),  # two words: only an upper-case method counts
        (b"GARBAGE", False),
        (b"HTTP/1.1 200 OK", False),
        (b"GET / HTTP/1.1 extra", False),
        (b"G(T / HTTP/1.1", False),  # '(' is not a token character
        (b"", False),
    ],
)
def test_looks_like_request_line(line: bytes, expected: bool) -> None:
    assert looks_like_request_line(line) is expected


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"GET / HTTP/1.1", VERSIONED),
        (b"GET HTTP/1.1", VERSIONED),  # no target, still a versioned line
        (b"GET / HTTP/x", VERSIONED),
        (b"GET /x", SHORT),
        (b"GET", BAD),
        (b"GET / HTTQ/1.1", BAD),
        (b"\x16\x03\x01 x", BAD),
        (b"", BAD),
    ],
)
def test_request_line_kind(line: bytes, kind: int) -> None:
    assert request_line_kind(line) == kind


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"GET /a?b=c HTTP/1.1", ("GET", "/a?b=c", "1.1", ())),
        (b"POST http://h:8080/p HTTP/1.0", ("POST", "http://h:8080/p", "1.0", ())),
        (b"CONNECT h:443 HTTP/1.1", ("CONNECT", "h:443", "1.1", ())),
        (b"OPTIONS * HTTP/1.1", ("OPTIONS", "*", "1.1", ())),
        (b"GET /x", ("GET", "/x", "0.9", ())),
        (b"BREW /pot HTTP/2.0", ("BREW", "/pot", "2.0", ())),
        (b"GET /a b HTTP/1.1", ("GET", "/a b", "1.1", ("space_in_request_target",))),  # spaces kept
        (b"GET HTTP/1.1", ("GET", "", "1.1", ("missing_request_target",))),
        (b"GET / HTTP/x", ("GET", "/", None, ("bad_http_version",))),
        (b"G@T / HTTP/1.1", ("G@T", "/", "1.1", ("bad_method",))),
        (b"GARBAGE", (None, None, None, ("bad_request_line",))),
        (b"GET", (None, None, None, ("bad_request_line",))),
        (b"GET / HTTQ/1.1", (None, None, None, ("bad_request_line",))),
        (b"", (None, None, None, ("bad_request_line",))),
    ],
)
def test_parse_request_line(line: bytes, expected: tuple[object, ...]) -> None:
    assert parse_request_line(line) == expected


def test_request_line_escapes_target_bytes() -> None:
    assert parse_request_line(b"GET /a\x01\x7f\x80\\\xff HTTP/1.1") == (
        "GET", "/a\\x01\\x7f\\x80\\x5c\\xff", "1.1", (Anomaly.CONTROL_CHAR,))


# Request heads --------------------------------------------------------------------------------


def test_request_head_fields() -> None:
    head = parse_request_head(
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n"
        b"Accept: a\r\nAccept: b\r\nX-Empty:\r\n\r\n"
    )
    assert head == RequestHead(
        "POST", "/upload", "1.1",
        {"host": "example.test", "content-length": "5", "accept": ["a", "b"], "x-empty": ""}, (),
    )


def test_request_head_with_bare_lf_lines() -> None:
    assert parse_request_head(b"GET /a HTTP/1.0\nHost: h\n\n") == RequestHead("GET", "/a", "1.0", {"host": "h"},
                                                                                (Anomaly.BARE_LF,))


def test_request_head_http09_has_no_headers() -> None:
    assert parse_request_head(b"GET /x\r\n") == RequestHead("GET", "/x", "0.9", {}, ())


def test_request_head_bad_request_line() -> None:
    assert parse_request_head(b"GARBAGE\r\n\r\n") == RequestHead(None, None, None, {}, ("bad_request_line",))


def test_request_head_space_in_target() -> None:
    head = parse_request_head(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (head.uri, head.anomalies) == ("/a b", ("space_in_request_target",))


def test_header_names_are_lower_case_and_values_trimmed() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHOST:   h  \r\nUser-Agent:\tcurl/8.5.0\r\n\r\n")
    assert head.headers == {"host": "h", "user-agent": "curl/8.5.0"}


def test_header_values_escape_control_and_non_ascii_bytes() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\x00\x1b\\\xe9\r\nReferer: r\x0b\x7f\r\n\r\n")
    assert head.headers == {"host": "h\\x00\\x1b\\x5c\\xe9", "referer": "r\\x0b\\x7f"}


# Bad header lines: RFC 9112 section 5 (no white space before the colon, a colon on every line) and
# section 5.2 (obs-fold). A server answers 400 to each; a passive observer names the problem.


def test_header_name_with_space_is_dropped_and_named() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\nAccept: */*\r\n\r\n")
    assert head.headers == {"host": "h", "accept": "*/*"}
    assert head.anomalies == ("bad_header_line",)


def test_obs_fold_is_unfolded_and_named() -> None:
    """A continuation line (obs-fold) joins the previous value, as RFC 9112 5.2 lets a recipient do."""
    head = parse_request_head(b"GET / HTTP/1.1\r\nX-Long: part1\r\n  part2\r\n\tpart3\r\nHost: h\r\n\r\n")
    assert head.headers == {"x-long": "part1 part2 part3", "host": "h"}
    assert head.anomalies == ("obs_fold",)


def test_whitespace_before_colon_is_named() -> None:
    """`Content-Length : 5` is a classic smuggling probe: it must be flagged, not kept under the
    name "content-length " where the framing silently ignores it."""
    head = parse_request_head(b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n")
    assert "bad_header_line" in head.anomalies
    assert "content-length " not in head.headers


def test_header_line_without_colon_is_named() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: h\r\nNoColonHere\r\n\r\n")
    assert "bad_header_line" in head.anomalies
    assert "nocolonhere" not in head.headers


def test_parse_headers_reports_into_the_given_list() -> None:
    anomalies: list[str] = ["earlier"]
    assert parse_headers(b"A: 1\r\nB C: 2\r\n\r\n", anomalies) == {"a": "1"}
    assert anomalies == ["earlier", "bad_header_line"]


def test_header_returns_last_of_repeated_values() -> None:
    headers = parse_request_head(b"GET / HTTP/1.1\r\nX: 1\r\nx: 2\r\nY: 3\r\n\r\n").headers
    assert headers["x"] == ["1", "2"]
    assert header(headers, "x") == "2"
    assert header(headers, "y") == "3"
    assert header(headers, "z") is None


# Response heads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
         ResponseHead("1.1", 200, "OK", {"content-length": "2"}, ())),
        (b"HTTP/1.0 404 Not Found\r\n\r\n", ResponseHead("1.0", 404, "Not Found", {}, ())),
        (b"HTTP/1.1 204\r\n\r\n", ResponseHead("1.1", 204, "", {}, ())),  # the reason phrase is optional
        (b"http/1.1 301 Moved\r\nLocation: /b\r\n\r\n", ResponseHead("1.1", 301, "Moved", {"location": "/b"}, ())),
        (b"HTTP/1.1 200 O\x01K\xfe\r\n\r\n", ResponseHead("1.1", 200, "O\\x01K\\xfe", {}, ())),
        (b"HTTP/1.1 999 Odd\n\n", ResponseHead("1.1", 999, "Odd", {}, (Anomaly.BARE_LF,))),
    ],
)
def test_parse_response_head(head: bytes, expected: ResponseHead) -> None:
    assert parse_response_head(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"\r\n\r\n",
    ],
)
def test_bad_status_line_is_none(head: bytes) -> None:
    assert parse_response_head(head) is None


def test_response_head_bad_header_line() -> None:
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nServer: s\r\nBad Name: x\r\n\r\n")
    assert head == ResponseHead("1.1", 200, "OK", {"server": "s"}, ("bad_header_line",))


# What the parser asks of a message's first bytes


@pytest.mark.parametrize(("first", "side", "ok"), [
    (b"G", Side.CLIENT, True), (b"m", Side.CLIENT, True), (b"~", Side.CLIENT, True), (b" ", Side.CLIENT, False),
    (b"\x16", Side.CLIENT, False),
    (b"H", Side.SERVER, True), (b"h", Side.SERVER, True), (b"G", Side.SERVER, False), (b"<", Side.SERVER, False),
])
def test_can_start(first: bytes, side: Side, ok: bool) -> None:
    assert can_start(first[0], side) is ok


@pytest.mark.parametrize(("line", "side", "ok"), [
    (b"GET / HTTP/1.1\r", Side.CLIENT, True), (b"GET / HTTP/1.1", Side.CLIENT, True), (b"GET /\r", Side.CLIENT, False),
    (b"garbage\r", Side.CLIENT, False), (b"HTTP/1.1 200 OK\r", Side.SERVER, True), (b"http/1.0 200", Side.SERVER, True),
    (b"HTTP", Side.SERVER, False), (b"<html>", Side.SERVER, False),
])
def test_start_line_ok(line: bytes, side: Side, ok: bool) -> None:
    assert start_line_ok(line, side) is ok


@pytest.mark.parametrize(("buf", "ahead"), [
    (b"", None), (b"Host", None), (b"Host:", True), (b"X-A: b\r\n", True), (b"GET /x", False),
    (b":x", False), (b"\r\n", False),
])
def test_header_line_ahead(buf: bytes, ahead: bool | None) -> None:
    assert header_line_ahead(buf) is ahead


def test_a_line_starting_with_a_bare_cr_is_read_once() -> None:
    head = parse_request_head(b"POST / HTTP/1.1\r\nHost: h\r\n\rTransfer-Encoding: chunked\r\n\r\n")
    assert (head.headers, head.anomalies, head.other_headers) == (
        {"host": "h", "transfer-encoding": "chunked"}, (Anomaly.BARE_CR,), None)


def test_the_other_reading_of_an_odd_block() -> None:
    """Ours reads every line; the other stops at the white-space-only line and sees no line after a
    bare CR, as some servers (and dpkt) do."""
    head = parse_request_head(b"POST / HTTP/1.1\r\nX-A: a\rContent-Length: 1\r\n\r\r\nUser-Agent: u\r\n\r\n")
    assert head.headers == {"x-a": "a\\x0dContent-Length: 1", "content-length": "1", "user-agent": "u"}
    assert head.other_headers == {"x-a": "a\\x0dContent-Length: 1"}
    assert head.anomalies == (Anomaly.BARE_CR, Anomaly.WHITESPACE_LINE)


@pytest.mark.parametrize(("line", "binary"), [
    (b"GET /x", False), (b"GET /a\tb", False), (b"GET /K\xc3\xb6ln", False), (b"\xe6\x9d\xb1\xe4\xba\xac", False),
    (b"GET /\x00", True), (b"\x16\x03\x01\x02\x00", True), (b"GET /K\xf6ln", True), (b"\xed\xa0\x80", True),
    (b"GET /\xe2\x82", True),
])
def test_is_binary(line: bytes, binary: bool) -> None:
    """Valid UTF-8 is text, as in the records; a control byte or a byte that is not UTF-8 is not."""
    assert is_binary(line) is binary


def test_one_line_request_with_utf8_is_a_request() -> None:
    assert events([D(b"GET /K\xc3\xb6ln\r\n")]) == [
        ("head", "GET", "/K\u00f6ln", "0.9", [], 1.0, 1.0),
        ("end", 0, False, False, 1.0),
    ]


# Shortcuts, fed the same lines as their readable reference -------------------------------------
# Request lines near the shortcut's edges: one byte or one separator away from the usual shape.
ODD_REQUEST_LINES = [
    b"GET / HTTP/1.1", b"GET  / HTTP/1.1", b"GET\t/ HTTP/1.1", b"GET / HTTP/1.1 ", b" GET / HTTP/1.1",
    b"GET / http/1.1", b"GET / HTTP/1.1\r", b"GET /\r/ HTTP/1.1", b"GET /a\\b HTTP/1.1", b"GET /\x7f HTTP/1.1",
    b"GET /\x80 HTTP/1.1", b"GET /K\xc3\xb6ln HTTP/1.1", b"G@T / HTTP/1.1", b"GET / HTTP/1.1\n", b"GET / HTTP/11",
    b"GET / HTTP/1.1x", b"GET / HTTP/\xd9\xa1.1", b"GET /x HTTP/1.1 HTTP/1.1", b"GET / HTTP/1.1\x00",
    b"GET HTTP/1.1", b"GET", b"", b"GET /\x0b HTTP/1.1", b"GET /\x0c HTTP/1.1", b"GET /\xa0 HTTP/1.1",
    b"GET /x HTTP/1.1\r\r", b"GET / HTTP/1.10", b"GET / HTTP/.1", b"~ ~ HTTP/0.0", b"GET ~ HTTP/1.1",
]


def request_lines(n: int, seed: int = 9112) -> list[bytes]:
    """`n` request lines, each part usual or hostile, a third with one byte changed at random."""
    rng = random.Random(seed)
    parts = [  # (usual, hostile) choices of each part in turn
        ([b"GET", b"POST", b"M-SEARCH", b"~"], [b"G@T", b"get", b"", b"GE\x00T", b"\xc3\xa9"]),
        ([b" "], [b"  ", b"\t", b" \t", b"\r", b"\x0b", b"\x0c", b""]),
        ([b"/", b"/a?b=c&d=%20", b"*", b"http://h:80/p", b"/~!$&'()*+,;=:@[]"],
         [b"/a b", b"/\\", b"/K\xc3\xb6ln", b"/\xff", b"/\x01", b"/\x7f", b""]),
        ([b" "], [b"  ", b"\t", b"\r", b""]),
        ([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"],
         [b"http/1.1", b"HTTP/1", b"HTTP/1.1\r", b"HTTPS/1.1", b"HTTP/1.1 ", b"HTTP/x", b""]),
    ]
    lines = []
    for _ in range(n):
        line = bytearray(b"".join(rng.choice(usual if rng.random() < 0.8 else hostile) for usual, hostile in parts))
        if line and rng.random() < 0.3:
            line[rng.randrange(len(line))] = rng.randrange(256)
        lines.append(bytes(line))
    return lines


def test_parse_request_line_agrees_with_its_reference() -> None:
    for line in ODD_REQUEST_LINES + request_lines(20000):
        assert parse_request_line(line) == read_request_line(line), line


def test_start_line_ok_agrees_with_the_request_line_kind() -> None:
    for line in ODD_REQUEST_LINES + request_lines(20000, seed=7230):
        for ended in (line, line + b"\r"):
            assert start_line_ok(ended, Side.CLIENT) is (request_line_kind(ended.rstrip(b"\r")) == VERSIONED), ended
