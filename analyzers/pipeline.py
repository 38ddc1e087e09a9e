"""Frames in, transactions out: the one entry point the I/O edge uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from analyzers.flows import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, FlowTable
from analyzers.frames import FrameDecoder
from analyzers.transactions import Transaction

Frame = tuple[int, float, bytes]


class Pipeline:
    """Decodes frames, tracks connections and parses HTTP; returns finished transactions."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, shard: int = 0, shards: int = 1) -> None:
        """With `shards` > 1 this pipeline keeps only the connections of shard number `shard`: one
        of several workers that each see every frame and own a share of the connections."""
        self.decoder = FrameDecoder()
        self.flows = FlowTable(max_connections, idle_timeout)
        self.frames_seen = 0
        self.transactions = 0
        self.shard = shard
        self.shards = shards

    def feed(self, linktype: int, frames: Iterable[Frame], base: int = 0) -> list[Transaction]:
        """Process one batch of frames of one link type. A frame's input position is `base` plus
        its file offset (see `Cursor`)."""
        decode = self.decoder.link_decoder(linktype)
        packet = self.flows.packet
        cursor = self.flows.cursor
        n = 0
        if self.shards == 1:
            for off, ts, data in frames:
                n += 1
                cursor.pos = base + off
                d = decode(data)
                if d is not None:
                    packet(ts, d)
        else:
            shard, shards = self.shard, self.shards
            for off, ts, data in frames:
                n += 1
                cursor.pos = base + off
                d = decode(data)
                # The ports' XOR is the same both ways, so a connection has one owner; multiplying
                # by a large odd constant mixes its bits (Linux picks even client ports only).
                if d is not None and ((d[2] ^ d[3]) * 0x9E3779B1 >> 16) % shards == shard:
                    packet(ts, d)
        self.frames_seen += n
        return self._take()

    def pin(self) -> int | None:
        """See FlowTable.pin."""
        return self.flows.pin()

    def set_source(self, name: str) -> None:
        self.flows.set_source(name)

    def close(self) -> list[Transaction]:
        """End of input: every open connection is finished and its transactions returned."""
        self.flows.close_all()
        return self._take()

    def _take(self) -> list[Transaction]:
        out = self.flows.out
        if not out:
            return []
        self.flows.out = []
        self.transactions += len(out)
        return out

    def stats(self) -> dict[str, Any]:
        """Every counter, for summaries and metrics."""
        f = self.flows
        return {
            "frames": self.frames_seen,
            "frames_skipped": dict(sorted(self.decoder.skipped.items())),
            "tcp_packets": self.frames_seen - sum(self.decoder.skipped.values()),
            "tcp_payload_bytes": f.payload_bytes,
            "transactions": self.transactions,
            "connections": {**asdict(f.counters), "active": f.active},
            "tcp": asdict(f.tcp),
            "anomalies": dict(sorted(f.anomalies.items())),
        }
