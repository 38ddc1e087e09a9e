"""UTF-8 from the wire, end to end, on real programs: requests whose path, Host and User-Agent carry
raw UTF-8 bytes (sent as bytes by a socket client and by curl) to nginx on loopback, captured by
tcpdump, then read by `pcapwatch read` (the CLI, a subprocess) in both forms of `strings`, and by
`pcapwatch run` with a rule on the UTF-8 host, in both forms.

What must hold: valid UTF-8 is text in the records (json.loads, as jq, gives ``Köln``), invalid
bytes and the bidi override stay ``\\xNN``, and `strings: ascii` gives the all-escaped form.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.env import need_tool
from helpers.liveenv import PCAPWATCH, Live, live_env, tcpdump, wait_for

TIMEOUT = 10.0
# What each request's fields must be, in the utf8 form and in the ascii form.
PATH_RAW = b"/st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac&x=\xff"
PATH_UTF8 = "/st\u00e4dte/K\u00f6ln?q=\u20ac&x=\\xff"
PATH_ASCII = "/st\\xc3\\xa4dte/K\\xc3\\xb6ln?q=\\xe2\\x82\\xac&x=\\xff"
AGENT_RAW = b"pr\xc3\xbcfer/1 \xe2\x80\xaeevil \xf0\x9f\x98\x80"
AGENT_UTF8 = "pr\u00fcfer/1 \\xe2\\x80\\xaeevil \U0001f600"
AGENT_ASCII = "pr\\xc3\\xbcfer/1 \\xe2\\x80\\xaeevil \\xf0\\x9f\\x98\\x80"
HOST_RAW = b"k\xc3\xb6ln.test"
CURL_PATH = "/K\u00f6ln/\u6771\u4eac"
# curl percent-encodes the path's UTF-8 (its header values it sends as given); the record keeps the
# target as sent, percent-encoding and all, as Zeek does.
CURL_SENT = "/K%c3%b6ln/%e6%9d%b1%e4%ba%ac"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_env(tmp_path) as env:
        yield env


def send_raw(port: int) -> bytes:
    """One request of raw UTF-8 bytes on its own connection; the server's whole answer."""
    request = (b"GET " + PATH_RAW + b" HTTP/1.1\r\nHost: " + HOST_RAW + b"\r\nUser-Agent: " + AGENT_RAW
               + b"\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def send_curl(port: int) -> None:
    """curl with a UTF-8 path (which it percent-encodes) and a UTF-8 User-Agent (sent as bytes)."""
    curl = shutil.which("curl") or "curl"
    subprocess.run([curl, "-s", "-o", "/dev/null", "--path-as-is", "-A", "curl-K\u00f6ln",
                    f"http://127.0.0.1:{port}{CURL_PATH}"], check=True, timeout=TIMEOUT)


def settled(capture: Path) -> None:
    """Wait until tcpdump has written what it saw: the file has stopped growing for 0.3 s."""
    sizes: list[int] = []

    def still() -> bool:
        sizes.append(capture.stat().st_size)
        return len(sizes) > 3 and sizes[-1] == sizes[-4] > 24  # 24: the file header alone
    wait_for("tcpdump to write the packets", still)


def read(capture: Path, *options: str) -> list[str]:
    """`pcapwatch read` on the capture: its output lines."""
    p = subprocess.run([*PCAPWATCH, "read", *options, str(capture)], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.isascii()  # the JSON stays ASCII: text beyond it as \u escapes
    return p.stdout.decode().splitlines()


def test_utf8_request_path_and_headers_captured_and_read(live: Live, tmp_path: Path) -> None:
    need_tool("curl")
    capture = tmp_path / "utf8.pcap"
    with tcpdump(capture, live.port, "--immediate-mode", err_path=tmp_path / "tcpdump.err"):
        answer = send_raw(live.port)
        send_curl(live.port)
        settled(capture)
    status = int(answer.split(b" ", 2)[1])

    lines = read(capture)
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    raw, by_curl = sorted(records, key=lambda r: r["ts"])
    assert (raw["method"], raw["uri"], raw["host"], raw["user_agent"], raw["status_code"]) == (
        "GET", PATH_UTF8, "k\u00f6ln.test", AGENT_UTF8, status)
    assert (by_curl["uri"], by_curl["user_agent"], by_curl["status_code"]) == (CURL_SENT, "curl-K\u00f6ln", 404)
    assert "K\u00f6ln" in raw["uri"]  # what a user searching for it finds
    assert sum('"uri":"/st\\u00e4dte/K\\u00f6ln?q=\\u20ac&x=\\\\xff"' in line for line in lines) == 1

    ascii_records = sorted((json.loads(line) for line in read(capture, "--strings", "ascii")), key=lambda r: r["ts"])
    assert (ascii_records[0]["uri"], ascii_records[0]["host"], ascii_records[0]["user_agent"]) == (
        PATH_ASCII, "k\\xc3\\xb6ln.test", AGENT_ASCII)
    assert (ascii_records[1]["uri"], ascii_records[1]["user_agent"]) == (CURL_SENT, "curl-K\\xc3\\xb6ln")
    # the two forms differ in those strings only
    for u, a in zip((raw, by_curl), ascii_records, strict=True):
        assert {k: v for k, v in u.items() if k not in ("uri", "host", "user_agent")} == \
               {k: v for k, v in a.items() if k not in ("uri", "host", "user_agent")}


RULES = """rules:
  - name: koeln
    match: {host: "/k\u00f6ln\\\\.test/"}
    actions: {tag: [koeln]}
"""


@pytest.mark.parametrize("strings", ["utf8", "ascii"])
def test_run_writes_utf8_text_and_rules_match_it(live: Live, strings: str) -> None:
    """`pcapwatch run` on a tcpdump ring: the record, its allow-listed headers and a rule on the
    host regex /köln\\.test/, which matches the text (utf8) and not the escaped form (ascii)."""
    config = live.config()
    config.write_text(config.read_text() + f"strings: {strings}\n" + RULES, encoding="utf-8")
    with live.ring("--immediate-mode"), live.service(config=config):
        send_raw(live.port)
        wait_for("one record", lambda: len(live.records()) >= 1)
    (r,) = live.records()
    assert live.out.read_bytes().isascii()
    if strings == "utf8":
        assert (r["uri"], r["host"], r["user_agent"], r["tags"]) == (PATH_UTF8, "k\u00f6ln.test", AGENT_UTF8,
                                                                     ["koeln"])
        assert r["request_headers"]["user-agent"] == AGENT_UTF8
    else:
        assert (r["uri"], r["host"], r["user_agent"], r["tags"]) == (PATH_ASCII, "k\\xc3\\xb6ln.test", AGENT_ASCII,
                                                                     [])
        assert r["request_headers"]["user-agent"] == AGENT_ASCII
    assert r["request_headers"]["host"] == r["host"]
    assert r["route"] == r["uri"].split("?")[0]
