"""watcher/config/load.py, schema.py and model.py: every key's bad values, unknown and repeated
keys, every output type, headers/redact/routes, rules from the file and from rules_dir (errors with
file, line and key), YAML syntax, defaults, path resolution, the default file's location, the
shipped conf/pcapwatch.yaml, `render` (secrets masked), and the command line's `load_or_report` and
`with_overrides`.

Error lines are asserted whole: file, line, key path, what was found, what was expected, what to do.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import pytest
import yaml
from helpers.env import REPO

from analyzers.routes import RoutePattern
from watcher.config import load as config
from watcher.config.load import (
    CaptureConfig,
    Config,
    ConfigError,
    HeadersConfig,
    JsonlOutputConfig,
    KafkaOutputConfig,
    LimitsConfig,
    PrometheusOutputConfig,
    RedactConfig,
    RedisOutputConfig,
    RoutesConfig,
    Section,
    SpoolConfig,
    StateConfig,
    SyslogOutputConfig,
    ZmqOutputConfig,
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
    ("limits", "pcap_connection_bytes", "0", "found 0 (a whole number), expected a whole number of bytes >= 1; "
                                             f"{defaults_todo('2000000')}"),
    ("limits", "pcap_total_bytes", "1.5", "found 1.5 (a number), expected a whole number of bytes >= 1; "
                                          f"{defaults_todo('64000000')}"),
    ("limits", "gunzip_max_bytes", "0", "found 0 (a whole number), expected a whole number of bytes >= 1; "
                                        f"{defaults_todo('17179869184')}"),
    ("limits", "gunzip_max_ratio", "0.5", "found 0.5 (a number), expected a number >= 1; "
                                          f"{defaults_todo('200.0')}"),
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
    ("kafka", "source", "kafka://h/t", "found 'kafka://h/t' (a string), expected kafka://HOST:PORT/TOPIC (several "
                                       "brokers separated by commas) or null (broker 'h' is not HOST:PORT); "
                                       "correct the value, or delete the key to use the default (null)"),
    ("kafka", "source", "h:9092/t", "found 'h:9092/t' (a string), expected kafka://HOST:PORT/TOPIC (several brokers "
                                    "separated by commas) or null; correct the value, or delete the key to use the "
                                    "default (null)"),
    ("kafka", "group", "''", "found '' (an empty string), expected a non-empty string; "
                             f"{defaults_todo(repr('pcapwatch'))}"),
    ("kafka", "linktype", "70000", "found 70000 (a whole number), expected a whole number from 0 to 65535; "
                                   f"{defaults_todo('1')}"),
    ("kafka", "session_timeout_seconds", "0", "found 0 (a whole number), expected a number of seconds > 0; "
                                              f"{defaults_todo('10.0')}"),
    ("headers", "request", "host", "found 'host' (a string), expected a list of header names; write a list, e.g. "
                                   "[host]"),
    ("headers", "response", "{a: 1}", "found a mapping, expected a list of header names; correct the value, or "
                                      "delete the key to use the default ([content-type, content-length, location, "
                                      "server, set-cookie])"),
    ("redact", "headers", "null", "found null, expected a list of header names; correct the value, or delete the "
                                  "key to use the default ([])"),
    ("redact", "query_params", "token", "found 'token' (a string), expected a list of non-empty strings; write a "
                                        "list, e.g. [token]"),
    ("redact", "secrets", "hunter22", "found 'hunter22' (a string), expected a list of strings of at least 4 "
                                      "characters; write a list, e.g. [hunter22]"),
    ("redact", "max_field_bytes", "63", "found 63 (a whole number), expected a whole number of bytes >= 64; "
                                        f"{defaults_todo('4096')}"),
    ("routes", "patterns", "'^/api'", "found '^/api' (a string), expected a list of mappings, each with match, "
                                      "route; write a list of mappings, e.g. [{match: ..., route: ...}]"),
    ("routes", "max_routes", "0", f"found 0 (a whole number), expected a whole number >= 1; {defaults_todo('1000')}"),
    ("replay", "targets", "http://x", "found 'http://x' (a string), expected a list of non-empty strings; write a "
                                      "list, e.g. [http://x]"),
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
    assert {(s, k) for s, k, _, _ in BAD_LIST_ITEMS} == {(s, k) for s, k in schema if k in (
        "request", "response", "headers", "query_params", "secrets", "patterns")}


# (section, key, YAML list, the errors after "F:2: section.key"): each bad element at its own line and index.
BAD_LIST_ITEMS = [
    ("headers", "request", "[host, 'bad header', 5]", [
        "[1]: found 'bad header' (a string), expected a header name (letters, digits and !#$%&'*+-.^_`|~); correct "
        "it or delete it from the list",
        "[2]: found 5 (a whole number), expected a header name (letters, digits and !#$%&'*+-.^_`|~); correct it or "
        "delete it from the list"]),
    ("headers", "response", "['']", [
        "[0]: found '' (an empty string), expected a header name (letters, digits and !#$%&'*+-.^_`|~); correct it "
        "or delete it from the list"]),
    ("redact", "headers", "[x-api-key, {a: b}]", [
        "[1]: found a mapping, expected a header name (letters, digits and !#$%&'*+-.^_`|~); correct it or delete "
        "it from the list"]),
    ("redact", "query_params", "[token, null]", [
        "[1]: found null, expected a non-empty string; correct it or delete it from the list"]),
    ("redact", "secrets", "[hunter22, abc]", [
        "[1]: found 'abc' (a string), expected a string of at least 4 characters (a shorter one would mask "
        "ordinary text); correct it or delete it from the list"]),
    ("routes", "patterns", "[{match: '(', route: /x}, {route: /y}, {match: a, route: b, extra: 1}, x]", [
        "[0].match: found '(' (a string), expected a regular expression (missing ), unterminated subpattern at "
        "position 0); write the regex, e.g. match: '^/api/v1/search'",
        "[1].match: found nothing, expected a regular expression; write the regex, e.g. match: '^/api/v1/search'",
        "[2].extra: found unknown key 'extra', expected one of match, route; delete it or correct its spelling",
        "[3]: found 'x' (a string), expected a mapping with match, route"]),
]


@pytest.mark.parametrize(("section", "key", "value", "messages"), BAD_LIST_ITEMS,
                         ids=[f"{s}.{k}" for s, k, _, _ in BAD_LIST_ITEMS])
def test_bad_list_item(tmp_path: Path, section: str, key: str, value: str, messages: list[str]) -> None:
    p = write(tmp_path, f"{section}:\n  {key}: {value}\n")
    assert errors(p) == [f"F:2: {section}.{key}{m}" for m in messages]


def test_lists_keep_order_drop_repeats_and_lower_case_header_names(tmp_path: Path) -> None:
    c = load(write(tmp_path, "headers:\n  request: [Host, X-Request-ID, host]\n  response: []\n"
                             "redact:\n  query_params: [Session, session]\n  secrets: [hunter22]\n"
                             "routes:\n  patterns:\n    - {match: '^/api/v1/search', route: /search}\n"
                             "  max_routes: 5\n"))
    assert c.headers == HeadersConfig(("host", "x-request-id"), ())
    assert c.redact == RedactConfig((), ("Session", "session"), ("hunter22",), 4096)
    assert c.routes == RoutesConfig((RoutePattern("^/api/v1/search", "/search"),), 5)


TYPES = "jsonl, syslog, prometheus, redis, zmq, kafka"
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
     [f"F:2: outputs[0].type: found nothing, expected one of {TYPES}; set the type, e.g. type: jsonl"]),
    ("  - name: a\n    type: kinesis\n    host: x\n",  # unknown type: its keys are unknown, only `type` is wrong
     [f"F:3: outputs[0].type: found 'kinesis' (a string), expected one of {TYPES}; set the type, e.g. type: jsonl"]),
    ("  - name: a\n    type: syslog\n    path: x\n",  # a key of another type
     ["F:4: outputs[0].path: found unknown key 'path', expected one of name, type, default, buffer, required, "
      "address, facility, app_name, hostname (the keys of a syslog output); delete it or correct its spelling"]),
    ("  - name: a\n    type: jsonl\n    path: 5\n",
     [f"F:4: outputs[0].path: found 5 (a whole number), expected '-' (standard output) or a file path; "
      f"{TYPE_TODO}"]),
    ("  - name: a\n    type: jsonl\n    path: ''\n",
     ["F:4: outputs[0].path: found '' (an empty string), expected '-' (standard output) or a file path; "
      "correct the value, or delete the key to use the default ('-')"]),
    ("  - name: a\n    type: jsonl\n    pth: a.jsonl\n",
     ["F:4: outputs[0].pth: found unknown key 'pth', expected one of name, type, default, buffer, required, path, "
      "format (the keys of a jsonl output); did you mean 'path'?"]),
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


# (type, key, YAML value, the error after "F:4: outputs[0].<key>: ") for every key of every output type
BAD_OUTPUT_VALUES = [
    ("jsonl", "path", "[a]", "found a list, expected '-' (standard output) or a file path; "
                             f"{defaults_todo(repr('-'))}"),
    ("jsonl", "default", "yes please", "found 'yes please' (a string), expected true or false; correct the value, or "
                                       "delete the key to use the default (true)"),
    ("jsonl", "buffer", "0", f"found 0 (a whole number), expected a whole number >= 1; {defaults_todo('10000')}"),
    ("jsonl", "required", "'yes'", "found 'yes' (a string), expected true or false; correct the value, or delete "
                                   "the key to use the default (false)"),
    ("jsonl", "format", "json", "found 'json' (a string), expected one of flat, ecs; "
                                f"{defaults_todo(repr('flat'))}"),
    ("syslog", "address", "/dev/log", "found '/dev/log' (a string), expected unix:/PATH, udp://HOST:PORT or "
                                      f"tcp://HOST:PORT; {defaults_todo(repr('unix:/dev/log'))}"),
    ("syslog", "address", "unix:dev/log", "found 'unix:dev/log' (a string), expected unix:/PATH, udp://HOST:PORT or "
                                          "tcp://HOST:PORT (the socket path must be absolute); "
                                          f"{defaults_todo(repr('unix:/dev/log'))}"),
    ("syslog", "address", "udp://127.0.0.1:0", "found 'udp://127.0.0.1:0' (a string), expected unix:/PATH, "
                                               "udp://HOST:PORT or tcp://HOST:PORT; "
                                               f"{defaults_todo(repr('unix:/dev/log'))}"),
    ("syslog", "facility", "local8", "found 'local8' (a string), expected one of local0, local1, local2, local3, "
                                     "local4, local5, local6, local7, daemon, user; "
                                     f"{defaults_todo(repr('local0'))}"),
    ("syslog", "app_name", "''", "found '' (an empty string), expected a non-empty string; "
                                 f"{defaults_todo(repr('pcapwatch'))}"),
    ("syslog", "hostname", "[a]", f"found a list, expected a non-empty string or null; {defaults_todo('null')}"),
    ("prometheus", "listen", "9477", "found 9477 (a whole number), expected HOST:PORT (port 0: any free port); "
                                     f"{defaults_todo(repr('127.0.0.1:9477'))}"),
    ("prometheus", "listen", "localhost:65536", "found 'localhost:65536' (a string), expected HOST:PORT (port 0: "
                                                f"any free port); {defaults_todo(repr('127.0.0.1:9477'))}"),
    ("prometheus", "path", "metrics", "found 'metrics' (a string), expected a URL path starting with /; "
                                      f"{defaults_todo(repr('/metrics'))}"),
    ("prometheus", "buckets_ms", "[]", "found an empty list, expected a non-empty list of numbers > 0 in increasing "
                                       "order of milliseconds; correct the value, or delete the key to use the "
                                       "default ([5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000])"),
    ("redis", "url", "http://127.0.0.1:6379", "found 'http://127.0.0.1:6379' (a string), expected redis://[:PASSWORD@]"
                                              "HOST[:PORT][/DB], rediss://... or unix:///PATH; correct the value"),
    ("redis", "url", "redis://h:99999/0", "found 'redis://h:99999/0' (a string), expected redis://[:PASSWORD@]HOST"
                                          "[:PORT][/DB], rediss://... or unix:///PATH (Port out of range 0-65535); "
                                          "correct the value"),
    ("redis", "url", "redis://h/db1", "found 'redis://h/db1' (a string), expected redis://[:PASSWORD@]HOST[:PORT]"
                                      "[/DB], rediss://... or unix:///PATH (the database is a number, e.g. /0); "
                                      "correct the value"),
    ("redis", "mode", "xadd", f"found 'xadd' (a string), expected one of stream, publish; "
                              f"{defaults_todo(repr('stream'))}"),
    ("redis", "key", "5", f"found 5 (a whole number), expected a non-empty string; {TYPE_TODO}"),
    ("redis", "maxlen", "0", f"found 0 (a whole number), expected a whole number >= 1; {defaults_todo('100000')}"),
    ("redis", "batch", "1.5", f"found 1.5 (a number), expected a whole number >= 1; {defaults_todo('100')}"),
    ("redis", "backoff_max_seconds", "0", "found 0 (a whole number), expected a number of seconds > 0; "
                                          f"{defaults_todo('30.0')}"),
    ("zmq", "bind", "127.0.0.1:5556", "found '127.0.0.1:5556' (a string), expected tcp://HOST:PORT (port * or 0: any "
                                      "free port), ipc:///PATH or inproc://NAME; "
                                      f"{defaults_todo(repr('tcp://127.0.0.1:5556'))}"),
    ("kafka", "brokers", "127.0.0.1", "found '127.0.0.1' (a string), expected HOST:PORT, or several separated by "
                                      f"commas; {defaults_todo(repr('127.0.0.1:9092'))}"),
    ("kafka", "brokers", "a:1,b:0", "found 'a:1,b:0' (a string), expected HOST:PORT, or several separated by commas; "
                                    f"{defaults_todo(repr('127.0.0.1:9092'))}"),
    ("kafka", "topic", "a/b", "found 'a/b' (a string), expected a Kafka topic name (letters, digits, '.', '_', '-'); "
                              f"{defaults_todo(repr('pcapwatch-http'))}"),
    ("kafka", "key", "ts", f"found 'ts' (a string), expected one of uid, event_id; {defaults_todo(repr('uid'))}"),
    ("kafka", "format", "xml", f"found 'xml' (a string), expected one of flat, ecs; {defaults_todo(repr('flat'))}"),
    ("kafka", "compression", "brotli", "found 'brotli' (a string), expected one of none, gzip, snappy, lz4, zstd; "
                                       f"{defaults_todo(repr('none'))}"),
    ("kafka", "acks", "1", "found 1 (a whole number), expected one of all, leader, none; "
                           f"{defaults_todo(repr('all'))}"),
    ("kafka", "batch", "0", f"found 0 (a whole number), expected a whole number >= 1; {defaults_todo('500')}"),
    ("kafka", "backoff_max_seconds", "-1", "found -1 (a whole number), expected a number of seconds > 0; "
                                           f"{defaults_todo('30.0')}"),
    ("zmq", "per_message", "1", "found 1 (a whole number), expected true or false; correct the value, or delete the "
                                "key to use the default (false)"),
]


@pytest.mark.parametrize(("kind", "key", "value", "message"), BAD_OUTPUT_VALUES,
                         ids=[f"{t}.{k}={v}" for t, k, v, _ in BAD_OUTPUT_VALUES])
def test_bad_output_value(tmp_path: Path, kind: str, key: str, value: str, message: str) -> None:
    p = write(tmp_path, f"outputs:\n  - name: o\n    type: {kind}\n    {key}: {value}\n")
    assert errors(p) == [f"F:4: outputs[0].{key}: {message}"]


def test_every_output_key_has_bad_value_rows() -> None:
    keys = {(t, k.name) for t, item in config.OUTPUT_TYPES.items() for k in item.keys}
    common = {k.name for k in config.SCHEMA[2].common} - {"name", "type"}  # type: ignore[union-attr]
    assert {(t, k) for t, k, _, _ in BAD_OUTPUT_VALUES if k not in common} == keys
    assert {k for _, k, _, _ in BAD_OUTPUT_VALUES if k in common} == common


def test_every_output_type_with_defaults_and_with_values(tmp_path: Path) -> None:
    p = write(tmp_path, "outputs:\n"
                        "  - {name: j, type: jsonl}\n  - {name: s, type: syslog}\n  - {name: p, type: prometheus}\n"
                        "  - {name: r, type: redis}\n  - {name: z, type: zmq}\n"
                        "  - {name: j2, type: jsonl, default: false, buffer: 5, path: out.jsonl, format: ecs}\n"
                        "  - {name: s2, type: syslog, address: 'udp://[::1]:514', facility: daemon, app_name: pw,"
                        " hostname: web1}\n"
                        "  - {name: p2, type: prometheus, listen: '0.0.0.0:0', path: /m, buckets_ms: [1, 2.5, 10]}\n"
                        "  - {name: r2, type: redis, url: 'unix:///run/redis.sock', mode: publish, key: k, maxlen: 1,"
                        " batch: 1, backoff_max_seconds: 0.5}\n"
                        "  - {name: z2, type: zmq, bind: 'tcp://*:*', per_message: true}\n")
    assert load(p).outputs == (
        JsonlOutputConfig("j", "jsonl", None), SyslogOutputConfig("s", "syslog"),
        PrometheusOutputConfig("p", "prometheus"), RedisOutputConfig("r", "redis"), ZmqOutputConfig("z", "zmq"),
        JsonlOutputConfig("j2", "jsonl", tmp_path / "out.jsonl", "ecs", default=False, buffer=5),
        SyslogOutputConfig("s2", "syslog", "udp://[::1]:514", "daemon", "pw", "web1"),
        PrometheusOutputConfig("p2", "prometheus", "0.0.0.0:0", "/m", (1.0, 2.5, 10.0)),
        RedisOutputConfig("r2", "redis", "unix:///run/redis.sock", "publish", "k", 1, 1, 0.5),
        ZmqOutputConfig("z2", "zmq", "tcp://*:*", True))
    assert PrometheusOutputConfig("p", "prometheus").buckets_ms == (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
                                                                     10000)
    assert (RedisOutputConfig("r", "redis").url, ZmqOutputConfig("z", "zmq").bind) == (
        "redis://127.0.0.1:6379/0", "tcp://127.0.0.1:5556")


SECTIONS = "spool, state, outputs, limits, capture, kafka, headers, redact, routes, replay, strings, rules_dir, rules"
UNKNOWN_KEYS = [
    ("spol:\n  dir: x\n", f"F:1: spol: found unknown section 'spol', expected one of {SECTIONS}; did you mean "
                          "'spool'?"),
    ("rule: []\n", f"F:1: rule: found unknown section 'rule', expected one of {SECTIONS}; did you mean 'rules'?"),
    ("filters: []\n", f"F:1: filters: found unknown section 'filters', expected one of {SECTIONS}; delete it or "
                      "correct its spelling"),
    ("spool:\n  dir: x\n  rescan_secs: 1\n", "F:3: spool.rescan_secs: found unknown key 'rescan_secs', expected "
     "one of dir, pattern, rescan_seconds, ring_bytes, lag_warn_fraction; did you mean 'rescan_seconds'?"),
    ("limits:\n  max_conections: 5\n", "F:2: limits.max_conections: found unknown key 'max_conections', expected "
     "one of max_connections, idle_timeout, queue_batches, pcap_connection_bytes, pcap_total_bytes, "
     "gunzip_max_bytes, gunzip_max_ratio; did you mean 'max_connections'?"),
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
    ("- a\n- b\n", f"F:1: (top level): found a list, expected a mapping of the sections {SECTIONS}; start each "
                   "section at the beginning of a line, e.g. spool:"),
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
    limits=LimitsConfig(max_connections=100_000, idle_timeout=300.0, queue_batches=16,
                        pcap_connection_bytes=2_000_000, pcap_total_bytes=64_000_000),
    capture=CaptureConfig(file_mb=100, files=10, snaplen=0, bpf="tcp", user=None),
)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "{}\n", "spool:\nstate:\noutputs:\n",
                                  "\ufeff"], ids=["empty", "comment", "document-start", "empty-mapping",
                                                  "empty-sections", "bom"])
def test_empty_means_all_defaults(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text)
    assert load(p) == dataclasses.replace(DEFAULTS, source=p, rules_dir=tmp_path / "rules.d")  # rules.d may be absent


def test_valid_values_at_the_edges(tmp_path: Path) -> None:
    """Bounds are inclusive where documented; YAML 1.1 numbers (0x, _) read as safe_load reads them."""
    p = write(tmp_path, "spool:\n  rescan_seconds: 1\n  ring_bytes: 1_000_000_000\n  lag_warn_fraction: 1\n"
                        "limits:\n  max_connections: 0x10\n  idle_timeout: 0.001\n  queue_batches: 1\n"
                        "  pcap_connection_bytes: 1\n  pcap_total_bytes: 1\n"
                        "capture:\n  file_mb: 1\n  files: 1\n  snaplen: 262144\n  bpf: ''\n  user: nobody\n")
    c = load(p)
    assert c.spool == dataclasses.replace(DEFAULTS.spool, rescan_seconds=1.0, ring_bytes=1_000_000_000,
                                          lag_warn_fraction=1.0)
    assert type(c.spool.rescan_seconds) is float
    assert c.limits == LimitsConfig(max_connections=16, idle_timeout=0.001, queue_batches=1, pcap_connection_bytes=1,
                                    pcap_total_bytes=1)
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


def comment_above(lines: list[str], line: int) -> str:
    """The comment block just above a 0-based line, joined."""
    comment: list[str] = []
    for text in reversed(lines[:line]):
        if not text.strip().lstrip("-").strip().startswith("#"):
            break
        comment.insert(0, text)
    return " ".join(comment)


def yaml_default(key: config.Key) -> str:
    if key.default is None:
        return "null"
    if isinstance(key.default, bool):
        return str(key.default).lower()
    if isinstance(key.default, tuple):
        return "[" + ", ".join(str(x) for x in key.default) + "]"
    return str(key.default)


def test_shipped_file_has_every_key_commented_with_its_default() -> None:
    text = SHIPPED.read_text()
    lines = text.splitlines()
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert [k.value for k, _ in root.value] == [e.name for e in config.SCHEMA]
    for knode, node in root.value:
        entry = next(e for e in config.SCHEMA if e.name == knode.value)
        if isinstance(entry, config.Scalar | config.RuleList):
            pairs = [(knode, entry.key if isinstance(entry, config.Scalar) else None)]
        else:
            nodes = node.value[0].value if isinstance(entry, config.TypedList) else node.value
            keys = (entry.common + entry.types["jsonl"].keys) if isinstance(entry, config.TypedList) else entry.keys
            assert [k.value for k, _ in nodes] == [k.name for k in keys]
            pairs = [(k, next(key for key in keys if key.name == k.value)) for k, _ in nodes]
        for kn, key in pairs:
            comment = comment_above(lines, kn.start_mark.line)
            assert comment, f"{kn.value} has no comment"
            if key is None:
                assert "Default: []" in comment
            elif key.required:
                assert "required" in comment.lower()
            else:
                default = yaml_default(key)
                assert f"Default: {default}" in comment or f'Default: "{default}"' in comment, (key.name, comment)


def test_shipped_file_shows_every_output_type_with_its_defaults(tmp_path: Path) -> None:
    """The commented examples under outputs:, uncommented, are one output of each other type with every key
    at its default."""
    lines = SHIPPED.read_text().splitlines()
    start = lines.index("  # - name: journal")
    block = []
    for text in lines[start:]:
        if not text.startswith("  # "):
            break
        block.append("  " + text[4:])
    c = load(write(tmp_path, "outputs:\n" + "\n".join(block) + "\n"))
    assert c.outputs == (SyslogOutputConfig("journal", "syslog"), PrometheusOutputConfig("metrics", "prometheus"),
                         RedisOutputConfig("redis", "redis"), ZmqOutputConfig("tap", "zmq"),
                         KafkaOutputConfig("kafka", "kafka"))
    shown = yaml.safe_load("\n".join(block))
    for item in shown:
        item_type = config.OUTPUT_TYPES[item["type"]]
        assert list(item) == ["name", "type"] + [k.name for k in item_type.keys]


def test_shipped_file_rule_example_compiles(tmp_path: Path) -> None:
    lines = SHIPPED.read_text().splitlines()
    start = lines.index("# Example (uncomment to use):") + 1
    block = []
    for text in lines[start:]:
        if not text.startswith("#   "):
            break
        block.append(text[2:])
    p = write(tmp_path, "rules_dir: null\nrules:\n" + "\n".join(block) + "\n")
    assert [r.describe() for r in load(p).rules] == [
        f"server-errors: match status 5xx; actions tag [error], alert to the default outputs; then continue; at {p}:3",
        f"health-checks: match method GET, path ^/healthz$; actions drop; then stop; at {p}:7"]


def test_shipped_file_values() -> None:
    """The repo's default: the schema's defaults, but spool/ and state/ under the repo."""
    assert load(SHIPPED) == dataclasses.replace(
        DEFAULTS, source=SHIPPED, spool=dataclasses.replace(DEFAULTS.spool, dir=REPO / "spool"),
        state=dataclasses.replace(DEFAULTS.state, dir=REPO / "state"), rules_dir=None)


def test_render_has_every_key_and_loads_back_equal(tmp_path: Path) -> None:
    p = write(tmp_path, "spool:\n  dir: s\n  ring_bytes: 5000\noutputs:\n  - {name: a, type: jsonl, path: x}\n"
                        "  - {name: b, type: jsonl}\n  - {name: r, type: redis, url: 'redis://:pw1234@h:6379/1',"
                        " default: false}\ncapture:\n  user: nobody\n  bpf: ''\nredact:\n  secrets: [hunter22]\n"
                        "routes:\n  patterns: [{match: ^/a, route: /a}]\nrules_dir: null\n")
    c = load(p)
    text = render(c)
    assert "hunter22" not in text and "pw1234" not in text
    assert yaml.safe_load(text) == {
        "spool": {"dir": str(tmp_path / "s"), "pattern": "*", "rescan_seconds": 2.0, "ring_bytes": 5000,
                  "lag_warn_fraction": 0.5},
        "state": {"dir": "/var/lib/pcapwatch", "checkpoint_seconds": 5.0},
        "outputs": [{"name": "a", "type": "jsonl", "default": True, "buffer": 10000, "required": False,
                     "path": str(tmp_path / "x"), "format": "flat"},
                    {"name": "b", "type": "jsonl", "default": True, "buffer": 10000, "required": False, "path": "-",
                     "format": "flat"},
                    {"name": "r", "type": "redis", "default": False, "buffer": 10000, "required": False,
                     "url": "redis://:<redacted>@h:6379/1", "mode": "stream", "key": "pcapwatch:http",
                     "maxlen": 100000, "batch": 100, "backoff_max_seconds": 30.0}],
        "limits": {"max_connections": 100000, "idle_timeout": 300.0, "queue_batches": 16,
                   "pcap_connection_bytes": 2000000, "pcap_total_bytes": 64000000,
                   "gunzip_max_bytes": 17179869184, "gunzip_max_ratio": 200.0},
        "capture": {"file_mb": 100, "files": 10, "snaplen": 0, "bpf": "", "user": "nobody"},
        "kafka": {"source": None, "group": "pcapwatch", "linktype": 1, "session_timeout_seconds": 10.0},
        "headers": {"request": ["host", "user-agent", "referer", "content-type", "content-length", "x-forwarded-for",
                                "authorization", "cookie"],
                    "response": ["content-type", "content-length", "location", "server", "set-cookie"]},
        "redact": {"headers": [], "query_params": ["token", "password", "passwd", "secret", "key", "api_key",
                                                   "apikey", "access_token", "auth", "signature", "sig"],
                   "secrets": ["<redacted>"], "max_field_bytes": 4096},
        "routes": {"patterns": [{"match": "^/a", "route": "/a"}], "max_routes": 1000},
        "replay": {"targets": []},
        "strings": "utf8",
        "rules_dir": None,
    }
    again = write(tmp_path, render(c, reveal=True), name="elsewhere/again.yaml")  # absolute paths: the directory
    assert load(again) == dataclasses.replace(c, source=again)                   # no longer matters


def test_render_rules_dir_absolute(tmp_path: Path) -> None:
    assert yaml.safe_load(render(load(write(tmp_path, ""))))["rules_dir"] == str(tmp_path / "rules.d")


def test_schema_rows_match_the_dataclasses() -> None:
    """Each table row is a dataclass field and back, and every default passes its own row's check."""
    for entry in config.SCHEMA:
        if isinstance(entry, Section):
            assert [k.name for k in entry.keys] == [f.name for f in dataclasses.fields(entry.make)]  # type: ignore[arg-type]
            if entry.name in ("headers", "redact", "routes"):  # used without a file too: defaults in the class
                assert entry.make() == entry.make(**{k.name: k.default for k in entry.keys})
            for key in entry.keys:
                if key.kind is config.Kind.MAPPINGS:
                    assert [k.name for k in key.items] == [f.name for f in dataclasses.fields(key.make)]  # type: ignore[arg-type]
        elif isinstance(entry, config.TypedList):
            for item in entry.types.values():
                assert [k.name for k in entry.common + item.keys] == [
                    f.name for f in dataclasses.fields(item.make)]  # type: ignore[arg-type]
                needed = {"path": None} if item.make is JsonlOutputConfig else {}
                built = item.make("n", "t", **needed)  # the dataclass's own defaults are the schema's
                for key in entry.common[2:] + item.keys:
                    if key.name not in needed:
                        assert getattr(built, key.name) == key.default, key.name
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


