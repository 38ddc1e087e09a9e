"""Read Zeek's TSV logs (ASCII writer) and btest-diff-cut extracts of them, for comparisons.

A full log carries its own conventions in ``#`` header lines: ``#separator`` (itself written
escaped, ``\\x09``), ``#set_separator``, ``#empty_field``, ``#unset_field`` and ``#fields``. A
btest-diff-cut extract has none of them: a plain first line of column names, Zeek's defaults after.

Values come back as Zeek wrote them, apart from the markers: the unset marker (``-``) becomes None,
the empty marker (``(empty)``) the empty string, and a set or vector field a list. `wire_bytes`
turns a string value back into the bytes Zeek logged, undoing the writer's ``\\xNN`` escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

Value = str | list[str] | None

# Zeek's ASCII writer defaults (LogAscii::separator etc.), used when a file does not say.
DEFAULT_SEPARATOR = "\t"
DEFAULT_SET_SEPARATOR = ","
DEFAULT_EMPTY = "(empty)"
DEFAULT_UNSET = "-"
# Column types whose values are sets or vectors (split on the set separator).
_CONTAINER = re.compile(r"(set|vector|table)\[")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
# First line of every btest baseline; not part of the log.
_BTEST_MARK = "### "


@dataclass
class ZeekLog:
    """One log: its column names, their types when the file says, and one dict per line."""

    path: str | None
    fields: list[str]
    types: list[str] | None
    rows: list[dict[str, Value]] = field(default_factory=list)

    def has(self, *names: str) -> bool:
        return all(n in self.fields for n in names)


def _unescape_header(text: str) -> str:
    """Header values such as ``#separator \\x09`` are written with ``\\xNN`` escapes."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def parse(text: str) -> ZeekLog:
    """Parse the text of a Zeek ASCII log or a btest-diff-cut extract of one."""
    sep, set_sep, empty, unset = DEFAULT_SEPARATOR, DEFAULT_SET_SEPARATOR, DEFAULT_EMPTY, DEFAULT_UNSET
    path: str | None = None
    fields: list[str] | None = None
    types: list[str] | None = None
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line or line.startswith(_BTEST_MARK):
            continue
        if line.startswith("#separator "):
            sep = _unescape_header(line[len("#separator "):])
            continue
        if line.startswith("#"):
            key, _, rest = line[1:].partition(sep)
            if key == "set_separator":
                set_sep = rest
            elif key == "empty_field":
                empty = rest
            elif key == "unset_field":
                unset = rest
            elif key == "path":
                path = rest
            elif key == "fields":
                fields = rest.split(sep)
            elif key == "types":
                types = rest.split(sep)
            continue  # open, close and unknown directives
        cells = line.split(sep)
        if fields is None:  # btest-diff-cut -m: the first plain line names the columns
            fields = cells
            continue
        if len(cells) != len(fields):
            raise ValueError(f"line has {len(cells)} columns, header names {len(fields)}: {line!r}")
        rows.append(cells)
    if fields is None:
        raise ValueError("no #fields line and no column-name line")
    log = ZeekLog(path, fields, types)
    for cells in rows:
        row: dict[str, Value] = {}
        for i, (name, cell) in enumerate(zip(fields, cells, strict=True)):
            container = types is not None and bool(_CONTAINER.match(types[i]))
            row[name] = _value(cell, container, set_sep, empty, unset)
        log.rows.append(row)
    return log


def _value(cell: str, container: bool, set_sep: str, empty: str, unset: str) -> Value:
    if cell == unset:
        return None
    if cell == empty:
        return [] if container else ""
    if container:
        return cell.split(set_sep)  # a separator inside an element is written \xNN, so this is exact
    return cell


def read(path: str | Path) -> ZeekLog:
    """Parse a log file (bytes that are not UTF-8 are kept as surrogates, never lost)."""
    return parse(Path(path).read_bytes().decode("utf-8", "surrogateescape"))


def wire_bytes(value: str) -> bytes:
    """The bytes Zeek logged for a string value: ``\\xNN`` escapes undone, the rest as written.

    Zeek's writer escapes a backslash as ``\\x5c``, so every remaining backslash-x sequence is an
    escape. Characters Zeek let through unescaped (printable ASCII, and valid UTF-8 when the
    writer's UTF-8 mode is on) are encoded back as UTF-8.
    """
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(value):
        out += value[pos:m.start()].encode("utf-8", "surrogateescape")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += value[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)
