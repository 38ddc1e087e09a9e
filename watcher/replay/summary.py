"""The per-route table printed at the end of `pcapwatch replay`: count, status and body match
percentages, p50/p99 latency original vs shadow, failures by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# A route's latencies are kept to compute percentiles; past this many only the count grows.
MAX_SAMPLES = 100_000


@dataclass
class RouteStats:
    count: int = 0  # answered or failed
    answered: int = 0
    status_match: int = 0
    body_compared: int = 0
    body_match: int = 0
    original: list[float] = field(default_factory=list)
    shadow: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


class Summary:
    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}

    def _route(self, route: str) -> RouteStats:
        st = self.routes.get(route)
        if st is None:
            st = self.routes[route] = RouteStats()
        return st

    def answered(self, route: str, replay: dict[str, Any]) -> None:
        st = self._route(route)
        st.count += 1
        st.answered += 1
        match = replay["match"]
        st.status_match += match.get("status") is not False
        if match.get("body") is not None:
            st.body_compared += 1
            st.body_match += bool(match["body"])
        if len(st.shadow) < MAX_SAMPLES:
            st.shadow.append(replay["latency"])
            if replay.get("original_latency") is not None:
                st.original.append(replay["original_latency"])

    def failed(self, route: str, reason: str) -> None:
        st = self._route(route)
        st.count += 1
        st.failures[reason] += 1

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for route in sorted(self.routes):
            st = self.routes[route]
            out.append({
                "route": route, "count": st.count,
                "status_match_pct": round(100 * st.status_match / st.answered, 1) if st.answered else None,
                "body_match_pct": round(100 * st.body_match / st.body_compared, 1) if st.body_compared else None,
                "p50_original_ms": _ms(percentile(st.original, 50)), "p50_shadow_ms": _ms(percentile(st.shadow, 50)),
                "p99_original_ms": _ms(percentile(st.original, 99)), "p99_shadow_ms": _ms(percentile(st.shadow, 99)),
                "failures": dict(sorted(st.failures.items())),
            })
        return out

    def table(self) -> str:
        """The rows as aligned text, one route a line."""
        head = ("route", "count", "status%", "body%", "p50 orig", "p50 shadow", "p99 orig", "p99 shadow", "failures")
        lines = [head]
        for r in self.rows():
            lines.append((r["route"], str(r["count"]), _pct(r["status_match_pct"]), _pct(r["body_match_pct"]),
                          _lat(r["p50_original_ms"]), _lat(r["p50_shadow_ms"]), _lat(r["p99_original_ms"]),
                          _lat(r["p99_shadow_ms"]),
                          " ".join(f"{k}={v}" for k, v in r["failures"].items()) or "-"))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
                       for line in lines)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _lat(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}ms"