# ---- rules: from the file and from rules_dir, errors with file, line and key ------------------------------

RULES = """\
outputs:
  - {name: stdout, type: jsonl}
  - {name: redis, type: redis, default: false}
rules:
  - name: server-errors
    match:
      status: 5xx
    actions:
      tag: [error]
      log: [redis]
    continue: true
  - &base
    name: slow
    match: {duration_ms: ">500"}
    actions: {tag: [slow]}
  - <<: *base
    name: slow-api
"""


def test_rules_from_the_file_then_rules_dir_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "rules:\n  - name: b\n    actions: {drop: true}\n", name="rules.d/20-b.yaml")
    write(tmp_path, "# a comment\nrules:\n  - name: a\n    match: {path: ^/a}\n    actions: {tag: [a]}\n",
          name="rules.d/10-a.yaml")
    write(tmp_path, "rules:\n  - name: ignored\n", name="rules.d/notes.yml")  # only *.yaml
    write(tmp_path, "", name="rules.d/30-empty.yaml")
    write(tmp_path, "rules:\n", name="rules.d/40-null.yaml")
    p = write(tmp_path, RULES)
    c = load(p)
    assert [(r.name, r.source) for r in c.rules] == [
        ("server-errors", f"{p}:5"), ("slow", f"{p}:12"), ("slow-api", f"{p}:16"),
        ("a", f"{tmp_path}/rules.d/10-a.yaml:3"), ("b", f"{tmp_path}/rules.d/20-b.yaml:2")]
    assert config.rule_lines(c)[:2] == [
        f"1. server-errors: match status 5xx; actions tag [error], log to [redis]; then continue; at {p}:5",
        f"2. slow: match duration_ms >500; actions tag [slow]; then stop; at {p}:12"]
    rs = config.rule_set(c)
    assert rs.default_outputs == ("stdout",)
    assert load(p) == c  # compiled predicates do not spoil equality


