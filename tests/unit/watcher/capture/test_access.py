"""The spool's permissions judged for named users, on real directories chowned to real users
(nobody, tcpdump when Debian's tcpdump made it): needs root."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.env import missing, need_root

from watcher.capture.access import account, blocked, describe, spool_warnings


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory every user may pass through (pytest's tmp_path is under a 0700 directory)."""
    need_root()
    if account("nobody") is None or account("tcpdump") is None:
        missing("users nobody and tcpdump (Debian's tcpdump package) are needed")
    d = Path(tempfile.mkdtemp(prefix="pcapwatch-access-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def spool(base: Path, mode: int, owner: str, group: str) -> Path:
    d = base / "spool"
    d.mkdir()
    shutil.chown(d, owner, group)
    d.chmod(mode)
    return d


def test_readme_layout_has_no_warning(base: Path) -> None:
    nobody = account("nobody")
    assert nobody is not None
    d = spool(base, 0o2750, "tcpdump", nobody.group)
    assert describe(d) == f"mode 2750, owner tcpdump, group {nobody.group}"
    assert spool_warnings(d, nobody, None) == []
    assert spool_warnings(d, nobody, "tcpdump") == []


def test_root_only_spool_warns_for_both_users(base: Path) -> None:
    nobody = account("nobody")
    assert nobody is not None
    d = spool(base, 0o700, "root", "root")
    fix = (f"e.g. chown tcpdump:{nobody.group} {d} && chmod 2750 {d} (tcpdump's user writes, the setgid bit gives "
           f"its files the group {nobody.group}, which nobody reads; README: 'The spool')")
    assert spool_warnings(d, nobody, None) == [
        f"spool.dir {d}: user nobody (the service's) cannot read it: {d} has mode 0700, owner root, group root; {fix}",
        f"spool.dir {d}: user tcpdump (tcpdump's, after it opens the interface) cannot write it: {d} has mode 0700, "
        f"owner root, group root; {fix}, or run tcpdump with -Z root",
    ]


def test_a_closed_parent_blocks(base: Path) -> None:
    nobody = account("nobody")
    assert nobody is not None
    d = spool(base, 0o777, "root", "root")
    base.chmod(0o700)
    assert blocked(d, nobody, write=False) == base
    assert blocked(d, account("root") or nobody, write=True) is None  # root passes everything
    base.chmod(0o711)  # x is enough to pass
    assert blocked(d, nobody, write=True) is None


def test_group_member_reads_through_the_group(base: Path) -> None:
    tcpdump = account("tcpdump")
    assert tcpdump is not None
    d = spool(base, 0o2750, "root", tcpdump.group)
    assert blocked(d, tcpdump, write=False) is None
    assert blocked(d, tcpdump, write=True) == d


def test_missing_spool_and_tcpdump_user(base: Path) -> None:
    nobody = account("nobody")
    assert nobody is not None
    assert spool_warnings(base / "none", nobody, None) == []  # not made yet: the service says so at start
    d = spool(base, 0o2750, "tcpdump", nobody.group)
    assert spool_warnings(d, nobody, "no-such-user-here") == [
        f"spool.dir {d}: tcpdump's user no-such-user-here (capture.user) does not exist; create it or set "
        "capture.user to the user tcpdump runs as (-Z)"]
    assert os.path.isdir(d)
