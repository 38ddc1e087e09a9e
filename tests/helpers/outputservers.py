"""The real servers the outputs deliver to, started by the tests: Prometheus, redis-server, rsyslogd;
and `pcapwatch tail`, the zmq output's subscriber.

Each runs with its own configuration and data under a test's tmp directory, on free loopback ports,
and is stopped by its `stop()`. They are the outputs' other ends, so a test checks what a server
received, not what a sink says it sent. `output_servers` starts them together for the runs of
the service with every output (test_run_outputs, test_run_redaction).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from helpers.env import need_tool
from helpers.liveenv import PCAPWATCH, START_SECONDS, free_port, wait_for

SETTLE_SECONDS = 0.5  # after tail's TCP connection: its subscription reaches the publisher


def http_get(url: str, headers: dict[str, str] | None = None,
             method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; an HTTP error status is an answer, not an exception."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Prometheus:
    """A Prometheus server on a free loopback port scraping `target` every second; tmp config and storage."""

    def __init__(self, tmp: Path, target: str) -> None:
        need_tool("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: pcapwatch\n    metrics_path: /metrics\n"
                          f"    static_configs:\n      - targets: ['{target}']\n")
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return http_get(self.url + "/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, expr: str) -> dict[str, Any]:
        """POST /api/v1/query; the whole answer (status, data or error)."""
        body = urllib.parse.urlencode({"query": expr}).encode()
        req = urllib.request.Request(self.url + "/api/v1/query", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            return json.load(e)  # type: ignore[no-any-return]

    def vector(self, expr: str, label: str | None = None) -> dict[str | None, float]:
        """An instant vector as {value of `label` (None without one): value}."""
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return {(s["metric"].get(label) if label else None): float(s["value"][1]) for s in answer["data"]["result"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


REDIS_KEY = "pcapwatch:http"  # the redis output's default stream


class RedisServer:
    """redis-server with an append-only file fsynced per write, so a stop and start keeps the stream."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        end = time.monotonic() + START_SECONDS
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.RedisError:
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
                assert time.monotonic() < end, "redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=1)


def stream_ids(srv: RedisServer, key: str = REDIS_KEY) -> list[str]:
    """The event_id of every entry of a stream the redis output wrote, in stream order."""
    return [json.loads(f[b"json"])["event_id"] for _, f in srv.client().xrange(key)]  # type: ignore[index,union-attr]


# rsyslog writes each message as these fields, rsyslog's parse of each RFC 5424 field, `|`-separated.
RSYSLOG_FIELDS = ("%syslogfacility-text%|%syslogseverity-text%|%timereported:::date-rfc3339%|%hostname%|"
                  "%app-name%|%procid%|%msgid%|%structured-data%|%msg%\\n")


class Rsyslog:
    """rsyslogd with its own configuration in `workdir`: imuxsock on a tmp socket, imudp and imtcp on
    free loopback ports; every message whose APP-NAME is pcapwatch written to `out` as RSYSLOG_FIELDS."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.sock = workdir / "log.sock"
        self.out = workdir / "messages"
        self.udp, self.tcp = free_port(), free_port()
        self.conf = workdir / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{workdir}" maxMessageSize="256k")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
input(type="imuxsock" Socket="{self.sock}" UseSpecialParser="off" ParseHostname="on"
      IgnoreTimestamp="off")
input(type="imudp" address="127.0.0.1" port="{self.udp}" rcvbufSize="16m")
input(type="imtcp" address="127.0.0.1" port="{self.tcp}")
template(name="fields" type="string" string="{RSYSLOG_FIELDS}")
if $app-name == "pcapwatch" then action(type="omfile" file="{self.out}" template="fields")
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        rsyslogd = "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else "rsyslogd"
        self.proc = subprocess.Popen([rsyslogd, "-n", "-f", str(self.conf), "-i", str(self.dir / "pid")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        end = time.monotonic() + START_SECONDS
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[0].decode()
            if self.sock.exists() and self._tcp_up() and self._udp_up():
                return
            assert time.monotonic() < end, "rsyslogd did not start"
            time.sleep(0.05)

    def _tcp_up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.tcp), timeout=1).close()
            return True
        except OSError:
            return False

    def _udp_up(self) -> bool:
        """Bound once binding the port ourselves fails."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", self.udp))
            except OSError:
                return True
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait_lines(self, n: int, timeout: float = 20.0) -> list[str]:
        """Wait until n lines are written, then a little longer to see no more come."""
        end = time.monotonic() + timeout
        while len(self.lines()) < n and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.3)
        return self.lines()


