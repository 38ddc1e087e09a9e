"""The read loop shared by one process (`job`) and by the feeder of several (`parallel`): every
input file in order, as `Capture.read` gives it, with progress and one line per broken file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from watcher.capture.inputs import KafkaOptions, input_stats, open_input
from watcher.capture.pcapfile import CaptureError
from watcher.capture.pycapa import is_kafka_url
from watcher.capture.sources import Batches, Records
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
    kafka: dict[str, dict[str, Any]] = field(default_factory=dict)  # a kafka:// input's counters, by input


def read_files(files: list[str], err: TextIO, progress: bool, begin: Callable[[str, str], object],
               consume: Callable[[Batches | Records], int], close: Callable[[], None],
               written: Callable[[], int] | None = None, kafka: KafkaOptions | None = None) -> ReadResult:
    """Every file in order, as `Capture.read` gives it, to `consume` (which returns how many frames
    it took); `begin(path, name)` before each file, `close()` after the last. Shared by one process and
    by the feeder of several (see parallel.py). `written` counts records, for the progress line.
    A `kafka://` input is read as `kafka` says (see capture/inputs.py).
    """
    result = ReadResult()
    total = sum(input_size(p) for p in files)
    bar = Progress(total, err, progress, count_transactions=written is not None)
    done_before = 0
    for path in files:
        result.files += 1
        try:
            cap = open_input(path, kafka)
        except (OSError, ValueError) as e:
            _fail(result, err, f"{path}: cannot open: {getattr(e, 'strerror', None) or e}")
            continue
        begin(path, cap.name)
        frames = 0
        try:
            for item in cap.read():
                frames += consume(item)
                bar.update(done_before + cap.position(), written() if written is not None else 0)
            if not frames:
                err.write(f"pcapwatch: {printable(path)}: no packets on this topic\n" if is_kafka_url(path) else
                          f"pcapwatch: {printable(path)}: no packets in this file (header only)\n")
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
            _kafka_note(result, err, path, input_stats(cap))
    close()
    bar.done()
    result.bytes_read = done_before
    return result


def _kafka_note(result: ReadResult, err: TextIO, path: str, stats: dict[str, Any] | None) -> None:
    """A Kafka input's counters kept; the messages skipped said in one line."""
    if stats is None:
        return
    result.kafka[path] = stats
    bad_key, bad_value = stats["skipped_bad_key"], stats["skipped_bad_value"]
    if bad_key or bad_value:
        err.write(f"pcapwatch: {path}: skipped {bad_key + bad_value:,} messages that are not pycapa packets "
                  f"({bad_key:,} with a key that is not an 8-byte capture time, {bad_value:,} without a frame)\n")


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
