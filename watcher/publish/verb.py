"""`pcapwatch publish`: its command line (the work is in job.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from watcher.capture.inputs import add_kafka_input_args, kafka_options, positive_int

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


def add_parser(sub: Any) -> None:
    pb = sub.add_parser("publish", help="send the frames of captures to a Kafka topic in pycapa's format",
                        description="Send every frame of the inputs to a Kafka topic, one message per frame in "
                                    "pycapa's format, each connection to one partition.",
                        epilog=PUBLISH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    pb.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="capture file, directory, - for stdin, or kafka://HOST:PORT/TOPIC")
    pb.add_argument("--to", required=True, metavar="kafka://HOST:PORT/TOPIC", help="the topic to publish to")
    pb.add_argument("--partitions", type=positive_int, metavar="N",
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
    add_kafka_input_args(pb)


def run(args: argparse.Namespace) -> int:
    from watcher.publish.job import publish_main  # the producer side, only when publishing

    return publish_main(args.inputs, args.to, args.partitions, args.compression, kafka_options(args), sys.stderr,
                        follow=(args.state, args.pattern) if args.follow else None)