def test_rule_errors_name_file_line_and_key_in_file_order(tmp_path: Path) -> None:
    rules_file = write(tmp_path, "rules:\n  - name: x\n    match:\n      client: 10.0.0.300/8\n"
                                 "    actions: {sample: 2}\nother: 1\n", name="rules.d/10-x.yaml")
    bad_yaml = write(tmp_path, "rules: [\n", name="rules.d/20-y.yaml")
    not_list = write(tmp_path, "rules: {name: z}\n", name="rules.d/30-z.yaml")
    p = write(tmp_path, RULES.replace("status: 5xx", "status: 6xx").replace("log: [redis]", "log: [redsi]")
              .replace("name: slow-api", "name: slow\n    mach: {}") + "  - name: x\n    actions: {drop: true}\n"
              "spool:\n  rescan_seconds: 0\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    assert list(e.value.errors) == [
        f"{p}:7: rules[0].match.status: found '6xx' (a string), expected a status (404), a class (5xx) or a range "
        "(400-499), or a list of them",
        f"{p}:10: rules[0].actions.log[0]: found unknown output 'redsi', expected one of stdout, redis; did you mean "
        "'redis'?",
        f"{p}:17: rules[2].name: found 'slow', expected a name no other rule has (rules[1] at {p}:12 is also "
        "'slow'); rename one of them",
        f"{p}:18: rules[2].mach: found unknown key 'mach', expected one of name, match, actions, continue; did you "
        "mean 'match'?",
        f"{p}:22: spool.rescan_seconds: found 0 (a whole number), expected a number of seconds > 0; correct the "
        "value, or delete the key to use the default (2.0)",
        f"{rules_file}:2: rules[0].name: found 'x', expected a name no other rule has (rules[3] at {p}:19 is also "
        "'x'); rename one of them",
        f"{rules_file}:4: rules[0].match.client: found '10.0.0.300/8' (a string), expected an address or CIDR "
        "network such as 10.0.0.0/8",
        f"{rules_file}:5: rules[0].actions.sample: found 2 (a whole number), expected a rate from 0 to 1 (the "
        "fraction of connections logged)",
        f"{rules_file}:6: other: found unknown key 'other', expected rules; delete it (a rule file holds only "
        "rules:)",
        f"{bad_yaml}:2:1: invalid YAML: while parsing a flow node (line 2), expected the node content, but found "
        "'<stream end>'",
        f"{not_list}:1: rules: found a mapping, expected a list of rules, each a mapping with name, match, actions, "
        "continue; start each rule with '- '",
    ]


