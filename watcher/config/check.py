"""Checking a configuration file against the schema: each value (read with its line by
`watcher.config.yaml_lines`) to its typed field, every problem one line naming the file, line and key.

`watcher.config.load` is the public face (load, render, defaults); this module is how `load` checks.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from analyzers import RawRule, Rule, RuleError, parse_rules
from analyzers import describe as _describe
from watcher.config.model import Config, OutputConfig
from watcher.config.schema import (
    FORMATS,
    ITEM_EXPECTED,
    LIST_KINDS,
    MIN_SECRET,
    RULE_KEYS,
    SCHEMA,
    Key,
    Kind,
    RuleList,
    Scalar,
    Section,
    TypedList,
    header_name,
)
from watcher.config.yaml_lines import INVALID, FileError, Index, Reader, compose, dotted

RULE_FILES = "*.yaml"


class ConfigError(Exception):
    """The configuration is not valid; `errors` holds every problem, one line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


class _Checker:
    """Checks plain values against SCHEMA, collecting every error, and builds the dataclasses."""

    def __init__(self, reader: Reader, source: Path) -> None:
        self.reader = reader
        self.source = source
        self.base = source.parent
        self.errors = reader.errors

    def error(self, path: tuple[object, ...], message: str, at_key: bool = False) -> None:
        line = self._line(path, at_key)
        self.errors.append((0, line, f"{self.reader.name}:{line}: {dotted(path)}: {message}"))

    def _line(self, path: tuple[object, ...], at_key: bool) -> int:
        if at_key and path in self.reader.key_lines:
            return self.reader.key_lines[path]
        while path not in self.reader.lines and path:
            path = path[:-1]
        return self.reader.lines.get(path, 1)

    def config(self, raw: object) -> Config:
        names = [entry.name for entry in SCHEMA]
        top = self._mapping(raw, (), "a mapping of the sections " + ", ".join(names)
                            + "; start each section at the beginning of a line, e.g. spool:")
        self._unknown(top, (), names, "section")
        values: dict[str, Any] = {}
        for entry in SCHEMA:
            raw_entry, path = top.get(entry.name), (entry.name,)
            if isinstance(entry, Section):
                values[entry.name] = self._section(entry, raw_entry, path)
            elif isinstance(entry, TypedList):
                values[entry.name] = self._list(entry, raw_entry, path)
            elif isinstance(entry, Scalar):
                values[entry.name] = self._keys((entry.key,), top, ())[entry.name]
            else:
                values[entry.name] = self._rules(entry, raw_entry, top.get("rules_dir"), values)
        if self.errors:
            raise ConfigError([text for _, _, text in sorted(self.errors, key=lambda e: e[:2])])
        return Config(**values, source=self.source)

    def _mapping(self, raw: object, path: tuple[object, ...], expected: str,
                 null_ok: bool = True) -> dict[object, object]:
        """`raw` if it is a mapping; else {} and an error (null is an empty section where null_ok)."""
        if (raw is None and null_ok) or raw is INVALID:
            return {}
        if not isinstance(raw, dict):
            self.error(path, f"found {_describe(raw)}, expected {expected}")
            return {}
        return raw

    def _unknown(self, raw: Mapping[object, object], path: tuple[object, ...], known: Sequence[str],
                 what: str, suffix: str = "") -> None:
        for name in raw:
            if name in known:
                continue
            found = repr(name) if isinstance(name, str) else _describe(name)
            close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
            todo = f"did you mean {close[0]!r}?" if close else "delete it or correct its spelling"
            self.error((*path, name), f"found unknown {what} {found}, expected one of {', '.join(known)}"
                                      f"{suffix}; {todo}", at_key=True)

    def _section(self, section: Section, raw: object, path: tuple[object, ...]) -> object:
        keys = [k.name for k in section.keys]
        values = self._mapping(raw, path, "a mapping of the keys " + ", ".join(keys)
                               + f"; write them as key: value lines indented under {section.name}:")
        self._unknown(values, path, keys, "key")
        return section.make(**self._keys(section.keys, values, path))

    def _list(self, spec: TypedList, raw: object, path: tuple[object, ...]) -> tuple[object, ...]:
        example = "- " + str(yaml.safe_dump(dict(spec.default[0]), default_flow_style=True, sort_keys=False)).strip()
        if raw is None or raw is INVALID:
            raw = [dict(item) for item in spec.default]
        elif not isinstance(raw, list):
            self.error(path, f"found {_describe(raw)}, expected a list of {spec.name}, each a mapping; "
                             f"start each {spec.item} with '- ', e.g. {example}")
            return ()
        elif not raw:
            self.error(path, f"found an empty list, expected at least one {spec.item}; add one, e.g. {example}")
        items: list[object] = []
        names: dict[object, tuple[int, int]] = {}
        for i, item in enumerate(raw):
            ipath = (*path, Index(i))
            values = self._mapping(item, ipath, f"a mapping with the keys of one {spec.item} "
                                                f"({', '.join(k.name for k in spec.common[:2])}, ...); "
                                                f"write e.g. {example}", null_ok=False)
            if not isinstance(item, dict):
                continue
            kind = values.get("type")
            itype = spec.types.get(kind) if isinstance(kind, str) else None
            keys = spec.common + (itype.keys if itype else ())
            if itype is not None:  # without a valid type its keys are unknown: only `type` is reported
                self._unknown(values, ipath, [k.name for k in keys], "key", f" (the keys of a {kind} {spec.item})")
            built = self._keys(keys, values, ipath)
            name = values.get("name")
            if isinstance(name, str) and name and name == built["name"]:
                if name in names:
                    j, line = names[name]
                    self.error((*ipath, "name"), f"found {name!r}, expected a name no other {spec.item} has "
                                                 f"({spec.name}[{j}] at line {line} is also {name!r}); "
                                                 "rename one of them")
                else:
                    names[name] = (i, self._line((*ipath, "name"), False))
            if itype is not None:
                items.append(itype.make(**built))
        return tuple(items)

    def _rules(self, entry: RuleList, raw: object, raw_dir: object, values: Mapping[str, Any]) -> tuple[Rule, ...]:
        """The file's rules, then those of every rules_dir/*.yaml by name, checked together (names
        are unique across files, outputs must exist)."""
        raws: list[RawRule] = []
        if isinstance(raw, list):
            for i, item in enumerate(raw):
                lines, key_lines = self.reader.below((entry.name, i))
                raws.append(RawRule(item, self.reader.name, f"{entry.name}[{i}]", lines, key_lines))
        elif raw is not None and raw is not INVALID:
            self.error((entry.name,), f"found {_describe(raw)}, expected a list of rules, each a mapping with "
                                      f"{', '.join(RULE_KEYS)}; start each rule with '- '")
        ranks = {self.reader.name: 0}
        rules_dir: Path | None = values["rules_dir"]
        if rules_dir is not None:
            if rules_dir.is_dir():
                for rank, path in enumerate(sorted(rules_dir.glob(RULE_FILES)), 1):
                    ranks[str(path)] = rank
                    raws.extend(self._rule_file(entry, str(path), rank))
            elif isinstance(raw_dir, str) and raw_dir:  # written, and valid as a path: a typo must not hide rules
                self.error(("rules_dir",), f"found {_describe(raw_dir)} ({rules_dir} is not a directory), expected "
                                           "a directory of *.yaml rule files or null; create it or correct the path")
        outputs: tuple[OutputConfig, ...] = values["outputs"]
        try:
            return parse_rules(raws, [o.name for o in outputs], values["replay"].targets)
        except RuleError as e:
            self.errors.extend((ranks.get(p.file, 0), p.line, p.text) for p in e.problems)
            return ()

    def _rule_file(self, entry: RuleList, name: str, rank: int) -> list[RawRule]:
        """The rules of one rules_dir file: a mapping whose only key is `rules`."""
        try:
            root = compose(name, "the rule file")
        except FileError as e:
            self.errors.append((rank, 0, str(e)))
            return []
        reader = Reader(name, rank, self.errors)
        raw = reader.value(root, ()) if root is not None else None
        if raw is None or raw is INVALID:
            return []
        if not isinstance(raw, dict):
            reader.error(reader.lines.get((), 1), (), f"found {_describe(raw)}, expected a mapping with the key "
                                                      "rules: a list of rules")
            return []
        for k in raw:
            if k != entry.name:
                found = repr(k) if isinstance(k, str) else _describe(k)
                close = difflib.get_close_matches(k, [entry.name], n=1) if isinstance(k, str) else []
                todo = "did you mean 'rules'?" if close else "delete it (a rule file holds only rules:)"
                reader.error(reader.key_lines.get((k,), 1), (k,), f"found unknown key {found}, expected rules; {todo}")
        rules = raw.get(entry.name)
        if rules is None:
            return []
        if not isinstance(rules, list):
            reader.error(reader.lines.get((entry.name,), 1), (entry.name,), f"found {_describe(rules)}, expected a "
                         f"list of rules, each a mapping with {', '.join(RULE_KEYS)}; start each rule with '- '")
            return []
        out = []
        for i, item in enumerate(rules):
            lines, key_lines = reader.below((entry.name, i))
            out.append(RawRule(item, name, f"{entry.name}[{i}]", lines, key_lines))
        return out

    def _keys(self, keys: Sequence[Key], raw: Mapping[object, object], path: tuple[object, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in keys:
            kpath = (*path, key.name)
            if key.name not in raw:
                if key.required:
                    self.error(kpath, f"found nothing, expected {key.expected()}; {key.hint}")
                out[key.name] = None if key.required else self._default(key)
                continue
            value = raw[key.name]
            if key.kind in LIST_KINDS and isinstance(value, list):
                out[key.name] = self._items(key, value, kpath)
                continue
            ok, converted = self._convert(key, value)
            if ok is not True:
                if value is not INVALID:
                    why = f" ({ok})" if ok else ""
                    self.error(kpath, f"found {_describe(value)}, expected {key.expected()}{why}; "
                                      f"{_todo(key, value)}")
                converted = self._default(key)
            out[key.name] = converted
        return out

    def _default(self, key: Key) -> object:
        if isinstance(key.default, tuple):
            return key.default
        return self._convert(key, key.default)[1]

    def _items(self, key: Key, value: list[object], path: tuple[object, ...]) -> tuple[object, ...]:
        """A list-kind value checked element by element, each error at its element."""
        out: list[object] = []
        for i, item in enumerate(value):
            ipath = (*path, Index(i))
            if item is INVALID:
                continue
            if key.kind is Kind.MAPPINGS:
                if not isinstance(item, dict):
                    self.error(ipath, f"found {_describe(item)}, expected a mapping with "
                                      f"{', '.join(k.name for k in key.items)}")
                    continue
                self._unknown(item, ipath, [k.name for k in key.items], "key")
                built = self._keys(key.items, item, ipath)
                if all(built[k.name] is not None for k in key.items if k.required) and key.make is not None:
                    out.append(key.make(**built))
                continue
            if key.kind is Kind.NUM_LIST:
                ok = isinstance(item, int | float) and not isinstance(item, bool) and math.isfinite(item) \
                    and item > 0 and (not out or item > out[-1])  # type: ignore[operator]
                item = float(item) if ok else item  # type: ignore[arg-type]
            else:
                ok = isinstance(item, str) and bool(item) and (key.kind is not Kind.HEADER_LIST or header_name(item)) \
                    and (key.kind is not Kind.SECRET_LIST or len(item) >= MIN_SECRET)
                if ok and key.kind is Kind.HEADER_LIST and isinstance(item, str):
                    item = item.lower()
            if not ok:
                self.error(ipath, f"found {_describe(item)}, expected {ITEM_EXPECTED[key.kind]}; correct it or "
                                  "delete it from the list")
                continue
            if item not in out:
                out.append(item)
        if key.kind is Kind.NUM_LIST and not value:
            self.error(path, f"found an empty list, expected {key.expected()}; correct the value, or delete the "
                             f"key to use the default ({_show_default(key)})")
        return tuple(out)

    def _convert(self, key: Key, value: object) -> tuple[bool | str, object]:
        """(True if valid, else False or why not; the value as the dataclass holds it)."""
        if value is None:
            return key.nullable, None
        if key.kind in LIST_KINDS:
            return False, None  # lists are checked by _items
        if key.kind is Kind.BOOL:
            return isinstance(value, bool), value
        if key.kind is Kind.INT:
            if type(value) is not int:  # YAML's true/false are bools, not numbers
                return False, None
        elif key.kind is Kind.FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return False, None
            value = float(value)
        elif not isinstance(value, str) or (value == "" and not key.allow_empty):
            return False, None
        elif key.kind is Kind.CHOICE:
            return value in key.choices, value
        elif key.kind is Kind.PATH or (key.kind is Kind.OUTPUT_PATH and value != "-"):
            return True, Path(os.path.normpath(self.base / value))
        elif key.kind is Kind.OUTPUT_PATH:
            return True, None
        elif key.kind in FORMATS:
            why = FORMATS[key.kind](value)
            return (True, value) if why is None else (why or False, None)
        if isinstance(value, int | float) and (
                (key.minimum is not None and value < key.minimum) or (key.above is not None and value <= key.above)
                or (key.maximum is not None and value > key.maximum)):
            return False, None
        return True, value


def _show_default(key: Key) -> str:
    """The default as YAML spells it."""
    if key.default is None:
        return "null"
    if isinstance(key.default, bool):
        return str(key.default).lower()
    if isinstance(key.default, tuple):
        return "[" + ", ".join(str(x) for x in key.default) + "]"
    return repr(key.default)


def _todo(key: Key, value: object) -> str:
    """What to do about a bad value of `key`."""
    if key.kind in (Kind.STR, Kind.PATH, Kind.OUTPUT_PATH) and isinstance(value, int | float):
        return "put the value in quotes to make it a string"
    if key.kind in (Kind.INT, Kind.FLOAT) and isinstance(value, str) and _numeric(value):
        return f"write a plain number, without quotes (YAML reads {value!r} as text)"
    if key.kind is Kind.MAPPINGS:
        example = ", ".join(f"{k.name}: ..." for k in key.items)
        return f"write a list of mappings, e.g. [{{{example}}}]"
    if key.kind in LIST_KINDS and isinstance(value, str | int | float):
        return f"write a list, e.g. [{value}]"
    if key.required:
        return key.hint
    if key.secret:
        return "correct the value"  # the default of a secret-bearing key is not shown either
    return f"correct the value, or delete the key to use the default ({_show_default(key)})"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
