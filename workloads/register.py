"""register: the simplest workload — a few keys, each a single register, read and written by many
clients. Every write writes a unique value and gets a DB-assigned version, so the history can be
judged for linearizability (per key), staleness, session guarantees, lost writes and convergence.
It is the smoke test of every strategy and the shape the run engine is tested with."""

from __future__ import annotations

from workloads.base import Workload

WORKLOAD = Workload(
    name="register",
    description="Single-register reads and writes over a few keys",
    strategies=("no-cache", "cache-aside"),
    default_strategy="cache-aside",
    app_ops=("read", "write"),
    # register's read/write ops are every strategy's: the write-through and herd designs run here too
    also_runs=("cache-then-db", "rollback-on-failure", "db-first-invalidate", "versioned-cas", "write-behind",
               "herd-none", "herd-lock", "herd-single-flight", "herd-xfetch", "herd-lease"),
    isolated=True,  # setup_kv + final_kv: namespaced on an external cluster
    keys=5,
    mix={"read": 0.75, "write": 0.25},
    checkers=("linearizable", "versions", "staleness", "session", "durability", "convergence", "perf"),
    checker_opts={"staleness": {"bound_ms": 1000}},
    plans={
        "none": "",
        "redis-latency": "latency:redis:ms=150@20%+50%",
        "db-latency": "latency:postgres:ms=150@20%+50%",
        "redis-down": "down:redis@30%+30%",
        "db-down": "down:postgres@30%+30%",
        "db-partition": "partition:postgres@30%+30%",
        "redis-kill": "kill:redis@30%+30%",
        "redis-pause": "pause:redis@30%+20%",
        "mixed": "latency:redis:ms=100@10%+30%;down:postgres@50%+20%;pause:redis@80%+10%",
    },
    fault_menu=["latency:redis:ms=100", "latency:postgres:ms=100", "down:redis", "down:postgres",
                "partition:postgres", "kill:redis", "pause:redis", "reset_peer:redis"],
)