class Tail:
    """`pcapwatch tail` in a subprocess; its stdout lines gathered by a thread."""

    def __init__(self, *args: str, tty: bool = False) -> None:
        env = {**os.environ, "TZ": "UTC"}
        env.pop("NO_COLOR", None)
        self.lines: list[str] = []
        self.master = -1
        stdout: Any = subprocess.PIPE
        if tty:
            self.master, slave = pty.openpty()
            stdout = slave
        self.proc = subprocess.Popen([*PCAPWATCH, "tail", *args], stdout=stdout, stderr=subprocess.PIPE,
                                     env=env, text=not tty)
        if tty:
            os.close(slave)
        self.reader = threading.Thread(target=self._read_pty if tty else self._read_pipe, daemon=True)
        self.reader.start()

    def _read_pipe(self) -> None:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        for line in out:
            self.lines.append(line.rstrip("\n"))

    def _read_pty(self) -> None:
        buf = b""
        while True:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if not r:
                if self.proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            buf += data
            *done, buf = buf.split(b"\r\n")  # the terminal turns \n into \r\n
            self.lines.extend(d.decode() for d in done)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.master >= 0:
            os.close(self.master)
        return code, err if isinstance(err, str) else err.decode()


# Started together for a run of the service, and read back ---------------------------------------


@dataclass
class Servers:
    """The servers one test module's runs deliver to; `base` holds their directories and the runs'."""

    base: Path
    prom: Prometheus | None  # scraping metrics_port every second, when asked for
    redis: RedisServer
    rsyslog: Rsyslog
    metrics_port: int  # for the prometheus output of the run Prometheus watches


@contextlib.contextmanager
def output_servers(base: Path, prometheus: bool) -> Iterator[Servers]:
    """redis-server, rsyslogd and (if asked) Prometheus, each in a directory under `base`; stopped on exit."""
    need_tool(*(["prometheus"] if prometheus else []), "redis-server", "rsyslogd")
    metrics_port = free_port()
    for d in ("prometheus", "redis", "rsyslog"):
        (base / d).mkdir()
    started: list[Prometheus | RedisServer | Rsyslog] = []
    try:
        prom = Prometheus(base / "prometheus", f"127.0.0.1:{metrics_port}") if prometheus else None
        if prom is not None:
            started.append(prom)
        redis_server = RedisServer(base / "redis")
        redis_server.start()
        started.append(redis_server)
        rsyslog = Rsyslog(base / "rsyslog")
        rsyslog.start()
        started.append(rsyslog)
        if prom is not None:
            wait_for("prometheus to be ready", prom.ready)
        yield Servers(base, prom, redis_server, rsyslog, metrics_port)
    finally:
        for s in reversed(started):
            s.stop()


def connected(port: int) -> bool:
    """An established TCP connection to 127.0.0.1:port exists (/proc/net/tcp, the client's side)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(cols[2] == want and cols[3] == "01" for cols in (line.split() for line in f.readlines()[1:]))


def syslog_messages(rsyslog: Rsyslog, hostname: str) -> list[str]:
    """The message (the record's JSON) of every line rsyslog wrote for one run. No field before it
    holds `|{"`: facility to msgid are tokens, and structured data escapes every `"`."""
    out = []
    for line in rsyslog.lines():
        fields, sep, msg = line.partition('|{"')
        if sep and fields.split("|")[3] == hostname:
            out.append('{"' + msg)
    return out


def start_tail(zmq_port: int) -> Tail:
    """`pcapwatch tail --json` subscribed to the service's zmq output before any record flows."""
    tail = Tail("--json", "--connect", f"tcp://127.0.0.1:{zmq_port}")
    try:
        wait_for("pcapwatch tail to connect", lambda: connected(zmq_port) or tail.proc.poll() is not None, 10)
        assert tail.proc.poll() is None, tail.stop()
        time.sleep(SETTLE_SECONDS)
    except BaseException:
        tail.stop()
        raise
    return tail
