"""A shadow server for replay tests: http.server, per-route behaviour, a log of what arrived.

Run in-process (`Shadow(...)`, a thread) or as a program (`python shadow.py PORT LOG
[JSON-ROUTES [WWW]]`), which serves until killed and appends one line per request to LOG:
`method target request-id` (the request id header X-Request-ID, `-` if absent).
Routes map a path to {"status": int, "body": str, "delay": seconds, "every": n} (with `every`,
only each n-th request to that path is answered so, the others as if unlisted). Unlisted paths
answer the file of that name under `www` when there is one (as the tests' production nginx
does), else 200 with the body `ok <path>`."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def handler(routes: dict[str, dict[str, Any]], log: list[str], log_file: str | None, lock: threading.Lock,
            www: str | None) -> type:
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # answers as quickly as nginx does

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
            with lock:
                seen[path] = n = seen.get(path, 0) + 1
            if spec.get("every") and n % spec["every"]:
                spec = {}
            if spec.get("delay"):
                time.sleep(spec["delay"])
            file = os.path.join(www, path.lstrip("/")) if www and "/." not in path else None
            if "body" not in spec and file is not None and os.path.isfile(file):
                with open(file, "rb") as f:
                    body = f.read()
                kind = "application/octet-stream"
            else:
                body = spec.get("body", Shadow.default_body(path)).encode()
                kind = "text/plain"
            self.send_response(spec.get("status", 200))
            self.send_header("Content-Type", spec.get("type", kind))
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
                 log_file: str | None = None, www: str | None = None) -> None:
        self.log: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port),
                                          handler(routes or {}, self.log, log_file, threading.Lock(), www))
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
    s = Shadow(routes, port, log_file, sys.argv[4] if len(sys.argv) > 4 else None)
    print(s.port, flush=True)
    s.thread.join()
