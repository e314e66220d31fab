"""The bottom layer: plain records and helpers every other package shares, importing nothing of ours.

    core  ->  strategies  ->  workloads  ->  checkers  ->  harness (runner, CLI, reports)

Each layer imports only from the layers to its left (tests/test_layering.py fails otherwise).
``core.history`` is the history record and its reader/writer, ``core.ops`` the one pairing of
invokes with completions (and the words anomalies are explained in), ``core.verdict`` the verdict
type with its merge, words and exit codes, ``core.stats`` small statistics, ``core.clients`` the
Redis/PostgreSQL client helpers with timeouts.
"""
