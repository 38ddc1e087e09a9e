"""http.counters: what the HTTP side counts across connections, and its per-connection bounds."""

from __future__ import annotations

from analyzers.http.counters import (
    MAX_OVERFLOW_RUNS,
    MAX_UNANSWERED_REQUESTS,
    MAX_UNPROVEN_MESSAGES,
    NOT_HTTP_KINDS,
    HttpCounters,
)


def test_kinds_are_the_words_stats_and_metrics_use() -> None:
    assert NOT_HTTP_KINDS == ("tls", "http2", "other")


def test_counters_start_at_zero_and_are_per_instance() -> None:
    a, b = HttpCounters(), HttpCounters()
    a.not_http["tls"] += 1
    assert (b.not_http, b.tunnel_not_http, b.pipeline_overflow, b.overflow_responses, b.tunnels) == ({}, {}, 0, 0, 0)


def test_bounds() -> None:
    """Far above what real clients pipeline, far below what held 884 MB; a few unproven lines."""
    assert 256 <= MAX_UNANSWERED_REQUESTS <= 4096 and MAX_OVERFLOW_RUNS >= 1 and 1 <= MAX_UNPROVEN_MESSAGES <= 64
