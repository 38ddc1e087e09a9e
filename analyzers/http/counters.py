"""What the HTTP side counts across connections, and the bounds it keeps on one connection's state
(the conversation, transactions.py, enforces them)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from analyzers.http.resync import NotHttp

# Unanswered requests kept per connection. Real clients pipeline a handful (browsers stopped at 6
# to 8, benchmarks at a few hundred); a client that sends more without any answer is an attack on
# the monitor's memory (400,000 held ~900 MB). Past it the oldest is written without its response
# (reason `pipeline_overflow`, counted), which keeps a connection's HTTP state near 1 MB.
MAX_UNANSWERED_REQUESTS = 1024
# Methods of requests written that way, remembered in runs (`GET` x 5000 is one run) so that their
# responses, if they come, still pair in order and a HEAD's answer is framed without a body. Past
# this many runs the last run absorbs the rest: only a HEAD among them could be framed wrongly.
MAX_OVERFLOW_RUNS = 1024
# Messages a connection may hold before either side has shown it speaks HTTP (head.speaks_http): a
# client whose first lines are not request lines and whose server does not answer with a status line
# is another protocol (a shell on a watched port): past this many such lines it is given up on.
MAX_UNPROVEN_MESSAGES = 16
NOT_HTTP_KINDS = tuple(NotHttp)


@dataclass(slots=True)
class HttpCounters:
    """What the HTTP side of all connections let go or set aside, for `stats()`."""

    pipeline_overflow: int = 0  # requests written without response past MAX_UNANSWERED_REQUESTS
    overflow_responses: int = 0  # responses to those, written without their request
    tunnels: int = 0  # CONNECT tunnels whose cleartext HTTP was parsed as a conversation of its own
    tunnel_not_http: Counter[str] = field(default_factory=Counter)  # tunnels of another protocol, by kind
    not_http: Counter[str] = field(default_factory=Counter)  # connections not HTTP, by kind
