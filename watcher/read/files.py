"""The read loop shared by one process (`job`) and by the feeder of several (`parallel`): every
input file in order, as `Capture.read` gives it, with progress and one line per broken file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from watcher.capture.pcapfile import CaptureError
from watcher.capture.sources import Batches, Capture, Records
from watcher.read.lines import OutputError
from watcher.read.progress import Progress
from watcher.text.escape import printable


@dataclass
class ReadResult:
    files: int = 0
    files_failed: int = 0
    analysis_errors: int = 0  # packets whose analysis raised (each cost its connection)
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def read_files(files: list[str], err: TextIO, progress: bool, begin: Callable[[str, str], object],
               consume: Callable[[Batches | Records], int], close: Callable[[], None],
               written: Callable[[], int] | None = None) -> ReadResult:
    """Every file in order, as `Capture.read` gives it, to `consume` (which returns how many frames
    it took); `begin(path, name)` before each file, `close()` after the last. Shared by one process and
    by the feeder of several (see parallel.py). `written` counts records, for the progress line.
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
                err.write(f"pcapwatch: {printable(path)}: no packets in this file (header only)\n")
        except CaptureError as e:
            bar.done()
            _fail(result, err, f"{path}: {e}; the rest of this file is skipped")
        except OSError as e:
            bar.done()
            _fail(result, err, f"{path}: read error: {e.strerror or e}")
        except OutputError:
            raise
        except Exception as e:  # a bug met on this file: it costs this file, never the files after it
            bar.done()
            _fail(result, err, f"{path}: reading this file failed ({type(e).__name__}: {e}); the rest of this "
                               "file is skipped; this is a bug in pcapwatch: please report it with this file")
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
    err.write(f"pcapwatch: error: {printable(line)}\n")


def input_size(path: str) -> int:
    """An input's size in bytes, for progress and counters (0 for stdin or when unknown)."""
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0
