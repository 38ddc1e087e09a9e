"""The service's own health as metric families: what it read, lost and dropped, and how far it is
behind tcpdump. The service fills a `Health` on its main loop; the Prometheus output reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analyzers import Anomaly, NotHttp

Labels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric in a snapshot. `samples` for counters and gauges; for histograms `series` holds
    (label values, cumulative bucket counts ending with +Inf, sum) and `buckets` the upper bounds."""

    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: Labels = ()
    samples: tuple[tuple[Labels, float], ...] = ()
    buckets: tuple[float, ...] = ()
    series: tuple[tuple[Labels, tuple[int, ...], float], ...] = ()


@dataclass(frozen=True, slots=True)
class Health:
    """The service's own state at scrape time, from the owner's callback."""

    files: int = 0  # capture files read to the end
    files_lost: int = 0  # overwritten by tcpdump's ring before they were read
    lost_bytes: int = 0
    files_unreadable: int = 0  # found unreadable (permissions), once per file until readable
    files_unreadable_now: int = 0  # unreadable at the last scan, tried again at every scan
    spool_unlistable: int = 0  # 1 while the spool directory cannot be listed (missing, permissions)
    files_failed: int = 0  # read up to a corrupt spot (or a gzip bomb's limit), the rest skipped
    packets: int = 0
    bytes: int = 0  # capture bytes read
    lag_bytes: int = 0  # capture on disk not read yet
    lag_seconds: float = 0.0  # age of the last packet analysed while anything is unread
    connections: int = 0  # TCP connections tracked since start
    connections_active: int = 0
    connections_evicted: int = 0
    analysis_errors: int = 0  # packets whose analysis raised: each cost its connection (internal_error)
    gaps: int = 0  # holes in TCP streams (lost packets)
    routes: int = 0  # distinct route labels handed out (analyzers.routes.RouteTemplater.stats)
    route_overflow: int = 0  # request targets sent to the `other` route past the cap
    anomalies: Mapping[str, int] = field(default_factory=dict)  # by name
    not_http: Mapping[str, int] = field(default_factory=dict)  # connections not HTTP, by kind (tls, http2, other)
    pipeline_overflow: int = 0  # requests written unanswered past the per-connection bound
    outputs: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # Sink.stats() by output name
    rule_errors: Mapping[str, int] = field(default_factory=dict)  # by rule name
    queue_depth: int = 0  # frame batches between the reader thread and the analyser
    queue_capacity: int = 0
    checkpoint_age_seconds: float | None = None  # None: no checkpoint written yet
    kept_bytes: int = 0  # packets kept for pcap actions (analyzers.packet_keep)
    kept_let_go: Mapping[str, int] = field(default_factory=dict)  # packets let go, by the bound that did
    delivery: Mapping[str, int] = field(default_factory=dict)  # watcher.run.delivery.DeliveryCounters
    replay: tuple[Family, ...] = ()  # the replay client's families (watcher.replay.actions)
    kafka: Mapping[str, int] = field(default_factory=dict)  # run --source kafka://: watcher.run.group.GroupCounters
    # The pipeline's counters `read --stats` gives under tcp, connections and ip_fragments (those
    # not exported above), by name; and the bytes TCP reassembly holds now.
    tcp: Mapping[str, int] = field(default_factory=dict)
    connection_events: Mapping[str, int] = field(default_factory=dict)
    ip_fragments: Mapping[str, int] = field(default_factory=dict)
    tcp_buffered_bytes: int = 0

    @classmethod
    def from_pipeline(cls, stats: Mapping[str, Any], **rest: Any) -> Health:
        """The pipeline's share from `Pipeline.stats()`; the service adds the rest by keyword."""
        conns = stats.get("connections", {})
        kept = stats.get("packets_kept") or {}
        tcp = stats.get("tcp", {})
        return cls(packets=stats.get("frames", 0), connections=conns.get("connections", 0),
                   connections_active=conns.get("active", 0), connections_evicted=conns.get("evicted", 0),
                   analysis_errors=conns.get("internal_errors", 0),
                   gaps=stats.get("tcp", {}).get("gaps", 0), anomalies=dict(stats.get("anomalies", {})),
                   not_http=dict(stats.get("http", {}).get("not_http", {})),
                   pipeline_overflow=stats.get("http", {}).get("pipeline_overflow", 0),
                   kept_bytes=kept.get("held_bytes", 0),
                   kept_let_go={"connection_bytes": kept.get("let_go", 0), "total_bytes": kept.get("evicted", 0)},
                   tcp={k: v for k, v in tcp.items() if k not in TCP_NOT_EVENTS},
                   connection_events={k: v for k, v in conns.items() if k not in CONNECTIONS_NOT_EVENTS},
                   ip_fragments=dict(stats.get("ip_fragments", {})), tcp_buffered_bytes=tcp.get("buffered_bytes", 0),
                   **rest)


HealthSource = Callable[[], Health]

