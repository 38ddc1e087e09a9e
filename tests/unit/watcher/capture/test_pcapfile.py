"""CaptureParser: pcap and pcapng bytes to frame batches, whole and fed in pieces.

The files are built here with struct so each field is visible in the test; the incremental tests
feed them the way `sources.Capture` does (unconsumed bytes carried over, `base` advanced), because
a file tcpdump is still writing arrives in arbitrary pieces and a half-written record must wait.
"""

from __future__ import annotations

import contextlib
import random
import struct

import pytest

from watcher.capture.pcapfile import MAX_BLOCK_LEN, MAX_SNAPLEN, CaptureError, CaptureParser, Frame, capture_kind

Batches = list[tuple[int, list[Frame]]]

# name: (byte order, magic number, ticks per second)
PCAP_FORMATS = {
    "us-le": ("<", 0xA1B2C3D4, 10**6),
    "us-be": (">", 0xA1B2C3D4, 10**6),
    "ns-le": ("<", 0xA1B23C4D, 10**9),
    "ns-be": (">", 0xA1B23C4D, 10**9),
}
EPOCH = 1_700_000_000
ETH = 1
RAW = 101
NULL = 0

# classic pcap ----------------------------------------------------------------------------------


def pcap_header(o: str = "<", magic: int = 0xA1B2C3D4, *, linktype: int = ETH, snaplen: int = 65535,
                major: int = 2) -> bytes:
    return struct.pack(o + "IHHiIII", magic, major, 4, 0, 0, snaplen, linktype)


def pcap_record(o: str, sec: int, frac: int, data: bytes, caplen: int | None = None) -> bytes:
    n = len(data) if caplen is None else caplen
    return struct.pack(o + "IIII", sec, frac, n, len(data)) + data


# pcapng ----------------------------------------------------------------------------------------


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(o: str, btype: int, body: bytes, length: int | None = None) -> bytes:
    body = _pad(body)
    n = 12 + len(body) if length is None else length
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def shb(o: str) -> bytes:
    return block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def option(o: str, code: int, value: bytes) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + _pad(value)


def idb(o: str, linktype: int, *options: bytes) -> bytes:
    opts = b"".join(options) + (option(o, 0, b"") if options else b"")
    return block(o, 1, struct.pack(o + "HHI", linktype, 0, 0) + opts)


