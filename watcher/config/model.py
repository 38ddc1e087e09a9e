"""The validated configuration as the rest of pcapwatch gets it: frozen, typed, defaults filled in,
paths absolute. watcher/config/schema.py declares each key (type, default, range, meaning) and which of
these dataclasses it fills; watcher/config/load.py builds them from a file. An output's sink
(watcher/sinks/) takes its `*OutputConfig` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from analyzers import (
    DEFAULT_MAX_FIELD_BYTES,
    DEFAULT_MAX_ROUTES,
    DEFAULT_QUERY_PARAMS,
    DEFAULT_REQUEST_HEADERS,
    DEFAULT_RESPONSE_HEADERS,
    RoutePattern,
    Rule,
)
from watcher.capture.sources import GUNZIP_MAX_BYTES, GUNZIP_MAX_RATIO
from watcher.metrics import DEFAULT_BUCKETS_MS

# Records buffered per output before new ones are dropped (and counted): about 10 s of a busy
# site's traffic, a few tens of MB at most; a minute of it while an output restarts.
DEFAULT_BUFFER = 10_000
# The zmq output's endpoint when the config names none, and so where `pcapwatch tail` connects.
ZMQ_BIND = "tcp://127.0.0.1:5556"
SYSLOG_FACILITIES = ("local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7", "daemon",
                     "user")


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
    """The keys every output has; each output type adds its own in a subclass. `default`: records
    no rule routes elsewhere go here; `buffer`: records held while the output is slow or down;
    `required`: never drop, the pipeline waits for it instead."""

    name: str
    type: str
    default: bool = field(default=True, kw_only=True)
    buffer: int = field(default=DEFAULT_BUFFER, kw_only=True)
    required: bool = field(default=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class JsonlOutputConfig(OutputConfig):
    """One JSON record per line; `path` None means standard output (written `-`)."""

    path: Path | None
    format: str = "flat"  # flat | ecs


@dataclass(frozen=True, slots=True)
class SyslogOutputConfig(OutputConfig):
    """RFC 5424 messages to a unix socket or a UDP/TCP address; `hostname` None: this machine's."""

    address: str = "unix:/dev/log"
    facility: str = "local0"
    app_name: str = "pcapwatch"
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class PrometheusOutputConfig(OutputConfig):
    """An HTTP endpoint Prometheus scrapes."""

    listen: str = "127.0.0.1:9477"
    path: str = "/metrics"
    buckets_ms: tuple[float, ...] = DEFAULT_BUCKETS_MS


@dataclass(frozen=True, slots=True)
class RedisOutputConfig(OutputConfig):
    """Records appended to a Redis stream, or published on a channel."""

    url: str = "redis://127.0.0.1:6379/0"
    mode: str = "stream"  # stream | publish
    key: str = "pcapwatch:http"
    maxlen: int = 100000
    batch: int = 100
    backoff_max_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class KafkaOutputConfig(OutputConfig):
    """Records as messages of a Kafka topic: keyed by `uid` (a connection's records in one partition,
    in order) or `event_id`; the value the record's JSON, flat or ECS."""

    brokers: str = "127.0.0.1:9092"  # HOST:PORT[,HOST:PORT...]
    topic: str = "pcapwatch-http"
    key: str = "uid"  # uid | event_id
    format: str = "flat"  # flat | ecs
    compression: str = "none"  # none | gzip | snappy | lz4 | zstd
    acks: str = "all"  # all | leader | none (Kafka's acks=all, 1, 0)
    batch: int = 500
    backoff_max_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ZmqOutputConfig(OutputConfig):
    """A ZeroMQ PUB socket: `[topic, json]` per transaction (and per message when per_message)."""

    bind: str = ZMQ_BIND
    per_message: bool = False


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds on memory: tracked connections, their idle lifetime, buffered frame batches, how far
    a gzip capture file may expand."""

    max_connections: int
    idle_timeout: float
    queue_batches: int
    pcap_connection_bytes: int
    pcap_total_bytes: int
    gunzip_max_bytes: int = GUNZIP_MAX_BYTES
    gunzip_max_ratio: float = GUNZIP_MAX_RATIO


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """How `pcapwatch run --capture` starts tcpdump."""

    file_mb: int
    files: int
    snaplen: int
    bpf: str
    user: str | None


@dataclass(frozen=True, slots=True)
class KafkaSourceConfig:
    """`pcapwatch run` reading packets from a Kafka topic (pycapa's format) as a member of a consumer
    group, instead of from the spool, when `source` is set."""

    source: str | None = None  # kafka://HOST:PORT/TOPIC
    group: str = "pcapwatch"
    linktype: int = 1
    session_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class HeadersConfig:
    """The allow-list: only these headers (lower-case names) are logged."""

    request: tuple[str, ...] = DEFAULT_REQUEST_HEADERS
    response: tuple[str, ...] = DEFAULT_RESPONSE_HEADERS


@dataclass(frozen=True, slots=True)
class RedactConfig:
    """What is masked in every record, beyond the credential and cookie headers (always masked)."""

    headers: tuple[str, ...] = ()
    query_params: tuple[str, ...] = DEFAULT_QUERY_PARAMS
    secrets: tuple[str, ...] = ()
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES


@dataclass(frozen=True, slots=True)
class RoutesConfig:
    """Route templating for metric labels: explicit patterns first, then automatic; a hard cap."""

    patterns: tuple[RoutePattern, ...] = ()
    max_routes: int = DEFAULT_MAX_ROUTES


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Where rules' replay actions may send requests: nothing is replayed to a target not listed."""

    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; `source` is the file it came from (absolute). `rules`:
    those of the file, then those of rules_dir's files in name order, compiled."""

    spool: SpoolConfig
    state: StateConfig
    outputs: tuple[OutputConfig, ...]
    limits: LimitsConfig
    capture: CaptureConfig
    kafka: KafkaSourceConfig = KafkaSourceConfig()
    headers: HeadersConfig = HeadersConfig()
    redact: RedactConfig = RedactConfig()
    routes: RoutesConfig = RoutesConfig()
    replay: ReplayConfig = ReplayConfig()
    strings: str = "utf8"  # utf8 | ascii: how wire text is written (analyzers.Strings)
    rules_dir: Path | None = None
    rules: tuple[Rule, ...] = ()
    source: Path | None = None
