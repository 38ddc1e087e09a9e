"""`pcapwatch check` as a user runs it: the shipped default is valid and printed whole; the compiled rules
follow, one comment line each with their file and line; a broken file or rule gets its exact error lines
(file, line, key) on stderr and exit status 2, never a traceback; secrets are never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers.env import REPO

SCRIPT = Path(sys.executable).parent / "pcapwatch"
PCAPWATCH = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from watcher.cli import main; sys.exit(main())"]
SHIPPED = REPO / "conf" / "pcapwatch.yaml"


def check(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PCAPWATCH_CONFIG"}
    return subprocess.run([*PCAPWATCH, "check", *map(str, args)], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**base, **(env or {})})


def effective(stdout: str, source: Path) -> Any:
    header, _, body = stdout.partition("\n")
    assert header == f"# {source}: valid; effective configuration (defaults filled in, paths absolute)"
    return yaml.safe_load(body)


def test_shipped_default_is_valid_and_printed_whole(tmp_path: Path) -> None:
    p = check(cwd=tmp_path)  # no -c, no $PCAPWATCH_CONFIG: the repo's conf/pcapwatch.yaml, whatever the cwd
    assert (p.stderr, p.returncode) == ("", 0)
    assert effective(p.stdout, SHIPPED) == {
        "spool": {"dir": str(REPO / "spool"), "pattern": "*", "rescan_seconds": 2.0, "ring_bytes": None,
                  "lag_warn_fraction": 0.5},
        "state": {"dir": str(REPO / "state"), "checkpoint_seconds": 5.0},
        "outputs": [{"name": "stdout", "type": "jsonl", "default": True, "buffer": 10000, "required": False,
                     "path": "-", "format": "flat"}],
        "limits": {"max_connections": 100000, "idle_timeout": 300.0, "queue_batches": 16,
                   "pcap_connection_bytes": 2000000, "pcap_total_bytes": 64000000,
                   "gunzip_max_bytes": 17179869184, "gunzip_max_ratio": 200.0},
        "capture": {"file_mb": 100, "files": 10, "snaplen": 0, "bpf": "tcp", "user": None},
        "kafka": {"source": None, "group": "pcapwatch", "linktype": 1, "session_timeout_seconds": 10.0},
        "headers": {"request": ["host", "user-agent", "referer", "content-type", "content-length", "x-forwarded-for",
                                "authorization", "cookie"],
                    "response": ["content-type", "content-length", "location", "server", "set-cookie"]},
        "redact": {"headers": [], "query_params": ["token", "password", "passwd", "secret", "key", "api_key",
                                                   "apikey", "access_token", "auth", "signature", "sig"],
                   "secrets": [], "max_field_bytes": 4096},
        "routes": {"patterns": [], "max_routes": 1000},
        "replay": {"targets": []},
        "strings": "utf8",
        "rules_dir": None,
    }
    assert p.stdout.endswith("rules_dir: null\n# rules: none\n")


def test_environment_variable_and_relative_c(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "p.yaml"
    conf.parent.mkdir()
    conf.write_text("spool:\n  dir: spool\noutputs:\n  - {name: file, type: jsonl, path: ../out.jsonl}\n")
    by_env = check(cwd=REPO, env={"PCAPWATCH_CONFIG": str(conf)})
    by_c = check("-c", "etc/p.yaml", cwd=tmp_path)
    for p in (by_env, by_c):
        assert (p.stderr, p.returncode) == ("", 0)
        got = effective(p.stdout, conf)
        assert got["spool"]["dir"] == str(tmp_path / "etc" / "spool")
        assert got["outputs"] == [{"name": "file", "type": "jsonl", "default": True, "buffer": 10000,
                                   "required": False, "path": str(tmp_path / "out.jsonl"), "format": "flat"}]
        assert got["state"] == {"dir": "/var/lib/pcapwatch", "checkpoint_seconds": 5.0}


def test_broken_file_exact_lines_exit_2(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("spool:\n  dir: /x\n  rescan_second: 1\nlimits:\n  queue_batches: 0\n"
                    "outputs:\n  - {name: a, type: jsonl}\n  - {name: a, type: jsonl}\n")
    p = check("-c", conf, cwd=tmp_path)
    assert (p.stdout, p.returncode) == ("", 2)
    assert p.stderr.splitlines() == [
        f"{conf}:3: spool.rescan_second: found unknown key 'rescan_second', expected one of dir, pattern, "
        "rescan_seconds, ring_bytes, lag_warn_fraction; did you mean 'rescan_seconds'?",
        f"{conf}:5: limits.queue_batches: found 0 (a whole number), expected a whole number >= 1; correct the "
        "value, or delete the key to use the default (16)",
        f"{conf}:8: outputs[1].name: found 'a', expected a name no other output has (outputs[0] at line 7 is "
        "also 'a'); rename one of them",
    ]


def test_bad_yaml_and_missing_file_exit_2(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("spool:\n  dir: [a\nstate: {}\n")
    p = check("-c", "bad.yaml", cwd=tmp_path)
    assert (p.stdout, p.returncode) == ("", 2)
    assert p.stderr == ("bad.yaml:3:6: invalid YAML: while parsing a flow sequence (line 2), expected ',' or ']', "
                        "but got ':'\n")
    p = check("-c", tmp_path / "none.yaml", cwd=tmp_path)
    assert (p.stdout, p.stderr, p.returncode) == (
        "", f"{tmp_path / 'none.yaml'}: cannot read the configuration: No such file or directory\n", 2)


def test_help_documents_exit_status(tmp_path: Path) -> None:
    p = check("--help", cwd=tmp_path)
    assert (p.stderr, p.returncode) == ("", 0)
    assert ("exit status:\n  0  the configuration is valid; it is printed on stdout as YAML\n"
            "  2  bad command line, or the configuration is not valid: one line per problem\n"
            "     on stderr, nothing on stdout\n") in p.stdout


def test_rules_are_printed_compiled_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "p.yaml"
    conf.write_text("outputs:\n  - {name: stdout, type: jsonl}\n  - {name: tap, type: zmq, default: false}\n"
                    "redact:\n  secrets: [hunter22]\n"
                    "rules:\n  - name: server-errors\n    match: {status: 5xx, method: [GET, HEAD]}\n"
                    "    actions: {tag: [error], log: [tap, stdout]}\n    continue: true\n")
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "10-health.yaml").write_text(
        "rules:\n  # health checks\n  - name: health\n    match:\n      path: '^/healthz$'\n"
        "    actions:\n      drop: true\n")
    p = check("-c", conf, cwd=tmp_path)
    assert (p.stderr, p.returncode) == ("", 0)
    assert "hunter22" not in p.stdout
    got = effective(p.stdout, conf)
    assert got["redact"]["secrets"] == ["<redacted>"]
    assert got["rules_dir"] == str(tmp_path / "rules.d")
    assert p.stdout.splitlines()[-3:] == [
        "# rules, in order; the first that matches decides unless it continues: 2",
        f"#   1. server-errors: match status 5xx, method GET|HEAD; actions tag [error], log to [tap, stdout]; "
        f"then continue; at {conf}:7",
        f"#   2. health: match path ^/healthz$; actions drop; then stop; at {tmp_path}/rules.d/10-health.yaml:3",
    ]


def test_broken_rule_exact_lines_exit_2(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("rules:\n  - name: slow\n    match:\n      duration_ms: 500\n    actions:\n"
                    "      log: [stdot]\n")
    (tmp_path / "rules.d").mkdir()
    rule_file = tmp_path / "rules.d" / "x.yaml"
    rule_file.write_text("rules:\n  - name: slow\n    match: {stauts: 5xx}\n    actions: {tag: error}\n")
    p = check("-c", "bad.yaml", cwd=tmp_path)
    assert (p.stdout, p.returncode) == ("", 2)
    assert p.stderr.splitlines() == [
        "bad.yaml:4: rules[0].match.duration_ms: found 500 (a whole number), expected a comparison such as '>500', "
        "'<=100' or a range such as 100-500; quote it (YAML reads a leading > as a folded text block)",
        "bad.yaml:6: rules[0].actions.log[0]: found unknown output 'stdot', expected one of stdout; did you mean "
        "'stdout'?",
        f"{rule_file}:2: rules[0].name: found 'slow', expected a name no other rule has (rules[0] at bad.yaml:2 is "
        "also 'slow'); rename one of them",
        f"{rule_file}:3: rules[0].match.stauts: found unknown match key 'stauts', expected one of method, host, "
        "path, query, status, client, server, client_port, server_port, header, response_header, duration_ms, "
        "ttfb_ms, request_bytes, response_bytes, flags, anomalies; did you mean 'status'?",
    ]


def test_rule_naming_an_unknown_anomaly_or_flag_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "p.yaml"
    conf.write_text("rules:\n  - name: chunks\n    match:\n      anomalies: [obs_fold, bad_chunk_sise]\n"
                    "      flags: trunkated\n    actions: {tag: [odd]}\n")
    p = check("-c", conf, cwd=tmp_path)
    assert (p.stdout, p.returncode) == ("", 2)
    lines = p.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{conf}:4: rules[0].match.anomalies[1]: found 'bad_chunk_sise', expected one of "
                               "ambiguous_framing_chunked, ambiguous_framing_close, ")
    assert ", bad_chunk_size, bad_chunk_terminator, " in lines[0]
    assert lines[0].endswith(", transfer_encoding_not_chunked, whitespace_line; did you mean 'bad_chunk_size'?")
    assert lines[1] == (f"{conf}:5: rules[0].match.flags: found 'trunkated', expected one of gap, midstream, "
                        "no_response, no_request, truncated, tunnel; did you mean 'truncated'?")


def test_shipped_example_rules_are_valid(tmp_path: Path) -> None:
    conf = tmp_path / "p.yaml"
    conf.write_text(f"rules_dir: {REPO / 'conf' / 'rules.d'}\n")
    p = check("-c", conf, cwd=tmp_path)
    assert (p.stderr, p.returncode) == ("", 0)
    rules = [line for line in p.stdout.splitlines() if line.startswith("#   ")]
    assert [line.split(":")[0] for line in rules] == [
        "#   1. health-checks", "#   2. static-assets", "#   3. server-errors", "#   4. client-errors",
        "#   5. incomplete", "#   6. protocol-anomalies", "#   7. latency-by-route", "#   8. slow-requests",
        "#   9. auth-endpoints"]