def epb(o: str, ifid: int, ticks: int, data: bytes, options: bytes = b"") -> bytes:
    head = struct.pack(o + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(o, 6, head + _pad(data) + options)


def spb(o: str, data: bytes, origlen: int | None = None) -> bytes:
    return block(o, 3, struct.pack(o + "I", len(data) if origlen is None else origlen) + data)


def obsolete_pb(o: str, ifid: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack(o + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(o, 2, head + data)


# feeding ---------------------------------------------------------------------------------------


def parse_whole(data: bytes) -> tuple[CaptureParser, Batches, int]:
    """Parse all of `data`; a problem found after good records surfaces on the reader's next call,
    which is made here, so it raises like one found first."""
    parser = CaptureParser()
    batches, off = parser.parse(data, 0)
    more, off = parser.parse(data, off)
    return parser, batches + more, off


def flat(batches: Batches) -> list[tuple[int, Frame]]:
    return [(link, f) for link, frames in batches for f in frames]


def feed(chunks: list[bytes]) -> tuple[list[tuple[int, Frame]], list[int], bytes]:
    """Feed pieces like sources.Capture: (frames with link type, bytes fed when each appeared, leftover)."""
    parser = CaptureParser()
    pending, base, fed = b"", 0, 0
    out: list[tuple[int, Frame]] = []
    seen_at: list[int] = []
    for chunk in chunks:
        fed += len(chunk)
        data = pending + chunk
        batches, off = parser.parse(data, 0, base)
        got = flat(batches)
        out += got
        seen_at += [fed] * len(got)
        pending = data[off:]
        base += off
    return out, seen_at, pending


def assert_incremental(data: bytes, record_ends: list[int]) -> None:
    """Every split point and byte by byte give the whole-file frames; a frame shows when complete."""
    _, batches, off = parse_whole(data)
    whole = flat(batches)
    assert off == len(data)
    assert len(whole) == len(record_ends)
    for i in range(len(data) + 1):
        got, _, rest = feed([data[:i], data[i:]])
        assert got == whole, f"split at {i}"
        assert rest == b""
    got, seen_at, rest = feed([data[i:i + 1] for i in range(len(data))])
    assert got == whole
    assert rest == b""
    assert seen_at == record_ends  # returned at the exact byte that completes it, not before


# capture_kind ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "kind"), [
    (b"\xd4\xc3\xb2\xa1", "pcap"), (b"\xa1\xb2\xc3\xd4", "pcap"),
    (b"\x4d\x3c\xb2\xa1", "pcap"), (b"\xa1\xb2\x3c\x4d", "pcap"),
    (b"\x0a\x0d\x0d\x0a", "pcapng"), (b"\x1f\x8b\x08\x00", "gzip"),
    (b"GET ", None), (b"", None),
])
def test_capture_kind(head: bytes, kind: str | None) -> None:
    assert capture_kind(head) == kind


# classic pcap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(PCAP_FORMATS))
def test_pcap_all_magics_exact_timestamps(fmt: str) -> None:
    o, magic, tps = PCAP_FORMATS[fmt]
    big_frac = 123_456 if tps == 10**6 else 123_456_789
    data = (pcap_header(o, magic, linktype=ETH)
            + pcap_record(o, EPOCH, big_frac, b"frame-one")
            + pcap_record(o, 1, tps - 1, b"two")
            + pcap_record(o, 0, 0, b""))
    parser, batches, off = parse_whole(data)
    assert (parser.kind, parser.linktype, off) == ("pcap", ETH, len(data))
    assert len(batches) == 1 and batches[0][0] == ETH
    frames = batches[0][1]
    assert [(f[0], f[2]) for f in frames] == [(24, b"frame-one"), (24 + 16 + 9, b"two"), (24 + 32 + 12, b"")]
    # A float holds ~0.24 µs at today's epoch: exact to the microsecond there, exact to 1e-12 near 0.
    assert round(frames[0][1] * 1e6) == EPOCH * 10**6 + round(big_frac * 10**6 / tps)
    assert frames[1][1] == pytest.approx(1 + (tps - 1) / tps, abs=1e-12)
    assert frames[2][1] == 0.0


def test_pcap_linktype_upper_bits_masked() -> None:
    """FCS length and the F bit live above bit 16 of the link type field; only the low 16 bits count."""
    network = (4 << 28) | (1 << 26) | 228
    data = pcap_header("<", linktype=network) + pcap_record("<", 5, 0, b"\x45")
    parser, batches, _ = parse_whole(data)
    assert parser.linktype == 228
    assert [link for link, _ in batches] == [228]


def test_pcap_unsupported_major_version() -> None:
    with pytest.raises(CaptureError) as e:
        parse_whole(pcap_header("<", major=1) + pcap_record("<", 1, 0, b"x"))
    assert e.value.offset == 4
    assert "version 1" in str(e.value)


def test_pcap_header_waits_until_complete() -> None:
    data = pcap_header(">", 0xA1B2C3D4, linktype=RAW)
    parser = CaptureParser()
    assert parser.parse(data[:23], 0) == ([], 0)
    assert parser.parse(data, 0) == ([], 24)
    assert parser.linktype == RAW


@pytest.mark.parametrize("fmt", list(PCAP_FORMATS))
def test_pcap_incremental_every_split(fmt: str) -> None:
    o, magic, _ = PCAP_FORMATS[fmt]
    recs = [pcap_record(o, EPOCH + i, i * 7, bytes(range(i * 5))) for i in range(5)]
    data = pcap_header(o, magic) + b"".join(recs)
    ends, pos = [], 24
    for r in recs:
        pos += len(r)
        ends.append(pos)
    assert_incremental(data, ends)


def test_pcap_caplen_over_limit_raises_at_record() -> None:
    good = pcap_record("<", 1, 0, b"abcd")
    bad_at = 24 + len(good)
    bad = struct.pack("<IIII", 2, 0, MAX_SNAPLEN + 1, MAX_SNAPLEN + 1)
    with pytest.raises(CaptureError) as e:
        parse_whole(pcap_header("<", snaplen=65535) + good + bad)  # header only: no 256 KiB wait
    assert e.value.offset == bad_at
    assert str(MAX_SNAPLEN + 1) in e.value.problem


def test_pcap_caplen_huge_with_huge_snaplen_raises() -> None:
    """A header snaplen of 2 GiB must not let a record claim 2 GiB (the cap is 16 MiB)."""
    data = pcap_header("<", snaplen=0x7FFFFFFF) + struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 0x7FFFFFFF)
    with pytest.raises(CaptureError) as e:
        parse_whole(data)
    assert e.value.offset == 24


