"""RFC 5424 syslog: the JSON record as the message, the key fields as structured data.

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [pcapwatch@32473 method="GET" status="200" ...] {json}

The message is UTF-8; one whose JSON holds text beyond ASCII starts with the BOM (RFC 5424 6.4, see
`message`).

To a unix socket (datagram, as journald and rsyslog listen; stream when the socket is one, one
message per line), UDP (one message per datagram) or TCP (octet-counting framing, RFC 6587 3.4.1, so
a message may hold any byte). A broken connection is reopened with backoff while the buffer holds
the records; before each batch on a stream the socket is checked for the peer having closed it, so
a restarted server loses nothing sent between batches. UDP has nothing to hold records for: a
datagram refused by a closed port (reported by the kernel at the next send) is counted dropped.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Any

from analyzers import Strings
from watcher.config.model import SyslogOutputConfig
from watcher.sinks.base import Log, Record, SendError, Sink, stderr_log
from watcher.sinks.ecs import timestamp
from watcher.sinks.jsontext import encode, utf8

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITIES = {"emerg": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4, "warn": 4, "notice": 5,
              "info": 6, "debug": 7}
# RFC 5612 reserves 32473 for documentation and examples: no number of ours is registered.
SD_ID = "pcapwatch@32473"
# (SD-PARAM name, record field): the fields a syslog server can filter on without parsing JSON.
SD_FIELDS = (("event_id", "event_id"), ("method", "method"), ("status", "status_code"), ("host", "host"),
             ("uri", "uri"), ("route", "route"), ("duration_ms", "duration_ms"), ("level", "level"),
             ("rule", "rule"))
# RFC 5424 6.4: the mark that opens a MSG encoded in UTF-8 (EF BB BF once encoded).
BOM = "\ufeff"
# Header field limits of RFC 5424 section 6.
MAX_HOSTNAME, MAX_APP_NAME, MAX_PROCID, MAX_MSGID = 255, 48, 128, 32
# Per-operation socket timeout: a stuck server costs this sink at most this long per try.
SOCKET_TIMEOUT = 5.0
# At most one "UDP refused" warning this often: the condition lasts, the log must not flood.
REFUSED_LOG_SECONDS = 60.0
# Messages per batch: large enough to amortise the wake-ups, small enough to retry cheaply.
BATCH = 100


def parse_address(address: str) -> tuple[str, Any]:
    """("unix", path) | ("udp"|"tcp", (host, port)); ValueError says what is accepted."""
    if address.startswith("unix:"):
        path = address[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise ValueError(f"{address!r}: a unix socket address is unix:/absolute/path")
        return "unix", path
    scheme, sep, rest = address.partition("://")
    if scheme in ("udp", "tcp") and sep:
        host, colon, port = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if colon and host and port.isdigit() and 0 < int(port) < 65536:
            return scheme, (host, int(port))
    raise ValueError(f"{address!r}: expected unix:/PATH, udp://HOST:PORT or tcp://HOST:PORT")


def header_token(value: str, limit: int) -> str:
    """A header field: printable ASCII without spaces, at most `limit` characters, '-' when empty."""
    s = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return s or "-"


def sd_escape(value: str) -> str:
    """PARAM-VALUE escaping of RFC 5424 6.3.3: '"', '\\' and ']' get a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(r: Record) -> str:
    params = []
    client = _endpoint(r.get("src_ip"), r.get("src_port"))
    server = _endpoint(r.get("dst_ip"), r.get("dst_port"))
    for name, value in (("client", client), ("server", server)):
        if value is not None:
            params.append(f'{name}="{sd_escape(value)}"')
    for name, field in SD_FIELDS:
        v = r.get(field)
        if v is not None and not isinstance(v, (dict, list)):
            params.append(f'{name}="{sd_escape(str(v))}"')
    tags = r.get("tags")
    if tags:
        params.append(f'tags="{sd_escape(",".join(map(str, tags)))}"')
    return f"[{SD_ID} {' '.join(params)}]" if params else "-"


def message(r: Record, strings: Strings = Strings.UTF8) -> str:
    """The MSG part: the record's JSON. RFC 5424 6.4: a MSG encoded in UTF-8 MUST start with the
    BOM (MSG-UTF8); so a JSON with text beyond ASCII starts with U+FEFF (rsyslog keeps it in %msg%:
    a reader strips it before parsing). A JSON of ASCII only (nearly every record, and every one of
    `strings: ascii`) reads the same in any charset a receiver may assume: it is sent as MSG-ANY,
    without the BOM, as before."""
    text = encode(r, strings)
    return text if text.isascii() else BOM + text


def _endpoint(ip: Any, port: Any) -> str | None:
    if ip is None:
        return None
    ip = f"[{ip}]" if ":" in str(ip) else str(ip)
    return ip if port is None else f"{ip}:{port}"


