"""The workload interface, Jepsen style: a small map of data shape + generator + checkers + faults.

A workload says what the data looks like (``setup``), what clients do (op mix, keys, and how an op
maps onto strategy calls: ``invoke``), what the truth is at the end (``final_read`` straight from
the DB, bypassing every cache and proxy), which faults make sense (named plans and a menu for
random schedules), which checkers judge it, and which strategies it can serve.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.clients import Pg
from core.history import HistoryError
from core.namespace import clear, prefix_of
from core.ops import Paired, pair
from core.stats import percentile
from strategies.base import KV_SCHEMA


@dataclass
class Direct:
    """Harness-only connections that bypass the proxies (set-up, final reads)."""

    redis: Any
    pg: Pg
    endpoints: dict[str, str]


def invoke_register(strategy: Any, op: dict[str, Any]) -> dict[str, Any]:
    if op["f"] == "read":
        return strategy.read(op["key"])
    if op["f"] == "write":
        return strategy.write(op["key"], op["value"])
    raise ValueError(f"register workload has no op {op['f']!r}")


def flush(client: Any) -> None:
    """Empty the cache: FLUSHALL on a server the harness started; on one it did not (a namespaced
    client, core/namespace.py), delete only the run's own keys."""
    if prefix_of(client) is None:
        client.flushall()
    else:
        clear(client)


def setup_kv(d: Direct) -> None:
    """A fresh ``kv`` table: dropped and re-created, so no trigger or column another workload added to
    it on a shared cluster (e.g. write-through's commit log) carries over."""
    flush(d.redis)
    d.pg.execute("drop table if exists kv cascade")
    d.pg.execute(KV_SCHEMA)


def final_kv(d: Direct, key: str) -> dict[str, Any]:
    rows = d.pg.execute("select value, version from kv where key = %s", (key,))
    return {"value": rows[0][0], "version": rows[0][1]} if rows else {"value": None, "version": 0}


# -- the history view a workload's own checkers share ------------------------------------------------------
def paired(history: list[dict[str, Any]]) -> Paired:
    """``core.ops.pair`` of ``history`` (the memoised view the shared checkers use too); a history the
    strict pairing rejects (a process that invokes twice, a completion without an invoke) is paired
    leniently, as the workload checkers always have: the later invoke takes the completion."""
    try:
        return pair(history)
    except HistoryError:
        return pair(history, strict=False)


def pct(xs: list[float], q: float) -> float:
    """``core.stats.percentile`` as a checker's figure: 0 for no values (results.json never holds NaN)."""
    return percentile(xs, q) if xs else 0.0


# -- step hooks (played by the nemesis as ``step:NAME`` faults; harness/faults/step.py) -----------------
StepHook = Callable[[Any, str], Any]  # (FaultContext, "start"|"stop") -> str | tuple[bool, str] | None
StepCheck = Callable[[Any, type], "str | None"]  # (RunConfig, strategy class) -> what is missing, or None


class NothingDone(Exception):  # noqa: N818 - a step outcome, not an error
    """Raised by a step hook that found nothing to act on (the step is then not verified)."""


def requires(check: StepCheck) -> Callable[[StepHook], StepHook]:
    """Attach a pre-flight check to a step hook: ``check(cfg, strategy_cls)`` returns what the run
    lacks for the step to take effect (one line, naming the option), or None."""

    def mark(hook: StepHook) -> StepHook:
        hook.requires = check  # type: ignore[attr-defined]
        return hook

    return mark


def missing_for(hook: StepHook, cfg: Any, strategy_cls: type) -> str | None:
    """What the run lacks for ``hook`` to take effect (its ``@requires`` check), or None."""
    check = getattr(hook, "requires", None)
    return check(cfg, strategy_cls) if check is not None else None


@dataclass
class Workload:
    name: str
    description: str
    # The strategy<->workload pairing, declared here only (a strategy module names no workload):
    # ``strategies`` are certified on this workload, in this order; ``also_runs`` may run here but are
    # not in its comparison. A strategy some workload lists is bound to the workloads that list it;
    # one none lists (or that register certifies: cache-aside, no-cache) runs wherever its ops exist.
    strategies: tuple[str, ...]
    default_strategy: str
    also_runs: tuple[str, ...] = ()
    # as a black box (app nodes, docs/node-protocol.md): the ops a service must answer, or none and
    # ``app_note`` says in one line why this workload cannot drive one
    app_ops: tuple[str, ...] = ()
    app_note: str = "its checkers need observations only an in-process strategy makes"
    app_checkers: tuple[str, ...] = ()  # the checkers of a black-box run, when not ``checkers``
    app_db_reads: bool = False  # record the DB's own log of reads for a black-box run (harness/dbreads.py)
    services: tuple[str, ...] = ("redis", "postgres")
    topology: str = ""  # the servers it needs beyond one of each, e.g. "postgres=replica" (harness/topology.py)
    # its set-up, steps and final reads stay inside the run's namespace (Redis through ``flush``, SQL by
    # unqualified names): it may run on a cluster cachecert did not start (--backend external)
    isolated: bool = False
    keys: int = 8
    mix: dict[str, float] = field(default_factory=lambda: {"read": 0.75, "write": 0.25})
    key_dist: str = "uniform"
    time_limit: float = 10.0
    concurrency: int = 8
    nodes: int = 1  # application nodes (strategy instances) unless --nodes says otherwise
    rate: float | None = None  # default total ops/s (None = as fast as possible); --rate overrides
    quiesce: float = 1.0
    checkers: tuple[str, ...] = ("versions", "staleness", "session", "durability", "convergence", "perf")
    checker_opts: dict[str, Any] = field(default_factory=dict)
    # checkers specific to this workload: name -> fn(history, **opts) -> {"valid": ..., ...}
    extra_checkers: dict[str, Callable[..., dict[str, Any]]] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=lambda: {"none": ""})
    default_plan: str = "none"
    # plans that only take effect with some strategies (they fault a link only those open): plan -> strategies
    plan_strategies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # a checker that judges what only some strategies report (live-versions: versioned-keys) -> those
    # strategies; the run's check plan leaves it out for the others unless asked for by name (-c)
    checker_strategies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fault_menu: list[str] = field(default_factory=list)
    # scenario events the nemesis plays as ``step:NAME@AT+DUR`` faults: name -> fn(FaultContext, "start"|"stop"),
    # returning what it did, or (False, why) when it did nothing (harness/faults/step.py)
    steps: dict[str, Callable[[Any, str], Any]] = field(default_factory=dict)
    setup: Callable[[Direct], None] = setup_kv
    invoke: Callable[[Any, dict[str, Any]], dict[str, Any]] = invoke_register
    final_read: Callable[[Direct, str], dict[str, Any]] = final_kv

    def describe(self) -> dict[str, Any]:
        return json.loads(json.dumps({
            "name": self.name, "description": self.description, "strategies": self.strategies,
            "services": self.services, "keys": self.keys, "mix": self.mix, "key_dist": self.key_dist,
            "checkers": self.checkers, "plans": self.plans, "fault_menu": self.fault_menu}))
