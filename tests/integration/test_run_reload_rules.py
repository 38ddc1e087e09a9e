"""SIGHUP with a broken rule keeps the old rules running; a valid changed rule takes effect.

`pcapwatch run` watches a spool into which crafted captures are put one at a time (written under a
dot name, which the spool ignores, then renamed: the service only ever sees whole files). Each
file's records are told apart by their `pcap_file`, so every file's outcome is checked exactly:
which requests the rule matched and what it set on them.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.liveenv import Service, read_jsonl, service, wait_until, write_config
from helpers.pcapgen import LINKTYPE_ETHERNET, PSH, Segment, frames, write_pcap

from analyzers.tcp.frames import ACK, FIN, SYN

T0 = 1_700_000_000 * 10**9  # capture time of the first file's first packet, ns
FILE_GAP_NS = 60 * 10**9  # each file starts a minute after the previous one: the spool orders by first packet
WAIT_SECONDS = 15.0  # for the service to read a file or answer a signal
SETTLE_SECONDS = 0.5  # after the expected records: time for any unexpected one to show up
# The requests of each file: the first rules match the two under /api/, the changed ones /static/.
URIS = ("/api/a", "/api/b", "/static/c")

RULES_V1 = """\
rules:
  - name: api
    match:
      path: '^/api/'
    actions:
      set: {service: v1}
"""
# An unknown match key: the whole new configuration is refused. Were it taken anyway, records
# would say so (service: broken, or no service where the old rule set one).
BROKEN_KEY = "pathh"
RULES_BROKEN = RULES_V1.replace("path:", f"{BROKEN_KEY}:").replace("v1", "broken")
RULES_V2 = """\
rules:
  - name: static
    match:
      path: '^/static/'
    actions:
      set: {service: v2}
"""


def capture(path: Path, first_ns: int, uris: Sequence[str], first_port: int) -> None:
    """One connection per uri, one after the other: handshake, GET, 200 with a 2-byte body, FINs.
    Client ports start at `first_port`, so no connection of one file reuses another's."""
    segs: list[Segment] = []
    c, s = bytes([10, 0, 0, 1]), bytes([10, 1, 1, 1])
    for n, uri in enumerate(uris):
        t, cp, sp = first_ns + n * 10**7, first_port + n, 80
        req = f"GET {uri} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode()
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        cseq, sseq = 1001, 9001  # after the SYNs
        segs += [Segment(t, c, s, cp, sp, cseq - 1, 0, SYN, b""),
                 Segment(t + 10**5, s, c, sp, cp, sseq - 1, cseq, SYN | ACK, b""),
                 Segment(t + 2 * 10**5, c, s, cp, sp, cseq, sseq, ACK | PSH, req),
                 Segment(t + 3 * 10**5, s, c, sp, cp, sseq, cseq + len(req), ACK | PSH, resp),
                 Segment(t + 4 * 10**5, c, s, cp, sp, cseq + len(req), sseq + len(resp), FIN | ACK, b""),
                 Segment(t + 5 * 10**5, s, c, sp, cp, sseq + len(resp), cseq + len(req) + 1, FIN | ACK, b""),
                 Segment(t + 6 * 10**5, c, s, cp, sp, cseq + len(req) + 1, sseq + len(resp) + 1, ACK, b"")]
    hidden = path.with_name("." + path.name)
    write_pcap(hidden, LINKTYPE_ETHERNET, frames(segs))
    hidden.rename(path)


def feed(svc: Service, spool: Path, out: Path, n: int) -> None:
    """Put capture n (0-based) into the spool; wait until its records are written, then a little
    longer for any unexpected one."""
    capture(spool / f"cap{n}.pcap", T0 + n * FILE_GAP_NS, URIS, 40000 + 100 * n)
    want = len(URIS) * (n + 1)
    assert wait_until(lambda: len(read_jsonl(out)) >= want, WAIT_SECONDS), (n, read_jsonl(out), svc.log())
    time.sleep(SETTLE_SECONDS)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line of `text` containing `needle`."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def by_file(records: list[dict[str, Any]]) -> dict[str, Counter[tuple[str, str | None]]]:
    """For each capture file, how many records of each (uri, service set by a rule)."""
    out: dict[str, Counter[tuple[str, str | None]]] = {}
    for r in records:
        out.setdefault(r["pcap_file"], Counter())[(r["uri"], r.get("service"))] += 1
    return out


def test_sighup_with_a_broken_rule_keeps_the_old_rules_running(tmp_path: Path) -> None:
    spool, out = tmp_path / "spool", tmp_path / "records.jsonl"
    spool.mkdir()
    config = write_config(tmp_path / "pcapwatch.yaml", spool, tmp_path / "state", out)
    base = config.read_text()
    config.write_text(base + RULES_V1)

    with service(config, tmp_path / "pcapwatch.stderr") as svc:
        feed(svc, spool, out, 0)
        # A broken rule: the new configuration is refused as a whole, the running rules stay.
        config.write_text(base + RULES_BROKEN)
        broken_line = line_of(base + RULES_BROKEN, f"{BROKEN_KEY}:")
        svc.send(signal.SIGHUP)
        assert svc.wait_log("reload: the new configuration is not valid, keeping the running one", WAIT_SECONDS)
        feed(svc, spool, out, 1)
        refused = [line for line in svc.lines() if ": info: " not in line]
        # A valid changed rule: in force for the next file.
        config.write_text(base + RULES_V2)
        svc.send(signal.SIGHUP)
        assert svc.wait_log("info: reloaded the configuration and reopened the outputs", WAIT_SECONDS)
        feed(svc, spool, out, 2)
        assert svc.proc.poll() is None, svc.log()
        later = [line for line in svc.lines() if ": info: " not in line]
    assert svc.proc.returncode == 0, svc.log()
    assert len(refused) == 1, refused
    assert refused[0].startswith("pcapwatch: error: reload: the new configuration is not valid, keeping the "
                                 f"running one: {config}:{broken_line}: rules[0].match.{BROKEN_KEY}: found "
                                 f"unknown match key '{BROKEN_KEY}'"), refused
    assert later == refused  # the valid reload and the files after it: nothing more to say
    assert by_file(read_jsonl(out)) == {
        "cap0.pcap": Counter({("/api/a", "v1"): 1, ("/api/b", "v1"): 1, ("/static/c", None): 1}),
        "cap1.pcap": Counter({("/api/a", "v1"): 1, ("/api/b", "v1"): 1, ("/static/c", None): 1}),
        "cap2.pcap": Counter({("/api/a", None): 1, ("/api/b", None): 1, ("/static/c", "v2"): 1}),
    }
