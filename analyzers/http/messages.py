"""What the HTTP analysis hands out: a message (`Message`), who talked (`Endpoints`), a request paired
with its response (`Transaction`), and where in the input the analysis is (`Cursor`). Plain data:
transactions.py builds them, records.py writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzers.http.head import RequestHead, ResponseHead
from analyzers.packet_keep import KeptUpTo


@dataclass(slots=True)
class Cursor:
    """Where in the input the analyzer is: the position of the record being processed.

    Positions are opaque increasing ints chosen by the caller (the service uses generation index
    << 40 | file offset); they make transactions traceable to the input and replays deduplicable.
    """

    pos: int = 0


@dataclass(slots=True)
class Message:
    """One request or response as it is being parsed."""

    head: RequestHead | ResponseHead | None
    first_ts: float
    head_ts: float
    last_ts: float = 0.0
    body_len: int = 0
    done: bool = False
    gap: bool = False
    truncated: bool = False
    anomalies: list[str] = field(default_factory=list)
    depth: int = 0
    pcap_file: str | None = None
    info_code: int | None = None
    info_msg: str | None = None
    pos: int = 0  # input position of the record that completed the head
    pos_index: int = 0  # heads completed before this one on the same connection in that record
    body: bytes | None = None  # the body, kept only when asked for (body_keep.py)
    body_skip: str | None = None  # why a wanted body was not kept: "too_large"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Who talked to whom, as written in records (client first)."""

    uid: str
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    midstream: bool


@dataclass(frozen=True, slots=True)
class Transaction:
    """A request and its response; either may be missing (then `reason` says why)."""

    conn: Endpoints
    request: Message | None
    response: Message | None
    reason: str | None = None
    tunnel: bool = False
    done_pos: int = 0  # input position of the record whose processing completed the transaction
    # The connection's packets up to here, when rules want them (analyzers.packet_keep).
    packets: KeptUpTo | None = field(default=None, compare=False, repr=False)
