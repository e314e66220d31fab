"""Workers in several processes (issue 17, part 1): `--procs N` against the real cluster.

The verdict classes do not change with the number of processes; the merged history is one
real-time-ordered history with ops from every process; worker w draws the same ops wherever it runs
(the seed reproduces the run); node crashes reach the process that owns the node; a worker process
that dies loses nothing it recorded and makes the verdict unknown, never valid; what needs the
strategy instances in the harness's process is refused before anything starts.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.history import load_history
from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare


def _run(cluster: Cluster, tmp_path: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg = RunConfig(reports=str(tmp_path), quiesce=0.3, **kw)
    res = Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()
    return res, load_history(Path(res["run_dir"]) / "history.jsonl")


@pytest.mark.parametrize("strategy, params, faults, valid", [
    ("cache-aside", {"ttl": 0.05}, "redis-latency", False),  # the fill race under a slow Redis, in either layout
    ("no-cache", {}, "crash-node:1@20%+30%", True),  # node 1 lives in process 1: the crash reaches it
])
def test_same_verdict_class_with_two_processes(cluster: Cluster, tmp_path: Path, strategy: str,
                                               params: dict[str, Any], faults: str, valid: bool) -> None:
    kw = dict(workload="register", strategy=strategy, faults=faults, params=params, seed=2, time_limit=3.0,
              concurrency=8, nodes=2)
    one, _ = _run(cluster, tmp_path / "one", **kw)
    two, h = _run(cluster, tmp_path / "two", procs=2, **kw)
    assert one["valid"] is valid and two["valid"] is valid, (one["checkers"], two["checkers"])
    assert all(f["verified"] for f in two["faults"]), two["faults"]
    if "crash-node" in faults:
        assert "node is down" in two["faults"][0]["observed"] and two["counts"]["fail"] > 0
    # one history: indexes in order, time never goes back, both processes' nodes, invoke before completion
    assert [o["index"] for o in h] == list(range(len(h)))
    times = [o["time_ns"] for o in h]
    assert times == sorted(times)
    assert {o["node"] for o in h if o.get("type") == "ok" and o.get("phase") != "final"} == {0, 1}
    open_: set[Any] = set()
    for o in h:
        if o["process"] == "nemesis":
            continue
        if o["type"] == "invoke":
            assert o["process"] not in open_
            open_.add(o["process"])
        else:
            assert o["process"] in open_, o
            open_.discard(o["process"])
    assert not list(Path(two["run_dir"]).glob("history.p*.jsonl"))  # the parts were folded in


def test_a_worker_draws_the_same_ops_in_any_process(cluster: Cluster, tmp_path: Path) -> None:
    kw = dict(workload="register", strategy="no-cache", faults="none", seed=9, time_limit=1.5, concurrency=4,
              nodes=2, rate=200)
    _, h1 = _run(cluster, tmp_path / "one", **kw)
    _, h2 = _run(cluster, tmp_path / "two", procs=2, **kw)

    def first(h: list[dict[str, Any]], p: int) -> list[tuple[Any, ...]]:
        return [(o["f"], o["key"], o["value"]) for o in h if o["process"] == p and o["type"] == "invoke"][:20]

    for p in range(4):
        assert first(h1, p) == first(h2, p) and len(first(h1, p)) == 20


def test_a_dead_worker_process_loses_nothing_and_is_never_valid(cluster: Cluster, tmp_path: Path) -> None:
    cfg = RunConfig(workload="register", strategy="no-cache", faults="none", seed=3, time_limit=3.0, concurrency=4,
                    nodes=2, procs=2, reports=str(tmp_path), quiesce=0.3)
    run = Run(prepare(cfg), cluster=cluster, progress=False, render=False)

    def kill_one() -> None:  # 1 s into the load phase (set-up took 1.5 s on a loaded CI machine)
        while not run.children or run.history is None or "load" not in run.phases or \
                run.history.now() / 1e9 < run.phases["load"][0] + 1.0:
            time.sleep(0.05)
        os.kill(run.children[1].proc.pid, signal.SIGKILL)

    threading.Thread(target=kill_one, daemon=True).start()
    res = run.execute()
    h = load_history(Path(res["run_dir"]) / "history.jsonl")
    assert res["valid"] == "unknown", res["unknown_reasons"]
    assert "worker process 1 died" in res["unknown_reasons"][0]
    node1 = [o for o in h if o.get("node") == 1 and o.get("type") == "ok" and o.get("phase") != "final"]
    assert len(node1) > 20  # what the dead process recorded before it died is in the history


@pytest.mark.parametrize("kw, words", [
    (dict(procs=2, nodes=1), "--procs 2 needs --nodes 2 or more"),
    (dict(procs=2, nodes=2, workload="thundering-herd", strategy="herd-lock", faults="holder-crash"),
     "needs the strategy instances in the harness's process"),
    (dict(procs=2, nodes=2, workload="crashed-subscriber", strategy="sub-pubsub", faults="sub-link-down"),
     "needs the strategy instances"),
    (dict(procs=0), "procs must be >= 1"),
])
def test_what_needs_the_instances_here_is_refused(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        prepare(RunConfig(**{"workload": "register", **kw}))