class SyslogSink(Sink):
    """Output `type: syslog`: `config.address` is unix:/PATH, udp://HOST:PORT or tcp://HOST:PORT;
    `config.hostname` None is this machine's."""

    kind = "syslog output"

    def __init__(self, config: SyslogOutputConfig, log: Log = stderr_log) -> None:
        if config.facility not in FACILITIES:
            raise ValueError(f"facility {config.facility!r}: expected one of {', '.join(FACILITIES)}")
        self.transport, self.target = parse_address(config.address)
        super().__init__(config.name, config.buffer, batch=BATCH, log=log)
        self.facility = FACILITIES[config.facility]
        host = config.hostname or socket.gethostname()
        self._head = (f"{header_token(host, MAX_HOSTNAME)} {header_token(config.app_name, MAX_APP_NAME)} "
                      f"{header_token(str(os.getpid()), MAX_PROCID)}")
        self._sock: socket.socket | None = None
        self._stream = False
        self._refused_logged = -REFUSED_LOG_SECONDS

    def format(self, r: Record) -> bytes:
        """One RFC 5424 message (without transport framing)."""
        level = r.get("level")
        severity = SEVERITIES.get(str(level).lower(), 4) if level is not None else 6
        msgid = "alert" if level is not None else "http"
        # The SD-PARAM values (host, uri) may hold text: UTF-8, as RFC 5424 6.3.3 has PARAM-VALUE.
        return utf8(f"<{self.facility * 8 + severity}>1 {timestamp(r.get('ts'))} {self._head} "
                    f"{header_token(msgid, MAX_MSGID)} {structured_data(r)} {message(r, self.strings)}")

    def _connect(self) -> None:
        if self.transport == "unix":
            self._sock = self._unix_socket(self.target)
        elif self.transport == "tcp":
            self._sock = socket.create_connection(self.target, timeout=SOCKET_TIMEOUT)  # every address of a name
            self._stream = True
        else:
            host, port = self.target
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            s = socket.socket(family, kind, proto)
            s.settimeout(SOCKET_TIMEOUT)
            try:
                s.connect(addr)
            except OSError:
                s.close()
                raise
            self._sock, self._stream = s, False

    def _unix_socket(self, path: str) -> socket.socket:
        """Datagram first (the usual /dev/log); a stream socket if that is what listens there."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.settimeout(SOCKET_TIMEOUT)
        try:
            s.connect(path)
            self._stream = False
            return s
        except OSError as e:
            s.close()
            if e.errno != errno.EPROTOTYPE:
                raise
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(SOCKET_TIMEOUT)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
        self._stream = True
        return s

    def _disconnect(self) -> None:
        if self._sock is not None:
            s, self._sock = self._sock, None
            s.close()

    def _send(self, batch: list[Record]) -> int:
        s = self._sock
        assert s is not None
        if self._stream:
            self._check_open(s)
            octets = self.transport == "tcp"
            msgs = [self.format(r) for r in batch]
            data = b"".join((b"%d %s" % (len(m), m)) if octets else m + b"\n" for m in msgs)
            s.sendall(data)
            return len(batch)
        written = lost = 0
        for r in batch:
            msg = self.format(r)
            try:
                try:
                    s.send(msg)
                except ConnectionRefusedError:
                    if self.transport != "udp":
                        raise  # a unix socket's server is gone: retried after a reconnect
                    # UDP: an EARLIER datagram met a closed port (ICMP) and is lost; this one was not sent.
                    self._refused()
                    if written > lost:
                        lost += 1  # one of this batch
                    else:
                        self._lost_after_written(1)  # the last of an earlier batch
                    s.send(msg)
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    self.log("warning", f"{self.kind} {self.name}: a record of {len(msg)} bytes is too large for "
                                        f"one datagram; dropped (use tcp:// for large records)")
                    continue
                if e.errno == errno.ECONNREFUSED and self.transport == "udp":
                    continue  # refused again at once: not sent, dropped
                raise SendError(written, e, lost) from e
            written += 1
        return written - lost

    def _refused(self) -> None:
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_SECONDS:
            self._refused_logged = now
            host, port = self.target
            self.log("warning", f"{self.kind} {self.name}: {host}:{port} refuses datagrams (nothing listening?); "
                                f"the records sent meanwhile are lost (counted dropped)")

    @staticmethod
    def _check_open(s: socket.socket) -> None:
        """A syslog server never sends: a readable stream socket means it closed (or reset) the connection."""
        readable, _, _ = select.select([s], [], [], 0)
        if readable:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if not data:
                raise ConnectionResetError(errno.ECONNRESET, "the syslog server closed the connection")
