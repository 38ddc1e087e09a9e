"""`pcapwatch read`: capture files, in order, as one continuous capture, to JSON lines.

The one module that wires `watcher` (files to frames) to `analyzers` (frames to transactions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TextIO

from analyzers.pipeline import Pipeline
from watcher.jsonlines import JsonLinesWriter
from watcher.pcapfile import CaptureError
from watcher.progress import Progress
from watcher.sources import Capture, expand


@dataclass
class ReadResult:
    files: int = 0
    files_failed: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def read_captures(paths: list[str], out: TextIO, err: TextIO, *, progress: bool = False,
                  max_connections: int | None = None, idle_timeout: float | None = None) -> ReadResult:
    """Read every input as one capture; write records to `out`, one-line problems to `err`."""
    files, notes = expand(paths)
    for note in notes:
        err.write(f"pcapwatch: {note}\n")
    kw: dict[str, Any] = {}
    if max_connections is not None:
        kw["max_connections"] = max_connections
    if idle_timeout is not None:
        kw["idle_timeout"] = idle_timeout
    pipeline = Pipeline(**kw)
    writer = JsonLinesWriter(out)
    result = ReadResult()
    total = sum(_size(p) for p in files)
    bar = Progress(total, err, progress)
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
