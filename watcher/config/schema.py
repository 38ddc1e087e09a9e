"""The configuration's schema, declared as data: every key's type, default, range and meaning, once.

watcher/config/load.py reads a file against these tables, `render` prints them back, the shipped
conf/pcapwatch.yaml documents them and the tests walk them; a new key or output type is a new row
(pre-commit's clientlib works the same way). Each section or output type names the dataclass of
watcher/config/model.py it fills: what the rest of pcapwatch gets. An output type also names, as
"module:Class", the sink that writes it (watcher/sinks/): imported only when such an output is opened.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from analyzers import (
    DEFAULT_CONNECTION_BYTES,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FIELD_BYTES,
    DEFAULT_MAX_ROUTES,
    DEFAULT_QUERY_PARAMS,
    DEFAULT_REQUEST_HEADERS,
    DEFAULT_RESPONSE_HEADERS,
    DEFAULT_TOTAL_BYTES,
    RoutePattern,
)
from watcher.capture.pcapfile import MAX_SNAPLEN
from watcher.capture.pycapa import KafkaUrlError, parse_kafka_url
from watcher.capture.sources import GUNZIP_MAX_BYTES, GUNZIP_MAX_RATIO
from watcher.config.model import (
    DEFAULT_BUFFER,
    SYSLOG_FACILITIES,
    ZMQ_BIND,
    CaptureConfig,
    HeadersConfig,
    JsonlOutputConfig,
    KafkaOutputConfig,
    KafkaSourceConfig,
    LimitsConfig,
    PrometheusOutputConfig,
    RedactConfig,
    RedisOutputConfig,
    ReplayConfig,
    RoutesConfig,
    SpoolConfig,
    StateConfig,
    SyslogOutputConfig,
    ZmqOutputConfig,
)
from watcher.metrics import DEFAULT_BUCKETS_MS


class Kind(enum.Enum):
    """What a value must be; the enum's value names it in error messages."""

    INT = "a whole number"
    FLOAT = "a number"
    BOOL = "true or false"
    STR = "a string"
    PATH = "a path"
    OUTPUT_PATH = "'-' (standard output) or a file path"
    CHOICE = "one of"
    REGEX = "a regular expression"
    URL_PATH = "a URL path starting with /"
    SYSLOG_ADDRESS = "unix:/PATH, udp://HOST:PORT or tcp://HOST:PORT"
    LISTEN = "HOST:PORT (port 0: any free port)"
    REDIS_URL = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... or unix:///PATH"
    ZMQ_ENDPOINT = "tcp://HOST:PORT (port * or 0: any free port), ipc:///PATH or inproc://NAME"
    KAFKA_BROKERS = "HOST:PORT, or several separated by commas"
    KAFKA_TOPIC = "a Kafka topic name (letters, digits, '.', '_', '-')"
    KAFKA_URL = "kafka://HOST:PORT/TOPIC (several brokers separated by commas)"
    STR_LIST = "a list of non-empty strings"
    HEADER_LIST = "a list of header names"
    SECRET_LIST = "a list of strings of at least 4 characters"
    NUM_LIST = "a non-empty list of numbers > 0 in increasing order"
    MAPPINGS = "a list of mappings"


LIST_KINDS = (Kind.STR_LIST, Kind.HEADER_LIST, Kind.SECRET_LIST, Kind.NUM_LIST, Kind.MAPPINGS)
# What one element of a list kind must be, for the error at that element.
ITEM_EXPECTED = {
    Kind.STR_LIST: "a non-empty string",
    Kind.HEADER_LIST: "a header name (letters, digits and !#$%&'*+-.^_`|~)",
    Kind.SECRET_LIST: "a string of at least 4 characters (a shorter one would mask ordinary text)",
    Kind.NUM_LIST: "a number > 0, larger than the one before",
}
MIN_SECRET = 4

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"


def _port(text: str, zero: bool) -> bool:
    return text.isdigit() and (0 if zero else 1) <= int(text) <= 65535


