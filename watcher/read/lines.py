"""Writes records as JSON lines (one object per transaction) to a text stream.

The JSON holds text as characters (README "Text"): written to a UTF-8 stream, a record for /Köln
holds the bytes of Köln, so grep finds it. With `strings: ascii` the line is 7-bit ASCII, non-ASCII
characters as \\u escapes, as before there was a choice. Where lines become bytes, `UTF8_ERRORS`
is the error handler: the only characters UTF-8 cannot encode are lone surrogates (a file name that
is not UTF-8, as Python decodes it), which it writes as the same JSON escape as the ASCII form does.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, Generic, Protocol, TextIO, TypeVar

from analyzers import (
    Endpoints,
    Headers,
    RequestHead,
    ResponseHead,
    Strings,
    Transaction,
    ascii_text,
    header,
    record_anomalies,
    record_flags,
    to_record,
)

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_encode_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode
# Lines to bytes: UTF-8, a lone surrogate as its JSON escape (\\udcNN: "backslashreplace" writes
# exactly what json's ASCII form writes for it), so the bytes are valid UTF-8 and valid JSON.
UTF8_ERRORS = "backslashreplace"

# One record's line, fields in `to_record`'s order; %s slots take values already in JSON. The
# endpoints (src_ip to dst_port), user_agent + referrer and status_code + status_msg come as
# fragments prepared once per connection, header block and response head.
_LINE = ('{"ts":%s,"uid":%s,"trans_depth":%d,%s,"method":%s,"host":%s,"uri":%s,"version":%s,%s,'
         '"request_body_len":%d,%s,"info_code":%s,"response_body_len":%d,"response_content_type":%s,'
         '"ttfb_ms":%s,"duration_ms":%s,"flags":[%s],"anomalies":[%s],"reason":%s,"pcap_file":%s}')
# Fragments remembered per object; past this many entries a memo starts afresh (a bound on memory
# that costs a refill now and then). Parsed heads and header dicts are shared between messages
# (see analyzers/http/head.py and parser.py), so a few thousand cover a busy capture. A memo keeps its
# objects alive: header dicts holding more than MEMO_MAX_HEADER_BYTES are not remembered, so the
# memos hold at most a few tens of megabytes whatever the peers send.
MEMO_SIZE = 4096
MEMO_MAX_HEADER_BYTES = 4096
_NO_HEADERS = ("null", '"user_agent":null,"referrer":null')
_NO_RESPONSE = ('"status_code":null,"status_msg":null', "null")

def open_output(path: str | None) -> TextIO:
    """Where `pcapwatch read` writes: the file at `path` (created or emptied) or standard output,
    either one writing UTF-8 with `UTF8_ERRORS` whatever the locale says (JSON is UTF-8, RFC 8259)."""
    if path is not None:
        return open(path, "w", encoding="utf-8", errors=UTF8_ERRORS)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", errors=UTF8_ERRORS)
    return sys.stdout


class TextSink(Protocol):
    """Where lines go: a text file, stdout, or a worker's pipe to its parent."""

    def write(self, s: str, /) -> object: ...

    def flush(self) -> None: ...


class OutputError(Exception):
    """Records could not be written (disk full, closed pipe): not a problem of the input."""


def record_line(tx: Transaction, strings: Strings = Strings.UTF8) -> str:
    """The JSON line of `to_record(tx, strings)`, character for character what `json` makes of that
    dict (compact; text as characters, or with `strings: ascii` 7-bit ASCII with \\u escapes:
    `reference_line`), written straight from the transaction: about three times cheaper than
    building the dict and encoding it generically, which was an eighth of `pcapwatch read`'s time.
    tests/unit/watcher/read/test_lines.py checks the two agree on every transaction of the test
    captures, in both forms of `strings`."""
    if strings == Strings.UTF8:
        wire, name, headers, response = encode_basestring, encode_basestring, _HEADERS, _RESPONSE
    else:
        wire, name, headers, response = _ascii_json, encode_basestring_ascii, _ASCII_HEADERS, _ASCII_RESPONSE
    req, resp, conn = tx.request, tx.response, tx.conn
    rh = req.head if req is not None and isinstance(req.head, RequestHead) else None
    sh = resp.head if resp is not None and isinstance(resp.head, ResponseHead) else None
    first = req if req is not None else resp
    assert first is not None
    flags = ['"%s"' % f for f in record_flags(tx)]  # flag names are plain ASCII words
    anomalies = record_anomalies(tx)
    version = rh.version if rh is not None else None
    if not version:
        version = sh.version if sh is not None else None
    if req is not None and resp is not None:
        ttfb, duration = _ms(resp.first_ts - req.last_ts), _ms(resp.last_ts - req.first_ts)
    else:
        ttfb = duration = "null"
    uid, endpoints = _ENDPOINTS.get(conn)
    host, agent_referrer = headers.get(rh.headers) if rh is not None else _NO_HEADERS
    status, content_type = response.get(sh) if sh is not None else _NO_RESPONSE
    return _LINE % (
        _ts(first.first_ts), uid, first.depth, endpoints,
        "null" if rh is None or rh.method is None else wire(rh.method), host,
        "null" if rh is None or rh.uri is None else wire(rh.uri),
        "null" if version is None else encode_basestring_ascii(version), agent_referrer,
        req.body_len if req is not None else 0, status,
        "null" if req is None or req.info_code is None else "%d" % req.info_code,
        resp.body_len if resp is not None else 0, content_type, ttfb, duration, ",".join(flags),
        ",".join(map(encode_basestring_ascii, anomalies)),
        "null" if tx.reason is None else encode_basestring_ascii(tx.reason),
        "null" if first.pcap_file is None else name(first.pcap_file))


