"""Packaging as a user meets it: the wheel `pip wheel` builds (PEP 517, pyproject.toml's build
system), installed into a fresh venv without extras: `--version`, `read` on a corpus capture (the
same records as the repo's own `read`), `check` on the shipped example; an output whose client
library is an extra not installed is refused with the pip command, and passes once `[all]` is in.
Then scripts/bootstrap.sh: what `scripts/run` installs starts no daemon.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.env import REPO, corpus, missing, read_records

TIMEOUT = 600


def _run(*cmd: str | Path, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=env,
                          check=False)


def _clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH (the test's own tree must not leak into the venv)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PCAPWATCH_CONFIG", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this tree installed, without extras."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"  # a copy: building writes build/ and *.egg-info beside setup.cfg
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                            "__pycache__", ".mypy_cache", ".ruff_cache", "bench"))
    wheels = tmp / "wheels"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, src, env=_clean_env())
    if built.returncode != 0:
        missing(f"pip wheel failed (no network for the build system?): {built.stderr.strip()[-300:]}")
    (wheel,) = wheels.glob("pcapwatch-*.whl")
    made = _run(sys.executable, "-m", "venv", tmp / "venv")
    assert made.returncode == 0, made.stderr
    py = tmp / "venv" / "bin" / "python"
    inst = _run(py, "-m", "pip", "install", "-q", wheel, env=_clean_env())
    if inst.returncode != 0:
        missing(f"installing the wheel's dependencies failed (no network?): {inst.stderr.strip()[-300:]}")
    return tmp / "venv"


def _pcapwatch(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(venv / "bin" / "pcapwatch", *args, cwd=cwd, env=_clean_env())


def test_wheel_without_extras_installs_the_core_only(venv: Path, tmp_path: Path) -> None:
    freeze = _run(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze", env=_clean_env()).stdout
    names = {line.split("==")[0].lower() for line in freeze.splitlines()}
    assert {"dpkt", "pyyaml", "pyinotify", "pcapwatch"} <= names
    assert not names & {"redis", "pyzmq", "prometheus-client", "prometheus_client", "confluent-kafka"}
    version = _pcapwatch(venv, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, "pcapwatch 0.1.0\n")


def test_wheel_installs_completion_and_man_page(venv: Path) -> None:
    """pip puts them under the prefix; the README's install section takes them from there (its venv
    is /opt/pcapwatch)."""
    readme = (REPO / "README.md").read_text().replace("\\\n    ", "")
    for rel in ("share/bash-completion/completions/pcapwatch", "share/man/man1/pcapwatch.1",
                "share/pcapwatch/pcapwatch.yaml"):
        src = REPO / ("conf/pcapwatch.yaml" if rel.endswith(".yaml") else rel)
        assert (venv / rel).read_bytes() == src.read_bytes(), rel
        if not rel.endswith(".yaml"):
            assert f"install -D -m 0644 /opt/pcapwatch/{rel} /usr/local/{rel}\n" in readme, rel


def test_wheel_reads_a_corpus_capture_like_the_repo(venv: Path, tmp_path: Path) -> None:
    cap = corpus("local", "mix.pcap")
    expected, _, _ = read_records(cap)
    done = _pcapwatch(venv, "read", cap, "--stats", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(expected) > 0


def test_wheel_checks_the_packaged_example(venv: Path, tmp_path: Path) -> None:
    done = _pcapwatch(venv, "check", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    example = venv / "share" / "pcapwatch" / "pcapwatch.yaml"
    assert done.stdout.splitlines()[0] == (f"# {example}: valid; effective configuration (defaults filled in, "
                                           "paths absolute)")


def test_an_output_whose_extra_is_missing_is_refused_then_passes_with_all(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "redis.yaml"
    config.write_text("outputs:\n  - name: stream\n    type: redis\n")
    refused = _pcapwatch(venv, "check", "-c", config, cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (f"{config}:3: outputs[0].type: found 'redis', whose client library redis is not "
                              "installed; run pip install 'pcapwatch[redis]' (or remove this output)\n")
    run = _pcapwatch(venv, "run", "-c", config, "--spool", tmp_path, "--state", tmp_path, cwd=tmp_path)
    assert (run.returncode, run.stderr) == (2, refused.stderr)
    (wheel,) = (venv.parent / "wheels").glob("pcapwatch-*.whl")
    inst = _run(venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[all]", env=_clean_env())
    if inst.returncode != 0:
        missing(f"installing [all] failed (no network?): {inst.stderr.strip()[-300:]}")
    passed = _pcapwatch(venv, "check", "-c", config, cwd=tmp_path)
    assert passed.returncode == 0, passed.stderr
    assert "outputs:\n- name: stream\n  type: redis\n" in passed.stdout


def _debs(name: str) -> list[str]:
    text = (REPO / "scripts" / "bootstrap.sh").read_text()
    m = re.search(rf"^{name}=\(([^)]*)\)$", text, re.M)
    assert m, name
    return m.group(1).split()


def test_scripts_run_installs_no_daemon() -> None:
    """The run command's Debian packages: exactly tcpdump, curl and python3-venv, and none ships a
    systemd unit or an init script (checked on the installed packages' file lists); the test
    command's include them."""
    run, test = _debs("RUN_DEBS"), _debs("TEST_DEBS")
    assert run == ["tcpdump", "curl", "python3-venv"]
    assert set(run) <= set(test)
    if shutil.which("dpkg") is None:
        missing("dpkg is not installed")
    for deb in run:
        listed = _run("dpkg", "-L", deb)
        if listed.returncode != 0:
            missing(f"{deb} is not installed: {listed.stderr.strip()}")
        units = [f for f in listed.stdout.splitlines()
                 if re.search(r"/systemd/system/|/init\.d/", f) and not f.endswith(("/system", "/init.d"))]
        assert units == [], f"{deb} ships a daemon: {units}"
    for script, mode in (("run", "run"), ("test", "test")):
        assert f"BOOTSTRAP_MODE={mode} source" in (REPO / "scripts" / script).read_text()
