"""Benchmarks: they write figures (JSON) and never pass or fail on time."""
