"""Scenario 3, write-through-db-failure, on the real cluster: cache-first strategies serve values the
DB never committed, DB-first and versioned CAS do not, write-behind loses its buffer with Redis,
and the replay after a DB outage is measured. Plus the workload's checkers on small histories and
bad strategy parameters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare
from workloads.write_through import check_db_truth, check_replay

WL = "write-through-db-failure"


def _run(cluster: Cluster, tmp_path: Path, strategy: str, faults: str, **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload=WL, strategy=strategy, faults=faults, reports=str(tmp_path),
                    time_limit=kw.pop("time_limit", 3.0), seed=kw.pop("seed", 7), quiesce=kw.pop("quiesce", 0.5),
                    checkers=kw.pop("checkers", ["db-truth", "replay"]), **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()


def _verified(res: dict[str, Any]) -> None:
    assert res["faults"] and all(p.get("verified") for p in res["faults"]), res["faults"]


# -- positive controls ---------------------------------------------------------------------
def test_cache_then_db_serves_values_the_db_never_committed(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "cache-then-db", "db-down")
    _verified(res)
    truth = res["checkers"]["db-truth"]
    assert res["valid"] is False and truth["valid"] is False
    assert truth["writes"]["fail"]["total"] > 20 and truth["writes"]["fail"]["committed"] == 0
    assert truth["aborted_reads"] > 20, truth["explanation"]
    kinds = {a["type"] for a in truth["anomalies"]}
    assert kinds == {"aborted-read"}
    assert "never committed" in truth["anomalies"][0]["explanation"]
    assert truth["lost_writes"] == 0


def test_rollback_still_exposes_the_value_while_the_db_call_hangs(cluster: Cluster, tmp_path: Path) -> None:
    # upstream black hole: the statement never reaches the DB, the client gives up after the op
    # timeout, and only then rolls the cache back; readers in between see a value never committed
    # Every write in the fault window leaves its value in the cache for the 1 s op timeout; an
    # aborted read needs a reader of that key in that second. Seeds 1-5 gave 8-25 per run, so one
    # is plenty to show the anomaly; a run with none is retried with the next seed (3 seeds).
    tries = []
    for seed in (7, 8, 9):
        res = _run(cluster, tmp_path / str(seed), "rollback-on-failure", "db-timeout-upstream", time_limit=4.0,
                   concurrency=16, seed=seed)
        _verified(res)
        truth = res["checkers"]["db-truth"]
        assert truth["writes"]["info"]["committed"] == 0  # upstream: nothing reached the DB
        tries.append((seed, truth["aborted_reads"]))
        if truth["aborted_reads"]:
            break
    assert truth["valid"] is False and truth["aborted_reads"] >= 1, (tries, truth["explanation"])
    # exposure ends when the watchdog cuts the DB call (1 s op timeout) and the rollback lands
    assert 0 < truth["max_aborted_exposure_s"] < 3.0


def test_write_behind_loses_acknowledged_writes_when_redis_dies(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "write-behind", "redis-kill-buffered-end", time_limit=4.0,
               checkers=["db-truth", "durability"])
    _verified(res)
    truth = res["checkers"]["db-truth"]
    assert truth["valid"] is False and truth["lost_writes"] > 20, truth["explanation"]
    assert {a["type"] for a in truth["anomalies"]} == {"lost-write"}
    assert truth["aborted_reads"] == 0
    if "durability" in res["checkers"]:  # the shared checker, from the final DB state alone
        dur = res["checkers"]["durability"]
        assert dur["valid"] is False and dur["lost"] > 20, dur
        assert {a["type"] for a in dur["anomalies"]} == {"lost-write"}


# -- negative controls ---------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["db-first-invalidate", "versioned-cas"])
def test_db_first_strategies_never_serve_uncommitted_values(cluster: Cluster, tmp_path: Path, strategy: str) -> None:
    res = _run(cluster, tmp_path, strategy, "db-failures", time_limit=4.0)
    _verified(res)
    truth = res["checkers"]["db-truth"]
    assert truth["valid"] is True, truth["anomalies"][:3]
    assert truth["aborted_reads"] == 0 and truth["lost_writes"] == 0
    w = truth["writes"]
    assert w["fail"]["total"] > 0 and w["ok"]["total"] > 100  # the faults bit, and work went on


def test_write_behind_replay_after_a_db_outage(cluster: Cluster, tmp_path: Path) -> None:
    """The follow-up: during the replay, cache readers stay consistent; DB readers see the
    pre-outage state until the buffer is drained, and no acknowledged write is lost."""
    # a sync job of at most 500 writes/s per node against ~120 writes/s drains the outage's backlog
    # in ~0.15 s (measured): DB reads are 30% of the ops (not the workload's 10%) so that some land
    # in it whatever the machine's speed (~10 expected at the measured rate, more when slower)
    res = _run(cluster, tmp_path, "write-behind", "db-outage-replay", time_limit=4.0, rate=400,
               mix="read=0.4,write=0.3,read-db=0.3", params={"batch": 50, "interval": 0.1},
               seed=int(os.environ.get("CC_SEED", 7)))  # CC_SEED: try others
    _verified(res)
    truth, replay = res["checkers"]["db-truth"], res["checkers"]["replay"]
    assert truth["valid"] is True and truth["lost_writes"] == 0, truth["explanation"]
    # the outage's acknowledged writes piled up in the buffer, above its level before the fault
    assert replay["backlog_at_heal"] > replay["backlog_before_max"], replay["explanation"]
    # a DB read after the heal still missed a write acknowledged before it (the pre-outage state)
    assert replay["replay_window_s"] > 0, replay["explanation"]
    assert replay["cache_reads"]["after-heal"]["lagging"] == 0
    assert replay["cache_reads"]["outage"]["lagging"] == 0
    assert replay["replay_window_s"] < 1.5, replay["explanation"]  # ~10x the measured drain time


# -- the workload's checkers on small histories ----------------------------------------------
def _op(i: int, t: float, process: Any, type_: str, f: str, key: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {"index": i, "time_ns": int(t * 1e9), "process": process, "type": type_, "f": f, "key": key,
            "value": value, **kw}


def _final(i: int, t: float, key: str, committed: list[list[Any]]) -> list[dict[str, Any]]:
    return [_op(i, t, 1000999, "invoke", "read", key, None, phase="final", source="db"),
            _op(i + 1, t, 1000999, "ok", "read", key, committed[-1][0] if committed else None, phase="final",
                source="db", version=len(committed), committed=committed)]


def test_db_truth_lets_an_info_write_commit_and_flags_the_one_that_did_not() -> None:
    h = [_op(0, 0.0, 0, "invoke", "write", "k", 1), _op(1, 0.1, 0, "info", "write", "k", 1),
         _op(2, 0.2, 1, "invoke", "write", "k", 2), _op(3, 0.3, 1, "info", "write", "k", 2),
         _op(4, 0.4, 2, "invoke", "read", "k", None), _op(5, 0.5, 2, "ok", "read", "k", 1, source="cache"),
         _op(6, 0.6, 2, "invoke", "read", "k", None), _op(7, 0.7, 2, "ok", "read", "k", 2, source="cache"),
         *_final(8, 1.0, "k", [[1, 1]])]
    r = check_db_truth(h)
    assert r["valid"] is False and r["aborted_reads"] == 1 and r["writes"]["info"] == {"total": 2, "committed": 1}
    assert r["anomalies"][0]["ops"] == [7, 2] and "timed out" in r["anomalies"][0]["explanation"]
    ok = check_db_truth(h[:6] + _final(8, 1.0, "k", [[1, 1], [2, 2]]))
    assert ok["valid"] is True


def test_db_truth_without_a_commit_log_is_unknown_and_replay_measures_lag() -> None:
    assert check_db_truth([_op(0, 0.0, 0, "invoke", "write", "k", 1)])["valid"] == "unknown"
    h = [_op(0, 0.0, "nemesis", "info", "start", None, {"fault": "down", "target": "postgres", "name": "down"}),
         _op(1, 0.1, 0, "invoke", "write", "k", 5), _op(2, 0.2, 0, "ok", "write", "k", 5),
         _op(3, 1.0, "nemesis", "info", "stop", None, {"fault": "down", "target": "postgres", "name": "down"}),
         _op(4, 1.5, 1, "invoke", "read-db", "k", None), _op(5, 1.6, 1, "ok", "read-db", "k", None, version=0),
         _op(6, 2.0, 1, "invoke", "read-db", "k", None), _op(7, 2.1, 1, "ok", "read-db", "k", 5, version=1),
         *_final(8, 3.0, "k", [[5, 1]])]
    r = check_replay(h)
    assert r["valid"] is True and r["db_reads"]["after-heal"]["lagging"] == 1
    assert r["db_reads"]["after-heal"]["max_lag_s"] == pytest.approx(1.3, abs=0.01)
    assert r["replay_window_s"] == pytest.approx(0.5, abs=0.01)
    assert check_replay(h, bound_s=0.2)["valid"] is False


# -- bad input: before any service starts ----------------------------------------------------
@pytest.mark.parametrize(("strategy", "params", "message"), [
    ("cache-then-db", {"ttl": -1}, "ttl must be >= 0"),
    ("write-behind", {"interval": 0}, "interval must be > 0"),
    ("write-behind", {"batch": 0}, "batch must be >= 1"),
    ("write-behind", {"batch": 2.5}, "batch must be an integer"),
    ("versioned-cas", {"retries": -1}, "retries must be >= 0"),
    ("rollback-on-failure", {"bogus": 1}, "no parameter 'bogus'"),
])
def test_bad_parameters_are_rejected_before_anything_starts(strategy: str, params: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(RunConfig(workload=WL, strategy=strategy, params=params))


def test_a_strategy_that_cannot_serve_the_workload_is_rejected() -> None:
    with pytest.raises(ConfigError, match="cannot serve workload write-through-db-failure"):
        prepare(RunConfig(workload=WL, strategy="delete-invalidate"))
    with pytest.raises(ConfigError, match="cannot serve workload invalidation-race"):
        prepare(RunConfig(workload="invalidation-race", strategy="write-behind"))
