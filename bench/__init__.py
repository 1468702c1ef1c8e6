"""Benchmarks: each prints our figure, the peer's figure from the same run, and the ratio."""
