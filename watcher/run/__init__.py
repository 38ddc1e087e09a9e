"""`pcapwatch run` (and `demo`): the service beside tcpdump. The main loop, the reader thread, the
checkpoint and what makes a restart exactly-once, delivery of records to rules and sinks, sd_notify."""
