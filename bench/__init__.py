"""Benchmarks side by side (issue 7): `python -m bench [--quick]` writes bench/results.json and docs/benchmarks.md.

Not part of the pass/fail tests; see bench/README.md.
"""