RULES_DIR = [
    ("rules_dir: missing\n", ["F:1: rules_dir: found 'missing' (a string) ({d}/missing is not a directory), "
                              "expected a directory of *.yaml rule files or null; create it or correct the path"]),
    ("rules_dir: 5\n", ["F:1: rules_dir: found 5 (a whole number), expected a path (relative to the config file's "
                        f"directory) or null; {TYPE_TODO}"]),
    ("rules: {name: a}\n", ["F:1: rules: found a mapping, expected a list of rules, each a mapping with name, match, "
                            "actions, continue; start each rule with '- '"]),
    ("rules:\n  - name: a\n    actions:\n      - tag: [a]\n      - tag: [b]\n", [
        "F:5: rules[0].actions[1].tag: found tag a second time, expected each action once (first at line 4); "
        "merge them"]),
    ("rules:\n  - name: a\n    match:\n      status:\n        - 500\n        - abc\n    actions: {drop: true}\n", [
        "F:6: rules[0].match.status[1]: found 'abc' (a string), expected a status (404), a class (5xx) or a range "
        "(400-499), or a list of them"]),
    ("rules:\n  - name: a\n    actions:\n      metric:\n        name: m\n        type: counter\n"
     "        labels:\n          - route\n          - uid\n", [
         "F:9: rules[0].actions.metric.labels[1]: found 'uid', a field with one value per request or client, "
         "expected one of method, host, status_code, status_class, route, version, dst_ip, dst_port, "
         "response_content_type, reason, info_code; choose a bounded field, or set one with set:"]),
    ("rules:\n  - name: a\n", ["F:2: rules[0].actions: found nothing, expected the rule's actions, e.g. actions: "
                                "{tag: [error]}"]),
]


