"""`pcapwatch replay`'s command line: bad values are one line and exit 2, nothing sent."""

from __future__ import annotations

import io

import pytest

from watcher.cli import build_parser
from watcher.replay import verb


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "https://x"], "pcapwatch: error: --target: replay target 'https://x': only http:// targets are "
                                "supported; give http://HOST[:PORT]\n"),
    (["--target", "http://x", "--mask", "("], "pcapwatch: error: --mask '(': missing ), unterminated subpattern at "
                                              "position 0; give a Python regular expression\n"),
    (["--target", "http://x", "--rate", "0"], "pcapwatch: error: --concurrency, --rate and --speed must be positive\n"),
])
def test_bad_arguments(args: list[str], message: str) -> None:
    err = io.StringIO()
    assert verb.run(build_parser().parse_args(["replay", "x.pcap", *args]), err) == verb.EXIT_USAGE
    assert err.getvalue() == message
