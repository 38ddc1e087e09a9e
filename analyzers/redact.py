"""The last step before a record leaves: allow-listed headers, secrets masked, fields capped, all escaped.

Safe by default (as Packetbeat's `send_headers` and Zeek's redaction scripts): only the headers an
allow-list names are logged; `Authorization` and `Proxy-Authorization` keep their scheme and
`Cookie`/`Set-Cookie` their cookie names and attributes, never a value; query parameters with
secret-looking names, and the password of `user:password@` in a URL, are masked wherever they
appear; configured literal secrets are masked in every string; every string is capped and carries
no control character (so no CR/LF log injection and no ANSI escape reaches a terminal).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from analyzers.http.text import UNSAFE_TEXT, escape, escape_ascii, escape_char
from analyzers.routes import RouteTemplater
from analyzers.rules.model import Decision, TxView

REDACTED = "<redacted>"
TRUNCATED = "<truncated>"
DEFAULT_REQUEST_HEADERS = ("host", "user-agent", "referer", "content-type", "content-length", "x-forwarded-for",
                           "authorization", "cookie")
DEFAULT_RESPONSE_HEADERS = ("content-type", "content-length", "location", "server", "set-cookie")
DEFAULT_QUERY_PARAMS = ("token", "password", "passwd", "secret", "key", "api_key", "apikey", "access_token", "auth",
                        "signature", "sig")
# A field longer than this is a body or an attack, not something a log line needs whole.
DEFAULT_MAX_FIELD_BYTES = 4096
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})

# ASCII white space: where a server ends a query value or a password, not at U+00A0 or U+3000
# inside UTF-8 text (which `\s` would also match).
_WS = " \t\n\r\f\v"
# `scheme://user:password@`: the password of a URL's userinfo.
_USERINFO = re.compile(rf"(?<=://)([^/@{_WS}:?#]*):[^/@{_WS}?#]*@")
_SCHEME = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]+\S")
# Characters that must not reach a log raw; wire strings arrive escaped already, this catches the rest
# (values from the configuration, and any slip upstream): C0, DEL, and what analyzers.http.text
# escapes in UTF-8 text (C1, bidi controls, U+2028/9), each as the \xNN of its UTF-8 bytes.
_UNSAFE = f"\x00-\x1f\x7f{UNSAFE_TEXT}"
_CONTROL = re.compile(f"[{_UNSAFE}]")


class Policy:
    """What finalize keeps and masks, built once from the configuration; counts what it truncated."""

    __slots__ = ("_calm", "_extra_query", "_query", "_secret", "mask_headers", "max_field_bytes", "query_params",
                 "request_headers", "response_headers", "routes", "secrets", "truncated")

    def __init__(self, request_headers: Iterable[str] = DEFAULT_REQUEST_HEADERS,
                 response_headers: Iterable[str] = DEFAULT_RESPONSE_HEADERS, mask_headers: Iterable[str] = (),
                 query_params: Iterable[str] = DEFAULT_QUERY_PARAMS, secrets: Iterable[str] = (),
                 max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES, routes: RouteTemplater | None = None) -> None:
        self.request_headers = frozenset(h.lower() for h in request_headers)
        self.response_headers = frozenset(h.lower() for h in response_headers)
        self.mask_headers = frozenset(h.lower() for h in mask_headers)
        self.query_params = frozenset(query_params)
        self.secrets = tuple(secrets)
        self.max_field_bytes = max_field_bytes
        self.routes = routes if routes is not None else RouteTemplater()
        self.truncated = 0  # string fields cut to max_field_bytes
        self._query = _query_regex(self.query_params)
        self._extra_query: dict[frozenset[str], re.Pattern[str] | None] = {}  # by a rule's extra names
        # As configured, and as logged in either form of `strings` (Köln, K\xc3\xb6ln; a\x5cb).
        forms = {f for s in self.secrets for f in (s, escape(s.encode()), escape_ascii(s.encode()))}
        alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        self._secret = re.compile(alternatives) if forms else None
        # What makes a string need work: a query or userinfo that may hold a secret, a control
        # character, a configured secret.
        self._calm = re.compile(f"[=@{_UNSAFE}]" + (f"|{alternatives}" if forms else ""))

    def query_regex(self, extra: frozenset[str]) -> re.Pattern[str] | None:
        """The masking regex for the configured names plus a rule's; one per distinct set of rule names."""
        if not extra:
            return self._query
        if extra not in self._extra_query:
            self._extra_query[extra] = _query_regex(self.query_params | extra)
        return self._extra_query[extra]

    def clean(self, s: str, query: re.Pattern[str] | None) -> str:
        """One string as it may be logged: query secrets and literal secrets masked, escaped, capped."""
        if self._calm.search(s) is None and len(s) <= self.max_field_bytes and s.isascii():
            return s  # nearly every field: one search decides nothing is to be done
        if query is not None and "=" in s:
            s = query.sub(_mask_param, s)
        if "@" in s:
            s = _USERINFO.sub(_mask_userinfo, s)
        if self._secret is not None:
            s = self._secret.sub(REDACTED, s)
        if _CONTROL.search(s):
            s = _CONTROL.sub(escape_char, s)
        if len(s) > self.max_field_bytes or (not s.isascii() and len(_utf8(s)) > self.max_field_bytes):
            self.truncated += 1
            s = _cut(s, self.max_field_bytes) + TRUNCATED
        return s

    def stats(self) -> dict[str, int]:
        """Counters for the service's health metrics."""
        return {"truncated_fields": self.truncated, **self.routes.stats()}


