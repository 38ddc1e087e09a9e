"""analyzers/redact.py: credential, cookie and query masking, configured secrets, the header allow-list,
the field cap (counted, never splitting an escape) and escaping; and that no secret of a request with
Authorization, Cookie, Set-Cookie and ?token= survives in any field of the finalized record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers.pcapgen import Segment, frames

from analyzers.pipeline import Pipeline
from analyzers.records import to_record
from analyzers.redact import (
    DEFAULT_QUERY_PARAMS,
    REDACTED,
    TRUNCATED,
    Policy,
    finalize,
    mask_cookie,
    mask_credentials,
    mask_header,
    mask_set_cookie,
)
from analyzers.routes import RoutePattern, RouteTemplater
from analyzers.rules.engine import compile_rules
from analyzers.rules.model import KEEP, Decision, RawRule, TxView
from analyzers.tcp.frames import SYN

R = REDACTED

CREDENTIALS = [
    ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", f"Bearer {R}"),
    ("Basic dXNlcjpwYXNz", f"Basic {R}"),
    ('Digest username="u", realm="r", response="abc"', f"Digest {R}"),
    ("  Bearer   tok", f"Bearer {R}"),
    ("justatoken", R),
    ("Bearer", R),  # a scheme alone: nothing to keep apart
    ("", R),
]


@pytest.mark.parametrize(("value", "expected"), CREDENTIALS, ids=range(len(CREDENTIALS)))
def test_mask_credentials(value: str, expected: str) -> None:
    assert mask_credentials(value) == expected


COOKIES = [
    ("a=1; b=2", f"a={R}; b={R}"),
    ("session=abc", f"session={R}"),
    ("a=1;b=2;", f"a={R}; b={R}"),
    ("flag; a=x=y", f"{R}; a={R}"),  # a bare value is masked too; '=' inside a value stays masked
    ("", ""),
]


@pytest.mark.parametrize(("value", "expected"), COOKIES, ids=range(len(COOKIES)))
def test_mask_cookie(value: str, expected: str) -> None:
    assert mask_cookie(value) == expected


SET_COOKIES = [
    ("sid=abc123; Path=/; HttpOnly; Secure", f"sid={R}; Path=/; HttpOnly; Secure"),
    ("sid=abc; Expires=Wed, 21 Oct 2026 07:28:00 GMT", f"sid={R}; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
    ("sid=abc", f"sid={R}"),
    ("abc", R),
]


@pytest.mark.parametrize(("value", "expected"), SET_COOKIES, ids=range(len(SET_COOKIES)))
def test_mask_set_cookie(value: str, expected: str) -> None:
    assert mask_set_cookie(value) == expected


def test_mask_header_by_name() -> None:
    full = frozenset({"x-api-key"})
    assert mask_header("x-api-key", "k-123", full) == R
    assert mask_header("authorization", "Bearer t", full) == f"Bearer {R}"
    assert mask_header("proxy-authorization", "Basic t", full) == f"Basic {R}"
    assert mask_header("cookie", "a=1", full) == f"a={R}"
    assert mask_header("set-cookie", "a=1; Path=/", full) == f"a={R}; Path=/"
    assert mask_header("cookie", "a=1", frozenset({"cookie"})) == R  # a configured full mask wins
    assert mask_header("user-agent", "curl/8", full) == "curl/8"


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": 1.5, "uid": "Cabc", "trans_depth": 1, "src_ip": "10.0.0.1", "src_port": 40000, "dst_ip": "10.0.0.2",
        "dst_port": 80, "method": "GET", "host": "shop.local", "uri": "/", "version": "1.1", "user_agent": "curl/8",
        "referrer": None, "request_body_len": 0, "status_code": 200, "status_msg": "OK", "info_code": None,
        "response_body_len": 5, "response_content_type": "text/plain", "ttfb_ms": 1.0, "duration_ms": 2.0,
        "flags": [], "anomalies": [], "reason": None, "pcap_file": "cap.pcap", "event_id": "e1"}
    base.update(fields)
    return base


SECRET_VALUES = ("eyJhbGciOiJIUzI1NiJ9", "dXNlcjpwYXNz", "s3ss10n", "pr3fs", "n3wsess", "t0k3n-value", "hunter2!",
                 "refpass", "l0cpass", "APIKEY-77")


def secret_view() -> TxView:
    """A transaction carrying a secret in every place one can hide."""
    return TxView(
        record(uri="/account?token=t0k3n-value&page=2", user_agent="agent hunter2!",
               referrer="http://u:refpass@shop.local/login?password=refpass&next=/"),
        {"host": "shop.local", "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
         "proxy-authorization": "Basic dXNlcjpwYXNz", "cookie": ["sid=s3ss10n; prefs=pr3fs", "theme=dark"],
         "referer": "http://u:refpass@shop.local/login?password=refpass&next=/", "x-api-key": "APIKEY-77",
         "user-agent": "agent hunter2!"},
        {"set-cookie": ["sid=n3wsess; Path=/; HttpOnly", "lang=en; Path=/"],
         "location": "/next?access_token=l0cpass&x=1", "content-type": "text/html"})


def test_no_secret_survives_in_any_field() -> None:
    policy = Policy(request_headers=("host", "authorization", "proxy-authorization", "cookie", "referer",
                                     "x-api-key", "user-agent"),
                    mask_headers=("x-api-key",), secrets=("hunter2!",))
    out = finalize(secret_view(), KEEP, policy)
    text = json.dumps(out)
    assert [s for s in SECRET_VALUES if s in text] == []
    assert out["uri"] == f"/account?token={R}&page=2"
    assert out["user_agent"] == f"agent {R}"
    assert out["referrer"] == f"http://u:{R}@shop.local/login?password={R}&next=/"
    assert out["request_headers"] == {
        "host": "shop.local", "authorization": f"Bearer {R}", "proxy-authorization": f"Basic {R}",
        "cookie": [f"sid={R}; prefs={R}", f"theme={R}"],
        "referer": f"http://u:{R}@shop.local/login?password={R}&next=/", "x-api-key": R, "user-agent": f"agent {R}"}
    assert out["response_headers"] == {
        "set-cookie": [f"sid={R}; Path=/; HttpOnly", f"lang={R}; Path=/"],
        "location": f"/next?access_token={R}&x=1", "content-type": "text/html"}


def test_allow_list_defaults_and_order_of_fields() -> None:
    view = TxView(record(uri="/users/7?sig=abc"),
                  {"host": "shop.local", "x-secret-thing": "v", "accept": "*/*", "cookie": "a=1"},
                  {"server": "nginx", "etag": "x", "content-length": "5"})
    out = finalize(view, KEEP, Policy())
    assert list(out) == [*record(), "route", "tags", "request_headers", "response_headers"]
    assert out["request_headers"] == {"host": "shop.local", "cookie": f"a={R}"}
    assert out["response_headers"] == {"server": "nginx", "content-length": "5"}
    assert out["uri"] == f"/users/7?sig={R}"
    assert out["route"] == "/users/{id}"
    assert out["tags"] == []
    assert view.record["uri"] == "/users/7?sig=abc"  # the view is not changed


QUERIES = [
    ("/p?token=abc&page=2", f"/p?token={R}&page=2"),
    ("/p?page=2&TOKEN=abc", f"/p?page=2&TOKEN={R}"),  # names case-insensitive
    ("/p?mytoken=abc&token_x=1", "/p?mytoken=abc&token_x=1"),  # whole names only
    ("/p?token=&key=k#frag", f"/p?token={R}&key={R}#frag"),
    ("/p?a=1;sig=zz", f"/p?a=1;sig={R}"),
    ("/p?token", "/p?token"),  # no value
    ("/token=abc", "/token=abc"),  # not in a query
    ("/p?api_key=a%20b&apikey=c", f"/p?api_key={R}&apikey={R}"),
]


@pytest.mark.parametrize(("uri", "expected"), QUERIES, ids=[u for u, _ in QUERIES])
def test_query_params_in_uri(uri: str, expected: str) -> None:
    assert finalize(TxView(record(uri=uri)), KEEP, Policy())["uri"] == expected


def test_query_names_configurable_and_per_rule() -> None:
    policy = Policy(query_params=("session",))
    view = TxView(record(uri="/p?session=s&token=t&code=c"))
    assert finalize(view, KEEP, policy)["uri"] == f"/p?session={R}&token=t&code=c"
    decision = Decision(redact_query=frozenset({"code"}), redact_headers=frozenset({"host"}))
    view = TxView(view.record, {"host": "shop.local"})
    out = finalize(view, decision, policy)
    assert out["uri"] == f"/p?session={R}&token=t&code={R}"
    assert out["request_headers"] == {"host": R}
    assert Policy(query_params=()).clean("/p?token=t", Policy(query_params=()).query_regex(frozenset())) == \
        "/p?token=t"
    assert set(DEFAULT_QUERY_PARAMS) >= {"token", "password", "key", "api_key", "access_token", "sig"}


def test_secrets_masked_everywhere_also_in_their_escaped_form() -> None:
    policy = Policy(secrets=("pässwort", "s3cr3t\\x"))  # as logged: p\xc3\xa4sswort, s3cr3t\x5cx
    view = TxView(record(uri="/a/p\\xc3\\xa4sswort", host="s3cr3t\\x5cx.local", status_msg="s3cr3t\\x5cx"),
                  {"host": "s3cr3t\\x5cx.local"})
    out = finalize(view, KEEP, policy)
    assert (out["uri"], out["host"], out["status_msg"]) == (f"/a/{R}", f"{R}.local", R)
    assert out["request_headers"] == {"host": f"{R}.local"}
    assert out["route"] == f"/a/{R}"


def test_control_characters_are_escaped() -> None:
    """Wire strings arrive escaped; values from the configuration (set, tags) are escaped here."""
    decision = Decision(tags=("a",), set_fields={"note": "line1\nline2\x1b[31mred\r", "n": 5, "b": True})
    out = finalize(TxView(record(status_msg="OK\x00")), decision, Policy())
    assert out["note"] == "line1\\x0aline2\\x1b[31mred\\x0d"
    assert out["status_msg"] == "OK\\x00"
    assert (out["n"], out["b"], out["tags"]) == (5, True, ["a"])
    assert "\\x5c" not in json.dumps(out["note"])  # an existing escape is not escaped again


def test_field_cap_truncates_with_a_marker_and_counts() -> None:
    policy = Policy(max_field_bytes=64)
    long_ua = "A" * 100
    escaped = "B" * 62 + "\\xff" + "C" * 10  # the cut at 64 falls inside \xff: cut before it
    out = finalize(TxView(record(user_agent=long_ua, status_msg=escaped, uri="/" + "x" * 63),
                          {"user-agent": [long_ua, "short"], "accept": long_ua}), KEEP, policy)
    assert out["user_agent"] == "A" * 64 + TRUNCATED
    assert out["status_msg"] == "B" * 62 + TRUNCATED
    assert out["uri"] == "/" + "x" * 63  # exactly the cap: kept whole
    assert out["request_headers"] == {"user-agent": ["A" * 64 + TRUNCATED, "short"]}  # accept: not allowed
    assert policy.truncated == 3
    assert policy.stats() == {"truncated_fields": 3, "routes": 1, "route_overflow": 0}


def test_field_cap_counts_bytes_of_non_ascii_values() -> None:
    policy = Policy(max_field_bytes=64)
    out = finalize(TxView(record()), Decision(set_fields={"team": "é" * 40}), policy)  # 80 bytes of UTF-8
    assert out["team"] == "é" * 32 + TRUNCATED
    assert policy.truncated == 1


def test_tags_set_fields_and_route_from_the_decision() -> None:
    policy = Policy(routes=RouteTemplater([RoutePattern("^/search", "/search")]))
    decision = Decision(tags=("error", "slow"), set_fields={"service": "shop", "tier": 2})
    out = finalize(TxView(record(uri="/search/abc?q=1")), decision, policy)
    assert (out["route"], out["tags"], out["service"], out["tier"]) == ("/search", ["error", "slow"], "shop", 2)
    out = finalize(TxView(record(uri=None, method=None)), KEEP, policy)  # a response without a request
    assert out["route"] is None


def test_a_parsed_transaction_leaves_no_secret_in_its_record_or_alert() -> None:
    """Wire bytes through the real parser, the rules and finalize, as the service wires them (the
    default policy: Authorization, Cookie, Set-Cookie and ?token= are in the default allow-list or uri)."""
    c, s, ack = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 0x10
    req = (b"GET /account?token=t0k3n-value&page=2 HTTP/1.1\r\nHost: shop.local\r\nAuthorization: Bearer "
           b"eyJhbGciOiJIUzI1NiJ9\r\nCookie: sid=s3ss10n; prefs=pr3fs\r\nReferer: http://shop.local/?password="
           b"refpass\r\n\r\n")
    resp = (b"HTTP/1.1 302 Found\r\nSet-Cookie: sid=n3wsess; Path=/; HttpOnly\r\nLocation: /next?access_token="
            b"l0cpass\r\nContent-Length: 0\r\n\r\n")
    segments = [Segment(1_000_000_000, c, s, 40000, 80, 100, 0, SYN, b""),
                Segment(1_001_000_000, s, c, 80, 40000, 500, 101, SYN | ack, b""),
                Segment(1_002_000_000, c, s, 40000, 80, 101, 501, ack, b""),
                Segment(1_003_000_000, c, s, 40000, 80, 101, 501, ack, req),
                Segment(1_004_000_000, s, c, 80, 40000, 501, 101 + len(req), ack, resp)]
    (tx,) = Pipeline().feed(1, [(i, ts / 1e9, f) for i, (ts, f) in enumerate(frames(segments))])
    assert tx.request is not None and tx.response is not None
    view = TxView({**to_record(tx), "event_id": "e1"}, tx.request.head.headers, tx.response.head.headers)
    rules = compile_rules([RawRule({"name": "redirects", "match": {"status": "3xx"}, "actions": {
        "alert": "{method} {uri} -> {status_code} ({referrer})", "tag": ["redirect"]}}, "F", "rules[0]")])
    decision = rules.evaluate(view)
    out = finalize(view, decision, Policy())
    alerts = [a.record(out) for a in decision.alerts]
    text = json.dumps([out, alerts])
    assert [v for v in SECRET_VALUES if v in text] == []
    assert out["request_headers"] == {"host": "shop.local", "authorization": f"Bearer {R}",
                                      "cookie": f"sid={R}; prefs={R}", "referer": f"http://shop.local/?password={R}"}
    assert out["response_headers"] == {"set-cookie": f"sid={R}; Path=/; HttpOnly",
                                       "location": f"/next?access_token={R}", "content-length": "0"}
    assert (out["uri"], out["route"], out["tags"]) == (f"/account?token={R}&page=2", "/account", ["redirect"])
    assert alerts[0]["message"] == f"GET /account?token={R}&page=2 -> 302 (http://shop.local/?password={R})"



def test_utf8_token_in_a_query_is_masked_whole() -> None:
    """A secret query value of UTF-8 text is masked to its end: the value stops at &, #, ; or ASCII
    white space only, not at U+00A0 or U+3000 inside it. Text around it is kept as text."""
    policy = Policy()
    uri = "/suche?q=K\u00f6ln&token=gr\u00fc\u00df\u00a0e\u3000\u6771\u4eac\U0001f600&x=\u00e9"
    out = finalize(TxView(record(uri=uri, referrer="http://u:p\u00e4ss\u00a0w\u00f6rt@h\u00f6st/?key=\u20ac1")),
                   KEEP, policy)
    assert out["uri"] == f"/suche?q=K\u00f6ln&token={R}&x=\u00e9"
    assert out["referrer"] == f"http://u:{R}@h\u00f6st/?key={R}"
    assert out["route"] == "/suche"
    # the same token as strings: ascii writes it
    ascii_uri = "/suche?q=K\\xc3\\xb6ln&token=gr\\xc3\\xbc\\xc3\\x9f\\xc2\\xa0e&x=1"
    assert finalize(TxView(record(uri=ascii_uri)), KEEP, policy)["uri"] == f"/suche?q=K\\xc3\\xb6ln&token={R}&x=1"


def test_utf8_secret_masked_in_both_forms() -> None:
    policy = Policy(secrets=("K\u00f6ln-geheim",))
    out = finalize(TxView(record(uri="/a/K\u00f6ln-geheim/b", host="x.K\u00f6ln-geheim.local",
                                 user_agent="ua K\\xc3\\xb6ln-geheim"),
                          {"host": "x.K\u00f6ln-geheim.local"}), KEEP, policy)
    assert (out["uri"], out["host"], out["user_agent"]) == (f"/a/{R}/b", f"x.{R}.local", f"ua {R}")
    assert out["request_headers"] == {"host": f"x.{R}.local"}


def test_unsafe_characters_from_the_configuration_are_escaped_as_their_bytes() -> None:
    """A rule's `set` value with a bidi override, a C1 control or U+2028: each written as the \\xNN of
    its UTF-8 bytes, as wire text is; other text stays."""
    decision = Decision(set_fields={"note": "a\u202eb\u0085c\u2028d \u00e9"})
    out = finalize(TxView(record()), decision, Policy())
    assert out["note"] == "a\\xe2\\x80\\xaeb\\xc2\\x85c\\xe2\\x80\\xa8d \u00e9"


def test_field_cap_does_not_split_utf8_text_from_the_wire() -> None:
    policy = Policy(max_field_bytes=64)
    out = finalize(TxView(record(uri="/" + "\u00f6" * 40)), KEEP, policy)  # 81 bytes of UTF-8
    assert out["uri"] == "/" + "\u00f6" * 31 + TRUNCATED  # 63 bytes: the 32nd ö would pass 64
    assert out["route"] == out["uri"]  # the path is its own route, capped the same way
    assert policy.truncated == 2


def test_a_file_name_that_is_not_utf8_passes_and_is_capped_by_its_written_bytes() -> None:
    """`run` names the capture file in each record; a name that is not UTF-8 (as Python decodes it, a
    lone surrogate) is kept for the output to write as \\udcNN, and the cap counts those 6 bytes (a cut
    name keeps the escape as text), where it used to raise UnicodeEncodeError."""
    name = "caf\udce9.pcap"
    assert finalize(TxView(record(pcap_file=name)), KEEP, Policy())["pcap_file"] == name
    policy = Policy(max_field_bytes=12)  # caf + \udce9 (6 bytes as written) + .pc
    assert finalize(TxView(record(pcap_file=name)), KEEP, policy)["pcap_file"] == "caf\\udce9.pc" + TRUNCATED
    assert policy.truncated == 1
