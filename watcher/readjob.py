"""`pcapwatch read`: capture files, in order, as one continuous capture, to JSON lines.

The one module that wires `watcher` (files to frames) to `analyzers` (frames to transactions).
A large input is split over worker processes by connection (see `watcher/workers.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TextIO

from analyzers.pipeline import Pipeline
from watcher.jsonlines import JsonLinesWriter, TextSink
from watcher.pcapfile import CaptureError
from watcher.progress import Progress
from watcher.sources import Capture, expand

# Below this much input, starting a second process costs more than it saves.
PARALLEL_MIN_BYTES = 32 << 20


@dataclass
class ReadResult:
    files: int = 0
    files_failed: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def read_captures(paths: list[str], out: TextSink, err: TextIO, *, progress: bool = False,
                  max_connections: int | None = None, idle_timeout: float | None = None,
                  workers: int | None = None) -> ReadResult:
    """Read every input as one capture; write records to `out`, one-line problems to `err`.

    `workers`: processes sharing the connections; None chooses (several for a large input on a
    multi-core machine, one otherwise). Stdin is always read by one process.
    """
    files, notes = expand(paths)
    for note in notes:
        err.write(f"pcapwatch: {note}\n")
    kw: dict[str, Any] = {}
    if max_connections is not None:
        kw["max_connections"] = max_connections
    if idle_timeout is not None:
        kw["idle_timeout"] = idle_timeout
    total = sum(_size(p) for p in files)
    if workers is None:
        workers = min(os.cpu_count() or 1, 2) if total >= PARALLEL_MIN_BYTES else 1
    if "-" in files:
        workers = 1
    if workers > 1:
        from watcher.workers import read_parallel

        return read_parallel(files, out, err, workers, progress, kw)
    return analyze_files(files, out, err, progress, Pipeline(**kw))


def analyze_files(files: list[str], out: TextSink, err: TextIO, progress: bool, pipeline: Pipeline) -> ReadResult:
    """The read loop: every file in order through one pipeline.

    A failing output raises `OutputError` out of here; problems of an input are reported and the
    loop goes on with the next file.
    """
    writer = JsonLinesWriter(out)
    result = ReadResult()
    total = sum(_size(p) for p in files)
    bar = Progress(total, err, progress, count_transactions=pipeline.shards == 1)
    done_before = 0
    for path in files:
        result.files += 1
        try:
            cap = Capture(path)
        except OSError as e:
            _fail(result, err, f"{path}: cannot open: {e.strerror or e}")
            continue
        pipeline.set_source(cap.name)
        frames_before = pipeline.frames_seen
        try:
            for batches in cap.batches():
                for linktype, frames in batches:
                    writer.write(pipeline.feed(linktype, frames))
                bar.update(done_before + cap.position(), writer.written)
            if pipeline.frames_seen == frames_before:
                err.write(f"pcapwatch: {path}: no packets in this file (header only)\n")
        except CaptureError as e:
            bar.done()
            _fail(result, err, f"{path}: {e}; the rest of this file is skipped")
        except OSError as e:
            bar.done()
            _fail(result, err, f"{path}: read error: {e.strerror or e}")
        finally:
            done_before += _size(path)
            cap.close()
    writer.write(pipeline.close())
    writer.flush()
    bar.done()
    result.bytes_read = done_before
    result.stats = {"files": result.files, "files_failed": result.files_failed, "bytes": total,
                    **pipeline.stats()}
    return result


def _fail(result: ReadResult, err: TextIO, line: str) -> None:
    result.files_failed += 1
    result.errors.append(line)
    err.write(f"pcapwatch: error: {line}\n")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0
