"""A re-check is the same judgement as the run: for every workload, run it on the real cluster, then
``cachecert check RUN_DIR`` and compare checker names, per-checker verdicts, the merged verdict and
the exit code. Also: ``-c`` reaches a workload's own checkers, an unknown name is one line (exit 2),
and a run dir re-checked after its history was cut mid-record says so and is never VALID.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workloads
from checkers.cli import check_main
from harness.cluster import Cluster
from harness.runner import Run, RunConfig, prepare
from harness.topology import Topology

WORKLOADS = sorted(workloads.REGISTRY)
# a plan that bites within the 3 s run (the default failover needs its fault on for 5 s)
PLAN = {"redis-failover": "split-brain"}


def _run(cluster: Cluster | Callable[[Topology], Cluster | None], tmp_path: Path, workload: str, **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload=workload, reports=str(tmp_path), seed=5, time_limit=kw.pop("time_limit", 3.0),
                    quiesce=0.3, **kw)
    p = prepare(cfg)
    return Run(p, cluster=cluster if isinstance(cluster, Cluster) else cluster(p.topology), progress=False,
               render=False).execute()


def _recheck(run_dir: str, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "recheck.json"
    rc = check_main([run_dir, "-q", "-o", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_every_workload_is_covered() -> None:
    assert len(WORKLOADS) >= 9


@pytest.mark.parametrize("workload", WORKLOADS)
def test_recheck_gives_the_runs_verdicts(cluster_for: Callable[[Topology], Cluster | None], tmp_path: Path,
                                        workload: str) -> None:
    res = _run(cluster_for, tmp_path, workload, **({"faults": PLAN[workload]} if workload in PLAN else {}))
    rc, again = _recheck(res["run_dir"], tmp_path)
    wl = workloads.load(workload)
    planned = [n for n in wl.checkers if wl.default_strategy in wl.checker_strategies.get(n, (wl.default_strategy,))]
    assert list(again["checkers"]) == list(res["checkers"]) == planned
    assert {n: r["valid"] for n, r in again["checkers"].items()} == \
           {n: r["valid"] for n, r in res["checkers"].items()}
    assert again["valid"] == res["valid"] and rc == res["exit_code"], (again["unknown_reasons"],
                                                                     res["unknown_reasons"])
    assert again["unverified_faults"] == res["unverified_faults"]


def test_recheck_reaches_workload_checkers_and_refuses_unknown_names(
        cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(cluster, tmp_path, "feature-flags", time_limit=2.0, faults="none")
    rc, again = _recheck(res["run_dir"], tmp_path, "-c", "propagation")
    assert list(again["checkers"]) == ["propagation"]
    assert again["checkers"]["propagation"]["valid"] == res["checkers"]["propagation"]["valid"]
    # the options recorded with the run (the workload's bound) are the ones re-used
    assert again["check_plan"]["opts"]["propagation"]["bound_ms"] == 2000
    capsys.readouterr()
    assert check_main([res["run_dir"], "-c", "no-such-checker"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown checker 'no-such-checker'" in err[0] and "propagation" in err[0]


def test_a_history_cut_mid_record_is_said_and_never_valid(cluster: Cluster, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(cluster, tmp_path, "register", time_limit=2.0, faults="none")
    hist = Path(res["run_dir"]) / "history.jsonl"
    lines = hist.read_bytes().splitlines(keepends=True)
    keep = len(lines) // 2
    hist.write_bytes(b"".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])  # killed mid-write
    rc = check_main([res["run_dir"], "-o", str(tmp_path / "cut.json")])
    out = capsys.readouterr().out
    assert f"history ends mid-record after line {keep} (the run was killed); checked the {keep} complete " \
           f"records" in out
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["valid"] != True and rc != 0  # noqa: E712 - unknown, or invalid if the prefix shows an anomaly
    assert cut["history_truncated"]["complete_records"] == keep
    for name in ("durability", "convergence"):  # they need the final phase, which is gone
        assert cut["checkers"][name]["valid"] == "unknown"
        assert "final phase" in cut["checkers"][name]["reason"]
