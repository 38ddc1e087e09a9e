"""A shadow server for replay tests: http.server, per-route behaviour, a log of what arrived.

Run in-process (`Shadow(...)`, a thread) or as a program (`python -m helpers.shadow PORT LOG
[JSON-ROUTES]`), which serves until killed and appends one line per request to LOG:
`method target request-id` (the request id header X-Request-ID, `-` if absent).
Routes map a path to {"status": int, "body": str, "delay": seconds}; others answer 200 with
the body `ok <path>` (the same as tests' production nginx serves for its files)."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def handler(routes: dict[str, dict[str, Any]], log: list[str], log_file: str | None, lock: threading.Lock) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body_in = self.rfile.read(n) if n else b""
            line = f"{self.command} {self.path} {self.headers.get('X-Request-ID', '-')} {len(body_in)}"
            with lock:
                log.append(line)
                if log_file:
                    with open(log_file, "a") as f:
                        f.write(line + "\n")
            path = self.path.split("?")[0]
            spec = routes.get(path, {})
            if spec.get("delay"):
                time.sleep(spec["delay"])
            body = spec.get("body", Shadow.default_body(path)).encode()
            self.send_response(spec.get("status", 200))
            self.send_header("Content-Type", spec.get("type", "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_OPTIONS = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Shadow:
    def __init__(self, routes: dict[str, dict[str, Any]] | None = None, port: int = 0,
                 log_file: str | None = None) -> None:
        self.log: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port),
                                          handler(routes or {}, self.log, log_file, threading.Lock()))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def default_body(path: str) -> str:
        return f"ok {path}\n"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    port, log_file = int(sys.argv[1]), sys.argv[2]
    routes = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    s = Shadow(routes, port, log_file)
    print(s.port, flush=True)
    s.thread.join()