def test_pcap_caplen_error_keeps_base() -> None:
    """Offsets in errors are file offsets, also when the buffer starts later in the file."""
    parser = CaptureParser()
    parser.parse(pcap_header("<"), 0)
    with pytest.raises(CaptureError) as e:
        parser.parse(struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 10), 0, base=1000)
    assert e.value.offset == 1000


@pytest.mark.parametrize(("fmt", "frac"), [("us-le", 1_000_000), ("us-be", 0xFFFFFFFF),
                                           ("ns-le", 1_000_000_000), ("ns-be", 0xFFFFFFFF)])
def test_pcap_bad_timestamp_fraction(fmt: str, frac: int) -> None:
    o, magic, _ = PCAP_FORMATS[fmt]
    good = pcap_record(o, 1, 0, b"ok")
    data = pcap_header(o, magic) + good + pcap_record(o, 2, frac, b"bad")
    with pytest.raises(CaptureError) as e:
        parse_whole(data)
    assert e.value.offset == 24 + len(good)
    assert "fraction" in e.value.problem


def test_pcap_ns_fraction_upper_bound_is_valid() -> None:
    o, magic, _ = PCAP_FORMATS["ns-le"]
    _, batches, _ = parse_whole(pcap_header(o, magic) + pcap_record(o, 3, 999_999_999, b"x"))
    assert batches[0][1][0][1] == pytest.approx(3.999999999, abs=1e-12)


def test_pcap_not_a_capture() -> None:
    with pytest.raises(CaptureError) as e:
        CaptureParser().parse(b"\x00" * 8 + b"GET / HTTP/1.1\r\n", 0, base=0)
    assert e.value.offset == 0
    assert "00000000" in e.value.problem


# pcapng ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("o", ["<", ">"])
def test_pcapng_both_byte_orders(o: str) -> None:
    ticks = EPOCH * 10**6 + 654_321
    data = shb(o) + idb(o, ETH) + epb(o, 0, ticks, b"hello") + epb(o, 0, ticks + 1, b"12345678")
    parser, batches, off = parse_whole(data)
    assert (parser.kind, off) == ("pcapng", len(data))
    first = len(shb(o)) + len(idb(o, ETH))
    assert [link for link, _ in batches] == [ETH]
    frames = batches[0][1]
    assert [(f[0], f[2]) for f in frames] == [(first, b"hello"), (first + len(epb(o, 0, 0, b"hello")), b"12345678")]
    assert round(frames[0][1] * 1e6) == ticks
    assert round(frames[1][1] * 1e6) == ticks + 1


def test_pcapng_bad_byte_order_magic() -> None:
    bad = shb("<")
    bad = bad[:8] + b"\x01\x02\x03\x04" + bad[12:]
    with pytest.raises(CaptureError) as e:
        parse_whole(bad + idb("<", ETH))
    assert e.value.offset == 0


@pytest.mark.parametrize(("tsresol", "ticks", "expected"), [
    (None, 1_500_000, 1.5),  # default: microseconds
    (bytes([6]), 2_250_000, 2.25),
    (bytes([9]), 3_000_000_001, 3.000000001),  # nanoseconds
    (bytes([3]), 4_125, 4.125),
    (bytes([0x80 | 10]), 5 * 1024 + 512, 5.5),  # power of two: 1/1024 s
    (bytes([0x80 | 20]), 7 << 20, 7.0),
])
def test_pcapng_if_tsresol(tsresol: bytes | None, ticks: int, expected: float) -> None:
    opts = [option("<", 2, b"eth0")] + ([option("<", 9, tsresol)] if tsresol is not None else [])
    data = shb("<") + idb("<", ETH, *opts) + epb("<", 0, ticks, b"p")
    _, batches, _ = parse_whole(data)
    assert batches[0][1][0][1] == pytest.approx(expected, abs=1e-12)


