"""Secrets in no output: `pcapwatch run` as a subprocess with an output of every type, real servers behind it.

A capture crafted here whose requests and responses carry credentials, cookies, secret query
parameters, a secret API-key header and a configured `redact.secrets` literal goes through a
service with every output type (jsonl flat and ecs, syslog, redis, zmq with `pcapwatch tail --json`
subscribed before any record flows, prometheus), against a real redis-server and rsyslogd started
for the module (outputservers.py). No secret reaches the raw bytes of any output nor the service's
log; what is not secret (the schemes, cookie names, parameter names, the transactions) does.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers import pcapgen as g
from helpers.env import read_records
from helpers.liveenv import free_port, read_jsonl, service, wait_for
from helpers.outputrun import Metrics, outputs_config, put, scrape, settled, write_yaml
from helpers.outputservers import (
    RedisServer,
    Servers,
    http_get,
    output_servers,
    start_tail,
    stream_ids,
    syslog_messages,
)
from helpers.pcapgen import Conn, Segment

REDACT_HOST = "redaction-run"  # syslog HOSTNAME of the run's messages


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with output_servers(tmp_path_factory.mktemp("outputs"), prometheus=False) as started:
        yield started


# The redaction run -----------------------------------------------------------------------------

LITERAL = "s3cr3t-XYZ-123"  # configured in redact.secrets
BASIC = base64.b64encode(b"alice:s3cr3t-BASIC-9001").decode()
SECRETS = {
    "basic": BASIC,
    "bearer": "s3cr3t-BEARER-eyJhbGciOi.e30.x",
    "cookie": "s3cr3t-COOKIE-1234",
    "set-cookie": "s3cr3t-SETCOOKIE-5678",
    "token": "s3cr3t-TOKEN-4711",
    "password": "s3cr3t-PASSWORD-0815",
    "api-key": "s3cr3t-APIKEY-42",
    "literal": LITERAL,
}
R = "<redacted>"
T0 = 1_700_000_000 * 10**9


def request(method: str, uri: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {uri} HTTP/1.1", "Host: vault.test", *headers, "", ""]).encode()


def response(status: str, *headers: str, body: bytes = b"ok\n") -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(head).encode() + body


S = SECRETS


class Exchange(NamedTuple):
    """One transaction on the wire, and what the records must show of it."""

    request: bytes
    response: bytes
    uri: str
    status: int
    request_headers: dict[str, str]  # the logged ones but host
    response_headers: dict[str, str]  # set-cookie and location


# By connection.
EXCHANGES: list[list[Exchange]] = [
    [
        Exchange(request("GET", f"/login?token={S['token']}&password={S['password']}&page=2",
                         f"Authorization: Basic {BASIC}"),
                 response("200 OK", f"Set-Cookie: id={S['set-cookie']}; Path=/; HttpOnly"),
                 f"/login?token={R}&password={R}&page=2", 200, {"authorization": f"Basic {R}"},
                 {"set-cookie": f"id={R}; Path=/; HttpOnly"}),
        Exchange(request("GET", "/account", f"Authorization: Bearer {S['bearer']}",
                         f"Cookie: session={S['cookie']}; theme=dark"),
                 response("200 OK"), "/account", 200,
                 {"authorization": f"Bearer {R}", "cookie": f"session={R}; theme={R}"}, {}),
        Exchange(request("GET", f"/vault/{LITERAL}/open", f"User-Agent: probe/1.0 ({LITERAL})"),
                 response("404 Not Found"), f"/vault/{R}/open", 404, {"user-agent": f"probe/1.0 ({R})"}, {}),
    ],
    [
        Exchange(request("POST", "/api/items", f"X-Api-Key: {S['api-key']}", "Content-Length: 2",
                         f"Referer: http://vault.test/login?token={S['token']}") + b"{}",
                 response("302 Found", f"Location: /items?password={S['password']}&x=1", body=b""),
                 "/api/items", 302,
                 {"x-api-key": R, "content-length": "2", "referer": f"http://vault.test/login?token={R}"},
                 {"location": f"/items?password={R}&x=1"}),
        Exchange(request("GET", f"/files/{LITERAL}.txt?password={S['password']}", f"Cookie: session={S['cookie']}"),
                 response("200 OK", f"Set-Cookie: id={S['set-cookie']}"), f"/files/{R}.txt?password={R}", 200,
                 {"cookie": f"session={R}"}, {"set-cookie": f"id={R}"}),
    ],
]
EXPECTED = [e for conn in EXCHANGES for e in conn]
# Not secret, so in every output that carries the headers (as compact JSON, the way they are written).
VISIBLE = [b'"authorization":"Basic <redacted>"', b'"authorization":"Bearer <redacted>"',
           b'"cookie":"session=<redacted>; theme=<redacted>"', b'"set-cookie":"id=<redacted>; Path=/; HttpOnly"',
           b"token=<redacted>&password=<redacted>&page=2", b"/vault/<redacted>/open", b'"x-api-key":"<redacted>"']


def secret_capture() -> bytes:
    """The exchanges on two keep-alive connections, interleaved in time, each closed with FIN."""
    segments: list[Segment] = []
    for n, exchanges in enumerate(EXCHANGES):
        out: list[Segment] = []
        c = Conn(out, n + 1)
        t = T0 + n * 500_000
        c.open(t)
        t += 1_000_000
        for e in exchanges:
            t = c.send(t, True, e.request) + 1_000_000
            t = c.send(t, False, e.response) + 1_000_000
        c.close(t)
        segments += out
    segments.sort(key=lambda s: s.ts_ns)
    return g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(segments))


@dataclass
class RedactionRun:
    outputs: dict[str, bytes]  # raw bytes of every output and of the service's log, by name
    records: list[dict[str, Any]]
    lines: list[str]
    ecs: list[dict[str, Any]]
    stream: list[str]
    syslog: list[str]
    tail: list[str]
    tail_exit: tuple[int, str]
    metrics: Metrics
    exit_code: int


def stream_bytes(srv: RedisServer, key: str) -> bytes:
    """Every entry of a stream as stored, one a line."""
    entries: Any = srv.client().xrange(key)  # redis-py's reply type is a union of sync and async
    return b"\n".join(f[b"json"] for _, f in entries)


@pytest.fixture(scope="module")
def redaction_run(servers: Servers) -> RedactionRun:
    """The crafted capture through a service with every output; the service stopped (its log complete)."""
    base = servers.base / "redaction"
    spool = base / "spool"
    spool.mkdir(parents=True)
    zmq_port, metrics_port = free_port(), free_port()
    outputs = outputs_config(base, servers, syslog=f"unix:{servers.rsyslog.sock}", hostname=REDACT_HOST,
                             key="pcapwatch:redaction", zmq_port=zmq_port, metrics_port=metrics_port)
    config = write_yaml(base / "pcapwatch.yaml", {
        "spool": {"dir": str(spool), "rescan_seconds": 0.5},
        "state": {"dir": str(base / "state"), "checkpoint_seconds": 1.0},
        "outputs": outputs,
        "headers": {"request": ["host", "user-agent", "referer", "content-length", "authorization", "cookie",
                                "x-api-key"]},
        "redact": {"headers": ["x-api-key"], "secrets": [LITERAL]},
    })
    n = len(EXPECTED)
    stderr = base / "pcapwatch.stderr"
    names = tuple(o["name"] for o in outputs)
    records = base / "records.jsonl"
    with service(config, stderr) as svc:
        tail = start_tail(zmq_port)
        try:
            put(spool, "cap.pcap", secret_capture())
            wait_for("the records", lambda: len(read_jsonl(records)) >= n)
            wait_for("the outputs to deliver", lambda: settled(metrics_port, names))
            wait_for("rsyslog to write every record", lambda: len(syslog_messages(servers.rsyslog, REDACT_HOST)) >= n)
            wait_for("pcapwatch tail to print every record", lambda: len(tail.lines) >= n)
            time.sleep(0.5)  # and nothing more
            svc.send(signal.SIGUSR1)  # the status line goes to the log too
            assert svc.wait_log(f"info: records {n}, ")
            metrics_text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")[2]
            metrics = scrape(metrics_port)
        finally:
            tail_exit = tail.stop()
    return RedactionRun(
        outputs={"jsonl flat": records.read_bytes(), "jsonl ecs": (base / "ecs.jsonl").read_bytes(),
                 "rsyslog file": servers.rsyslog.out.read_bytes(),
                 "redis stream": stream_bytes(servers.redis, "pcapwatch:redaction"),
                 "pcapwatch tail": "\n".join(tail.lines).encode(), "prometheus /metrics": metrics_text,
                 "service log": stderr.read_bytes()},
        records=read_jsonl(records), lines=records.read_text().splitlines(), ecs=read_jsonl(base / "ecs.jsonl"),
        stream=stream_ids(servers.redis, "pcapwatch:redaction"), syslog=syslog_messages(servers.rsyslog, REDACT_HOST),
        tail=list(tail.lines), tail_exit=tail_exit, metrics=metrics, exit_code=svc.proc.returncode)


def test_the_crafted_capture_carries_the_secrets(tmp_path: Path) -> None:
    """The secrets are on the wire: `pcapwatch read` (no redaction) shows them, in every transaction."""
    data = secret_capture()
    assert all(s.encode() in data for s in SECRETS.values())
    path = tmp_path / "secrets.pcap"
    path.write_bytes(data)
    records, _, _ = read_records(path)
    assert sorted((r["method"], r["status_code"]) for r in records) == sorted(
        (e.request.split(b" ", 1)[0].decode(), e.status) for e in EXPECTED)
    assert LITERAL in json.dumps(records) and S["token"] in json.dumps(records)


def test_no_secret_in_any_output(redaction_run: RedactionRun) -> None:
    outputs = redaction_run.outputs
    assert [name for name, raw in outputs.items() if not raw] == []
    leaks = {name: [k for k, s in SECRETS.items() if s.encode() in raw] for name, raw in outputs.items()}
    assert leaks == {name: [] for name in outputs}
    assert [name for name, raw in outputs.items() if b"s3cr3t" in raw] == []  # not even a part of one
    assert redaction_run.exit_code == 0


def test_what_is_not_secret_is_in_every_output(redaction_run: RedactionRun) -> None:
    carrying_headers = ("jsonl flat", "jsonl ecs", "rsyslog file", "redis stream", "pcapwatch tail")
    missing = {name: [v.decode() for v in VISIBLE if v not in redaction_run.outputs[name]] for name in carrying_headers}
    assert missing == {name: [] for name in carrying_headers}
    metrics = redaction_run.outputs["prometheus /metrics"].decode()
    assert 'route="/vault/<redacted>/open"' in metrics and 'host="vault.test"' in metrics
    assert "pcapwatch: info: records 5, " in redaction_run.outputs["service log"].decode()


def test_every_transaction_is_in_every_output(redaction_run: RedactionRun) -> None:
    run = redaction_run
    got = {r["uri"]: (r["status_code"], {k: v for k, v in r["request_headers"].items() if k != "host"},
                      {k: v for k, v in r["response_headers"].items() if k in ("set-cookie", "location")})
           for r in run.records}
    assert got == {e.uri: (e.status, e.request_headers, e.response_headers) for e in EXPECTED}
    assert len(run.records) == len(EXPECTED)
    ids = [r["event_id"] for r in run.records]
    assert [d["event"]["id"] for d in run.ecs] == ids
    assert run.stream == ids
    assert run.syslog == run.lines
    assert run.tail == run.lines and run.tail_exit == (0, "")
    assert sum(v for (name, labels), v in run.metrics.items()
               if name == "pcapwatch_http_transactions_total" and ("host", "vault.test") in labels) == len(ids)