@pytest.mark.parametrize(("text", "expected"), RULES_DIR, ids=range(len(RULES_DIR)))
def test_rules_and_rules_dir_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert errors(write(tmp_path, text)) == [e.replace("{d}", str(tmp_path)) for e in expected]


def test_rules_dir_default_may_be_absent_and_null_reads_none(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")).rules == ()
    write(tmp_path, "rules:\n  - name: a\n    actions: {drop: true}\n", name="rules.d/a.yaml")
    assert [r.name for r in load(write(tmp_path, "")).rules] == ["a"]
    assert load(write(tmp_path, "rules_dir: null\n")).rules == ()
    assert [r.name for r in load(write(tmp_path, "rules_dir: rules.d/\n", name="x.yaml")).rules] == ["a"]


def test_redact_policy_from_the_configuration(tmp_path: Path) -> None:
    from analyzers.redact import finalize
    from analyzers.rules.model import KEEP, TxView

    c = load(write(tmp_path, "headers:\n  request: [Host, Cookie]\n  response: []\nredact:\n"
                             "  headers: [host]\n  query_params: [sid]\n  secrets: [hunter22]\n"
                             "  max_field_bytes: 64\nroutes:\n  patterns: [{match: ^/a/, route: /a}]\n"
                             "  max_routes: 1\n"))
    policy = config.redact_policy(c)
    rec = {"uri": "/b/x?sid=1&token=2", "user_agent": "hunter22 " + "x" * 80}
    out = finalize(TxView(rec, {"host": "h", "cookie": "a=1", "x": "y"}, {"server": "s"}), KEEP, policy)
    assert out == {"uri": "/b/x?sid=<redacted>&token=2", "user_agent": "<redacted> " + "x" * 53 + "<truncated>",
                   "route": "/b/x", "tags": [], "request_headers": {"host": "<redacted>", "cookie": "a=<redacted>"},
                   "response_headers": {}}
    assert [policy.routes.route(u) for u in ("/a/1", "/b/x", "/c")] == ["/a", "/b/x", "other"]  # /b/x: the 1 slot
    assert policy.stats() == {"truncated_fields": 1, "routes": 1, "route_overflow": 1}



# ---- the command line's part: load or report, overrides ---------------------------------------------------


def test_load_or_report_gives_the_path_and_config_or_writes_every_problem(tmp_path: Path) -> None:
    good = write(tmp_path, "state:\n  dir: st\n")
    err = io.StringIO()
    assert config.load_or_report(good, err) == (str(good), load(good))
    assert err.getvalue() == ""
    bad = write(tmp_path, "spool:\n  rescan_seconds: 0\nstate:\n  dir: 3\n", name="bad.yaml")
    assert config.load_or_report(bad, err) is None
    assert err.getvalue() == "".join(f"{line}\n" for line in errors(bad)).replace("F:", f"{bad}:")
    assert len(err.getvalue().splitlines()) == 2


def test_with_overrides_replace_directories_and_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = load(write(tmp_path, "outputs:\n  - {name: r, type: redis}\n  - {name: s, type: syslog}\n"))
    assert config.with_overrides(c) == c
    monkeypatch.chdir(tmp_path)
    o = config.with_overrides(c, spool="sp", state="st", output="out/http.jsonl")
    assert o == dataclasses.replace(c, spool=dataclasses.replace(c.spool, dir=tmp_path / "sp"),
                                    state=dataclasses.replace(c.state, dir=tmp_path / "st"),
                                    outputs=(JsonlOutputConfig("output", "jsonl", tmp_path / "out" / "http.jsonl"),))
    assert config.with_overrides(c, output="-").outputs == (JsonlOutputConfig("output", "jsonl", None),)
