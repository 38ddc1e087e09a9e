"""Wire bytes as log text: the strings a record is made of (README "The record", config `strings`).

Two forms, chosen by `strings`:

- ``utf8`` (the default; Zeek's ``LogAscii::enable_utf_8`` is the model): valid UTF-8 is kept as
  text, so a URI with ``Köln`` in it holds ``Köln``.
- ``ascii`` (the form before there was a choice): printable ASCII only, every other byte ``\\xNN``.

In both forms a byte is written ``\\xNN`` (two lower-case hex digits) when it is not part of text
that is safe to show: a byte that is not valid UTF-8 (a stray continuation, a truncated sequence,
an overlong form, a UTF-16 surrogate, a 5- or 6-byte form, anything past U+10FFFF), a control
character (C0, DEL, and C1 U+0080-U+009F, whose UTF-8 bytes are written), and the characters that
rewrite how a terminal or an editor lays out a line: the bidirectional embeddings, overrides,
isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C: "Trojan Source") and
the line and paragraph separators U+2028 and U+2029. ``\\`` itself is ``\\x5c``, so an escape in a
log always stands for bytes on the wire, and the ``ascii`` form of a string is its ``utf8`` form
with every non-ASCII character written as the escapes of its UTF-8 bytes (`ascii_text`).

Heads are parsed once into the ``utf8`` form (and cached); ``strings: ascii`` converts at the
record, so the default costs nothing. Nearly every string is printable ASCII: one regex search
decides that, as before there were two forms.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Strings(StrEnum):
    """The `strings` setting: how wire text is written (see the module's docstring)."""

    UTF8 = "utf8"
    ASCII = "ascii"


# Bytes that cannot go to a log as they are: controls, DEL, non-ASCII, and the backslash itself.
_NEEDS_WORK = re.compile(rb"[\x00-\x1f\x7f-\xff\\]")
# Of those, the ASCII ones: always escaped, whatever the form.
_ASCII_ESCAPE = re.compile(rb"[\x00-\x1f\x7f\\]")
# Characters of valid UTF-8 that are still escaped: C1 controls, bidi controls and marks, U+2028/9.
UNSAFE_TEXT = "\x80-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{UNSAFE_TEXT}]")
# A run of escaped non-ASCII bytes in the ascii form (the backslash itself is \x5c: never in a run).
_HIGH_RUN = re.compile(r"(?:\\x[89a-f][0-9a-f])+")


def _esc(m: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % m.group()[0]


def escape_char(m: re.Match[str]) -> str:
    """A matched character as the ``\\xNN`` escapes of its UTF-8 bytes."""
    return "".join(["\\x%02x" % b for b in m.group().encode("utf-8", "surrogatepass")])


def escape(raw: bytes) -> str:
    """Wire bytes as ``utf8`` text: valid, safe UTF-8 as is, every other byte (and ``\\``) ``\\xNN``."""
    if _NEEDS_WORK.search(raw) is None:
        return raw.decode("ascii")  # nearly every string: printable ASCII
    raw = _ASCII_ESCAPE.sub(_esc, raw)
    return raw.decode("ascii") if raw.isascii() else _decode(raw)


def _decode(raw: bytes) -> str:
    """Bytes without ASCII controls or backslash as text: what is not UTF-8 becomes ``\\xNN`` (the
    decoder's error handler writes exactly that), then the unsafe characters are escaped."""
    s = raw.decode("utf-8", "backslashreplace")
    return _UNSAFE.sub(escape_char, s) if _UNSAFE.search(s) else s


def escape_ascii(raw: bytes) -> str:
    """Wire bytes as ``ascii`` text: printable ASCII as is, any other byte (and ``\\``) ``\\xNN``."""
    if _NEEDS_WORK.search(raw) is not None:
        raw = _NEEDS_WORK.sub(_esc, raw)
    return raw.decode("ascii")


def ascii_text(s: str) -> str:
    """A string of the ``utf8`` form in the ``ascii`` form: each non-ASCII character as the ``\\xNN``
    of its UTF-8 bytes (exactly `escape_ascii` of the same wire bytes)."""
    return s if s.isascii() else s.encode("utf-8", "surrogatepass").decode("ascii", "backslashreplace")


def utf8_text(s: str) -> str:
    """A string of the ``ascii`` form in the ``utf8`` form (exactly `escape` of the same wire bytes):
    each run of escaped non-ASCII bytes decoded as `escape` decodes it."""
    if "\\x" not in s:
        return s
    return _HIGH_RUN.sub(_decode_run, s)


def _decode_run(m: re.Match[str]) -> str:
    return _decode(bytes.fromhex(m.group().replace("\\x", "")))
