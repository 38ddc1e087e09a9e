#!/usr/bin/env python3
"""Write a pcap of N SYN-only connections toward one loopback server: a SYN flood or port scan.

Each connection is one client SYN from a distinct 127.1.x.y:port, so nothing ever completes and
the connection table only grows: the input that must make `pcapwatch read` evict instead of
growing without bound. Records are packed with `struct` into one buffer per block of packets and
written in bulk, so a million connections (70 MB) take a few seconds. Checksums are correct, so
tshark and tcpdump show the packets as valid.

Usage: mksynflood.py OUT [-n COUNT] [--server-port PORT] [--interval-us US]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_COUNT = 1_000_000
# One client address per this many source ports: 60,000 ports from CLIENT_PORT_BASE stays within
# 0..65535 and away from 0, so each (address, port) pair is distinct.
PORTS_PER_CLIENT = 60_000
CLIENT_PORT_BASE = 2_000
CLIENT_NET = (127 << 24) | (1 << 16)  # 127.1.0.0: clients count up from here
SERVER_IP = (127 << 24) | 1  # 127.0.0.1
START_TS = 1_700_000_000
# Records packed per write: 4096 x 70 bytes is under 300 KB, a few writes per second of work.
BLOCK = 4096

LINKTYPE_ETHERNET = 1
FRAME_LEN = 14 + 20 + 20  # Ethernet, IPv4 without options, TCP without options
PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
# Ethernet (zero MACs, as tcpdump writes on lo), IPv4, TCP: every field, network order.
FRAME = struct.Struct("!6s6sH BBHHHBBHII HHIIBBHHH")
TCP_SYN = 0x02
WINDOW = 65_495
IP_ID_MOD = 1 << 16


def _fold(s: int) -> int:
    """One's-complement sum folded to 16 bits, then complemented: the Internet checksum."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def client(i: int) -> tuple[int, int]:
    """The (IPv4 address as int, port) of connection `i`: distinct for every i."""
    return CLIENT_NET + i // PORTS_PER_CLIENT, CLIENT_PORT_BASE + i % PORTS_PER_CLIENT


def initial_seq(i: int) -> int:
    """A fixed pseudo-random ISN per connection (Knuth's multiplicative hash)."""
    return (i * 2_654_435_761) & 0xFFFFFFFF


def write_synflood(path: str | Path, count: int = DEFAULT_COUNT, server_port: int = 80,
                   interval_us: int = 1) -> int:
    """Write the capture; return its size in bytes."""
    rec_len = RECORD_HEADER.size + FRAME_LEN
    # Checksum parts that never change: IPv4 header words without id and source; TCP pseudo-header
    # and header words without source address, source port and sequence number.
    ip_const = 0x4500 + 40 + 0x4000 + 0x4006 + (SERVER_IP >> 16) + (SERVER_IP & 0xFFFF)
    tcp_const = ((SERVER_IP >> 16) + (SERVER_IP & 0xFFFF) + 6 + 20 + server_port
                 + (5 << 12 | TCP_SYN) + WINDOW)
    rec_pack = RECORD_HEADER.pack_into
    frame_pack = FRAME.pack_into
    zero_mac = bytes(6)
    with open(path, "wb") as f:
        f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65_535, LINKTYPE_ETHERNET))
        for start in range(0, count, BLOCK):
            n = min(BLOCK, count - start)
            buf = bytearray(n * rec_len)
            for k in range(n):
                i = start + k
                src, sport = client(i)
                seq = initial_seq(i)
                ip_id = i % IP_ID_MOD
                us = i * interval_us
                off = k * rec_len
                src_sum = (src >> 16) + (src & 0xFFFF)
                rec_pack(buf, off, START_TS + us // 1_000_000, us % 1_000_000, FRAME_LEN, FRAME_LEN)
                frame_pack(buf, off + RECORD_HEADER.size,
                           zero_mac, zero_mac, 0x0800,
                           0x45, 0, 40, ip_id, 0x4000, 64, 6, _fold(ip_const + ip_id + src_sum), src, SERVER_IP,
                           sport, server_port, seq, 0, 5 << 4, TCP_SYN, WINDOW,
                           _fold(tcp_const + src_sum + sport + (seq >> 16) + (seq & 0xFFFF)), 0)
            f.write(buf)
        return f.tell()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a pcap of SYN-only connections (distinct 127.1.x.y "
                                             "client ip:port pairs to 127.0.0.1).")
    ap.add_argument("out", help="pcap file to write")
    ap.add_argument("-n", "--count", type=int, default=DEFAULT_COUNT, help="connections (default %(default)s)")
    ap.add_argument("--server-port", type=int, default=80, help="server port (default %(default)s)")
    ap.add_argument("--interval-us", type=int, default=1,
                    help="capture time between SYNs in µs (default %(default)s: a million in one second)")
    a = ap.parse_args(argv)
    if a.count < 0 or a.count > PORTS_PER_CLIENT * (1 << 16):
        ap.error("--count must be between 0 and %d" % (PORTS_PER_CLIENT * (1 << 16)))
    t0 = time.perf_counter()
    size = write_synflood(a.out, a.count, a.server_port, a.interval_us)
    sys.stderr.write(f"{a.out}: {a.count:,} SYNs, {size:,} bytes in {time.perf_counter() - t0:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
