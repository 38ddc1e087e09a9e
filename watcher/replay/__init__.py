"""Replay: re-send captured requests to a shadow server and compare its answers (README "Replay")."""
