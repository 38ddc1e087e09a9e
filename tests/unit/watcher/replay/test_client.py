"""The client against a real local server: keep-alive, timeouts, retries, breaker."""

from __future__ import annotations

import random
import socket
import time

from helpers.shadow import Shadow

from watcher.replay.breaker import Breaker, BreakerState
from watcher.replay.client import Answer, Client, FailReason, Failure
from watcher.replay.policy import Request, Target


def req(path: str, method: str = "GET", body: bytes = b"") -> Request:
    headers = [("host", "x"), ("X-Request-ID", "id-" + path)]
    if method == "POST":
        headers.append(("content-length", str(len(body))))
    return Request(method, path, headers, body, "id")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_keep_alive_and_answers() -> None:
    shadow = Shadow({"/slow": {"delay": 0.2, "status": 503, "body": "no"}})
    try:
        logs: list[str] = []
        c = Client(Target(shadow.url, "127.0.0.1", shadow.port, ""), Breaker(logs.append, time.monotonic))
        for i in range(5):
            a = c.send(req(f"/a{i}"))
            assert isinstance(a, Answer) and a.status == 200 and a.body == f"ok /a{i}\n".encode()
        a = c.send(req("/p", "POST", b"abc"))
        assert isinstance(a, Answer)
        a = c.send(req("/slow"))
        assert isinstance(a, Answer) and a.status == 503 and a.body == b"no" and a.latency >= 0.2
        assert c.opened == 1  # one connection, kept alive
        assert shadow.log[:2] == ["GET /a0 id-/a0 0", "GET /a1 id-/a1 0"] and shadow.log[5] == "POST /p id-/p 3"
        c.close()
    finally:
        shadow.close()


def test_read_timeout_is_a_failure_not_retried() -> None:
    shadow = Shadow({"/slow": {"delay": 0.5}})
    try:
        c = Client(Target(shadow.url, "127.0.0.1", shadow.port, ""), Breaker(print, time.monotonic), read_timeout=0.1)
        f = c.send(req("/slow"))
        assert isinstance(f, Failure) and f.reason == FailReason.READ_TIMEOUT and f.attempts == 1
        time.sleep(0.5)
        assert shadow.log == ["GET /slow id-/slow 0"]
    finally:
        shadow.close()


def test_connection_refused_retries_idempotent_only_within_the_delay_bound_then_breaker_opens() -> None:
    port = free_port()
    logs: list[str] = []
    slept: list[float] = []
    b = Breaker(logs.append, time.monotonic, threshold=5, probe_delay=60)
    c = Client(Target(f"http://127.0.0.1:{port}", "127.0.0.1", port, ""), b, sleep=slept.append,
               max_retry_delay=0.3, rng=random.Random(1))
    f = c.send(req("/"))
    assert isinstance(f, Failure) and f.reason == FailReason.CONNECT and f.attempts >= 2
    assert sum(slept) <= 0.3 and len(slept) == f.attempts - 1
    assert all(d <= 0.05 * 2 ** i for i, d in enumerate(slept))  # exponential bound, jittered below it
    n = len(slept)
    f = c.send(req("/", "POST", b"x"))
    assert isinstance(f, Failure) and f.attempts == 1 and len(slept) == n  # POST: never retried
    while b.state is BreakerState.CLOSED:
        c.send(req("/"))
    assert len(logs) == 1
    f = c.send(req("/"))
    assert isinstance(f, Failure) and f.reason == FailReason.BREAKER_OPEN and f.attempts == 0
