"""`pcapwatch read`: capture files, in order, as one continuous capture, to JSON lines.

Wires `watcher.capture` (files to frames) to `analyzers` (frames to transactions) in one process;
a large input is split over worker processes by connection (`parallel`). Both walk the files with
`files.read_files`.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from analyzers import Pipeline, Strings, split_records
from watcher.capture.inputs import KafkaOptions
from watcher.capture.pycapa import is_kafka_url
from watcher.capture.sources import Batches, Records, expand
from watcher.read.files import ReadResult, input_size, read_files
from watcher.read.lines import JsonLinesWriter, TextSink
from watcher.read.parallel import read_parallel
from watcher.text.escape import printable
from watcher.text.faults import FaultLines

# Below this much input, starting a second process costs more than it saves.
PARALLEL_MIN_BYTES = 32 << 20


def read_captures(paths: list[str], out: TextSink, err: TextIO, *, progress: bool = False,
                  max_connections: int | None = None, idle_timeout: float | None = None,
                  workers: int | None = None, strings: Strings = Strings.UTF8,
                  kafka: KafkaOptions | None = None) -> ReadResult:
    """Read every input as one capture; write records to `out`, one-line problems to `err`.

    `workers`: processes sharing the connections; None chooses (several for a large input on a
    multi-core machine, one otherwise). Stdin and Kafka topics are always read by one process.
    `strings`: how wire text is written (README "The record"); `kafka`: how a `kafka://` input is
    read.
    """
    files, notes = expand(paths)
    for note in notes:
        err.write(f"pcapwatch: {printable(note)}\n")
    kw: dict[str, Any] = {}
    if max_connections is not None:
        kw["max_connections"] = max_connections
    if idle_timeout is not None:
        kw["idle_timeout"] = idle_timeout
    total = sum(input_size(p) for p in files)
    if workers is None:
        workers = min(os.cpu_count() or 1, 2) if total >= PARALLEL_MIN_BYTES else 1
    if "-" in files or any(is_kafka_url(f) for f in files):
        workers = 1
    if workers > 1:
        return read_parallel(files, out, err, workers, progress, kw, strings)
    return analyze_files(files, out, err, progress, Pipeline(**kw), strings, kafka)


def analyze_files(files: list[str], out: TextSink, err: TextIO, progress: bool, pipeline: Pipeline,
                  strings: Strings = Strings.UTF8, kafka: KafkaOptions | None = None) -> ReadResult:
    """The read loop of one process: every file in order through one pipeline.

    A failing output raises `OutputError` out of here; problems of an input are reported and the
    loop goes on with the next file.
    """
    writer = JsonLinesWriter(out, strings)
    faults = FaultLines(lambda line: err.write(f"pcapwatch: error: {printable(line)}\n"))
    current = [""]  # the file being read, for the lines about packets whose analysis raised

    def begin(path: str, name: str) -> None:
        current[0] = path
        pipeline.set_source(name)

    def consume(item: Batches | Records) -> int:
        if isinstance(item, Records):
            offsets, item.used = split_records(item.buf, item.start, len(item.buf), item.layout)
            writer.write(pipeline.feed_records(item.buf, offsets, item.layout, item.base))
            n = len(offsets)
        else:
            n = 0
            for linktype, frames in item:
                writer.write(pipeline.feed(linktype, frames))
                n += len(frames)
        for e in pipeline.take_errors():
            faults.report(current[0], e.pos, e.error)
        return n

    def close() -> None:
        writer.write(pipeline.close())
        writer.flush()
        faults.flush()

    result = read_files(files, err, progress, begin, consume, close, lambda: writer.written, kafka)
    result.stats = {"files": result.files, "files_failed": result.files_failed,
                    "bytes": sum(input_size(p) for p in files), **pipeline.stats(),
                    **({"kafka": result.kafka} if result.kafka else {})}
    result.analysis_errors = result.stats["connections"]["internal_errors"]
    return result


