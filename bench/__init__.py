"""Benchmarks (not tests): run as `python -m patchstream.bench.<name>`."""
