"""The names of HTTP anomalies: what a strict peer would reject, or what the parser could not follow.

Like Zeek's weirds (`http_content_length_and_chunked`), an anomaly is named, counted and attached to
its message, never raised. Every name the analyzers emit is a member of `Anomaly`, with its reason in
`REASONS`; a rule naming anything else is refused when it is loaded. Members are strings equal to
their names, so records and counters hold them as the words they always were.
"""

from __future__ import annotations

from enum import StrEnum


class Anomaly(StrEnum):
    # The request line (head.py)
    BAD_REQUEST_LINE = "bad_request_line"
    BAD_METHOD = "bad_method"
    MISSING_REQUEST_TARGET = "missing_request_target"
    SPACE_IN_REQUEST_TARGET = "space_in_request_target"
    BAD_HTTP_VERSION = "bad_http_version"
    HEADERS_AFTER_SHORT_REQUEST_LINE = "headers_after_short_request_line"
    # The status line
    BAD_STATUS_LINE = "bad_status_line"
    # Header lines (head.py, transactions.py)
    OBS_FOLD = "obs_fold"
    BAD_HEADER_LINE = "bad_header_line"
    DUPLICATE_HOST = "duplicate_host"
    # Bytes two servers may read differently (head.py)
    BARE_CR = "bare_cr"
    BARE_LF = "bare_lf"
    CONTROL_CHAR = "control_char"
    WHITESPACE_LINE = "whitespace_line"
    # Where the readings frame the body differently: the framing this record followed (framing.py)
    AMBIGUOUS_FRAMING_NONE = "ambiguous_framing_none"
    AMBIGUOUS_FRAMING_LENGTH = "ambiguous_framing_length"
    AMBIGUOUS_FRAMING_CHUNKED = "ambiguous_framing_chunked"
    AMBIGUOUS_FRAMING_CLOSE = "ambiguous_framing_close"
    AMBIGUOUS_FRAMING_UNKNOWN = "ambiguous_framing_unknown"
    # Body framing (framing.py)
    CONTENT_LENGTH_AND_TRANSFER_ENCODING = "content_length_and_transfer_encoding"
    CHUNKED_APPLIED_TWICE = "chunked_applied_twice"
    TRANSFER_ENCODING_NOT_CHUNKED = "transfer_encoding_not_chunked"
    DUPLICATE_CONTENT_LENGTH = "duplicate_content_length"
    CONFLICTING_CONTENT_LENGTH = "conflicting_content_length"
    CONTENT_LENGTH_OVERFLOW = "content_length_overflow"
    BAD_CONTENT_LENGTH = "bad_content_length"
    # Chunked bodies (framing.py, parser.py)
    BAD_CHUNK_SIZE = "bad_chunk_size"
    CHUNK_SIZE_OVERFLOW = "chunk_size_overflow"
    CHUNK_SIZE_WHITESPACE = "chunk_size_whitespace"
    BAD_CHUNK_TERMINATOR = "bad_chunk_terminator"
    OVERSIZED_CHUNK_LINE = "oversized_chunk_line"
    # Heads and the stream (parser.py, recovery.py)
    OVERSIZED_HEAD = "oversized_head"
    INCOMPLETE_HEAD = "incomplete_head"
    HEAD_CUT_BY_GAP = "head_cut_by_gap"
    JUNK_BEFORE_FIRST_MESSAGE = "junk_before_first_message"
    NOT_HTTP = "not_http"
    # The TCP stream beneath (reported by analyzers/tcp, filed by analyzers/flows.py)
    RETRANSMISSION_MISMATCH = "retransmission_mismatch"

    @property
    def reason(self) -> str:
        """What the anomaly means, in one line (README and `check` show the names; this says why)."""
        return REASONS[self]


