"""The configuration file: read with YAML safe-load semantics, checked against `schema.SCHEMA`,
errors that point to the line.

Every key's type, default, range and meaning is written once, in watcher/config/schema.py; loading, the
error messages, `render` and the tests all read it, so a new key or output type is a new row
(pre-commit's clientlib works the same way). The file is read with YAML safe-load semantics only
(SafeLoader's composer and SafeConstructor), but the node tree is walked by watcher.config.yaml_lines so
that every value keeps its line, every problem in the file is reported at once, and keys that are
unknown or written twice are errors instead of being silently dropped (watcher.config.check).
Analyzer rules, from the file and from rules_dir's files, are checked by analyzers.rules.compile
with the same lines and the same style.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import yaml  # type: ignore[import-untyped, unused-ignore]

from analyzers import REDACTED, Policy, RouteTemplater, RuleSet
from watcher.capture.pcapfile import MAX_SNAPLEN
from watcher.config.check import ConfigError, _Checker
from watcher.config.model import (
    CaptureConfig,
    Config,
    HeadersConfig,
    JsonlOutputConfig,
    KafkaOutputConfig,
    LimitsConfig,
    OutputConfig,
    PrometheusOutputConfig,
    RedactConfig,
    RedisOutputConfig,
    RoutesConfig,
    SpoolConfig,
    StateConfig,
    SyslogOutputConfig,
    ZmqOutputConfig,
)
from watcher.config.schema import OUTPUT_TYPES, SCHEMA, ItemType, Key, Kind, RuleList, Scalar, Section, TypedList
from watcher.config.yaml_lines import FileError, Reader, compose

__all__ = ["MAX_SNAPLEN", "OUTPUT_TYPES", "SCHEMA", "CaptureConfig", "Config", "ConfigError", "HeadersConfig",
           "ItemType", "JsonlOutputConfig", "KafkaOutputConfig", "Key", "Kind", "LimitsConfig", "OutputConfig",
           "PrometheusOutputConfig",
           "RedactConfig", "RedisOutputConfig", "RoutesConfig", "RuleList", "Scalar", "Section", "SpoolConfig",
           "StateConfig", "SyslogOutputConfig", "TypedList", "ZmqOutputConfig", "default_config_path", "load",
           "load_or_report", "redact_policy", "render", "rule_lines", "rule_set", "with_overrides"]

CONFIG_ENV = "PCAPWATCH_CONFIG"
CONFIG_NAME = "pcapwatch.yaml"
_REPO_CONFIG = Path(__file__).resolve().parents[2] / "conf" / CONFIG_NAME
_ETC_CONFIG = Path("/etc/pcapwatch") / CONFIG_NAME
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
    """Read and validate one configuration file and its rules_dir; raise ConfigError listing every
    problem found, in file order (the configuration, then the rule files by name) and line order."""
    name = os.fspath(path)
    try:
        root = compose(name, "the configuration")
    except FileError as e:
        raise ConfigError([str(e)]) from None
    reader = Reader(name)
    raw = reader.value(root, ()) if root is not None else None
    return _Checker(reader, Path(os.path.abspath(name))).config(raw)


def load_or_report(path: str | os.PathLike[str] | None, err: TextIO) -> tuple[str, Config] | None:
    """(path, config) of `path`, or of the default file when None; None after writing every problem
    to `err`, one line each."""
    name = os.fspath(path or default_config_path())
    try:
        return name, load(name)
    except ConfigError as e:
        err.write("".join(f"{line}\n" for line in e.errors))
        return None


def with_overrides(config: Config, *, spool: str | None = None, state: str | None = None,
                   output: str | None = None) -> Config:
    """The configuration with the command line's options, which win over the file: `spool` and
    `state` replace the directories; `output` (a file, or - for standard output) replaces every
    output with one jsonl output. Paths are made absolute."""
    if spool:
        config = dataclasses.replace(config, spool=dataclasses.replace(config.spool, dir=Path(spool).resolve()))
    if state:
        config = dataclasses.replace(config, state=dataclasses.replace(config.state, dir=Path(state).resolve()))
    if output:
        out = None if output == "-" else Path(output).resolve()
        config = dataclasses.replace(config, outputs=(JsonlOutputConfig("output", "jsonl", out),))
    return config


def rule_set(config: Config) -> RuleSet:
    """The configuration's rules ready to evaluate; `log: true` means the outputs with default: true."""
    return RuleSet(config.rules, [o.name for o in config.outputs if o.default])


def redact_policy(config: Config) -> Policy:
    """The headers allow-list, masking, field cap and route templating of the configuration."""
    return Policy(config.headers.request, config.headers.response, config.redact.headers,
                  config.redact.query_params, config.redact.secrets, config.redact.max_field_bytes,
                  RouteTemplater(config.routes.patterns, config.routes.max_routes))


def render(config: Config, reveal: bool = False) -> str:
    """The effective configuration as YAML: every key, defaults filled in, paths absolute. Secrets
    (redact.secrets, a password in a Redis URL) are masked unless `reveal`. The rules are not
    repeated: `rule_lines` lists them compiled."""
    data: dict[str, object] = {}
    for entry in SCHEMA:
        value = getattr(config, entry.name)
        if isinstance(entry, Section):
            data[entry.name] = {k.name: _dump(k, getattr(value, k.name), reveal) for k in entry.keys}
        elif isinstance(entry, TypedList):
            data[entry.name] = [{k.name: _dump(k, getattr(item, k.name), reveal)
                                 for k in entry.common + entry.types[item.type].keys} for item in value]
        elif isinstance(entry, Scalar):
            data[entry.name] = _dump(entry.key, value, reveal)
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def rule_lines(config: Config) -> list[str]:
    """One line per compiled rule, in evaluation order: name, match, actions, continue, FILE:LINE."""
    return [f"{i}. {rule.describe()}" for i, rule in enumerate(config.rules, 1)]


def _dump(key: Key, value: object, reveal: bool) -> object:
    if key.kind is Kind.OUTPUT_PATH and value is None:
        return "-"
    if key.kind is Kind.MAPPINGS:
        return [{k.name: _dump(k, getattr(item, k.name), reveal) for k in key.items} for item in value]  # type: ignore[attr-defined]
    if key.secret and not reveal:
        if isinstance(value, tuple):
            return [REDACTED] * len(value)
        if isinstance(value, str) and key.kind is Kind.REDIS_URL:
            return _mask_url_password(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value) if isinstance(value, Path) else value


def _mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