def _syslog(text: str) -> str | None:
    if text.startswith("unix:"):
        return None if text[5:].startswith("/") else "the socket path must be absolute"
    m = re.fullmatch(rf"(udp|tcp)://({_HOST}):(\d+)", text)
    return None if m and _port(m.group(3), False) else ""


def _listen(text: str) -> str | None:
    m = re.fullmatch(rf"({_HOST}):(\d+)", text)
    return None if m and _port(m.group(2), True) else ""


def _redis(text: str) -> str | None:
    try:
        u = urllib.parse.urlsplit(text)
        port = u.port
    except ValueError as e:
        return str(e)
    if u.scheme == "unix":
        return None if u.path.startswith("/") else "the socket path must be absolute"
    if u.scheme not in ("redis", "rediss") or not u.hostname or (port is not None and port < 1):
        return ""
    return None if re.fullmatch(r"(/\d*)?", u.path) else "the database is a number, e.g. /0"


def _zmq(text: str) -> str | None:
    m = re.fullmatch(rf"tcp://({_HOST}|\*):(\d+|\*)", text)
    if m:
        return None if m.group(2) == "*" or _port(m.group(2), True) else ""
    return None if re.fullmatch(r"(ipc://.+|inproc://[^/]+)", text) else ""


def _brokers(text: str) -> str | None:
    for b in text.split(","):
        m = re.fullmatch(rf"({_HOST}):(\d+)", b.strip())
        if not m or not _port(m.group(2), False):
            return ""
    return None


def _kafka_url(text: str) -> str | None:
    try:
        parse_kafka_url(text)
    except KafkaUrlError as e:
        return "" if str(e).startswith("not a Kafka address") else str(e).split(";")[0]
    return None


def _regex(text: str) -> str | None:
    try:
        re.compile(text)
    except re.error as e:
        return f"{e.msg} at position {e.pos}"
    return None


# Checks of the string kinds: None when the text is valid, else why not ("" when the expected
# form says it all).
FORMATS: Mapping[Kind, Callable[[str], str | None]] = {
    Kind.REGEX: _regex,
    Kind.URL_PATH: lambda t: None if t.startswith("/") and not re.search(r"[\s?#]", t) else "",
    Kind.SYSLOG_ADDRESS: _syslog,
    Kind.LISTEN: _listen,
    Kind.REDIS_URL: _redis,
    Kind.ZMQ_ENDPOINT: _zmq,
    Kind.KAFKA_BROKERS: _brokers,
    Kind.KAFKA_URL: _kafka_url,
    Kind.KAFKA_TOPIC: lambda t: None if re.fullmatch(r"[A-Za-z0-9._-]{1,249}", t) else "",
}


def header_name(text: str) -> bool:
    return bool(_TOKEN.match(text))


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
    secret: bool = False  # `check` prints it masked
    items: tuple[Key, ...] = ()  # MAPPINGS: the keys of each element
    make: Callable[..., object] | None = None  # MAPPINGS: the dataclass of each element

    def expected(self) -> str:
        """The allowed values, as the `expected ...` part of an error line."""
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices) + (" or null" if self.nullable else "")
        if self.kind is Kind.MAPPINGS:
            return f"a list of mappings, each with {', '.join(k.name for k in self.items)}"
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


