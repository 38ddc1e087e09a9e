"""The configuration file: a YAML schema declared as data, checked at load, errors that point to the line.

Every key's type, default, range and meaning is written once, in the tables `SCHEMA` and
`OUTPUT_TYPES` below; loading, the error messages, `render` and the tests all read them, so a new key
or output type is a new row (pre-commit's clientlib works the same way). The file is read with YAML
safe-load semantics only (SafeLoader's composer and SafeConstructor), but the node tree is walked
here so that every value keeps its line, every problem in the file is reported at once, and keys
that are unknown or written twice are errors instead of being silently dropped.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from analyzers.flows import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS

CONFIG_ENV = "PCAPWATCH_CONFIG"
CONFIG_NAME = "pcapwatch.yaml"
_REPO_CONFIG = Path(__file__).resolve().parent.parent / "conf" / CONFIG_NAME
_ETC_CONFIG = Path("/etc/pcapwatch") / CONFIG_NAME
_MAP_TAG, _SEQ_TAG, _MERGE_TAG = (f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "merge"))
# tcpdump refuses a larger -s (MAXIMUM_SNAPLEN in its sources).
MAX_SNAPLEN = 262144


class ConfigError(Exception):
    """The configuration is not valid; `errors` holds every problem, one line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """Where tcpdump writes its rotating files and how the directory is watched."""

    dir: Path
    pattern: str
    rescan_seconds: float
    ring_bytes: int | None
    lag_warn_fraction: float


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the read position is checkpointed, and how often."""

    dir: Path
    checkpoint_seconds: float


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """The keys every output has; each output type adds its own in a subclass."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class JsonlOutputConfig(OutputConfig):
    """One JSON record per line; `path` None means standard output (written `-`)."""

    path: Path | None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds on memory: tracked connections, their idle lifetime, buffered frame batches."""

    max_connections: int
    idle_timeout: float
    queue_batches: int


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """How `pcapwatch run --capture` starts tcpdump."""

    file_mb: int
    files: int
    snaplen: int
    bpf: str
    user: str | None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; `source` is the file it came from (absolute)."""

    spool: SpoolConfig
    state: StateConfig
    outputs: tuple[OutputConfig, ...]
    limits: LimitsConfig
    capture: CaptureConfig
    source: Path | None = None


class Kind(enum.Enum):
    """What a value must be; the enum's value names it in error messages."""

    INT = "a whole number"
    FLOAT = "a number"
    STR = "a string"
    PATH = "a path"
    OUTPUT_PATH = "'-' (standard output) or a file path"
    CHOICE = "one of"


@dataclass(frozen=True, slots=True)
class Key:
    """One key of the schema: its type, default, allowed range and what it means."""

    name: str
    kind: Kind
    default: object
    doc: str
    unit: str = ""
    nullable: bool = False
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    maximum: float | None = None  # inclusive
    choices: tuple[str, ...] = ()
    required: bool = False
    allow_empty: bool = False  # strings only
    hint: str = ""  # what to do when the value is wrong, for keys without a default

    def expected(self) -> str:
        """The allowed values, as the `expected ...` part of an error line."""
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices) + (" or null" if self.nullable else "")
        text = "a non-empty string" if self.kind is Kind.STR and not self.allow_empty else self.kind.value
        text += f" of {self.unit}" if self.unit else ""
        if self.minimum is not None and self.maximum is not None:
            text += f" from {_num(self.minimum)} to {_num(self.maximum)}"
        else:
            bounds = [f">= {_num(self.minimum)}" if self.minimum is not None else "",
                      f"> {_num(self.above)}" if self.above is not None else "",
                      f"<= {_num(self.maximum)}" if self.maximum is not None else ""]
            text += "".join(f" {b}" if i == 0 else f" and {b}" for i, b in enumerate(filter(None, bounds)))
        if self.kind is Kind.PATH:
            text += " (relative to the config file's directory)"
        return text + (" or null" if self.nullable else "")


@dataclass(frozen=True, slots=True)
class Section:
    """A top-level mapping of fixed keys, built into the dataclass `make`."""

    name: str
    doc: str
    keys: tuple[Key, ...]
    make: Callable[..., object]


@dataclass(frozen=True, slots=True)
class ItemType:
    """One `type:` of a typed list: the keys it adds to the common ones, and its dataclass."""

    doc: str
    keys: tuple[Key, ...]
    make: Callable[..., object]


@dataclass(frozen=True, slots=True)
class TypedList:
    """A top-level list of named items whose `type` chooses their keys (outputs; later rules)."""

    name: str
    doc: str
    item: str  # what one element is called in messages
    common: tuple[Key, ...]  # keys of every item, `name` and `type` first
    types: Mapping[str, ItemType]
    default: tuple[Mapping[str, object], ...]


# Output types: issue 4 adds syslog, prometheus, redis, zmq here, each with its keys and dataclass.
OUTPUT_TYPES: Mapping[str, ItemType] = {
    "jsonl": ItemType("one JSON record per line, to a file or standard output", (
        Key("path", Kind.OUTPUT_PATH, "-", "file the records are appended to; '-' is standard output; "
            "the file is reopened on SIGHUP (for logrotate)"),
    ), JsonlOutputConfig),
}

