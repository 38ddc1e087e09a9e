"""The systemd integration, checked with systemd's own tools and by running what the units run.

No systemd runs as PID 1 here, so: `systemd-analyze verify` and `security --offline` judge the
unit files in a throw-away root; `systemd-sysusers` and `systemd-tmpfiles` create the users and
directories in such a root; then tcpdump runs exactly as pcapwatch-capture.service would start it
(its ExecStart=, Environment= defaults, User=, capabilities, UMask=, NoNewPrivileges=, ProcSubset=
taken from the unit file) capturing curl on loopback, and `pcapwatch read` and `pcapwatch run` run
as the pcapwatch user, with a stand-in for systemd's notify socket; last, what `systemctl reload`
(SIGHUP) does to the command line's overrides.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.env import REPO, missing, need_root, need_tool, read_records

SYSTEMD = REPO / "systemd"
UNITS = ("pcapwatch.service", "pcapwatch-capture.service")
README = REPO / "README.md"
SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
SPOOL = "/var/spool/pcapwatch"
# `systemd-analyze security` exposure (0 best, 10 worst), as measured with systemd 252: any
# weakening fails. Every check a unit does not pass is accepted below, with the reason.
EXPOSURE_LIMIT = {"pcapwatch.service": 0.2, "pcapwatch-capture.service": 1.3}
ACCEPTED = {
    "pcapwatch.service": {
        "RootDirectory=/RootImage=": "runs from the host's /usr (a venv in /opt)",
        "RestrictAddressFamilies=~AF_UNIX": "journald's stdout stream and the sd_notify socket",
        "ProcSubset=": "the inotify limits in /proc/sys/fs/inotify stay readable",
        "DeviceAllow=": "ProtectClock= itself allows reading the RTC",
    },
    "pcapwatch-capture.service": {
        "RootDirectory=/RootImage=": "runs the host's tcpdump",
        "RestrictAddressFamilies=~AF_UNIX": "user lookups",
        "RestrictAddressFamilies=~AF_PACKET": "the capture",
        "RestrictAddressFamilies=~AF_NETLINK": "interface queries",
        "AmbientCapabilities=": "CAP_NET_RAW is the point",
        "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)": "CAP_NET_RAW is the point",
        "PrivateNetwork=": "it captures the host's network",
        "PrivateUsers=": "CAP_NET_RAW must count in the host's user namespace",
        "SystemCallFilter=~@privileged": "tcpdump calls setuid(getuid()) and setgid(getgid())",
        "DeviceAllow=": "ProtectClock= itself allows reading the RTC",
        "UMask=": "group pcapwatch must read the files",
    },
}
CAPTURE_REQUESTS = 4
BLOB_BYTES = 300_000  # 4 responses of this size fill more than one 1 MB (-C 1) file: a rotation
DEADLINE = 20.0
STABLE_SECONDS = 1.5


# Unit files ---------------------------------------------------------------------------------------

def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file: key -> every value assigned, in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(unit: str) -> dict[str, list[str]]:
    return parse_unit(SYSTEMD / unit)["Service"]


def one(settings: dict[str, list[str]], key: str) -> str:
    (value,) = settings[key]
    return value


def exec_paths(unit: str) -> list[str]:
    """The programs of every Exec*= line (systemd's -@:+! prefixes removed)."""
    return [shlex.split(v)[0].lstrip("-@:+!|") for k, vs in service(unit).items() if k.startswith("Exec")
            for v in vs]


def environment(lines: list[str]) -> dict[str, str]:
    """KEY=VALUE assignments as in Environment= and environment files (quotes removed)."""
    env: dict[str, str] = {}
    for line in lines:
        for word in shlex.split(line, comments=True):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's expansion of an Exec line: `${X}` is replaced inside a word, a word that is `$X`
    becomes the value split at whitespace (systemd.service(5), "Command lines")."""
    words: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words.extend(env[whole.group(1)].split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    return words


def host_unit_dir() -> Path:
    for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (d / "sysinit.target").exists():
            return d
    missing("systemd's unit directory (sysinit.target) is not installed")
    raise AssertionError  # unreachable


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root holding systemd's own units (for sysinit.target and the like), ours in
    /etc/systemd/system, and a stub at the path of each program the units run: verify needs
    them to exist, and /usr/local/bin/pcapwatch only exists after the README's install."""
    need_tool("systemd-analyze")
    root = tmp_path / "root"
    shutil.copytree(host_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(SYSTEMD / unit, root / "etc/systemd/system" / unit)
        for program in exec_paths(unit):
            stub = root / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    return root


def test_units_verify_clean(unit_root: Path) -> None:
    p = analyze("verify", f"--root={unit_root}", *UNITS)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_verify_here_does_catch_mistakes(unit_root: Path) -> None:
    """The check above is not vacuous: the same set-up reports a bad key and a missing program."""
    unit = unit_root / "etc/systemd/system/pcapwatch.service"
    unit.write_text(unit.read_text().replace("UMask=0077", "UMask=0077\nProtectSytem=strict"))
    (unit_root / "usr/bin/tcpdump").unlink()
    p = analyze("verify", f"--root={unit_root}", *UNITS)
    assert p.returncode == 1
    assert "Unknown key 'ProtectSytem' in section [Service]" in p.stderr
    assert "pcapwatch-capture.service: Command /usr/bin/tcpdump is not executable" in p.stderr


def test_programs_are_where_the_units_say() -> None:
    """Debian's tcpdump and kill are at the units' paths; pcapwatch is where the README links it."""
    need_tool("tcpdump")
    assert exec_paths("pcapwatch.service") == ["/usr/local/bin/pcapwatch", "/bin/kill"]
    assert exec_paths("pcapwatch-capture.service") == ["/usr/bin/tcpdump"]
    assert os.access("/usr/bin/tcpdump", os.X_OK) and os.access("/bin/kill", os.X_OK)
    assert "ln -sf /opt/pcapwatch/bin/pcapwatch /usr/local/bin/pcapwatch" in readme_section()


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure(unit: str) -> None:
    need_tool("systemd-analyze")
    text = analyze("security", "--offline=yes", SYSTEMD / unit)
    assert text.returncode == 0, text.stderr
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", text.stdout)
    assert m, text.stdout
    assert float(m.group(1)) <= EXPOSURE_LIMIT[unit]
    p = analyze("security", "--offline=yes", "--json=short", SYSTEMD / unit)
    failing = {c["name"] for c in json.loads(p.stdout) if c["exposure"]}
    assert failing <= set(ACCEPTED[unit]), failing - set(ACCEPTED[unit])


def test_readme_drop_in_opens_the_network(unit_root: Path) -> None:
    """The shipped drop-in for network outputs, installed where the README puts it, does what it
    says, and nothing else."""
    shipped = SYSTEMD / "pcapwatch.service.d/network.conf.example"
    assert ("install -D -m 0644 systemd/pcapwatch.service.d/network.conf.example \\\n"
            "    /etc/systemd/system/pcapwatch.service.d/network.conf\n") in readme_section()
    dropin = unit_root / "etc/systemd/system/pcapwatch.service.d/network.conf"
    dropin.parent.mkdir()
    shutil.copy(shipped, dropin)
    p = analyze("verify", f"--root={unit_root}", "pcapwatch.service")
    assert (p.returncode, p.stderr) == (0, "")
    p = analyze("security", "--offline=yes", "--json=short", f"--root={unit_root}", "pcapwatch.service")
    failing = {c["name"] for c in json.loads(p.stdout) if c["exposure"]}
    assert failing - set(ACCEPTED["pcapwatch.service"]) == {
        "PrivateNetwork=", "IPAddressDeny=", "RestrictAddressFamilies=~AF_(INET|INET6)"}


def test_journald_rate_limit_is_lifted() -> None:
    """Records go to stdout: journald's default limit (10,000 per 30 s, ~333/s) would drop them."""
    s = service("pcapwatch.service")
    assert s["LogRateLimitIntervalSec"] == ["0"]
    assert "about 333 records/s" in (SYSTEMD / "pcapwatch.service").read_text()


def test_unit_comments_name_the_readme_paths() -> None:
    """Where a shipped file says it is installed is where the README installs it."""
    section = readme_section()
    for path in SYSTEMD.rglob("*"):
        if path.is_file():
            for dest in re.findall(r"installed as (/\S+?)[,;.]?(?:\s|$)", path.read_text()):
                assert dest in section, (path, dest)
    assert "pcapwatch-capture@" not in (REPO / "watcher/capture/tcpdump.py").read_text()


def logrotate_state(tmp_path: Path) -> Path:
    """A root-owned copy of the shipped logrotate file whose paths point into tmp_path."""
    logs = tmp_path / "log"
    logs.mkdir()
    conf = tmp_path / "pcapwatch.logrotate"
    text = (SYSTEMD / "logrotate.d/pcapwatch").read_text()
    assert "/var/log/pcapwatch/*.jsonl {" in text
    conf.write_text(text.replace("/var/log/pcapwatch/", f"{logs}/").replace("su pcapwatch pcapwatch", "su root root"))
    conf.chmod(0o644)
    return logs


def test_logrotate_file(tmp_path: Path) -> None:
    """logrotate accepts the shipped file (-d: debug, changes nothing; its paths moved into
    tmp_path) and would rotate a jsonl output, then run the reload; the README installs it."""
    need_tool("logrotate")
    assert "install -D -m 0644 systemd/logrotate.d/pcapwatch /etc/logrotate.d/pcapwatch" in readme_section()
    logs = logrotate_state(tmp_path)  # user pcapwatch may not exist here: its `su` is root's
    (logs / "http.jsonl").write_text('{"a": 1}\n')
    state = tmp_path / "state"
    p = subprocess.run(["logrotate", "-d", "-f", "-s", state, tmp_path / "pcapwatch.logrotate"],
                       capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "error" not in out.lower()
    assert f"renaming {logs}/http.jsonl to {logs}/http.jsonl.1" in out
    assert "systemctl reload pcapwatch" in out


def test_capture_defaults_file_matches_the_unit() -> None:
    """/etc/default/pcapwatch-capture as shipped changes nothing: it spells out the unit's defaults."""
    s = service("pcapwatch-capture.service")
    assert s["EnvironmentFile"] == ["-/etc/default/pcapwatch-capture"]
    defaults = environment(s["Environment"])
    assert defaults == {"IFACE": "any", "FILE_MB": "100", "FILES": "10", "SNAPLEN": "0",
                        "FILTER": "tcp port 80", "TCPDUMP_OPTS": ""}
    assert environment((SYSTEMD / "default/pcapwatch-capture").read_text().splitlines()) == defaults
    assert expand(one(s, "ExecStart"), defaults) == [
        "/usr/bin/tcpdump", "-i", "any", "-w", f"{SPOOL}/cap.pcap", "-C", "100", "-W", "10", "-s", "0", "-U",
        "-Z", "pcapcap", "tcp", "port", "80"]
    assert one(s, "ReadWritePaths") == SPOOL == one(service("pcapwatch.service"), "ReadOnlyPaths")


# README -------------------------------------------------------------------------------------------

def readme_section() -> str:
    text = README.read_text()
    start = text.index("\n## Install as a service\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_readme_installs_every_shipped_file() -> None:
    section = readme_section()
    shipped = sorted(str(p.relative_to(REPO)) for p in SYSTEMD.rglob("*") if p.is_file())
    assert shipped == ["systemd/default/pcapwatch-capture", "systemd/logrotate.d/pcapwatch",
                       "systemd/pcapwatch-capture.service", "systemd/pcapwatch.service",
                       "systemd/pcapwatch.service.d/network.conf.example", "systemd/sysusers.d/pcapwatch.conf",
                       "systemd/tmpfiles.d/pcapwatch.conf"]
    for path in shipped:
        assert path in section
    assert "systemctl enable --now pcapwatch-capture.service pcapwatch.service" in section
    assert one(service("pcapwatch.service"), "ExecStart") == \
        "/usr/local/bin/pcapwatch run -c /etc/pcapwatch/pcapwatch.yaml"


def readme_config(dest: Path) -> Path:
    """/etc/pcapwatch/pcapwatch.yaml as the README's sed makes it from conf/pcapwatch.yaml, at `dest`."""
    conf = REPO / "conf/pcapwatch.yaml"
    if not conf.exists():
        missing(f"{conf} is missing (the README installs it)")
    (sed,) = [line for line in readme_section().replace("\\\n", "").splitlines() if line.startswith("sed ")]
    words = shlex.split(sed)
    assert words[-2:] == [">", "/etc/pcapwatch/pcapwatch.yaml"] and words[-3] == "conf/pcapwatch.yaml"
    with dest.open("wb") as out:
        subprocess.run([*words[:-3], str(conf)], stdout=out, check=True, timeout=30)
    return dest


def test_readme_config_is_conf_with_system_paths(tmp_path: Path) -> None:
    """The README's sed turns conf/pcapwatch.yaml into the /etc one: only the two dirs change."""
    conf = REPO / "conf/pcapwatch.yaml"
    etc = readme_config(tmp_path / "pcapwatch.yaml")

    def effective(path: Path) -> dict[str, Any]:
        p = subprocess.run([*PCAPWATCH, "check", "-c", str(path)], capture_output=True, text=True, timeout=60)
        assert (p.returncode, p.stderr) == (0, "")
        loaded = yaml.safe_load(p.stdout)
        assert isinstance(loaded, dict)
        return loaded

    before, after = effective(conf), effective(etc)
    assert after["spool"]["dir"] == SPOOL and after["state"]["dir"] == "/var/lib/pcapwatch"
    for c in (before, after):
        del c["spool"]["dir"], c["state"]["dir"]
    assert after == before


# Users and directories ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


@dataclass(frozen=True)
class SysRoot:
    path: Path
    users: dict[str, Account]
    groups: dict[str, int]

    @property
    def spool(self) -> Path:
        return self.path / SPOOL.lstrip("/")


def make_sys_root() -> SysRoot:
    """A root laid out as the README's install does it, by systemd-sysusers and systemd-tmpfiles.
    The host's passwd and group are copied in first, so the ids chosen are free on the host too.
    It is under /tmp with mode 0755, since the unprivileged users must reach the spool inside."""
    need_tool("systemd-sysusers", "systemd-tmpfiles")
    path = Path(tempfile.mkdtemp(prefix="pcapwatch-sysroot-", dir="/tmp"))
    try:
        return _lay_out(path)
    except BaseException:
        shutil.rmtree(path)
        raise


def _lay_out(path: Path) -> SysRoot:
    path.chmod(0o755)
    (path / "etc").mkdir(mode=0o755)
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", path / "etc" / name)
    for kind in ("sysusers.d", "tmpfiles.d"):
        (path / "etc" / kind).mkdir()
        shutil.copy(SYSTEMD / kind / "pcapwatch.conf", path / "etc" / kind / "pcapwatch.conf")
    # Without file arguments: all of the root's configuration, which is ours only.
    for cmd in (["systemd-sysusers", f"--root={path}"], ["systemd-tmpfiles", f"--root={path}", "--create"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    users = {f[0]: Account(int(f[2]), int(f[3])) for f in
             (line.split(":") for line in (path / "etc/passwd").read_text().splitlines())}
    groups = {f[0]: int(f[2]) for f in
              (line.split(":") for line in (path / "etc/group").read_text().splitlines())}
    return SysRoot(path, users, groups)


@pytest.fixture(scope="module")
def sys_root() -> Iterator[SysRoot]:
    need_root()
    root = make_sys_root()
    try:
        yield root
    finally:
        shutil.rmtree(root.path)


def test_sysusers_and_tmpfiles(sys_root: SysRoot) -> None:
    new = {line.split(":")[0]: line.split(":", 2)[2] for line in
           (sys_root.path / "etc/passwd").read_text().splitlines() if line.startswith(("pcapwatch:", "pcapcap:"))}
    pw, cap = sys_root.users["pcapwatch"], sys_root.users["pcapcap"]
    assert new == {
        "pcapwatch": f"{pw.uid}:{pw.gid}:pcapwatch HTTP transaction log:/var/lib/pcapwatch:/usr/sbin/nologin",
        "pcapcap": f"{cap.uid}:{cap.gid}:pcapwatch packet capture:/var/spool/pcapwatch:/usr/sbin/nologin",
    }
    assert pw.gid == sys_root.groups["pcapwatch"] and cap.gid == sys_root.groups["pcapcap"]
    host_ids = {line.split(":")[2] for line in Path("/etc/passwd").read_text().splitlines()}
    assert str(pw.uid) not in host_ids and str(cap.uid) not in host_ids
    # pcapcap is not in group pcapwatch: the setgid spool alone gives its files that group.
    group_line = next(line for line in (sys_root.path / "etc/group").read_text().splitlines()
                      if line.startswith("pcapwatch:"))
    assert group_line == f"pcapwatch:x:{pw.gid}:"
    spool = sys_root.spool.stat()
    state = (sys_root.path / "var/lib/pcapwatch").stat()
    assert (oct(spool.st_mode & 0o7777), spool.st_uid, spool.st_gid) == ("0o2750", cap.uid, pw.gid)
    assert (oct(state.st_mode & 0o7777), state.st_uid, state.st_gid) == ("0o700", pw.uid, pw.gid)


# tcpdump as pcapwatch-capture.service runs it -----------------------------------------------------

class Blobs(BaseHTTPRequestHandler):
    """GET anything: BLOB_BYTES bytes."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(BLOB_BYTES))
        self.end_headers()
        self.wfile.write(b"x" * BLOB_BYTES)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Blobs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def as_unit_user(settings: dict[str, list[str]], root: SysRoot) -> list[str]:
    """setpriv arguments for the unit's User=, Group=, capabilities and NoNewPrivileges=, the
    names resolved in the test's root."""
    def caps(key: str) -> str:
        names = " ".join(settings.get(key, [""])).split()
        return ",".join(["-all", *("+" + n.removeprefix("CAP_").lower() for n in names)])

    uid, gid = root.users[one(settings, "User")].uid, root.groups[one(settings, "Group")]
    args = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            f"--inh-caps={caps('AmbientCapabilities')}", f"--ambient-caps={caps('AmbientCapabilities')}",
            f"--bounding-set={caps('CapabilityBoundingSet')}"]
    if one(settings, "NoNewPrivileges") == "yes":
        args.append("--no-new-privs")
    return args


def with_proc_subset(settings: dict[str, list[str]], command: list[str]) -> list[str]:
    """Run `command` with /proc as ProcSubset=pid and ProtectProc= make it (a private mount)."""
    opts = f"subset={one(settings, 'ProcSubset')},hidepid={one(settings, 'ProtectProc')}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t proc -o {opts} proc /proc && exec "$@"', "sh", *command]


def wait_for_line(stream: Any, needle: bytes, deadline: float) -> bytes:
    seen = b""
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in {seen!r}"
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream.fileno(), 4096)
            assert chunk, f"stream ended without {needle!r}: {seen!r}"
            seen += chunk
    return seen


def read_lines(stream: Any, count: int, deadline: float) -> list[bytes]:
    """`count` complete lines from a pipe, waiting at most until `deadline`."""
    buf = b""
    while buf.count(b"\n") < count:
        buf += wait_for_line(stream, b"\n", deadline)
    lines = buf.split(b"\n")
    assert len(lines) == count + 1 and lines[-1] == b"", f"more output than {count} lines: {buf!r}"
    return lines[:-1]


def wait_until_stable(spool: Path, deadline: float) -> None:
    """Until the capture files have not grown for STABLE_SECONDS: tcpdump has written every packet.
    The kernel hands tcpdump a block of packets when it fills or after libpcap's 1 s timeout, so
    a shorter quiet spell proves nothing, and SIGTERM before it loses the packets not yet handed."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < STABLE_SECONDS:
        assert time.monotonic() < deadline, "capture files kept growing"
        size = sum(p.stat().st_size for p in spool.iterdir())
        if size != last:
            last, since = size, time.monotonic()
        time.sleep(0.1)


@dataclass(frozen=True)
class Capture:
    root: SysRoot
    port: int
    records: list[dict[str, Any]]
    caps: dict[str, str]
    stderr: str


@pytest.fixture(scope="module")
def capture(sys_root: SysRoot, http_server: int) -> Capture:
    """curl on loopback captured by tcpdump started the way pcapwatch-capture.service starts it."""
    need_tool("tcpdump", "curl", "setpriv", "unshare")
    settings = service("pcapwatch-capture.service")
    env = environment(settings["Environment"])
    env.update(IFACE="lo", FILE_MB="1", FILES="3", FILTER=f"tcp port {http_server}")
    command = [w.replace(SPOOL, str(sys_root.spool)) for w in expand(one(settings, "ExecStart"), env)]
    command = with_proc_subset(settings, as_unit_user(settings, sys_root) + command)
    deadline = time.monotonic() + DEADLINE
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            umask=int(one(settings, "UMask"), 8))
    try:
        err = wait_for_line(proc.stderr, b"listening on lo", deadline)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caps = dict(re.findall(r"^(Cap\w+|NoNewPrivs|Uid|Gid):\s+(.*)$", status, re.M))
        for i in range(CAPTURE_REQUESTS):
            p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                f"http://127.0.0.1:{http_server}/blob?i={i}"], capture_output=True, text=True,
                               timeout=20)
            assert (p.stdout, p.stderr) == ("200", "")
        wait_until_stable(sys_root.spool, deadline)
        proc.send_signal(signal.SIGTERM)  # what systemctl stop sends
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        err += proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    records, result, rerr = read_records(sys_root.spool)
    assert (result.files_failed, rerr) == (0, "")
    return Capture(sys_root, http_server, records, caps, err.decode())


def test_capture_runs_unprivileged_with_net_raw_only(capture: Capture) -> None:
    cap = capture.root.users["pcapcap"]
    net_raw = f"{1 << 13:016x}"  # CAP_NET_RAW is capability 13
    assert capture.caps == {"Uid": f"{cap.uid}\t{cap.uid}\t{cap.uid}\t{cap.uid}",
                            "Gid": f"{cap.gid}\t{cap.gid}\t{cap.gid}\t{cap.gid}",
                            "CapInh": net_raw, "CapPrm": net_raw, "CapEff": net_raw, "CapBnd": net_raw,
                            "CapAmb": net_raw, "NoNewPrivs": "1"}
    assert "0 packets dropped by kernel" in capture.stderr


def test_capture_files_belong_to_group_pcapwatch(capture: Capture) -> None:
    spool = capture.root.spool
    cap, pw = capture.root.users["pcapcap"], capture.root.users["pcapwatch"]
    files = sorted(p.name for p in spool.iterdir())
    assert files == ["cap.pcap0", "cap.pcap1"]  # -C 1 rotated once; -W 3 names them cap.pcapN
    for name in files:
        st = (spool / name).stat()
        assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == ("0o640", cap.uid, pw.gid)


def test_capture_records(capture: Capture) -> None:
    got = [(r["method"], r["uri"], r["status_code"], r["response_body_len"], r["request_body_len"], r["flags"],
            r["anomalies"], r["reason"], r["host"]) for r in capture.records]
    assert got == [("GET", f"/blob?i={i}", 200, BLOB_BYTES, 0, [], [], None, f"127.0.0.1:{capture.port}")
                   for i in range(CAPTURE_REQUESTS)]


def test_pcapwatch_user_reads_what_others_cannot(capture: Capture) -> None:
    """User pcapwatch, with its own group and nothing else, reads the ring through the group bits;
    nobody else can even list the spool."""
    reader = as_unit_user(service("pcapwatch.service"), capture.root)
    p = subprocess.run([*reader, *PCAPWATCH, "read", str(capture.root.spool)], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert (p.returncode, p.stderr) == (0, "")
    assert [json.loads(line) for line in p.stdout.splitlines()] == capture.records
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for argv in (["ls", str(capture.root.spool)], ["cat", str(capture.root.spool / "cap.pcap0")]):
        p = subprocess.run([*nobody, *argv], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "Permission denied" in p.stderr


# pcapwatch run as pcapwatch.service runs it, talking to a stand-in for systemd ---------------------

def datagrams(sock: socket.socket, until: bytes, deadline: float) -> list[bytes]:
    """Notifications received until one starting with `until`."""
    got: list[bytes] = []
    while not (got and got[-1].startswith(until)):
        left = deadline - time.monotonic()
        assert left > 0, f"no {until!r} after {got!r}"
        sock.settimeout(left)
        got.append(sock.recv(4096))
    return got


def test_run_as_the_service_user_notifies_systemd(capture: Capture) -> None:
    """`pcapwatch run` as user pcapwatch (no capabilities, its own group, UMask=, the watchdog
    armed) reads the ring, says READY=1, feeds the watchdog, and reloads and stops as systemd
    expects; its checkpoint lands in the tmpfiles-made state dir."""
    root = capture.root
    pw = root.users["pcapwatch"]
    settings = service("pcapwatch.service")
    state = root.path / "var/lib/pcapwatch"
    run_dir = root.path / "run"
    run_dir.mkdir(exist_ok=True)
    # The README's config, its system paths moved into the test's root.
    config = root.path / "etc/pcapwatch/pcapwatch.yaml"
    config.parent.mkdir(exist_ok=True)
    readme_config(config)
    config.write_text(config.read_text().replace(SPOOL, str(root.spool)).replace("/var/lib/pcapwatch", str(state)))
    address = str(run_dir / f"notify-{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    os.chmod(address, 0o666)  # as systemd's: anyone may send to it
    env = {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    command = [*as_unit_user(settings, root), *PCAPWATCH, "run", "-c", str(config)]
    deadline = time.monotonic() + DEADLINE
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/",
                            umask=int(one(settings, "UMask"), 8))
    try:
        assert datagrams(sock, b"READY=1", deadline) == [f"READY=1\nSTATUS=watching {root.spool}".encode()]
        assert proc.stdout is not None
        records = [json.loads(line) for line in read_lines(proc.stdout, CAPTURE_REQUESTS, deadline)]
        assert [(r["uri"], r["status_code"], r["response_body_len"]) for r in records] == \
            [(r["uri"], r["status_code"], r["response_body_len"]) for r in capture.records]
        assert datagrams(sock, b"WATCHDOG=1", deadline)[-1] == b"WATCHDOG=1"  # every second (2 s / 2)
        proc.send_signal(signal.SIGHUP)  # ExecReload=
        seen = [d for d in datagrams(sock, b"READY=1", deadline) if d != b"WATCHDOG=1"]
        assert len(seen) == 2 and re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading", seen[0])
        assert seen[1] == b"READY=1\nSTATUS=reloaded"
        proc.send_signal(signal.SIGTERM)
        seen = [d for d in datagrams(sock, b"STOPPING=1", deadline) if d != b"WATCHDOG=1"]
        assert seen == [b"STOPPING=1\nSTATUS=stopping"]
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode().splitlines()
        assert [line.split(":")[:2] for line in log] == [["pcapwatch", " info"]] * len(log), log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        sock.close()
        os.unlink(address)
    saved = [p for p in state.iterdir()]
    assert saved and all(p.stat().st_uid == pw.uid and p.stat().st_mode & 0o077 == 0 for p in saved)


def test_reload_keeps_command_line_overrides(capture: Capture, tmp_path: Path) -> None:
    """`systemctl reload` (SIGHUP) re-reads the config file; what the command line set instead
    (--spool, --state, --output) must stay in force. Fed one capture file before the reload and
    the next after it, every record belongs in the --output file and none on stdout."""
    spool, state, out_file = tmp_path / "spool", tmp_path / "state", tmp_path / "http.jsonl"
    spool.mkdir()
    shutil.copy(capture.root.spool / "cap.pcap0", spool / "cap.pcap0")
    first, _, _ = read_records(spool / "cap.pcap0")
    before = [r for r in first if not r["flags"]]  # complete within the first file
    assert 0 < len(before) < CAPTURE_REQUESTS
    command = [*PCAPWATCH, "run", "-c", str(REPO / "conf/pcapwatch.yaml"), "--spool", str(spool),
               "--state", str(state), "--output", str(out_file)]
    deadline = time.monotonic() + DEADLINE
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        while not out_file.exists() or out_file.read_bytes().count(b"\n") < len(before):
            assert time.monotonic() < deadline, "records of the first file never came"
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        log = wait_for_line(proc.stderr, b"reloaded", deadline)
        shutil.copy(capture.root.spool / "cap.pcap1", spool / ".incoming")
        os.rename(spool / ".incoming", spool / "cap.pcap1")
        stdout = b""
        while out_file.read_bytes().count(b"\n") + stdout.count(b"\n") < CAPTURE_REQUESTS:
            assert time.monotonic() < deadline, "records of the second file never came"
            if select.select([proc.stdout], [], [], 0.05)[0]:
                stdout += os.read(proc.stdout.fileno(), 65536)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        stdout += proc.stdout.read()
        log += proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    in_file = [json.loads(line)["uri"] for line in out_file.read_text().splitlines()]
    on_stdout = [json.loads(line)["uri"] for line in stdout.splitlines()]
    warnings = [line for line in log.decode().splitlines() if not line.startswith("pcapwatch: info:")]
    assert (in_file, on_stdout, warnings) == ([r["uri"] for r in capture.records], [], [])
