"""Redis: each record appended to a stream (`XADD key MAXLEN ~ n * json <record>`), or published on a
channel, the way Packetbeat and Suricata feed Logstash and other consumers. The only module that
imports redis-py.

Batches go in one pipelined round trip; in stream mode inside MULTI/EXEC, so a batch is applied
whole or not at all. When Redis goes away the batch is kept and retried after a reconnect with
exponential backoff and jitter (redis-py's own retries are off: our counters must see every try).
A failure while a batch was in flight leaves its fate unknown (EXEC may have run before the reply
was lost); before sending it again the sink looks for the batch's last `event_id` at the stream's
tail, so a record is not appended twice. Published messages reach only the subscribers present.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from watcher.config.model import RedisOutputConfig
from watcher.sinks.base import Log, Record, Sink, stderr_log
from watcher.sinks.jsontext import encode, utf8

MODES = ("stream", "publish")
FIELD = "json"  # the stream entry's one field: the record as JSON, as `pcapwatch read` writes it
# Per-operation socket timeout: a hung Redis costs this sink at most this long per try.
SOCKET_TIMEOUT = 5.0
# Entries read back from the stream's tail to learn whether an unacknowledged batch was applied:
# the batch is contiguous, but other producers may have appended after it.
TAIL_CHECK = 1000


class RedisSink(Sink):
    """Output `type: redis`: `config.batch` records per round trip; `config.maxlen` 0 keeps every
    entry (no trimming; the configuration asks for at least 1)."""

    kind = "redis output"
    retryable = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    def __init__(self, config: RedisOutputConfig, log: Log = stderr_log) -> None:
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {config.mode!r}")
        super().__init__(config.name, config.buffer, batch=config.batch, backoff_max=config.backoff_max_seconds,
                         log=log)
        self.mode = config.mode
        self.key = config.key
        self.maxlen = config.maxlen if config.maxlen > 0 else None
        # Built now (no I/O yet) so a malformed URL is the caller's ValueError at start-up.
        self.client = redis.Redis.from_url(config.url, retry=Retry(NoBackoff(), 0), socket_timeout=SOCKET_TIMEOUT,
                                           socket_connect_timeout=SOCKET_TIMEOUT)
        self._unsure = False
        self._last_refusal = ""

    def _connect(self) -> None:
        self.client.ping()

    def _disconnect(self) -> None:
        self.client.connection_pool.disconnect()

    def _send(self, batch: list[Record]) -> int:
        if self._unsure:
            if self.mode == "stream" and self._applied(batch):
                self._unsure = False
                return len(batch)
            self._unsure = False
        pipe = self.client.pipeline(transaction=self.mode == "stream")
        strings = self.strings
        for r in batch:
            if self.mode == "stream":
                pipe.xadd(self.key, {FIELD: utf8(encode(r, strings))}, maxlen=self.maxlen, approximate=True)
            else:
                pipe.publish(self.key, utf8(encode(r, strings)))
        try:
            results = pipe.execute(raise_on_error=False)
        except self.retryable:
            self._unsure = True
            raise
        refused = [x for x in results if isinstance(x, Exception)]
        if refused and str(refused[0]) != self._last_refusal:
            self._last_refusal = str(refused[0])
            self.log("error", f"{self.kind} {self.name}: Redis refused {len(refused)} of {len(batch)} records "
                              f"({self._last_refusal}); dropped")
        return len(batch) - len(refused)

    def _applied(self, batch: list[Record]) -> bool:
        """Is the batch's last record at the stream's tail already (its EXEC ran, the reply was lost)?"""
        want = batch[-1].get("event_id")
        if want is None:
            return False
        entries = self.client.xrevrange(self.key, count=max(TAIL_CHECK, 2 * len(batch))) or []
        return any(_event_id((fields or {}).get(FIELD.encode())) == want for _, fields in entries)


def _event_id(raw: Any) -> Any:
    try:
        return json.loads(raw).get("event_id")
    except (TypeError, ValueError, AttributeError):
        return None
