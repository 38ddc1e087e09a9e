"""`pcapwatch demo` (what scripts/run shows a newcomer): a local server, tcpdump supervised by the
service (`--capture`'s machinery) and the real service, every request recorded exactly."""

from __future__ import annotations

import json
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers.env import REPO, missing, need_root, need_tool


def test_demo_records_every_request(tmp_path: Path) -> None:
    need_root()
    need_tool("tcpdump", "curl")
    config = tmp_path / "pcapwatch.yaml"
    config.write_text("spool: {dir: spool}\nstate: {dir: state}\noutputs: [{name: stdout, type: jsonl, path: '-'}]\n")
    p = subprocess.run([sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())",
                        "demo", "-c", str(config)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stdout.splitlines()]
    got = sorted((r["method"], r["uri"], r["status_code"], r["response_body_len"]) for r in records)
    assert got == sorted([
        ("GET", "/", 200, 41), ("GET", "/big.bin", 200, 100_000), ("HEAD", "/big.bin", 200, 0),
        ("GET", "/api/stream", 200, 45), ("POST", "/api/items", 201, 16), ("GET", "/old", 301, 0),
        ("GET", "/nocontent", 204, 0), ("GET", "/cached", 304, 0), ("GET", "/missing?token=<redacted>", 404, 10),
        ("GET", "/?pipelined=0", 200, 41), ("GET", "/?pipelined=1", 200, 41), ("GET", "/?pipelined=2", 200, 41),
        ("GET", "/?last", 200, 41), ("GET", "/?from=curl", 200, 41)])
    assert len({r["event_id"] for r in records}) == len(records)
    assert "14 of 14 transactions recorded" in p.stderr
    assert "Traceback" not in p.stderr
    assert (tmp_path / "state" / "demo" / "checkpoint.json").exists()


def test_demo_lays_out_the_spool_as_the_readme_says(tmp_path: Path) -> None:
    """A spool the demo makes belongs to Debian's tcpdump user, setgid 2750: the tcpdump command it
    suggests next works as it is, and `check` has nothing to warn about."""
    need_root()
    need_tool("tcpdump", "curl")
    try:
        pwd.getpwnam("tcpdump")
    except KeyError:
        missing("Debian's tcpdump user is needed")
    base = Path(tempfile.mkdtemp(prefix="pcapwatch-demo-", dir="/tmp"))  # a path user tcpdump may pass
    base.chmod(0o755)
    try:
        config = base / "pcapwatch.yaml"
        config.write_text("spool: {dir: spool}\nstate: {dir: state}\noutputs: [{name: stdout, type: jsonl, "
                          "path: '-'}]\n")
        cli = [sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
        p = subprocess.run([*cli, "demo", "-c", str(config)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        spool = base / "spool"
        st = spool.stat()
        assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == ("tcpdump", 0o2750)
        assert (f"Next: point tcpdump at {spool} (tcpdump -i eth0 -w {spool}/cap.pcap -C 100 -W 10 -U 'tcp port 80'; "
                "its user must be able to write there: README, 'The spool') and run `pcapwatch run`") in p.stderr
        checked = subprocess.run([*cli, "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
        assert (checked.returncode, checked.stderr) == (0, "")
    finally:
        shutil.rmtree(base)
