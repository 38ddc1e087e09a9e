"""`pcapwatch export`: its command line (the work is in export.py)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from watcher.capture.inputs import add_kafka_input_args, kafka_options
from watcher.read.export import export_main

EXPORT_EPILOG = """\
examples:
  pcapwatch export kafka://broker:9092/packets -w packets.pcap
  pcapwatch export kafka://broker:9092/packets --kafka-offset end -w - | wireshark -k -i -

Written as pycapa's consumer writes it (for a topic byte for byte): a libpcap
header in this machine's byte order (0xa1b2c3d4, 2.4, snaplen 65535, the link
type), each record with µs time and captured length = wire length.

exit status: 0 every input read; 1 some input unreadable (named on stderr);
2 bad command line; 3 the output could not be written"""


def add_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="write the frames of captures or Kafka topics as one libpcap file",
                       description="Write the frames of every input (capture files, directories, stdin, "
                                   "kafka:// topics of pycapa packets) as one libpcap file, in order.",
                       epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="capture file, directory, - for stdin, or kafka://HOST:PORT/TOPIC")
    e.add_argument("-w", "--write", required=True, metavar="FILE", help="the pcap file to write, - for stdout")
    e.add_argument("--stats", action="store_true", help="one line of counters on stderr at the end")
    add_kafka_input_args(e)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `pcapwatch export ... -w - | head -c` ends quietly
    return export_main(args.inputs, args.write, args.stats, kafka_options(args), sys.stderr)
