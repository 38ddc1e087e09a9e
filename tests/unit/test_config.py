"""watcher/config.py: every key's bad values, unknown and repeated keys, outputs, YAML syntax, defaults,
path resolution, the default file's location, the shipped conf/pcapwatch.yaml and `render`.

Error lines are asserted whole: file, line, key path, what was found, what was expected, what to do.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from watcher import config
from watcher.config import (
    CaptureConfig,
    Config,
    ConfigError,
    JsonlOutputConfig,
    LimitsConfig,
    Section,
    SpoolConfig,
    StateConfig,
    default_config_path,
    load,
    render,
)

SHIPPED = REPO / "conf" / "pcapwatch.yaml"
TYPE_TODO = "put the value in quotes to make it a string"


def write(tmp_path: Path, text: str | bytes, name: str = "pcapwatch.yaml") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def errors(path: Path) -> list[str]:
    """The error lines of an invalid file, with the file name replaced by F for short tables."""
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == "\n".join(e.value.errors)
    assert all(line.startswith(f"{path}:") for line in e.value.errors)
    return [line.replace(str(path), "F", 1) for line in e.value.errors]


def defaults_todo(default: str) -> str:
    return f"correct the value, or delete the key to use the default ({default})"


# (section, key, YAML value, the error after "F:2: section.key: ") for every key of every section:
# a value of the wrong type and, where the key has a range, one outside it.
BAD_VALUES = [
    ("spool", "dir", "5", "found 5 (a whole number), expected a path (relative to the config file's "
                          f"directory); {TYPE_TODO}"),
    ("spool", "dir", '""', "found '' (an empty string), expected a path (relative to the config file's "
                           f"directory); {defaults_todo(repr('/var/spool/pcapwatch'))}"),
    ("spool", "pattern", "[a, b]", f"found a list, expected a non-empty string; {defaults_todo(repr('*'))}"),
    ("spool", "pattern", "''", f"found '' (an empty string), expected a non-empty string; "
                               f"{defaults_todo(repr('*'))}"),
    ("spool", "rescan_seconds", "fast", "found 'fast' (a string), expected a number of seconds > 0; "
                                        f"{defaults_todo('2.0')}"),
    ("spool", "rescan_seconds", "0", f"found 0 (a whole number), expected a number of seconds > 0; "
                                     f"{defaults_todo('2.0')}"),
    ("spool", "ring_bytes", "1.5", "found 1.5 (a number), expected a whole number of bytes >= 1 or null; "
                                   f"{defaults_todo('null')}"),
    ("spool", "ring_bytes", "0", "found 0 (a whole number), expected a whole number of bytes >= 1 or null; "
                                 f"{defaults_todo('null')}"),
    ("spool", "ring_bytes", "1e9", "found '1e9' (a string), expected a whole number of bytes >= 1 or null; "
                                   "write a plain number, without quotes (YAML reads '1e9' as text)"),
    ("spool", "lag_warn_fraction", "1.5", "found 1.5 (a number), expected a number > 0 and <= 1; "
                                          f"{defaults_todo('0.5')}"),
    ("spool", "lag_warn_fraction", "0", "found 0 (a whole number), expected a number > 0 and <= 1; "
                                        f"{defaults_todo('0.5')}"),
    ("state", "dir", "{a: 1}", "found a mapping, expected a path (relative to the config file's directory); "
                               f"{defaults_todo(repr('/var/lib/pcapwatch'))}"),
    ("state", "checkpoint_seconds", "-1", "found -1 (a whole number), expected a number of seconds > 0; "
                                          f"{defaults_todo('5.0')}"),
    ("state", "checkpoint_seconds", "5s", "found '5s' (a string), expected a number of seconds > 0; "
                                          f"{defaults_todo('5.0')}"),
    ("limits", "max_connections", "0", "found 0 (a whole number), expected a whole number >= 1; "
                                       f"{defaults_todo('100000')}"),
    ("limits", "max_connections", "2.5", "found 2.5 (a number), expected a whole number >= 1; "
                                         f"{defaults_todo('100000')}"),
    ("limits", "max_connections", "yes", "found true (a boolean), expected a whole number >= 1; "
                                         f"{defaults_todo('100000')}"),
    ("limits", "idle_timeout", ".inf", "found inf (a number), expected a number of seconds > 0; "
                                       f"{defaults_todo('300.0')}"),
    ("limits", "idle_timeout", "-5", "found -5 (a whole number), expected a number of seconds > 0; "
                                     f"{defaults_todo('300.0')}"),
    ("limits", "queue_batches", "0", f"found 0 (a whole number), expected a whole number >= 1; "
                                     f"{defaults_todo('16')}"),
    ("limits", "queue_batches", '"16"', "found '16' (a string), expected a whole number >= 1; "
                                        "write a plain number, without quotes (YAML reads '16' as text)"),
    ("capture", "file_mb", "0", "found 0 (a whole number), expected a whole number of millions of bytes >= 1; "
                                f"{defaults_todo('100')}"),
    ("capture", "file_mb", "100MB", "found '100MB' (a string), expected a whole number of millions of bytes "
                                    f">= 1; {defaults_todo('100')}"),
    ("capture", "files", "0", f"found 0 (a whole number), expected a whole number >= 1; {defaults_todo('10')}"),
    ("capture", "files", "null", f"found null, expected a whole number >= 1; {defaults_todo('10')}"),
    ("capture", "snaplen", "-1", "found -1 (a whole number), expected a whole number of bytes from 0 to 262144; "
                                 f"{defaults_todo('0')}"),
    ("capture", "snaplen", "262145", "found 262145 (a whole number), expected a whole number of bytes from 0 to "
                                     f"262144; {defaults_todo('0')}"),
    ("capture", "bpf", "80", f"found 80 (a whole number), expected a string; {TYPE_TODO}"),
    ("capture", "bpf", "null", f"found null, expected a string; {defaults_todo(repr('tcp'))}"),
    ("capture", "user", "''", "found '' (an empty string), expected a non-empty string or null; "
                              f"{defaults_todo('null')}"),
    ("capture", "user", "1000", f"found 1000 (a whole number), expected a non-empty string or null; {TYPE_TODO}"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD_VALUES,
                         ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD_VALUES])
def test_bad_value(tmp_path: Path, section: str, key: str, value: str, message: str) -> None:
    p = write(tmp_path, f"{section}:\n  {key}: {value}\n")
    assert errors(p) == [f"F:2: {section}.{key}: {message}"]


def test_every_key_has_bad_value_rows() -> None:
    """A new key in the schema needs its rows above (outputs' keys are tested below)."""
    schema = {(s.name, k.name) for s in config.SCHEMA if isinstance(s, Section) for k in s.keys}
    assert {(s, k) for s, k, _, _ in BAD_VALUES} == schema


# Outputs: (YAML of the outputs list, the errors).
BAD_OUTPUTS = [
    ("  - type: jsonl\n",
     ["F:2: outputs[0].name: found nothing, expected a non-empty string; give the output a name no other output "
      "has, e.g. name: stdout"]),
    ("  - name:\n    type: jsonl\n",
     ["F:2: outputs[0].name: found null, expected a non-empty string; give the output a name no other output "
      "has, e.g. name: stdout"]),
    ("  - name: ''\n    type: jsonl\n",
     ["F:2: outputs[0].name: found '' (an empty string), expected a non-empty string; give the output a name no "
      "other output has, e.g. name: stdout"]),
    ("  - name: 7\n    type: jsonl\n",
     [f"F:2: outputs[0].name: found 7 (a whole number), expected a non-empty string; {TYPE_TODO}"]),
    ("  - name: a\n",
     ["F:2: outputs[0].type: found nothing, expected one of jsonl; set the type, e.g. type: jsonl"]),
    ("  - name: a\n    type: syslog\n    host: x\n",  # unknown type: its keys are unknown, only `type` is wrong
     ["F:3: outputs[0].type: found 'syslog' (a string), expected one of jsonl; set the type, e.g. type: jsonl"]),
    ("  - name: a\n    type: jsonl\n    path: 5\n",
     [f"F:4: outputs[0].path: found 5 (a whole number), expected '-' (standard output) or a file path; "
      f"{TYPE_TODO}"]),
    ("  - name: a\n    type: jsonl\n    path: ''\n",
     ["F:4: outputs[0].path: found '' (an empty string), expected '-' (standard output) or a file path; "
      "correct the value, or delete the key to use the default ('-')"]),
    ("  - name: a\n    type: jsonl\n    pth: a.jsonl\n",
     ["F:4: outputs[0].pth: found unknown key 'pth', expected one of name, type, path (the keys of a jsonl "
      "output); did you mean 'path'?"]),
    ("  - name: a\n    type: jsonl\n  - name: b\n    type: jsonl\n  - name: a\n    type: jsonl\n"
     "  - {name: b, type: jsonl}\n",
     ["F:6: outputs[2].name: found 'a', expected a name no other output has (outputs[0] at line 2 is also 'a'); "
      "rename one of them",
      "F:8: outputs[3].name: found 'b', expected a name no other output has (outputs[1] at line 4 is also 'b'); "
      "rename one of them"]),
    ("  - name: a\n    type: jsonl\n  -\n",
     ["F:4: outputs[1]: found null, expected a mapping with the keys of one output "
      "(name, type, ...); write e.g. - {name: stdout, type: jsonl, path: '-'}"]),
    ("  - stdout\n",
     ["F:2: outputs[0]: found 'stdout' (a string), expected a mapping with the keys of one output "
      "(name, type, ...); write e.g. - {name: stdout, type: jsonl, path: '-'}"]),
    ("  name: a\n  type: jsonl\n",
     ["F:2: outputs: found a mapping, expected a list of outputs, each a mapping; start each output with '- ', "
      "e.g. - {name: stdout, type: jsonl, path: '-'}"]),
    ("  []\n",
     ["F:2: outputs: found an empty list, expected at least one output; add one, "
      "e.g. - {name: stdout, type: jsonl, path: '-'}"]),
]


@pytest.mark.parametrize(("outputs", "expected"), BAD_OUTPUTS, ids=range(len(BAD_OUTPUTS)))
def test_bad_outputs(tmp_path: Path, outputs: str, expected: list[str]) -> None:
    assert errors(write(tmp_path, "outputs:\n" + outputs)) == expected


UNKNOWN_KEYS = [
    ("spol:\n  dir: x\n", "F:1: spol: found unknown section 'spol', expected one of spool, state, outputs, limits, "
                          "capture; did you mean 'spool'?"),
    ("rules: []\n", "F:1: rules: found unknown section 'rules', expected one of spool, state, outputs, limits, "
                    "capture; delete it or correct its spelling"),
    ("spool:\n  dir: x\n  rescan_secs: 1\n", "F:3: spool.rescan_secs: found unknown key 'rescan_secs', expected "
     "one of dir, pattern, rescan_seconds, ring_bytes, lag_warn_fraction; did you mean 'rescan_seconds'?"),
    ("limits:\n  max_conections: 5\n", "F:2: limits.max_conections: found unknown key 'max_conections', expected "
     "one of max_connections, idle_timeout, queue_batches; did you mean 'max_connections'?"),
    ("capture:\n  zzz: 1\n", "F:2: capture.zzz: found unknown key 'zzz', expected one of file_mb, files, snaplen, "
                             "bpf, user; delete it or correct its spelling"),
    ("state:\n  3: x\n", "F:2: state.3: found unknown key 3 (a whole number), expected one of dir, "
                         "checkpoint_seconds; delete it or correct its spelling"),
    ("state:\n  on: x\n", "F:2: state.true: found unknown key true (a boolean), expected one of dir, "
                          "checkpoint_seconds; delete it or correct its spelling"),
]


@pytest.mark.parametrize(("text", "expected"), UNKNOWN_KEYS, ids=range(len(UNKNOWN_KEYS)))
def test_unknown_key_names_the_closest(tmp_path: Path, text: str, expected: str) -> None:
    assert errors(write(tmp_path, text)) == [expected]


STRUCTURE = [
    ("- a\n- b\n", "F:1: (top level): found a list, expected a mapping of the sections spool, state, outputs, "
                   "limits, capture; start each section at the beginning of a line, e.g. spool:"),
    ("spool: [1, 2]\n", "F:1: spool: found a list, expected a mapping of the keys dir, pattern, rescan_seconds, "
                        "ring_bytes, lag_warn_fraction; write them as key: value lines indented under spool:"),
    ("state:\n  dir: a\n  dir: b\n", "F:3: state.dir: found 'dir' a second time, expected each key once "
                                     "(first at line 2); delete one of them"),
    ("state:\n  [a, b]: 1\n", "F:2: state: found a list used as a key, expected a key name; write key: value"),
    ("state:\n  dir: !!python/object:os.system x\n", "F:2: state.dir: found 'x' tagged !!python/object:os.system "
     "(not a type safe YAML builds), expected a plain value; remove the tag"),
    ("spool:\n  pattern: 2024-01-01\n", "F:2: spool.pattern: found 2024-01-01 (a date), expected a non-empty "
                                        "string; correct the value, or delete the key to use the default ('*')"),
]


@pytest.mark.parametrize(("text", "expected"), STRUCTURE, ids=range(len(STRUCTURE)))
def test_structure_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert errors(write(tmp_path, text)) == [expected]


def test_all_errors_at_once_in_file_order(tmp_path: Path) -> None:
    p = write(tmp_path, "capture:\n  snaplen: -1\nspool:\n  dir: 5\n  patern: x\noutputs:\n  - type: jsonl\n")
    assert errors(p) == [
        "F:2: capture.snaplen: found -1 (a whole number), expected a whole number of bytes from 0 to 262144; "
        "correct the value, or delete the key to use the default (0)",
        f"F:4: spool.dir: found 5 (a whole number), expected a path (relative to the config file's directory); "
        f"{TYPE_TODO}",
        "F:5: spool.patern: found unknown key 'patern', expected one of dir, pattern, rescan_seconds, ring_bytes, "
        "lag_warn_fraction; did you mean 'pattern'?",
        "F:7: outputs[0].name: found nothing, expected a non-empty string; give the output a name no other output "
        "has, e.g. name: stdout",
    ]


BAD_YAML = [
    ('spool:\n  dir: "abc\n', "F:3:1: invalid YAML: while scanning a quoted scalar (line 2), found unexpected "
                              "end of stream"),
    ("spool:\n  dir: a: b\n", "F:2:9: invalid YAML: mapping values are not allowed here"),
    ("spool:\n\tdir: a\n", "F:2:1: invalid YAML: found character '\\t' that cannot start any token"),
    ("spool:\n  dir: a\n rescan_seconds: 1\n", "F:3:2: invalid YAML: while parsing a block mapping (line 1), "
                                               "expected <block end>, but found '<block mapping start>'"),
    ("spool: {}\n---\nstate: {}\n", "F:2:1: invalid YAML: expected a single document in the stream (line 1), "
                                    "but found another document"),
    ("spool: *nope\n", "F:1:8: invalid YAML: found undefined alias 'nope'"),
    ("spool:\n  dir: a\x07b\n", "F:2:9: invalid YAML: special characters are not allowed (character U+0007)"),
    (b"spool:\n  dir: \xff\n", "F:2: not UTF-8 text (byte 0xff at offset 14); save the file as UTF-8"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_YAML, ids=range(len(BAD_YAML)))
def test_bad_yaml_is_one_line_with_line_and_column(tmp_path: Path, text: str | bytes, expected: str) -> None:
    assert errors(write(tmp_path, text)) == [expected]


def test_unreadable_file(tmp_path: Path) -> None:
    assert errors(tmp_path / "nope.yaml") == ["F: cannot read the configuration: No such file or directory"]
    assert errors(tmp_path) == ["F: cannot read the configuration: Is a directory"]


DEFAULTS = Config(
    spool=SpoolConfig(dir=Path("/var/spool/pcapwatch"), pattern="*", rescan_seconds=2.0, ring_bytes=None,
                      lag_warn_fraction=0.5),
    state=StateConfig(dir=Path("/var/lib/pcapwatch"), checkpoint_seconds=5.0),
    outputs=(JsonlOutputConfig(name="stdout", type="jsonl", path=None),),
    limits=LimitsConfig(max_connections=100_000, idle_timeout=300.0, queue_batches=16),
    capture=CaptureConfig(file_mb=100, files=10, snaplen=0, bpf="tcp", user=None),
)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "{}\n", "spool:\nstate:\noutputs:\n",
                                  "\ufeff"], ids=["empty", "comment", "document-start", "empty-mapping",
                                                  "empty-sections", "bom"])
