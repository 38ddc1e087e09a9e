"""The `pcapwatch` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from analyzers import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Strings
from watcher import version
from watcher.capture.inputs import add_kafka_input_args, kafka_options, positive_int
from watcher.publish import verb as publish_verb
from watcher.read import export_verb
from watcher.read.lines import OutputError, open_output
from watcher.replay import verb as replay_verb
from watcher.text.escape import printable

EXIT_OK = 0
EXIT_INPUT_ERRORS = 1
EXIT_USAGE = 2
EXIT_OUTPUT = 3

DESCRIPTION = """\
pcapwatch turns packet captures of web traffic into one JSON record per HTTP
transaction (client, method, host, URI, status, sizes, latency), reading the
files tcpdump writes. It needs no privileges: capture stays in tcpdump."""

READ_EPILOG = """\
examples:
  pcapwatch read cap.pcap                       records on stdout
  pcapwatch read /var/spool/pcapwatch -o out.jsonl --stats
                                                a whole tcpdump ring, in the order written
  tcpdump -i any -w - port 80 | pcapwatch read -
                                                straight from tcpdump
  pcapwatch read cap.pcap | jq 'select(.status_code >= 500)'

The files are read as ONE capture, in the order given (a directory expands to
its capture files ordered by their first packet): a connection that continues
from one rotation file into the next is stitched. Files may be pcap (µs or ns,
either byte order), pcapng, or gzip-compressed (tcpdump -z gzip).

Each record has: ts uid trans_depth src_ip src_port dst_ip dst_port method host
uri version user_agent referrer request_body_len status_code status_msg
info_code response_body_len response_content_type ttfb_ms duration_ms flags
anomalies reason pcap_file. `flags` lists gap, midstream, no_response,
no_request, truncated, tunnel; `reason` says why a response is missing.

exit status:
  0  every input was read completely
  1  some input could not be read or is corrupt, or a packet could not be
     analysed: one line on stderr names each file, the byte offset and the
     problem; everything readable was processed
  2  bad command line
  3  the output could not be written"""


MAIN_EPILOG = """\
examples:
  pcapwatch read cap.pcap                  one JSON record per HTTP transaction
  pcapwatch read /var/spool/pcapwatch --stats
                                           a tcpdump ring, oldest file first, with counters
  pcapwatch read --help                    the record's fields, inputs, limits
  pcapwatch replay cap.pcap --target http://127.0.0.1:8081
                                           re-send GET/HEAD/OPTIONS to a shadow, compare answers

