"""The `replay` action's compile step (compile.py's ACTIONS holds it): its keys are checked at
load like every action's, and its target must be one of the configuration's `replay.targets`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from analyzers.rules.match_keys import Err, strings
from analyzers.rules.model import Replay, describe

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
KEYS = ("target", "methods", "allow_credentials", "rate", "percent", "concurrency", "queue", "host", "id_header",
        "body_limit", "compare_headers", "ignore_headers", "masks")
# Senders per replay action at most: a shadow is a test server, not a load target.
MAX_CONCURRENCY = 64


class _Parser(Protocol):
    replay_targets: tuple[str, ...]

    def unknown(self, v: Mapping[object, object], path: tuple[object, ...], known: Sequence[str],
                what: str) -> None: ...


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _a_replay(p: _Parser, v: object, err: Err, path: tuple[object, ...], rule: str) -> tuple[dict[str, Any], str]:
    if isinstance(v, str):
        v = {"target": v}
    if not isinstance(v, dict):
        err(f"found {describe(v)}, expected a target URL or a mapping {{target, methods, rate, ...}}, e.g. "
            "{target: http://staging:8080, rate: 50}")
    p.unknown(v, path, KEYS, "key")
    target = v.get("target")
    allowed = {t.rstrip("/") for t in p.replay_targets}
    if not isinstance(target, str) or target.rstrip("/") not in allowed:
        listed = ", ".join(p.replay_targets) or "none"
        err(f"found {describe(target) if 'target' in v else 'nothing'}, expected one of the configuration's "
            f"replay.targets ({listed}); add the target to replay: targets: first", "target")
    kw: dict[str, Any] = {"rule": rule, "target": target.rstrip("/")}
    for key in ("methods", "compare_headers", "ignore_headers"):
        if key in v:
            names = strings(v[key])
            if not names or not all(_TOKEN.match(n) for n in names):
                err(f"found {describe(v[key])}, expected a list of {'methods' if key == 'methods' else 'header names'}",
                    key)
            kw[key] = tuple(n.upper() for n in names) if key == "methods" else tuple(n.lower() for n in names)
    if "masks" in v:
        masks = strings(v["masks"])
        if masks is None:
            err(f"found {describe(v['masks'])}, expected a list of regular expressions", "masks")
        for i, m in enumerate(masks):
            try:
                re.compile(m.encode())
            except re.error as e:
                err(f"found {m!r} ({e}), expected a regular expression", "masks", i)
        kw["masks"] = tuple(masks)
    if "allow_credentials" in v:
        if not isinstance(v["allow_credentials"], bool):
            err(f"found {describe(v['allow_credentials'])}, expected true or false", "allow_credentials")
        kw["allow_credentials"] = v["allow_credentials"]
    if "rate" in v and v["rate"] is not None:
        if not _number(v["rate"]) or v["rate"] <= 0:
            err(f"found {describe(v['rate'])}, expected requests per second (a number above 0) or null",
                "rate")
        kw["rate"] = float(v["rate"])
    if "percent" in v:
        if not _number(v["percent"]) or not 0 < v["percent"] <= 100:
            err(f"found {describe(v['percent'])}, expected a percentage of connections, above 0 up to 100",
                "percent")
        kw["percent"] = float(v["percent"])
    for key, low, high in (("concurrency", 1, MAX_CONCURRENCY), ("queue", 1, 1_000_000), ("body_limit", 0, 1 << 30)):
        if key in v:
            x = v[key]
            if isinstance(x, bool) or not isinstance(x, int) or not low <= x <= high:
                err(f"found {describe(x)}, expected a whole number from {low} to {high}", key)
            kw[key] = x
    for key in ("host", "id_header"):
        if key in v and v[key] is not None:
            if not isinstance(v[key], str) or not _TOKEN.match(v[key].replace(":", "")):
                err(f"found {describe(v[key])}, expected a {'host name' if key == 'host' else 'header name'}", key)
            kw[key] = v[key]
    r = Replay(**kw)
    creds = ", with credentials" if r.allow_credentials else ""
    rate = f", at most {r.rate:g}/s" if r.rate else ""
    return {"replay": r}, f"replay to {r.target} ({', '.join(r.methods)}{creds}{rate})"
