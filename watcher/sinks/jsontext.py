"""A record as the JSON every output writes, and its bytes (README "Text").

Text is written as characters and sent as UTF-8, so a record for /Köln holds the bytes of Köln and
a grep of the output finds it; what the record holds of the wire is escaped already where it must
be (analyzers/http/text.py). With `strings: ascii` the JSON is 7-bit ASCII, any other character as a
\\u escape, as before there was a choice.
"""

from __future__ import annotations

import json
from typing import Any

from analyzers import Strings

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False, default=str)
_ascii_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False, default=str)


def encode(record: dict[str, Any], strings: Strings = Strings.UTF8) -> str:
    """One record as compact JSON, as `pcapwatch read` writes it; never contains a newline. Make
    bytes of it with `utf8`."""
    return (_ascii_encoder if strings == Strings.ASCII else _encoder).encode(record)


def utf8(text: str) -> bytes:
    """Encoded JSON as the bytes an output sends: UTF-8. The one thing UTF-8 cannot encode, a lone
    surrogate (a capture file name that is not UTF-8, as Python decodes it), becomes the JSON escape
    the ASCII form has for it (\\udcNN), so the bytes stay valid UTF-8 and valid JSON."""
    return text.encode("utf-8", "backslashreplace")
