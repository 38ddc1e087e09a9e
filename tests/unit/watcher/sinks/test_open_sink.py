"""watcher/sinks/__init__: an output type's sink is the one its schema row names, built from the
output's own config (`*OutputConfig`) by `open_sink`, the one way to build and start a sink."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from watcher.config.model import JsonlOutputConfig, PrometheusOutputConfig
from watcher.config.schema import OUTPUT_TYPES
from watcher.sinks import open_sink, sink_class
from watcher.sinks.base import Sink
from watcher.sinks.jsonl import JsonlSink


@pytest.mark.parametrize("output_type", list(OUTPUT_TYPES))
def test_each_output_type_names_a_sink_that_takes_its_config(output_type: str) -> None:
    row = OUTPUT_TYPES[output_type]
    cls = sink_class(output_type)
    assert issubclass(cls, Sink)
    assert row.sink == f"{cls.__module__}:{cls.__name__}"
    annotation = inspect.signature(cls).parameters["config"].annotation
    assert annotation == row.make.__name__


def test_open_sink_builds_and_starts_the_sink_of_an_output(tmp_path: Path) -> None:
    s = open_sink(JsonlOutputConfig("f", "jsonl", tmp_path / "out.jsonl", buffer=7))
    try:
        assert isinstance(s, JsonlSink)
        assert (s.name, s.capacity, s.path) == ("f", 7, tmp_path / "out.jsonl")
        s.submit({"a": 1})
        assert s.flush(5)
    finally:
        s.close(1)
    assert (tmp_path / "out.jsonl").read_text() == '{"a":1}\n'


def test_unknown_type_and_prometheus_without_the_metrics_model_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown output type 'kinesis', expected one of jsonl, syslog"):
        sink_class("kinesis")
    with pytest.raises(ValueError, match="output prom: a prometheus output is opened with its config and the "
                                         "service's metrics model"):
        open_sink(PrometheusOutputConfig("prom", "prometheus", listen="127.0.0.1:0"))
