"""Several processes reading one capture: a feeder walks it, workers analyze, the parent writes.

The feeder reads the inputs and walks their records once (`Router.split`), which says for each
record the worker that owns its connection; it sends each worker, per stretch of the file, only
where its own records are. A worker reads that stretch itself (a `pread` from the page cache, or
gzip decompressed again) and analyzes its records in place. Each worker runs its own Pipeline
on its connections, in file order, and sends blocks of JSON lines to the parent, which alone
writes the output, so lines never interleave. Records of one connection come from one worker, in
order; across connections the order is the order blocks arrive. pcapng frames, which the capture
parser cuts out one by one, are routed the same way and sent to their worker whole.

Why this split: walking the records is a fifth of the work, and when every worker walked the whole
capture for its share, that fifth was done once per worker. Why workers read for themselves
rather than share the feeder's buffers: a shared buffer can be reused only when every worker is
done with it, which ties the workers together, and how busy each one is varies over a capture (a
burst of requests on one worker's connections, evictions). Offsets are small, so a deep queue of
them (the pipe, enlarged) lets a worker fall behind and catch up without stopping the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import multiprocessing
import struct
from array import array
from collections.abc import Callable
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TextIO, cast

from analyzers import Pipeline, RecordLayout, Router, Strings
from watcher.capture.pcapfile import CaptureError
from watcher.capture.sources import Batches, RangeReader, Records
from watcher.read.files import ReadResult, input_size, read_files
from watcher.read.lines import UTF8_ERRORS, JsonLinesWriter, OutputError, TextSink
from watcher.text.escape import printable
from watcher.text.faults import FaultLines

# Lines are sent in blocks this large: few messages, little latency, little memory.
BLOCK_BYTES = 256 * 1024
# Each worker's queue of offsets: a pipe enlarged to this (Linux lets any user go to 1 MiB). At 4
# bytes a record that is about 250,000 records a worker may be behind the feeder, a quarter of a
# gigabyte of a capture of full-size packets: more than the ebb and flow of load between workers
# on the captures we measured (bench/README.md).
QUEUE_BYTES = 1 << 20


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
            self.conn.send_bytes(b"L" + "".join(self.parts).encode("utf-8", UTF8_ERRORS))
            self.parts, self.size = [], 0


class _PipeErr(io.TextIOBase):
    """Lines for stderr, sent to the parent, which writes them where it was asked to."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def write(self, s: str) -> int:
        self.conn.send_bytes(b"E" + s.encode("utf-8", "backslashreplace"))
        return len(s)


class _Feeder:
    """Walks the records of each file and tells each worker where its own are."""

    def __init__(self, tasks: list[Connection]) -> None:
        self.tasks = tasks
        self.router = Router(len(tasks))

    def begin(self, path: str, name: str) -> None:
        for t in self.tasks:
            t.send(("file", path, name))

    def consume(self, item: Batches | Records) -> int:
        if isinstance(item, Records):
            layout = item.layout
            shares, item.used = self.router.split(item.buf, item.start, len(item.buf), layout)
            fields = (layout.linktype, layout.header.format, layout.scale, layout.max_fraction, layout.max_caplen)
            for task, offsets in zip(self.tasks, shares, strict=True):
                if offsets:
                    # The stretch from buf[0], since offsets are relative to it: bytes before
                    # `start` (a file header, the end of a record already taken) are read for nothing.
                    task.send(("records", item.base, item.used, _compact(offsets, item.used), fields))
            return sum(len(s) for s in shares)
        n = 0
        for linktype, frames in item:
            n += len(frames)
            for task, share in zip(self.tasks, self.router.route_frames(linktype, frames), strict=True):
                if share:
                    task.send(("frames", linktype, share))
        return n

    def close(self) -> None:
        for t in self.tasks:
            t.send(("close",))


def _compact(offsets: array[int], limit: int) -> tuple[str, bytes]:
    """Offsets below `limit` as (typecode, bytes), 4 bytes each when they fit: twice as many then
    fit in a worker's queue."""
    if limit < 1 << 32:
        offsets = array("I", offsets)
    return offsets.typecode, offsets.tobytes()


