"""The `pcapwatch` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from analyzers import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Strings
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcapwatch", description=DESCRIPTION, epilog=MAIN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    r.add_argument("--max-connections", type=_positive_int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                   help="connections tracked at once; past it the least active are evicted "
                        "(default %(default)s)")
    r.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="processes sharing the work (default: 2 for inputs over 32 MB on a multi-core "
                        "machine, else 1); records of one connection stay in order either way")
    r.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="close connections idle this long in capture time (default %(default)s)")
    r.add_argument("--strings", choices=tuple(Strings), default=Strings.UTF8.value,
                   help="utf8: valid UTF-8 in URIs and headers kept as text (default); ascii: every "
                        "byte that is not printable ASCII written \\xNN")
    _add_kafka_input_args(r)
    c = sub.add_parser("check", help="validate a configuration file and print the effective configuration",
                       description="Validate a configuration file and print the effective configuration:\n"
                                   "every key, defaults filled in, paths absolute.",
                       epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("-c", "--config", metavar="FILE",
                   help="the configuration file (default: $PCAPWATCH_CONFIG, else the first that exists of "
                        "conf/pcapwatch.yaml beside the package, PREFIX/share/pcapwatch/pcapwatch.yaml, "
                        "/etc/pcapwatch/pcapwatch.yaml)")
    _add_run_parser(sub)
    _add_tail_parser(sub)
    replay_verb.add_parser(sub)
    _add_export_parser(sub)
    _add_publish_parser(sub)
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
and what to do (unknown keys name the closest valid one).

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
    return EXIT_OK


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
        sys.stderr.write(f"pcapwatch: error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}\n")
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


EXPORT_EPILOG = """\
examples:
  pcapwatch export kafka://broker:9092/packets -w packets.pcap
  pcapwatch export kafka://broker:9092/packets --kafka-offset end -w - | wireshark -k -i -

Written as pycapa's consumer writes it (for a topic byte for byte): a libpcap
header in this machine's byte order (0xa1b2c3d4, 2.4, snaplen 65535, the link
type), each record with µs time and captured length = wire length.

exit status: 0 every input read; 1 some input unreadable (named on stderr);
2 bad command line; 3 the output could not be written"""


def _add_export_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="write the frames of captures or Kafka topics as one libpcap file",
                       description="Write the frames of every input (capture files, directories, stdin, "
                                   "kafka:// topics of pycapa packets) as one libpcap file, in order.",
                       epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="capture file, directory, - for stdin, or kafka://HOST:PORT/TOPIC")
    e.add_argument("-w", "--write", required=True, metavar="FILE", help="the pcap file to write, - for stdout")
    e.add_argument("--stats", action="store_true", help="one line of counters on stderr at the end")
    _add_kafka_input_args(e)


def _export(args: argparse.Namespace) -> int:
    from watcher.read.export import export_main

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `pcapwatch export ... -w - | head -c` ends quietly
    return export_main(args.inputs, args.write, args.stats, _kafka_options(args), sys.stderr)


PUBLISH_EPILOG = """\
examples:
  pcapwatch publish cap.pcap --to kafka://broker:9092/packets --partitions 12
  tcpdump -i eth0 -w - 'tcp port 80' | pcapwatch publish - --to kafka://broker:9092/packets
  pcapwatch publish --follow /var/spool/pcapwatch --state /var/lib/pcapwatch-publish \\
      --to kafka://broker:9092/packets      a live tcpdump ring, as `run` follows it

One message per frame in pycapa's format (key: capture time in µs, big-endian
u64; value: the frame); the partition by connection (the same both ways), so a
connection's packets are in one partition, in order. Deliveries are counted,
failures retried; a summary line at the end.

exit status: 0 every frame delivered (--follow: and stopped by a signal); 1 some
input unreadable or frames undelivered; 2 bad command line; 3 the topic could
not be reached or created"""


def _add_publish_parser(sub: Any) -> None:
    pb = sub.add_parser("publish", help="send the frames of captures to a Kafka topic in pycapa's format",
                        description="Send every frame of the inputs to a Kafka topic, one message per frame in "
                                    "pycapa's format, each connection to one partition.",
                        epilog=PUBLISH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    pb.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="capture file, directory, - for stdin, or kafka://HOST:PORT/TOPIC")
    pb.add_argument("--to", required=True, metavar="kafka://HOST:PORT/TOPIC", help="the topic to publish to")
    pb.add_argument("--partitions", type=_positive_int, metavar="N",
                    help="create the topic with N partitions if it does not exist (default: it must exist)")
    pb.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="none",
                    help="compression of the messages (default %(default)s)")
    f = pb.add_argument_group("following a live spool (as `run` follows it)")
    f.add_argument("--follow", action="store_true",
                   help="INPUT is the spool directory tcpdump writes into: follow it until SIGTERM/SIGINT, "
                        "rotation by rotation, with a checkpoint in --state (a restart resumes there)")
    f.add_argument("--state", metavar="DIR", help="where --follow keeps its checkpoint (required with --follow)")
    f.add_argument("--pattern", default="*", metavar="GLOB",
                   help="capture file names in the spool (default %(default)s)")
    _add_kafka_input_args(pb)


def _publish(args: argparse.Namespace) -> int:
    from watcher.publish.job import publish_main

    return publish_main(args.inputs, args.to, args.partitions, args.compression, _kafka_options(args), sys.stderr,
                        follow=(args.state, args.pattern) if args.follow else None)


def _add_kafka_input_args(p: argparse.ArgumentParser) -> None:
    k = p.add_argument_group("kafka:// inputs (topics of pycapa packets: key = capture time in µs, value = frame)")
    k.add_argument("--kafka-offset", choices=("beginning", "end"), default="beginning",
                   help="beginning: every message, exit at the end of every partition (default); end: new "
                        "messages only, until --max-packets or Ctrl-C/SIGTERM")
    k.add_argument("--linktype", type=_linktype, default=1, metavar="TYPE",
                   help="link type of the frames, a number or a name (ethernet, linux_sll, raw, ...; default "
                        "ethernet)")
    k.add_argument("--max-packets", type=_positive_int, default=None, metavar="N",
                   help="stop after N packets of a topic")


def _kafka_options(args: argparse.Namespace) -> Any:
    """How kafka:// inputs are read; a read of new messages ends on SIGINT/SIGTERM, cleanly."""
    import threading

    from watcher.capture.inputs import KafkaOptions

    stop = threading.Event()
    if args.kafka_offset == "end" and any(i.startswith("kafka://") for i in args.inputs):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _s, _f: stop.set())
    return KafkaOptions(args.kafka_offset, args.linktype, args.max_packets, stop, sys.stderr)


def _linktype(text: str) -> int:
    from watcher.capture.pycapa import parse_linktype

    try:
        return parse_linktype(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


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
        return replay_verb.run(args)
    if args.command == "export":
        return _export(args)
    if args.command == "publish":
        return _publish(args)
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
                               workers=args.workers, strings=Strings(args.strings), kafka=_kafka_options(args))
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