def _num(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


@dataclass(frozen=True, slots=True)
class Section:
    """A top-level mapping of fixed keys, built into the dataclass `make`."""

    name: str
    doc: str
    keys: tuple[Key, ...]
    make: Callable[..., object]


@dataclass(frozen=True, slots=True)
class ItemType:
    """One `type:` of a typed list: the keys it adds to the common ones, its dataclass, and for an
    output the sink that writes it ("module:Class", imported by watcher.sinks.open_sink, only then)."""

    doc: str
    keys: tuple[Key, ...]
    make: Callable[..., object]
    sink: str


@dataclass(frozen=True, slots=True)
class TypedList:
    """A top-level list of named items whose `type` chooses their keys (outputs)."""

    name: str
    doc: str
    item: str  # what one element is called in messages
    common: tuple[Key, ...]  # keys of every item, `name` and `type` first
    types: Mapping[str, ItemType]
    default: tuple[Mapping[str, object], ...]


@dataclass(frozen=True, slots=True)
class Scalar:
    """A top-level key with a single value."""

    key: Key

    @property
    def name(self) -> str:
        return self.key.name


@dataclass(frozen=True, slots=True)
class RuleList:
    """The top-level list of analyzer rules; analyzers.rules.compile checks each rule's keys."""

    name: str
    doc: str


OUTPUT_TYPES: Mapping[str, ItemType] = {
    "jsonl": ItemType("one JSON record per line, to a file or standard output", (
        Key("path", Kind.OUTPUT_PATH, "-", "file the records are appended to; '-' is standard output; "
            "the file is reopened on SIGHUP (for logrotate)"),
        Key("format", Kind.CHOICE, "flat", "flat: the record of `pcapwatch read`; ecs: Elastic Common Schema "
            "names (@timestamp, source.ip, url.path, http.response.status_code, ...)", choices=("flat", "ecs")),
    ), JsonlOutputConfig, "watcher.sinks.jsonl:JsonlSink"),
    "syslog": ItemType("RFC 5424 messages (the JSON record as the message) with reconnect", (
        Key("address", Kind.SYSLOG_ADDRESS, "unix:/dev/log", "where the syslog daemon listens"),
        Key("facility", Kind.CHOICE, "local0", "the messages' facility", choices=SYSLOG_FACILITIES),
        Key("app_name", Kind.STR, "pcapwatch", "APP-NAME of each message (what rsyslog's $programname sees)"),
        Key("hostname", Kind.STR, None, "HOSTNAME of each message; null: this machine's name", nullable=True),
    ), SyslogOutputConfig, "watcher.sinks.syslog:SyslogSink"),
    "prometheus": ItemType("an HTTP /metrics endpoint for Prometheus", (
        Key("listen", Kind.LISTEN, "127.0.0.1:9477", "address the endpoint listens on"),
        Key("path", Kind.URL_PATH, "/metrics", "URL path of the metrics"),
        Key("buckets_ms", Kind.NUM_LIST, DEFAULT_BUCKETS_MS, "histogram buckets for durations and ttfb",
            unit="milliseconds"),
    ), PrometheusOutputConfig, "watcher.sinks.prometheus_sink:PrometheusSink"),
    "redis": ItemType("records to a Redis stream (XADD, MAXLEN ~) or channel (PUBLISH), batched", (
        Key("url", Kind.REDIS_URL, "redis://127.0.0.1:6379/0", "the Redis server", secret=True),
        Key("mode", Kind.CHOICE, "stream", "stream: XADD to a stream; publish: PUBLISH on a channel",
            choices=("stream", "publish")),
        Key("key", Kind.STR, "pcapwatch:http", "the stream's key, or the channel's name"),
        Key("maxlen", Kind.INT, 100000, "approximate length the stream is trimmed to (MAXLEN ~)", minimum=1),
        Key("batch", Kind.INT, 100, "records sent per pipelined round trip", minimum=1),
        Key("backoff_max_seconds", Kind.FLOAT, 30.0, "longest wait between reconnection attempts (exponential "
            "backoff with jitter)", unit="seconds", above=0),
    ), RedisOutputConfig, "watcher.sinks.redis_sink:RedisSink"),
    "zmq": ItemType("a ZeroMQ PUB socket: a live tap for `pcapwatch tail`", (
        Key("bind", Kind.ZMQ_ENDPOINT, ZMQ_BIND, "endpoint the PUB socket binds"),
        Key("per_message", Kind.BOOL, False, "also publish each request (topic `in`) and response (topic `out`) "
            "as it completes"),
    ), ZmqOutputConfig, "watcher.sinks.zmq_sink:ZmqSink"),
    "kafka": ItemType("records as messages of a Kafka topic (confluent-kafka: pip install 'pcapwatch[kafka]')", (
        Key("brokers", Kind.KAFKA_BROKERS, "127.0.0.1:9092", "the brokers to start from (bootstrap.servers)"),
        Key("topic", Kind.KAFKA_TOPIC, "pcapwatch-http", "the topic the records go to (it must exist)"),
        Key("key", Kind.CHOICE, "uid", "each message's key: uid (a connection's records in one partition, in "
            "order) or event_id", choices=("uid", "event_id")),
        Key("format", Kind.CHOICE, "flat", "the message's JSON: flat (the record of `pcapwatch read`) or ecs "
            "(Elastic Common Schema names)", choices=("flat", "ecs")),
        Key("compression", Kind.CHOICE, "none", "compression of the messages",
            choices=("none", "gzip", "snappy", "lz4", "zstd")),
        Key("acks", Kind.CHOICE, "all", "acknowledgements a write waits for (Kafka's acks): all (every in-sync "
            "replica, acks=all), leader (acks=1), none (acks=0: a lost write is not seen)",
            choices=("all", "leader", "none")),
        Key("batch", Kind.INT, 500, "records sent before waiting for their delivery reports", minimum=1),
        Key("backoff_max_seconds", Kind.FLOAT, 30.0, "longest wait between retries while the brokers are away "
            "(exponential backoff with jitter)", unit="seconds", above=0),
    ), KafkaOutputConfig, "watcher.sinks.kafka_sink:KafkaSink"),
}

RULE_KEYS = ("name", "match", "actions", "continue")

SCHEMA: tuple[Section | TypedList | Scalar | RuleList, ...] = (
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
        Key("name", Kind.STR, None, "names the output in logs, counters and rules", required=True,
            hint="give the output a name no other output has, e.g. name: stdout"),
        Key("type", Kind.CHOICE, None, "what kind of output", choices=tuple(OUTPUT_TYPES), required=True,
            hint="set the type, e.g. type: jsonl"),
        Key("default", Kind.BOOL, True, "records no rule sends elsewhere go to every output with default: true"),
        Key("buffer", Kind.INT, DEFAULT_BUFFER, "records held while the output is slow or down; past it new "
            "records are dropped and counted (the newest: those held are older and on their way)", minimum=1),
        Key("required", Kind.BOOL, False, "never drop: when the buffer is full, analysis waits for this output "
            "(the capture files wait in the spool, the lag grows and is warned about) and the checkpoint never "
            "passes a record it has not written"),
    ), OUTPUT_TYPES, ({"name": "stdout", "type": "jsonl", "path": "-"},)),
    Section("limits", "bounds on memory", (
        Key("max_connections", Kind.INT, DEFAULT_MAX_CONNECTIONS, "connections tracked at once; past it "
            "the least recently active are evicted", minimum=1),
        Key("idle_timeout", Kind.FLOAT, DEFAULT_IDLE_TIMEOUT, "close a connection idle this long (capture time)",
            unit="seconds", above=0),
        Key("queue_batches", Kind.INT, 16, "frame batches buffered between the reader thread and the "
            "analyzer", minimum=1),
        Key("pcap_connection_bytes", Kind.INT, DEFAULT_CONNECTION_BYTES, "packets kept per connection for rules "
            "with a pcap action (only then); past it the oldest are let go, the handshake kept", unit="bytes",
            minimum=1),
        Key("pcap_total_bytes", Kind.INT, DEFAULT_TOTAL_BYTES, "packets kept for pcap actions, all connections "
            "together; past it the least recently active connection's are let go (counted)", unit="bytes",
            minimum=1),
        Key("gunzip_max_bytes", Kind.INT, GUNZIP_MAX_BYTES, "a gzip capture file (tcpdump -z gzip) may expand "
            "to this much; past it the rest of the file is skipped, named in the log (a decompression bomb)",
            unit="bytes", minimum=1),
        Key("gunzip_max_ratio", Kind.FLOAT, GUNZIP_MAX_RATIO, "a gzip capture file may expand this many times "
            "its compressed size (judged past its first 64 MiB); captures compress 3 to 10 times; past it the "
            "rest of the file is skipped, named in the log", minimum=1),
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
    Section("kafka", "`pcapwatch run` reading packets from a Kafka topic, as one of a consumer group", (
        Key("source", Kind.KAFKA_URL, None, "a topic of packets in pycapa's format to read instead of the spool, "
            "sharing its partitions with the other members of `group`; null: the spool", nullable=True),
        Key("group", Kind.STR, "pcapwatch", "the consumer group: its members share the topic's partitions"),
        Key("linktype", Kind.INT, 1, "link type of the frames on the topic (1: Ethernet)", minimum=0,
            maximum=65535),
        Key("session_timeout_seconds", Kind.FLOAT, 10.0, "a member silent this long is taken for dead and its "
            "partitions go to the others", unit="seconds", above=0),
    ), KafkaSourceConfig),
    Section("headers", "the allow-list of logged headers (like Packetbeat's send_headers)", (
        Key("request", Kind.HEADER_LIST, DEFAULT_REQUEST_HEADERS, "request headers logged in request_headers"),
        Key("response", Kind.HEADER_LIST, DEFAULT_RESPONSE_HEADERS, "response headers logged in "
            "response_headers"),
    ), HeadersConfig),
    Section("redact", "what is masked in every record", (
        Key("headers", Kind.HEADER_LIST, (), "headers whose values are masked whole (Authorization, "
            "Proxy-Authorization, Cookie and Set-Cookie are always masked, keeping scheme and cookie names)"),
        Key("query_params", Kind.STR_LIST, DEFAULT_QUERY_PARAMS, "query parameters whose values are masked in "
            "uri, referrer and URL headers"),
        Key("secrets", Kind.SECRET_LIST, (), "literal strings masked wherever they appear", secret=True),
        Key("max_field_bytes", Kind.INT, DEFAULT_MAX_FIELD_BYTES, "longer strings are cut and end in "
            "<truncated>", unit="bytes", minimum=64),
    ), RedactConfig),
    Section("routes", "route templates: bounded metric labels from request paths", (
        Key("patterns", Kind.MAPPINGS, (), "explicit routes, tried in order before the automatic templating: "
            "a path matching `match` (a regex, searched) is labelled `route`", items=(
                Key("match", Kind.REGEX, None, "regex searched in the request path", required=True,
                    hint="write the regex, e.g. match: '^/api/v1/search'"),
                Key("route", Kind.STR, None, "the label, as written", required=True,
                    hint="write the label, e.g. route: /api/v1/search"),
            ), make=RoutePattern),
        Key("max_routes", Kind.INT, DEFAULT_MAX_ROUTES, "distinct routes at most; the rest are labelled other "
            "(and counted)", minimum=1),
    ), RoutesConfig),
    Section("replay", "the allow-list of replay targets (README \"Replay\")", (
        Key("targets", Kind.STR_LIST, (), "URLs (http://HOST[:PORT]) rules' replay actions may send requests to; "
            "a replay action naming another target is refused at load"),
    ), ReplayConfig),
    Scalar(Key("strings", Kind.CHOICE, "utf8", "how text from the wire (URIs, header values, reason phrases) is "
               "written: utf8 keeps valid UTF-8 as text (UTF-8 in every output), ascii writes every byte that is "
               "not printable ASCII as \\xNN (7-bit JSON, as before); in both, invalid UTF-8, control characters "
               "and \\ are \\xNN",
               choices=("utf8", "ascii"))),
    Scalar(Key("rules_dir", Kind.PATH, "rules.d", "directory of rule files (*.yaml, each `rules: [...]`), read in "
               "name order after the rules below; null: none", nullable=True)),
    RuleList("rules", "analyzer rules, in order: the first that matches decides unless it says continue: true"),
)
