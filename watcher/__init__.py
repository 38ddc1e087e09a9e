"""The I/O edge: capture files on disk become frames, frames go to `analyzers`, records go out."""

def version() -> str:
    """pcapwatch's version, from the installed distribution's metadata (setup.cfg is its one source);
    "unknown" when the code runs without being installed."""
    from importlib import metadata  # 20 ms to import: only when asked

    try:
        return metadata.version("pcapwatch")
    except metadata.PackageNotFoundError:
        return "unknown"
