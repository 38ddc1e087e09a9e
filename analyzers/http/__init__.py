"""Byte streams to HTTP messages and transactions: heads, body framing (RFC 9112 §6.3), the
parser's state machine, recovery after junk or gaps, and request/response pairing. Never sees a
sequence number."""
