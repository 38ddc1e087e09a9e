"""Outside text in the watcher's own lines, as printable ASCII on one line.

What a message quotes from outside (a capture file's name, an error text holding one, a line of
tcpdump's) can hold a newline, which would start a forged line, or a terminal escape. Every line
the service logs (watcher/run/sdnotify.py `log`) and every line `pcapwatch read` writes on stderr
goes through `printable`.
"""

from __future__ import annotations

import re

# What a log line may not carry as it is: control characters (a newline starts a forged line, ESC
# drives the terminal), DEL, and anything beyond ASCII. They are written as \xNN of their bytes, as
# records write bytes from the wire (analyzers' `escape`). The backslash itself is kept, unlike in
# records: a message may quote text escaped already (a record's field in a rule's error), and
# escaping it again would turn \x0a into \x5cx0a. The watcher's own words are printable ASCII, so
# they pass unchanged.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _escape_char(m: re.Match[str]) -> str:
    try:  # a file name's undecodable bytes come as surrogate escapes: give back those bytes
        raw = m.group().encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "\\u%04x" % ord(m.group())
    return "".join("\\x%02x" % b for b in raw)


def printable(text: str) -> str:
    """`text` as printable ASCII on one line: every other character as \\xNN of its bytes."""
    return _UNPRINTABLE.sub(_escape_char, text) if _UNPRINTABLE.search(text) else text
