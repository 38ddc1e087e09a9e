"""Request bodies kept for replay: opt-in and bounded. Off (the default) nothing is copied.

The parser counts body bytes; when a conversation asks for a request's body it hangs a `KeptBody`
on the client parser (`MessageParser.keep`), which hands it the body bytes (chunk data without its
framing) until the message ends. Only requests of the wanted methods that announce a body are
kept; past `limit` bytes the copy stops and the body is marked too large.
"""

from __future__ import annotations

from dataclasses import dataclass

# A replayed request is re-sent whole: bodies beyond this are rarely worth a shadow's time, and it
# bounds the memory a connection holding a large upload can take.
DEFAULT_BODY_LIMIT = 64 << 10
# A response body is kept only to hash it against the shadow's: one per connection in flight.
DEFAULT_RESPONSE_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class BodyKeep:
    """Which request bodies to keep: of these methods (upper case), up to `limit` bytes each; with
    `responses`, their responses' bodies too (up to `response_limit`), to compare a replay's answer."""

    methods: frozenset[str]
    limit: int = DEFAULT_BODY_LIMIT
    responses: bool = False
    response_limit: int = DEFAULT_RESPONSE_LIMIT


class KeptBody:
    """The body bytes of one request, as they come; `over` once more than `limit` came."""

    __slots__ = ("data", "limit", "over")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.over = False

    def add(self, data: bytes) -> None:
        if self.over:
            return
        if len(self.data) + len(data) > self.limit:
            self.over = True
            self.data = bytearray()
            return
        self.data += data


def wants_body(keep: BodyKeep, method: str, headers: dict[str, str | list[str]]) -> int | None:
    """Whether a request's body is to be kept: None (not wanted, or none announced), -1 (announced
    bigger than the limit) or the limit."""
    if method not in keep.methods:
        return None
    length = headers.get("content-length")
    if length is None:
        return keep.limit if "transfer-encoding" in headers else None
    if isinstance(length, list):
        length = length[0]
    try:
        n = int(length)
    except ValueError:
        return None
    if n <= 0:
        return None
    return -1 if n > keep.limit else keep.limit
