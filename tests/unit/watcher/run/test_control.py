"""watcher/run/control: signals reach the main loop as bytes on a socketpair, in order, only while
handled (the previous handlers come back); a reload warns about what takes a restart, keeps
unchanged outputs (reopened), replaces changed ones, and goes back to the running ones when the
new cannot be opened, the counters carrying on."""

from __future__ import annotations

import os
import select
import signal
import socket
from pathlib import Path

from watcher.config.load import load
from watcher.metrics import MetricsModel
from watcher.run.control import SignalPipe, reload_outputs, restart_only
from watcher.run.delivery import Delivery


class Logs(list[tuple[str, str]]):
    def __call__(self, level: str, message: str) -> None:
        self.append((level, message))


def test_signals_arrive_in_order_while_handled_then_the_old_handlers_are_back() -> None:
    pipe = SignalPipe()
    before = signal.getsignal(signal.SIGUSR1)
    assert pipe.received() == b""
    with pipe.handling():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGHUP)
        assert select.select([pipe.fileno()], [], [], 5.0)[0]
        assert pipe.received() == bytes([signal.SIGUSR1, signal.SIGHUP])
        assert pipe.received() == b""
    assert signal.getsignal(signal.SIGUSR1) is before


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_restart_only_names_the_directories(tmp_path: Path) -> None:
    old = load(write(tmp_path, "a.yaml", "spool: {dir: s1}\nstate: {dir: t1}\n"))
    new = load(write(tmp_path, "b.yaml", "spool: {dir: s2}\nstate: {dir: t1}\n"))
    assert restart_only(old, old) == []
    assert restart_only(old, new) == [f"reload: spool.dir changed from {tmp_path / 's1'} to {tmp_path / 's2'}; "
                                      "that takes a restart"]


def test_reload_keeps_replaces_or_goes_back_to_the_outputs(tmp_path: Path) -> None:
    logs, metrics = Logs(), MetricsModel()
    one = load(write(tmp_path, "one.yaml", f"outputs:\n  - {{name: a, type: jsonl, path: {tmp_path / 'a'}}}\n"))
    rules = load(write(tmp_path, "rules.yaml", f"outputs:\n  - {{name: a, type: jsonl, path: {tmp_path / 'a'}}}\n"
                                               "rules:\n  - {name: r, actions: {drop: true}}\n"))
    two = load(write(tmp_path, "two.yaml", f"outputs:\n  - {{name: b, type: jsonl, path: {tmp_path / 'b'}}}\n"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bad = load(write(tmp_path, "bad.yaml", f"outputs:\n  - {{name: p, type: prometheus, listen: "
                                               f"'127.0.0.1:{port}'}}\n"))
        d = Delivery(one, metrics, logs)
        d.counters.records = 5
        same, ok = reload_outputs(d, one, rules, metrics, logs)
        assert (same, ok, len(same.rules.rules)) == (d, True, 1)
        other, ok = reload_outputs(d, one, two, metrics, logs)
        assert ok and other is not d and list(other.sinks) == ["b"] and other.counters.records == 5
        back, ok = reload_outputs(other, two, bad, metrics, logs)
        back.close(1.0)
    assert not ok and list(back.sinks) == ["b"] and back.counters.records == 5
    assert logs == [("error", f"reload: cannot open the new outputs (output p: cannot listen on 127.0.0.1:{port} "
                              f"(Address already in use): another process listens there (`ss -ltnp 'sport = :{port}'` "
                              "shows which; another pcapwatch?): stop it, or set the output's listen: to a free port); "
                              "going back to the running ones")]


def test_reload_keeps_the_unchanged_outputs_as_they_are(tmp_path: Path) -> None:
    """Outputs whose settings did not change keep their running sink (a bound socket stays bound)
    when another output changes, and when going back after a failure."""
    logs, metrics = Logs(), MetricsModel()
    a = f"  - {{name: a, type: jsonl, path: {tmp_path / 'a'}}}\n"
    one = load(write(tmp_path, "one.yaml", f"outputs:\n{a}  - {{name: b, type: jsonl, path: {tmp_path / 'b'}}}\n"))
    two = load(write(tmp_path, "two.yaml", f"outputs:\n{a}  - {{name: c, type: jsonl, path: {tmp_path / 'c'}}}\n"))
    under_a_file = tmp_path / "a" / "x"
    bad = load(write(tmp_path, "bad.yaml", f"outputs:\n{a}  - {{name: d, type: jsonl, path: {under_a_file}}}\n"))
    d = Delivery(one, metrics, logs)
    kept = d.sinks["a"]
    other, ok = reload_outputs(d, one, two, metrics, logs)
    assert ok and list(other.sinks) == ["a", "c"] and other.sinks["a"] is kept
    assert d.sinks["b"]._thread is not None and not d.sinks["b"]._thread.is_alive()  # the removed one is closed
    assert kept._thread is not None and kept._thread.is_alive()
    back, ok = reload_outputs(other, two, bad, metrics, logs)
    assert not ok and list(back.sinks) == ["a", "c"] and back.sinks["a"] is kept
    assert back.sinks["c"] is not other.sinks["c"]
    assert kept._thread.is_alive()
    back.close(1.0)
    assert [level for level, _ in logs] == ["error"]