# Pipeline counters exported by a family of their own, or gauges, not events.
TCP_NOT_EVENTS = frozenset({"gaps", "buffered_bytes", "buffered_bytes_limit", "buffered_marks", "buffered_pieces"})
CONNECTIONS_NOT_EVENTS = frozenset({"connections", "active", "evicted", "internal_errors", "not_http"})


def with_known_labels(h: Health, rules: Iterable[str]) -> Health:
    """`h` with every label value known in advance present, at 0 until counted: each anomaly name,
    each kind of connection that is not HTTP and each rule of the configuration, so a dashboard
    shows 0 before the first event, not "No data". (Outputs, delivery events and let-go bounds are
    present from the start already.)"""
    return dataclasses.replace(h, anomalies=dict.fromkeys(sorted(a.value for a in Anomaly), 0) | dict(h.anomalies),
                               not_http=dict.fromkeys(sorted(k.value for k in NotHttp), 0) | dict(h.not_http),
                               rule_errors=dict.fromkeys(rules, 0) | dict(h.rule_errors))


# Sink.stats() keys -> (metric, kind, help).
OUTPUT_STATS: Mapping[str, tuple[str, str, str]] = {
    "submitted": ("pcapwatch_output_submitted_total", "counter", "Records handed to the output."),
    "written": ("pcapwatch_output_written_total", "counter", "Records the output delivered."),
    "written_bytes": ("pcapwatch_output_written_bytes_total", "counter", "Bytes of whole records a jsonl output "
                      "wrote to its file or standard output."),
    "dropped": ("pcapwatch_output_dropped_total", "counter",
                "Records dropped because the output's buffer was full."),
    "retries": ("pcapwatch_output_retries_total", "counter", "Delivery attempts repeated after a failure."),
    "errors": ("pcapwatch_output_errors_total", "counter", "Delivery failures of the output."),
    "reconnects": ("pcapwatch_output_reconnects_total", "counter", "Connections the output re-established."),
    "buffered": ("pcapwatch_output_buffered", "gauge", "Records waiting in the output's buffer."),
    "blocking": ("pcapwatch_output_blocking", "gauge", "1 while a required output's buffer is full and analysis "
                 "waits for it (the capture waits in the spool); 0 otherwise. Only required outputs."),
    # The pcap writers' own (watcher.sinks.pcap_sink.COUNTS), under `pcap:DIR`.
    "files_written": ("pcapwatch_pcap_files_written_total", "counter", "pcap files a rule's pcap action started."),
    "packets_written": ("pcapwatch_pcap_packets_written_total", "counter", "Packets written to pcap files."),
    "files_removed": ("pcapwatch_pcap_files_removed_total", "counter", "Oldest pcap files removed to keep the "
                      "directory under its max_bytes."),
    "packets_capped": ("pcapwatch_pcap_packets_capped_total", "counter", "Packets not written: their file "
                       "reached max_file_bytes."),
    "packets_other_linktype": ("pcapwatch_pcap_packets_other_linktype_total", "counter", "Packets not written: "
                               "another link type than their file's."),
}


def family_by(name: str, kind: str, help_: str, label: str, values: Mapping[str, float]) -> Family:
    return Family(name, kind, help_, (label,), samples=tuple(((k,), float(v)) for k, v in sorted(values.items())))


def family_one(name: str, kind: str, help_: str, value: float) -> Family:
    return Family(name, kind, help_, samples=(((), float(value)),))


