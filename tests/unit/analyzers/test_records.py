"""records.to_record: every field of the flat record, and that no raw control byte reaches it."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from analyzers.http.head import ResponseHead, parse_request_head, parse_response_head
from analyzers.http.messages import Endpoints, Message, Transaction
from analyzers.http.text import Strings
from analyzers.http.transactions import Conversation
from analyzers.records import ascii_headers, message_of, to_record

CONN = Endpoints("CrecordTest000001", "192.0.2.10", 51234, "198.51.100.7", 8080, False)
MIDSTREAM = Endpoints("CrecordTest000002", "2001:db8::1", 40000, "2001:db8::2", 80, True)

KEYS = ["ts", "uid", "trans_depth", "src_ip", "src_port", "dst_ip", "dst_port", "method", "host", "uri",
        "version", "user_agent", "referrer", "request_body_len", "status_code", "status_msg", "info_code",
        "response_body_len", "response_content_type", "ttfb_ms", "duration_ms", "flags", "anomalies", "reason",
        "pcap_file"]


def request(raw: bytes, first: float, last: float, **kw: Any) -> Message:
    head = parse_request_head(raw)
    return Message(head, first, first, last, anomalies=list(head.anomalies), **kw)


def response(raw: bytes, first: float, last: float, **kw: Any) -> Message:
    head = parse_response_head(raw)
    assert head is not None
    return Message(head, first, first, last, **kw)


REQ = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: curl/8.5.0\r\n"
       b"Referer: http://www.example.test/\r\n\r\n")
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n"


def test_complete_transaction() -> None:
    req = request(REQ, 1700000000.1234567, 1700000000.125, depth=3, pcap_file="/caps/a.pcap", done=True)
    resp = response(RESP, 1700000000.2, 1700000000.5, body_len=1234, depth=3, done=True)
    r = to_record(Transaction(CONN, req, resp))
    assert list(r) == KEYS
    assert r == {
        "ts": 1700000000.123457, "uid": "CrecordTest000001", "trans_depth": 3,
        "src_ip": "192.0.2.10", "src_port": 51234, "dst_ip": "198.51.100.7", "dst_port": 8080,
        "method": "GET", "host": "www.example.test", "uri": "/index.html?q=1", "version": "1.1",
        "user_agent": "curl/8.5.0", "referrer": "http://www.example.test/", "request_body_len": 0,
        "status_code": 200, "status_msg": "OK", "info_code": None, "response_body_len": 1234,
        "response_content_type": "text/html", "ttfb_ms": 75.0, "duration_ms": 376.543,
        "flags": [], "anomalies": [], "reason": None, "pcap_file": "/caps/a.pcap",
    }


def test_request_without_response() -> None:
    req = request(b"POST /p HTTP/1.0\r\nContent-Length: 3\r\n\r\n", 5.0, 5.5, body_len=3, depth=1, pcap_file="f")
    r = to_record(Transaction(CONN, req, None, "reset"))
    assert {k: r[k] for k in ("method", "version", "request_body_len", "status_code", "status_msg",
                              "response_body_len", "response_content_type", "ttfb_ms", "duration_ms", "flags",
                              "reason", "pcap_file", "trans_depth", "ts")} == {
        "method": "POST", "version": "1.0", "request_body_len": 3, "status_code": None, "status_msg": None,
        "response_body_len": 0, "response_content_type": None, "ttfb_ms": None, "duration_ms": None,
        "flags": ["no_response"], "reason": "reset", "pcap_file": "f", "trans_depth": 1, "ts": 5.0,
    }


def test_response_without_request() -> None:
    resp = response(b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\n", 7.25, 7.5, body_len=9, depth=2,
                    pcap_file="g")
    r = to_record(Transaction(MIDSTREAM, None, resp, "no_request"))
    assert r == {
        "ts": 7.25, "uid": "CrecordTest000002", "trans_depth": 2,
        "src_ip": "2001:db8::1", "src_port": 40000, "dst_ip": "2001:db8::2", "dst_port": 80,
        "method": None, "host": None, "uri": None, "version": "1.0", "user_agent": None, "referrer": None,
        "request_body_len": 0, "status_code": 404, "status_msg": "Not Found", "info_code": None,
        "response_body_len": 9, "response_content_type": "text/plain", "ttfb_ms": None, "duration_ms": None,
        "flags": ["midstream", "no_request"], "anomalies": [], "reason": "no_request", "pcap_file": "g",
    }


def test_flags_in_fixed_order() -> None:
    req = request(REQ, 1.0, 2.0, gap=True, truncated=True, depth=1)
    resp = response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2.0, 2.0, gap=True, depth=1)
    assert to_record(Transaction(MIDSTREAM, req, resp, None, tunnel=True))["flags"] == [
        "midstream", "gap", "truncated", "tunnel"]
    assert to_record(Transaction(CONN, req, None, "gap"))["flags"] == ["gap", "no_response", "truncated"]
    clean = request(REQ, 1.0, 2.0, depth=1)
    assert to_record(Transaction(CONN, clean, None, "gap"))["flags"] == ["gap", "no_response"]


def test_anomalies_request_then_response() -> None:
    req = request(b"GET /a b HTTP/1.1\r\n\r\n", 1.0, 1.0, depth=1)
    req.anomalies.append("duplicate_host")
    resp = response(RESP, 1.5, 1.5, depth=1, anomalies=["duplicate_content_length"])
    assert to_record(Transaction(CONN, req, resp))["anomalies"] == [
        "space_in_request_target", "duplicate_host", "duplicate_content_length"]


def test_ttfb_is_clamped_at_zero_and_times_rounded() -> None:
    """A response can start before the request's body ends (early 4xx): ttfb is then 0, not negative."""
    req = request(REQ, 10.0, 12.0, depth=1)
    resp = response(RESP, 11.0004, 13.1234567, depth=1)
    r = to_record(Transaction(CONN, req, resp))
    assert (r["ttfb_ms"], r["duration_ms"]) == (0.0, 3123.457)


