"""Which worker an IP fragment goes to, for `shard.Router`: the worker of the connection its
datagram carries, so that one worker holds all of a datagram and reassembles it.

Only the first fragment names the connection (it holds the TCP header). The others go where it
went, or, when it is still to come (fragments sent in reverse, or reordered), where it will go: it
is looked for among the next records. `owners` remembers each datagram, by its key, from its first
fragment to its last in the order the capture has them (an IP id is reused once its datagram is
done): in order, the last fragment forgets it; in reverse, the first does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from analyzers.tcp.frames import Decoded, FragmentHint, LinkDecode, RecordLayout

Frame = tuple[int, float, bytes]

# Datagrams remembered at most: far more than are in flight at once (a datagram's fragments travel
# together); the oldest are forgotten first.
MAX_FRAGMENT_OWNERS = 4096
# How far ahead a fragment's first is looked for: fragments are sent back to back, and 64 records
# hold the 45 fragments of a 64 KiB datagram over Ethernet with others interleaved. A datagram
# whose first is further, or past the end of the block being routed, goes to worker 0.
FRAGMENT_LOOKAHEAD = 64


class FragmentRoutes:
    def __init__(self) -> None:
        self.owners: dict[object, tuple[int, bool]] = {}  # key -> (owner, seen before its first)

    def owner(self, hint: FragmentHint, decode: LinkDecode, last_fragment: Callable[[], FragmentHint | None],
              ahead: Callable[[], Iterator[bytes]] | None, conn_owner: Callable[[Decoded], int]) -> int:
        """Where the fragment `hint` describes goes. `decode` (with `last_fragment`, which takes
        the hint it leaves) reads the frames `ahead`; `conn_owner` says whose a connection is."""
        owners = self.owners
        key, first = hint.key, hint.first
        if first is not None:
            owner = conn_owner(first)
            entry = owners.pop(key, None)
            if entry is None or not entry[1]:  # in order: the rest follow
                self._remember(key, owner, False)
            return owner
        entry = owners.get(key)
        if entry is not None:
            if hint.last and not entry[1]:
                del owners[key]
            return entry[0]
        found = None if ahead is None else _find_first(decode, last_fragment, key, ahead())
        owner = 0 if found is None else conn_owner(found)
        self._remember(key, owner, True)
        return owner

    def _remember(self, key: object, owner: int, reversed_: bool) -> None:
        owners = self.owners
        owners[key] = (owner, reversed_)
        if len(owners) > MAX_FRAGMENT_OWNERS:
            del owners[next(iter(owners))]


def _find_first(decode: LinkDecode, last_fragment: Callable[[], FragmentHint | None], key: object,
                frames: Iterator[bytes]) -> Decoded | None:
    """The packet the first fragment of datagram `key` starts, if it is among `frames`."""
    for frame in frames:
        if (decode(frame) is None and (hint := last_fragment()) is not None and hint.key == key
                and hint.first is not None):
            return hint.first
    return None


def records_after(buf: bytes, off: int, end: int, layout: RecordLayout) -> Iterator[bytes]:
    """The frames of the next `FRAGMENT_LOOKAHEAD` complete records from `off`."""
    unpack, size = layout.header.unpack_from, layout.header.size
    for _ in range(FRAGMENT_LOOKAHEAD):
        if off + size > end:
            return
        _sec, frac, caplen, _orig = unpack(buf, off)
        if caplen > layout.max_caplen or frac >= layout.max_fraction or off + size + caplen > end:
            return
        yield bytes(buf[off + size:off + size + caplen])
        off += size + caplen


def frames_after(frames: Sequence[Frame], i: int) -> Iterator[bytes]:
    """The frames of the next `FRAGMENT_LOOKAHEAD` frames from `frames[i]`."""
    for frame in frames[i:i + FRAGMENT_LOOKAHEAD]:
        yield frame[2]
