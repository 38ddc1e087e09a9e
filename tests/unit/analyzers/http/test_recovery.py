"""http.recovery: the parser's moves for input that did not parse (the parser's tests feed them
through `data`, `gap` and `eof`; here the entry points the conversation calls, and the state they
leave, are checked on their own)."""

from __future__ import annotations

import pytest

from analyzers.http.parser import MessageParser, State
from analyzers.http.recovery import Recovery
from analyzers.side import Side
from unit.analyzers.http.test_parser import EOF, D, Recorder, events


def test_the_parser_holds_the_state_the_mixin_changes() -> None:
    parser = MessageParser(Side.CLIENT, Recorder())
    assert isinstance(parser, Recovery) and not hasattr(parser, "__dict__")  # slots: the parser's only


def test_answered_takes_an_unfinished_head_as_read_and_resyncs_after_it() -> None:
    sink = Recorder()
    parser = MessageParser(Side.CLIENT, sink)
    parser.data(b"GET /a HTTP/1.1\r\nHost: h\r\n", 1.0)
    parser.answered()
    assert sink.events == [("head", "GET", "/a", "1.1", [], 1.0, 1.0), ("anomaly", "incomplete_head"),
                           ("end", 0, False, True, 1.0)]
    assert (parser.state, parser.buf, parser.in_message) == (State.RESYNC, bytearray(), False)
    parser.data(b"X: y\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 2.0)
    assert sink.events[3:] == [("head", "GET", "/b", "1.1", [], 2.0, 2.0), ("end", 0, False, False, 2.0)]


def test_answered_between_messages_changes_nothing() -> None:
    sink = Recorder()
    parser = MessageParser(Side.CLIENT, sink)
    parser.data(b"GET /a HTTP/1.1\r\n\r\n", 1.0)
    parser.answered()
    assert (len(sink.events), parser.state) == (2, State.HEAD)


@pytest.mark.parametrize(("first", "kind"), [(b"\x16\x03\x01", "tls"), (b"\x80\x2e\x01", "tls"),
                                             (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "http2"),
                                             (b"\x03\x00" + bytes(5000), "other")])
def test_not_http_kinds(first: bytes, kind: str) -> None:
    assert events([D(first), EOF()]) == [("anomaly", "not_http")]
    sink = Recorder()
    parser = MessageParser(Side.CLIENT, sink)
    parser.data(first, 1.0)
    assert (parser.state, parser.not_http_kind) == (State.NOT_HTTP, kind)
