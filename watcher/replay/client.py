"""The replay client: a keep-alive connection pool over http.client, with connect and read
timeouts, retries of idempotent requests on connection failures only (exponential backoff with
full jitter, bounded total delay), and a circuit breaker in front (breaker.py)."""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watcher.replay.breaker import Breaker
from watcher.replay.policy import Request, Target

DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 10.0
RETRY_BASE = 0.05  # first backoff, doubled per attempt (then jittered)
MAX_RETRY_DELAY = 2.0  # all backoff of one request together: past it the request has failed
# A shadow's answer is read whole to hash it; past this a body is hashed as far as it was read.
MAX_RESPONSE_BYTES = 8 << 20


class FailReason:
    CONNECT = "connect"
    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"
    RESET = "reset"
    BAD_RESPONSE = "bad_response"
    BREAKER_OPEN = "breaker_open"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes
    latency: float  # seconds from sending to the end of the body
    attempts: int


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    attempts: int
    detail: str = ""


class _Conn(http.client.HTTPConnection):
    """HTTPConnection with a connect timeout distinct from the read timeout."""

    def __init__(self, host: str, port: int, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=read_timeout)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.timeout)


class _Connect(Exception):
    """Connecting failed: nothing was sent, a retry is safe for any idempotent request."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Client:
    """Sends `Request`s to one target over up to `size` kept-alive connections (thread-safe)."""

    def __init__(self, target: Target, breaker: Breaker, *, size: int = 4,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 max_retry_delay: float = MAX_RETRY_DELAY, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
        self.target, self.breaker = target, breaker
        self.size = size
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_retry_delay = max_retry_delay
        self.clock, self.sleep = clock, sleep
        self.rng = rng or random.Random()
        self.idle: list[_Conn] = []
        self.lock = threading.Lock()
        self.opened = 0  # connections made, for tests of keep-alive

    def send(self, req: Request) -> Answer | Failure:
        if not self.breaker.allow():
            return Failure(FailReason.BREAKER_OPEN, 0)
        attempts = 0
        waited = 0.0
        while True:
            attempts += 1
            try:
                answer = self._once(req, attempts)
            except _Connect as e:
                if e.reason == FailReason.RESET and attempts == 1 and req.idempotent:
                    continue  # a kept-alive connection the server had closed: try a fresh one
                self.breaker.failure()
                delay = self.rng.uniform(0, RETRY_BASE * 2 ** (attempts - 1))  # full jitter
                if not req.idempotent or waited + delay > self.max_retry_delay or not self.breaker.allow():
                    return Failure(e.reason, attempts, str(e))
                self.sleep(delay)
                waited += delay
                continue
            if isinstance(answer, Failure):
                self.breaker.failure()
            else:
                self.breaker.success()
            return answer

    def _once(self, req: Request, attempt: int) -> Answer | Failure:
        conn, reused = self._take()
        start = self.clock()
        try:
            if not reused:
                try:
                    conn.connect()
                except TimeoutError as e:
                    raise _Connect(FailReason.CONNECT_TIMEOUT, str(e)) from None
                except OSError as e:
                    raise _Connect(FailReason.CONNECT, e.strerror or str(e)) from None
                start = self.clock()
            conn.putrequest(req.method, req.target, skip_host=True, skip_accept_encoding=True)
            for name, value in req.headers:
                conn.putheader(name, value)
            conn.endheaders(req.body or None)
            resp = conn.getresponse()
            body = resp.read(MAX_RESPONSE_BYTES)
            latency = self.clock() - start
            headers: dict[str, str] = {}
            for name, value in resp.getheaders():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            keep = not resp.will_close and resp.isclosed()
        except _Connect:
            conn.close()
            raise
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
            conn.close()
            if reused:  # the server closed an idle kept-alive connection: nothing was answered
                raise _Connect(FailReason.RESET, str(e)) from None
            return Failure(FailReason.RESET, attempt, str(e))
        except TimeoutError as e:
            conn.close()
            return Failure(FailReason.READ_TIMEOUT, attempt, str(e))
        except (http.client.HTTPException, OSError) as e:
            conn.close()
            return Failure(FailReason.BAD_RESPONSE, attempt, str(e))
        if keep:
            self._give(conn)
        else:
            conn.close()
        return Answer(resp.status, headers, body, latency, attempt)

    def _take(self) -> tuple[_Conn, bool]:
        with self.lock:
            if self.idle:
                return self.idle.pop(), True
            self.opened += 1
        return _Conn(self.target.host, self.target.port, self.connect_timeout, self.read_timeout), False

    def _give(self, conn: _Conn) -> None:
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
