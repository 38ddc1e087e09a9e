"""Rules: the compiled model (`model`), the match keys (`match_keys`), the compiler from YAML
(`compile`) and the hot path that evaluates them (`engine`)."""