def test_empty_means_all_defaults(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text)
    assert load(p) == dataclasses.replace(DEFAULTS, source=p)


def test_valid_values_at_the_edges(tmp_path: Path) -> None:
    """Bounds are inclusive where documented; YAML 1.1 numbers (0x, _) read as safe_load reads them."""
    p = write(tmp_path, "spool:\n  rescan_seconds: 1\n  ring_bytes: 1_000_000_000\n  lag_warn_fraction: 1\n"
                        "limits:\n  max_connections: 0x10\n  idle_timeout: 0.001\n  queue_batches: 1\n"
                        "capture:\n  file_mb: 1\n  files: 1\n  snaplen: 262144\n  bpf: ''\n  user: nobody\n")
    c = load(p)
    assert c.spool == dataclasses.replace(DEFAULTS.spool, rescan_seconds=1.0, ring_bytes=1_000_000_000,
                                          lag_warn_fraction=1.0)
    assert type(c.spool.rescan_seconds) is float
    assert c.limits == LimitsConfig(max_connections=16, idle_timeout=0.001, queue_batches=1)
    assert c.capture == CaptureConfig(file_mb=1, files=1, snaplen=262144, bpf="", user="nobody")
    assert yaml.safe_load(p.read_text())["limits"]["max_connections"] == 16


