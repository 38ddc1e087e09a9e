"""One door for every kind of input a verb is given: a capture file, a directory's file, stdin
(sources.Capture) or a Kafka topic of pycapa packets (kafka.KafkaSource, whose module, and with it
the Kafka client library, is imported only when a `kafka://` address is given).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from watcher.capture.pycapa import LINKTYPE_ETHERNET, is_kafka_url
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
