"""http_framing.body_framing: RFC 9112 section 6.3, step by step, and the anomalies it names."""

from __future__ import annotations

import pytest

from analyzers.http.anomalies import Anomaly
from analyzers.http.framing import MAX_CHUNK_SIZE_DIGITS, MAX_CONTENT_LENGTH, Framing, body_framing, chunk_size
from analyzers.http.head import RequestHead, ResponseHead, parse_request_head, parse_response_head


def frame(head: RequestHead | ResponseHead, method: str | None) -> tuple[Framing, int, list[str]]:
    """`body_framing` with its anomalies as a list, whatever sequence type the core returns."""
    framing, length, anomalies = body_framing(head, method)
    return framing, length, list(anomalies)


def request(*header_lines: str, line: str = "POST /p HTTP/1.1") -> RequestHead:
    return parse_request_head(("\r\n".join((line, *header_lines)) + "\r\n\r\n").encode())


def response(status: int, *header_lines: str) -> ResponseHead:
    head = parse_response_head(("\r\n".join((f"HTTP/1.1 {status} X", *header_lines)) + "\r\n\r\n").encode())
    assert head is not None
    return head


# Step 1: responses that never have a body, whatever their headers say.


@pytest.mark.parametrize("status", [100, 102, 103, 199, 204, 304])
def test_bodyless_statuses(status: int) -> None:
    head = response(status, "Content-Length: 10", "Transfer-Encoding: chunked")
    assert frame(head, "GET") == (Framing.NONE, 0, [])


@pytest.mark.parametrize("status", [200, 404, 500])
def test_response_to_head_has_no_body(status: int) -> None:
    assert frame(response(status, "Content-Length: 1234"), "HEAD") == (Framing.NONE, 0, [])
    assert frame(response(status, "Transfer-Encoding: chunked"), "HEAD") == (Framing.NONE, 0, [])


def test_101_switches_protocol() -> None:
    assert frame(response(101, "Upgrade: websocket"), "GET") == (Framing.TUNNEL, 0, [])


# Step 2: a 2xx answer to CONNECT starts a tunnel; other answers to CONNECT are framed normally.


@pytest.mark.parametrize("status", [200, 202, 299])
def test_connect_2xx_is_a_tunnel(status: int) -> None:
    assert frame(response(status, "Content-Length: 5"), "CONNECT") == (Framing.TUNNEL, 0, [])


def test_connect_refused_has_a_framed_body() -> None:
    assert frame(response(407, "Content-Length: 5"), "CONNECT") == (Framing.LENGTH, 5, [])


# Step 3: Transfer-Encoding.


def test_chunked() -> None:
    assert frame(request("Transfer-Encoding: chunked"), None) == (Framing.CHUNKED, 0, [])
    assert frame(response(200, "Transfer-Encoding: gzip, Chunked"), "GET") == (Framing.CHUNKED, 0, [])


def test_chunked_across_repeated_header_lines() -> None:
    head = request("Transfer-Encoding: gzip", "Transfer-Encoding: chunked")
    assert frame(head, None) == (Framing.CHUNKED, 0, [])


def test_content_length_and_transfer_encoding() -> None:
    """Transfer-Encoding wins (the smuggling case: the other reading is named)."""
    head = request("Content-Length: 5", "Transfer-Encoding: chunked")
    assert frame(head, None) == (Framing.CHUNKED, 0, ["content_length_and_transfer_encoding"])
    head2 = response(200, "Transfer-Encoding: chunked", "Content-Length: 5")
    assert frame(head2, "GET") == (Framing.CHUNKED, 0, ["content_length_and_transfer_encoding"])


def test_chunked_applied_twice() -> None:
    assert frame(request("Transfer-Encoding: chunked, chunked"), None) == (
        Framing.CHUNKED, 0, ["chunked_applied_twice"])


def test_transfer_encoding_not_ending_in_chunked() -> None:
    """A request's body end is then unknowable (a server answers 400); a response's runs to close."""
    assert frame(request("Transfer-Encoding: gzip"), None) == (
        Framing.UNKNOWN, 0, ["transfer_encoding_not_chunked"])
    assert frame(request("Transfer-Encoding: chunked, gzip"), None) == (
        Framing.UNKNOWN, 0, ["transfer_encoding_not_chunked"])
    assert frame(response(200, "Transfer-Encoding: gzip"), "GET") == (
        Framing.CLOSE, 0, ["transfer_encoding_not_chunked"])