def test_anchors_and_merge_keys_as_safe_load(tmp_path: Path) -> None:
    p = write(tmp_path, "outputs:\n  - &o {name: a, type: jsonl, path: a.jsonl}\n  - <<: *o\n    name: b\n")
    assert load(p).outputs == (JsonlOutputConfig("a", "jsonl", tmp_path / "a.jsonl"),
                               JsonlOutputConfig("b", "jsonl", tmp_path / "a.jsonl"))


def test_relative_paths_resolve_against_the_files_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    write(tmp_path, "spool:\n  dir: ../spool\nstate:\n  dir: /abs/./state/\n"
                    "outputs:\n  - {name: f, type: jsonl, path: out/../x.jsonl}\n  - {name: o, type: jsonl}\n",
          name="a/conf/p.yaml")
    monkeypatch.chdir(tmp_path / "a")  # a relative config path: still relative to the file, not to cwd
    c = load("conf/p.yaml")
    assert c.source == tmp_path / "a" / "conf" / "p.yaml"
    assert c.spool.dir == tmp_path / "a" / "spool"
    assert c.state.dir == Path("/abs/state")
    assert c.outputs == (JsonlOutputConfig("f", "jsonl", tmp_path / "a" / "conf" / "x.jsonl"),
                         JsonlOutputConfig("o", "jsonl", None))


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_config_path({}) == SHIPPED  # in the repo: conf/ beside the package
    assert default_config_path({"PCAPWATCH_CONFIG": "rel/x.yaml"}) == Path("rel/x.yaml")
    assert default_config_path({"PCAPWATCH_CONFIG": ""}) == SHIPPED
    monkeypatch.setenv("PCAPWATCH_CONFIG", str(tmp_path / "env.yaml"))
    assert default_config_path() == tmp_path / "env.yaml"
    monkeypatch.delenv("PCAPWATCH_CONFIG")
    monkeypatch.setattr(config, "_REPO_CONFIG", tmp_path / "none.yaml")  # as installed from a wheel
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert default_config_path() == Path("/etc/pcapwatch/pcapwatch.yaml")
    shared = write(tmp_path, "", name="share/pcapwatch/pcapwatch.yaml")
    assert default_config_path() == shared


