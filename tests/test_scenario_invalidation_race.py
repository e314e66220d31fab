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

from core.history import load_history
from harness.cluster import Cluster
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


def _pairs(history: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(invoke, completion) of every client op of the load phase."""
    invoked: dict[Any, dict[str, Any]] = {}
    out = []
    for o in history:
        if o["process"] == "nemesis" or o.get("phase") == "final":
            continue
        if o["type"] == "invoke":
            invoked[o["process"]] = o
        elif o["process"] in invoked:
            out.append((invoked.pop(o["process"]), o))
    return out


def _overlaps(a: tuple[int, float], b: tuple[int, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _racing_reads(history: list[dict[str, Any]]) -> int:
    """Ok reads that ran while a write of the same key was in flight: each one a chance to tear."""
    ops = _pairs(history)
    writes: dict[str, list[tuple[int, float]]] = {}
    for i, c in ops:
        if i["f"] == "write":
            writes.setdefault(i["key"], []).append((i["time_ns"], c["time_ns"]))
    return sum(1 for i, c in ops if i["f"] == "read" and c["type"] == "ok"
               and any(_overlaps((i["time_ns"], c["time_ns"]), w) for w in writes.get(i["key"], [])))


def _publishes(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per key, the time spans in which a version may have been published: every write (one whose
    outcome is unknown may have published at any time after it began) and every read that filled."""
    out: dict[str, list[tuple[int, float]]] = {}
    for i, c in _pairs(history):
        if i["f"] == "write" or "live_versions" in c:
            end = float("inf") if c["type"] == "info" else c["time_ns"]
            out.setdefault(i["key"], []).append((i["time_ns"], end))
    return out


# -- positive controls ---------------------------------------------------------------------
# Tears per 3 s run, measured on a loaded 2-core machine: 345-581 (of 1200-1800 reads); a tear
# needs only one invalidation between two field reads, and a slower machine makes each read longer.
# At least 20 is far below anything measured and still not a fluke.
def test_delete_invalidate_with_field_by_field_reads_tears(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "delete-invalidate")
    assert torn > 20, (torn, reads)
    _integrity(res, torn=True)


def test_atomic_replace_does_not_save_a_field_by_field_reader(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "atomic-replace", params={"reads": "fields"})
    assert torn > 20, (torn, reads)
    _integrity(res, torn=True)


def test_versioned_keys_without_gc_grow_without_bound(cluster: Cluster, tmp_path: Path) -> None:
    # By construction, on every run: nothing is collected, so every version ever reported live is
    # still cached after quiescence. The checker's verdict
    # compares the peak of the run's second half (by time) with its first: ~2x at a steady write
    # rate (measured 1.7-2.2x), but a burst of load in the second half can bring it under its 1.5x,
    # so the verdict must come in one of 3 seeds (every other assertion holds on each run).
    verdicts = []
    for seed in (11, 12, 13):
        res, torn, _ = _run(cluster, tmp_path / str(seed), "versioned-keys", params={"gc": "none"}, seed=seed)
        lv = res["checkers"]["live-versions"]
        for key, peak in lv["peak_per_key"].items():
            assert lv["final_cache_versions"][key] >= peak, (key, lv["final_cache_versions"], lv["peak_per_key"])
        assert torn == 0
        verdicts.append((seed, lv["valid"], lv["peak_first_half"], lv["peak_second_half"]))
        if lv["valid"] is False:
            break
    assert lv["valid"] is False and lv["unbounded_growth"], (verdicts, lv["explanation"])
    assert lv["anomalies"][0]["type"] == "unbounded-versions"


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
# A negative control proves something only if the race had its chances: reads that ran while a
# write of their key was in flight (measured 250-4000 per run; at least 20, whatever the load).
@pytest.mark.parametrize(("strategy", "params"), [("atomic-replace", {}), ("read-lock", {})])
def test_atomic_reads_and_read_locks_never_tear(cluster: Cluster, tmp_path: Path, strategy: str,
                                                params: dict[str, Any]) -> None:
    res, torn, reads = _run(cluster, tmp_path, strategy, params=params)
    history = load_history(Path(res["run_dir"]) / "history.jsonl")
    racing = _racing_reads(history)
    assert racing >= 20 and torn == 0, (torn, racing, reads)
    _integrity(res, torn=False)


def test_versioned_keys_with_gc_stay_bounded_and_never_tear(cluster: Cluster, tmp_path: Path) -> None:
    grace = 0.2
    res, torn, reads = _run(cluster, tmp_path, "versioned-keys", params={"gc": "ttl", "gc_grace": grace})
    lv = res["checkers"]["live-versions"]
    assert lv["valid"] is True and not lv["unbounded_growth"], lv["explanation"]
    history = load_history(Path(res["run_dir"]) / "history.jsonl")
    ops = _pairs(history)
    # Bounded by construction: a superseded version lives `grace` more, so the live count a write
    # reports is at most 1 + the publishes of that key in the last `grace` before it (its own
    # included); each of those overlaps [invoke - grace, completion] (+50 ms for clock granularity).
    pubs = _publishes(history)
    for i, c in ops:
        if i["f"] == "write" and c["type"] == "ok":
            span = (i["time_ns"] - (grace + 0.05) * 1e9, c["time_ns"])
            near = sum(_overlaps(span, p) for p in pubs[i["key"]])
            assert c["live_versions"] <= 1 + near, (c, near)
    assert lv["peak_live_versions"] > 1  # old versions do live a while (measured peaks 31-35)
    assert lv["final_cache_versions_total"] <= 3 * 4  # after quiescence (> grace): one per key
    # the grace period covers in-flight readers: a version can only vanish `grace` after a read
    # resolved it, so only a read slower than that can restart (none did in any measured run)
    slow = [(c["index"], (c["time_ns"] - i["time_ns"]) / 1e9) for i, c in ops
            if i["f"] == "read" and c.get("restarts") and c["time_ns"] - i["time_ns"] <= grace * 1e9]
    assert not slow, slow
    assert _racing_reads(history) >= 20 and torn == 0
    _integrity(res, torn=False)


def test_eager_gc_breaks_in_flight_readers_but_they_restart_untorn(cluster: Cluster, tmp_path: Path) -> None:
    res, torn, reads = _run(cluster, tmp_path, "versioned-keys", params={"gc_grace": 0})
    lv = res["checkers"]["live-versions"]
    assert lv["peak_live_versions"] == 1  # the old version is deleted in the publish that replaces it
    # measured 279-337 restarts in ~1100 reads; every one caused by a publish of that key while the
    # read was in flight (the only way a version vanishes), so the cause is checked, not a rate
    assert lv["reads_restarted_by_gc"] >= 1, lv["explanation"]
    history = load_history(Path(res["run_dir"]) / "history.jsonl")
    pubs = _publishes(history)
    for i, c in _pairs(history):
        if i["f"] == "read" and c.get("restarts"):
            assert any(_overlaps((i["time_ns"], c["time_ns"]), p) for p in pubs[i["key"]]), c
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
    assert check_live_versions([])["valid"] == "unknown"  # no version counts: nothing to judge (2e4f9c0)


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