def test_pcapng_if_tsoffset() -> None:
    """if_tsoffset (seconds) is added to every timestamp of that interface."""
    data = (shb(">") + idb(">", ETH, option(">", 9, bytes([9])), option(">", 14, struct.pack(">q", EPOCH)))
            + epb(">", 0, 250_000_000, b"p"))
    _, batches, _ = parse_whole(data)
    assert batches[0][1][0][1] == pytest.approx(EPOCH + 0.25, abs=1e-6)
    assert round(batches[0][1][0][1] * 1e6) == EPOCH * 10**6 + 250_000


def test_pcapng_epb_options_and_padding_not_in_data() -> None:
    flags = option("<", 2, struct.pack("<I", 1)) + option("<", 0, b"")
    data = shb("<") + idb("<", RAW) + epb("<", 0, 10, b"\x45\x00\x01", flags)
    _, batches, _ = parse_whole(data)
    assert [(link, [(f[0], f[2]) for f in frames]) for link, frames in batches] == [
        (RAW, [(len(shb("<")) + len(idb("<", RAW)), b"\x45\x00\x01")])]
    assert batches[0][1][0][1] == pytest.approx(10e-6, abs=1e-15)


def test_pcapng_simple_packet_block() -> None:
    """SPB: interface 0, no timestamp of its own (the last one seen is used), length min(orig, room)."""
    o = "<"
    head = shb(o) + idb(o, ETH)
    e = epb(o, 0, 2_000_000, b"first")
    s1 = spb(o, b"abcde")  # padded to 8 in the block: the original length 5 wins
    s2 = spb(o, b"x" * 12, origlen=1500)  # snapped: the block holds 12
    _, batches, off = parse_whole(head + e + s1 + s2)
    assert off == len(head + e + s1 + s2)
    frames = batches[0][1]
    assert [(f[0], f[2]) for f in frames] == [
        (len(head), b"first"), (len(head + e), b"abcde"), (len(head + e + s1), b"x" * 12)]
    assert [f[1] for f in frames] == [2.0, 2.0, 2.0]


def test_pcapng_obsolete_packet_block() -> None:
    o = ">"
    head = shb(o) + idb(o, NULL) + idb(o, RAW, option(o, 9, bytes([9])))
    data = head + obsolete_pb(o, 1, 7_000_000_123, b"\x45abc") + obsolete_pb(o, 0, 3, b"\x02\x00\x00\x00")
    _, batches, _ = parse_whole(data)
    assert [(link, [(f[2]) for f in frames]) for link, frames in batches] == [
        (RAW, [b"\x45abc"]), (NULL, [b"\x02\x00\x00\x00"])]
    assert batches[0][1][0][1] == pytest.approx(7.000000123, abs=1e-12)
    assert batches[1][1][0][1] == pytest.approx(3e-6, abs=1e-15)


def test_pcapng_unknown_blocks_skipped() -> None:
    o = "<"
    nrb = block(o, 4, struct.pack(o + "HH", 0, 0))  # name resolution, empty
    isb = block(o, 5, struct.pack(o + "III", 0, 0, 0))  # interface statistics
    custom = block(o, 0x00000BAD, b"vendor data!")
    odd = block(o, 0x12345678, b"")
    data = shb(o) + nrb + idb(o, ETH) + custom + epb(o, 0, 1, b"a") + isb + odd + epb(o, 0, 2, b"b")
    _, batches, off = parse_whole(data)
    assert off == len(data)
    assert [(link, [f[2] for f in frames]) for link, frames in batches] == [(ETH, [b"a", b"b"])]


def test_pcapng_interfaces_with_different_link_types_split_batches() -> None:
    o = "<"
    data = (shb(o) + idb(o, ETH) + idb(o, RAW)
            + epb(o, 0, 1, b"e1") + epb(o, 0, 2, b"e2") + epb(o, 1, 3, b"r1") + epb(o, 0, 4, b"e3")
            + epb(o, 1, 5, b"r2") + epb(o, 1, 6, b"r3"))
    _, batches, _ = parse_whole(data)
    assert [(link, [f[2] for f in frames]) for link, frames in batches] == [
        (ETH, [b"e1", b"e2"]), (RAW, [b"r1"]), (ETH, [b"e3"]), (RAW, [b"r2", b"r3"])]


