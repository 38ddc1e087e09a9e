"""What the service builds from its configuration besides the pipeline and the outputs: the limits
on gzip'd capture files, the latency histogram's buckets, the spool directory's inotify watch."""

from __future__ import annotations

from typing import Any

from watcher.capture.sources import GunzipLimits
from watcher.config.load import Config
from watcher.metrics import DEFAULT_BUCKETS_MS
from watcher.run.sdnotify import log


def gunzip_limits(config: Config) -> GunzipLimits:
    return GunzipLimits(config.limits.gunzip_max_bytes, config.limits.gunzip_max_ratio)


def histogram_buckets(config: Config) -> tuple[float, ...]:
    from watcher.config.model import PrometheusOutputConfig

    for o in config.outputs:
        if isinstance(o, PrometheusOutputConfig):
            return tuple(o.buckets_ms)
    return tuple(DEFAULT_BUCKETS_MS)


def dir_watcher(directory: str) -> Any:
    """inotify hints when available; the reader rescans on a timer either way."""
    try:
        from watcher.capture.inotify import DirWatcher
    except ImportError as e:  # pragma: no cover - pyinotify is a dependency
        log("warning", f"inotify unavailable ({e}); relying on periodic rescans")
        return None
    try:
        return DirWatcher(directory)
    except OSError as e:
        log("warning", f"inotify watch on {directory} failed ({e}); relying on periodic rescans")
        return None
