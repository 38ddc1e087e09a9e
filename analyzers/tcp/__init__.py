"""Frames to byte streams: link/IP/TCP decoding and per-direction reassembly, which delivers only
bytes, a gap of N bytes, or the end. Knows nothing of HTTP."""
