"""What an HTTP parser reports to: the calls a `MessageSink` takes, implemented by the conversation
(transactions.py), which pairs requests with responses. The promise the parser keeps about the
order of these calls (every message that starts ends once) is written down in parser.py.

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
