"""Benchmarks: figures and ratios printed against targets, never timed asserts (`make bench`)."""
