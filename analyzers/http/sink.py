"""What an HTTP parser reports to: the calls a `MessageSink` takes, implemented by the conversation
(transactions.py), which pairs requests with responses.

The parser's calls keep one promise (written down as mitmproxy's `_hooks.py` does): every message
that starts ends once. A message starts with its `on_head` and ends with one `on_end`, before the
next `on_head`; `eof`, which every stream gets (FIN, RST, eviction, end of input), ends whatever is
open, `truncated` if its framing wanted more. (`tunnel`, the sink's own switch, stops the stream
where it is; `carry` hands the rest to the parser of the conversation inside a CONNECT tunnel.) A
head the stream ends inside, or over the size limit, is a message cut short when its start line
was read (`METHOD target` at least); a head that never completes otherwise is no message: after
its `on_begin` comes an anomaly naming why (junk at a client's start may only be counted, in
`skipped_bytes`), and an `on_end` too if a gap cut it.

A sink is generic in the parser that calls it, which it gets with every call to read its public
fields (`side`, `in_message`, `body_len`, `last_ts`, `gap_in_message`, `truncated`); so this
module need not import the parser.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from analyzers.http.anomalies import Anomaly
from analyzers.http.head import Headers, RequestHead, ResponseHead

P = TypeVar("P", contravariant=True)  # the parser type: a sink only takes it in


class MessageSink(Protocol[P]):
    """What a parser reports to; implemented by the conversation."""

    def on_head(self, parser: P, head: RequestHead | ResponseHead, first_ts: float,
                ts: float) -> str | None:
        """A head is complete. For a response, return the method of the request it answers."""

    def on_begin(self, parser: P) -> None:
        """The first byte of a message: unfinished work starts here."""

    def on_end(self, parser: P, ts: float) -> None:
        """The current message is complete (or cut short: see `parser.truncated`)."""

    def on_anomaly(self, parser: P, name: Anomaly) -> None:
        """Something a strict peer would reject; counted and attached to the message."""

    def on_gap(self, parser: P, n: int, ts: float) -> None:
        """`n` bytes of this direction were not captured where whole messages may have been."""

    def headless_response(self) -> bool:
        """True when the next response answers a one-line (HTTP/0.9) request: it may have no
        status line, its body then running to the close."""

    def on_late_headers(self, parser: P, headers: Headers, anomalies: tuple[Anomaly, ...]) -> None:
        """Header lines followed a one-line request line: they are that request's headers."""
