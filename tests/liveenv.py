"""Real programs for the `pcapwatch run` tests: a private web server, tcpdump on loopback, the
service itself, paced HTTP clients and tshark's view of a capture; the servers the outputs deliver
to (Prometheus, Redis, rsyslog) and `pcapwatch tail`; capture files cut or crafted for the spool.

Every process is started by a context manager that stops it on the way out (try/finally), every
wait is bounded, and only 127.0.0.1 is used. The web server is nginx with its own temporary
configuration (as ../shared/corpus/tools/mkcapture.sh runs it), or Python's http.server in a
thread when nginx is missing. Requests carry a unique query string (`?i=N`), so each record can be
matched to the one request that caused it.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import redis
from conftest import need_root, need_tool
from pcapgen import PSH, Segment

from analyzers.frames import ACK, FIN, RST, SYN

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
# Served files: name -> size. Deterministic content, so a capture's size is predictable.
FILES = {"1k.bin": 1024, "10k.bin": 10 * 1024, "100k.bin": 100 * 1024}
STATUS = re.compile(r"records (?P<records>[\d,]+), .* files done (?P<files_done>[\d,]+), lost (?P<lost>[\d,]+) "
                    r"\((?P<lost_bytes>[\d,]+) bytes\), .* gaps (?P<gaps>[\d,]+), anomalies (?P<anomalies>[\d,]+)")
START_SECONDS = 10.0  # a program that is not up by then is broken, not slow
STOP_SECONDS = 5.0
Key = tuple[str, str, int | None]  # (method, uri, status) of one transaction


def tcpdump_path() -> str:
    return shutil.which("tcpdump") or "/usr/sbin/tcpdump"


def need_live() -> None:
    """What every live test needs: root (tcpdump on lo) and tcpdump."""
    need_root()
    need_tool("tcpdump")


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP, below the ephemeral range so no client port can
    collide."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 29999)
        try:
            with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port in 20000-29999")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds have passed; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> int:
    """Signal one process we started, wait for it, SIGKILL it if it does not go."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


# Web server -------------------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    kind: str  # "nginx" or "python"