SCHEMA: tuple[Section | TypedList, ...] = (
    Section("spool", "the directory tcpdump writes into", (
        Key("dir", Kind.PATH, "/var/spool/pcapwatch", "directory tcpdump -w writes its capture files into"),
        Key("pattern", Kind.STR, "*", "glob of capture file names in dir (tcpdump's cap.pcap, cap.pcap1, "
            "cap.pcap00, strftime names, .gz)"),
        Key("rescan_seconds", Kind.FLOAT, 2.0, "rescan the directory this often; inotify events only hint",
            unit="seconds", above=0),
        Key("ring_bytes", Kind.INT, None, "capacity of tcpdump's ring (-C MB x -W N x 1e6); null: estimate "
            "it from the files seen", unit="bytes", minimum=1, nullable=True),
        Key("lag_warn_fraction", Kind.FLOAT, 0.5, "warn when the bytes not yet read exceed this fraction "
            "of the ring (tcpdump would overwrite them next)", above=0, maximum=1),
    ), SpoolConfig),
    Section("state", "where the read position survives restarts", (
        Key("dir", Kind.PATH, "/var/lib/pcapwatch", "directory the checkpoint file lives in"),
        Key("checkpoint_seconds", Kind.FLOAT, 5.0, "write the checkpoint this often", unit="seconds", above=0),
    ), StateConfig),
    TypedList("outputs", "where records go; any number of outputs, each with a unique name", "output", (
        Key("name", Kind.STR, None, "names the output in logs and counters", required=True,
            hint="give the output a name no other output has, e.g. name: stdout"),
        Key("type", Kind.CHOICE, None, "what kind of output", choices=tuple(OUTPUT_TYPES), required=True,
            hint="set the type, e.g. type: jsonl"),
    ), OUTPUT_TYPES, ({"name": "stdout", "type": "jsonl", "path": "-"},)),
    Section("limits", "bounds on memory", (
        Key("max_connections", Kind.INT, DEFAULT_MAX_CONNECTIONS, "connections tracked at once; past it "
            "the least recently active are evicted", minimum=1),
        Key("idle_timeout", Kind.FLOAT, DEFAULT_IDLE_TIMEOUT, "close a connection idle this long (capture time)",
            unit="seconds", above=0),
        Key("queue_batches", Kind.INT, 16, "frame batches buffered between the reader thread and the "
            "analyzer", minimum=1),
    ), LimitsConfig),
    Section("capture", "how `pcapwatch run --capture IFACE` runs tcpdump", (
        Key("file_mb", Kind.INT, 100, "size of each capture file (tcpdump -C)", unit="millions of bytes",
            minimum=1),
        Key("files", Kind.INT, 10, "files in the ring (tcpdump -W)", minimum=1),
        Key("snaplen", Kind.INT, 0, "bytes kept of each packet (tcpdump -s); 0 keeps whole packets",
            unit="bytes", minimum=0, maximum=MAX_SNAPLEN),
        Key("bpf", Kind.STR, "tcp", "capture filter (pcap-filter syntax); '' captures everything",
            allow_empty=True),
        Key("user", Kind.STR, None, "user tcpdump switches to after opening the device (tcpdump -Z); "
            "null: tcpdump's default", nullable=True),
    ), CaptureConfig),
)


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The file used without -c: $PCAPWATCH_CONFIG, else the first that exists of the repo's
    conf/pcapwatch.yaml, sys.prefix/share/pcapwatch/pcapwatch.yaml, else /etc/pcapwatch/pcapwatch.yaml."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    for candidate in (_REPO_CONFIG, Path(sys.prefix, "share", "pcapwatch", CONFIG_NAME)):
        if candidate.is_file():
            return candidate
    return _ETC_CONFIG


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate one configuration file; raise ConfigError listing every problem found."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as e:
        raise ConfigError([f"{name}: cannot read the configuration: {e.strerror}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError([f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                           "save the file as UTF-8"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError([_syntax_error(name, text, e)]) from None
    source = Path(os.path.abspath(name))
    reader = _Reader(name)
    raw = reader.value(root, ()) if root is not None else None
    return _Checker(reader, source).config(raw)


def render(config: Config) -> str:
    """The effective configuration as YAML: every key, defaults filled in, paths absolute."""
    data: dict[str, object] = {}
    for entry in SCHEMA:
        value = getattr(config, entry.name)
        if isinstance(entry, Section):
            data[entry.name] = {k.name: _dump(k, getattr(value, k.name)) for k in entry.keys}
        else:
            data[entry.name] = [{k.name: _dump(k, getattr(item, k.name))
                                 for k in entry.common + entry.types[item.type].keys} for item in value]
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def _dump(key: Key, value: object) -> object:
    if key.kind is Kind.OUTPUT_PATH and value is None:
        return "-"
    return str(value) if isinstance(value, Path) else value


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


class _Reader:
    """Turns the YAML node tree into plain values, remembering the line of each value and key by path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.constructor = yaml.constructor.SafeConstructor()
        self.lines: dict[tuple[object, ...], int] = {}  # value lines (1-based)
        self.key_lines: dict[tuple[object, ...], int] = {}
        self.errors: list[tuple[int, str]] = []

    def error(self, line: int, path: tuple[object, ...], message: str) -> None:
        self.errors.append((line, f"{self.name}:{line}: {_dotted(path)}: {message}"))

    def value(self, node: yaml.Node, path: tuple[object, ...]) -> object:
        line = node.start_mark.line + 1
        self.lines[path] = line
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return [self.value(item, (*path, _Index(i))) for i, item in enumerate(node.value)]
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
            return _INVALID

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
            if key is _INVALID:
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


class _Index(int):
    """A position in a YAML list, told apart from a mapping key that happens to be a number."""


class _Invalid:
    """A value the reader could not construct (already reported); every check rejects it silently."""


_INVALID: Any = _Invalid()


class _Checker:
    """Checks plain values against SCHEMA, collecting every error, and builds the dataclasses."""

    def __init__(self, reader: _Reader, source: Path) -> None:
        self.reader = reader
        self.source = source
        self.base = source.parent
        self.errors = reader.errors

    def error(self, path: tuple[object, ...], message: str, at_key: bool = False) -> None:
        line = self._line(path, at_key)
        self.errors.append((line, f"{self.reader.name}:{line}: {_dotted(path)}: {message}"))

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
        values: dict[str, object] = {}
        for entry in SCHEMA:
            raw_entry, path = top.get(entry.name), (entry.name,)
            if isinstance(entry, Section):
                values[entry.name] = self._section(entry, raw_entry, path)
            else:
                values[entry.name] = self._list(entry, raw_entry, path)
        if self.errors:
            raise ConfigError([text for _, text in sorted(self.errors, key=lambda e: e[0])])
        return Config(**values, source=self.source)  # type: ignore[arg-type]

    def _mapping(self, raw: object, path: tuple[object, ...], expected: str,
                 null_ok: bool = True) -> dict[object, object]:
        """`raw` if it is a mapping; else {} and an error (null is an empty section where null_ok)."""
        if (raw is None and null_ok) or raw is _INVALID:
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
        if raw is None or raw is _INVALID:
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
            ipath = (*path, _Index(i))
            values = self._mapping(item, ipath, f"a mapping with the keys of one {spec.item} "
                                                f"({', '.join(k.name for k in spec.common)}, ...); "
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

    def _keys(self, keys: Sequence[Key], raw: Mapping[object, object], path: tuple[object, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in keys:
            kpath = (*path, key.name)
            if key.name not in raw:
                if key.required:
                    self.error(kpath, f"found nothing, expected {key.expected()}; {key.hint}")
                out[key.name] = None if key.required else self._convert(key, key.default)[1]
                continue
            value = raw[key.name]
            ok, converted = self._convert(key, value)
            if not ok:
                if value is not _INVALID:
                    self.error(kpath, f"found {_describe(value)}, expected {key.expected()}; {_todo(key, value)}")
                converted = self._convert(key, key.default)[1]
            out[key.name] = converted
        return out

    def _convert(self, key: Key, value: object) -> tuple[bool, object]:
        """(valid?, the value as the dataclass holds it)."""
        if value is None:
            return key.nullable, None
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
        if isinstance(value, int | float) and (
                (key.minimum is not None and value < key.minimum) or (key.above is not None and value <= key.above)
                or (key.maximum is not None and value > key.maximum)):
            return False, None
        return True, value


def _todo(key: Key, value: object) -> str:
    """What to do about a bad value of `key`."""
    if key.kind in (Kind.STR, Kind.PATH, Kind.OUTPUT_PATH) and isinstance(value, int | float):
        return "put the value in quotes to make it a string"
    if key.kind in (Kind.INT, Kind.FLOAT) and isinstance(value, str) and _numeric(value):
        return f"write a plain number, without quotes (YAML reads {value!r} as text)"
    if key.required:
        return key.hint
    default = "null" if key.default is None else repr(key.default)
    return f"correct the value, or delete the key to use the default ({default})"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(value: object) -> str:
    """A found value as an error message shows it: the value and its YAML type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (a whole number)"
    if isinstance(value, float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)" if value else "'' (an empty string)"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, datetime.date):  # a datetime is a date too
        return f"{value} (a {'timestamp' if isinstance(value, datetime.datetime) else 'date'})"
    if isinstance(value, bytes):
        return "binary data"
    return "a set" if isinstance(value, set) else f"a {type(value).__name__}"


def _dotted(path: tuple[object, ...]) -> str:
    """A key path as users write it: spool.dir, outputs[0].path."""
    text = ""
    for part in path:
        if isinstance(part, _Index):
            text += f"[{part}]"
        else:  # a key; YAML spells the non-string ones true, false, null
            text += "." + (str(part).lower() if part is None or isinstance(part, bool) else str(part))
    return text.lstrip(".") or "(top level)"


def _num(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)
