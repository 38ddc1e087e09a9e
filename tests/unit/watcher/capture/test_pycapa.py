"""pycapa's message format and libpcap file, and kafka:// addresses (no broker needed)."""

from __future__ import annotations

import struct
import sys

import pytest

from watcher.capture.pycapa import (
    KafkaUrlError,
    key_micros,
    micros_key,
    micros_ts,
    parse_kafka_url,
    parse_linktype,
    pcap_global_header,
    pcap_record,
    ts_micros,
)


def test_url_one_and_several_brokers() -> None:
    u = parse_kafka_url("kafka://127.0.0.1:9092/packets")
    assert (u.brokers, u.topic, u.text, u.source_name) == ("127.0.0.1:9092", "packets",
                                                           "kafka://127.0.0.1:9092/packets", "kafka:packets")
    assert parse_kafka_url("kafka://a:1,b.example:2/t.x-y_z").brokers == "a:1,b.example:2"


@pytest.mark.parametrize("bad", ["kafka://host/topic", "kafka://h:0/t", "kafka://h:9092/", "kafka://h:9092",
                                 "kafka://h:9092/a/b", "kafka://h:99999/t", "kafka://:9092/t"])
def test_url_refused_with_what_to_write(bad: str) -> None:
    with pytest.raises(KafkaUrlError, match=r"write kafka://HOST:PORT/TOPIC"):
        parse_kafka_url(bad)


def test_key_is_big_endian_micros() -> None:
    assert micros_key(1_700_000_000_123_456) == struct.pack(">Q", 1_700_000_000_123_456)
    assert key_micros(struct.pack(">Q", 42)) == 42
    assert key_micros(b"1234567") is None and key_micros(b"123456789") is None and key_micros(None) is None


def test_times_match_the_pcap_reader_exactly() -> None:
    # the pcap reader computes sec + usec * 1e-6: the same float, and back to the same µs
    for sec, usec in [(1_795_360_562, 156_422), (1_795_360_576, 60_684), (0, 999_999), (1_795_360_562, 0)]:
        ts = micros_ts(sec * 1_000_000 + usec)
        assert ts == sec + usec * 1e-6
        assert ts_micros(ts) == sec * 1_000_000 + usec


def test_pcap_header_and_record_as_pycapa_writes_them() -> None:
    assert pcap_global_header() == struct.pack("IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    assert pcap_global_header()[:4] == (b"\xd4\xc3\xb2\xa1" if sys.byteorder == "little" else b"\xa1\xb2\xc3\xd4")
    assert pcap_record(1_795_360_562_156_422, b"x" * 60) == struct.pack("IIII", 1_795_360_562, 156_422, 60, 60)


def test_linktype_by_name_or_number() -> None:
    assert [parse_linktype(t) for t in ("ethernet", "EN10MB", "113", "linux_sll2", "raw")] == [1, 1, 113, 276, 101]
    with pytest.raises(ValueError, match="unknown link type 'wifi'"):
        parse_linktype("wifi")