def test_shipped_file_has_every_key_commented_with_its_default() -> None:
    lines = SHIPPED.read_text().splitlines()
    root = yaml.compose(SHIPPED.read_text(), Loader=yaml.SafeLoader)
    for section_key, section_node in root.value:
        entry = next(e for e in config.SCHEMA if e.name == section_key.value)
        nodes = section_node.value[0].value if isinstance(entry, config.TypedList) else section_node.value
        keys = (entry.common + entry.types["jsonl"].keys) if isinstance(entry, config.TypedList) else entry.keys
        assert [k.value for k, _ in nodes] == [k.name for k in keys]
        for knode, _ in nodes:
            key = next(k for k in keys if k.name == knode.value)
            comment: list[str] = []
            for line in reversed(lines[:knode.start_mark.line]):  # the comment block just above the key
                if not line.strip().lstrip("-").strip().startswith("#"):
                    break
                comment.insert(0, line)
            text = " ".join(comment)
            assert text, f"{key.name} has no comment"
            if key.required:
                assert "required" in text.lower()
            else:
                default = "null" if key.default is None else key.default
                assert f"Default: {default}" in text or f'Default: "{default}"' in text, (key.name, text)
    assert [k.value for k, _ in root.value] == [e.name for e in config.SCHEMA]


def test_shipped_file_values() -> None:
    """The repo's default: the schema's defaults, but spool/ and state/ under the repo."""
    assert load(SHIPPED) == dataclasses.replace(
        DEFAULTS, source=SHIPPED, spool=dataclasses.replace(DEFAULTS.spool, dir=REPO / "spool"),
        state=dataclasses.replace(DEFAULTS.state, dir=REPO / "state"))