exit status:
  0  every input was read completely
  1  some input could not be read or is corrupt, or a packet could not be
     analysed (each named on stderr)
  2  bad command line
  3  the output could not be written"""


class _Version(argparse.Action):
    """--version, looking the version up only when asked (the package metadata is slow to load)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sys.stdout.write(f"{parser.prog} {version()}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcapwatch", description=DESCRIPTION, epilog=MAIN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, nargs=0, help="show pcapwatch's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("read", help="read capture files, write one JSON record per HTTP transaction",
                       description="Read capture files and write one JSON line per HTTP transaction.",
                       epilog=READ_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("inputs", nargs="+", metavar="FILE",
                   help="capture file, directory of rotation files, - for stdin, or kafka://HOST:PORT/TOPIC "
                        "(a topic of pycapa packets)")
    r.add_argument("-o", "--output", metavar="OUT", help="write records here instead of stdout")
    r.add_argument("--stats", nargs="?", const="text", choices=("text", "json"),
                   help="print counters to stderr at the end (default when stderr is a terminal)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: when stderr is a terminal and input is large)")
    r.add_argument("--max-connections", type=positive_int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                   help="connections tracked at once; past it the least active are evicted "
                        "(default %(default)s)")
    r.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="processes sharing the work (default: 2 for inputs over 32 MB on a multi-core "
                        "machine, else 1); records of one connection stay in order either way")
    r.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="close connections idle this long in capture time (default %(default)s)")
    r.add_argument("--strings", choices=tuple(Strings), default=Strings.UTF8.value,
                   help="utf8: valid UTF-8 in URIs and headers kept as text (default); ascii: every "
                        "byte that is not printable ASCII written \\xNN")
    add_kafka_input_args(r)
    c = sub.add_parser("check", help="validate a configuration file and print the effective configuration",
                       description="Validate a configuration file and print the effective configuration:\n"
                                   "every key, defaults filled in, paths absolute.",
                       epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("-c", "--config", metavar="FILE",
                   help="the configuration file (default: $PCAPWATCH_CONFIG, else the first that exists of "
                        "/etc/pcapwatch/pcapwatch.yaml and the packaged example: conf/pcapwatch.yaml beside "
                        "the package, PREFIX/share/pcapwatch/pcapwatch.yaml); the first line printed names it")
    c.add_argument("--user", metavar="NAME",
                   help="the user the service runs as, for the spool's permissions (default: the user running "
                        "check; as root, pcapwatch when that user exists: pcapwatch.service's User=)")
    _add_run_parser(sub)
    _add_tail_parser(sub)
    add_kafka_input_args(replay_verb.add_parser(sub))
    export_verb.add_parser(sub)
    publish_verb.add_parser(sub)
    return p


RUN_EPILOG = """\
examples:
  pcapwatch run                         the default configuration (conf/pcapwatch.yaml)
  pcapwatch run -c /etc/pcapwatch/pcapwatch.yaml
  pcapwatch run --spool /var/spool/pcapwatch --output /var/log/pcapwatch/http.jsonl
  pcapwatch run --capture eth0 --bpf 'tcp port 80'
                                        also start tcpdump with a -C/-W ring into the spool

Run tcpdump beside it, e.g.
  tcpdump -i eth0 -w /var/spool/pcapwatch/cap.pcap -C 100 -W 10 -U 'tcp port 80'
pcapwatch reads the files in the order tcpdump wrote them, tails the current one,
and keeps its place in the state directory: a restart resumes there, and after a
clean stop (SIGTERM) no record is lost or written twice. After a crash, records of
the last few seconds may be written again with the same event_id.

signals: TERM/INT stop cleanly; HUP reloads the configuration (an invalid one is
refused and the running one kept) and reopens output files; USR1 logs a status
line (lag behind tcpdump, files, losses, connections, gaps).

exit status:
  0  stopped by a signal after a clean shutdown
  1  stopped by a failure (an output could not be written, the reader failed)
  2  bad command line or configuration"""


def _add_run_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="the service: follow tcpdump's rotating files, write records as they come",
                       description="Follow the capture files tcpdump writes into the spool directory and write "
                                   "one JSON record per HTTP transaction as they happen.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("-c", "--config", metavar="FILE", help="configuration file (default: as for `check`)")
    r.add_argument("--spool", metavar="DIR", help="the directory tcpdump writes into (overrides spool.dir)")
    r.add_argument("--state", metavar="DIR", help="where the checkpoint is kept (overrides state.dir)")
    r.add_argument("--output", metavar="FILE", help="write records here, - for stdout (replaces the outputs)")
    r.add_argument("--capture", metavar="IFACE", help="also run tcpdump on this interface with a ring into the "
                                                    "spool (needs root or CAP_NET_RAW)")
    r.add_argument("--bpf", metavar="EXPR", help="capture filter for --capture (default: capture.bpf)")
    r.add_argument("--source", metavar="kafka://HOST:PORT/TOPIC", help="read packets from this Kafka topic (pycapa's "
                   "format) instead of the spool, as a member of --group (overrides kafka.source)")
    r.add_argument("--group", metavar="NAME", help="the consumer group whose members share the topic's partitions "
                   "(overrides kafka.group)")
    d = sub.add_parser("demo", help="see it work: a local server, tcpdump and the service on loopback",
                       description="Start a small HTTP server on 127.0.0.1, tcpdump writing a ring into "
                                   "SPOOL/demo, and the service on the configuration's outputs; send requests of "
                                   "different kinds; stop once they are all recorded. Needs root and tcpdump.",
                       epilog="exit status: 0 every request was recorded; 1 some were not; 2 no root or "
                              "tcpdump, or a bad configuration")
    d.add_argument("-c", "--config", metavar="FILE", help="configuration file (default: as for `check`)")


CHECK_EPILOG = """\
Relative paths in the file are relative to the file's own directory. Every
problem is reported, one line each: FILE:LINE: KEY: found ..., expected ...;
and what to do (unknown keys name the closest valid one). A valid configuration
whose spool directory is missing, not readable by the service's user (--user)
or not writable by tcpdump's (capture.user, else tcpdump) gets a warning on
stderr naming the directory's mode, owner and group, and the fix.

exit status:
  0  the configuration is valid; it is printed on stdout as YAML
  2  bad command line, or the configuration is not valid: one line per problem
     on stderr, nothing on stdout"""


def _check(args: argparse.Namespace) -> int:
    """Validate; print the effective configuration, then the compiled rules as YAML comments (one
    line each), so the whole output still loads as YAML."""
    from watcher.config.load import load_or_report, render, rule_lines

    loaded = load_or_report(args.config, sys.stderr)
    if loaded is None:
        return EXIT_USAGE
    _, config = loaded
    sys.stdout.write(f"# {config.source}: valid; effective configuration (defaults filled in, paths absolute)\n")
    sys.stdout.write(render(config))
    lines = rule_lines(config)
    sys.stdout.write(f"# rules, in order; the first that matches decides unless it continues: {len(lines)}\n"
                     if lines else "# rules: none\n")
    sys.stdout.write("".join(f"#   {line}\n" for line in lines))
    for warning in _spool_warnings(config.spool.dir, config.capture.user, args.user):
        sys.stderr.write(f"pcapwatch check: warning: {warning}\n")
    return EXIT_OK


def _spool_warnings(spool: Any, tcpdump_user: str | None, service_user: str | None) -> list[str]:
    """The spool's permission problems for the service's user and tcpdump's (warnings: the
    configuration is valid; the directory may be set up later)."""
    from watcher.capture.access import SERVICE_USER, account, current_account, spool_warnings

    if service_user:
        who = account(service_user)
        if who is None:
            return [f"--user {service_user}: no such user; give the user the service runs as"]
    else:
        who = current_account()
        if who.uid == 0:
            who = account(SERVICE_USER) or who
    return spool_warnings(spool, who, tcpdump_user)


def _run(args: argparse.Namespace) -> int:
    from watcher.config.load import load_or_report
    from watcher.run.launch import LaunchError, launch

    loaded = load_or_report(args.config, sys.stderr)
    if loaded is None:
        return EXIT_USAGE
    path, config = loaded
    try:
        return launch(config, path, spool=args.spool, state=args.state, output=args.output, capture=args.capture,
                      bpf=args.bpf, source=args.source, group=args.group)
    except LaunchError as e:
        sys.stderr.write(f"pcapwatch: error: {e}\n")
        return EXIT_USAGE
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"pcapwatch: error: {e.strerror or e}{where}\n")
        return EXIT_INPUT_ERRORS