def test_pcapng_multiple_sections() -> None:
    """A new section (here in the other byte order) starts a new interface list."""
    s1 = shb("<") + idb("<", ETH) + idb("<", NULL) + epb("<", 1, 1_000_000, b"null")
    s2 = shb(">") + idb(">", RAW, option(">", 9, bytes([9]))) + epb(">", 0, 2_000_000_000, b"raw")
    _, batches, off = parse_whole(s1 + s2)
    assert off == len(s1 + s2)
    assert [(link, [(f[1], f[2]) for f in frames]) for link, frames in batches] == [
        (NULL, [(1.0, b"null")]), (RAW, [(2.0, b"raw")])]
    with pytest.raises(CaptureError) as e:  # interface 1 belonged to the first section only
        parse_whole(s1 + s2 + epb(">", 1, 5, b"x"))
    assert e.value.offset == len(s1 + s2)


@pytest.mark.parametrize("length", [8, 13, 30, MAX_BLOCK_LEN + 4, 0xFFFFFFFC])
def test_pcapng_bad_block_length(length: int) -> None:
    o = "<"
    head = shb(o) + idb(o, ETH) + epb(o, 0, 1, b"ok")
    bad = struct.pack(o + "II", 6, length) + b"\0" * 20  # no need to wait for the claimed bytes
    with pytest.raises(CaptureError) as e:
        parse_whole(head + bad)
    assert e.value.offset == len(head)
    assert str(length) in e.value.problem


def test_pcapng_packet_longer_than_its_block() -> None:
    o = "<"
    head = shb(o) + idb(o, ETH)
    bad = block(o, 6, struct.pack(o + "IIIII", 0, 0, 1, 100, 100) + b"short")
    with pytest.raises(CaptureError) as e:
        parse_whole(head + bad)
    assert e.value.offset == len(head)


@pytest.mark.parametrize("kind", ["epb", "obsolete_pb", "spb"])
def test_pcapng_packet_for_undescribed_interface(kind: str) -> None:
    o = "<"
    if kind == "spb":  # an SPB always means interface 0: undescribed only when there is none
        head, pkt = shb(o), spb(o, b"x")
    else:
        head = shb(o) + idb(o, ETH) + idb(o, RAW)
        pkt = epb(o, 2, 1, b"x") if kind == "epb" else obsolete_pb(o, 2, 1, b"x")
    with pytest.raises(CaptureError) as e:
        parse_whole(head + pkt)
    assert e.value.offset == len(head)
    assert "interface" in e.value.problem


@pytest.mark.parametrize("o", ["<", ">"])
def test_pcapng_incremental_every_split(o: str) -> None:
    blocks = [shb(o), idb(o, ETH, option(o, 9, bytes([9]))), epb(o, 0, 5, b"abc"), block(o, 5, b"\0" * 12),
              idb(o, RAW), epb(o, 1, 6, b"raw-frame"), spb(o, b"simple"), obsolete_pb(o, 0, 7, b"old"),
              epb(o, 0, 8, b"")]
    ends, pos = [], 0
    for b in blocks:
        pos += len(b)
        if struct.unpack_from(o + "I", b)[0] in (2, 3, 6):
            ends.append(pos)
    assert_incremental(b"".join(blocks), ends)


def test_pcapng_truncated_block_waits() -> None:
    o = "<"
    head = shb(o) + idb(o, ETH)
    pkt = epb(o, 0, 1, b"payload")
    parser = CaptureParser()
    batches, off = parser.parse(head + pkt[:-1], 0)
    assert (batches, off) == ([], len(head))
    batches, off = parser.parse(head + pkt, off)
    assert flat(batches) == [(ETH, (len(head), 1e-6, b"payload"))]
    assert off == len(head + pkt)