def _feed(*args: Any) -> None:
    """The feeder process: `_feed(*task_ends, report_end, files, progress)`."""
    *tasks, report, files, progress = args
    feeder = _Feeder(tasks)
    result = read_files(files, cast(TextIO, _PipeErr(report)), progress, feeder.begin, feeder.consume,
                        feeder.close)
    report.send_bytes(b"S" + json.dumps({"files": result.files, "files_failed": result.files_failed,
                                         "bytes_read": result.bytes_read, "bytes": sum(input_size(p) for p in files),
                                         "errors": result.errors}).encode())
    report.close()


@lru_cache(maxsize=16)
def _layout(linktype: int, header: str, scale: float, max_fraction: int, max_caplen: int) -> RecordLayout:
    return RecordLayout(linktype, struct.Struct(header), scale, max_fraction, max_caplen)


class _Worker:
    """Analyzes the records the feeder says are its own, reading them where they lie."""

    def __init__(self, conn: Connection, kw: dict[str, Any], strings: Strings) -> None:
        self.conn = conn
        self.pipeline = Pipeline(**kw)
        self.out = _PipeText(conn)
        self.writer = JsonLinesWriter(self.out, strings)
        self.reader: RangeReader | None = None
        self.path = ""
        self.faults = FaultLines(lambda line: conn.send_bytes(b"E" + f"pcapwatch: error: {printable(line)}\n".encode()))

    def run(self, tasks: Connection) -> None:
        pipeline, writer = self.pipeline, self.writer
        while True:
            msg = tasks.recv()
            kind = msg[0]
            if kind == "records":
                _, base, size, (typecode, offsets), fields = msg
                buf = self._read(base, size)
                if buf is not None:
                    writer.write(pipeline.feed_records(buf, memoryview(offsets).cast(typecode),
                                                       _layout(*fields), base))
                    self._faults()
            elif kind == "frames":
                writer.write(pipeline.feed(msg[1], msg[2]))
                self._faults()
            elif kind == "file":
                self._open(msg[1])
                pipeline.set_source(msg[2])
            else:
                break
        self._open(None)
        writer.write(pipeline.close())
        self.out.flush()
        self.faults.flush()
        self.conn.send_bytes(b"S" + json.dumps(pipeline.stats()).encode())
        self.conn.close()

    def _faults(self) -> None:
        """Lines about the packets whose analysis raised (each cost its connection only)."""
        for e in self.pipeline.take_errors():
            self.faults.report(self.path, e.pos, e.error)

    def _open(self, path: str | None) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if path is not None:
            self.path = path
            try:
                self.reader = RangeReader(path)
            except OSError as e:
                self._fail(f"cannot open: {e.strerror or e}")

    def _read(self, base: int, size: int) -> bytes | None:
        """The bytes the feeder walked; None when this file cannot be read here any more (it was
        replaced or cut since the feeder read it), said once."""
        if self.reader is None:
            return None
        try:
            return self.reader.read(base, size)
        except (OSError, CaptureError) as e:
            self._fail(f"{e}; the rest of this file is skipped")
            self._open(None)
            return None

    def _fail(self, problem: str) -> None:
        """Every worker reads every file: the parent says it once (see `_merge`)."""
        self.conn.send_bytes(b"F" + json.dumps([self.path, f"{self.path}: {problem}"]).encode())


def _work(tasks: Connection, conn: Connection, kw: dict[str, Any], strings: Strings) -> None:
    with contextlib.suppress(EOFError):  # the feeder is gone: the parent stops everything, or is gone
        _Worker(conn, kw, strings).run(tasks)


def _child(target: Callable[..., None], keep: tuple[Connection, ...], everyone: list[Connection],
           *args: Any) -> None:
    """Run `target` in a forked child that first closes the pipe ends it inherited but does not
    own. An end kept open by a process that never uses it would hold its pipe open: if the parent
    went away, a worker writing lines to a pipe no one reads would wait forever."""
    for c in everyone:
        if c not in keep:
            c.close()
    target(*keep, *args)


