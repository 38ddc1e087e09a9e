"""`pcapwatch run` from its command line: the configuration with the options that override it (at
start and again at every reload), tcpdump when --capture asks for it, then the service."""

from __future__ import annotations

import dataclasses
import functools

from watcher.capture.tcpdump import CaptureSupervisor, tcpdump_command
from watcher.config.load import Config, with_overrides
from watcher.run.sdnotify import log
from watcher.run.service import Service


class LaunchError(Exception):
    """The service cannot start as asked; the message is one line for the user."""


def launch(config: Config, config_path: str, *, spool: str | None = None, state: str | None = None,
           output: str | None = None, capture: str | None = None, bpf: str | None = None,
           source: str | None = None, group: str | None = None) -> int:
    """Run the service until it is stopped; its exit status. `capture`: an interface tcpdump
    captures on, into the spool (`bpf` overrides capture.bpf). `source`/`group` (or kafka.source in
    the configuration): read a Kafka topic as a member of a consumer group instead of the spool.
    OSError when an output, the spool or the state directory cannot be opened, or the brokers do not
    answer."""
    overrides = functools.partial(with_overrides, spool=spool, state=state, output=output)
    config = overrides(config)
    if source or group:
        config = dataclasses.replace(config, kafka=dataclasses.replace(
            config.kafka, source=source or config.kafka.source, group=group or config.kafka.group))
    if config.kafka.source:
        if capture:
            raise LaunchError("--capture and a Kafka source exclude each other: the packets come from the topic")
        from watcher.capture.pycapa import KafkaUrlError, parse_kafka_url

        try:
            parse_kafka_url(config.kafka.source)
        except KafkaUrlError as e:
            raise LaunchError(f"--source {config.kafka.source}: {e}") from None
        from watcher.run.group import GroupService
        from watcher.sinks.kafka_client import KafkaIOError

        try:
            member = GroupService(config, config_path)
        except KafkaIOError as e:
            raise LaunchError(f"--source {config.kafka.source}: {e}") from None
        return member.run()
    supervisor = None
    if capture:
        tcpdump = CaptureSupervisor.available()
        if tcpdump is None:
            raise LaunchError("--capture needs tcpdump (apt-get install tcpdump)")
        config.spool.dir.mkdir(parents=True, exist_ok=True)
        supervisor = CaptureSupervisor(tcpdump_command(capture, str(config.spool.dir), config.capture, bpf, tcpdump),
                                       log)
    return Service(config, config_path, supervisor, overrides).run()