@pytest.mark.parametrize(("btype", "length"), [
    (6, 12), (6, 16), (6, 20), (6, 24), (6, 28),  # EPB: 20 bytes of fields + 12 of framing
    (2, 12), (2, 16), (2, 20), (2, 24), (2, 28),  # obsolete PB: the same
    (3, 12),  # SPB: its original length field is missing
    (1, 12), (1, 16),  # IDB: link type and snaplen are missing
])
def test_pcapng_block_shorter_than_its_fields(btype: int, length: int) -> None:
    """A block too short for its fixed fields is corrupt, also when it is the last thing read."""
    o = "<"
    head = shb(o) + idb(o, ETH)
    bad = struct.pack(o + "II", btype, length) + b"\0" * (length - 12) + struct.pack(o + "I", length)
    with pytest.raises(CaptureError) as e:
        parse_whole(head + bad)
    assert e.value.offset == len(head)


def parse_until_error(data: bytes) -> tuple[list[tuple[int, Frame]], CaptureError | None]:
    """Call parse like a reader does, again from where it stopped, until it raises or stalls."""
    parser = CaptureParser()
    got: list[tuple[int, Frame]] = []
    off = 0
    try:
        while True:
            batches, new = parser.parse(data, off)
            got += flat(batches)
            if new == off and not batches:
                return got, None
            off = new
    except CaptureError as e:
        return got, e


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_records_before_a_corrupt_one_are_returned(fmt: str) -> None:
    """Everything readable is processed: the complete records before the damage reach the caller,
    then the error names the damaged record's offset."""
    if fmt == "pcap":
        good = [pcap_record("<", 10 + i, 0, b"rec%d" % i) for i in range(3)]
        head = pcap_header("<")
        bad = struct.pack("<IIII", 20, 0, 0x7FFFFFFF, 0x7FFFFFFF)
    else:
        good = [epb("<", 0, i, b"rec%d" % i) for i in range(3)]
        head = shb("<") + idb("<", ETH)
        bad = struct.pack("<II", 6, 13) + bytes(20)
    got, err = parse_until_error(head + b"".join(good) + bad)
    assert [f[2] for _, f in got] == [b"rec0", b"rec1", b"rec2"]
    assert err is not None and err.offset == len(head) + sum(map(len, good))


# header only, for callers that walk the records themselves ------------------------------------


@pytest.mark.parametrize("fmt", list(PCAP_FORMATS))
def test_header_then_record_layout(fmt: str) -> None:
    """`header` parses the file header alone; `record_layout` then describes every record as
    `parse` reads it, and `parse` goes on from there as if it had read the header itself."""
    o, magic, tps = PCAP_FORMATS[fmt]
    data = pcap_header(o, magic, linktype=RAW, snaplen=1 << 20) + pcap_record(o, EPOCH, tps - 1, b"abc")
    parser = CaptureParser()
    assert parser.record_layout() is None
    assert parser.header(data[:23], 0) == 0 and parser.record_layout() is None  # waits for 24 bytes
    assert parser.header(data, 0) == 24
    layout = parser.record_layout()
    assert layout is not None
    assert (layout.linktype, layout.header.format, layout.scale, layout.max_fraction, layout.max_caplen) == (
        RAW, o + "IIII", 1 / tps, tps, 1 << 20)
    assert layout.header.unpack_from(data, 24) == (EPOCH, tps - 1, 3, 3)
    assert parser.header(data, 24) == 24  # already read: nothing more to take
    batches, off = parser.parse(data, 24)
    assert (flat(batches), off) == ([(RAW, (24, EPOCH + (tps - 1) / tps, b"abc"))], len(data))


@pytest.mark.parametrize("head", [b"\x0a\x0d\x0d\x0a", b"\x1f\x8b\x08\x00", b"GET "])
def test_header_leaves_other_formats_to_parse(head: bytes) -> None:
    parser = CaptureParser()
    assert parser.header(head + bytes(40), 0) == 0
    assert parser.record_layout() is None


def test_header_of_an_unsupported_version_raises_like_parse() -> None:
    with pytest.raises(CaptureError) as e:
        CaptureParser().header(pcap_header("<", major=1), 0, 100)
    assert e.value.offset == 104


# malformed pcapng: every read bounded by its block ---------------------------------------------


def idb_raw(o: str, tail: bytes) -> bytes:
    """An IDB whose options area is exactly `tail`, no end-of-options added."""
    return block(o, 1, struct.pack(o + "HHI", ETH, 0, 0) + tail)