def test_render_has_every_key_and_loads_back_equal(tmp_path: Path) -> None:
    p = write(tmp_path, "spool:\n  dir: s\n  ring_bytes: 5000\noutputs:\n  - {name: a, type: jsonl, path: x}\n"
                        "  - {name: b, type: jsonl}\ncapture:\n  user: nobody\n  bpf: ''\n")
    c = load(p)
    text = render(c)
    assert yaml.safe_load(text) == {
        "spool": {"dir": str(tmp_path / "s"), "pattern": "*", "rescan_seconds": 2.0, "ring_bytes": 5000,
                  "lag_warn_fraction": 0.5},
        "state": {"dir": "/var/lib/pcapwatch", "checkpoint_seconds": 5.0},
        "outputs": [{"name": "a", "type": "jsonl", "path": str(tmp_path / "x")},
                    {"name": "b", "type": "jsonl", "path": "-"}],
        "limits": {"max_connections": 100000, "idle_timeout": 300.0, "queue_batches": 16},
        "capture": {"file_mb": 100, "files": 10, "snaplen": 0, "bpf": "", "user": "nobody"},
    }
    again = write(tmp_path, text, name="elsewhere/again.yaml")  # absolute paths: the directory no longer matters
    assert load(again) == dataclasses.replace(c, source=again)


