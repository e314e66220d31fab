"""cache-warming (seed scenario 5) on the real cluster: a cold cache, Zipfian traffic, a slow DB.

Positive control: the sequential warming job reads a large batch, then loads it at its throttled
pace while writes go on; it puts back values older than writes that committed and invalidated in
between (``stale-set``, filled by the warmer, seen by the shared convergence checker too when one
survives to the end). Negative control: read-aside + hot-first warming with ``guard=version``
(tombstones + compare-and-set fills) never lets the cache go backwards, and the warm-up figures
(slow-request share over time, DB load, time to warm, cost per DB hit) are produced.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core.clients import Pg, redis_client
from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare
from strategies.base import Env
from strategies.warming import SequentialWarming
from workloads.base import Direct
from workloads.cache_warming import check_warm_up, setup_warming

# 500 of the 2000 rows are requested (final reads of all 2000 would cost seconds); 10% writes
KW = dict(keys=500, mix="read=0.9,write=0.1", time_limit=4.0, concurrency=16, quiesce=0.2)


def _run(cluster: Cluster, tmp_path: Path, strategy: str, **kw) -> dict:
    cfg = RunConfig(workload="cache-warming", strategy=strategy, reports=str(tmp_path), seed=kw.pop("seed", 5),
                    **(KW | kw))
    return Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()


def test_naive_sequential_warmer_sets_stale_values(cluster: Cluster, tmp_path: Path) -> None:
    # batch=2000: the job reads the whole table at once (an export), then loads it over ~4 s
    res = _run(cluster, tmp_path, "warm-sequential", params={"guard": "none", "batch": 2000})
    ss = res["checkers"]["stale-set"]
    assert res["valid"] is False and ss["valid"] is False, ss
    # the export is read once, then loaded over ~4 s while 10% of the ops write: measured 22-23
    assert ss["by_filler"].get("warmer", 0) >= 3, ss
    a = ss["anomalies"][0]
    assert a["type"] == "stale-set" and "warming job" in a["explanation"]
    assert res["checkers"]["warm-up"]["warmer"]["rows"] > 0


def test_guarded_read_aside_warming_never_goes_backwards(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "warm-read-aside", params={"guard": "version", "batch": 1000})
    ss, wu = res["checkers"]["stale-set"], res["checkers"]["warm-up"]
    assert ss["valid"] is True and ss["stale_sets"] == 0 and ss["hits_checked"] > 100, ss
    assert res["checkers"]["convergence"]["valid"] is True
    assert res["valid"] is True
    # the figures: a slow-share timeline, DB load split live/warmer, a cost, warm-up progress
    assert wu["slow_reads"] > 0 and 0 < wu["slow_share"] < 1
    assert wu["timeline"] and wu["timeline"][0]["slow_share"] is not None
    assert wu["db_load"]["live_db_hits"] > 0 and wu["db_load"]["warmer_queries"] > 0
    assert wu["cost"]["total"] == pytest.approx(wu["cost"]["live"] + wu["cost"]["warmer"])
    assert wu["cost"]["db_hit_cost"] == 0.01  # the strategy's default price, carried in the history


def test_bad_parameters_are_rejected_before_anything_starts() -> None:
    for params, msg in (({"guard": "maybe"}, "guard"), ({"warm_rate": -5}, "warm_rate"), ({"batch": 0}, "batch"),
                        ({"db_hit_cost": -1}, "db_hit_cost"), ({"fill_on_miss": "perhaps"}, "fill_on_miss")):
        with pytest.raises(ConfigError, match=msg):
            prepare(RunConfig(workload="cache-warming", strategy="warm-hot-first", params=params))
    with pytest.raises(ConfigError, match="cannot serve"):
        prepare(RunConfig(workload="register", strategy="warm-none"))


def test_close_stops_the_warming_job(cluster: Cluster) -> None:
    d = cluster.direct
    direct = Direct(redis_client(d["redis"]), Pg(d["postgres"]), d)
    try:
        setup_warming(direct)
    finally:
        direct.redis.close()
        direct.pg.close()
    s = SequentialWarming(warm_rate=50)  # 2000 rows would take 40 s
    env = Env(cluster.endpoints, node=0)
    s.setup(env)
    try:
        assert s._thread is not None and s._thread.is_alive()
        time.sleep(0.3)
    finally:
        t0 = time.monotonic()
        s.close()
        env.close()
    assert not s._thread.is_alive() and time.monotonic() - t0 < 3
    assert not [t for t in threading.enumerate() if t.name.startswith("warmer-")]


def test_warm_up_cost_per_db_hit() -> None:
    """The follow-up's arithmetic on a hand-built history: live DB hits and warmer rows, priced."""
    h: list[dict] = [{"index": 0, "time_ns": 0, "process": "nemesis", "type": "info", "f": "phase", "value": "load"}]
    i = 1
    for n, (lat_ms, db) in enumerate([(120, True), (1, False), (130, True), (2, False)]):
        t = n * 300_000_000
        w = {"rows": 100 * (n + 1), "queries": n + 1, "rejected": 0, "cost": 0.02, "job": True, "done_ago_ms": None}
        h.append({"index": i, "time_ns": t, "process": 0, "type": "invoke", "f": "read", "key": "k0"})
        h.append({"index": i + 1, "time_ns": t + lat_ms * 1_000_000, "process": 0, "type": "ok", "f": "read",
                  "key": "k0", "hit": not db, "db_load": db, "node": 0, "warm": w, "version": 1})
        i += 2
    h.append({"index": i, "time_ns": 1_200_000_000, "process": "nemesis", "type": "info", "f": "phase", "value": "heal"})
    r = check_warm_up(h, slow_ms=50, bucket_s=0.5)
    assert r["slow_reads"] == 2 and r["slow_share"] == 0.5
    assert r["db_load"] == {"live_db_hits": 2, "warmer_queries": 4, "warmer_rows": 400, "total_queries": 6}
    assert r["cost"]["live"] == pytest.approx(0.04) and r["cost"]["warmer"] == pytest.approx(8.0)
    r = check_warm_up(h, db_hit_cost=1.0, warm_row_weight=0.1)
    assert r["cost"]["live"] == pytest.approx(2.0) and r["cost"]["warmer"] == pytest.approx(40.0)
