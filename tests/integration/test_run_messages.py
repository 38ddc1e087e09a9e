"""What `pcapwatch run` says when its set-up is wrong, each time one line naming the thing (path,
output, address), the user where permissions matter, and the fix; the retries after it are quiet.
And a SIGHUP keeps an unchanged zmq output bound as it is: no rebind, no line."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from helpers.env import corpus, need_root, need_tool, read_records
from helpers.liveenv import START_SECONDS, Service, free_port, read_jsonl, wait_until
from helpers.outputrun import scrape

from watcher.sinks.zmq_sink import Subscriber

# Drops the privilege that lets root write anywhere, so the service meets file modes as a user does.
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search", "--"]


def user() -> str:
    uid = os.geteuid()
    return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"


def config(tmp_path: Path, spool: Path, state: Path, outputs: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"spool:\n  dir: {spool}\n  rescan_seconds: 0.2\nstate:\n  dir: {state}\n  checkpoint_seconds: 1\n"
                    f"outputs:\n{outputs}")
    return path


def jsonl(name: str, path: Path) -> str:
    return f"  - name: {name}\n    type: jsonl\n    path: {path}\n"


def failed_start(cfg: Path, tmp_path: Path, prefix: list[str] | None = None) -> tuple[int, list[str]]:
    svc = Service(cfg, tmp_path / "err.log", prefix=prefix or ())
    code = svc.proc.wait(START_SECONDS)
    svc.err.close()
    return code, svc.log().splitlines()


def test_missing_spool_is_said_once_then_read_when_it_appears(tmp_path: Path) -> None:
    cap = corpus("local", "mix.pcap")
    expected, _, _ = read_records(cap)
    spool, out, port = tmp_path / "spool", tmp_path / "out.jsonl", free_port()
    cfg = config(tmp_path, spool, tmp_path / "state", jsonl("file", out)
                 + f"  - name: prom\n    type: prometheus\n    listen: 127.0.0.1:{port}\n")
    svc = Service(cfg, tmp_path / "err.log")
    try:
        svc.wait_ready()
        time.sleep(2.0)  # about 10 scans
        assert wait_until(lambda: scrape(port)[("pcapwatch_spool_unlistable", ())] == 1.0, 10.0)
        group = grp.getgrgid(os.getegid()).gr_name
        assert svc.lines("error") == [
            f"pcapwatch: error: spool {spool} does not exist (pcapwatch runs as user {user()}): create it, e.g. "
            f"install -d -m 2750 -o tcpdump -g {group} {spool} (tcpdump's user writes, the service's group reads; "
            "README: 'The spool'), or set spool.dir to where tcpdump writes; it is looked at again at every scan, "
            "quietly, and said when it can be listed"]
        assert len(svc.lines("warning")) == 0
        spool.mkdir()
        shutil.copy(cap, spool / "cap.pcap")
        assert svc.wait_log(f"pcapwatch: info: spool {spool} can be listed again")
        assert wait_until(lambda: len(read_jsonl(out)) == len(expected), 30.0)
        assert wait_until(lambda: scrape(port)[("pcapwatch_spool_unlistable", ())] == 0.0, 10.0)
    finally:
        assert svc.stop() == 0
    assert len(read_jsonl(out)) == len(expected) > 0


def test_unlistable_spool_names_the_user_and_the_fix(tmp_path: Path) -> None:
    """The spool belongs to another user, mode 0700: the service (root without its file privileges)
    says so once, however many scans, and reads it once the mode lets it."""
    need_root()
    need_tool("setpriv")
    cap = corpus("local", "mix.pcap")
    expected, _, _ = read_records(cap)
    spool, out = tmp_path / "spool", tmp_path / "out.jsonl"
    spool.mkdir()
    shutil.copy(cap, spool / "cap.pcap")
    shutil.chown(spool, "nobody")
    spool.chmod(0o700)
    cfg = config(tmp_path, spool, tmp_path / "state", jsonl("file", out))
    svc = Service(cfg, tmp_path / "err.log", prefix=NO_DAC)
    try:
        svc.wait_ready()
        time.sleep(2.0)
        group = grp.getgrgid(os.getegid()).gr_name
        assert svc.lines("error") == [
            f"pcapwatch: error: spool {spool} cannot be listed (Permission denied) as user {user()}, the user "
            "pcapwatch runs as: give it read and search permission on the directory and its parents, e.g. install -d "
            f"-m 2750 -o tcpdump -g {group} {spool} (tcpdump's user writes, the service's group reads; README: 'The "
            "spool'); it is looked at again at every scan, quietly, and said when it can be listed"]
        spool.chmod(0o755)
        assert svc.wait_log(f"pcapwatch: info: spool {spool} can be listed again")
        assert wait_until(lambda: len(read_jsonl(out)) == len(expected), 30.0)
    finally:
        assert svc.stop() == 0


def test_output_directory_that_cannot_be_created(tmp_path: Path) -> None:
    need_root()
    need_tool("setpriv")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o555)
    closed.chmod(0o555)
    (tmp_path / "spool").mkdir()
    target = closed / "sub" / "http.jsonl"
    cfg = config(tmp_path, tmp_path / "spool", tmp_path / "state", jsonl("archive", target))
    code, lines = failed_start(cfg, tmp_path, NO_DAC)
    assert (code, lines) == (1, [
        f"pcapwatch: error: output archive: cannot create the directory {closed / 'sub'} (Permission denied) for "
        f"{target}: make {closed} writable by user {user()}, the user pcapwatch runs as, or set the output's path: to "
        "a directory it may write (under systemd: /var/log/pcapwatch, the unit's LogsDirectory=)"])


def test_state_directory_that_cannot_be_created(tmp_path: Path) -> None:
    need_root()
    need_tool("setpriv")
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0o555)
    (tmp_path / "spool").mkdir()
    state = closed / "state"
    cfg = config(tmp_path, tmp_path / "spool", state, jsonl("file", tmp_path / "out.jsonl"))
    code, lines = failed_start(cfg, tmp_path, NO_DAC)
    assert code == 1
    assert lines[-1] == (
        f"pcapwatch: error: state.dir {state}: cannot create {state} (Permission denied) as user {user()}, the user "
        f"pcapwatch runs as: make {closed} writable by that user, or set state.dir (or --state) to a directory it may "
        "write (under systemd: /var/lib/pcapwatch, the unit's StateDirectory=)")
    assert [x for x in lines if "error" in x] == [lines[-1]]


def test_prometheus_port_in_use(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config(tmp_path, tmp_path / "spool", tmp_path / "state",
                     f"  - name: metrics\n    type: prometheus\n    listen: 127.0.0.1:{port}\n")
        code, lines = failed_start(cfg, tmp_path)
    assert (code, lines) == (1, [
        f"pcapwatch: error: output metrics: cannot listen on 127.0.0.1:{port} (Address already in use): another "
        f"process listens there (`ss -ltnp 'sport = :{port}'` shows which; another pcapwatch?): stop it, or set the "
        "output's listen: to a free port"])


def zmq_config(tmp_path: Path, port: int) -> Path:
    (tmp_path / "spool").mkdir(exist_ok=True)
    return config(tmp_path, tmp_path / "spool", tmp_path / "state",
                  jsonl("file", tmp_path / "out.jsonl") + f"  - name: tap\n    type: zmq\n    bind: tcp://127.0.0.1:{port}\n")


def test_zmq_port_in_use_is_said_once(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        svc = Service(zmq_config(tmp_path, port), tmp_path / "err.log")
        try:
            svc.wait_ready()
            time.sleep(3.0)  # many retries
            assert svc.lines("warning") == [
                f"pcapwatch: warning: zmq output tap: cannot bind tcp://127.0.0.1:{port} (Address already in use): "
                f"another process has it (`ss -ltnp 'sport = :{port}'` shows which; another pcapwatch?): stop it, or "
                "set the output's bind: to a free endpoint; buffering and retrying with backoff"]
        finally:
            assert svc.stop() == 0


def test_sighup_keeps_an_unchanged_zmq_output_bound(tmp_path: Path) -> None:
    port = free_port()
    svc = Service(zmq_config(tmp_path, port), tmp_path / "err.log")
    sub = None
    try:
        svc.wait_ready()
        sub = Subscriber(f"tcp://127.0.0.1:{port}", ("",))
        before = svc.log()
        for _ in range(3):
            svc.send(signal.SIGHUP)
            time.sleep(0.7)
        new = svc.log()[len(before):].splitlines()
        assert [x for x in new if "zmq" in x or "warning" in x or "error" in x] == []
        assert len([x for x in new if "reload" in x]) == 3
        # still bound by the service: a second bind of the port fails
        probe = subprocess.run(["python3", "-c", f"import socket; s=socket.socket(); s.bind(('127.0.0.1', {port}))"],
                               capture_output=True, text=True, timeout=10, check=False)
        assert "Address already in use" in probe.stderr
    finally:
        if sub is not None:
            sub.close()
        assert svc.stop() == 0

