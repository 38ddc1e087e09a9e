"""Outputs: where records go. Each sink owns a bounded buffer and a worker thread (see base.py).

Each sink module declares its config dataclass next to the sink (jsonl.JsonlSinkConfig,
syslog.SyslogSinkConfig, redis_sink.RedisSinkConfig, zmq_sink.ZmqSinkConfig); `config.build(log)`
makes the sink and `open_sink(config)` also starts it. redis-py and pyzmq are imported only by
their own module, so an unused output costs nothing but its import.
"""

from __future__ import annotations

from typing import Protocol

from watcher.sinks.base import COUNTERS, DEFAULT_BUFFER, Log, Sink, stderr_log

__all__ = ["COUNTERS", "DEFAULT_BUFFER", "Sink", "SinkConfig", "open_sink"]


class SinkConfig(Protocol):
    """What every sink's (frozen) config dataclass offers."""

    @property
    def name(self) -> str: ...

    @property
    def buffer(self) -> int: ...

    def build(self, log: Log = stderr_log) -> Sink: ...


def open_sink(config: SinkConfig, log: Log = stderr_log) -> Sink:
    """The started sink a config describes. ValueError for a value the sink cannot use (bad address,
    format, mode); OSError when a jsonl file cannot be opened."""
    return config.build(log).start()
