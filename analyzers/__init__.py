"""Pure analysis core: frames in, HTTP transactions and decisions out.

Nothing in this package opens files or sockets, starts threads or reads clocks; every function
takes bytes and capture timestamps and returns events, so all of it can be tested by feeding bytes.
`watcher` uses it only through the names below; inside, `tcp/` (decoding, reassembly) knows nothing
of `http/` (heads, framing, parser, transactions), and `rules/` compiles and evaluates rules.
"""

from analyzers.faults import AnalysisError
from analyzers.flows import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from analyzers.http.anomalies import Anomaly
from analyzers.http.body_keep import DEFAULT_BODY_LIMIT, BodyKeep
from analyzers.http.head import Headers, RequestHead, ResponseHead, header
from analyzers.http.messages import Endpoints, Message, Transaction
from analyzers.http.resync import NotHttp
from analyzers.http.text import Strings, ascii_text
from analyzers.identities import START_UNKNOWN, Identity
from analyzers.packet_keep import DEFAULT_CONNECTION_BYTES, DEFAULT_TOTAL_BYTES, HANDSHAKE_PACKETS, Packet
from analyzers.pipeline import Pipeline, split_records
from analyzers.records import ascii_headers, record_anomalies, record_flags, to_record
from analyzers.redact import (
    DEFAULT_MAX_FIELD_BYTES,
    DEFAULT_QUERY_PARAMS,
    DEFAULT_REQUEST_HEADERS,
    DEFAULT_RESPONSE_HEADERS,
    REDACTED,
    Policy,
    finalize,
)
from analyzers.routes import DEFAULT_MAX_ROUTES, RoutePattern, RouteTemplater
from analyzers.rules.compile import parse_rules
from analyzers.rules.engine import RuleSet, compile_rules
from analyzers.rules.model import Pcap, RawRule, Replay, Rule, RuleError, TxView, describe
from analyzers.shard import Router
from analyzers.tcp.frames import RecordLayout

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "DEFAULT_CONNECTION_BYTES",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_FIELD_BYTES",
    "DEFAULT_MAX_ROUTES",
    "DEFAULT_QUERY_PARAMS",
    "DEFAULT_REQUEST_HEADERS",
    "DEFAULT_RESPONSE_HEADERS",
    "DEFAULT_TOTAL_BYTES",
    "HANDSHAKE_PACKETS",
    "REDACTED",
    "START_UNKNOWN",
    "AnalysisError",
    "Anomaly",
    "BodyKeep",
    "Endpoints",
    "Headers",
    "Identity",
    "Message",
    "NotHttp",
    "Packet",
    "Pcap",
    "Pipeline",
    "Policy",
    "RawRule",
    "RecordLayout",
    "Replay",
    "RequestHead",
    "ResponseHead",
    "RoutePattern",
    "RouteTemplater",
    "Router",
    "Rule",
    "RuleError",
    "RuleSet",
    "Strings",
    "Transaction",
    "TxView",
    "ascii_headers",
    "ascii_text",
    "compile_rules",
    "describe",
    "finalize",
    "header",
    "parse_rules",
    "record_anomalies",
    "record_flags",
    "split_records",
    "to_record",
]
