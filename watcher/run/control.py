"""What the service is told from outside while it runs: signals, and the reload that SIGHUP asks for.

Signals follow nobodd's daemon model: a handler only writes the signal's number to a socketpair;
the main loop selects on the other end along with everything else it waits on, and turns each
number into stop (TERM, INT), reload (HUP) or a status line (USR1) between two batches, never in
the middle of one. A reload takes the new configuration's rules, redaction and limits at once; its
outputs too, replacing the sinks only when the outputs changed; the spool and state directories
take a restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

from watcher.config.model import Config
from watcher.metrics import MetricsModel
from watcher.run.delivery import CLOSE_SECONDS, Delivery, Log

STOP = (signal.SIGTERM, signal.SIGINT)
HANDLED = (*STOP, signal.SIGHUP, signal.SIGUSR1)
# Signal numbers read per turn of the loop; more stay in the socketpair for the next turn.
READ_SIGNALS = 64


class SignalPipe:
    """The signals the service handles, as bytes on a socketpair the main loop selects on."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """HANDLED go to the pipe inside the block; the previous handlers are back after it."""
        previous = {s: signal.signal(s, self._on_signal) for s in HANDLED}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _on_signal(self, signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):  # a full socketpair: that signal is pending already
            self._w.send(bytes([signum]))

    def received(self) -> bytes:
        """The numbers of the signals received since the last call, in order."""
        try:
            return self._r.recv(READ_SIGNALS)
        except BlockingIOError:
            return b""


def drain(fd: int) -> None:
    """Read a non-blocking wake-up pipe empty."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def restart_only(old: Config, new: Config) -> list[str]:
    """A warning for each change a reload cannot make: the directories the reader and checkpoint use."""
    return [f"reload: {what} changed from {old_v} to {new_v}; that takes a restart"
            for what, old_v, new_v in (("spool.dir", old.spool.dir, new.spool.dir),
                                       ("state.dir", old.state.dir, new.state.dir))
            if old_v != new_v]


def reload_outputs(delivery: Delivery, old: Config, new: Config, metrics: MetricsModel,
                   log: Log) -> tuple[Delivery, bool]:
    """The delivery of a reloaded configuration, and False when its outputs could not be opened.

    Unchanged outputs (same name, same settings) keep their sinks as they are, with the new rules,
    and reopen their files (logrotate; a bound socket is kept bound). Changed and removed ones are
    closed first (a new output may want the same port), then the changed and new ones opened; when
    one cannot be, those opened are closed and the running configuration's opened again, the kept
    ones staying as they are. The counters carry on."""
    if new.outputs == old.outputs:
        delivery.set_rules(new)
        delivery.reopen()
        return delivery, True
    was = {o.name: o for o in old.outputs}
    kept = {o.name: delivery.sinks[o.name] for o in new.outputs if was.get(o.name) == o and o.name in delivery.sinks}
    delivery.close(CLOSE_SECONDS, keep=kept.values())
    for sink in kept.values():
        sink.reopen()
    counters = delivery.counters
    try:
        return Delivery(new, metrics, log, counters, kept), True
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        log("error", f"reload: cannot open the new outputs ({why}); going back to the running ones")
        return Delivery(old, metrics, log, counters, kept), False