def test_info_code_and_headless_response() -> None:
    req = request(b"GET /x\r\n", 1.0, 1.0, depth=1, info_code=100, info_msg="Continue")
    headless = Message(ResponseHead("0.9", 0, "", {}, ()), 1.5, 1.5, 2.0, depth=1)  # as the parser makes it
    r = to_record(Transaction(CONN, req, headless))
    assert (r["version"], r["status_code"], r["status_msg"], r["info_code"]) == ("0.9", None, None, 100)


def test_repeated_headers() -> None:
    """Host, User-Agent and Referer take the first value; Content-Type the last (as `header` does)."""
    req = request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nUser-Agent: u1\r\nUser-Agent: u2\r\n"
                  b"Referer: r1\r\nReferer: r2\r\n\r\n", 1.0, 1.0, depth=1)
    resp = response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\n", 1.0, 1.0)
    r = to_record(Transaction(CONN, req, resp))
    assert (r["host"], r["user_agent"], r["referrer"], r["response_content_type"]) == ("a", "u1", "r1", "text/html")


def test_request_without_parsable_line() -> None:
    req = request(b"GARBAGE\r\n\r\n", 1.0, 1.0, depth=4)
    resp = response(b"HTTP/1.1 400 Bad Request\r\n\r\n", 1.5, 1.5, depth=4)
    r = to_record(Transaction(CONN, req, resp))
    assert (r["method"], r["uri"], r["version"], r["status_code"], r["anomalies"], r["trans_depth"]) == (
        None, None, "1.1", 400, ["bad_request_line"], 4)


def test_message_of() -> None:
    req = request(REQ, 1.0, 1.0)
    resp = response(RESP, 2.0, 2.0)
    assert message_of(Transaction(CONN, req, resp)) is req
    assert message_of(Transaction(CONN, None, resp, "no_request")) is resp


# Escaping, end to end (wire bytes through the parser into a record) ----------------------------


def _records_of(client: bytes, server: bytes, strings: Strings = Strings.UTF8) -> list[dict[str, Any]]:
    conv = Conversation(CONN, Counter())
    conv.client.data(client, 1.0)
    conv.server.data(server, 1.5)
    conv.close("closed")
    return [to_record(tx, strings) for tx in conv.out]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _assert_printable(record: dict[str, Any]) -> None:
    for s in _strings(record):
        assert all(0x20 <= ord(ch) < 0x7F for ch in s), repr(s)
    text = json.dumps(record, ensure_ascii=False)
    assert all(0x20 <= ord(ch) < 0x7F for ch in text)
    assert json.loads(text) == record


