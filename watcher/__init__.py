"""The I/O edge: capture files on disk become frames, frames go to `analyzers`, records go out."""
