"""`pcapwatch run --capture IFACE`: start tcpdump with a rotating ring into the spool, and keep it up.

Capture stays in tcpdump (C, kernel buffers, privileges); this only starts it, restarts it with a
growing delay if it dies, and stops it with the service. It needs what tcpdump needs (root or
CAP_NET_RAW); in production run tcpdump as its own unit (systemd/pcapwatch-capture.service).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

from watcher.config.load import CaptureConfig

# Restart delays after tcpdump exits: quick first, then backing off so a broken setup does not spin.
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_WAIT_SECONDS = 5.0
FILE_NAME = "cap.pcap"


def tcpdump_command(interface: str, spool_dir: str, cfg: CaptureConfig, bpf: str | None = None,
                    tcpdump: str = "tcpdump") -> list[str]:
    """The tcpdump command line: a -C/-W ring, packets written as they come (-U)."""
    cmd = [tcpdump, "-i", interface, "-n", "-U", "-w", os.path.join(spool_dir, FILE_NAME),
           "-C", str(cfg.file_mb), "-W", str(cfg.files)]
    if cfg.snaplen:
        cmd += ["-s", str(cfg.snaplen)]
    if cfg.user:
        cmd += ["-Z", cfg.user]
    elif os.geteuid() == 0:
        cmd += ["-Z", "root"]  # Debian's tcpdump would switch to user tcpdump, who cannot write our spool
    filt = bpf if bpf is not None else cfg.bpf
    if filt:
        cmd.append(filt)
    return cmd


class CaptureSupervisor:
    def __init__(self, command: list[str], log: Callable[[str, str], None]) -> None:
        self.command = command
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.next_start = 0.0
        self.started_at = 0.0

    @staticmethod
    def available(tcpdump: str = "tcpdump") -> str | None:
        return shutil.which(tcpdump) or (f"/usr/sbin/{tcpdump}" if os.path.exists(f"/usr/sbin/{tcpdump}") else None)

    def start(self) -> None:
        self.log("info", "starting capture: " + " ".join(self.command))
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.started_at = time.monotonic()

    def poll(self) -> None:
        """Called from the service loop: notice a dead tcpdump and restart it after a delay."""
        now = time.monotonic()
        if self.proc is None:
            if self.next_start and now >= self.next_start:
                self.next_start = 0.0
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            if now - self.started_at > 60:
                self.restarts = 0  # it ran a while: the next failure starts the backoff over
            return
        err = (self.proc.stderr.read() if self.proc.stderr else b"").decode("utf-8", "replace").strip()
        last = err.splitlines()[-1] if err else ""
        delay = BACKOFF_SECONDS[min(self.restarts, len(BACKOFF_SECONDS) - 1)]
        self.log("error", f"tcpdump exited with status {code}{': ' + last if last else ''}; restarting in "
                          f"{delay:.0f} s (it needs root or CAP_NET_RAW and a writable spool)")
        self.proc = None
        self.restarts += 1
        self.next_start = now + delay

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.next_start = 0.0
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # tcpdump flushes and closes its file on SIGTERM
        try:
            proc.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
