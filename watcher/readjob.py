"""`pcapwatch read`: capture files, in order, as one continuous capture, to JSON lines.

The one module that wires `watcher` (files to frames) to `analyzers` (frames to transactions).
A large input is split over worker processes by connection (see `watcher/workers.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from analyzers.pipeline import Pipeline, split_records
from watcher.jsonlines import JsonLinesWriter, TextSink
from watcher.pcapfile import CaptureError
from watcher.progress import Progress
from watcher.sources import Batches, Capture, Records, expand

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
    total = sum(input_size(p) for p in files)
    if workers is None:
        workers = min(os.cpu_count() or 1, 2) if total >= PARALLEL_MIN_BYTES else 1
    if "-" in files:
        workers = 1
    if workers > 1:
        from watcher.workers import read_parallel

        return read_parallel(files, out, err, workers, progress, kw)
    return analyze_files(files, out, err, progress, Pipeline(**kw))


def analyze_files(files: list[str], out: TextSink, err: TextIO, progress: bool, pipeline: Pipeline) -> ReadResult:
    """The read loop of one process: every file in order through one pipeline.

    A failing output raises `OutputError` out of here; problems of an input are reported and the
    loop goes on with the next file.
    """
    writer = JsonLinesWriter(out)

    def consume(item: Batches | Records) -> int:
        if isinstance(item, Records):
            offsets, item.used = split_records(item.buf, item.start, len(item.buf), item.layout)
            writer.write(pipeline.feed_records(item.buf, offsets, item.layout, item.base))
            return len(offsets)
        n = 0
        for linktype, frames in item:
            writer.write(pipeline.feed(linktype, frames))
            n += len(frames)
        return n

    def close() -> None:
        writer.write(pipeline.close())
        writer.flush()

    result = read_files(files, err, progress, lambda _path, name: pipeline.set_source(name), consume, close,
                        lambda: writer.written)
    result.stats = {"files": result.files, "files_failed": result.files_failed,
                    "bytes": sum(input_size(p) for p in files), **pipeline.stats()}
    return result


def read_files(files: list[str], err: TextIO, progress: bool, begin: Callable[[str, str], object],
               consume: Callable[[Batches | Records], int], close: Callable[[], None],
               written: Callable[[], int] | None = None) -> ReadResult:
    """Every file in order, as `Capture.read` gives it, to `consume` (which returns how many frames
    it took); `begin(path, name)` before each file, `close()` after the last. Shared by one process and
    by the feeder of several (see workers.py). `written` counts records, for the progress line.
    """
    result = ReadResult()
    total = sum(input_size(p) for p in files)
    bar = Progress(total, err, progress, count_transactions=written is not None)
    done_before = 0
    for path in files:
        result.files += 1
        try:
            cap = Capture(path)
        except OSError as e:
            _fail(result, err, f"{path}: cannot open: {e.strerror or e}")
            continue
        begin(path, cap.name)
        frames = 0
        try:
            for item in cap.read():
                frames += consume(item)
                bar.update(done_before + cap.position(), written() if written is not None else 0)
            if not frames:
                err.write(f"pcapwatch: {path}: no packets in this file (header only)\n")
        except CaptureError as e:
            bar.done()
            _fail(result, err, f"{path}: {e}; the rest of this file is skipped")
        except OSError as e:
            bar.done()
            _fail(result, err, f"{path}: read error: {e.strerror or e}")
        finally:
            done_before += input_size(path)
            cap.close()
    close()
    bar.done()
    result.bytes_read = done_before
    return result


def _fail(result: ReadResult, err: TextIO, line: str) -> None:
    result.files_failed += 1
    result.errors.append(line)
    err.write(f"pcapwatch: error: {line}\n")


def input_size(path: str) -> int:
    """An input's size in bytes, for progress and counters (0 for stdin or when unknown)."""
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0
