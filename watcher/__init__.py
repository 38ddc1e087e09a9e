"""The I/O edge: capture files on disk become frames, frames go to `analyzers`, records go out."""

from importlib import metadata as _metadata


def version() -> str:
    """pcapwatch's version, from the installed distribution's metadata (setup.cfg is its one source);
    "unknown" when the code runs without being installed."""
    try:
        return _metadata.version("pcapwatch")
    except _metadata.PackageNotFoundError:
        return "unknown"
