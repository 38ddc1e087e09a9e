"""The README's spool and tcpdump commands, run as written (paths, interface and filter moved to a
scratch spool on loopback) with Debian's tcpdump, which switches to user tcpdump before it creates a
file: the files land, the service's user (nobody here, in place of pcapwatch) reads them, and
`pcapwatch check` has nothing to say; on a root-only spool tcpdump fails and check says why."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.env import REPO, missing, need_root, need_tool
from helpers.liveenv import PCAPWATCH

from watcher.capture.access import account

README = REPO / "README.md"


def readme_commands() -> tuple[list[str], list[str]]:
    """The README's `install -d ... /var/spool/pcapwatch` and `tcpdump -i eth0 -w ...` lines, as words."""
    lines = [line.split("#")[0].strip() for line in README.read_text().splitlines()]
    (install,) = [shlex.split(line) for line in lines if line.startswith("install -d -m 2750 -o tcpdump")]
    (tcpdump,) = [shlex.split(line) for line in lines if line.startswith("tcpdump -i eth0 -w /var/spool")]
    return install, tcpdump


class Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base() -> Iterator[Path]:
    need_root()
    need_tool("tcpdump", "curl", "setpriv")
    if account("tcpdump") is None or account("nobody") is None:
        missing("Debian's tcpdump user and nobody are needed")
    d = Path(tempfile.mkdtemp(prefix="pcapwatch-spool-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def capture(tcpdump: list[str], spool: Path, port: int, requests: int) -> subprocess.CompletedProcess[str]:
    words = [w.replace("/var/spool/pcapwatch", str(spool)) for w in tcpdump]
    words[words.index("-i") + 1] = "lo"
    words[-1] = f"tcp port {port}"
    p = subprocess.Popen(words, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # listening (or failed)
        for i in range(requests):
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/r{i}"], timeout=10, check=True)
        time.sleep(1.0)
    finally:
        p.terminate()
        out, err = p.communicate(timeout=10)
    return subprocess.CompletedProcess(words, p.returncode, out, err)


def check(config: Path, user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PCAPWATCH, "check", "-c", str(config), "--user", user], capture_output=True, text=True,
                          timeout=60, check=False)


def test_readme_spool_commands_work_on_debian(base: Path, server: int) -> None:
    install, tcpdump = readme_commands()
    assert install[-1] == "/var/spool/pcapwatch" and install[install.index("-g") + 1] == "pcapwatch"
    nobody = account("nobody")
    assert nobody is not None
    spool = base / "spool"
    words = [*install[:-1], str(spool)]
    words[words.index("-g") + 1] = nobody.group  # the service's group: pcapwatch in the README
    made = subprocess.run(words, capture_output=True, text=True, timeout=10, check=False)
    assert made.returncode == 0, made.stderr
    config = base / "p.yaml"
    config.write_text(f"spool:\n  dir: {spool}\n")
    assert check(config, "nobody").stderr == ""
    done = capture(tcpdump, spool, server, 3)
    assert "Permission denied" not in done.stderr
    (cap,) = sorted(spool.iterdir())
    assert cap.group() == nobody.group
    assert cap.owner() == "tcpdump"
    read = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", nobody.group, "--init-groups",
                           *PCAPWATCH, "read", str(spool)], capture_output=True, text=True, timeout=60, check=False)
    assert read.returncode == 0, read.stderr
    assert len(read.stdout.splitlines()) == 3


def test_root_only_spool_fails_and_check_says_why(base: Path, server: int) -> None:
    _, tcpdump = readme_commands()
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    done = capture(tcpdump, spool, server, 1)
    assert done.returncode != 0 and "Permission denied" in done.stderr
    config = base / "p.yaml"
    config.write_text(f"spool:\n  dir: {spool}\n")
    p = check(config, "nobody")
    assert p.returncode == 0
    group = account("nobody").group  # type: ignore[union-attr]
    assert p.stderr.splitlines() == [
        f"pcapwatch check: warning: spool.dir {spool}: user tcpdump (tcpdump's, after it opens the interface) cannot "
        f"write it: {spool} has mode 0755, owner root, group root; e.g. chown tcpdump:{group} {spool} && chmod 2750 "
        f"{spool} (tcpdump's user writes, the setgid bit gives its files the group {group}, which nobody reads; "
        "README: 'The spool'), or run tcpdump with -Z root"]
