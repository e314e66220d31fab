"""Every named plan of every workload, run once: each of its faults must have taken effect.

A named plan is a promise (``-f holder-crash`` crashes a lock holder); a plan whose fault never
bit leaves a run that looks valid and proves nothing. So each plan runs once on the shared cluster
with its workload's defaults — the default strategy, unless the plan is only meant for others
(``Workload.plan_strategies``), and what its refusal names as missing (``EXTRA``) — and every
scheduled fault must have exactly one probe record, verified. Runs are short (plans are given in
percent of the time limit) and judged by the cheap ``perf`` checker only: the verdicts of the
scenarios are their own tests' business; here only the faults are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workloads
from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare
from harness.topology import Topology

TIME_LIMIT = 2.0
# what a plan's refusal (with the workload's defaults) names as missing
EXTRA: dict[tuple[str, str], dict[str, Any]] = {("thundering-herd", "holder-crash"): {"nodes": 2},
                                                 # a probe of its link fault needs time before the kill
                                                 ("broker-loss", "broker-loss"): {"time_limit": 8.0},
                                                 ("broker-loss", "lagging-loss"): {"time_limit": 8.0},
                                                 # a Sentinel promotion needs its fault on >= 5 s (min_on_s)
                                                 ("redis-failover", "failover"): {"time_limit": 10.0},
                                                 ("redis-failover", "failover-kill"): {"time_limit": 10.0}}
CASES = [(w, p) for w in workloads.REGISTRY for p in workloads.load(w).plans if p != "none"]


def strategy_for(wl: workloads.Workload, plan: str) -> str:
    meant = wl.plan_strategies.get(plan)
    return wl.default_strategy if not meant or wl.default_strategy in meant else meant[0]


def config(workload: str, plan: str, reports: Path) -> RunConfig:
    wl = workloads.load(workload)
    kw: dict[str, Any] = {"workload": workload, "strategy": strategy_for(wl, plan), "faults": plan,
                          "time_limit": TIME_LIMIT, "seed": 3, "quiesce": 0.2, "checkers": ["perf"],
                          "reports": str(reports), **EXTRA.get((workload, plan), {})}
    if "converge_limit" in RunConfig.__dataclass_fields__:
        kw["converge_limit"] = 0.0  # no re-reading for convergence: only the faults are judged here
    return RunConfig(**kw)


@pytest.mark.parametrize("workload,plan", CASES, ids=[f"{w}:{p}" for w, p in CASES])
def test_every_fault_of_a_named_plan_takes_effect(cluster_for: Callable[[Topology], Cluster | None], tmp_path: Path,
                                                 workload: str, plan: str) -> None:
    prepared = prepare(config(workload, plan, tmp_path))
    res = Run(prepared, cluster=cluster_for(prepared.topology), progress=False, render=False).execute()
    records = res["faults"]
    for p in records:
        print(f"{workload} {plan}: {p['fault']}: {'verified' if p['verified'] else 'NOT VERIFIED'} ({p['observed']})")
    scheduled = sorted((s.fault.name, round(s.at, 3)) for s in prepared.schedule)
    assert sorted((p["fault"], p["at"]) for p in records) == scheduled, (records, res.get("fault_errors"))
    assert all(p["verified"] for p in records), [p for p in records if not p["verified"]]


@pytest.mark.parametrize("workload,plan,needs", [
    ("thundering-herd", "holder-crash", "--nodes 2"),
    ("crashed-subscriber", "sub-link-down", "sub-pubsub"),
    ("schema-migration", "event-lost", "schema-event-bump"),
])
def test_a_plan_that_cannot_bite_with_the_defaults_refuses_naming_what_it_needs(workload: str, plan: str,
                                                                               needs: str) -> None:
    with pytest.raises(ConfigError, match=f"plan {plan}.*{needs}"):
        prepare(RunConfig(workload=workload, faults=plan))


@pytest.mark.parametrize("strategy", ["herd-none", "herd-single-flight", "herd-xfetch"])
def test_holder_plans_refuse_a_strategy_without_a_lock_holder(strategy: str) -> None:
    for plan in ("holder-crash", "holder-pause"):
        with pytest.raises(ConfigError, match=f"{strategy} has no lock holder"):
            prepare(RunConfig(workload="thundering-herd", strategy=strategy, faults=plan, nodes=2))


def test_a_fault_given_less_time_than_it_needs_to_bite_is_refused_and_random_schedules_give_it_enough() -> None:
    with pytest.raises(ConfigError, match=r"failover\(redis, how=partition\) is on for 2\.4 s.*at least 5 s"):
        prepare(RunConfig(workload="redis-failover", time_limit=4.0))
    from harness import faults

    drawn = [s for seed in range(40) for s in faults.random_schedule(["failover:redis"], 12.0, seed)]
    assert drawn and all(s.duration >= 5.0 and s.end <= 12.0 for s in drawn)
