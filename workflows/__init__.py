"""Deterministic orchestration of the node lifecycle. No I/O here: activities do it."""
