"""One door for every kind of input a verb is given: a capture file, a directory's file, stdin
(sources.Capture) or a Kafka topic of pycapa packets (kafka.KafkaSource, whose module, and with it
the Kafka client library, is imported only when a `kafka://` address is given).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from analyzers import RecordLayout, split_records
from watcher.capture.pycapa import LINKTYPE_ETHERNET, MICROS, is_kafka_url, ts_micros
from watcher.capture.sources import Batches, Capture, Records


class Input(Protocol):
    path: str
    name: str  # what a record's pcap_file says

    def read(self) -> Iterator[Batches | Records]: ...

    def position(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """How a `kafka://` input is read (`--kafka-offset`, `--linktype`, `--max-packets`)."""

    start: str = "beginning"  # or "end": new messages only, until max_packets or a signal
    linktype: int = LINKTYPE_ETHERNET
    max_packets: int | None = None
    stop: threading.Event | None = None  # set (by a signal handler) to end a read of new messages
    notes: TextIO | None = None  # told when a read of new messages has reached the end


def open_input(path: str, kafka: KafkaOptions | None = None) -> Input:
    """Open one input; OSError (KafkaIOError for a broker or topic) or ValueError (a bad
    `kafka://` address) with a one-line reason when it cannot be."""
    if is_kafka_url(path):
        from watcher.capture.kafka import open_source

        k = kafka or KafkaOptions()
        return open_source(path, start=k.start, linktype=k.linktype, max_packets=k.max_packets, stop=k.stop,
                           notes=k.notes)
    return Capture(path)


def input_stats(inp: Input) -> dict[str, Any] | None:
    """A Kafka input's counters (messages, skipped ones, partitions); None for a file."""
    stats = getattr(inp, "stats", None)
    return stats() if callable(stats) else None


TimedFrame = tuple[int, int, int, bytes]  # (link type, input position, capture time in whole µs, frame)


def timed_frames(item: Batches | Records) -> Iterator[TimedFrame]:
    """Every frame of what an input's `read()` gave, with its time as whole microseconds: for classic
    pcap records straight from the record header (no float in between), else from the frame's
    timestamp. Sets a `Records`' `used`, as its consumer must."""
    if isinstance(item, Records):
        offsets, item.used = split_records(item.buf, item.start, len(item.buf), item.layout)
        yield from _records(item.buf, offsets, item.layout, item.base)
        return
    for linktype, frames in item:
        for pos, ts, data in frames:
            yield linktype, pos, ts_micros(ts), data


def _records(buf: bytes, offsets: Sequence[int], layout: RecordLayout, base: int) -> Iterator[TimedFrame]:
    unpack = layout.header.unpack_from
    size = layout.header.size
    per_micro = round(layout.scale * 1e9)  # 1000 for µs files, 1 for ns files (rounded to the nearest µs)
    linktype = layout.linktype
    for off in offsets:
        sec, frac, caplen, _orig = unpack(buf, off)
        yield linktype, base + off, sec * MICROS + (frac * per_micro + 500) // 1000, \
            bytes(buf[off + size:off + size + caplen])