T = TypeVar("T")


class _Memo(Generic[T]):
    """`make(obj)` remembered while `obj` is: keyed by id() with `obj` held in the entry, so the id
    cannot pass to another object while the entry exists. `headers(obj)`, when given, is the header
    dict an object holds: too big a one is not kept alive here."""

    def __init__(self, make: Callable[[Any], T], headers: Callable[[Any], Headers] | None = None) -> None:
        self.make = make
        self.headers = headers
        self.memo: dict[int, tuple[object, T]] = {}

    def get(self, obj: object) -> T:
        hit = self.memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = self.make(obj)
        if self.headers is not None and _header_bytes(self.headers(obj)) > MEMO_MAX_HEADER_BYTES:
            return value
        if len(self.memo) >= MEMO_SIZE:
            self.memo.clear()
        self.memo[id(obj)] = (obj, value)
        return value


def _header_bytes(h: Headers) -> int:
    return sum(len(k) + (len(v) if isinstance(v, str) else sum(map(len, v))) for k, v in h.items())


def _endpoints(conn: Endpoints) -> tuple[str, str]:
    """uid; src_ip to dst_port."""
    return encode_basestring_ascii(conn.uid), '"src_ip":%s,"src_port":%d,"dst_ip":%s,"dst_port":%d' % (
        encode_basestring_ascii(conn.client_ip), conn.client_port, encode_basestring_ascii(conn.server_ip),
        conn.server_port)


def _ascii_json(s: str) -> str:
    """A wire string in JSON, in the `strings: ascii` form."""
    return encode_basestring_ascii(ascii_text(s))


def _header_fields(h: Headers, wire: Callable[[str], str] = encode_basestring) -> tuple[str, str]:
    """host; user_agent and referrer (`wire`: the JSON of a wire string)."""
    return _str(_first(h.get("host")), wire), '"user_agent":%s,"referrer":%s' % (
        _str(_first(h.get("user-agent")), wire), _str(_first(h.get("referer")), wire))


def _response_fields(sh: ResponseHead, wire: Callable[[str], str] = encode_basestring) -> tuple[str, str]:
    """status_code and status_msg; response_content_type."""
    status = ('"status_code":%d,"status_msg":%s' % (sh.status, wire(sh.reason)) if sh.status else _NO_RESPONSE[0])
    return status, _str(header(sh.headers, "content-type"), wire)


_ENDPOINTS = _Memo(_endpoints)
_HEADERS = _Memo(_header_fields, lambda h: h)
_RESPONSE = _Memo(_response_fields, lambda sh: sh.headers)
_ASCII_HEADERS = _Memo(lambda h: _header_fields(h, _ascii_json), lambda h: h)
_ASCII_RESPONSE = _Memo(lambda sh: _response_fields(sh, _ascii_json), lambda sh: sh.headers)


def _str(v: str | None, wire: Callable[[str], str]) -> str:
    return "null" if v is None else wire(v)


def _first(v: str | list[str] | None) -> str | None:
    return v[0] if isinstance(v, list) else v


def _ms(seconds: float) -> str:
    """`round(max(seconds, 0.0) * 1000.0, 3)` in JSON, as records.py has it (see `_ts`)."""
    ms = max(seconds, 0.0) * 1000.0
    if ms < 4398046511104.0:  # 2**42
        s = ("%.3f" % ms).rstrip("0")
        return s + "0" if s[-1] == "." else s
    return _float(round(ms, 3))


def _ts(ts: float) -> str:
    """`round(ts, 6)` in JSON, as records.py has it, three times cheaper.

    round() and "%.6f" both take the correctly rounded decimal with 6 places. Below 2**32 a
    double's ulp is under 1e-6, so the doubles nearest two such decimals differ, and repr (the
    shortest string that reads back as the same double) gives back that decimal without its
    trailing zeros; from 1e-4 up repr writes it in fixed notation. Outside that range, the plain
    way. (For milliseconds with 3 places the bound is 2**42.) tests/unit/watcher/read/test_lines.py
    compares the two on many values.
    """
    if 1e-4 <= ts < 4294967296.0:  # 2**32
        s = ("%.6f" % ts).rstrip("0")
        return s + "0" if s[-1] == "." else s
    return _float(round(ts, 6))


def _float(x: float) -> str:
    """As `json` writes a float: its repr, but NaN and the infinities spelled the JavaScript way."""
    r = repr(x)
    if r[-1] in "fn":  # inf, -inf, nan
        return _encode(x)
    return r


class JsonLinesWriter:
    def __init__(self, stream: TextSink, strings: Strings = Strings.UTF8) -> None:
        self.stream = stream
        self.strings = strings
        self.written = 0

    def write(self, txs: Iterable[Transaction]) -> None:
        strings = self.strings
        lines = [record_line(tx, strings) for tx in txs]
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
            except OSError as e:
                raise OutputError(e.strerror or str(e)) from e
            self.written += len(lines)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            raise OutputError(e.strerror or str(e)) from e


def reference_line(tx: Transaction, strings: Strings = Strings.UTF8) -> str:
    """The plain way to the same line, for tests: the record dict, encoded by `json`
    (`ensure_ascii=False`; with `strings: ascii`, `ensure_ascii=True`, as before there was a choice)."""
    return (_encode if strings == Strings.UTF8 else _encode_ascii)(to_record(tx, strings))
