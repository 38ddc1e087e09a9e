"""The `prometheus` output: an HTTP endpoint Prometheus scrapes. The one module importing prometheus_client.

Records are not delivered anywhere: the service counts every transaction in the metrics model
(`MetricsModel.observe`, watcher/metrics.py), and this sink serves that model's snapshot, with the
service's health from the callback the owner gives the model (`MetricsModel.set_health`), and the
process's own CPU and memory (`process_*`). Scrapes run on the server's threads and only take the
model's lock long enough to copy it, so a slow scraper never holds up the pipeline.
"""

from __future__ import annotations

import errno
import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from watcher.config.model import OutputConfig, PrometheusOutputConfig
from watcher.metrics import Family, MetricsModel
from watcher.sinks.base import Log, Record, Sink, stderr_log

# The classic text format: every Prometheus server since 2.0 parses it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scrapes served at once; more wait in the listen backlog (a scrape takes milliseconds).
LISTEN_BACKLOG = 16
# A scraper that stops sending or reading mid-request is cut off after this long (its thread ends).
SOCKET_TIMEOUT_SECONDS = 10.0
# How often the server loop looks for a shutdown request: what `close` waits at most for it.
SHUTDOWN_POLL_SECONDS = 0.1


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9477' or '[::1]:9477' -> (host, port); port 0 takes a free port."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be HOST:PORT (e.g. 127.0.0.1:9477 or [::1]:9477), got {listen!r}")
    return host, int(port)


def to_prometheus(f: Family) -> Metric:
    """One model family as prometheus_client's."""
    labels = list(f.labels)
    if f.kind == "histogram":
        h = HistogramMetricFamily(f.name, f.help, labels=labels)
        les = [floatToGoString(b) for b in f.buckets] + ["+Inf"]
        for values, counts, total in f.series:
            h.add_metric(list(values), list(zip(les, counts, strict=True)), total)
        return h
    m: CounterMetricFamily | GaugeMetricFamily
    if f.kind == "counter":
        m = CounterMetricFamily(f.name, f.help, labels=labels)
    else:
        m = GaugeMetricFamily(f.name, f.help, labels=labels)
    for values, v in f.samples:
        m.add_metric(list(values), v)
    return m


class _Collector:
    """prometheus_client's view of the model: a fresh snapshot per scrape."""

    def __init__(self, metrics: MetricsModel) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for f in self.metrics.collect():
            yield to_prometheus(f)

    def describe(self) -> list[Metric]:
        return []  # families appear as rules and traffic create them: nothing to declare up front


def listen_problem(name: str, listen: str, e: OSError) -> str:
    """One line for a /metrics address that cannot be listened on: the output, the address, the fix."""
    if e.errno == errno.EADDRINUSE:
        port = listen.rpartition(":")[2]
        fix = (f"another process listens there (`ss -ltnp 'sport = :{port}'` shows which; another pcapwatch?): "
               "stop it, or set the output's listen: to a free port")
    elif e.errno == errno.EADDRNOTAVAIL:
        fix = "no interface of this machine has that address: set the output's listen: to one it has (127.0.0.1)"
    elif e.errno == errno.EACCES:
        fix = "ports below 1024 need privileges pcapwatch does not have: set the output's listen: to a port >= 1024"
    else:
        fix = "set the output's listen: to an address this machine can listen on"
    return f"output {name}: cannot listen on {listen} ({e.strerror or e}): {fix}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, addr: tuple[str, int], sink: PrometheusSink) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.sink = sink
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scraper that went away mid-answer; collection failures are answered 500 and counted


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pcapwatch"
    timeout = SOCKET_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        sink = self.server.sink
        if urlsplit(self.path).path != sink.path:
            self._send(404, b"pcapwatch: metrics are at " + sink.path.encode() + b"\n", "text/plain", send_body)
            return
        try:
            body = generate_latest(sink.registry)
        except Exception as e:  # a broken snapshot is the exporter's fault: say so, keep serving
            sink.count("scrape_errors")
            self._send(500, f"pcapwatch: collecting metrics failed: {e}\n".encode(), "text/plain", send_body)
            return
        sink.count("scrapes")
        self._send(200, body, CONTENT_TYPE, send_body,
                   gzipped="gzip" in self.headers.get("Accept-Encoding", ""))

    def _send(self, code: int, body: bytes, ctype: str, send_body: bool, gzipped: bool = False) -> None:
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would flood the journal


class PrometheusSink(Sink):
    """Output `type: prometheus`: serves `metrics` (the service's model, kept across reloads) at
    http://LISTEN/PATH from `start` to `close`, with the config's duration buckets.

    Records submitted to it are accounted as written without going anywhere: the service counted
    them in the model already (`MetricsModel.observe`), whichever outputs they were logged to."""

    kind = "prometheus output"

    def __init__(self, config: PrometheusOutputConfig, metrics: MetricsModel, log: Log = stderr_log) -> None:
        """Binds at once, so a taken port fails here, naming the output and the address (OSError)."""
        name, listen, path = config.name, config.listen, config.path
        super().__init__(name, config.buffer, log=log)
        self.metrics = metrics
        self.path = path
        metrics.configure_buckets(config.buckets_ms)
        self._scrapes = {"scrapes": 0, "scrape_errors": 0}
        self._scrape_lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(metrics))
        ProcessCollector(registry=self.registry)
        host, port = parse_listen(listen)
        try:
            self._server = _Server((host, port), self)
        except OSError as e:
            raise OSError(e.errno, listen_problem(name, listen, e)) from None
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        shown = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        self.url = f"http://{shown}:{self.address[1]}{path}"
        self._http = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,),
                                      name=f"prometheus-{name}", daemon=True)

    @classmethod
    def from_output(cls, output: OutputConfig, log: Log, metrics: MetricsModel | None) -> PrometheusSink:
        """The sink of a `prometheus` output: it serves the service's metrics model."""
        if not isinstance(output, PrometheusOutputConfig) or metrics is None:
            raise ValueError(f"output {output.name}: a prometheus output is opened with its config and the "
                             "service's metrics model")
        return cls(output, metrics, log)

    def start(self) -> PrometheusSink:
        """Serve scrapes (and start the record worker)."""
        super().start()
        if not self._http.is_alive():
            self._http.start()
        return self

    def close(self, timeout: float) -> None:
        """Stop serving; the port is free when this returns."""
        super().close(timeout)
        if self._http.is_alive():
            self._server.shutdown()
            self._http.join(timeout)
        self._server.server_close()

    def count(self, what: str) -> None:
        with self._scrape_lock:
            self._scrapes[what] += 1

    def scrape_stats(self) -> dict[str, int]:
        """Scrapes answered, and those whose collection failed (answered 500)."""
        with self._scrape_lock:
            return dict(self._scrapes)

    def _send(self, batch: list[Record]) -> int:
        return len(batch)
