"""The flat record in Elastic Common Schema names, so Kibana's and Filebeat's HTTP views work unchanged.

Fields ECS defines get their ECS name (`source.ip`, `url.path`, `http.response.status_code`,
`event.duration` in nanoseconds...); pcapwatch's own fields (uid, flags, anomalies, ttfb...) go under
`pcapwatch.*`, the way Filebeat's Zeek module keeps `zeek.http.trans_depth`; any other field (a rule's
`set`, the templated `route`) becomes a `labels.*` keyword. Absent values are left out, not null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from watcher.sinks.base import Record
from watcher.sinks.jsontext import encode

ECS_VERSION = "8.11.0"

# Flat fields that are pcapwatch's own, kept under `pcapwatch.*` with their flat names.
OWN_FIELDS = ("uid", "trans_depth", "ttfb_ms", "status_msg", "info_code", "flags", "anomalies", "reason",
              "pcap_file")
# Flat fields mapped to ECS names by `to_ecs` itself.
MAPPED = frozenset({"ts", "event_id", "src_ip", "src_port", "dst_ip", "dst_port", "method", "host", "uri",
                    "version", "user_agent", "referrer", "request_body_len", "status_code",
                    "response_body_len", "response_content_type", "duration_ms", "request_headers",
                    "response_headers", "tags", "route", "message", "level", "rule", *OWN_FIELDS})


def to_ecs(r: Record) -> dict[str, Any]:
    """One flat record (transaction or alert) as a nested ECS document."""
    alert = r.get("level") is not None
    status = r.get("status_code")
    doc: dict[str, Any] = {
        "@timestamp": timestamp(r.get("ts")),
        "ecs": {"version": ECS_VERSION},
        "message": r.get("message"),
        "log": {"level": r.get("level")},
        "rule": {"name": r.get("rule")} if isinstance(r.get("rule"), str) else None,
        "event": {
            "id": r.get("event_id"),
            "kind": "alert" if alert else "event",
            "category": ["network", "web"],
            "type": ["access", "protocol"],
            "dataset": "pcapwatch.http",
            "duration": None if r.get("duration_ms") is None else round(r["duration_ms"] * 1_000_000),
            "outcome": None if alert else "unknown" if status is None else "success" if status < 400 else "failure",
        },
        "source": {"ip": r.get("src_ip"), "port": r.get("src_port")},
        "destination": {"ip": r.get("dst_ip"), "port": r.get("dst_port")},
        "network": {"transport": "tcp", "protocol": "http",
                    "type": None if r.get("src_ip") is None else "ipv6" if ":" in r["src_ip"] else "ipv4"},
        "url": url_fields(r.get("uri"), r.get("host")),
        "http": {
            "version": r.get("version"),
            "request": {"method": r.get("method"), "referrer": r.get("referrer"),
                        "body": {"bytes": r.get("request_body_len")}, "headers": r.get("request_headers")},
            "response": {"status_code": status, "mime_type": r.get("response_content_type"),
                         "body": {"bytes": r.get("response_body_len")}, "headers": r.get("response_headers")},
        },
        "user_agent": {"original": r.get("user_agent")},
        "tags": r.get("tags"),
        "labels": {"route": r.get("route"),
                   **{k: v if isinstance(v, str) else encode(v) for k, v in r.items() if k not in MAPPED}},
        "pcapwatch": {k: r.get(k) for k in OWN_FIELDS},
    }
    return prune(doc)


def timestamp(ts: float | None) -> str:
    """ISO 8601 UTC with microseconds; now when the record has no time (an alert)."""
    t = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def url_fields(uri: str | None, host: str | None) -> dict[str, Any]:
    """url.original as sent; path and query for origin-form and absolute-form targets; domain and
    port from the Host header (without a port when it has none)."""
    out: dict[str, Any] = {"original": uri}
    if uri is not None and (uri.startswith("/") or "://" in uri):
        if uri.startswith("/"):
            path, q, query = uri.partition("?")
            out["path"] = path
            out["query"] = query if q else None
        else:
            try:
                parts = urlsplit(uri)
            except ValueError:
                parts = None
            if parts is not None:
                out["path"] = parts.path or "/"
                out["query"] = parts.query if "?" in uri else None
                host = host or parts.netloc or None
    if host:
        domain, port = split_host(host)
        out["domain"] = domain
        out["port"] = port
    return out


def split_host(host: str) -> tuple[str, int | None]:
    """`example.com:8080` -> (example.com, 8080); `[::1]:80` -> (::1, 80); no port -> (host, None)."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        return addr, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, int(port)
    return host, None


def prune(value: Any) -> Any:
    """Drop None and empty containers, recursively: ECS documents leave absent fields out."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    return value