REASONS: dict[Anomaly, str] = {
    Anomaly.BAD_REQUEST_LINE: "a request line of neither shape `METHOD target HTTP/x.y` nor `METHOD target`, "
                              "or a byte that cannot start a request where one should",
    Anomaly.BAD_METHOD: "the method holds characters a token may not (RFC 9110 5.6.2)",
    Anomaly.MISSING_REQUEST_TARGET: "`METHOD HTTP/x.y`: the request line has no target",
    Anomaly.SPACE_IN_REQUEST_TARGET: "white space inside the request target (kept as sent)",
    Anomaly.BAD_HTTP_VERSION: "the request line's version is not `HTTP/digits.digits`",
    Anomaly.HEADERS_AFTER_SHORT_REQUEST_LINE: "header lines after an HTTP/0.9-shaped (one-line) request line: "
                                              "taken as that request's headers",
    Anomaly.BAD_STATUS_LINE: "where a response should start there is no `HTTP/x.y NNN` status line",
    Anomaly.OBS_FOLD: "a header value continued on the next line (obsolete folding, RFC 9112 5.2): unfolded",
    Anomaly.BAD_HEADER_LINE: "a header line with white space before its colon, or with no colon (RFC 9112 5.1): "
                             "a smuggling probe, dropped or repaired",
    Anomaly.DUPLICATE_HOST: "more than one Host header (a server must answer 400, RFC 9112 3.2)",
    Anomaly.BARE_CR: "a CR not followed by LF in the head: some servers end the line there, others keep the byte; "
                     "read here as a line end (in a request target: kept as a byte), so no header hides behind it",
    Anomaly.BARE_LF: "a head line ended by LF alone, without CR (RFC 9112 2.2: a server may accept it, some refuse)",
    Anomaly.CONTROL_CHAR: "a NUL or other control byte in the head (kept, escaped): servers refuse or truncate there",
    Anomaly.WHITESPACE_LINE: "a header line of white space only: some servers end the head there (hiding the "
                             "headers after it), others skip it; read here as skipped, every later line parsed",
    Anomaly.AMBIGUOUS_FRAMING_NONE: "the head read two ways (see bare_cr, whitespace_line) frames the body "
                                    "differently: followed here, every line read, no body",
    Anomaly.AMBIGUOUS_FRAMING_LENGTH: "the head read two ways (see bare_cr, whitespace_line) frames the body "
                                      "differently: followed here, every line read, Content-Length",
    Anomaly.AMBIGUOUS_FRAMING_CHUNKED: "the head read two ways (see bare_cr, whitespace_line) frames the body "
                                       "differently: followed here, every line read, chunked",
    Anomaly.AMBIGUOUS_FRAMING_CLOSE: "the head read two ways (see bare_cr, whitespace_line) frames the body "
                                     "differently: followed here, every line read, up to the close",
    Anomaly.AMBIGUOUS_FRAMING_UNKNOWN: "the head read two ways (see bare_cr, whitespace_line) frames the body "
                                       "differently: followed here, every line read, unframeable (resync)",
    Anomaly.CONTENT_LENGTH_AND_TRANSFER_ENCODING: "both Content-Length and Transfer-Encoding: a smuggling probe; "
                                                  "Transfer-Encoding frames the body (RFC 9112 6.3 step 3)",
    Anomaly.CHUNKED_APPLIED_TWICE: "Transfer-Encoding names chunked more than once",
    Anomaly.TRANSFER_ENCODING_NOT_CHUNKED: "Transfer-Encoding whose last coding is not chunked: a request "
                                           "cannot be framed, a response runs to the close",
    Anomaly.DUPLICATE_CONTENT_LENGTH: "Content-Length given more than once, with one value",
    Anomaly.CONFLICTING_CONTENT_LENGTH: "Content-Length given more than once, with different values: the body "
                                        "cannot be framed",
    Anomaly.CONTENT_LENGTH_OVERFLOW: "a Content-Length over 2^63-1: cannot be real, overflows 64-bit parsers",
    Anomaly.BAD_CONTENT_LENGTH: "a Content-Length that is not a decimal number",
    Anomaly.BAD_CHUNK_SIZE: "a chunk-size line that is not hexadecimal: the message is cut short there",
    Anomaly.CHUNK_SIZE_OVERFLOW: "a chunk size over 64 bits: the message is cut short there",
    Anomaly.CHUNK_SIZE_WHITESPACE: "white space around a chunk size (`5 `): some servers refuse it; read as the "
                                   "size",
    Anomaly.BAD_CHUNK_TERMINATOR: "chunk data not followed by an empty line (CRLF)",
    Anomaly.OVERSIZED_CHUNK_LINE: "a chunk-size or trailer line over the line limit: the message is cut short",
    Anomaly.OVERSIZED_HEAD: "a head over the head limit: its start line kept (the message cut short), its headers "
                            "dropped; parsing resumes at the next message",
    Anomaly.INCOMPLETE_HEAD: "the stream ended inside a head, or the server answered it with an error before it "
                             "ended: the message is what was read (flagged truncated)",
    Anomaly.HEAD_CUT_BY_GAP: "capture lost bytes inside a head: that message is lost",
    Anomaly.JUNK_BEFORE_FIRST_MESSAGE: "bytes that are not HTTP before the client's first request",
    Anomaly.NOT_HTTP: "the connection speaks another protocol: the client's first bytes (TLS, HTTP/2's preface) or "
                      "lines neither side answered as HTTP (a shell); it is not parsed, nothing of it written",
    Anomaly.RETRANSMISSION_MISMATCH: "bytes of the message sent again differ from the copy seen first, which was "
                                     "kept: an insertion the receiver may have dropped (bad checksum, low TTL), "
                                     "or a rewriting middlebox",
}
