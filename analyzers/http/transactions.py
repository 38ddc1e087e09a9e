"""Pairs each direction's messages into transactions, the way Zeek's HTTP analyzer does.

Pipelining is a FIFO of unanswered requests; a response takes the oldest one. Where capture lost
bytes the FIFO cannot be trusted blindly, so timing decides: a response cannot answer a request
that started after it, and after a gap in the server's direction a response answers the latest
request sent before it (the ones in between lost their responses to the gap).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace

from analyzers.http.anomalies import Anomaly
from analyzers.http.body_keep import BodyKeep, KeptBody, wants_body
from analyzers.http.counters import MAX_OVERFLOW_RUNS, MAX_UNANSWERED_REQUESTS, MAX_UNPROVEN_MESSAGES, HttpCounters
from analyzers.http.head import Headers, RequestHead, ResponseHead, speaks_http
from analyzers.http.messages import Cursor, Endpoints, Message, Transaction
from analyzers.http.parser import MessageParser
from analyzers.http.resync import NotHttp
from analyzers.side import Side

# What a parser reports where a protocol other than HTTP speaks (see `on_anomaly`).
_NOT_HTTP_SIGNS = frozenset({Anomaly.NOT_HTTP, Anomaly.BAD_STATUS_LINE, Anomaly.BAD_REQUEST_LINE,
                             Anomaly.JUNK_BEFORE_FIRST_MESSAGE})


class Conversation:
    """The HTTP side of one TCP connection: both parsers and the pairing between them."""

    __slots__ = (
        "anomaly_counts",
        "answering",
        "bodies",
        "client",
        "client_gap",
        "counters",
        "cursor",
        "depth",
        "endpoints",
        "head_pos",
        "heads_at_pos",
        "held",
        "inner",
        "loose",
        "not_http",
        "out",
        "overflow",
        "overflow_answer",
        "parsing",
        "pin", "pin_state",
        "proven",
        "response",
        "server",
        "server_gap",
        "source",
        "target",
        "tunnel",
        "unanswered",
        "unproven",
    )

    def __init__(self, endpoints: Endpoints, anomaly_counts: Counter[str], resync: bool = False,
                 cursor: Cursor | None = None, pin: int | None = None, counters: HttpCounters | None = None,
                 target: str | None = None, pin_state: tuple[int, int | None, bool] | None = None) -> None:
        self.endpoints = endpoints
        # Inside a CONNECT tunnel: its target (the CONNECT's authority), which its records give as
        # their host; None on the connection itself.
        self.target = target
        self.inner: Conversation | None = None  # the conversation inside this one's CONNECT tunnel
        self.counters = counters if counters is not None else HttpCounters()
        self.cursor = cursor if cursor is not None else Cursor()
        # Where this connection's unfinished work began (None: it has none), a restart replaying from there
        # (FlowTable.pin); its depth and gaps then, when `on_begin` set it (analyzers.identities).
        self.pin, self.pin_state = pin, pin_state
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
        self.tunnel = target is not None  # a tunnel opened here (CONNECT 2xx, 101), or this is inside one
        self.answering: Message | None = None  # the request the response being parsed answers
        self.not_http = False  # the client's first bytes were another protocol: stop parsing
        # Methods of requests written past MAX_UNANSWERED_REQUESTS, in runs [method, count], oldest
        # first: the next responses answer them (see `_overflow`).
        self.overflow: deque[list[object]] = deque()
        self.overflow_answer = False  # the response being parsed answers one of those
        # Whether either side has spoken HTTP yet (see head.speaks_http); until then transactions wait in
        # `unproven`, written when it does, dropped (the connection is not HTTP) if it never does.
        self.proven = False
        self.unproven: list[Transaction] = []
        self.bodies: BodyKeep | None = None  # request bodies to keep for replay (None: none)

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
        if not self.proven and speaks_http(head):
            self._proven()
        if isinstance(head, RequestHead):
            if self.target is not None:  # inside a tunnel: the record's host is the tunnel's target
                msg.head = replace(head, headers={**head.headers, "host": self.target})
            self.depth += 1
            msg.depth = self.depth
            msg.pcap_file = self.source
            if isinstance(head.headers.get("host"), list):
                msg.anomalies.append(Anomaly.DUPLICATE_HOST)
                self.anomaly_counts[Anomaly.DUPLICATE_HOST] += 1
            self.parsing = msg
            self.unanswered.append(msg)
            if self.bodies is not None and head.method is not None:
                self._keep_body(parser, msg, head)
            if len(self.unanswered) > MAX_UNANSWERED_REQUESTS:
                self._overflow(self.unanswered.popleft())
            return None
        interim = 100 <= head.status < 200 and head.status != 101
        if self.overflow:
            return self._answer_overflow(msg, interim)
        self.overflow_answer = False
        if not self.unanswered and head.status >= 400 and self.client.in_message:
            # An error while the client's head is unfinished (400, 408, 431): the server gave up on it, what
            # was read is the request (another status more likely answers a head whose end came late).
            self.client.answered()
        suspect = self.client_gap is not None
        request = self._pair(first_ts)
        if request is None and suspect:
            msg.gap = True  # most likely the answer to a request lost in the client's gap
        if interim:
            if request is not None:
                request.info_code, request.info_msg = head.status, head.reason
            msg.depth = -1  # interim: ends without a transaction
        else:
            if request is not None:
                self.unanswered.remove(request)
            connect = request is not None and getattr(request.head, "method", None) == "CONNECT"
            if connect and 200 <= head.status < 300:
                self.tunnel = True
                self._open_tunnel(request)  # type: ignore[arg-type]  # connect: request is not None
            elif head.status == 101:
                self.tunnel = True
                self.client.tunnel()
        msg.pcap_file = request.pcap_file if request is not None else self.source
        if msg.depth == 0:
            msg.depth = request.depth if request is not None else self._next_depth()
        self.response = msg
        self.answering = request
        if self.bodies is not None:
            self.server.keep = None
            if (self.bodies.responses and request is not None and isinstance(request.head, RequestHead)
                    and request.head.method in self.bodies.methods):
                self.server.keep = KeptBody(self.bodies.response_limit)
        if request is None or not isinstance(request.head, RequestHead):
            return None
        return request.head.method

    def _keep_body(self, parser: MessageParser, msg: Message, head: RequestHead) -> None:
        assert self.bodies is not None and head.method is not None
        limit = wants_body(self.bodies, head.method, head.headers)
        if limit is None:
            parser.keep = None
        elif limit < 0:
            parser.keep = None
            msg.body_skip = "too_large"
        else:
            parser.keep = KeptBody(limit)

    def on_begin(self, parser: MessageParser) -> None:
        if self.pin is None:
            self.pin, self.pin_state = self.cursor.pos, (self.depth, self.client_gap, self.server_gap)

    def _open_tunnel(self, request: Message) -> None:
        """A CONNECT was answered 2xx: what the two sides say next is a conversation of its own, the
        tunnel's. Cleartext HTTP/1.x in it is parsed (its records on this connection's uid, depths
        going on, `host` the tunnel's target); anything else is counted by kind and skipped."""
        target = getattr(request.head, "uri", None) or ""
        inner = Conversation(self.endpoints, self.anomaly_counts, cursor=self.cursor, counters=self.counters,
                             target=target)
        inner.out = self.out  # one list: the flow table collects both
        inner.depth = self.depth
        inner.source = self.source
        self.inner = inner
        self.counters.tunnels += 1
        self.client.carry(inner.client)
        self.server.carry(inner.server)

    def _maybe_idle(self) -> None:
        """Nothing unfinished left: a restart need not replay this connection's past (nor, while a
        tunnel is open, the CONNECT that opened it)."""
        if self.inner is None and not (self.unanswered or self.held or self.parsing or self.response or self.unproven
                                       or self.client.in_message or self.server.in_message):
            self.pin = None

    def on_end(self, parser: MessageParser, ts: float) -> None:
        if parser is self.client:
            msg = self.parsing
            self.parsing = None
            if msg is None:
                return
            _ended(msg, parser)
            if self.held:
                for tx in self.held:
                    self._put(tx)
                self.held.clear()
                self._maybe_idle()
            return
        resp = self.response
        self.response = None
        if resp is None:
            return
        _ended(resp, parser)
        if resp.depth < 0:
            return
        request = self.answering
        reason = None if request else "pipeline_overflow" if self.overflow_answer else "no_request"
        tx = Transaction(self.endpoints, request, resp, reason, self.tunnel, self.cursor.pos)
        if request is not None and request is self.parsing:
            # Answered before it was all sent (an early 4xx, 100-continue refused): its body
            # length and timing are final only when it ends, so the record waits for that.
            self.held.append(tx)
        else:
            self._put(tx)
            self._maybe_idle()

    def on_anomaly(self, parser: MessageParser, name: str) -> None:
        if self.target is not None and not self.proven and name in _NOT_HTTP_SIGNS:
            # Inside a CONNECT tunnel another protocol is the usual case (TLS), no anomaly: counted
            # by kind, and the tunnel is not parsed further.
            self.not_http_found(parser.not_http_kind if name == Anomaly.NOT_HTTP else NotHttp.OTHER)
            return
        self.anomaly_counts[name] += 1
        if name == Anomaly.NOT_HTTP and parser is self.client:
            self.not_http_found(parser.not_http_kind)
        elif name == Anomaly.BAD_STATUS_LINE and not self.proven:
            # Not a status line where the server's first answer should be, and the client spoke no
            # HTTP either (a shell, a banner): another protocol.
            self._not_http_other()
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
        """The oldest request is HTTP/0.9's one line, or a request line cut before its version."""
        request = self.unanswered[0] if self.unanswered else None
        version = getattr(request and request.head, "version", None)
        return version == "0.9" or (request is not None and version is None and request.truncated
                                    and getattr(request.head, "uri", None) is not None)

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

    def _overflow(self, request: Message) -> None:
        """Too many requests wait for an answer: the oldest is written now, without it. Its method
        is remembered (in runs) for the response that may still come."""
        self.counters.pipeline_overflow += 1
        method = getattr(request.head, "method", None)
        runs = self.overflow
        if runs and (runs[-1][0] == method or len(runs) >= MAX_OVERFLOW_RUNS):
            runs[-1][1] += 1  # type: ignore[operator]
        else:
            runs.append([method, 1])
        self._emit_unanswered(request, "pipeline_overflow")

    def _answer_overflow(self, msg: Message, interim: bool) -> str | None:
        """A response to a request already written by `_overflow`: written on its own, with the
        same reason; the request's method still frames it."""
        run = self.overflow[0]
        method = run[0]
        if interim:
            msg.depth = -1  # an interim answer: ends without a transaction
        else:
            run[1] -= 1  # type: ignore[operator]
            if not run[1]:
                self.overflow.popleft()
            self.counters.overflow_responses += 1
            msg.depth = self._next_depth()
        msg.pcap_file = self.source
        self.response = msg
        self.answering = None
        self.overflow_answer = True
        return method  # type: ignore[return-value]

    def _emit_unanswered(self, request: Message, reason: str) -> None:
        if self.parsing is request:
            request.last_ts = self.client.last_ts
            request.body_len = self.client.body_len
        self._put(Transaction(self.endpoints, request, None, reason, self.tunnel, self.cursor.pos))

    def _put(self, tx: Transaction) -> None:
        """A finished transaction: out, or held until the connection shows it speaks HTTP."""
        if self.not_http:  # known not to: a parser may finish the bytes it had when that was found
            return
        if self.proven:
            self.out.append(self._now_done(tx))
        else:
            self.unproven.append(tx)
        if not self.proven and len(self.unproven) > MAX_UNPROVEN_MESSAGES:
            self._not_http_other()

    def _proven(self) -> None:
        self.proven = True
        self.out += map(self._now_done, self.unproven)
        self.unproven.clear()

    def _now_done(self, tx: Transaction) -> Transaction:
        """`tx` as it goes out: done where it goes out. One held back (answered before its request
        was all sent, or until the connection showed HTTP) goes out at a later packet than the one
        that finished it, and a restart's replay tells what the run before it wrote by that."""
        pos = self.cursor.pos
        return tx if tx.done_pos == pos else replace(tx, done_pos=pos)

    def _not_http_other(self) -> None:
        """Found here, not by the client's parser: named as the parser names what it finds."""
        if not self.not_http:
            self.anomaly_counts[Anomaly.NOT_HTTP] += 1
            self.not_http_found(NotHttp.OTHER)

    def not_http_found(self, kind: NotHttp) -> None:
        """The connection speaks another protocol: nothing of it is written, its kind is counted."""
        if self.not_http:
            return
        self.not_http = True
        (self.counters.not_http if self.target is None else self.counters.tunnel_not_http)[kind] += 1
        if self.target is not None:  # neither side of the tunnel is parsed from here
            self.client.tunnel()
            self.server.tunnel()
        self.unproven.clear()
        self.unanswered.clear()
        self.held.clear()
        self.parsing = self.response = self.answering = None

    # Lifecycle ----------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """The connection is over (streams already delivered their end): flush what is unanswered."""
        for tx in self.held:
            self._put(tx)
        self.held.clear()
        while self.unanswered:
            self._emit_unanswered(self.unanswered.popleft(), reason)
        if self.unproven:  # nobody spoke HTTP on it: another protocol
            self._not_http_other()
        if self.inner is not None:
            self.inner.close(reason)


def _ended(msg: Message, parser: MessageParser) -> None:
    """A message's parser says it is complete (or cut short): its times, size, gap and kept body."""
    msg.last_ts, msg.body_len, msg.done = parser.last_ts, parser.body_len, True
    msg.gap, msg.truncated = msg.gap or parser.gap_in_message, parser.truncated
    if parser.keep is not None:
        kept, parser.keep = parser.keep, None
        if kept.over:
            msg.body_skip = "too_large"
        else:
            msg.body = bytes(kept.data)
