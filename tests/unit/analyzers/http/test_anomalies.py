"""http.anomalies: every anomaly the analyzers can emit is a member of `Anomaly`, with its reason; each
member is emitted by some input (no dead names a rule could wait on forever), and what is emitted is
the member itself, never a bare string that merely spells one."""

from __future__ import annotations

from collections import Counter

import pytest

from analyzers.http.anomalies import REASONS, Anomaly
from analyzers.http.framing import MAX_LINE_BYTES
from analyzers.http.head import MAX_HEAD_BYTES
from analyzers.http.messages import Endpoints
from analyzers.http.transactions import Conversation
from analyzers.records import to_record

ENDPOINTS = Endpoints("CunitTestConn0001", "10.0.0.1", 40000, "10.0.0.2", 80, False)
GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def post(*headers: bytes, body: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked"
# One input per anomaly: (client bytes, server bytes, a gap in the client's stream after its bytes).
EXAMPLES: dict[Anomaly, tuple[bytes, bytes, bool]] = {
    Anomaly.BAD_REQUEST_LINE: (GET + b"@ junk\r\n", OK, False),
    Anomaly.BAD_METHOD: (b"G@T / HTTP/1.1\r\n\r\n", OK, False),
    Anomaly.MISSING_REQUEST_TARGET: (b"GET HTTP/1.1\r\n\r\n", OK, False),
    Anomaly.SPACE_IN_REQUEST_TARGET: (b"GET /a b HTTP/1.1\r\n\r\n", OK, False),
    Anomaly.BAD_HTTP_VERSION: (b"GET / HTTP/one\r\n\r\n", OK, False),
    Anomaly.HEADERS_AFTER_SHORT_REQUEST_LINE: (b"GET /\r\nHost: h\r\n\r\n", b"<html>", False),
    Anomaly.BAD_STATUS_LINE: (GET, b"<html>oops</html>\r\n\r\n", False),
    Anomaly.OBS_FOLD: (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", OK, False),
    Anomaly.BAD_HEADER_LINE: (b"GET / HTTP/1.1\r\nX-A : a\r\n\r\n", OK, False),
    Anomaly.DUPLICATE_HOST: (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", OK, False),
    Anomaly.CONTENT_LENGTH_AND_TRANSFER_ENCODING: (post(b"Content-Length: 5", CHUNKED, body=b"0\r\n\r\n"), OK,
                                                   False),
    Anomaly.CHUNKED_APPLIED_TWICE: (post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"), OK, False),
    Anomaly.TRANSFER_ENCODING_NOT_CHUNKED: (post(b"Transfer-Encoding: gzip"), OK, False),
    Anomaly.DUPLICATE_CONTENT_LENGTH: (post(b"Content-Length: 1", b"Content-Length: 1", body=b"x"), OK, False),
    Anomaly.CONFLICTING_CONTENT_LENGTH: (post(b"Content-Length: 1", b"Content-Length: 2", body=b"x"), OK, False),
    Anomaly.CONTENT_LENGTH_OVERFLOW: (post(b"Content-Length: 99999999999999999999"), OK, False),
    Anomaly.BAD_CONTENT_LENGTH: (post(b"Content-Length: five"), OK, False),
    Anomaly.BAD_CHUNK_SIZE: (post(CHUNKED, body=b"zz\r\n"), OK, False),
    Anomaly.CHUNK_SIZE_OVERFLOW: (post(CHUNKED, body=b"1" + b"0" * 16 + b"\r\n"), OK, False),
    Anomaly.BAD_CHUNK_TERMINATOR: (post(CHUNKED, body=b"1\r\naXY\r\n0\r\n\r\n"), OK, False),
    Anomaly.OVERSIZED_CHUNK_LINE: (post(CHUNKED, body=b"3;" + b"e" * MAX_LINE_BYTES + b"\r\n"), OK, False),
    Anomaly.OVERSIZED_HEAD: (b"GET / HTTP/1.1\r\nX-A: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", OK, False),
    Anomaly.INCOMPLETE_HEAD: (GET + b"GET /next HTTP/1.1\r\nHo", OK, False),
    Anomaly.HEAD_CUT_BY_GAP: (GET + b"GET /next HTTP/1.1\r\nHo", OK, True),
    Anomaly.JUNK_BEFORE_FIRST_MESSAGE: (b"\x01\x02\x03\r\n" + GET, OK, False),
    Anomaly.NOT_HTTP: (b"\x16\x03\x01\x02\x00\x01\x00", b"\x16\x03\x03", False),
    Anomaly.BARE_CR: (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", OK, False),
    Anomaly.BARE_LF: (b"GET / HTTP/1.1\nHost: h\n\n", OK, False),
    Anomaly.CONTROL_CHAR: (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", OK, False),
    Anomaly.WHITESPACE_LINE: (b"GET / HTTP/1.1\r\n\r\r\nHost: h\r\n\r\n", OK, False),
    Anomaly.AMBIGUOUS_FRAMING_NONE: (GET, b"HTTP/1.1 200 OK\r\nX: a\r\n\r\r\nContent-Length: 0\r\n\r\n", False),
    Anomaly.AMBIGUOUS_FRAMING_LENGTH: (post(b"X: a", b"\r", b"Content-Length: 1", body=b"x"), OK, False),
    Anomaly.AMBIGUOUS_FRAMING_CHUNKED: (post(b"Content-Length: 5", b"\r", CHUNKED, body=b"0\r\n\r\n"), OK, False),
    Anomaly.AMBIGUOUS_FRAMING_CLOSE: (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\r\nTransfer-Encoding: gzip"
                                           b"\r\n\r\nhello", False),
    Anomaly.AMBIGUOUS_FRAMING_UNKNOWN: (post(b"Content-Length: 5", b"\r", b"Transfer-Encoding: gzip", body=b"hello"),
                                        OK, False),
    Anomaly.CHUNK_SIZE_WHITESPACE: (post(CHUNKED, body=b"1 \r\nx\r\n0\r\n\r\n"), OK, False),
}


def emitted(client: bytes, server: bytes, gap: bool) -> tuple[Counter[str], list[str]]:
    """Feed one connection; return its anomaly counts and the anomalies its records carry."""
    counts: Counter[str] = Counter()
    conv = Conversation(ENDPOINTS, counts)
    conv.client.data(client, 1.0)
    if gap:
        conv.client.gap(100, 1.5)
    conv.server.data(server, 2.0)
    conv.client.eof(3.0)
    conv.server.eof(3.0)
    conv.close("closed")
    return counts, [a for tx in conv.out for a in to_record(tx)["anomalies"]]


def test_every_member_has_a_reason() -> None:
    assert set(REASONS) == set(Anomaly)
    assert all(isinstance(a.reason, str) and a.reason and a.reason == REASONS[a] for a in Anomaly)


def test_members_are_their_names() -> None:
    """Records and counters hold the members: they must be the very strings they always were."""
    for a in Anomaly:
        assert a == a.value == a.name.lower() and str(a) == f"{a}" == "%s" % a == a.value
        assert hash(a) == hash(a.value)


# Filed by the flow table on the TCP layer's report, not emitted by HTTP bytes: its example is
# tests/unit/analyzers/test_flows.py::test_retransmission_with_other_bytes_flags_the_request.
FROM_TCP = {Anomaly.RETRANSMISSION_MISMATCH}


def test_every_member_has_an_example() -> None:
    assert set(EXAMPLES) | FROM_TCP == set(Anomaly) and not set(EXAMPLES) & FROM_TCP


@pytest.mark.parametrize("anomaly", list(EXAMPLES), ids=str)
def test_emitted_as_a_member(anomaly: Anomaly) -> None:
    counts, in_records = emitted(*EXAMPLES[anomaly])
    assert anomaly in counts
    assert all(type(name) is Anomaly for name in counts), counts
    assert all(type(name) is Anomaly for name in in_records), in_records
