"""The redis output against a real redis-server the test starts (loopback, a free port, its files in
a tmp dir, stopped in finally): every record in the stream once and in order (by event_id); Redis
stopped mid-run and started again loses nothing while the buffer holds, and with a small buffer
the counters say exactly what was kept and dropped; a batch whose reply was lost (EXEC ran, the
connection broke) is not appended twice; MAXLEN ~ trims; publish mode reaches a subscriber.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.env import need_tool
from helpers.liveenv import wait_until
from helpers.outputservers import RedisServer, stream_ids

from analyzers import Strings
from watcher.config.model import RedisOutputConfig
from watcher.sinks import open_sink
from watcher.sinks.base import Backoff, Record
from watcher.sinks.jsontext import encode, utf8
from watcher.sinks.redis_sink import RedisSink

KEY = "pcapwatch:http"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    need_tool("redis-server")
    srv = RedisServer(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def record(i: int) -> Record:
    return {"ts": 1700000000.0 + i / 1000, "uid": f"C{i}", "trans_depth": 1, "src_ip": "192.0.2.10",
            "src_port": 40000 + i % 20000, "dst_ip": "192.0.2.80", "dst_port": 80, "method": "GET",
            "host": "shop.test", "uri": f"/item/{i}", "status_code": 200, "duration_ms": 1.0, "flags": [],
            "anomalies": [], "event_id": f"ev{i:07d}"}


def sink(srv: RedisServer, **kw: Any) -> RedisSink:
    s = open_sink(RedisOutputConfig("redis", "redis", srv.url, **kw))
    assert isinstance(s, RedisSink)
    s.backoff = Backoff(0.02, 0.2)
    return s


def ids(lo: int, hi: int) -> list[str]:
    return [f"ev{i:07d}" for i in range(lo, hi)]


def test_stream_gets_every_record_once_in_order(server: RedisServer) -> None:
    n = 20_000
    s = sink(server, buffer=n)
    try:
        for i in range(n):
            s.submit(record(i))
        assert s.flush(60)
        assert stream_ids(server) == ids(0, n)
        assert s.stats() == {"submitted": n, "written": n, "dropped": 0, "retries": 0, "errors": 0,
                             "reconnects": 0, "buffered": 0}
    finally:
        s.close(5)


def test_redis_restart_mid_run_loses_nothing_while_the_buffer_holds(server: RedisServer) -> None:
    n, rate = 6000, 2000.0  # records, per second: a 1 s outage needs about 2000 of the 10,000 buffer
    s = sink(server, buffer=10_000)
    stopped, started = threading.Event(), threading.Event()

    def outage() -> None:
        time.sleep(1.0)
        server.stop()
        stopped.set()
        time.sleep(1.0)
        server.start()
        started.set()

    t = threading.Thread(target=outage)
    try:
        t0 = time.monotonic()
        t.start()
        for i in range(n):
            s.submit(record(i))
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        t.join(30)
        assert stopped.is_set() and started.is_set()
        assert s.flush(30)
        assert stream_ids(server) == ids(0, n)
        st = s.stats()
        assert (st["submitted"], st["written"], st["dropped"], st["buffered"], st["reconnects"]) == (n, n, 0, 0, 1)
        assert st["errors"] >= 1 and st["retries"] >= 1
    finally:
        t.join(30)
        s.close(5)


def test_small_buffer_drops_are_counted_exactly(server: RedisServer) -> None:
    s = sink(server, buffer=500, batch=100)
    try:
        for lo in (0, 500):  # the buffer holds 500: submit while Redis is up in two halves
            for i in range(lo, lo + 500):
                s.submit(record(i))
            assert s.flush(30)
        server.stop()
        for i in range(1000, 3000):
            s.submit(record(i))
        assert wait_until(lambda: s.stats()["errors"] >= 2, 10.0)
        st = s.stats()
        assert (st["written"], st["buffered"], st["dropped"]) == (1000, 500, 1500)
        server.start()
        assert s.flush(30)
        # Kept: the 500 that fit in the buffer while Redis was down; the next 1500 dropped and counted.
        assert stream_ids(server) == ids(0, 1500)
        st = s.stats()
        assert (st["submitted"], st["written"], st["dropped"], st["buffered"], st["reconnects"]) == \
            (3000, 1500, 1500, 0, 1)
        assert st["written"] + st["dropped"] == st["submitted"]
        assert st["retries"] >= 1
    finally:
        s.close(5)


class ReplyEater:
    """A TCP proxy in front of Redis that, on the first connection carrying EXEC, forwards the request
    but swallows Redis's replies and closes the client's connection: the batch was applied, and the
    client cannot know."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.ate = threading.Event()
        self.threads: list[threading.Thread] = []
        self.stop = False
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"eat": False}
            self._spawn(self._pump, c, u, state, True)
            self._spawn(self._pump, u, c, state, False)

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict[str, bool], to_redis: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_redis and b"EXEC" in data and not self.ate.is_set():
                    state["eat"] = True
                    dst.sendall(data)
                    time.sleep(0.3)  # Redis runs the transaction; its reply goes nowhere
                    self.ate.set()
                    break
                if not to_redis and state["eat"]:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.stop = True
        with contextlib.suppress(OSError):  # wakes the blocked accept
            self.lsock.shutdown(socket.SHUT_RDWR)
        self.lsock.close()


