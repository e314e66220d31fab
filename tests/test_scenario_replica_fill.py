"""replica-fill on the real postgres=replica topology: filling cache misses from a lagging replica
leaves the cache holding values older than acknowledged writes for good (positive control); filling
from the primary under a row lock, from the replica after this node's commit LSN, or with version
checks holds (negative controls); fill-after-lsn promises nothing across nodes. Plus the
replica-staleness checker both ways on small hand-made histories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checkers import convergence
from harness.cluster import Cluster
from harness.runner import Run, RunConfig, prepare
from harness.topology import Topology
from workloads.replica_fill import check_replica_staleness

WL = "replica-fill"


@pytest.fixture(scope="module")
def pgr() -> Iterator[Cluster]:
    with Cluster(services=("redis", "postgres"), topology=Topology(postgres="replica")) as c:
        yield c


def _run(c: Cluster, tmp_path: Path, strategy: str, faults: str = "lag", **kw: Any) -> dict[str, Any]:
    c.toxiproxy.reset()
    cfg = RunConfig(workload=WL, strategy=strategy, faults=faults, reports=str(tmp_path),
                    time_limit=kw.pop("time_limit", 4.0), seed=kw.pop("seed", 3), quiesce=kw.pop("quiesce", 0.5), **kw)
    return Run(prepare(cfg), cluster=c, progress=False, render=False).execute()


def _lag_verified(res: dict[str, Any]) -> None:
    assert [f["fault"].partition("(")[0] for f in res["faults"]] == ["lag"], res["faults"]
    assert all(f.get("verified") for f in res["faults"]), res["faults"]


@pytest.mark.cluster
def test_fill_from_replica_keeps_stale_values_for_good(pgr: Cluster, tmp_path: Path) -> None:
    res = _run(pgr, tmp_path, "fill-from-replica")
    _lag_verified(res)
    ch = res["checkers"]
    assert res["valid"] is False
    conv = ch["convergence"]
    # a key whose last op was a read after its last write's invalidation: the read missed and cached the
    # replica's old row, and nothing invalidated it again (with 9 reads per write, ~5 of 6 keys)
    assert conv["valid"] is False and conv["diverged"] >= 1, conv
    assert {a["type"] for a in conv["anomalies"]} == {"divergent"}
    rs = ch["replica-staleness"]
    assert rs["valid"] is True  # a measurement without bound_ms
    assert rs["behind"] > 10 and 1 <= rs["stale_fills_kept"] <= conv["diverged"], rs["explanation"]
    assert rs["behind_curve"][0] == {"ms": 0, "share": rs["behind_share"]}
    assert ch["versions"]["valid"] is False  # stale reads of the cache during the load, too


@pytest.mark.cluster
@pytest.mark.parametrize("strategy", ["fill-from-primary", "fill-after-lsn", "version-checked-fill"])
def test_guarded_fills_hold_under_replica_lag(pgr: Cluster, tmp_path: Path, strategy: str) -> None:
    res = _run(pgr, tmp_path, strategy)
    _lag_verified(res)
    ch = res["checkers"]
    assert res["valid"] is True, {k: v.get("explanation", v.get("valid")) for k, v in ch.items()}
    assert ch["convergence"]["diverged"] == 0 and ch["convergence"]["keys_checked"] == 6
    assert ch["versions"]["valid"] is True
    if strategy != "fill-from-primary":  # they read the replica, and never behind an acknowledged write
        rs = ch["replica-staleness"]
        assert rs["replica_reads"] > 0 and rs["behind"] == 0 and rs["stale_fills_kept"] == 0, rs["explanation"]
    else:
        assert "replica-staleness" not in ch  # it never reads the replica: nothing for that checker


@pytest.mark.cluster
def test_fill_after_lsn_promises_nothing_across_nodes(pgr: Cluster, tmp_path: Path) -> None:
    # node 1 does not know node 0's commit LSN: it fills from the lagging replica after node 0's DEL
    res = _run(pgr, tmp_path, "fill-after-lsn", nodes=2)
    _lag_verified(res)
    assert res["valid"] is False
    assert res["checkers"]["replica-staleness"]["behind"] > 0
    assert res["checkers"]["versions"]["valid"] is False


# -- replica-staleness on small histories ------------------------------------------------------
def _op(i: int, t: float, process: Any, type_: str, f: str, key: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {"index": i, "time_ns": int(t * 1e9), "process": process, "type": type_, "f": f, "key": key,
            "value": value, **kw}


def _history(replica_version: int, final_cache: int | None = None) -> list[dict[str, Any]]:
    """k written twice (v1 acked at 0.1 s, v2 at 0.3 s); one replica read at 0.5 s of ``replica_version``;
    final reads: the cache's (version ``final_cache``) and the DB's (v2)."""
    values = {0: None, 1: "a", 2: "b"}
    h = [_op(0, 0.0, 0, "invoke", "write", "k", "a"), _op(1, 0.1, 0, "ok", "write", "k", "a", version=1),
         _op(2, 0.2, 0, "invoke", "write", "k", "b"), _op(3, 0.3, 0, "ok", "write", "k", "b", version=2),
         _op(4, 0.5, 1, "invoke", "read", "k", None),
         _op(5, 0.51, 1, "ok", "read", "k", values[replica_version], version=replica_version, source="replica",
             hit=False)]
    if final_cache is not None:
        h += [_op(6, 2.0, 9, "invoke", "read", "k", None, phase="final", node=0),
              _op(7, 2.01, 9, "ok", "read", "k", values[final_cache], version=final_cache, source="cache", hit=True,
                  phase="final", node=0),
              _op(8, 2.02, 10, "invoke", "read", "k", None, phase="final", source="db"),
              _op(9, 2.03, 10, "ok", "read", "k", "b", version=2, phase="final", source="db")]
    return h


def test_replica_staleness_measures_how_far_behind_replica_reads_were() -> None:
    stale = check_replica_staleness(_history(0))
    assert stale["valid"] is True and stale["replica_reads"] == 1 and stale["behind"] == 1
    assert stale["lag_ms"]["max"] == pytest.approx(400, abs=1)  # since v1's ack at 0.1 s
    assert stale["versions_behind"] == {"2": 1}
    curve = {p["ms"]: p["share"] for p in stale["behind_curve"]}
    assert curve[300] == 1.0 and curve[500] == 0.0
    assert stale["timeline"] == [{"t": 0.5, "reads": 1, "behind": 1, "max_lag_ms": pytest.approx(400, abs=1)}]
    fresh = check_replica_staleness(_history(2))
    assert fresh["valid"] is True and fresh["behind"] == 0 and fresh["lag_ms"]["max"] == 0


def test_replica_staleness_with_a_bound_both_ways() -> None:
    bad = check_replica_staleness(_history(1), bound_ms=100)
    assert bad["valid"] is False and bad["over_bound"] == 1
    assert bad["lag_ms"]["max"] == pytest.approx(200, abs=1) and bad["versions_behind"] == {"1": 1}
    (a,) = bad["anomalies"]
    assert a["type"] == "stale-replica-read" and a["ops"] == [4, 5] and "over the 100 ms bound" in a["explanation"]
    assert check_replica_staleness(_history(1), bound_ms=250)["valid"] is True
    assert check_replica_staleness(_history(2), bound_ms=0)["valid"] is True


def test_a_stale_fill_the_cache_kept_is_caught_and_counted() -> None:
    kept = _history(1, final_cache=1)  # the cache still holds the replica's v1, the DB has v2
    rs = check_replica_staleness(kept)
    assert rs["stale_fills_kept"] == 1 and rs["kept"][0]["cached_version"] == 1 and rs["kept"][0]["db_version"] == 2
    conv = convergence.check(kept)  # the shared checker sees the same cache disagreeing with the DB
    assert conv["valid"] is False and conv["diverged"] == 1
    healed = _history(1, final_cache=2)
    assert check_replica_staleness(healed)["stale_fills_kept"] == 0
    assert convergence.check(healed)["valid"] is True


def test_replica_staleness_without_replica_reads_is_unknown() -> None:
    h = _history(0)[:4]  # writes only
    assert check_replica_staleness(h)["valid"] == "unknown"