# Steps 4 and 5: Content-Length.


@pytest.mark.parametrize(("value", "length"), [("1", 1), ("0005", 5), (" 42 ", 42), (str(MAX_CONTENT_LENGTH),
                                                                                   MAX_CONTENT_LENGTH)])
def test_content_length(value: str, length: int) -> None:
    assert frame(request(f"Content-Length: {value}"), None) == (Framing.LENGTH, length, [])
    assert frame(response(200, f"Content-Length: {value}"), "GET") == (Framing.LENGTH, length, [])


def test_content_length_zero_is_no_body() -> None:
    assert frame(request("Content-Length: 0"), None) == (Framing.NONE, 0, [])
    assert frame(response(200, "Content-Length: 0"), "GET") == (Framing.NONE, 0, [])


def test_duplicate_content_length_with_one_value() -> None:
    assert frame(request("Content-Length: 3", "Content-Length: 3"), None) == (
        Framing.LENGTH, 3, ["duplicate_content_length"])
    assert frame(request("Content-Length: 3, 3"), None) == (Framing.LENGTH, 3, ["duplicate_content_length"])


def test_conflicting_content_length() -> None:
    assert frame(request("Content-Length: 3", "Content-Length: 4"), None) == (
        Framing.UNKNOWN, 0, ["conflicting_content_length"])
    assert frame(response(200, "Content-Length: 3, 4"), "GET") == (
        Framing.CLOSE, 0, ["conflicting_content_length"])


@pytest.mark.parametrize("value", ["abc", "-1", "+3", "3.0", "0x10", "", "1 2", "\u0663"])
def test_bad_content_length(value: str) -> None:
    head = request(f"Content-Length: {value}")
    assert frame(head, None) == (Framing.UNKNOWN, 0, ["bad_content_length"])
    assert frame(response(200, f"Content-Length: {value}"), "GET") == (Framing.CLOSE, 0, ["bad_content_length"])


@pytest.mark.parametrize("value", [MAX_CONTENT_LENGTH + 1, 1 << 64, (1 << 64) + 3, 10 ** 30])
def test_content_length_overflow(value: int) -> None:
    assert frame(request(f"Content-Length: {value}"), None) == (
        Framing.UNKNOWN, 0, ["content_length_overflow"])
    assert frame(response(200, f"Content-Length: {value}"), "GET") == (
        Framing.CLOSE, 0, ["content_length_overflow"])


# Steps 6 and 7: neither header.


def test_request_without_length_has_no_body() -> None:
    assert frame(request(line="GET / HTTP/1.1"), None) == (Framing.NONE, 0, [])
    assert frame(request(line="GET / HTTP/1.0"), None) == (Framing.NONE, 0, [])


def test_response_without_length_runs_to_close() -> None:
    assert frame(response(200), "GET") == (Framing.CLOSE, 0, [])
    assert frame(response(200), None) == (Framing.CLOSE, 0, [])


def test_http09_request_has_no_body() -> None:
    head = parse_request_head(b"GET /x\r\n")
    assert frame(head, None) == (Framing.NONE, 0, [])


# Chunk-size lines (RFC 9112 7.1)


@pytest.mark.parametrize(("line", "size"), [
    (b"0", 0), (b"1a", 26), (b"FF;ext=1", 255), (b" 10 ", 16), (b"0" * 40 + b"1", 1),
    (b"7fffffffffffffff", (1 << 63) - 1),
    (b"", Anomaly.BAD_CHUNK_SIZE), (b"g", Anomaly.BAD_CHUNK_SIZE), (b";x", Anomaly.BAD_CHUNK_SIZE),
    (b"-1", Anomaly.BAD_CHUNK_SIZE), (b"8000000000000000", Anomaly.CHUNK_SIZE_OVERFLOW),
    (b"1" + b"0" * MAX_CHUNK_SIZE_DIGITS, Anomaly.CHUNK_SIZE_OVERFLOW),
])
def test_chunk_size(line: bytes, size: int | Anomaly) -> None:
    got = chunk_size(line)
    assert (got, type(got)) == (size, type(size))
