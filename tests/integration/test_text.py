"""UTF-8 from the wire, end to end, on real programs: requests whose path, Host and User-Agent carry
raw UTF-8 bytes (sent as bytes by a socket client and by curl) to nginx on loopback, captured by
tcpdump, then read by `pcapwatch read` (the CLI, a subprocess) in both forms of `strings`, and by
`pcapwatch run` with a rule on the UTF-8 host, in both forms.

What must hold: valid UTF-8 is text in the records (json.loads, as jq, gives ``Köln``), invalid
bytes and the bidi override stay ``\\xNN``, and `strings: ascii` gives the all-escaped form.
"""

from __future__ import annotations

import json
import os
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


def read(capture: Path, *options: str, encoding: str | None = None) -> bytes:
    """`pcapwatch read` on the capture: its standard output (`encoding`: the one Python gives it, as
    a locale of that charset would)."""
    env = dict(os.environ)
    if encoding is not None:
        env["PYTHONIOENCODING"] = encoding
    p = subprocess.run([*PCAPWATCH, "read", *options, str(capture)], capture_output=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


def grep(pattern: str, path: Path) -> list[bytes]:
    """The lines of `path` in which grep finds `pattern` (a fixed string, as its UTF-8 bytes)."""
    p = subprocess.run(["grep", "-F", "--", pattern.encode("utf-8"), str(path)], capture_output=True, timeout=10,
                       env={**os.environ, "LC_ALL": "C"})
    assert p.returncode in (0, 1), p.stderr
    return p.stdout.splitlines()


def test_utf8_request_path_and_headers_captured_and_read(live: Live, tmp_path: Path) -> None:
    need_tool("curl")
    capture = tmp_path / "utf8.pcap"
    with tcpdump(capture, live.port, "--immediate-mode", err_path=tmp_path / "tcpdump.err"):
        answer = send_raw(live.port)
        send_curl(live.port)
        settled(capture)
    status = int(answer.split(b" ", 2)[1])

    out = read(capture)
    lines = out.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    raw, by_curl = sorted(records, key=lambda r: r["ts"])
    assert (raw["method"], raw["uri"], raw["host"], raw["user_agent"], raw["status_code"]) == (
        "GET", PATH_UTF8, "k\u00f6ln.test", AGENT_UTF8, status)
    assert (by_curl["uri"], by_curl["user_agent"], by_curl["status_code"]) == (CURL_SENT, "curl-K\u00f6ln", 404)
    # The lines hold the text's UTF-8 bytes; what is not safe text stays \xNN (JSON "\\xNN").
    assert sum(b'"uri":"/st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac&x=\\\\xff"' in line for line in lines) == 1
    assert sum(b'"user_agent":"pr\xc3\xbcfer/1 \\\\xe2\\\\x80\\\\xaeevil \xf0\x9f\x98\x80"' in line
               for line in lines) == 1
    assert b"\xe2\x80\xae" not in out and b"\\u" not in out  # no raw bidi override, no \u escape
    # What a user searching for it finds: grep on the file `read -o` writes; standard output in a
    # Latin-1 locale holds the same UTF-8 bytes.
    need_tool("grep")
    written = tmp_path / "records.jsonl"
    assert read(capture, "-o", str(written)) == b""
    assert written.read_bytes() == out
    assert [json.loads(x)["uri"] for x in grep("st\u00e4dte/K\u00f6ln", written)] == [PATH_UTF8]
    assert [json.loads(x)["uri"] for x in grep("curl-K\u00f6ln", written)] == [CURL_SENT]
    assert len(grep("K\u00f6ln", written)) == 2
    assert read(capture, encoding="latin-1") == out

    ascii_out = read(capture, "--strings", "ascii")
    assert ascii_out.isascii() and b"\\u" not in ascii_out  # 7-bit, every non-ASCII byte as \xNN
    assert sum(b'"uri":"/st\\\\xc3\\\\xa4dte/K\\\\xc3\\\\xb6ln?q=\\\\xe2\\\\x82\\\\xac&x=\\\\xff"' in line
               for line in ascii_out.splitlines()) == 1
    ascii_file = tmp_path / "ascii.jsonl"
    ascii_file.write_bytes(ascii_out)
    assert grep("K\u00f6ln", ascii_file) == [] and len(grep("K\\\\xc3\\\\xb6ln", ascii_file)) == 2
    assert read(capture, "--strings", "ascii", encoding="latin-1") == ascii_out
    ascii_records = sorted((json.loads(line) for line in ascii_out.splitlines()), key=lambda r: r["ts"])
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
    data = live.out.read_bytes()
    need_tool("grep")
    if strings == "utf8":  # the text's UTF-8 bytes: grep finds the record
        assert b'"host":"k\xc3\xb6ln.test"' in data and b'"uri":"/st\xc3\xa4dte/K\xc3\xb6ln?q=\xe2\x82\xac&x=' in data
        assert b'"user-agent":"pr\xc3\xbcfer/1 \\\\xe2\\\\x80\\\\xaeevil \xf0\x9f\x98\x80"' in data  # allow-listed
        assert grep("K\u00f6ln", live.out) == data.splitlines()
    else:  # 7-bit ASCII as before, every non-ASCII byte \xNN: grep finds only the escaped form
        assert data.isascii() and b"\\u" not in data
        assert grep("K\u00f6ln", live.out) == [] and grep("k\\\\xc3\\\\xb6ln.test", live.out) == data.splitlines()
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