def _demo(args: argparse.Namespace) -> int:
    from watcher.config.load import load_or_report
    from watcher.run.demo import run_demo

    loaded = load_or_report(args.config, sys.stderr)
    if loaded is None:
        return EXIT_USAGE
    path, config = loaded
    return run_demo(config, path)


TAIL_EPILOG = """\
examples:
  pcapwatch tail                              every transaction, as it happens
  pcapwatch tail --filter http.5xx            server errors only
  pcapwatch tail --filter http.4 --filter http.5
  pcapwatch tail --json | jq .uri
  pcapwatch tail --filter in --filter out     each request and response (outputs with per_message: true)

Topics: http.2xx ... http.5xx, http.none (no response), alert; in and out when the
zmq output has per_message: true. A filter is a topic prefix.

exit status:
  0  stopped by Ctrl-C or SIGTERM
  2  bad command line or an address zmq does not accept"""


def _add_tail_parser(sub: Any) -> None:
    from watcher.sinks.zmq_tail import DEFAULT_CONNECT, DEFAULT_FILTERS

    t = sub.add_parser("tail", help="watch transactions live from the service's zmq output",
                       description="Subscribe to a zmq output of `pcapwatch run` and print one aligned "
                                   "access-log line per transaction (colored on a terminal), or its JSON.",
                       epilog=TAIL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--connect", metavar="ADDR", default=DEFAULT_CONNECT,
                   help="the zmq output's endpoint (default %(default)s)")
    t.add_argument("--filter", metavar="TOPIC", action="append", dest="filters",
                   help=f"topic prefix to receive; repeat for several (default {' '.join(DEFAULT_FILTERS)})")
    t.add_argument("--json", action="store_true", help="print each message's JSON, one per line")


def _tail(args: argparse.Namespace) -> int:
    from watcher.sinks.zmq_tail import tail

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `pcapwatch tail | head` ends quietly
    return tail(args.connect, args.filters or (), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from watcher.capture.pycapa import KafkaClientMissing

    try:
        return _dispatch(args)
    except KafkaClientMissing as e:  # a kafka:// input or output without the optional library
        sys.stderr.write(f"pcapwatch: error: {e}\n")
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "read":
        return _read(args)
    if args.command == "check":
        return _check(args)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "tail":
        return _tail(args)
    if args.command == "replay":
        return replay_verb.run(args, kafka=kafka_options(args))
    if args.command == "export":
        return export_verb.run(args)
    if args.command == "publish":
        return publish_verb.run(args)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


def _read(args: argparse.Namespace) -> int:
    from watcher.read.job import read_captures
    from watcher.read.progress import format_summary

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `pcapwatch read f | head` ends quietly
    try:
        out = open_output(args.output)
    except OSError as e:
        sys.stderr.write(f"pcapwatch: error: cannot write {printable(args.output)}: {e.strerror}\n")
        return EXIT_OUTPUT
    tty = sys.stderr.isatty()
    progress = tty if args.progress is None else args.progress
    try:
        result = read_captures(args.inputs, out, sys.stderr, progress=progress,
                               max_connections=args.max_connections, idle_timeout=args.idle_timeout,
                               workers=args.workers, strings=Strings(args.strings), kafka=kafka_options(args))
        if out is not sys.stdout:
            out.close()
    except (OutputError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) else e
        sys.stderr.write(f"pcapwatch: error: writing records failed: {reason}\n")
        return EXIT_OUTPUT
    stats = args.stats or ("text" if tty else None)
    if stats == "json":
        sys.stderr.write(json.dumps(result.stats, sort_keys=True) + "\n")
    elif stats == "text":
        sys.stderr.write(format_summary(result.stats))
    return EXIT_INPUT_ERRORS if result.files_failed or result.analysis_errors else EXIT_OK
