"""cachecert's harness: services, proxies, faults, workers and the run engine.

The harness starts real services behind Toxiproxy, drives a strategy with concurrent workers while
a nemesis injects faults, and records every operation in a history for the checkers.
"""
