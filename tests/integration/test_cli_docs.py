"""The committed bash completion and man page are what scripts/cli_docs.py generates now (so they
never go stale), bash loads the completion and completes with it, and man renders the page."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from types import ModuleType

import pytest
from helpers.env import REPO, missing


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_docs", REPO / "scripts" / "cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli_docs = _load_generator()

COMPLETION = REPO / cli_docs.COMPLETION
MAN_PAGE = REPO / cli_docs.MAN_PAGE
REGENERATE = "regenerate with: PYTHONPATH=. python scripts/cli_docs.py"


def test_committed_completion_is_current() -> None:
    assert COMPLETION.read_text() == cli_docs.bash_completion(), REGENERATE


def test_committed_man_page_is_current() -> None:
    assert MAN_PAGE.read_text() == cli_docs.man_page(), REGENERATE


def test_setup_cfg_installs_both() -> None:
    text = (REPO / "setup.cfg").read_text()
    assert "share/bash-completion/completions = share/bash-completion/completions/pcapwatch\n" in text
    assert "share/man/man1 = share/man/man1/pcapwatch.1\n" in text


def complete(line: str) -> list[str]:
    """What bash's completion, loaded from the committed file, proposes for `line` (cursor at the end)."""
    extra = 'COMP_WORDS+=("")' if line.endswith(" ") else ":"
    script = (f"source {COMPLETION}; complete -p pcapwatch; COMP_WORDS=({line}); {extra}; "
              "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _pcapwatch; printf '%s\\n' \"${COMPREPLY[@]}\"")
    p = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr
    first, *rest = p.stdout.splitlines()
    assert first == "complete -o bashdefault -o filenames -F _pcapwatch pcapwatch"
    return [w for w in rest if w]


def test_bash_loads_and_completes() -> None:
    if shutil.which("bash") is None:
        missing("bash is not installed")
    assert complete("pcapwatch ") == ["-h", "--help", "--version", "read", "check", "run", "demo", "tail", "replay",
                                      "export", "publish"]
    assert complete("pcapwatch r") == ["read", "run", "replay"]
    assert complete("pcapwatch read --stats ") == ["text", "json"]
    assert complete("pcapwatch read --str") == ["--strings"]
    assert complete("pcapwatch tail --") == ["--help", "--connect", "--filter", "--json"]
    assert complete("pcapwatch run --max-") == []


@pytest.mark.parametrize("tool", ["man", "nroff"])
def test_man_page_renders(tool: str) -> None:
    if shutil.which(tool) is None:
        missing(f"{tool} is not installed")
    cmd = ["man", "-l", "-P", "cat", str(MAN_PAGE)] if tool == "man" else ["nroff", "-man", str(MAN_PAGE)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False,
                       env={"PATH": "/usr/bin:/bin", "MANWIDTH": "100", "LANG": "C.UTF-8"})
    assert (p.returncode, p.stderr) == (0, "")
    text = re.sub(".\b", "", p.stdout)  # nroff's overstrike (bold, underline) as plain text
    assert "pcapwatch - HTTP transaction records from tcpdump capture files" in text
    assert "pcapwatch read [options]" in text
    for name in ("READ", "CHECK", "RUN", "DEMO", "TAIL"):
        assert f"PCAPWATCH {name}" in text
    assert "usage: pcapwatch read [-h] [-o OUT]" in text
    assert "-c FILE, --config FILE" in text
