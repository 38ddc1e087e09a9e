"""watcher/read/lines.py: `record_line` writes what `json` makes of `to_record(tx)`, byte for byte.

`record_line` is the fast way to a record's line (no dict, fragments remembered per connection,
header block and response head, floats formatted without round()); `reference_line` is the plain
way. They are compared on hand-made transactions covering every field's shapes (missing request
or response, flags, anomalies, escapes, repeated headers, interim codes, odd file names), on the
transactions of every capture of the shared corpus, and the float formatting on a few hundred
thousand values, among them the ties and range ends where a shortcut would go wrong.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.env import CORPUS

from analyzers.http.head import RequestHead, ResponseHead
from analyzers.http.messages import Endpoints, Message, Transaction
from analyzers.http.text import Strings
from analyzers.http.transactions import Conversation
from analyzers.pipeline import Pipeline
from analyzers.records import to_record
from unit.analyzers.test_records import request, response
from watcher.capture.pcapfile import CaptureError
from watcher.capture.sources import Capture
from watcher.read import lines as jsonlines
from watcher.read.lines import JsonLinesWriter, record_line, reference_line

CONN = Endpoints("CjsonTest00000001", "192.0.2.10", 51234, "198.51.100.7", 8080, False)
MIDSTREAM = Endpoints("CjsonTest00000002", "2001:db8::1", 40000, "2001:db8::2", 80, True)
REQ = b"GET /i?q=1 HTTP/1.1\r\nHost: w.test\r\nUser-Agent: c/8\r\nReferer: http://w.test/\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n"


def hand_made() -> list[Transaction]:
    req = request(REQ, 1700000000.1234567, 1700000000.125, depth=3, pcap_file="/caps/a.pcap", done=True)
    resp = response(RESP, 1700000000.2, 1700000000.5, body_len=1234, depth=3, done=True)
    odd = request(b'GET /a"b\\c\x01 HTTP/1.1\r\nHost: "q"\r\nHost: second\r\nUser-Agent: u1\r\n'
                  b"User-Agent: u2\r\n\r\n", 5.0, 5.5, depth=2, pcap_file="caf\u00e9 \udcff.pcap")
    odd.anomalies.append("duplicate_host")
    headless = Message(ResponseHead("0.9", 0, "", {}, ()), 1.5, 1.5, 2.0, depth=1)
    one_line = request(b"GET /x\r\n", 1.0, 1.0, depth=1, info_code=100, info_msg="Continue")
    early = request(REQ, 10.0, 12.0, depth=1, gap=True, truncated=True)
    switching = response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2.0, 2.0, gap=True, depth=1)
    garbage = Message(RequestHead(None, None, None, {}, ("bad_request_line",)), 3.0, 3.0, 3.0,
                      anomalies=["bad_request_line"], depth=4)
    typed = response(b"HTTP/1.1 404 Not Found\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n", 7.25, 7.5,
                     body_len=9, depth=2, pcap_file="g", anomalies=["duplicate_content_length"])
    text = request(b"GET /K\xc3\xb6ln?q=\xe2\x80\xae\xff\\ HTTP/1.1\r\nHost: k\xc3\xb6ln.test\r\n"
                   b"User-Agent: \xf0\x9f\x98\x80\xc2\x85\r\nReferer: \xc3\r\n\r\n", 8.0, 8.0, depth=1)
    text_reply = response(b"HTTP/1.1 200 Gr\xc3\xbc\xc3\x9fe\r\nContent-Type: text/plain; charset=\xe2\x82\xac\r\n"
                          b"\r\n", 8.5, 8.5, depth=1)
    return [
        Transaction(CONN, req, resp),
        Transaction(CONN, req, None, "reset"),
        Transaction(MIDSTREAM, None, typed, "no_request"),
        Transaction(CONN, odd, typed),
        Transaction(CONN, text, text_reply),
        Transaction(CONN, one_line, headless),
        Transaction(MIDSTREAM, early, switching, None, tunnel=True),
        Transaction(CONN, early, None, "gap"),
        Transaction(CONN, garbage, response(b"HTTP/1.1 400 Bad Request\r\n\r\n", 3.5, 3.5, depth=4)),
        Transaction(CONN, request(REQ, 0.0, 0.0), response(RESP, 0.0, 0.0)),  # times at zero
        Transaction(CONN, request(REQ, 5e-05, 6e-05), response(RESP, 4e-05, 9e99)),  # and far out
    ]


def test_hand_made_transactions() -> None:
    for tx in hand_made():
        assert record_line(tx) == reference_line(tx)
        assert record_line(tx, Strings.ASCII) == reference_line(tx, Strings.ASCII)
        assert record_line(tx, Strings.UTF8) == record_line(tx)
        # reference_line is json's own output: text as characters; strings: ascii as before, 7-bit
        assert record_line(tx) == json.dumps(to_record(tx), ensure_ascii=False, separators=(",", ":"))
        assert record_line(tx, Strings.ASCII) == json.dumps(to_record(tx, Strings.ASCII), separators=(",", ":"))
        assert record_line(tx, Strings.ASCII).isascii()


def test_utf8_text_in_both_forms() -> None:
    """Valid UTF-8 is JSON text, written as its characters (a grep of the UTF-8 line finds Köln); what
    is not safe text stays \\xNN; with strings: ascii every non-ASCII byte is \\xNN and the line is
    7-bit ASCII, as before there was a choice."""
    (tx,) = [t for t in hand_made() if t.request is not None and t.request.first_ts == 8.0]
    line = record_line(tx)
    assert '"uri":"/K\u00f6ln?q=\\\\xe2\\\\x80\\\\xae\\\\xff\\\\x5c"' in line
    data = line.encode("utf-8")
    assert b'"uri":"/K\xc3\xb6ln?q=\\\\xe2\\\\x80\\\\xae\\\\xff\\\\x5c"' in data
    assert b'"host":"k\xc3\xb6ln.test"' in data and b'"user_agent":"\xf0\x9f\x98\x80\\\\xc2\\\\x85"' in data
    assert b'"status_msg":"Gr\xc3\xbc\xc3\x9fe"' in data and b"charset=\xe2\x82\xac" in data
    # the characters that rewrite a line never appear raw: not the bidi override, not C1
    assert "\u202e" not in line and "\x85" not in line and "\\u" not in line
    r = json.loads(line)
    assert (r["uri"], r["host"], r["user_agent"], r["referrer"], r["status_msg"], r["response_content_type"]) == (
        "/K\u00f6ln?q=\\xe2\\x80\\xae\\xff\\x5c", "k\u00f6ln.test", "\U0001f600\\xc2\\x85", "\\xc3",
        "Gr\u00fc\u00dfe", "text/plain; charset=\u20ac")
    ascii_line = record_line(tx, Strings.ASCII)
    assert ascii_line.isascii()
    assert '"uri":"/K\\\\xc3\\\\xb6ln?q=\\\\xe2\\\\x80\\\\xae\\\\xff\\\\x5c"' in ascii_line
    a = json.loads(ascii_line)
    assert (a["uri"], a["host"], a["user_agent"], a["referrer"], a["status_msg"], a["response_content_type"]) == (
        "/K\\xc3\\xb6ln?q=\\xe2\\x80\\xae\\xff\\x5c", "k\\xc3\\xb6ln.test", "\\xf0\\x9f\\x98\\x80\\xc2\\x85",
        "\\xc3", "Gr\\xc3\\xbc\\xc3\\x9fe", "text/plain; charset=\\xe2\\x82\\xac")
    out = io.StringIO()
    JsonLinesWriter(out, Strings.ASCII).write([tx])
    assert out.getvalue() == reference_line(tx, Strings.ASCII) + "\n"


def test_output_file_and_stdout_are_utf8_whatever_the_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pcapwatch read`'s output, a file or standard output in a Latin-1 locale, holds the UTF-8 bytes
    of the text; a capture file name that is not UTF-8 keeps the JSON escape of its surrogate
    (\\udcff), as the ASCII form writes it, so the bytes stay valid UTF-8 and valid JSON."""
    txs = hand_made()
    want = "".join(reference_line(tx) + "\n" for tx in txs).replace("\udcff", "\\udcff").encode("utf-8")
    assert b"K\xc3\xb6ln" in want and b'"pcap_file":"caf\xc3\xa9 \\udcff.pcap"' in want
    path = tmp_path / "out.jsonl"
    with jsonlines.open_output(str(path)) as f:
        JsonLinesWriter(f).write(txs)
    assert path.read_bytes() == want
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="latin-1"))
    out = jsonlines.open_output(None)
    assert out is sys.stdout
    writer = JsonLinesWriter(out)
    writer.write(txs)
    writer.flush()
    assert raw.getvalue() == want
    assert [json.loads(x) for x in raw.getvalue().splitlines()] == [to_record(tx) for tx in txs]