@pytest.mark.parametrize("o", ["<", ">"])
@pytest.mark.parametrize(("code", "length"), [(14, 8), (9, 1), (2, 4), (2, 0xFFFF)],
                         ids=["if_tsoffset", "if_tsresol", "if_name", "if_name_huge"])
def test_pcapng_option_header_in_the_last_bytes_of_an_interface_block(o: str, code: int, length: int) -> None:
    """An option header with no room for its value (the issue's if_tsoffset in an IDB's last 4
    bytes): a CaptureError naming the option's offset, not a read past the block."""
    head = shb(o)
    data = head + idb_raw(o, struct.pack(o + "HH", code, length)) + epb(o, 0, 1, b"p")
    with pytest.raises(CaptureError) as e:
        parse_whole(data)
    assert e.value.offset == len(head) + 16  # block header 8 + link type, reserved, snaplen 8
    assert e.value.problem == (f"pcapng interface option {code} claims {length} bytes but its block holds 0 "
                               "after it: the file is corrupt")


def test_pcapng_option_value_running_past_its_block_after_good_options() -> None:
    o = "<"
    head = shb(o)
    opts = option(o, 9, bytes([9])) + struct.pack(o + "HH", 14, 8) + b"\0\0\0\0"  # 4 of its 8 bytes
    with pytest.raises(CaptureError) as e:
        parse_whole(head + idb_raw(o, opts))
    assert e.value.offset == len(head) + 16 + 8
    assert "option 14 claims 8 bytes but its block holds 4" in e.value.problem


def test_pcapng_truncated_option_header_is_ignored_at_the_block_end() -> None:
    """Two bytes left after the last option: no option header fits, nothing is read there."""
    o = "<"
    data = shb(o) + idb_raw(o, option(o, 9, bytes([3])) + b"\0\0\0\0") + epb(o, 0, 1_500, b"p")
    _, batches, _ = parse_whole(data)
    assert flat(batches) == [(ETH, (len(data) - len(epb(o, 0, 1_500, b"p")), 1.5, b"p"))]


@pytest.mark.parametrize("btype", [0x0A0D0D0A, 1, 6, 3, 2, 5])
def test_pcapng_block_lengths_that_disagree(btype: int) -> None:
    """A block's length at its end must be its length at its start (else everything after it is
    read from the wrong place)."""
    o = "<"
    head = shb(o) + idb(o, ETH)
    bodies = {0x0A0D0D0A: struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1), 1: struct.pack(o + "HHI", ETH, 0, 0),
              6: struct.pack(o + "IIIII", 0, 0, 1, 1, 1) + b"x\0\0\0", 3: struct.pack(o + "I", 1) + b"x\0\0\0",
              2: struct.pack(o + "HHIIII", 0, 0, 0, 1, 1, 1) + b"x\0\0\0", 5: b"\0" * 8}
    good = block(o, btype, bodies[btype])
    bad = good[:-4] + struct.pack(o + "I", len(good) + 4)
    with pytest.raises(CaptureError) as e:
        parse_whole(head + bad)
    assert e.value.offset == len(head)
    assert e.value.problem == (f"pcapng block of type {btype} says it is {len(good)} bytes long at its start and "
                               f"{len(good) + 4} at its end: the file is corrupt")


# mutated inputs: nothing but CaptureError ------------------------------------------------------

MUTATIONS = 3000  # per format: a few seconds, and every mutation kind many times over
BOUNDARY = (0, 1, 3, 4, 7, 8, 12, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF)


def valid_pcapng(o: str) -> bytes:
    return b"".join([shb(o), idb(o, ETH, option(o, 2, b"eth0"), option(o, 9, bytes([9])),
                                 option(o, 14, struct.pack(o + "q", EPOCH))),
                     epb(o, 0, 5, b"abc", option(o, 1, b"comment") + option(o, 0, b"")),
                     block(o, 5, b"\0" * 12), idb(o, RAW, option(o, 9, bytes([0x80 | 10]))),
                     epb(o, 1, 6, b"raw-frame"), spb(o, b"simple"), obsolete_pb(o, 0, 7, b"old"), epb(o, 0, 8, b""),
                     shb(o), idb(o, NULL), epb(o, 0, 9, b"\2\0\0\0" + b"x" * 40)])