def health_families(h: Health) -> list[Family]:
    """The service's health as metric families (every family present even without samples)."""
    out = [
        family_one("pcapwatch_capture_files_total", "counter", "Capture files read to the end.", h.files),
        family_one("pcapwatch_capture_files_lost_total", "counter", "Capture files tcpdump's ring overwrote before "
             "pcapwatch read them.", h.files_lost),
        family_one("pcapwatch_capture_lost_bytes_total", "counter", "Bytes of the capture files lost that way.",
             h.lost_bytes),
        family_one("pcapwatch_capture_files_unreadable_total", "counter", "Capture files found unreadable "
                   "(permissions), each counted once until it is readable.", h.files_unreadable),
        family_one("pcapwatch_capture_files_unreadable", "gauge", "Capture files unreadable now: tried again at "
                   "every scan, read once readable, lost if rewritten or removed first.", h.files_unreadable_now),
        family_one("pcapwatch_spool_unlistable", "gauge", "1 while the spool directory cannot be listed (it does not "
                   "exist, or the service's user may not read it): nothing is read; else 0.", h.spool_unlistable),
        family_one("pcapwatch_capture_files_failed_total", "counter", "Capture files corrupt (or expanding past "
                   "limits.gunzip_*) at some point: read up to it, the rest skipped.", h.files_failed),
        family_one("pcapwatch_capture_packets_total", "counter", "Packets (capture records) analysed.", h.packets),
        family_one("pcapwatch_capture_bytes_total", "counter", "Capture file bytes read.", h.bytes),
        family_one("pcapwatch_lag_bytes", "gauge", "Capture bytes tcpdump has written that pcapwatch has not read yet.",
             h.lag_bytes),
        family_one("pcapwatch_lag_seconds", "gauge", "How far behind tcpdump pcapwatch is: age of the last packet "
             "analysed while capture is unread, else 0.", h.lag_seconds),
        family_one("pcapwatch_connections_total", "counter", "TCP connections tracked.", h.connections),
        family_one("pcapwatch_connections_active", "gauge", "TCP connections tracked now.", h.connections_active),
        family_one("pcapwatch_connections_evicted_total", "counter", "Connections evicted at the connection limit "
             "(limits.max_connections).", h.connections_evicted),
        family_one("pcapwatch_analysis_errors_total", "counter", "Packets whose analysis failed (a bug met on "
             "some input): each cost its connection only, closed with reason internal_error.", h.analysis_errors),
        family_one("pcapwatch_tcp_gaps_total", "counter", "Holes in TCP streams: bytes never captured.", h.gaps),
        family_by("pcapwatch_tcp_events_total", "counter", "TCP reassembly events, by the name `read --stats` gives "
                  "them under tcp: gap_bytes, retransmitted_segments, out_of_order_segments, holes_expired (an ACK "
                  "past a hole, waited out), late_segments_filled, checksum_dropped_segments, "
                  "retransmission_mismatch_segments, *_flushes (memory bounds reached), ...", "event", h.tcp),
        family_one("pcapwatch_tcp_buffered_bytes", "gauge", "Out-of-order bytes TCP reassembly holds now "
                   "(limits bound it; what a bound lets go is counted in pcapwatch_tcp_events_total).",
                   h.tcp_buffered_bytes),
        family_by("pcapwatch_connection_events_total", "counter", "Connection events, by the name `read --stats` "
                  "gives them under connections: closed, reset, resets_out_of_window and resets_refused (RSTs "
                  "ignored), fins_out_of_window, idle_timeouts, late_packets, midstream, port_reuse, "
                  "self_connections, ...", "event", h.connection_events),
        family_by("pcapwatch_ip_fragments_total", "counter", "IP fragment reassembly: fragments, datagrams, "
                  "duplicates, overlaps, and dropped_* by the bound or fault that dropped them.", "event",
                  h.ip_fragments),
        family_one("pcapwatch_routes", "gauge", "Distinct route labels in use (capped by routes.max_routes).",
                   h.routes),
        family_one("pcapwatch_route_overflow_total", "counter", "Request targets labelled route 'other' because the "
             "route cap was reached.", h.route_overflow),
        family_by("pcapwatch_http_anomalies_total", "counter", "HTTP protocol anomalies seen, by name.", "name",
            h.anomalies),
        family_by("pcapwatch_not_http_connections_total", "counter", "Connections not parsed because they speak "
                  "another protocol, by kind (tls, http2, other).", "kind", h.not_http),
        family_one("pcapwatch_http_pipeline_overflow_total", "counter", "Requests written without their response "
                   "because too many were unanswered on their connection.", h.pipeline_overflow),
        family_by("pcapwatch_rule_errors_total", "counter", "Rule evaluations that raised and were skipped, by rule.",
            "rule", h.rule_errors),
        family_one("pcapwatch_queue_batches", "gauge", "Frame batches waiting between the reader thread and the "
             "analyser.", h.queue_depth),
        family_one("pcapwatch_queue_capacity_batches", "gauge", "Capacity of that queue (limits.queue_batches).",
             h.queue_capacity),
    ]
    for key, (name, kind, help_) in OUTPUT_STATS.items():
        out.append(family_by(name, kind, help_, "output", {o: s[key] for o, s in h.outputs.items() if key in s}))
    out.append(family_by("pcapwatch_delivery_total", "counter", "What the rules made of transactions: records "
                         "(every one), dropped_by_rules (drop or sample), alerts, unknown_output (a rule named an "
                         "output that is gone), pcap_without_packets (a pcap rule matched, no packet was kept).",
                         "event", h.delivery))
    out.append(family_one("pcapwatch_pcap_kept_bytes", "gauge", "Packets kept for rules' pcap actions "
                          "(limits.pcap_total_bytes bounds it).", h.kept_bytes))
    out.append(family_by("pcapwatch_pcap_packets_let_go_total", "counter", "Kept packets let go before a rule "
                         "could write them, by the bound that let them go.", "bound", h.kept_let_go))
    out.append(family_by("pcapwatch_kafka_group_total", "counter", "A consumer-group member's events (run --source "
                         "kafka://): partitions assigned, revoked, lost; connections closed by a rebalance "
                         "(rebalance_closed); messages skipped (bad_key, bad_value); commits, commit_errors, "
                         "commits_held (an output had not written everything); consumer_errors.", "event", h.kafka))
    age = h.checkpoint_age_seconds
    out.append(Family("pcapwatch_checkpoint_age_seconds", "gauge", "Seconds since the last checkpoint was "
                      "written (absent before the first one).",
                      samples=(((), float(age)),) if age is not None else ()))
    out.extend(h.replay)
    return out
