"""pycapa's packet format on Kafka, and the libpcap file its consumer writes; `kafka://` addresses.

Apache Metron's pycapa (and fastcapa, and anything compatible) puts one packet per message: the key
is the capture time in microseconds since the epoch as a big-endian unsigned 64-bit integer, the
value the raw frame with no pcap header. Its consumer rebuilds a libpcap file: a global header in
the machine's byte order (magic 0xa1b2c3d4, version 2.4, zone 0, sigfigs 0, snaplen 65535, link
type 1), then for each message a record header (seconds and microseconds from the key, captured
length = wire length = the value's length) and the value.

Pure: no Kafka client here (that is `kafka.py`, imported only when a `kafka://` address is used).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

KEY = struct.Struct(">Q")
# pycapa's consumer: struct.pack("IHHIIII", ...) and struct.pack("IIII", ...), native byte order.
GLOBAL_HEADER = struct.Struct("=IHHiIII")
RECORD_HEADER = struct.Struct("=IIII")
PCAP_MAGIC_US = 0xA1B2C3D4
# pycapa's default --snaplen, written into the header it makes.
PYCAPA_SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
MICROS = 1_000_000

# Link type names accepted by --linktype (the numbers of https://www.tcpdump.org/linktypes.html).
LINKTYPE_NAMES = {"ethernet": 1, "en10mb": 1, "null": 0, "raw": 101, "linux_sll": 113, "sll": 113,
                  "linux_sll2": 276, "sll2": 276, "loop": 108, "ipv4": 228, "ipv6": 229}

_URL = re.compile(r"kafka://(?P<brokers>[^/?#]+)/(?P<topic>[A-Za-z0-9._-]{1,249})\Z")


class KafkaUrlError(ValueError):
    pass


class KafkaClientMissing(ImportError):
    """Kafka was asked for and the optional client library is not installed."""

    def __init__(self) -> None:
        super().__init__("Kafka needs the confluent-kafka package, which is not installed: "
                         "pip install 'pcapwatch[kafka]'")


@dataclass(frozen=True, slots=True)
class KafkaUrl:
    """`kafka://HOST:PORT[,HOST:PORT...]/TOPIC`."""

    brokers: str  # as librdkafka's bootstrap.servers wants them: "h1:9092,h2:9092"
    topic: str

    @property
    def text(self) -> str:
        return f"kafka://{self.brokers}/{self.topic}"

    @property
    def source_name(self) -> str:
        """What a record's `pcap_file` says for packets from this topic: `kafka:TOPIC`, the same
        whichever broker of the cluster a reader asked (so members of a group agree)."""
        return f"kafka:{self.topic}"


def is_kafka_url(text: str) -> bool:
    return text.startswith("kafka://")


def parse_kafka_url(text: str) -> KafkaUrl:
    """KafkaUrlError (one line, what to write instead; the caller names where `text` came from) if
    `text` is not a usable address."""
    m = _URL.match(text)
    if m is None:
        raise KafkaUrlError("not a Kafka address; write kafka://HOST:PORT/TOPIC (several brokers "
                            "separated by commas; a topic name of letters, digits, '.', '_' and '-')")
    brokers = m["brokers"]
    for b in brokers.split(","):
        host, _, port = b.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise KafkaUrlError(f"broker {b!r} is not HOST:PORT; write kafka://HOST:PORT/TOPIC")
    return KafkaUrl(brokers, m["topic"])


def parse_linktype(text: str) -> int:
    t = text.strip().lower()
    if t.isdigit():
        return int(t)
    if t in LINKTYPE_NAMES:
        return LINKTYPE_NAMES[t]
    raise ValueError(f"unknown link type {text!r}: give a number or one of {', '.join(sorted(LINKTYPE_NAMES))}")


def key_micros(key: bytes | None) -> int | None:
    """The capture time in µs a pycapa key holds; None when it is not one (not 8 bytes)."""
    if key is None or len(key) != KEY.size:
        return None
    return int(KEY.unpack(key)[0])


def micros_key(micros: int) -> bytes:
    return KEY.pack(micros)


def micros_ts(micros: int) -> float:
    """The timestamp a µs pcap record of this time reads as (seconds + µs * 1e-6, as the pcap
    reader computes it), so records from Kafka carry the very same floats as from the file."""
    sec, usec = divmod(micros, MICROS)
    return sec + usec * 1e-6


def ts_micros(ts: float) -> int:
    """A frame's timestamp to whole µs (exact for µs captures: the float's error is far below 0.5 µs
    for times of this era; nanosecond captures are rounded, as pycapa's format can only hold µs)."""
    return round(ts * MICROS)


def pcap_global_header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = PYCAPA_SNAPLEN) -> bytes:
    return GLOBAL_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(micros: int, frame: bytes) -> bytes:
    """One libpcap record header for a frame captured at `micros` (the frame follows it)."""
    sec, usec = divmod(micros, MICROS)
    return RECORD_HEADER.pack(sec & 0xFFFFFFFF, usec, len(frame), len(frame))