def test_schema_rows_match_the_dataclasses() -> None:
    """Each table row is a dataclass field and back, and every default passes its own row's check."""
    for entry in config.SCHEMA:
        if isinstance(entry, Section):
            assert [k.name for k in entry.keys] == [f.name for f in dataclasses.fields(entry.make)]  # type: ignore[arg-type]
        else:
            for item in entry.types.values():
                assert [k.name for k in entry.common + item.keys] == [
                    f.name for f in dataclasses.fields(item.make)]  # type: ignore[arg-type]
    assert [e.name for e in config.SCHEMA] == [f.name for f in dataclasses.fields(Config)][:-1]


def test_config_is_frozen(tmp_path: Path) -> None:
    c = load(write(tmp_path, ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.spool.dir = Path("/x")  # type: ignore[misc]
    assert isinstance(c.outputs, tuple)


def test_safe_load_only(tmp_path: Path) -> None:
    """No tag runs code: a python/object tag is an error naming the key, and nothing was executed."""
    marker = tmp_path / "ran"
    p = write(tmp_path, f"spool:\n  dir: !!python/object/apply:os.system ['touch {marker}']\n")
    assert errors(p) == ["F:2: spool.dir: found a list tagged !!python/object/apply:os.system (not a type "
                         "safe YAML builds), expected a plain value; remove the tag"]
    assert not marker.exists()
