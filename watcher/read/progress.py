"""What `pcapwatch read` tells a person on stderr: a one-line progress display on a terminal for long
offline reads, and the counters at the end (`--stats`).
"""

from __future__ import annotations

import time
from typing import Any, TextIO

# Below this much input a read takes a second or two: a progress line would only flicker.
PROGRESS_MIN_BYTES = 64 << 20
REFRESH_SECONDS = 0.5


class Progress:
    def __init__(self, total_bytes: int, stream: TextIO, enabled: bool, count_transactions: bool = True) -> None:
        """`count_transactions` off when this process sees only a share of them (a worker)."""
        self.total = total_bytes
        self.count_transactions = count_transactions
        self.stream = stream
        self.enabled = enabled and total_bytes >= PROGRESS_MIN_BYTES
        self.start = time.monotonic()
        self.next_draw = self.start + REFRESH_SECONDS
        self.shown = False

    def update(self, done_bytes: int, transactions: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next_draw:
            return
        self.next_draw = now + REFRESH_SECONDS
        elapsed = max(now - self.start, 1e-6)
        rate = done_bytes / elapsed
        pct = min(100.0, 100.0 * done_bytes / self.total) if self.total else 0.0
        eta = (self.total - done_bytes) / rate if rate > 0 else 0.0
        count = f"  {transactions:,} transactions " if self.count_transactions else " "
        self.stream.write(f"\r{_mb(done_bytes)} / {_mb(self.total)}  {pct:5.1f}%  {rate / 1e6:6.1f} MB/s"
                          f"  ETA {eta:4.0f}s{count}")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def format_summary(s: dict[str, Any]) -> str:
    """The end-of-run counters, for a human."""
    c, t = s["connections"], s["tcp"]
    skipped = ", ".join(f"{k} {v:,}" for k, v in s["frames_skipped"].items()) or "none"
    anomalies = ", ".join(f"{k} {v:,}" for k, v in s["anomalies"].items()) or "none"
    h = s.get("http", {})
    kinds = ", ".join(f"{k} {v:,}" for k, v in h.get("not_http", {}).items())
    inside = ", ".join(f"{k} {v:,}" for k, v in h.get("tunnel_not_http", {}).items())
    lines = [
        ("files", f"{s['files']:,} ({s['files_failed']:,} with errors), {s['bytes'] / 1e6:,.1f} MB"),
        ("frames", f"{s['frames']:,} (skipped: {skipped})"),
        ("connections", f"{c['connections']:,} (midstream {c['midstream']:,}, closed {c['closed']:,}, "
                        f"reset {c['reset']:,}, idle {c['idle_timeouts']:,}, evicted {c['evicted']:,}, "
                        f"not HTTP {c['not_http']:,}: {kinds})"),
        ("transactions", f"{s['transactions']:,}"),
        ("tcp", f"retransmitted {t['retransmitted_segments']:,}, out of order {t['out_of_order_segments']:,}, "
                f"overlaps {t['overlap_segments']:,} ({t['overlap_mismatch_segments']:,} differing), "
                f"gaps {t['gaps']:,} ({t['gap_bytes']:,} bytes), buffer flushes "
                f"{t['stream_buffer_flushes'] + t['global_buffer_flushes']:,}"),
        ("http", f"pipeline overflow {h.get('pipeline_overflow', 0):,} (answers after it "
                 f"{h.get('overflow_responses', 0):,}), CONNECT tunnels parsed {h.get('tunnels', 0):,} "
                 f"(not HTTP inside: {inside})"),
        ("anomalies", anomalies),
    ]
    undecoded = s.get("undecoded") or {}
    if undecoded:  # encapsulations not decoded, by kind
        lines.insert(2, ("undecoded", ", ".join(f"{k} {v:,}" for k, v in undecoded.items())))
    f = s.get("ip_fragments") or {}
    if f.get("fragments"):
        dropped = sum(v for k, v in f.items() if k.startswith("dropped_") and k != "dropped_fragments")
        lines.insert(2, ("ip fragments", f"{f['fragments']:,} ({f['datagrams']:,} datagrams reassembled, "
                                         f"{dropped:,} dropped, overlaps {f['overlaps']:,} "
                                         f"({f['overlap_mismatches']:,} differing))"))
    return "".join(f"  {k:<13} {v}\n" for k, v in lines)
