"""Benchmarks: scripts that print their figures (run from the repository root with PYTHONPATH=src:.)."""
