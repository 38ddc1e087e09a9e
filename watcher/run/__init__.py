"""`pcapwatch run` (and `demo`): the service beside tcpdump. Its start from the command line
(launch), the main loop (service), signals and reloads (control), the reader thread, the
checkpoint and what makes a restart exactly-once (resume), delivery of records to rules and sinks,
sd_notify and the journal's log priorities."""
