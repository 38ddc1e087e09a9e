"""The `pcap` action through the running service, with tshark as the judge of the files.

`pcapwatch run` reads a corpus capture with a rule writing the connections of 404s to pcap files:
tshark finds in each connection's files exactly the 404 responses the records give it, and every
packet written is that connection's packet in the original capture, byte for byte, in order.
A SIGHUP that removes the rule stops the files (and the keeping of packets); one that brings it
back starts them again, for the next capture's connections.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

from helpers import pcapgen as g
from helpers.env import corpus, need_tool, read_records
from helpers.liveenv import read_jsonl, service, wait_until

from analyzers.tcp.frames import FrameDecoder
from watcher.capture.pcapfile import CaptureParser

DECODE = FrameDecoder().link_decoder(1)  # Ethernet, as the corpus captures are
RULE = """rules:
  - name: notfound
    match: {{status: 404}}
    actions:
      - tag: nf
      - pcap: {{dir: {dir}, max_bytes: 50000000, max_file_bytes: 2000000}}
"""


def config(path: Path, base: Path, rules: str) -> None:
    path.write_text(f"spool: {{dir: {base / 'spool'}, rescan_seconds: 0.5}}\n"
                    f"state: {{dir: {base / 'state'}, checkpoint_seconds: 1.0}}\n"
                    f"outputs:\n  - {{name: records, type: jsonl, path: {base / 'out.jsonl'}}}\n" + rules)


def frames(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    batches, end = CaptureParser().parse(data, 0)
    assert end == len(data), path
    return [(ts, bytes(f)) for _linktype, fs in batches for _, ts, f in fs]


def connection_of(frame: bytes) -> frozenset[tuple[object, int]]:
    d = DECODE(frame)
    assert d is not None
    return frozenset(((d[0], d[2]), (d[1], d[3])))


def tshark_404s(path: Path) -> int:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "http.response.code == 404", "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, timeout=60, check=True).stdout
    return len(out.split())


def wait_records(out: Path, n: int) -> list[dict[str, object]]:
    assert wait_until(lambda: out.exists() and len(read_jsonl(out)) >= n, 60), f"fewer than {n} records"
    return read_jsonl(out)


def test_pcap_action_writes_the_matching_connections_and_sighup_turns_it_off_and_on(tmp_path: Path) -> None:
    need_tool("tshark")
    mix, mix1500 = corpus("local", "mix.pcap"), corpus("local", "mix1500.pcap")
    (tmp_path / "spool").mkdir()
    pcaps = tmp_path / "pcaps"
    conf, out = tmp_path / "pcapwatch.yaml", tmp_path / "out.jsonl"
    config(conf, tmp_path, RULE.format(dir=pcaps))
    # The third round: mix.pcap an hour later (new connections to the service: new uids, new bytes).
    later = g.write_pcap(tmp_path / "later.pcap", g.LINKTYPE_ETHERNET,
                         g.frames([s._replace(ts_ns=s.ts_ns + 3600 * 10**9) for s in g.read_segments(mix)]))
    first, _, _ = read_records(mix)
    second, _, _ = read_records(mix1500)
    with service(conf, tmp_path / "stderr") as svc:
        assert svc.wait_log(f"packets of matching connections to {pcaps}")
        shutil.copy(mix, tmp_path / "spool" / "cap.pcap")
        records = wait_records(out, len(first))
        config(conf, tmp_path, "")  # the rule goes: no more files
        svc.send(signal.SIGHUP)
        assert svc.wait_log("reloaded the configuration")
        written = {p.name: p.stat().st_size for p in pcaps.iterdir()}
        shutil.copy(mix1500, tmp_path / "spool" / "cap.pcap1")
        records = wait_records(out, len(first) + len(second))
        assert {p.name: p.stat().st_size for p in pcaps.iterdir()} == written
        config(conf, tmp_path, RULE.format(dir=pcaps))  # and back
        svc.send(signal.SIGHUP)
        assert wait_until(lambda: svc.log().count("reloaded the configuration") == 2, 10)
        shutil.copy(later, tmp_path / "spool" / "cap.pcap2")
        records = wait_records(out, 2 * len(first) + len(second))
        assert svc.lines("error") == [] and svc.lines("warning") == []
    by_uid: dict[str, list[Path]] = defaultdict(list)
    for p in pcaps.iterdir():
        by_uid[p.stem.split("-")[2]].append(p)
    rounds = ((mix, records[:len(first)]), (later, records[len(first) + len(second):]))
    notfound = {r["uid"]: capture for capture, recs in rounds for r in recs if r["status_code"] == 404}
    assert notfound and set(by_uid) == set(notfound)
    assert len(notfound) == 2 * len({r["uid"] for r in first if r["status_code"] == 404})
    assert all(r["tags"] == ["nf"] for _, recs in rounds for r in recs if r["status_code"] == 404)
    want = Counter(r["uid"] for _, recs in rounds for r in recs if r["status_code"] == 404)
    originals = {capture: connections(capture) for capture in (mix, later)}
    for uid, paths in by_uid.items():
        assert sum(tshark_404s(p) for p in paths) == want[uid], uid
        for p in paths:
            got = frames(p)
            conn = originals[notfound[uid]][connection_of(got[0][1])]
            assert {connection_of(f) for _, f in got} == {connection_of(conn[0][1])}
            it = iter(conn)  # in order, each the original's bytes and time
            assert all(any(x == (round(ts, 6), f) for ts, f in it) for x in got), p


def connections(capture: Path) -> dict[frozenset[tuple[object, int]], list[tuple[float, bytes]]]:
    """The capture's frames by connection."""
    out: dict[frozenset[tuple[object, int]], list[tuple[float, bytes]]] = defaultdict(list)
    for ts, f in frames(capture):
        out[connection_of(f)].append((ts, f))
    return out
