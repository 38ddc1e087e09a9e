"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's: exact datagrams, no-op
without $NOTIFY_SOCKET, failures counted and never raised, the watchdog interval from the env."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.run.sdnotify import Notifier, log, printable, socket_address, watchdog_interval


def receiver(address: str) -> socket.socket:
    """A datagram socket bound where systemd's would be (`@name` = abstract namespace)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + address[1:] if address.startswith("@") else address)
    s.settimeout(2.0)
    return s


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path / "notify")
    s = receiver(address)
    yield address, s
    s.close()


@pytest.fixture
def abstract_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = f"@pcapwatch-test-{os.getpid()}-{tmp_path.name}"
    s = receiver(address)
    yield address, s
    s.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_each_message_is_one_exact_datagram(which: str, request: pytest.FixtureRequest) -> None:
    address, rx = request.getfixturevalue(which)
    n = Notifier(environ={"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready() and rx.recv(4096) == b"READY=1"
    assert n.ready("reading cap.pcap3") and rx.recv(4096) == b"READY=1\nSTATUS=reading cap.pcap3"
    assert n.status("lag 12 MB") and rx.recv(4096) == b"STATUS=lag 12 MB"
    assert n.watchdog() and rx.recv(4096) == b"WATCHDOG=1"
    assert n.stopping() and rx.recv(4096) == b"STOPPING=1"
    assert n.stopping("SIGTERM") and rx.recv(4096) == b"STOPPING=1\nSTATUS=SIGTERM"
    assert n.extend_timeout(1.5) and rx.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000"
    assert (n.sent, n.send_errors, n.last_error) == (7, 0, None)


def test_reloading_carries_the_monotonic_clock(path_socket: tuple[str, socket.socket]) -> None:
    address, rx = path_socket
    n = Notifier(address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("re-reading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second, third = rx.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    key, usec = second.split(b"=")
    assert key == b"MONOTONIC_USEC" and before <= int(usec) <= after
    assert third == b"STATUS=re-reading config"


def test_status_stays_one_field_and_utf8(path_socket: tuple[str, socket.socket]) -> None:
    address, rx = path_socket
    n = Notifier(address)
    n.status("bad file\nREADY=1\r\ncap.pcap0")  # a newline must not smuggle in a second field
    assert rx.recv(4096) == b"STATUS=bad file READY=1 cap.pcap0"
    n.status("spool /var/spool/caf\u00e9")
    assert rx.recv(4096) == "STATUS=spool /var/spool/caf\u00e9".encode()


def test_env_is_read_and_unset_so_children_do_not_inherit_it(path_socket: tuple[str, socket.socket]) -> None:
    address, rx = path_socket
    env = {"NOTIFY_SOCKET": address, "PATH": "/usr/bin"}
    n = Notifier(environ=env)
    assert env == {"PATH": "/usr/bin"}
    assert n.watchdog() and rx.recv(4096) == b"WATCHDOG=1"
    env = {"NOTIFY_SOCKET": address}
    Notifier(environ=env, unset_environment=False)
    assert env == {"NOTIFY_SOCKET": address}


def test_default_environ_is_os_environ(path_socket: tuple[str, socket.socket],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    address, rx = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    n = Notifier()
    assert "NOTIFY_SOCKET" not in os.environ
    assert n.ready() and rx.recv(4096) == b"READY=1"


def test_no_op_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier()
    assert not n.enabled
    calls = [n.ready(), n.ready("x"), n.status("x"), n.watchdog(), n.reloading(), n.stopping(),
             n.extend_timeout(5), n.notify("X=1")]
    assert calls == [False] * 8
    assert (n.sent, n.send_errors, n.last_error) == (0, 0, None)
    assert n.watchdog_interval() is None  # nobody to ping


@pytest.mark.parametrize("value", ["", "@", "/", "relative/notify", "vsock:2:1234", "notify"])
def test_unusable_addresses_disable(value: str) -> None:
    assert socket_address(value) is None
    n = Notifier(environ={"NOTIFY_SOCKET": value})
    assert not n.enabled and not n.ready() and n.send_errors == 0


def test_address_forms() -> None:
    assert socket_address(None) is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify-1") == "\0sd-notify-1"


def test_send_failure_is_counted_not_raised(tmp_path: Path) -> None:
    address = str(tmp_path / "gone")
    n = Notifier(address)
    assert n.enabled  # the socket opens; only sending finds nobody listening
    assert n.ready() is False and n.watchdog() is False
    assert (n.sent, n.send_errors) == (0, 2)
    assert n.last_error is not None and "gone" in n.last_error and "No such file" in n.last_error
    # systemd comes back (daemon-reexec re-creates its socket): the next message gets through,
    # because each datagram is addressed anew rather than sent on a connection to the old socket.
    rx = receiver(address)
    try:
        assert n.watchdog() and rx.recv(4096) == b"WATCHDOG=1"
        assert (n.sent, n.send_errors) == (1, 2)
    finally:
        rx.close()


def test_socket_replaced_under_us(path_socket: tuple[str, socket.socket], tmp_path: Path) -> None:
    address, rx = path_socket
    n = Notifier(address)
    assert n.ready() and rx.recv(4096) == b"READY=1"
    rx.close()
    Path(address).unlink()
    rx2 = receiver(address)
    try:
        assert n.watchdog() and rx2.recv(4096) == b"WATCHDOG=1"
    finally:
        rx2.close()


def test_oversized_message_is_counted(path_socket: tuple[str, socket.socket]) -> None:
    address, _rx = path_socket
    n = Notifier(address)
    assert n.status("x" * 16_000_000) is False  # past the socket's send buffer: EMSGSIZE
    assert n.send_errors == 1 and "too long" in (n.last_error or "")


@pytest.mark.parametrize("address", ["/" + "x" * 200, "@" + "x" * 200])
def test_address_too_long_is_counted(address: str) -> None:
    n = Notifier(address)
    assert n.ready() is False and n.send_errors == 1
    assert (n.last_error or "").endswith("AF_UNIX path too long")


def test_close_makes_later_calls_no_ops(path_socket: tuple[str, socket.socket]) -> None:
    address, _rx = path_socket
    n = Notifier(address)
    n.close()
    assert not n.enabled and n.ready() is False and n.send_errors == 0
    n.close()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # the pings are not ours to send
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "1"}, 0.0000005),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "30s"}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_interval_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch,
                                                    path_socket: tuple[str, socket.socket]) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    assert Notifier(path_socket[0]).watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None


# log: one printable line whatever the message quotes ---------------------------------------------


@pytest.mark.parametrize(("message", "line"), [
    ("watching /var/spool/pcapwatch (starting from the oldest capture); records to stdout",
     "watching /var/spool/pcapwatch (starting from the oldest capture); records to stdout"),
    ("/s/evil\npcapwatch: error: forged\x1b[31m: not a capture file, ignored",
     "/s/evil\\x0apcapwatch: error: forged\\x1b[31m: not a capture file, ignored"),
    ("/s/caf\u00e9\ttab\r\x7f", "/s/caf\\xc3\\xa9\\x09tab\\x0d\\x7f"),
    ("/s/" + os.fsdecode(b"raw\xff\x80name"), "/s/raw\\xff\\x80name"),  # a name that is not UTF-8
    ("rule 'x' failed on uri /a\\x0ab", "rule 'x' failed on uri /a\\x0ab"),  # escaped already: kept
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
])
def test_log_escapes_what_is_not_printable_ascii(message: str, line: str, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log("error", message)
    err = capsys.readouterr().err
    assert err == f"pcapwatch: error: {line}\n"
    assert printable(message) == line
    assert err.count("\n") == 1 and all(" " <= c <= "~" for c in err[:-1])


def test_log_under_the_journal_keeps_its_priority_prefix(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    log("warning", "a\nb")
    assert capsys.readouterr().err == "<4>pcapwatch: warning: a\\x0ab\n"
