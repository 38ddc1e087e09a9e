"""Helpers shared by the tests: capture building and impairment, live programs, outputs, traffic."""
