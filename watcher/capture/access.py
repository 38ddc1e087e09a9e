"""May this user read (or write) that directory? The kernel's permission rule applied to a directory's
owner, group and mode for a named user (pwd, grp), so `pcapwatch check` can tell before the service
runs that tcpdump's user cannot write the spool or the service's user cannot read it.

Only the classic mode bits are judged (no ACLs, no capabilities other than root's); every ancestor
must let the user through (x), the directory itself must allow r-x (read) or -wx (write).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

# The user Debian's tcpdump switches to after opening the interface, unless told otherwise (-Z).
TCPDUMP_DEFAULT_USER = "tcpdump"
# The user pcapwatch.service runs as (systemd/pcapwatch.service's User=).
SERVICE_USER = "pcapwatch"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gids: frozenset[int]
    group: str  # the primary group's name


def account(name: str) -> Account | None:
    """The user `name` with every group it is in, or None when there is no such user."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    return Account(name, pw.pw_uid, frozenset(gids), _name(pw.pw_gid, True))


def current_account() -> Account:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return Account(name, uid, frozenset(os.getgroups()) | {os.getegid()}, _name(os.getegid(), True))


def _allows(st: os.stat_result, who: Account, bits: int) -> bool:
    """Whether mode bits `bits` (a combination of 4 r, 2 w, 1 x) are granted to `who`."""
    if who.uid == 0:
        return True
    mode = st.st_mode
    if st.st_uid == who.uid:
        have = (mode >> 6) & 7
    elif st.st_gid in who.gids:
        have = (mode >> 3) & 7
    else:
        have = mode & 7
    return have & bits == bits


def _name(uid: int, group: bool = False) -> str:
    try:
        return grp.getgrgid(uid).gr_name if group else pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def describe(path: Path) -> str:
    """'mode 2750, owner tcpdump, group pcapwatch' of `path`."""
    st = path.stat()
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {_name(st.st_uid)}, group {_name(st.st_gid, True)}"


def blocked(path: Path, who: Account, write: bool) -> Path | None:
    """The first directory on the way to `path` (itself included) that keeps `who` from listing and
    reading it (write: from creating files in it), or None when nothing does. `path` must exist."""
    path = Path(os.path.abspath(path))
    for parent in reversed(path.parents):
        if not _allows(parent.stat(), who, 1):
            return parent
    return None if _allows(path.stat(), who, 3 if write else 5) else path


def spool_warnings(spool: Path, service: Account, tcpdump_user: str | None) -> list[str]:
    """One line per problem of an existing spool directory for the service's user and tcpdump's (capture.user;
    None: tcpdump's default, TCPDUMP_DEFAULT_USER, not judged where no such user exists: that
    tcpdump does not switch), each with what to do."""
    explicit = tcpdump_user is not None
    tcpdump_user = tcpdump_user or TCPDUMP_DEFAULT_USER
    tcpdump = account(tcpdump_user)
    fix = (f"e.g. chown {tcpdump_user}:{service.group} {spool} && chmod 2750 {spool} (tcpdump's user writes, the "
           f"setgid bit gives its files the group {service.group}, which {service.name} reads; README: 'The spool')")
    if not spool.is_dir():  # not yet made: the service says so at start, with the same fix
        return []
    out = []
    where = blocked(spool, service, write=False)
    if where is not None:
        out.append(f"spool.dir {spool}: user {service.name} (the service's) cannot read it: {where} has "
                   f"{describe(where)}; {fix}")
    if tcpdump is None:
        if explicit:
                out.append(f"spool.dir {spool}: tcpdump's user {tcpdump_user} (capture.user) does not exist; create it "
                       "or set capture.user to the user tcpdump runs as (-Z)")
    else:
        where = blocked(spool, tcpdump, write=True)
        if where is not None:
            out.append(f"spool.dir {spool}: user {tcpdump.name} (tcpdump's, after it opens the interface) cannot "
                       f"write it: {where} has {describe(where)}; {fix}, or run tcpdump with -Z root")
    return out