def valid_pcap(fmt: str) -> bytes:
    o, magic, ticks = PCAP_FORMATS[fmt]
    return pcap_header(o, magic) + b"".join(pcap_record(o, EPOCH + i, i * 7 % ticks, bytes([i]) * (i * 13 % 90))
                                            for i in range(12))


def block_ends(data: bytes) -> list[int]:
    """Where the blocks of a valid pcapng end (or the records of a pcap)."""
    if data[:4] != b"\x0a\x0d\x0d\x0a":
        return [len(data)]
    o = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    ends, pos = [], 0
    while pos + 8 <= len(data):
        pos += struct.unpack_from(o + "I", data, pos + 4)[0]
        ends.append(pos)
    return ends


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random damages: flipped bits, a 2- or 4-byte field set to a boundary value, an
    option header (code, length) written over an aligned word, bytes cut (anywhere, or just after a
    block, so that a read past that block would run off the buffer), inserted, removed or repeated."""
    b = bytearray(data)
    ends = block_ends(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(8)
        if kind == 6 and len(b) >= 4:
            o = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" or data[:1] in (b"\xd4", b"\x4d") else ">"
            # half the time the word before a block's trailing length: its last option
            at = rng.choice(ends) - 8 if rng.random() < 0.5 else rng.randrange(0, len(b) - 3) & ~3
            if not 0 <= at <= len(b) - 4:
                continue
            b[at:at + 4] = struct.pack(o + "HH", rng.choice((0, 1, 2, 9, 14, 15)),
                                       rng.choice((1, 2, 4, 8, 9, 12, 0xFFFF)))
            continue
        if kind == 7:
            del b[rng.choice(ends):]
            continue
        at = rng.randrange(len(b)) if b else 0
        if kind == 0 and b:
            b[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and len(b) >= 4:
            at = rng.randrange(0, len(b) - 3) & ~3 if rng.random() < 0.7 else rng.randrange(len(b) - 3)
            b[at:at + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(BOUNDARY))
        elif kind == 2 and len(b) >= 2:
            at = rng.randrange(len(b) - 1)
            b[at:at + 2] = struct.pack(rng.choice("<>") + "H", rng.choice(BOUNDARY) & 0xFFFF)
        elif kind == 3:
            del b[rng.randrange(len(b) + 1):]
        elif kind == 4:
            b[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, 16)))
        else:
            n = rng.choice((1, 4, 8, 16))
            if rng.random() < 0.5:
                del b[at:at + n]
            else:
                b[at:at] = b[at:at + n]
    return bytes(b)


def parse_all_ways(data: bytes, ends: list[int], rng: random.Random) -> None:
    """Whole, cut after each block of the unmutated file (where a tailing reader's buffer may end),
    then in random pieces as a tailing reader feeds them: only CaptureError may come out."""
    for end in [len(data), *ends]:
        with contextlib.suppress(CaptureError):
            parse_until_error(data[:end])
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(1, 6))))
    with contextlib.suppress(CaptureError):
        feed([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)])


@pytest.mark.parametrize("fmt", ["pcapng-le", "pcapng-be", *PCAP_FORMATS])
def test_mutated_captures_raise_nothing_but_capture_error(fmt: str) -> None:
    """A seeded random mutation loop (hypothesis is not installed): thousands of damaged files,
    each parsed whole and in pieces; any exception other than CaptureError fails with the seed and
    the bytes to reproduce it."""
    valid = valid_pcapng("<" if fmt.endswith("le") else ">") if fmt.startswith("pcapng") else valid_pcap(fmt)
    _, batches, _ = parse_whole(valid)
    assert flat(batches)  # the unmutated file is good
    ends = block_ends(valid)
    for seed in range(MUTATIONS):
        rng = random.Random(f"{fmt}-{seed}")
        data = mutate(valid, rng)
        try:
            parse_all_ways(data, ends, rng)
        except Exception as e:  # the point: report anything else, with how to reproduce
            pytest.fail(f"seed {seed}: {type(e).__name__}: {e} on {data.hex()}")
