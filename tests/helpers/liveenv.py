"""Real programs for the `pcapwatch run` tests: a private web server, tcpdump on loopback and the
service itself, and one test's world of directories around them (`Live`). The traffic sent through
them is in traffic.py; the servers the outputs deliver to, and `pcapwatch tail`, in outputservers.py.

Every process is started by a context manager that stops it on the way out (try/finally), every
wait is bounded, and only 127.0.0.1 is used. The web server is nginx with its own temporary
configuration (as ../shared/corpus/tools/mkcapture.sh runs it), or Python's http.server in a
thread when nginx is missing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from helpers.env import need_root, need_tool

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
# Served files: name -> size. Deterministic content, so a capture's size is predictable.
FILES = {"1k.bin": 1024, "10k.bin": 10 * 1024, "100k.bin": 100 * 1024}
STATUS = re.compile(r"records (?P<records>[\d,]+), .* files done (?P<files_done>[\d,]+), lost (?P<lost>[\d,]+) "
                    r"\((?P<lost_bytes>[\d,]+) bytes\), .* gaps (?P<gaps>[\d,]+), anomalies (?P<anomalies>[\d,]+)")
START_SECONDS = 10.0  # a program that is not up by then is broken, not slow
STOP_SECONDS = 5.0
WAIT_SECONDS = 30.0  # for a server to start, the service to process a file, Prometheus to scrape a value


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


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    """`wait_until`, failing the test with what it waited for."""
    assert wait_until(check, timeout, 0.1), f"timed out after {timeout:.0f} s waiting for {what}"


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

    def __init__(self, config: Path, stderr: Path, *args: str, prefix: Sequence[str] = ()) -> None:
        """`prefix`: a command that execs the service (setpriv, to run it without some privilege)."""
        self.stderr_path = stderr
        self.err = open(stderr, "ab")  # noqa: SIM115 - closed in stop()
        self.start_offset = self.err.tell()
        self.proc = subprocess.Popen([*prefix, *PCAPWATCH, "run", "-c", str(config), *args], stdin=subprocess.DEVNULL,
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
def service(config: Path, stderr: Path, *args: str, prefix: Sequence[str] = ()) -> Iterator[Service]:
    svc = Service(config, stderr, *args, prefix=prefix)
    try:
        svc.wait_ready()
        yield svc
    finally:
        if svc.proc.poll() is None:
            # A SIGSTOPped service would never see SIGTERM.
            svc.proc.send_signal(signal.SIGCONT)
        svc.stop()


def strict_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a finished output file (none if there is no file); a line cut short (kill -9,
    a full disk) fails the test."""
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a partial line: {data[-200:]!r}"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (a line still being written is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


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

    def service(self, *args: str, config: Path | None = None,
                prefix: Sequence[str] = ()) -> contextlib.AbstractContextManager[Service]:
        return service(config or self.config(), self.base / "pcapwatch.stderr", *args, prefix=prefix)

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
