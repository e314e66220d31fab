"""The strategy<->workload pairing is written once, in the workload files (issue 14): no strategy
module names a workload, the bound/general rule is derived from the workloads' lists, and the runner
refuses exactly the pairs that rule refuses, before anything starts."""

from __future__ import annotations

import pytest

import strategies
import workloads
from harness.runner import ConfigError, RunConfig, prepare


def test_no_strategy_declares_its_workloads() -> None:
    for name in strategies.REGISTRY:
        assert not hasattr(strategies.load(name), "workloads"), f"{name} names workloads; the workload file does"


def test_every_listed_strategy_exists_and_runs_where_it_is_listed() -> None:
    for wname in workloads.REGISTRY:
        wl = workloads.load(wname)
        for s in wl.strategies + wl.also_runs:
            assert s in strategies.REGISTRY, f"{wname} lists unknown strategy {s}"
            prepare(RunConfig(workload=wname, strategy=s))


@pytest.mark.parametrize("strategy, homes", [
    ("cache-aside", None), ("no-cache", None),                      # certified on register: general
    ("versioned-cas", ("register", "write-through-db-failure")),     # compared on one, runs on both
    ("herd-lock", ("register", "thundering-herd")),
    ("flags-pubsub", ("feature-flags",)),
])
def test_homes_are_derived_from_the_workload_files(strategy: str, homes: tuple[str, ...] | None) -> None:
    assert workloads.homes(strategy) == homes


@pytest.mark.parametrize("workload, strategy", [
    ("crashed-subscriber", "flags-pubsub"), ("register", "delete-invalidate"),
    ("invalidation-race", "write-behind"), ("cache-warming", "herd-none"),
])
def test_a_bound_strategy_is_refused_elsewhere_naming_its_homes(workload: str, strategy: str) -> None:
    with pytest.raises(ConfigError, match=f"cannot serve workload {workload} \\(it serves: "):
        prepare(RunConfig(workload=workload, strategy=strategy))


def test_a_general_strategy_runs_on_a_scenario_workload() -> None:
    assert prepare(RunConfig(workload="thundering-herd", strategy="cache-aside")).strategy_name == "cache-aside"
