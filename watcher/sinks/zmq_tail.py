"""`pcapwatch tail`: subscribe to a zmq output and print one access-log line per transaction.

Lines are aligned columns (time, client, method, status, duration, response size, URL, flags) with
the status colored by class when stdout is a terminal (and NO_COLOR is not set); `--json` prints
each message's JSON as published instead, one per line, for jq. Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from watcher.config.model import ZMQ_BIND

DEFAULT_CONNECT = ZMQ_BIND  # where the zmq output binds by default
DEFAULT_FILTERS = ("http.",)
# How often the receive loop wakes to notice SIGTERM.
POLL_MS = 200

RESET = "\033[0m"
DIM = "\033[2m"
STATUS_COLORS = {"1": "\033[35m", "2": "\033[32m", "3": "\033[36m", "4": "\033[33m", "5": "\033[1;31m"}
NONE_COLOR = "\033[35m"


def format_line(topic: str, payload: dict[str, Any], color: bool = False) -> str:
    """One aligned line for a published message: a transaction, or with per_message an in/out half."""
    secs, millis = divmod(round((payload.get("ts") or 0) * 1000), 1000)
    when = f"{time.strftime('%H:%M:%S', time.localtime(secs))}.{millis:03d}"
    client = _endpoint(payload.get("src_ip"), payload.get("src_port"))
    status = payload.get("status_code")
    st = f"{status:>3}" if isinstance(status, int) else "---"
    if color:
        st = f"{STATUS_COLORS.get(st[0], NONE_COLOR) if isinstance(status, int) else NONE_COLOR}{st}{RESET}"
    url = _url(payload.get("host"), payload.get("uri"))
    method = payload.get("method") or "-"
    if topic == "in":
        return f"{when} {client:<21} -> {method:<7} {url}"
    if topic == "out":
        return f"{when} {client:<21} <- {st} {_ms(payload.get('duration_ms')):>9} {_size(payload):>7}"
    if topic == "alert":
        return f"{when} {client:<21} !! {payload.get('level', '')}: {payload.get('message', '')}"
    flags = ",".join(payload.get("flags") or ())
    if flags:
        flags = f" [{flags}]"
        if color:
            flags = f"{DIM}{flags}{RESET}"
    return f"{when} {client:<21} {method:<7} {st} {_ms(payload.get('duration_ms')):>9} {_size(payload):>7} {url}{flags}"


def _endpoint(ip: Any, port: Any) -> str:
    if ip is None:
        return "-"
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"


def _url(host: Any, uri: Any) -> str:
    if uri is None:
        return "-"
    return f"{host}{uri}" if host and str(uri).startswith("/") else str(uri)


def _ms(ms: Any) -> str:
    return "-" if ms is None else f"{ms:.1f}ms"


def _size(payload: dict[str, Any]) -> str:
    if "no_response" in (payload.get("flags") or ()):
        return "-"
    n = payload.get("response_body_len") or 0
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return "-"  # pragma: no cover - the loop always returns


def tail(connect: str, filters: Sequence[str], as_json: bool, out: TextIO | None = None,
         color: bool | None = None) -> int:
    """Receive until Ctrl-C or SIGTERM; 0 then, 2 for an endpoint zmq refuses."""
    if out is None:
        out = sys.stdout
        if isinstance(out, io.TextIOWrapper):
            if as_json:  # the records as published: JSON, which is UTF-8 (RFC 8259), whatever the locale
                out.reconfigure(encoding="utf-8", errors="backslashreplace")
            else:  # lines for a terminal: text its encoding cannot show as escapes
                out.reconfigure(errors="backslashreplace")
    if color is None:
        color = out.isatty() and "NO_COLOR" not in os.environ
    from watcher.sinks.zmq_sink import Subscriber  # pyzmq only when tailing

    try:
        sub = Subscriber(connect, filters or DEFAULT_FILTERS)
    except ValueError as e:
        sys.stderr.write(f"pcapwatch: error: cannot connect to {e}\n")
        return 2
    stop: list[bool] = []
    main = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(True)) if main else None
    try:
        while not stop:
            frames = sub.receive(POLL_MS)
            if frames is None:
                continue
            topic, body = frames[0].decode("ascii", "replace"), frames[-1]
            if as_json:
                out.write(body.decode("utf-8", "replace") + "\n")
            else:
                try:
                    payload = json.loads(body)
                except ValueError:
                    out.write(f"{topic} {body.decode('utf-8', 'replace')}\n")
                else:
                    out.write(format_line(topic, payload, color) + "\n")
            out.flush()
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C; or `pcapwatch tail | head` and the reader left
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sub.close()
    return 0
