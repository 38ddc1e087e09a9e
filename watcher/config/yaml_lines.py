"""Reading a configuration or rule file as YAML: the node tree to plain values, each value and key
remembered with its line, so that every later check can point to where the user wrote it.

Safe-load semantics only (SafeLoader's composer, SafeConstructor), but the tree is walked here
rather than by `yaml.safe_load`, which would drop lines, duplicate keys and every error past the
first. `watcher.config.check` checks the values against the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from analyzers import describe as _describe

_MAP_TAG, _SEQ_TAG, _MERGE_TAG = (f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "merge"))
_Error = tuple[int, int, str]  # (file rank, line, text): sorted, files in order and lines within each


class FileError(Exception):
    """A file that cannot be read as YAML: one line, already formatted."""


def compose(name: str, what: str) -> yaml.Node | None:
    """The YAML node tree of a file, or FileError naming the file, line and problem."""
    try:
        data = Path(name).read_bytes()
    except OSError as e:
        raise FileError(f"{name}: cannot read {what}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise FileError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise FileError(_syntax_error(name, text, e)) from None


def _syntax_error(name: str, text: str, e: yaml.YAMLError) -> str:
    """One line for a file that is not YAML: where, and the parser's own words."""
    mark = (e.problem_mark or e.context_mark) if isinstance(e, yaml.MarkedYAMLError) else None
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        problem = e.problem or e.context
        if e.problem and e.context and e.context_mark is not None:  # PyYAML's order: context, then problem
            problem = f"{e.context} (line {e.context_mark.line + 1}), {e.problem}"
        return f"{name}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
    if isinstance(e, yaml.reader.ReaderError) and isinstance(e.position, int):
        before = text[:e.position]
        line, column = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
        return f"{name}:{line}:{column}: invalid YAML: {e.reason} (character U+{int(e.character):04X})"
    return f"{name}: invalid YAML: {' '.join(str(e).split())}"


class Reader:
    """Turns the YAML node tree into plain values, remembering the line of each value and key by path."""

    def __init__(self, name: str, rank: int = 0, errors: list[_Error] | None = None) -> None:
        self.name = name
        self.rank = rank  # the file's place in error order: 0 the config file, then rules_dir's files
        self.constructor = yaml.constructor.SafeConstructor()
        self.lines: dict[tuple[object, ...], int] = {}  # value lines (1-based)
        self.key_lines: dict[tuple[object, ...], int] = {}
        self.errors: list[_Error] = [] if errors is None else errors

    def error(self, line: int, path: tuple[object, ...], message: str) -> None:
        self.errors.append((self.rank, line, f"{self.name}:{line}: {dotted(path)}: {message}"))

    def below(self, prefix: tuple[object, ...]) -> tuple[dict[tuple[object, ...], int], dict[tuple[object, ...], int]]:
        """The value and key lines under `prefix`, by path relative to it (for a RawRule)."""
        n = len(prefix)
        return ({p[n:]: line for p, line in self.lines.items() if p[:n] == prefix},
                {p[n:]: line for p, line in self.key_lines.items() if p[:n] == prefix})

    def value(self, node: yaml.Node, path: tuple[object, ...]) -> object:
        line = node.start_mark.line + 1
        self.lines[path] = line
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return [self.value(item, (*path, Index(i))) for i, item in enumerate(node.value)]
        return self._construct(node, path)

    def _construct(self, node: yaml.Node, path: tuple[object, ...]) -> object:
        """A scalar (or a set, omap, ...) exactly as yaml.safe_load builds it."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            why = "not a type safe YAML builds" if isinstance(e, yaml.YAMLError) else str(e)
            found = repr(node.value) if isinstance(node, yaml.ScalarNode) else _describe(node.value)
            self.error(node.start_mark.line + 1, path, f"found {found} tagged {tag} ({why}), "
                                                       "expected a plain value; remove the tag")
            return INVALID

    def _mapping(self, node: yaml.MappingNode, path: tuple[object, ...]) -> dict[object, object]:
        own = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
        try:
            self.constructor.flatten_mapping(node)  # `<<: *anchor` merges, as safe_load does
        except yaml.YAMLError as e:
            self.error(node.start_mark.line + 1, path, f"found a bad merge ({getattr(e, 'problem', e)}), "
                                                       "expected a mapping or list of mappings after <<")
        result: dict[object, object] = {}
        first: dict[tuple[str, object], int] = {}  # by type too: YAML's `on` (True) is not `1`
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode):
                found = "a list" if isinstance(knode, yaml.SequenceNode) else "a mapping"
                self.error(kline, path, f"found {found} used as a key, expected a key name; write key: value")
                continue
            key = self._construct(knode, path)
            if key is INVALID:
                continue
            if id(knode) in own:
                typed = (type(key).__name__, key)
                if typed in first:
                    self.error(kline, (*path, key), f"found {key!r} a second time, expected each key once "
                                                    f"(first at line {first[typed]}); delete one of them")
                    continue
                first[typed] = kline
            self.key_lines[(*path, key)] = kline
            result[key] = self.value(vnode, (*path, key))
        return result


class Index(int):
    """A position in a YAML list, told apart from a mapping key that happens to be a number."""


class _Invalid:
    """A value the reader could not construct (already reported); every check rejects it silently."""


INVALID: Any = _Invalid()


def dotted(path: tuple[object, ...]) -> str:
    """A key path as users write it: spool.dir, outputs[0].path."""
    text = ""
    for part in path:
        if isinstance(part, Index):
            text += f"[{part}]"
        else:  # a key; YAML spells the non-string ones true, false, null
            text += "." + (str(part).lower() if part is None or isinstance(part, bool) else str(part))
    return text.lstrip(".") or "(top level)"
