"""The YAML configuration: loaded with line numbers, checked against a schema declared as data,
turned into typed dataclasses (`model`)."""