def _write_www(www: Path) -> None:
    www.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    for name, size in FILES.items():
        (www / name).write_bytes(rng.randbytes(size))


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  default_type application/octet-stream;
  access_log {work}/access.log;
  client_body_temp_path {work}/tmp/body; proxy_temp_path {work}/tmp/proxy;
  fastcgi_temp_path {work}/tmp/fcgi; uwsgi_temp_path {work}/tmp/uwsgi; scgi_temp_path {work}/tmp/scgi;
  keepalive_timeout 65;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    server_name localhost;
    root {work}/www;
  }}
}}
"""


class _Handler(SimpleHTTPRequestHandler):
    """nginx's answers for what the tests send: files, 404, HEAD, and 405 for POST to a file."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b"method not allowed\n"
        self.send_response(405)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def web_server(work: Path) -> Iterator[Server]:
    """nginx on 127.0.0.1:<free port> (or http.server), serving FILES; stopped on exit."""
    work.mkdir(parents=True, exist_ok=True)
    _write_www(work / "www")
    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        yield from _python_server(work / "www", port)
        return
    (work / "tmp").mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the private tmp dir
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, work=work, port=port))
    with open(work / "nginx.stderr", "wb") as err:
        proc = subprocess.Popen([nginx, "-p", str(work), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        if not wait_until(lambda: _answers(port) or proc.poll() is not None, START_SECONDS) or proc.poll() is not None:
            raise RuntimeError(f"nginx did not start: {(work / 'error.log').read_text(errors='replace')}")
        yield Server(port, "nginx")
    finally:
        stop_process(proc, signal.SIGQUIT)


def _python_server(www: Path, port: int) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Handler, directory=str(www)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield Server(port, "python")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(STOP_SECONDS)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# tcpdump ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def tcpdump(target: Path | str, port: int, *options: str, err_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`tcpdump -i lo -U -w TARGET OPTIONS 'tcp port PORT'`, running once it says it listens
    (its stderr in `err_path`, outside the spool); stopped with SIGTERM (it flushes and closes its
    file) on exit."""
    cmd = [tcpdump_path(), "-i", "lo", "-n", "-U", "-Z", "root", "-w", str(target), *options, f"tcp port {port}"]
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        if not wait_until(lambda: b"listening on" in err_path.read_bytes() or proc.poll() is not None,
                          START_SECONDS) or proc.poll() is not None:
            raise RuntimeError(f"tcpdump did not start: {' '.join(cmd)}: {err_path.read_text(errors='replace')}")
        time.sleep(0.2)  # the socket is bound, give the capture a moment to be armed
        yield proc
    finally:
        stop_process(proc, signal.SIGTERM)


# The service ------------------------------------------------------------------------------------


def write_config(path: Path, spool: Path, state: Path, output: Path | str = "-", /,
                 **sections: dict[str, Any]) -> Path:
    """A small config for tests: quick rescans and checkpoints; `sections` overrides keys."""
    cfg: dict[str, dict[str, Any]] = {
        "spool": {"dir": str(spool), "rescan_seconds": 0.5},
        "state": {"dir": str(state), "checkpoint_seconds": 1.0},
    }
    for name, keys in sections.items():
        cfg.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in cfg.items():
        lines.append(f"{name}:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in keys.items()]
    lines += ["outputs:", "  - name: records", "    type: jsonl", f"    path: {json.dumps(str(output))}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Service:
    """One `pcapwatch run` process; stderr goes to a file, records to the configured output."""

    def __init__(self, config: Path, stderr: Path, *args: str) -> None:
        self.stderr_path = stderr
        self.err = open(stderr, "ab")  # noqa: SIM115 - closed in stop()
        self.start_offset = self.err.tell()
        self.proc = subprocess.Popen([*PCAPWATCH, "run", "-c", str(config), *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)

    def log(self) -> str:
        """This process's stderr so far."""
        with open(self.stderr_path, "rb") as f:
            f.seek(self.start_offset)
            return f.read().decode("utf-8", "replace")

    def lines(self, level: str | None = None) -> list[str]:
        out = [line for line in self.log().splitlines() if line.startswith("pcapwatch: ")]
        return [line for line in out if line.startswith(f"pcapwatch: {level}: ")] if level else out

    def wait_log(self, text: str, timeout: float = START_SECONDS) -> bool:
        return wait_until(lambda: text in self.log() or self.proc.poll() is not None, timeout) and text in self.log()

    def wait_ready(self) -> None:
        if not self.wait_log("info: watching "):
            raise RuntimeError(f"pcapwatch run did not start (exit {self.proc.poll()}): {self.log()}")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def status(self) -> dict[str, int]:
        """SIGUSR1's status line, its counters as numbers (records, files_done, lost, lost_bytes, gaps)."""
        before = len(self.lines("info"))
        self.send(signal.SIGUSR1)
        if not wait_until(lambda: len([x for x in self.lines("info")[before:] if STATUS.search(x)]) > 0,
                          START_SECONDS):
            raise RuntimeError(f"no status line after SIGUSR1: {self.log()}")
        m = next(m for x in self.lines("info")[before:] if (m := STATUS.search(x)))
        return {k: int(v.replace(",", "")) for k, v in m.groupdict().items()}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        try:
            if sig == signal.SIGKILL:
                self.proc.kill()
                return self.proc.wait(STOP_SECONDS)
            return stop_process(self.proc, sig, timeout=15.0)
        finally:
            self.err.close()


@contextlib.contextmanager
def service(config: Path, stderr: Path, *args: str) -> Iterator[Service]:
    svc = Service(config, stderr, *args)
    try:
        svc.wait_ready()
        yield svc
    finally:
        if svc.proc.poll() is None:
            # A SIGSTOPped service would never see SIGTERM.
            svc.proc.send_signal(signal.SIGCONT)
        svc.stop()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (a line still being written is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


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


# One test's world -------------------------------------------------------------------------------


@dataclass
class Live:
    """A test's directories (spool, state, logs) beside a running web server."""

    base: Path
    server: Server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def out(self) -> Path:
        return self.base / "records.jsonl"

    def config(self, **sections: dict[str, Any]) -> Path:
        return write_config(self.base / "pcapwatch.yaml", self.spool, self.state, self.out, **sections)

    def ring(self, *options: str, name: str = "cap.pcap") -> contextlib.AbstractContextManager[Any]:
        """tcpdump writing into the spool with these rotation options."""
        return tcpdump(self.spool / name, self.port, *options, err_path=self.base / "ring.tcpdump.err")

    def copy(self) -> contextlib.AbstractContextManager[Any]:
        """A second, non-rotating tcpdump of the same traffic: the reference capture."""
        return tcpdump(self.base / "full.pcap", self.port, err_path=self.base / "full.tcpdump.err")

    def service(self, *args: str, config: Path | None = None) -> contextlib.AbstractContextManager[Service]:
        return service(config or self.config(), self.base / "pcapwatch.stderr", *args)

    def records(self, path: Path | None = None) -> list[dict[str, Any]]:
        return read_jsonl(path or self.out)

    def wait_records(self, n: int, timeout: float = 15.0, path: Path | None = None) -> list[dict[str, Any]]:
        """The records once there are at least `n` (or whatever is there after `timeout`)."""
        wait_until(lambda: len(self.records(path)) >= n, timeout)
        return self.records(path)


@contextlib.contextmanager
def live_env(base: Path) -> Iterator[Live]:
    need_live()
    with web_server(base / "web") as server:
        live = Live(base, server)
        live.spool.mkdir()
        yield live


# Capture files for the spool --------------------------------------------------------------------

PcapRecords = tuple[bytes, list[bytes]]  # (24-byte global header, raw records with their 16-byte headers)
MSS = 1448  # segment payload size Conn.send cuts data into, as Ethernet gives it


def split_pcap(data: bytes) -> PcapRecords:
    """A little-endian µs pcap split into header and records (independent of watcher/pcapfile.py)."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    recs, off = [], 24
    while off < len(data):
        (caplen,) = struct.unpack_from("<I", data, off + 8)
        recs.append(data[off:off + 16 + caplen])
        off += 16 + caplen
    return data[:24], recs


class Conn:
    """One TCP connection's segments, sequence numbers kept for both sides."""

    def __init__(self, out: list[Segment], n: int, server_port: int = 80) -> None:
        self.out = out
        self.c = bytes([10, 0, n >> 8 & 0xFF, n & 0xFF])
        self.s = bytes([10, 1, 0, 1])
        self.cp, self.sp = 30000 + 2 * n, server_port
        self.cseq, self.sseq = 1000 * n + 7, 5000 * n + 11

    def _seg(self, t: int, client: bool, flags: int, payload: bytes = b"") -> None:
        if client:
            self.out.append(Segment(t, self.c, self.s, self.cp, self.sp, self.cseq, self.sseq, flags, payload))
            self.cseq = (self.cseq + len(payload) + (1 if flags & (SYN | FIN) else 0)) % (1 << 32)
        else:
            self.out.append(Segment(t, self.s, self.c, self.sp, self.cp, self.sseq, self.cseq, flags, payload))
            self.sseq = (self.sseq + len(payload) + (1 if flags & (SYN | FIN) else 0)) % (1 << 32)

    def open(self, t: int) -> None:
        self._seg(t, True, SYN)
        self._seg(t + 1000, False, SYN | ACK)
        self._seg(t + 2000, True, ACK)

    def send(self, t: int, client: bool, data: bytes, mss: int = MSS) -> int:
        """`data` in segments of at most `mss` bytes, a bare ACK back every other one."""
        for i in range(0, len(data), mss):
            self._seg(t, client, ACK | PSH, data[i:i + mss])
            t += 1000
            if i // mss % 2:
                self._seg(t, not client, ACK)
                t += 1000
        return t

    def close(self, t: int, reset: bool = False) -> None:
        if reset:
            self._seg(t, False, RST | ACK)
            return
        self._seg(t, True, FIN | ACK)
        self._seg(t + 1000, False, FIN | ACK)
        self._seg(t + 2000, True, ACK)


# Servers the outputs deliver to, and `pcapwatch tail` -------------------------------------------


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
