"""The test environment: paths, real-tool requirements, the shared corpus, and running `read` in-process.

Locally a test that needs a missing tool or `../shared` skips with the reason; CI sets
PCAPWATCH_REQUIRE_REAL=1 and then the same situation fails, so nothing silently goes untested.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from watcher.read.job import ReadResult, read_captures

REPO = Path(__file__).resolve().parent.parent.parent
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
REQUIRE_REAL = os.environ.get("PCAPWATCH_REQUIRE_REAL") == "1"


def missing(reason: str) -> None:
    """Skip, or fail under PCAPWATCH_REQUIRE_REAL=1."""
    if REQUIRE_REAL:
        pytest.fail(f"{reason} (PCAPWATCH_REQUIRE_REAL=1: missing requirements fail)")
    pytest.skip(reason)


def need_tool(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            missing(f"{name} is not installed")


def need_root() -> None:
    if os.geteuid() != 0:
        missing("needs root (tcpdump capture / network namespace)")


def corpus(*parts: str) -> Path:
    """A path in ../shared/corpus; skips (or fails in CI) when the corpus is absent."""
    p = CORPUS.joinpath(*parts)
    if not p.exists():
        missing(f"shared corpus not available: {p}")
    return p


def read_records(*paths: str | Path, **kw: Any) -> tuple[list[dict[str, Any]], ReadResult, str]:
    """Run `pcapwatch read` in-process: (records, result, stderr text)."""
    out, err = io.StringIO(), io.StringIO()
    result = read_captures([str(p) for p in paths], out, err, **kw)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return records, result, err.getvalue()


def file_modes_bind_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """File permissions as a user without privileges meets them, in this process: root reads a
    mode-000 file, so for root the kernel's refusal is played (opening a file without read bits,
    with `open` or `os.open`, raises the PermissionError a user gets); for anyone else the kernel
    refuses by itself and nothing is changed. A real run of the service drops root's privilege
    instead (tests/integration/test_run_input_faults.py)."""
    if os.geteuid() != 0:
        return
    import builtins

    real_open, real_os_open = builtins.open, os.open

    def denied(path: object) -> bool:
        try:
            return isinstance(path, str | Path) and os.stat(path).st_mode & 0o444 == 0
        except OSError:
            return False

    def fake_open(path: Any, *args: Any, **kw: Any) -> Any:
        if denied(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    def fake_os_open(path: Any, *args: Any, **kw: Any) -> int:
        if denied(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_os_open(path, *args, **kw)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
