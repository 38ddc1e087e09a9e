"""analyzers/http/text.py: wire bytes as log text, in the utf8 form (the default) and the ascii form.

Every case is checked for the exact text, and for the properties the module promises: nothing is
lost (the escapes and the text give back the bytes), the two forms convert into each other exactly
(`ascii_text`, `utf8_text`), and the JSON of the text decodes to it.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from analyzers.http.text import ascii_text, escape, escape_ascii, utf8_text

CASES = [
    # valid UTF-8 of 1 to 4 bytes is text
    (b"/index.html?a=1&b=%20", "/index.html?a=1&b=%20"),
    (b"/K\xc3\xb6ln", "/K\u00f6ln"),  # 2 bytes
    (b"\xe2\x82\xac 5", "\u20ac 5"),  # 3 bytes
    (b"\xe6\x9d\xb1\xe4\xba\xac", "\u6771\u4eac"),
    (b"\xf0\x9f\x98\x80", "\U0001f600"),  # 4 bytes
    (b"\xf4\x8f\xbf\xbf", "\U0010ffff"),  # the last code point
    (b"\xc2\xa0\xef\xbb\xbf\xe2\x80\x8d", "\u00a0\ufeff\u200d"),  # NBSP, BOM, ZWJ: text, not controls
    # overlong forms: each byte escaped
    (b"\xc0\xaf", "\\xc0\\xaf"),
    (b"\xc1\xbf", "\\xc1\\xbf"),
    (b"\xe0\x80\xaf", "\\xe0\\x80\\xaf"),
    (b"\xf0\x80\x80\xaf", "\\xf0\\x80\\x80\\xaf"),
    (b"\xc0\x80", "\\xc0\\x80"),  # the "modified UTF-8" NUL
    # UTF-16 surrogates encoded in UTF-8 (CESU-8)
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),
    (b"\xed\xbf\xbf", "\\xed\\xbf\\xbf"),
    (b"\xed\xa0\xbd\xed\xb8\x80", "\\xed\\xa0\\xbd\\xed\\xb8\\x80"),
    (b"\xed\x9f\xbf", "\ud7ff"),  # just below the surrogates: valid
    # past U+10FFFF, and the 5- and 6-byte forms of the first UTF-8
    (b"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"),
    (b"\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80"),
    (b"\xf8\x88\x80\x80\x80", "\\xf8\\x88\\x80\\x80\\x80"),
    (b"\xfc\x84\x80\x80\x80\x80", "\\xfc\\x84\\x80\\x80\\x80\\x80"),
    (b"\xfe\xff", "\\xfe\\xff"),
    # truncated sequences: at the end, before ASCII, before a valid sequence
    (b"a\xc3", "a\\xc3"),
    (b"\xe2\x82", "\\xe2\\x82"),
    (b"\xf0\x9f\x98", "\\xf0\\x9f\\x98"),
    (b"\xe2\x82A", "\\xe2\\x82A"),
    (b"\xe2\x82\xc3\xb6", "\\xe2\\x82\u00f6"),
    (b"\xf0\x9f\x98/x", "\\xf0\\x9f\\x98/x"),
    # invalid continuation: a lead byte followed by a non-continuation; stray continuations
    (b"\xc3\x28", "\\xc3("),
    (b"\xe2\x28\xa1", "\\xe2(\\xa1"),
    (b"\x80", "\\x80"),
    (b"a\xbfb", "a\\xbfb"),
    (b"\xc3\xb6\xb6", "\u00f6\\xb6"),
    # control characters: C0, DEL as before; C1 (valid UTF-8) escaped as its bytes
    (b"\x00\x01\x09\x0a\x0d\x1b\x1f\x7f", "\\x00\\x01\\x09\\x0a\\x0d\\x1b\\x1f\\x7f"),
    (b"\xc2\x80\xc2\x85\xc2\x9b\xc2\x9f", "\\xc2\\x80\\xc2\\x85\\xc2\\x9b\\xc2\\x9f"),
    (b"\xc2\x9f\xc2\xa0", "\\xc2\\x9f\u00a0"),  # the last C1, then NBSP (text)
    # bidi controls and marks, line and paragraph separators
    (b"\xe2\x80\xaa\xe2\x80\xab\xe2\x80\xac\xe2\x80\xad\xe2\x80\xae",
     "\\xe2\\x80\\xaa\\xe2\\x80\\xab\\xe2\\x80\\xac\\xe2\\x80\\xad\\xe2\\x80\\xae"),  # U+202A-U+202E
    (b"\xe2\x81\xa6\xe2\x81\xa7\xe2\x81\xa8\xe2\x81\xa9",
     "\\xe2\\x81\\xa6\\xe2\\x81\\xa7\\xe2\\x81\\xa8\\xe2\\x81\\xa9"),  # U+2066-U+2069
    (b"\xe2\x80\x8e\xe2\x80\x8f\xd8\x9c", "\\xe2\\x80\\x8e\\xe2\\x80\\x8f\\xd8\\x9c"),  # LRM, RLM, ALM
    (b"\xe2\x80\xa8\xe2\x80\xa9", "\\xe2\\x80\\xa8\\xe2\\x80\\xa9"),  # U+2028, U+2029
    (b"\xe2\x80\xa7\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa", "\u2027\u202f\u2065\u206a"),  # their neighbours: text
    # the backslash, as before: an escape in a log always means wire bytes
    (b"a\\b", "a\\x5cb"),
    (b"\\x41", "\\x5cx41"),
    (b"\\xc3\\xb6", "\\x5cxc3\\x5cxb6"),  # an escape's text on the wire is not decoded
    # mixed
    (b"/K\xc3\xb6ln?q=\xff\x00\\\xe2\x80\xae\xf0\x9f\x98\x80\xc3",
     "/K\u00f6ln?q=\\xff\\x00\\x5c\\xe2\\x80\\xae\U0001f600\\xc3"),
]


@pytest.mark.parametrize(("raw", "text"), CASES)
def test_escape(raw: bytes, text: str) -> None:
    assert escape(raw) == text
    assert ascii_text(text) == escape_ascii(raw)  # the ascii form, from the utf8 one
    assert utf8_text(escape_ascii(raw)) == text  # and back, as header values are made
    assert _bytes_of(text) == raw  # nothing lost
    line = json.dumps(text)
    assert line.isascii() and json.loads(line) == text


def test_ascii_form_is_the_old_one() -> None:
    """`strings: ascii`: every byte that is not printable ASCII, and the backslash, is \\xNN."""
    for raw in (bytes(range(256)), b"/K\xc3\xb6ln", b"\xe2\x80\xae"):
        assert escape_ascii(raw) == "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else "\\x%02x" % b
                                            for b in raw)


def test_no_unsafe_character_survives() -> None:
    """Whatever the bytes, the text holds no C0, DEL, C1, bidi control or line separator."""
    unsafe = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
    every = "".join(chr(c) for c in range(0x30000) if not 0xD800 <= c < 0xE000).encode()
    text = escape(every)
    assert unsafe.search(text) is None
    assert _bytes_of(text) == every
    # every code point is there as itself, but the unsafe ones and the backslash: 4 characters a byte
    points = [chr(c) for c in range(0x30000) if not 0xD800 <= c < 0xE000]
    escaped = [ch for ch in points if unsafe.match(ch) or ch == "\\"]
    assert len(escaped) == 32 + 1 + 32 + 3 + 7 + 4 + 1  # C0, DEL, C1, marks, U+2028-U+202E, isolates, \
    assert len(text) == len(points) - len(escaped) + sum(4 * len(ch.encode()) for ch in escaped)


def test_random_bytes_round_trip() -> None:
    """Random strings over the bytes that matter (ASCII, continuations, every lead byte): the forms
    agree and nothing is lost."""
    rng = random.Random(9)
    alphabet = bytes([0x41, 0x5C, 0x0A, 0x7F, 0x80, 0x85, 0x9F, 0xA0, 0xAE, 0xBF, 0xC0, 0xC2, 0xC3, 0xD8,
                      0xE0, 0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xF8, 0xFC, 0xFF, 0x81, 0xA6])
    for _ in range(20000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 12)))
        text = escape(raw)
        assert _bytes_of(text) == raw, raw
        assert ascii_text(text) == escape_ascii(raw), raw
        assert utf8_text(escape_ascii(raw)) == text, raw


def test_ascii_strings_are_returned_as_they_are() -> None:
    s = "/index.html"
    assert ascii_text(s) is s
    assert utf8_text(s) is s


def _bytes_of(text: str) -> bytes:
    """The wire bytes a text stands for: each \\xNN a byte, the rest UTF-8."""
    return b"".join(bytes.fromhex(part[2:]) if part.startswith("\\x") else part.encode()
                    for part in re.split(r"(\\x[0-9a-f]{2})", text) if part)