def read_parallel(files: list[str], out: TextSink, err: TextIO, shards: int, progress: bool,
                  kw: dict[str, Any], strings: Strings = Strings.UTF8) -> ReadResult:
    """Run a feeder and `shards` workers over `files`; merge their records into `out` and their
    counters into the result."""
    ctx = multiprocessing.get_context("fork")
    kw = dict(kw)
    if "max_connections" in kw:
        kw["max_connections"] = max(1, kw["max_connections"] // shards)
    err.flush()
    out.flush()
    task_pipes = [ctx.Pipe(duplex=False) for _ in range(shards)]  # feeder -> worker: (read end, write end)
    out_pipes = [ctx.Pipe(duplex=False) for _ in range(shards)]  # worker -> parent
    report_r, report_w = ctx.Pipe(duplex=False)  # feeder -> parent
    everyone = [c for pair in (*task_pipes, *out_pipes) for c in pair] + [report_r, report_w]
    for _task_r, task_w in task_pipes:
        _enlarge(task_w)
    for _out_r, out_w in out_pipes:
        _enlarge(out_w)  # a worker rarely waits for the parent to take its lines
    procs: list[BaseProcess] = []
    finals: dict[int, Any] = {}
    try:
        for shard in range(shards):
            keep = (task_pipes[shard][0], out_pipes[shard][1])
            procs.append(ctx.Process(target=_child, args=(_work, keep, everyone, kw, strings),
                                     name=f"pcapwatch-worker-{shard}", daemon=True))
        tasks = tuple(task_w for _r, task_w in task_pipes)
        procs.append(ctx.Process(target=_child, args=(_feed, (*tasks, report_w), everyone, files, progress),
                                 name="pcapwatch-feeder", daemon=True))
        for proc in procs:
            proc.start()
        mine = [out_r for out_r, _w in out_pipes] + [report_r]
        for c in everyone:
            if c not in mine:
                c.close()
        who = {out_r: shard for shard, (out_r, _w) in enumerate(out_pipes)}
        who[report_r] = -1
        finals, failures = _merge(who, out, err)
    finally:
        for proc in procs:
            if len(finals) != shards + 1 and proc.pid is not None:  # something failed: stop the rest
                proc.kill()
            if proc.pid is not None:
                proc.join()
    failed = [proc.name for proc in procs if proc.exitcode != 0]
    if failed or len(finals) != shards + 1:
        raise RuntimeError(f"worker process failed: {', '.join(failed) or 'no result'}")
    fed = finals[-1]
    result = ReadResult(files=fed["files"], files_failed=fed["files_failed"] + len(failures),
                        bytes_read=fed["bytes_read"], errors=fed["errors"] + list(failures.values()))
    result.stats = {"files": result.files, "files_failed": result.files_failed, "bytes": fed["bytes"],
                    **merge_stats([finals[k] for k in range(shards)])}
    result.analysis_errors = result.stats["connections"]["internal_errors"]
    return result


def _enlarge(conn: Connection) -> None:
    """Make a pipe hold `QUEUE_BYTES` (where the system allows; a smaller pipe only costs speed)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, QUEUE_BYTES)


def _merge(who: dict[Connection, int], out: TextSink, err: TextIO) -> tuple[dict[int, Any], dict[str, str]]:
    """Write the children's lines as they come. Return each one's final report by index, and the
    files workers could not read (the first problem said for each: every worker meets it). A
    child that ends without a final report failed: the others are stopped, not waited for."""
    finals: dict[int, Any] = {}
    failures: dict[str, str] = {}
    conns = dict(who)
    while conns:
        for c in wait(list(conns)):
            assert isinstance(c, Connection)
            try:
                msg = c.recv_bytes()
            except EOFError:
                if conns.pop(c) not in finals:
                    return finals, failures
                continue
            tag = msg[:1]
            if tag == b"L":
                try:
                    out.write(msg[1:].decode("utf-8"))
                except OSError as e:
                    raise OutputError(e.strerror or str(e)) from e
            elif tag == b"E":
                err.write(msg[1:].decode("utf-8"))
                err.flush()
            elif tag == b"F":
                path, line = json.loads(msg[1:])
                if path not in failures:
                    failures[path] = line
                    err.write(f"pcapwatch: error: {printable(line)}\n")
                    err.flush()
            else:
                finals[conns[c]] = json.loads(msg[1:])
    return finals, failures


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the workers' counters (each counted only the frames and connections it was given)."""
    return {key: _sum([p[key] for p in parts]) for key in parts[0]}


def _sum(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        keys = {k for v in values for k in v}
        return {k: _sum([v.get(k, 0) for v in values]) for k in sorted(keys)}
    return sum(values)
