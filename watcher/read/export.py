"""`pcapwatch export`: the frames of any inputs (files, a directory, stdin, `kafka://` topics) as one
libpcap file, written the way pycapa's consumer writes one (see capture/pycapa.py): a µs header in
the machine's byte order with snaplen 65535, and per frame a record whose captured and wire lengths
are both the frame's length. For a Kafka input the file is byte for byte pycapa's; `-w -` feeds a
pipe (`pcapwatch export kafka://... -w - | wireshark -k -i -`).

The inputs are walked by the read loop (files.read_files), in the order given, as `read` walks them.
One file has one link type: frames of another one than the first frame's are counted and left out.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from watcher.capture.inputs import KafkaOptions, timed_frames
from watcher.capture.pycapa import is_kafka_url, pcap_global_header, pcap_record
from watcher.capture.sources import Batches, Records, expand
from watcher.read.files import ReadResult, read_files

# Records gathered before one write: fewer system calls, little memory.
WRITE_BATCH = 1 << 20


@dataclass
class ExportResult:
    read: ReadResult
    packets: int = 0
    other_linktype: int = 0  # frames left out: not the file's link type
    linktype: int | None = None


class PcapWriter:
    """Frames to a libpcap stream; the header goes out with the first frame (its link type)."""

    def __init__(self, out: BinaryIO, default_linktype: int) -> None:
        self.out = out
        self.default_linktype = default_linktype
        self.linktype: int | None = None
        self.packets = 0
        self.other_linktype = 0
        self.buf: list[bytes] = []
        self.size = 0

    def write(self, linktype: int, micros: int, frame: bytes) -> None:
        if self.linktype is None:
            self._header(linktype)
        if linktype != self.linktype:
            self.other_linktype += 1
            return
        self.buf += (pcap_record(micros, frame), frame)
        self.size += 16 + len(frame)
        self.packets += 1
        if self.size >= WRITE_BATCH:
            self.flush()

    def start(self) -> None:
        """The header now, with the default link type, and flushed."""
        self._header(self.default_linktype)
        self.flush()

    def _header(self, linktype: int) -> None:
        self.linktype = linktype
        self.buf.append(pcap_global_header(linktype))

    def flush(self) -> None:
        if self.buf:
            self.out.write(b"".join(self.buf))
            self.buf, self.size = [], 0
        self.out.flush()

    def close(self) -> None:
        if self.linktype is None:  # no frame at all: still a valid, empty capture
            self._header(self.default_linktype)
        self.flush()


def export_captures(paths: list[str], out: BinaryIO, err: TextIO, *, progress: bool = False,
                    kafka: KafkaOptions | None = None) -> ExportResult:
    """Write every input's frames to `out` as one libpcap file; problems of an input are reported on
    `err`, one line each, and the next input follows. OSError out of here when `out` fails."""
    files, notes = expand(paths)
    for note in notes:
        err.write(f"pcapwatch: {note}\n")
    writer = PcapWriter(out, (kafka or KafkaOptions()).linktype)
    if files and all(is_kafka_url(f) for f in files):
        # The link type is known before the first message: the header goes out now, so that a
        # reader at the other end of a pipe (wireshark -k -i -) starts even while the topic is quiet.
        writer.start()

    def consume(item: Batches | Records) -> int:
        n = 0
        for linktype, _pos, micros, frame in timed_frames(item):
            writer.write(linktype, micros, frame)
            n += 1
        writer.flush()  # each batch as it comes: a pipe sees packets as they are read
        return n

    result = read_files(files, err, progress, lambda _p, _n: None, consume, writer.close, kafka=kafka)
    if writer.other_linktype:
        err.write(f"pcapwatch: left out {writer.other_linktype:,} frames of another link type than the first "
                  f"frame's ({writer.linktype}): one pcap file holds one link type; export them separately\n")
    return ExportResult(result, writer.packets, writer.other_linktype, writer.linktype)


def export_main(inputs: list[str], write: str, stats: bool, kafka: KafkaOptions, err: TextIO) -> int:
    """`pcapwatch export`, with its exit status (as cli.py's: 0 all read, 1 an input failed, 3 the
    output failed)."""
    try:
        out = sys.stdout.buffer if write == "-" else open(write, "wb")  # noqa: SIM115
    except OSError as e:
        err.write(f"pcapwatch: error: cannot write {write}: {e.strerror}\n")
        return 3
    try:
        result = export_captures(inputs, out, err, progress=err.isatty(), kafka=kafka)
        if out is not sys.stdout.buffer:
            out.close()
    except OSError as e:
        err.write(f"pcapwatch: error: writing {write} failed: {e.strerror or e}\n")
        return 3
    if stats:
        err.write(f"pcapwatch: exported {result.packets:,} packets from {result.read.files:,} inputs "
                  f"({result.read.files_failed:,} with errors, {result.other_linktype:,} frames of another link type "
                  f"left out) to {write}\n")
    return 1 if result.read.files_failed else 0
