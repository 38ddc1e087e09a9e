"""`pcapwatch publish`: frames of captures (or of a spool as `run` follows it) to a Kafka topic, in
pycapa's format, one connection per partition."""
