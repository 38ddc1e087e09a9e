"""The live tests' HTTP traffic, and two accounts of it that do not come from pcapwatch: the paced
clients that send it (what each request got back) and tshark's reading of its capture.

All three sides count transactions as (method, uri, status) `Key`s, `key()` giving a record's, so a
test compares them as Counters. Requests carry a unique query string (`?i=N`), so each record can be
matched to the one request that caused it.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.env import need_tool
from helpers.liveenv import STOP_SECONDS

Key = tuple[str, str, int | None]  # (method, uri, status) of one transaction


def key(rec: dict[str, Any]) -> Key:
    return rec["method"], rec["uri"], rec["status_code"]


# Clients ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    uri: str
    body: bytes = b""


@dataclass
class Sent:
    method: str
    uri: str
    status: int
    t_send: float  # wall clock just before the request was written


def request_plan(n: int, first: int = 0, mix: Sequence[tuple[str, str]] = ()) -> list[Request]:
    """`n` requests cycling through `mix` (method, path); each uri unique by its `?i=` index."""
    mix = mix or (("GET", "/100k.bin"), ("GET", "/100k.bin"), ("HEAD", "/100k.bin"), ("GET", "/100k.bin"),
                  ("GET", "/missing.html"), ("POST", "/1k.bin"), ("GET", "/100k.bin"), ("GET", "/10k.bin"))
    out = []
    for i in range(first, first + n):
        method, path = mix[i % len(mix)]
        out.append(Request(method, f"{path}?i={i}", b"x" * 1000 if method == "POST" else b""))
    return out


@dataclass
class Clients:
    """Sends a plan of requests at a steady rate over a few keep-alive connections (or one
    connection per request), in a thread; `sent` fills as responses come back."""

    port: int
    plan: list[Request]
    rate: float  # requests per second
    connections: int = 2
    close: bool = False  # Connection: close on every request
    sent: list[Sent] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="http-clients", daemon=True)
        self.halt = threading.Event()

    def start(self) -> Clients:
        self.thread.start()
        return self

    def join(self, timeout: float) -> list[Sent]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.halt.set()
            self.thread.join(STOP_SECONDS)
            raise RuntimeError(f"clients did not finish {len(self.plan)} requests in {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"client failed after {len(self.sent)} requests: {self.error!r}")
        return self.sent

    def run(self, timeout: float | None = None) -> list[Sent]:
        return self.start().join(timeout or len(self.plan) / self.rate + 30.0)

    def _run(self) -> None:
        conns: list[http.client.HTTPConnection | None] = [None] * self.connections
        t0 = time.monotonic()
        try:
            for i, req in enumerate(self.plan):
                if self.halt.is_set():
                    return
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                slot = i % self.connections
                conn = conns[slot]
                if conn is None:
                    conn = conns[slot] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                headers = {"Connection": "close"} if self.close else {}
                t_send = time.time()
                conn.request(req.method, req.uri, body=req.body or None, headers=headers)
                resp = conn.getresponse()
                resp.read()
                self.sent.append(Sent(req.method, req.uri, resp.status, t_send))
                if self.close or resp.will_close:
                    conn.close()
                    conns[slot] = None
        except BaseException as e:
            self.error = e
        finally:
            for c in conns:
                if c is not None:
                    c.close()


def sent_keys(sent: Sequence[Sent]) -> Counter[Key]:
    return Counter((s.method, s.uri, s.status) for s in sent)


# tshark -----------------------------------------------------------------------------------------

TSHARK_PREFS = ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "http.desegment_headers:TRUE",
                "-o", "http.desegment_body:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE"]


def tshark_transactions(capture: Path, port: int) -> Counter[Key]:
    """(method, uri, status) of every request tshark finds (the command of
    ../shared/corpus/tools/gt_tshark.py, reduced to the fields compared here).

    Requests and responses are paired in order per TCP stream, not by `http.request_in`: nginx
    answers a POST to a file with 405 before the body has arrived, and tshark, which completes the
    request only with its body, then leaves that response unpaired. The clients never pipeline.
    """
    need_tool("tshark")
    cmd = ["tshark", "-n", "-r", str(capture), *TSHARK_PREFS, "-d", f"tcp.port=={port},http",
           "-Y", "http.request or http.response", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
           "-E", "aggregator=,", "-e", "frame.number", "-e", "tcp.stream", "-e", "http.request.method",
           "-e", "http.request.uri", "-e", "http.response.code"]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout.decode()
    requests: dict[str, list[tuple[str, str]]] = {}
    responses: dict[str, list[int]] = {}
    for line in out.splitlines():
        frame, stream, method, uri, code = line.split("\t")
        assert "," not in method + code, f"frame {frame}: several messages in one frame, not expected here"
        if method:
            requests.setdefault(stream, []).append((method, uri))
        if code:
            responses.setdefault(stream, []).append(int(code))
    found: Counter[Key] = Counter()
    for stream, reqs in requests.items():
        codes = responses.get(stream, [])
        found.update((m, u, codes[i] if i < len(codes) else None) for i, (m, u) in enumerate(reqs))
    return found