def test_parsed_conversation_with_wire_escapes() -> None:
    conv = Conversation(CONN, Counter())
    conv.client.data(b"GET /a\x01\x7f\x80\\b\xff HTTP/1.1\r\nHost: h\x00\x1b\\\xe9\r\nUser-Agent: a\tb\rc\r\n\r\n"
                     b"HEAD /h HTTP/1.0\r\n\r\n", 1.0)
    conv.server.data(b"HTTP/1.1 200 O\x01K\xfe\r\nContent-Type: text/\x1bhtml\r\nContent-Length: 0\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 1.5)
    conv.close("closed")
    assert len(conv.out) == 2
    for tx in conv.out:
        assert record_line(tx) == reference_line(tx)


def test_remembered_fragments_survive_their_memo_being_emptied() -> None:
    """More connections, header blocks and heads than the memos hold: each refill is right."""
    txs = []
    for n in range(jsonlines.MEMO_SIZE + 50):
        conn = Endpoints(f"C{n:017d}", f"10.0.{n >> 8 & 255}.{n & 255}", 1024 + n, "10.9.9.9", 80, n % 2 == 0)
        req = request(REQ.replace(b"w.test", b"h%d.test" % n), 1.0 + n, 1.5 + n, depth=1)
        resp = response(RESP.replace(b"1234", b"%d" % n), 2.0 + n, 2.5 + n, depth=1)
        txs.append(Transaction(conn, req, resp))
    for tx in txs + txs[:100]:
        assert record_line(tx) == reference_line(tx)


def test_writer_writes_one_line_per_transaction() -> None:
    out = io.StringIO()
    writer = JsonLinesWriter(out)
    txs = hand_made()
    writer.write(txs)
    writer.write([])
    assert out.getvalue() == "".join(reference_line(tx) + "\n" for tx in txs)
    assert writer.written == len(txs)


def corpus_files() -> list[Path]:
    found = sorted((CORPUS / "local").glob("*.pcap")) + sorted((CORPUS / "zeek" / "traces").rglob("*"))
    return [p for p in found if p.is_file()]


def test_every_transaction_of_the_corpus() -> None:
    files = corpus_files()
    if not files:
        pytest.skip(f"shared corpus not available: {CORPUS}")
    checked = 0
    for path in files:
        p = Pipeline()
        p.set_source(path.name)
        cap = Capture(str(path))
        txs: list[Transaction] = []
        try:
            for batches in cap.batches():
                for linktype, frames in batches:
                    txs += p.feed(linktype, frames)
        except CaptureError:  # a damaged trace: the transactions so far are still checked
            pass
        finally:
            cap.close()
        txs += p.close()
        for tx in txs:
            assert record_line(tx) == reference_line(tx), path
            assert record_line(tx, Strings.ASCII) == reference_line(tx, Strings.ASCII), path
        checked += len(txs)
    assert checked > 1000


def float_cases() -> list[float]:
    rng = random.Random(7)
    values = [0.0, -0.0, 1e-4, math.nextafter(1e-4, 0), 5e-7, 4.9999999e-7, 0.0005, 0.00049999, 2.0**32,
              math.nextafter(2.0**32, 0), 2.0**42, math.nextafter(2.0**42, 0), 1e16, -1.5, float("nan"),
              float("inf"), -float("inf"), 1795365299.8033235, 1795365299.8033225]
    for _ in range(100_000):
        values.append(10 ** rng.uniform(-7, 13))
        values.append(rng.uniform(1.6e9, 2.1e9))
        # Decimals exactly halfway at the 6th or 3rd place, and a hair either side.
        values.append(rng.randrange(10**15) / 10**6 + rng.choice([0.0, 5e-7, -5e-7, 5e-4]))
    return values


def test_float_formatting_is_json_of_round() -> None:
    for v in float_cases():
        assert jsonlines._ts(v) == jsonlines._float(round(v, 6)), repr(v)
        assert jsonlines._ms(v / 1000) == jsonlines._float(round(max(v / 1000, 0.0) * 1000.0, 3)), repr(v)
    assert jsonlines._float(float("nan")) == "NaN"
    assert jsonlines._float(float("inf")) == "Infinity"


def test_big_header_blocks_are_not_kept_alive() -> None:
    """A memo holds its objects: one with more than MEMO_MAX_HEADER_BYTES of headers is written
    right but not remembered, so a peer sending huge heads cannot fill memory through it."""
    big = REQ.replace(b"User-Agent: c/8", b"User-Agent: " + b"u" * (jsonlines.MEMO_MAX_HEADER_BYTES + 1))
    req = request(big, 1.0, 1.0, depth=1)
    resp = response(RESP.replace(b"text/html", b"t" * (jsonlines.MEMO_MAX_HEADER_BYTES + 1)), 2.0, 2.0, depth=1)
    tx = Transaction(CONN, req, resp)
    assert record_line(tx) == reference_line(tx)
    assert isinstance(req.head, RequestHead) and isinstance(resp.head, ResponseHead)
    assert id(req.head.headers) not in jsonlines._HEADERS.memo
    assert id(resp.head) not in jsonlines._RESPONSE.memo
    small = Transaction(CONN, request(REQ, 1.0, 1.0), response(RESP, 2.0, 2.0))
    record_line(small)
    assert small.request is not None and isinstance(small.request.head, RequestHead)
    assert jsonlines._HEADERS.memo[id(small.request.head.headers)][0] is small.request.head.headers
