"""Outputs: where records go. Each sink owns a bounded buffer and a worker thread (see base.py).

An output type is declared once, as its row of `OUTPUT_TYPES` in watcher/config/schema.py: the YAML
keys (types, defaults, meaning), the dataclass of watcher/config/model.py they fill (`*OutputConfig`),
and the sink that writes it, named "module:Class" (e.g. "watcher.sinks.redis_sink:RedisSink"); a
test holds the dataclass's own defaults to the row's. The sink takes that `*OutputConfig` as it
is: no sink-side config, nothing copied. `open_sink(output)` is the one way to
build and start a sink: it imports the sink's module only then, so redis-py, pyzmq and
prometheus_client, each imported by its own module only, are loaded only when an output uses them.

The `pcap` action's writer (pcap_sink) is not an output: delivery builds it from the rules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from watcher.config.schema import OUTPUT_TYPES
from watcher.sinks.base import COUNTERS, Log, Sink, stderr_log

if TYPE_CHECKING:
    from watcher.config.model import OutputConfig
    from watcher.metrics import MetricsModel

__all__ = ["COUNTERS", "Sink", "open_sink", "sink_class"]


def sink_class(output_type: str) -> type[Sink]:
    """The sink an output type's schema row names, its module imported now."""
    row = OUTPUT_TYPES.get(output_type)
    if row is None:
        raise ValueError(f"unknown output type {output_type!r}, expected one of {', '.join(OUTPUT_TYPES)}")
    module, _, name = row.sink.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise TypeError(f"output type {output_type}: {row.sink} is not a Sink")  # pragma: no cover - a schema bug
    return cls


def open_sink(output: OutputConfig, log: Log = stderr_log, metrics: MetricsModel | None = None) -> Sink:
    """The started sink of a configured output; `metrics` is the service's model, which a prometheus
    output serves. ValueError for a value the sink cannot use (bad address, format, mode); OSError
    when a jsonl file cannot be opened or a port is taken."""
    sink = sink_class(output.type).from_output(output, log, metrics)
    sink.required = output.required
    return sink.start()
