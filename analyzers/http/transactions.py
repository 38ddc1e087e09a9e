"""Pairs each direction's messages into transactions, the way Zeek's HTTP analyzer does.

Pipelining is a FIFO of unanswered requests; a response takes the oldest one. Where capture lost
bytes the FIFO cannot be trusted blindly, so timing decides: a response cannot answer a request
that started after it, and after a gap in the server's direction a response answers the latest
request sent before it (the ones in between lost their responses to the gap).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, replace

from analyzers.http.anomalies import Anomaly
from analyzers.http.head import Headers, RequestHead, ResponseHead
from analyzers.http.parser import MessageParser
from analyzers.packet_keep import KeptUpTo
from analyzers.side import Side


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


class Conversation:
    """The HTTP side of one TCP connection: both parsers and the pairing between them."""

    __slots__ = (
        "anomaly_counts",
        "answering",
        "client",
        "client_gap",
        "cursor",
        "depth",
        "endpoints",
        "head_pos",
        "heads_at_pos",
        "held",
        "loose",
        "not_http",
        "out",
        "parsing",
        "pin",
        "pin_state",
        "response",
        "server",
        "server_gap",
        "source",
        "tunnel",
        "unanswered",
    )

    def __init__(self, endpoints: Endpoints, anomaly_counts: Counter[str], resync: bool = False,
                 cursor: Cursor | None = None, pin: int | None = None) -> None:
        self.endpoints = endpoints
        self.cursor = cursor if cursor is not None else Cursor()
        # Position where this connection's unfinished work began, None while it has none: a
        # restart must replay from there to rebuild it (see FlowTable.pin).
        self.pin = pin
        # (depth, client_gap, server_gap) as they were when `on_begin` set `pin`: what a restart
        # resuming at `pin` continues from (analyzers.identities). None while `pin` is the
        # connection's first packet (a replay from there rebuilds all of it).
        self.pin_state: tuple[int, int | None, bool] | None = None
        self.head_pos = -1
        self.heads_at_pos = 0
        self.anomaly_counts = anomaly_counts
        self.client = MessageParser(Side.CLIENT, self, resync)
        self.server = MessageParser(Side.SERVER, self, resync)
        self.unanswered: deque[Message] = deque()
        self.parsing: Message | None = None  # request whose head is parsed and body is not done
        self.response: Message | None = None
        self.depth = 0
        self.out: list[Transaction] = []
        self.held: list[Transaction] = []  # answered while the request was still being sent
        self.server_gap = False
        self.client_gap: int | None = None
        self.loose: tuple[list[str], list[str]] = ([], [])  # per side: anomalies seen between messages
        self.source: str | None = None  # capture file being read, for records
        self.tunnel = False
        self.answering: Message | None = None  # the request the response being parsed answers
        self.not_http = False  # the client's first bytes were another protocol: stop parsing

    # MessageSink --------------------------------------------------------------------------------

    def on_head(self, parser: MessageParser, head: RequestHead | ResponseHead, first_ts: float,
                ts: float) -> str | None:
        loose = self.loose[parser.side]
        msg = Message(head, first_ts, ts, ts, anomalies=list(head.anomalies) + loose)
        loose.clear()
        pos = self.cursor.pos
        if pos == self.head_pos:
            self.heads_at_pos += 1
        else:
            self.head_pos, self.heads_at_pos = pos, 0
        msg.pos, msg.pos_index = pos, self.heads_at_pos
        for name in head.anomalies:
            self.anomaly_counts[name] += 1
        if isinstance(head, RequestHead):
            self.depth += 1
            msg.depth = self.depth
            msg.pcap_file = self.source
            if isinstance(head.headers.get("host"), list):
                msg.anomalies.append(Anomaly.DUPLICATE_HOST)
                self.anomaly_counts[Anomaly.DUPLICATE_HOST] += 1
            self.parsing = msg
            self.unanswered.append(msg)
            return None
        suspect = self.client_gap is not None
        request = self._pair(first_ts)
        if request is None and suspect:
            msg.gap = True  # most likely the answer to a request lost in the client's gap
        if 100 <= head.status < 200 and head.status != 101:
            if request is not None:
                request.info_code, request.info_msg = head.status, head.reason
            msg.depth = -1  # interim: ends without a transaction
        else:
            if request is not None:
                self.unanswered.remove(request)
            connect = request is not None and getattr(request.head, "method", None) == "CONNECT"
            if head.status == 101 or (connect and 200 <= head.status < 300):
                self.tunnel = True
                self.client.tunnel()
        msg.pcap_file = request.pcap_file if request is not None else self.source
        if msg.depth == 0:
            msg.depth = request.depth if request is not None else self._next_depth()
        self.response = msg
        self.answering = request
        if request is None or not isinstance(request.head, RequestHead):
            return None
        return request.head.method

    def on_begin(self, parser: MessageParser) -> None:
        if self.pin is None:
            self.pin = self.cursor.pos
            self.pin_state = (self.depth, self.client_gap, self.server_gap)

    def _maybe_idle(self) -> None:
        """Nothing unfinished left: a restart need not replay this connection's past."""
        if not (self.unanswered or self.held or self.parsing or self.response
                or self.client.in_message or self.server.in_message):
            self.pin = None

    def on_end(self, parser: MessageParser, ts: float) -> None:
        if parser is self.client:
            msg = self.parsing
            self.parsing = None
            if msg is None:
                return
            msg.last_ts, msg.body_len, msg.done = parser.last_ts, parser.body_len, True
            msg.gap, msg.truncated = msg.gap or parser.gap_in_message, parser.truncated
            if self.held:
                self.out += self.held
                self.held.clear()
                self._maybe_idle()
            return
        resp = self.response
        self.response = None
        if resp is None:
            return
        resp.last_ts, resp.body_len, resp.done = parser.last_ts, parser.body_len, True
        resp.gap, resp.truncated = resp.gap or parser.gap_in_message, parser.truncated
        if resp.depth < 0:
            return
        request = self.answering
        tx = Transaction(self.endpoints, request, resp, None if request else "no_request", self.tunnel,
                         self.cursor.pos)
        if request is not None and request is self.parsing:
            # Answered before it was all sent (an early 4xx, 100-continue refused): its body
            # length and timing are final only when it ends, so the record waits for that.
            self.held.append(tx)
        else:
            self.out.append(tx)
            self._maybe_idle()

    def on_anomaly(self, parser: MessageParser, name: str) -> None:
        self.anomaly_counts[name] += 1
        if name == Anomaly.NOT_HTTP and parser is self.client:
            self.not_http = True
        elif name == Anomaly.BAD_STATUS_LINE and not self.server_gap and self.unanswered:
            # The server answered the oldest request with something that is not HTTP: that
            # request has had its answer, and the next response belongs to the next request.
            request = self.unanswered.popleft()
            request.anomalies.append(name)
            self._emit_unanswered(request, "bad_response")
            return
        msg = self.parsing if parser is self.client else self.response
        if msg is not None and parser.in_message:
            msg.anomalies.append(name)
        else:
            self.loose[parser.side].append(name)

    def on_gap(self, parser: MessageParser, n: int, ts: float) -> None:
        if parser is self.client:
            self.client_gap = self.depth  # requests after this one may be paired wrongly
        else:
            self.server_gap = True

    def on_late_headers(self, parser: MessageParser, headers: Headers, anomalies: tuple[str, ...]) -> None:
        for name in anomalies:
            self.anomaly_counts[name] += 1
        request = self.unanswered[-1] if self.unanswered else None
        if request is not None and isinstance(request.head, RequestHead):
            request.head = replace(request.head, headers=headers)
            request.anomalies.extend(anomalies)

    def headless_response(self) -> bool:
        return bool(self.unanswered) and getattr(self.unanswered[0].head, "version", None) == "0.9"

    # Pairing ------------------------------------------------------------------------------------

    def _pair(self, first_ts: float) -> Message | None:
        pending = self.unanswered
        if not pending:
            self.client_gap = None  # the answer to a request lost in the client's gap
            return None
        if self.server_gap:
            self.server_gap = False
            candidates = [m for m in pending if m.first_ts <= first_ts]
            if not candidates:
                return None
            chosen = candidates[-1]
            while pending[0] is not chosen:  # their responses were lost in the gap
                lost = pending.popleft()
                lost.gap = True
                self._emit_unanswered(lost, "gap")
            return chosen
        if pending[0].first_ts > first_ts:
            # It started before any request we have: its request was lost. Then the client
            # is not pipelining here, and the FIFO is trustworthy again.
            self.client_gap = None
            return None
        if self.client_gap is not None and pending[0].depth > self.client_gap:
            # Requests pipelined behind bytes lost on the client's side may have vanished, so
            # this pairing is a guess: flag it, until every request seen has been answered.
            pending[0].gap = True
            if len(pending) == 1 and not self.client.in_message:
                self.client_gap = None
        return pending[0]

    def _next_depth(self) -> int:
        self.depth += 1
        return self.depth

    def _emit_unanswered(self, request: Message, reason: str) -> None:
        if self.parsing is request:
            request.last_ts = self.client.last_ts
            request.body_len = self.client.body_len
        self.out.append(Transaction(self.endpoints, request, None, reason, self.tunnel, self.cursor.pos))

    # Lifecycle ----------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """The connection is over (streams already delivered their end): flush what is unanswered."""
        if self.held:
            self.out += self.held
            self.held.clear()
        while self.unanswered:
            self._emit_unanswered(self.unanswered.popleft(), reason)
