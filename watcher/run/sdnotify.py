"""systemd's notify protocol (sd_notify) without libsystemd, and a no-op outside systemd.

A service started with Type=notify tells systemd it is ready, what it is doing, that it is still
alive (watchdog) and that it is reloading or stopping, by sending `KEY=VALUE` lines as one datagram
to the AF_UNIX socket named in $NOTIFY_SOCKET. That is all libsystemd's sd_notify() does, so this
module does it with the standard library and stays importable anywhere. Outside systemd (no
$NOTIFY_SOCKET) every call does nothing, so the service code calls it unconditionally.

Sending never raises: a lost notification must not take the service down. Failures are counted and
the last one kept, for the service's own counters. Call it from the main loop, not from a separate
thread: the watchdog ping then proves that the loop itself still turns.

The other half of sd-daemon.h is here too: `log` prefixes each stderr line with its syslog
priority (`<3>` for an error) when stderr is the journal ($JOURNAL_STREAM), so `journalctl -p`
filters pcapwatch's lines. Every line is printable ASCII: what a message quotes from outside (a
spool file's name, an error text holding one, a line of tcpdump's) is escaped here, at the one
place lines are written (watcher/text/escape.py), so a file named with a newline or a terminal
escape cannot forge or colour a line.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping, MutableMapping

from watcher.text.escape import printable as printable  # where log lines are escaped (imported from here too)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
JOURNAL_STREAM = "JOURNAL_STREAM"
# sd-daemon.h's SD_ERR, SD_WARNING, SD_NOTICE, SD_INFO; other levels are logged as info.
PRIORITIES = {"error": 3, "warning": 4, "notice": 5, "info": 6}
def log(level: str, message: str) -> None:
    """One line to stderr; under systemd with its syslog priority prefix for the journal."""
    prefix = f"<{PRIORITIES.get(level, 6)}>" if os.environ.get(JOURNAL_STREAM) else ""
    sys.stderr.write(f"{prefix}pcapwatch: {printable(level)}: {printable(message)}\n")
    sys.stderr.flush()


def socket_address(value: str | None) -> str | None:
    """The AF_UNIX address for a $NOTIFY_SOCKET value, or None when it names no usable socket.

    systemd passes an absolute path, or `@name` for a socket in the abstract namespace (the
    kernel's form of that is a leading NUL). Anything else (empty, relative, `vsock:` of newer
    systemd versions) is not ours to speak to.
    """
    if not value or len(value) < 2:
        return None
    if value[0] == "/":
        return value
    if value[0] == "@":
        return "\0" + value[1:]
    return None


class Notifier:
    """Notifications to systemd; every method is a no-op when not started by systemd.

    The socket is not connected: each message is addressed on its own (as libsystemd does), so
    notifications keep working after `systemctl daemon-reexec` re-creates systemd's socket.
    """

    def __init__(self, address: str | None = None, *, environ: MutableMapping[str, str] | None = None,
                 unset_environment: bool = True) -> None:
        """Use `address` (a $NOTIFY_SOCKET value), else read $NOTIFY_SOCKET from `environ`.

        With `unset_environment` the variable is removed from `environ` (os.environ by default),
        so that child processes (tcpdump under --capture) do not talk to systemd in our name.
        """
        env = os.environ if environ is None else environ
        if address is None:
            address = env.get(NOTIFY_SOCKET)
            if unset_environment:
                env.pop(NOTIFY_SOCKET, None)
        self.address: str | None = socket_address(address)
        self._env: Mapping[str, str] = env
        self.sent = 0
        self.send_errors = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None
        if self.address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError as e:
                self._failed(e)

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket we could open."""
        return self._sock is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog() calls, or None (no watchdog armed, or no socket to ping)."""
        return watchdog_interval(self._env) if self.enabled else None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields as one datagram; True if sent, False if disabled or failed."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode("utf-8", "backslashreplace"), self.address)
        except OSError as e:
            self._failed(e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (Type=notify: systemd starts units ordered after us now)."""
        return self.notify("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        """A one-line state shown by `systemctl status`."""
        return self.notify(*self._status(text))

    def watchdog(self) -> bool:
        """Still alive: must come at least every WatchdogSec=, see watchdog_interval()."""
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """A reload (SIGHUP) began; send ready() when it is done.

        MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) tell this reload from an older one;
        earlier versions ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began: systemd shows `deactivating` instead of thinking we hang."""
        return self.notify("STOPPING=1", *self._status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start/stop timeout fires (a long backlog at start)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    def close(self) -> None:
        """Release the socket; later calls are no-ops."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        # A newline would end the field and start a bogus one.
        return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)

    def _failed(self, e: OSError) -> None:
        self.send_errors += 1
        self.last_error = f"{self.address!r}: {e.strerror or e}"


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec=), or None when no watchdog is armed.

    systemd sets $WATCHDOG_USEC, and $WATCHDOG_PID to the process it expects the pings from; a
    child that inherited the variables is not that process. Half the timeout is what
    sd_watchdog_enabled(3) advises: one late loop does not get the service killed.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wpid = env.get(WATCHDOG_PID)
    if wpid is not None:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2_000_000