def test_a_batch_whose_reply_was_lost_is_not_appended_twice(server: RedisServer) -> None:
    proxy = ReplyEater(server.port)
    s = RedisSink(RedisOutputConfig("redis", "redis", f"redis://127.0.0.1:{proxy.port}/0", batch=100))
    s.backoff = Backoff(0.02, 0.2)
    try:
        for i in range(250):
            s.submit(record(i))
        s.start()
        assert s.flush(30)
        assert proxy.ate.is_set()
        assert stream_ids(server) == ids(0, 250)
        st = s.stats()
        assert (st["written"], st["dropped"], st["retries"], st["reconnects"]) == (250, 0, 1, 1)
    finally:
        s.close(5)
        proxy.close()


def test_maxlen_trims_approximately(server: RedisServer) -> None:
    s = sink(server, maxlen=1000, batch=100)
    try:
        for i in range(5000):
            s.submit(record(i))
        assert s.flush(30)
        got = stream_ids(server)
        # Approximate trimming removes whole stream nodes (100 entries by default): at least MAXLEN kept,
        # less than one node more, always the newest.
        assert 1000 <= len(got) < 1100
        assert got == ids(5000 - len(got), 5000)
    finally:
        s.close(5)


def test_publish_mode_reaches_a_subscriber_in_order(server: RedisServer) -> None:
    sub = server.client().pubsub()
    sub.subscribe("pcapwatch:live")
    first = sub.get_message(timeout=5)
    assert first is not None and first["type"] == "subscribe"
    s = sink(server, mode="publish", key="pcapwatch:live")
    try:
        for i in range(1000):
            s.submit(record(i))
        assert s.flush(30)
        got: list[str] = []
        while len(got) < 1000:
            m = sub.get_message(timeout=5)
            assert m is not None
            got.append(json.loads(m["data"])["event_id"])
        assert got == ids(0, 1000)
        assert s.stats()["written"] == 1000
        assert server.client().exists(KEY) == 0  # nothing written to a stream
    finally:
        s.close(5)
        sub.close()


def test_utf8_text_in_the_stream_and_on_the_channel(server: RedisServer) -> None:
    """Redis holds the JSON's UTF-8 bytes (the text of /Köln as such); a capture file name that is not
    UTF-8 as its JSON escape (a record is not refused for it); strings: ascii as before, 7-bit."""
    text = {**record(1), "host": "k\u00f6ln.test", "uri": "/K\u00f6ln/\u6771\u4eac", "pcap_file": "caf\udce9.pcap"}
    sub = server.client().pubsub()
    sub.subscribe("pcapwatch:live")
    first = sub.get_message(timeout=5)
    assert first is not None and first["type"] == "subscribe"
    stream, channel = sink(server), sink(server, mode="publish", key="pcapwatch:live")
    try:
        for s in (stream, channel):
            s.submit(text)
            assert s.flush(30)
            s.strings = Strings.ASCII
            s.submit(text)
            assert s.flush(30)
            assert s.stats()["written"] == 2
        m = [sub.get_message(timeout=5) for _ in range(2)]
        assert all(x is not None for x in m)
        stored = [f[b"json"] for _, f in server.client().xrange(KEY)]  # type: ignore[index,union-attr]
        published = [x["data"] for x in m if x is not None]
        want = [utf8(encode(text)), encode(text, Strings.ASCII).encode("ascii")]
        assert stored == published == want
        assert b'"uri":"/K\xc3\xb6ln/\xe6\x9d\xb1\xe4\xba\xac"' in want[0]
        assert b'"pcap_file":"caf\\udce9.pcap"' in want[0]
        assert b'"uri":"/K\\u00f6ln/\\u6771\\u4eac"' in want[1]
        assert json.loads(stored[0]) == json.loads(stored[1]) == text
    finally:
        stream.close(5)
        channel.close(5)
        sub.close()


def test_bad_mode_and_url_fail_at_start() -> None:
    with pytest.raises(ValueError, match="mode must be one of stream, publish, not 'list'"):
        RedisSink(RedisOutputConfig("r", "redis", mode="list"))
    with pytest.raises(ValueError):
        RedisSink(RedisOutputConfig("r", "redis", url="http://127.0.0.1:6379"))
