"""Scenario 4, invalidation-race, on the real cluster: field-by-field reads with delete-invalidate
tear, atomic replace (read whole) / read lock / versioned keys do not, atomic replace does not save
a field-by-field reader, and versioned keys stay bounded only with GC — eager GC breaks in-flight
readers instead. Plus bad strategy parameters.

Torn reads are judged by the shared ``integrity`` checker and cross-checked by counting reads with
mixed write ids straight from the history (an oracle independent of the checker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.history import load_history
from harness.runner import ConfigError, Run, RunConfig, prepare
from workloads.invalidation_race import check_live_versions

WL = "invalidation-race"


def _shared_integrity() -> bool:
    try:
        from checkers import CHECKERS
    except ImportError:
        return False
    return "integrity" in CHECKERS


def _run(cluster: Cluster, tmp_path: Path, strategy: str, **kw: Any) -> tuple[dict[str, Any], int, int]:
    """Run and return (results, torn reads counted from the history, ok reads)."""
    checkers = ["live-versions"] + (["integrity"] if _shared_integrity() else [])
    cfg = RunConfig(workload=WL, strategy=strategy, faults=kw.pop("faults", "redis-latency"), reports=str(tmp_path),
                    time_limit=kw.pop("time_limit", 3.0), seed=kw.pop("seed", 11), quiesce=0.3,
                    checkers=checkers, **kw)
    res = Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()
    assert res["faults"] and all(p.get("verified") for p in res["faults"]), res["faults"]
    history = load_history(Path(res["run_dir"]) / "history.jsonl")
    reads = [o for o in history if o["type"] == "ok" and o["f"] == "read" and o.get("phase") != "final"
             and isinstance(o.get("value"), dict)]
    torn = sum(len(set(o["value"].values())) > 1 for o in reads)
    return res, torn, len(reads)


def _integrity(res: dict[str, Any], torn: bool) -> None:
    if "integrity" not in res["checkers"]:  # the shared checker was not available for this run
        return
    r = res["checkers"]["integrity"]
    assert r["valid"] is (not torn), r
    if torn:
        assert any(a["type"] == "torn-read" for a in r["anomalies"])


# -- positive controls ---------------------------------------------------------------------
def test_delete_invalidate_with_field_by_field_reads_tears(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "delete-invalidate")
    assert reads > 200 and torn > 20, (torn, reads)
    _integrity(res, torn=True)


def test_atomic_replace_does_not_save_a_field_by_field_reader(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "atomic-replace", params={"reads": "fields"})
    assert reads > 200 and torn > 20, (torn, reads)
    _integrity(res, torn=True)


def test_versioned_keys_without_gc_grow_without_bound(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, _ = _run(cluster, tmp_path, "versioned-keys", params={"gc": "none"})
    lv = res["checkers"]["live-versions"]
    assert lv["valid"] is False and lv["unbounded_growth"], lv["explanation"]
    assert lv["anomalies"][0]["type"] == "unbounded-versions"
    assert lv["final_cache_versions_total"] >= lv["samples"] * 0.9  # every version ever written is still there
    assert torn == 0


def _inside_latency(history: list[dict[str, Any]], end_s: float) -> list[dict[str, Any]]:
    """Ok reads of whole objects that ran entirely while the latency toxic was on: invoked after the
    nemesis recorded the start (recorded once the toxic is in place) and completed before the
    scheduled stop (the removal cannot begin earlier: the load phase is recorded before its clock starts)."""
    load = next(o["time_ns"] for o in history if o["process"] == "nemesis" and o.get("value") == "load")
    lo = next(o["time_ns"] for o in history if o["process"] == "nemesis" and o["f"] == "start")
    hi = load + end_s * 1e9
    invoked: dict[Any, int] = {}
    out = []
    for o in history:
        if o["process"] == "nemesis" or o.get("phase") == "final":
            continue
        if o["type"] == "invoke":
            invoked[o["process"]] = o["time_ns"]
        elif (o["type"] == "ok" and o["f"] == "read" and isinstance(o.get("value"), dict)
              and invoked[o["process"]] > lo and o["time_ns"] < hi):
            out.append(o)
    return out


def test_a_read_lock_shorter_than_the_read_expires_and_the_read_tears(cluster: Cluster, tmp_path: Path) -> None:
    # passes validation (lock_ttl > fetch_timeout) but the read outlives its 20 ms lock. Why the lock
    # is lost by construction, however slow the machine: under a 10 ms latency toxic every Redis
    # reply arrives >= 10 ms after the command ran, and a read is SET NX + one HGET per field (4)
    # before the release, so the release runs >= 50 ms after the lock was set. Load only adds time.
    # Tears need a writer's DEL to land in the unprotected part of a read: likely, not certain, so a
    # run without any is retried with the next seed (3 seeds; measured: every first run tears).
    stats = []
    for seed in (11, 12, 13):
        res, torn, reads = _run(cluster, tmp_path / str(seed), "read-lock", faults="latency:redis:ms=10@5%+90%",
                                params={"lock_ttl": 0.02, "fetch_timeout": 0.01}, seed=seed)
        history = load_history(Path(res["run_dir"]) / "history.jsonl")
        inside = _inside_latency(history, 0.95 * 3.0)  # the fault's scheduled end
        held = [o["index"] for o in inside if not o.get("lock_lost")]
        assert inside and not held, f"{len(held)} of {len(inside)} reads under latency kept their lock: {held[:5]}"
        torn_inside = sum(len(set(o["value"].values())) > 1 for o in inside)
        stats.append((seed, torn, torn_inside, len(inside), reads))
        if torn_inside:
            break
    assert torn_inside >= 1, stats  # the read tore while its lock was lost
    _integrity(res, torn=True)


# -- negative controls ---------------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "params"), [("atomic-replace", {}), ("read-lock", {})])
def test_atomic_reads_and_read_locks_never_tear(cluster: Cluster, tmp_path: Path, strategy: str,
                                                params: dict[str, Any]) -> None:
    res, torn, reads = _run(cluster, tmp_path, strategy, params=params)
    assert reads > 100 and torn == 0, (torn, reads)
    _integrity(res, torn=False)


def test_versioned_keys_with_gc_stay_bounded_and_never_tear(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "versioned-keys", params={"gc": "ttl", "gc_grace": 0.2})
    lv = res["checkers"]["live-versions"]
    assert lv["valid"] is True and not lv["unbounded_growth"], lv["explanation"]
    assert 1 < lv["peak_live_versions"] < lv["samples"] / 3  # old versions live a while, then go
    assert lv["final_cache_versions_total"] <= 3 * 4  # after quiescence: about one per key
    assert lv["reads_restarted_by_gc"] <= reads * 0.01  # the grace period covers in-flight readers
    assert reads > 100 and torn == 0
    _integrity(res, torn=False)


def test_eager_gc_breaks_in_flight_readers_but_they_restart_untorn(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "versioned-keys", params={"gc_grace": 0})
    lv = res["checkers"]["live-versions"]
    assert lv["peak_live_versions"] == 1
    assert lv["reads_restarted_by_gc"] > reads * 0.05, lv["explanation"]
    assert torn == 0


def test_live_versions_checker_on_a_small_history() -> None:
    def w(i: int, t: float, n: int) -> dict[str, Any]:
        return {"index": i, "time_ns": int(t * 1e9), "process": 0, "type": "ok", "f": "write", "key": "k",
                "value": i, "live_versions": n}

    growing = [w(i, i * 0.1, i + 1) for i in range(40)]
    r = check_live_versions(growing)
    assert r["valid"] is False and r["peak_first_half"] == 20 and r["peak_second_half"] == 40
    flat = [w(i, i * 0.1, 3 + i % 4) for i in range(40)]
    assert check_live_versions(flat)["valid"] is True
    assert check_live_versions(flat, max_live=5)["valid"] is False
    assert check_live_versions([])["valid"] is True


# -- bad input: before any service starts ----------------------------------------------------
@pytest.mark.parametrize(("strategy", "params", "message"), [
    ("read-lock", {"lock_ttl": 0.2, "fetch_timeout": 0.5}, "lock_ttl .* must be longer than fetch_timeout"),
    ("read-lock", {"lock_ttl": -1}, "lock_ttl must be > 0"),
    ("delete-invalidate", {"ttl": -5}, "ttl must be > 0"),
    ("versioned-keys", {"gc": "sometimes"}, "gc must be 'ttl'"),
    ("versioned-keys", {"gc_grace": -1}, "gc_grace must be >= 0"),
    ("atomic-replace", {"reads": "half"}, "reads must be 'whole'"),
    ("delete-invalidate", {"fields": "name,name"}, "fields must be distinct"),
])
def test_bad_parameters_are_rejected_before_anything_starts(strategy: str, params: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(RunConfig(workload=WL, strategy=strategy, params=params))