def _query_regex(names: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<=[?&;])({alternatives})=[^&#;{_WS}]*", re.IGNORECASE) if alternatives else None


def _mask_param(m: re.Match[str]) -> str:
    return f"{m.group(1)}={REDACTED}"


def _mask_userinfo(m: re.Match[str]) -> str:
    return f"{m.group(1)}:{REDACTED}@"


def _utf8(s: str) -> bytes:
    """A string as an output writes it: UTF-8, a lone surrogate (a file name that is not UTF-8, as
    Python decodes it) as its JSON escape \\udcNN (watcher/sinks/base.py `utf8`)."""
    return s.encode("utf-8", "backslashreplace")


def _cut(s: str, limit: int) -> str:
    """The first `limit` bytes of s, not splitting a \\xNN escape or a UTF-8 sequence."""
    if s.isascii():
        cut = s[:limit]
    else:
        cut = _utf8(s)[:limit].decode("utf-8", "ignore")
    tail = cut.rfind("\\", max(0, len(cut) - 3))
    return cut[:tail] if tail >= 0 else cut


def mask_credentials(value: str) -> str:
    """Authorization: keep the scheme (`Bearer <redacted>`); a bare token is all masked."""
    m = _SCHEME.match(value)
    return f"{m.group(1)} {REDACTED}" if m else REDACTED


def mask_cookie(value: str) -> str:
    """Cookie: `a=1; b=2` becomes `a=<redacted>; b=<redacted>`."""
    return "; ".join(_mask_pair(p) for p in value.split(";") if p.strip())


def mask_set_cookie(value: str) -> str:
    """Set-Cookie: the cookie's name and attributes (Path, Expires, HttpOnly, ...) kept, its value masked."""
    first, sep, attributes = value.partition(";")
    return _mask_pair(first) + (f";{attributes}" if sep else "")


def _mask_pair(pair: str) -> str:
    name, eq, _ = pair.strip().partition("=")
    return f"{name}={REDACTED}" if eq else REDACTED


def mask_header(name: str, value: str, full: frozenset[str]) -> str:
    """A header value with its secret part masked (`full`: names masked whole)."""
    if name in full:
        return REDACTED
    if name in CREDENTIAL_HEADERS:
        return mask_credentials(value)
    if name == "cookie":
        return mask_cookie(value)
    if name == "set-cookie":
        return mask_set_cookie(value)
    return value


def _headers(headers: Mapping[str, str | list[str]], allowed: frozenset[str], full: frozenset[str],
             policy: Policy, query: re.Pattern[str] | None) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for name, value in headers.items():
        name = name.lower()
        if name not in allowed:
            continue
        if isinstance(value, list):
            out[name] = [policy.clean(mask_header(name, v, full), query) for v in value]
        else:
            out[name] = policy.clean(mask_header(name, value, full), query)
    return out


def finalize(view: TxView, decision: Decision, policy: Policy) -> dict[str, Any]:
    """The record as outputs get it: the fields of `read` plus route, tags, the rule's `set` fields and
    the allow-listed headers, every string masked, escaped and capped. The view is not changed."""
    query = policy.query_regex(decision.redact_query)
    full = policy.mask_headers | decision.redact_headers
    clean, calm, cap = policy.clean, policy._calm.search, policy.max_field_bytes
    record: dict[str, Any] = {}
    for k, v in view.record.items():
        if type(v) is str:
            if calm(v) is not None or len(v) > cap or not v.isascii():  # clean's fast path, inline: hot
                v = clean(v, query)
        elif type(v) is list:
            v = _value(v, policy, query)
        record[k] = v
    record["route"] = _value(policy.routes.route(view.record.get("uri")), policy, query)
    record["tags"] = [policy.clean(t, None) for t in decision.tags]
    for k, v in decision.set_fields.items():
        record[k] = _value(v, policy, query)
    record["request_headers"] = _headers(view.request_headers, policy.request_headers, full, policy, query)
    record["response_headers"] = _headers(view.response_headers, policy.response_headers, full, policy, query)
    return record


def _value(v: object, policy: Policy, query: re.Pattern[str] | None) -> Any:
    if isinstance(v, str):
        return policy.clean(v, query)
    if isinstance(v, list):
        return [_value(x, policy, query) for x in v]
    return v
