"""watcher/text/escape.py: outside text as printable ASCII on one line."""

from __future__ import annotations

from watcher.run import sdnotify
from watcher.text.escape import printable


def test_control_characters_and_non_ascii_are_escaped() -> None:
    assert printable("cap\n.pcap\x1b[31m") == "cap\\x0a.pcap\\x1b[31m"
    assert printable("caf\u00e9") == "caf\\xc3\\xa9"
    assert printable("plain \\x41 text") == "plain \\x41 text"  # text escaped already is not escaped twice
    assert printable("bad\udcff") == "bad\\xff"  # an undecodable byte of a file name: that byte


def test_the_service_log_uses_the_same_escaper() -> None:
    assert sdnotify.printable is printable
