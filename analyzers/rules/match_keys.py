"""Match keys of analyzer rules: each validates its YAML value and compiles it into a predicate.

One function per key, in the table MATCH_KEYS; each returns (predicate, text shown by `check`) or
reports its problem through `err` (which does not return). Predicates read the record's fields and
the header dicts of a `TxView`; they are closures over values converted once (sets of status codes,
networks, compiled regexes), so evaluating one costs a lookup and a comparison.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import operator
import re
from collections.abc import Callable
from typing import Any, NoReturn

from analyzers.http.anomalies import Anomaly
from analyzers.records import Flag
from analyzers.routes import split_uri
from analyzers.rules.model import TxView, describe

Test = Callable[[TxView], bool]
Built = tuple[Test, str]
Err = Callable[..., NoReturn]  # err(message, *sub-path): report a problem at the key (or below it), abandon it

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_COMPARE = re.compile(r"\s*(>=|<=|>|<|==|=)?\s*(\d+(?:\.\d+)?)\s*\Z")
_RANGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\Z")
_OPS: dict[str, Callable[[Any, Any], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                               "<=": operator.le, "=": operator.eq, "==": operator.eq}


def strings(v: object) -> list[str] | None:
    """A string or a non-empty list of non-empty strings, as a list; else None."""
    if isinstance(v, str) and v:
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return list(v)
    return None


def _regex(text: object, err: Err, *sub: object) -> re.Pattern[str]:
    if not isinstance(text, str) or not text:
        err(f"found {describe(text)}, expected a regular expression; write it as a string", *sub)
    try:
        return re.compile(text)
    except re.error as e:
        err(f"found {describe(text)}, expected a valid regular expression ({e.msg} at position {e.pos}); "
            "correct it (quote it with '...' in YAML)", *sub)


def _m_method(v: object, err: Err) -> Built:
    names = strings(v)
    if names is None or not all(_TOKEN.match(n) for n in names):
        err(f"found {describe(v)}, expected a method or a list of methods; write e.g. GET or [GET, HEAD]")
    want = frozenset(n.upper() for n in names)
    return (lambda t: t.record.get("method") in want), "|".join(dict.fromkeys(n.upper() for n in names))


def _hostname(host: str) -> str:
    """The Host header without its port, lower-case: what host globs and regexes see."""
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _m_host(v: object, err: Err) -> Built:
    if not isinstance(v, str) or not v:
        err(f"found {describe(v)}, expected a host glob such as '*.svc.local' or a regex written /.../")
    if len(v) > 2 and v.startswith("/") and v.endswith("/"):
        find = _regex(v[1:-1], err).search
    else:
        # A glob: only * and ? are wildcards, so [::1] means the IPv6 literal, not a character class.
        find = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in v.lower())
                          + r"\Z").match

    def test(t: TxView) -> bool:
        h = t.record.get("host")
        return h is not None and find(_hostname(h)) is not None
    return test, v


def _m_uri_part(part: int) -> Callable[[object, Err], Built]:
    def parse(v: object, err: Err) -> Built:
        rx = _regex(v, err)

        def test(t: TxView) -> bool:
            uri = t.record.get("uri")
            return uri is not None and rx.search(split_uri(uri)[part] or "") is not None
        return test, str(v)
    return parse


def _status_range(item: object) -> tuple[int, int] | None:
    if isinstance(item, int) and not isinstance(item, bool):
        return (item, item) if 100 <= item <= 599 else None
    if not isinstance(item, str):
        return None
    s = item.strip().lower()
    if re.fullmatch(r"[1-5]xx", s):
        return int(s[0]) * 100, int(s[0]) * 100 + 99
    m = re.fullmatch(r"(\d{3})(?:\s*-\s*(\d{3}))?", s)
    if m is None:
        return None
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    return (lo, hi) if 100 <= lo <= hi <= 599 else None


def _m_status(v: object, err: Err) -> Built:
    items = v if isinstance(v, list) else [v]
    if not items:
        err("found an empty list, expected a status (404), a class (5xx) or a range (400-499), or a list "
            "of them")
    codes: set[int] = set()
    for i, item in enumerate(items):
        r = _status_range(item)
        if r is None:
            err(f"found {describe(item)}, expected a status (404), a class (5xx) or a range (400-499), "
                "or a list of them", *((i,) if isinstance(v, list) else ()))
        codes.update(range(r[0], r[1] + 1))
    want = frozenset(codes)
    return (lambda t: t.record.get("status_code") in want), show(v)


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _m_network(name: str) -> Callable[[object, Err], Built]:
    def parse(v: object, err: Err) -> Built:
        items = strings(v)
        if items is None:
            err(f"found {describe(v)}, expected an address or CIDR network, or a list of them, e.g. "
                "10.0.0.0/8 or [127.0.0.1, '::1']")
        nets = []
        for i, item in enumerate(items):
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                err(f"found {describe(item)}, expected an address or CIDR network such as 10.0.0.0/8",
                    *((i,) if isinstance(v, list) else ()))
        networks = tuple(nets)

        def test(t: TxView) -> bool:
            ip = t.record.get(name)
            return ip is not None and any(_ip(ip) in n for n in networks)
        return test, show(v)
    return parse


def _port_range(item: object) -> tuple[int, int] | None:
    if isinstance(item, int) and not isinstance(item, bool):
        return (item, item) if 0 <= item <= 65535 else None
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", item) if isinstance(item, str) else None
    if m is None:
        return None
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    return (lo, hi) if lo <= hi <= 65535 else None


def _m_port(name: str) -> Callable[[object, Err], Built]:
    def parse(v: object, err: Err) -> Built:
        items = v if isinstance(v, list) and v else [v]
        ranges = []
        for i, item in enumerate(items):
            r = _port_range(item)
            if r is None:
                err(f"found {describe(item)}, expected a port (0-65535), a range such as 8000-8099, or a "
                    "list of them", *((i,) if isinstance(v, list) and v else ()))
            ranges.append(r)
        spans = tuple(ranges)

        def test(t: TxView) -> bool:
            p = t.record.get(name)
            return p is not None and any(lo <= p <= hi for lo, hi in spans)
        return test, show(v)
    return parse


def _m_header(which: str) -> Callable[[object, Err], Built]:
    expected = ("expected a header name, a list of names (all present), or a mapping of names to a value "
                "regex, true (present) or false (absent)")

    def parse(v: object, err: Err) -> Built:
        names = strings(v)
        conds: list[tuple[str, re.Pattern[str] | bool]] = []
        if names is not None:
            conds = [(n.lower(), True) for n in names]
        elif isinstance(v, dict) and v:
            for name, want in v.items():
                if not isinstance(name, str) or not _TOKEN.match(name):
                    err(f"found {describe(name)}, expected a header name", name)
                if isinstance(want, bool):
                    conds.append((name.lower(), want))
                else:
                    conds.append((name.lower(), _regex(want, err, name)))
        else:
            err(f"found {describe(v)}, {expected}")
        for name, _ in conds:
            if not _TOKEN.match(name):
                err(f"found {name!r}, {expected}")
        checks = tuple(conds)

        def test(t: TxView) -> bool:
            headers = getattr(t, which)
            for name, want in checks:
                value = headers.get(name)
                if isinstance(want, bool):
                    if (value is not None) != want:
                        return False
                elif value is None or not any(want.search(x) for x in (value if isinstance(value, list)
                                                                       else (value,))):
                    return False
            return True
        return test, show(v)
    return parse


def _m_compare(name: str, exact: bool) -> Callable[[object, Err], Built]:
    example = ("'>500', '<=100' or a range such as 100-500" if not exact
               else "'>1000000', '<=100', a range such as 1-1024, or an exact size such as 0")

    def parse(v: object, err: Err) -> Built:
        if isinstance(v, int | float) and not isinstance(v, bool) and exact:
            v = f"={v}"
        m = _COMPARE.match(v) if isinstance(v, str) else None
        r = _RANGE.match(v) if isinstance(v, str) else None
        if m is not None and (m.group(1) or exact):
            op, n = _OPS[m.group(1) or "="], float(m.group(2))

            def test(t: TxView) -> bool:
                x = t.record.get(name)
                return x is not None and op(x, n)
        elif r is not None and float(r.group(1)) <= float(r.group(2)):
            lo, hi = float(r.group(1)), float(r.group(2))

            def test(t: TxView) -> bool:
                x = t.record.get(name)
                return x is not None and lo <= x <= hi
        else:
            err(f"found {describe(v)}, expected a comparison such as {example}; quote it (YAML reads a "
                "leading > as a folded text block)")
        return test, str(v).replace(" ", "")
    return parse


def _known(v: object, names: list[str], known: tuple[str, ...], err: Err) -> None:
    """Refuse a name that is not one of `known` (a rule naming it would silently never match)."""
    for i, n in enumerate(names):
        if n not in known:
            close = difflib.get_close_matches(n, known, n=1)
            todo = f"did you mean {close[0]!r}?" if close else "correct its spelling"
            err(f"found {n!r}, expected one of {', '.join(known)}; {todo}", *((i,) if isinstance(v, list) else ()))


# The names a rule may use, as plain strings (for messages); anomalies sorted, a long list read by eye.
FLAGS = tuple(f.value for f in Flag)
ANOMALIES = tuple(sorted(a.value for a in Anomaly))


def _m_flags(v: object, err: Err) -> Built:
    names = strings(v)
    if names is None:
        err(f"found {describe(v)}, expected a flag or a list of flags (any of them matches) from "
            f"{', '.join(FLAGS)}")
    _known(v, names, FLAGS, err)
    want = frozenset(names)
    return (lambda t: any(f in want for f in t.record.get("flags") or ())), show(v)


def _m_anomalies(v: object, err: Err) -> Built:
    if isinstance(v, bool):
        return (lambda t: bool(t.record.get("anomalies")) is v), str(v).lower()
    names = strings(v)
    if names is None or not all(_NAME.match(n) for n in names):
        err(f"found {describe(v)}, expected true (any anomaly), false (none) or a list of anomaly names "
            "(any of them matches), e.g. [bad_chunk_size]")
    _known(v, names, ANOMALIES, err)
    want = frozenset(names)
    return (lambda t: any(a in want for a in t.record.get("anomalies") or ())), show(v)


MATCH_KEYS: dict[str, Callable[[object, Err], Built]] = {
    "method": _m_method, "host": _m_host, "path": _m_uri_part(0), "query": _m_uri_part(1), "status": _m_status,
    "client": _m_network("src_ip"), "server": _m_network("dst_ip"), "client_port": _m_port("src_port"),
    "server_port": _m_port("dst_port"), "header": _m_header("request_headers"),
    "response_header": _m_header("response_headers"), "duration_ms": _m_compare("duration_ms", False),
    "ttfb_ms": _m_compare("ttfb_ms", False), "request_bytes": _m_compare("request_body_len", True),
    "response_bytes": _m_compare("response_body_len", True), "flags": _m_flags, "anomalies": _m_anomalies,
}


def show(v: object) -> str:
    """A rule value as `check` prints it, compact."""
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {show(x)}" for k, x in v.items()) + "}"
    if v is None or isinstance(v, bool):
        return str(v).lower() if v is not None else "null"
    return str(v)
