"""Several processes reading one capture, each owning a share of the connections.

Every worker reads all the files (the second read comes from the page cache) and decodes every
frame, but tracks only the connections whose port sum falls in its shard; reassembly, HTTP and
records, the bulk of the work, are split. Workers send blocks of JSON lines to the parent, which
alone writes the output, so lines never interleave. Records of one connection come from one worker,
in order; across connections the order is the order blocks arrive.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sys
from multiprocessing.connection import Connection, wait
from typing import Any, TextIO

from analyzers.pipeline import Pipeline
from watcher.jsonlines import OutputError, TextSink
from watcher.readjob import ReadResult, analyze_files

# Lines are sent in blocks this large: few messages, little latency, little memory.
BLOCK_BYTES = 256 * 1024
# Counters about the input itself, which every worker sees whole: take them from one worker.
INPUT_COUNTERS = ("files", "files_failed", "bytes", "frames", "frames_skipped", "tcp_packets")


class _PipeText(io.TextIOBase):
    """A text stream that ships what is written to the parent in blocks."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.parts: list[str] = []
        self.size = 0

    def write(self, s: str) -> int:
        self.parts.append(s)
        self.size += len(s)
        if self.size >= BLOCK_BYTES:
            self.flush()
        return len(s)

    def flush(self) -> None:
        if self.parts:
            self.conn.send_bytes(b"L" + "".join(self.parts).encode("ascii", "backslashreplace"))
            self.parts, self.size = [], 0


def _worker(files: list[str], shard: int, shards: int, conn: Connection, progress: bool,
            kw: dict[str, Any]) -> None:
    # Only the first worker speaks to the user; the others see the same files and problems.
    err: TextIO = sys.stderr if shard == 0 else open(os.devnull, "w")  # noqa: SIM115
    pipeline = Pipeline(shard=shard, shards=shards, **kw)
    out = _PipeText(conn)
    result = analyze_files(files, out, err, progress, pipeline)
    out.flush()
    conn.send_bytes(b"S" + json.dumps({"stats": result.stats, "errors": result.errors}).encode())
    conn.close()


def read_parallel(files: list[str], out: TextSink, err: TextIO, shards: int, progress: bool,
                  kw: dict[str, Any]) -> ReadResult:
    """Run `shards` workers over `files`; merge their records into `out` and their counters."""
    ctx = multiprocessing.get_context("fork")
    kw = dict(kw)
    if "max_connections" in kw:
        kw["max_connections"] = max(1, kw["max_connections"] // shards)
    err.flush()
    out.flush()
    conns: dict[Connection, int] = {}
    procs = []
    for shard in range(shards):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(files, shard, shards, send, progress and shard == 0, kw),
                        name=f"pcapwatch-worker-{shard}", daemon=True)
        p.start()
        send.close()
        conns[recv] = shard
        procs.append(p)
    finals: dict[int, dict[str, Any]] = {}
    while conns:
        for c in wait(list(conns)):
            assert isinstance(c, Connection)
            try:
                msg = c.recv_bytes()
            except EOFError:
                del conns[c]
                continue
            if msg[:1] == b"L":
                try:
                    out.write(msg[1:].decode("ascii"))
                except OSError as e:
                    for p in procs:
                        p.kill()
                    raise OutputError(e.strerror or str(e)) from e
            else:
                finals[conns[c]] = json.loads(msg[1:])
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed or len(finals) != shards:
        raise RuntimeError(f"worker process failed: {', '.join(failed) or 'no result'}")
    first = finals[0]
    result = ReadResult(files=first["stats"]["files"], files_failed=first["stats"]["files_failed"],
                        bytes_read=first["stats"]["bytes"], errors=first["errors"])
    result.stats = merge_stats([finals[k]["stats"] for k in range(shards)])
    return result


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum workers' counters; the ones describing the input come from the first worker."""
    merged: dict[str, Any] = {}
    for key, value in parts[0].items():
        if key in INPUT_COUNTERS:
            merged[key] = value
        else:
            merged[key] = _sum([p[key] for p in parts])
    return merged


def _sum(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        keys = {k for v in values for k in v}
        return {k: _sum([v.get(k, 0) for v in values]) for k in sorted(keys)}
    return sum(values)
