"""http.resync: where the next message starts in bytes that did not parse (pure scanning; the parser's
use of it is tested in test_parser.py)."""

from __future__ import annotations

import pytest

from analyzers.http.resync import (
    RESYNC_KEEP_BYTES,
    RESYNC_KEEP_RESPONSE_BYTES,
    find_start,
    keep_while_looking,
    rules_out_http,
)
from analyzers.side import Side


@pytest.mark.parametrize(("buf", "side", "start"), [
    (b"junk GET / HTTP/1.1\r\nHost: h\r\n\r\n", Side.CLIENT, 5),
    (b"GET / HTTP/1.1\n", Side.CLIENT, 0),
    (b"xxPROPFIND /d HTTP/1.1\r\n", Side.CLIENT, 2),
    (b"GET / HTTP/1.1", Side.CLIENT, -1),  # its line end has not come yet
    (b"BAN /admin HTTP/1.1\r\n", Side.CLIENT, 0),  # any method name, not a fixed list
    (b"body\r\nM-SEARCH * HTTP/1.1\r\n", Side.CLIENT, 6),
    (b"x=1GET  /admin HTTP/1.1\r\n", Side.CLIENT, 3),  # two spaces; the body's last bytes are not its method
    (b"junk\tGET\t/a\tHTTP/1.0 \r\n", Side.CLIENT, 5),
    (b"GET /a b HTTP/1.1\r\n", Side.CLIENT, -1),  # `b` is no method: a target with a space cannot be resynced on
    (b"get / HTTP/1.1\r\n", Side.CLIENT, -1),
    (b"a" * 20000 + b" / HTTP/1.1\r\n", Side.CLIENT, -1),
    (b"\x00\x01HTTP/1.1 200 OK\r\n", Side.SERVER, 2),
    (b"HTTP/1.0 404\r\n", Side.SERVER, 0),
    (b"HTTP/1.1 20", Side.SERVER, -1),
    (b"GET / HTTP/1.1\r\n", Side.SERVER, -1),
])
def test_find_start(buf: bytes, side: Side, start: int) -> None:
    assert find_start(buf, side) == find_start(bytearray(buf), side) == start


def test_keep_while_looking_covers_a_start_split_across_packets() -> None:
    assert keep_while_looking(Side.CLIENT) == RESYNC_KEEP_BYTES
    assert keep_while_looking(Side.SERVER) == RESYNC_KEEP_RESPONSE_BYTES >= len(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(("first", "tls"), [(0x16, True), (0x17, True), (0x80, True), (ord("G"), False),
                                            (ord("S"), False), (0x00, False)])
def test_rules_out_http(first: int, tls: bool) -> None:
    assert rules_out_http(first) is tls
