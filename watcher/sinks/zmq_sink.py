"""A live tap: a ZeroMQ publisher of `[topic, json]` per transaction. The only module importing pyzmq.

Topics are `http.<status class>` (`http.2xx`, `http.5xx`, `http.none` when there was no response), so
a subscriber picks what it wants by prefix (`http.5` for server errors). With `per_message` each
transaction is also published as its two messages, monitored-queue style: `[b"in", client, request
json]` and `[b"out", client, response json]`, `client` being the client's ip:port.

The socket is an XPUB: it publishes like PUB, never blocking (a subscriber slower than its SNDHWM
loses messages, the others and the pipeline do not notice), and it also tells us who subscribed, so
`stats()["subscriptions"]` shows whether anyone is watching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from analyzers import Strings
from watcher.config.model import ZmqOutputConfig
from watcher.sinks.base import Log, Record, Sink, stderr_log
from watcher.sinks.jsontext import encode, utf8

# Messages queued per subscriber before libzmq drops for that subscriber: a few seconds of a busy
# server, a few MB of memory per subscriber.
SNDHWM = 10_000
# At close, how long queued messages may still go out to subscribers.
LINGER_MS = 500
# How often the worker reads subscriptions and retries a failed bind when there is nothing to send.
IDLE_SECONDS = 0.1
# Messages a subscriber may queue before the publisher drops for it (the publisher's SNDHWM applies too).
RCVHWM = 100_000

IDENTITY_FIELDS = ("ts", "uid", "trans_depth", "event_id", "src_ip", "src_port", "dst_ip", "dst_port")
REQUEST_FIELDS = (*IDENTITY_FIELDS, "method", "host", "uri", "route", "version", "user_agent", "referrer",
                  "request_body_len", "request_headers")
RESPONSE_FIELDS = (*IDENTITY_FIELDS, "status_code", "status_msg", "info_code", "response_body_len",
                   "response_content_type", "ttfb_ms", "duration_ms", "response_headers", "flags", "anomalies",
                   "reason")


def status_class(status: Any) -> str:
    """`2xx` for 200..299; `none` for a transaction without a response."""
    return f"{status // 100}xx" if isinstance(status, int) and status > 0 else "none"


def client_of(r: Record) -> str:
    ip = r.get("src_ip")
    ip = f"[{ip}]" if ip is not None and ":" in ip else str(ip)
    return f"{ip}:{r.get('src_port')}"


def messages(r: Record, per_message: bool, strings: Strings = Strings.UTF8) -> list[list[bytes]]:
    """The multipart messages one record is published as, in order: in, out, then the transaction
    (JSON in UTF-8, `strings` as `encode` takes it)."""
    out: list[list[bytes]] = []
    if per_message and "level" not in r:
        flags = r.get("flags") or ()
        client = client_of(r).encode()
        if "no_request" not in flags:
            out.append([b"in", client, utf8(encode({k: r[k] for k in REQUEST_FIELDS if k in r}, strings))])
        if "no_response" not in flags:
            out.append([b"out", client, utf8(encode({k: r[k] for k in RESPONSE_FIELDS if k in r}, strings))])
    topic = "alert" if "level" in r else f"http.{status_class(r.get('status_code'))}"
    out.append([topic.encode(), utf8(encode(r, strings))])
    return out


class ZmqSink(Sink):
    """Output `type: zmq`: `config.bind` is a ZeroMQ endpoint; `tcp://127.0.0.1:*` picks a free port
    (see `endpoint`)."""

    kind = "zmq output"
    retryable = (zmq.ZMQError, OSError)
    idle_seconds = IDLE_SECONDS

    def __init__(self, config: ZmqOutputConfig, log: Log = stderr_log) -> None:
        super().__init__(config.name, config.buffer, log=log)
        self.bind = config.bind
        self.per_message = config.per_message
        self.endpoint: str | None = None  # the bound endpoint, once bound (with the port `*` chose)
        self._ctx = zmq.Context()  # our own: closing it cannot disturb another user of pyzmq
        self._sock: zmq.Socket[bytes] | None = None
        self._subscriptions = 0

    def _connect(self) -> None:
        s = self._ctx.socket(zmq.XPUB)
        try:
            s.setsockopt(zmq.SNDHWM, SNDHWM)
            s.setsockopt(zmq.LINGER, LINGER_MS)
            s.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription reaches us: a true count
            s.bind(self.bind)
            self.endpoint = s.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError:
            s.close(0)
            raise
        self._sock = s

    def _disconnect(self) -> None:
        if self._sock is not None:
            s, self._sock = self._sock, None
            s.close()
            with self._lock:
                self._subscriptions = 0

    def _idle(self) -> None:
        self._read_subscriptions()

    def _read_subscriptions(self) -> None:
        s = self._sock
        assert s is not None
        delta = 0
        while True:
            try:
                msg = s.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if msg[:1] == b"\x01":
                delta += 1
            elif msg[:1] == b"\x00":
                delta -= 1
        if delta:
            with self._lock:
                self._subscriptions += delta

    def _send(self, batch: list[Record]) -> int:
        s = self._sock
        assert s is not None
        self._read_subscriptions()
        written = 0
        for r in batch:
            try:
                for frames in messages(r, self.per_message, self.strings):
                    s.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                continue  # counted dropped by the caller
            written += 1
        return written

    def stats(self) -> dict[str, int]:
        s = super().stats()
        with self._lock:
            s["subscriptions"] = self._subscriptions
        return s

    def close(self, timeout: float) -> None:
        super().close(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._ctx.term()


class Subscriber:
    """The other end of the tap (for `pcapwatch tail` and tests): a SUB socket on topic prefixes."""

    def __init__(self, connect: str, topics: Sequence[str]) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, RCVHWM)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.connect(connect)
        except zmq.ZMQError as e:
            self.close()
            raise ValueError(f"{connect}: {e}") from None
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode())

    def receive(self, timeout_ms: int) -> list[bytes] | None:
        """The next message's frames, or None when none came within the timeout."""
        if not self._sock.poll(timeout_ms):
            return None
        return self._sock.recv_multipart()

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()
