"""watcher/run/connections.py: open connections' identities from the pipeline to the checkpoint and
back; a connection whose message had begun is named by a mark, and continues at that packet in the
generation with that fingerprint, whatever index this run gives it."""

from __future__ import annotations

from helpers import pcapgen as g
from helpers.keepalive import keepalive

from analyzers import Pipeline, Transaction
from watcher.capture.pcapfile import CaptureParser
from watcher.capture.spool import Generation
from watcher.read.lines import record_line
from watcher.run.connections import Connections
from watcher.run.resume import POS_BITS


def gen(index: int, fp: str) -> Generation:
    return Generation(fp, 1.0, f"/spool/{fp}", 0, 0, b"", False, 0, 0, index=index)


def test_saved_connections_continue_in_the_next_run() -> None:
    data = g.pcap_bytes(g.LINKTYPE_ETHERNET, g.frames(keepalive(seed=2, connections=4, requests=(3, 4))))
    (linktype, frames), = CaptureParser().parse(data, 0)[0]
    whole = Pipeline()
    want = [record_line(t) for t in whole.feed(linktype, frames) + whole.close()]
    for k in range(5, len(frames), 7):
        # Run 1 reads the file as its generation 3; run 2 as its generation 0.
        a = Pipeline()
        txs: list[Transaction] = a.feed(linktype, frames[:k], 3 << POS_BITS)
        pin = a.pin()
        resume = min(pin, (3 << POS_BITS) | frames[k][0]) if pin is not None else (3 << POS_BITS) | frames[k][0]
        saved = Connections(a).to_save({3: gen(3, "fp-a")})
        assert all(c[-1] is None or c[-1][0] == "fp-a" for c in saved)
        b = Pipeline()
        conns = Connections(b, saved)
        conns.reading(0, {0: gen(0, "fp-a")})
        assert conns.starts == {}
        rest = [f for f in frames if f[0] >= resume & ((1 << POS_BITS) - 1)]
        later = b.feed(linktype, rest, 0) + b.close()
        emitted = frames[k - 1][0]
        got = [record_line(t) for t in txs] + [record_line(t) for t in later if t.done_pos & ((1 << POS_BITS) - 1)
                                               > emitted]
        assert got == want, k
        assert conns.to_save({0: gen(0, "fp-a")}) == Connections(b).to_save({0: gen(0, "fp-a")})


def test_a_connection_whose_file_is_not_reached_yet_is_saved_as_it_was() -> None:
    busy = ("10.0.0.1", 40000, "10.0.0.2", 80, "CAbcdefghijklmnopq", 1.0, 2.0, True, 3, None, False, None, None,
            ("fp-b", 4242))
    conns = Connections(Pipeline(), (busy,))
    assert conns.to_save({0: gen(0, "fp-a")}) == (busy,)  # fp-b not read yet: the same mark
    assert conns.status() == "connections saved 1 (not saved 0)"
