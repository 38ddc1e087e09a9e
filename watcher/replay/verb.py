"""The `pcapwatch replay` command line: its arguments and its run (cli.py only dispatches)."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from typing import Any, TextIO

from analyzers import DEFAULT_BODY_LIMIT
from watcher.replay.compare import DEFAULT_HEADERS, CompareSpec
from watcher.replay.policy import DEFAULT_ID_HEADER, DEFAULT_METHODS, Policy, parse_target

EXIT_OK, EXIT_DIFFER, EXIT_USAGE, EXIT_OUTPUT, EXIT_INPUT = 0, 1, 2, 3, 4

EPILOG = """\
Safety: only the --target given is ever sent to; only GET, HEAD and OPTIONS requests unless
--methods lists more; requests carrying Authorization or Cookie are skipped unless
--allow-credentials; a request body is sent only when it was captured whole (no gap) and is no
bigger than --body-limit. Everything not replayed is counted, by reason, on stderr.

examples:
  pcapwatch replay /var/spool/pcapwatch --target http://127.0.0.1:8081
  pcapwatch replay cap.pcap --target http://staging:8080 --rate 50 --speed 1.0 -o diff.jsonl
  pcapwatch replay cap.pcap --target http://staging:8080 --methods GET,HEAD,POST --mask 'id=\\d+'

exit status:
  0  every replayed request was answered alike (status, body, chosen headers)
  1  some answer differed or some request failed (see the summary on stderr)
  2  bad command line
  3  the output could not be written
  4  some input could not be read"""


def add_parser(sub: Any) -> None:
    r = sub.add_parser("replay", help="re-send captured requests to a shadow server and compare its answers",
                       description="Re-send each replayable captured request to TARGET, in capture order, and "
                                   "write one JSON record per request with the shadow's answer and a match "
                                   "verdict per field; a per-route summary goes to stderr.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="capture file, directory of rotation files, or -")
    r.add_argument("--target", required=True, metavar="URL", help="the shadow: http://HOST[:PORT][/PREFIX]")
    r.add_argument("-o", "--output", metavar="OUT", help="write records here instead of stdout")
    r.add_argument("--speed", type=float, default=None, metavar="X",
                   help="keep the capture's pace, X times faster (1.0: as captured); default: as fast as allowed")
    r.add_argument("--rate", type=float, default=None, metavar="N", help="at most N requests per second")
    r.add_argument("--percent", type=float, default=100.0, metavar="P",
                   help="replay P%% of connections, chosen by connection (default all)")
    r.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="requests in flight at once (default 1: strictly in capture order)")
    r.add_argument("--methods", default=",".join(sorted(DEFAULT_METHODS)), metavar="LIST",
                   help="methods replayed (default %(default)s)")
    r.add_argument("--allow-credentials", action="store_true",
                   help="also replay requests carrying Authorization or Cookie")
    r.add_argument("--host", metavar="HOST", help="send this Host header instead of the captured one")
    r.add_argument("--id-header", default=DEFAULT_ID_HEADER, metavar="NAME",
                   help="header carrying the record's event_id (default %(default)s)")
    r.add_argument("--body-limit", type=int, default=DEFAULT_BODY_LIMIT, metavar="BYTES",
                   help="bigger request bodies are not replayed (default %(default)s)")
    r.add_argument("--compare-header", action="append", default=None, metavar="NAME",
                   help=f"response header compared (repeatable; default {', '.join(DEFAULT_HEADERS)})")
    r.add_argument("--ignore-header", action="append", default=[], metavar="NAME",
                   help="response header never compared (repeatable)")
    r.add_argument("--mask", action="append", default=[], metavar="REGEX",
                   help="body parts replaced before comparing bodies (repeatable)")
    r.add_argument("--connect-timeout", type=float, default=2.0, metavar="SECONDS")
    r.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS")


def run(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    from watcher.replay.job import ReplayOptions, format_counts, replay_captures

    target = parse_target(args.target)
    if isinstance(target, str):
        err.write(f"pcapwatch: error: --target: {target}\n")
        return EXIT_USAGE
    masks = []
    for m in args.mask:
        try:
            masks.append(re.compile(m.encode()))
        except re.error as e:
            err.write(f"pcapwatch: error: --mask {m!r}: {e}; give a Python regular expression\n")
            return EXIT_USAGE
    if args.concurrency < 1 or any(v is not None and v <= 0 for v in (args.rate, args.speed)):
        err.write("pcapwatch: error: --concurrency, --rate and --speed must be positive\n")
        return EXIT_USAGE
    policy = Policy(methods=frozenset(m.strip().upper() for m in args.methods.split(",") if m.strip()),
                    allow_credentials=args.allow_credentials, body_limit=args.body_limit, host=args.host,
                    id_header=args.id_header, percent=args.percent)
    ignore = CompareSpec().ignore_headers | {h.lower() for h in args.ignore_header}
    spec = CompareSpec(headers=tuple(h.lower() for h in args.compare_header or DEFAULT_HEADERS),
                       ignore_headers=frozenset(ignore), masks=tuple(masks))
    opts = ReplayOptions(target, policy, spec, args.speed, args.rate, args.concurrency,
                         args.connect_timeout, args.read_timeout)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    except OSError as e:
        err.write(f"pcapwatch: error: cannot write {args.output}: {e.strerror}\n")
        return EXIT_OUTPUT
    try:
        result = replay_captures(args.inputs, opts, out, err)
        out.flush()
        if out is not sys.stdout:
            out.close()
    except OSError as e:
        err.write(f"pcapwatch: error: writing records failed: {e.strerror or e}\n")
        return EXIT_OUTPUT
    err.write(result.replayer.summary.table())
    err.write(format_counts(result.replayer))
    if result.read.files_failed:
        return EXIT_INPUT
    return EXIT_OK if result.replayer.all_matched() else EXIT_DIFFER