def test_wire_bytes_are_escaped_in_records() -> None:
    """`strings: ascii`: every byte that is not printable ASCII escaped (the default keeps the valid
    UTF-8 \xc3\xa9 as é: test_valid_utf8_is_text_in_records)."""
    client = (b"GET /a\x01\x7f\x80\\b\xff HTTP/1.1\r\nHost: h\x00\x1b\\\xe9\r\n"
              b"User-Agent: ua\x07\x7f\xc3\xa9\\x\r\nReferer: r\x0b\x0c\r\n\r\n")
    server = b"HTTP/1.1 200 O\x01K\xfe\r\nContent-Type: text/\x1bhtml\r\nContent-Length: 0\r\n\r\n"
    (r,) = _records_of(client, server, Strings.ASCII)
    assert (r["uri"], r["host"], r["user_agent"], r["referrer"], r["status_msg"], r["response_content_type"]) == (
        "/a\\x01\\x7f\\x80\\x5cb\\xff", "h\\x00\\x1b\\x5c\\xe9", "ua\\x07\\x7f\\xc3\\xa9\\x5cx", "r\\x0b\\x0c",
        "O\\x01K\\xfe", "text/\\x1bhtml")
    _assert_printable(r)


def test_valid_utf8_is_text_in_records() -> None:
    """The default, strings: utf8: the same wire bytes as above, with valid UTF-8 (\\xc3\\xa9) as text;
    the rest as with strings: ascii. And a head that is all valid UTF-8, in both forms."""
    client = (b"GET /a\x01\x7f\x80\\b\xff HTTP/1.1\r\nHost: h\x00\x1b\\\xe9\r\n"
              b"User-Agent: ua\x07\x7f\xc3\xa9\\x\r\nReferer: r\x0b\x0c\r\n\r\n")
    server = b"HTTP/1.1 200 O\x01K\xfe\r\nContent-Type: text/\x1bhtml\r\nContent-Length: 0\r\n\r\n"
    (r,) = _records_of(client, server)
    assert (r["uri"], r["host"], r["user_agent"], r["referrer"], r["status_msg"], r["response_content_type"]) == (
        "/a\\x01\\x7f\\x80\\x5cb\\xff", "h\\x00\\x1b\\x5c\\xe9", "ua\\x07\\x7f\u00e9\\x5cx", "r\\x0b\\x0c",
        "O\\x01K\\xfe", "text/\\x1bhtml")
    client = (b"G\xc3\x89T /st\xc3\xa4dte/K\xc3\xb6ln HTTP/1.1\r\nHost: k\xc3\xb6ln.example\r\n"
              b"User-Agent: \xe2\x80\xaebad\r\nReferer: http://\xe6\x9d\xb1\xe4\xba\xac/\r\n\r\n")
    server = (b"HTTP/1.1 200 Gr\xc3\xbc\xc3\x9fe\r\nContent-Type: text/html; charset=\xc3\xa9\r\n"
              b"Content-Length: 0\r\n\r\n")
    (u,) = _records_of(client, server)
    (a,) = _records_of(client, server, Strings.ASCII)
    want = {"method": ("G\u00c9T", "G\\xc3\\x89T"), "uri": ("/st\u00e4dte/K\u00f6ln", "/st\\xc3\\xa4dte/K\\xc3\\xb6ln"),
            "host": ("k\u00f6ln.example", "k\\xc3\\xb6ln.example"),
            "user_agent": ("\\xe2\\x80\\xaebad", "\\xe2\\x80\\xaebad"),
            "referrer": ("http://\u6771\u4eac/", "http://\\xe6\\x9d\\xb1\\xe4\\xba\\xac/"),
            "status_msg": ("Gr\u00fc\u00dfe", "Gr\\xc3\\xbc\\xc3\\x9fe"),
            "response_content_type": ("text/html; charset=\u00e9", "text/html; charset=\\xc3\\xa9")}
    assert {k: (u[k], a[k]) for k in want} == want
    assert {k: v for k, v in u.items() if k not in want} == {k: v for k, v in a.items() if k not in want}
    assert json.loads(json.dumps(u))["uri"].endswith("/K\u00f6ln")
    _assert_printable(a)


def test_ascii_headers() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: k\xc3\xb6ln\r\nX-A: a\r\nX-A: \xe2\x82\xac\r\n\r\n")
    assert head.headers == {"host": "k\u00f6ln", "x-a": ["a", "\u20ac"]}
    assert ascii_headers(head.headers) == {"host": "k\\xc3\\xb6ln", "x-a": ["a", "\\xe2\\x82\\xac"]}
    plain = {"host": "h", "x-a": ["a", "b"]}
    assert ascii_headers(plain) is plain


def test_tab_and_bare_cr_inside_header_values_are_escaped() -> None:
    """TAB and a bare CR are control characters too: inside a value they must be written as
    \\x09 and \\x0d like every other one (records.py: "a record holds no raw control character")."""
    client = b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: a\tb\rc\r\nReferer: x\ty\r\n\r\n"
    (r,) = _records_of(client, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (r["user_agent"], r["referrer"]) == ("a\\x09b\\x0dc", "x\\x09y")
    _assert_printable(r)
