"""cache-warming (seed scenario 5): a cold cache warmed in the background while live traffic arrives.

Why this workload exists: right after a deploy or a cache flush every request is a DB hit; the seed
asks how to coordinate a warming job with live requests so that few users see slow responses, and
what the DB pays meanwhile. Set-up: ``kv`` holds ``ROWS`` (2000) profiles k0..k1999, Redis starts
empty, and ``access_log`` holds yesterday's request counts (Zipf 1.1: k0 is the hottest), which the
hot-first job reads. Live traffic is Zipfian over the same keys (``zipf:1.1``), 1% writes (each invalidates a key: more writes means a higher steady miss rate); the
default plan puts a 100 ms latency toxic on PostgreSQL for the whole run, so a DB hit is slow.
Strategies: strategies/warming.py (none, sequential, hot-first, read-aside + background warming).

Checkers of this workload:

* ``stale-set``: the warmer (or a read-aside fill) must never put back a value older than one a
  write already committed. Every write commits, then invalidates, before it is acknowledged; so a
  cache *hit* that returns a version older than a write acknowledged before the read began can only
  come from a fill that set an old value after the invalidation. Exact, no timing guess. Each
  anomaly names the write, the first stale hit, who filled it (warmer | read) and how many hits
  served it. Final reads through the node count too (a stale set nobody overwrote stays forever).
* ``warm-up``: the figures. Share of slow reads (latency >= ``slow_ms``, default 50; a read that
  failed or timed out is slow) per ``bucket_s`` (1 s) over the load phase; DB load (live DB hits,
  warmer queries and rows); when the job finished (``warmer_done_s``) and when traffic was warm
  (``time_to_warm_s``: from the first bucket after which every bucket of at least ``min_reads`` (20)
  reads has a slow share <= ``threshold``, default 0.1 — writes keep invalidating hot keys, so the
  steady state is a few percent, not zero; None = not within the run); hit rate; and the cost:
  ``db_hit_cost`` (the strategy parameter, or this checker's option) per live DB hit plus, per row
  the job loads, ``db_hit_cost * warm_row_weight`` (default 1: a loaded row costs a DB hit; batching
  may make it cheaper). Valid unless ``max_slow_share`` is given and exceeded.

Rows beyond ``ROWS`` (``--keys`` > 2000) do not exist in the DB: they read as null, version 0.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any

from core.ops import Op, nothing_to_judge
from workloads.base import Direct, Workload, final_kv, invoke_register, paired, setup_kv

WARM_STRATEGIES = ("warm-none", "warm-sequential", "warm-hot-first", "warm-read-aside")
ROWS = 2000
ZIPF_S = 1.1
SLOW_DB = "latency:postgres:ms=100@0+100%"


def setup_warming(d: Direct) -> None:
    setup_kv(d)  # flushes Redis: the cache starts cold
    d.pg.execute("insert into kv (key, value, version) select 'k' || i, '0'::jsonb, 1 "
                 "from generate_series(0, %s) i", (ROWS - 1,))
    d.pg.execute("create table if not exists access_log (key text primary key, hits bigint not null)")
    d.pg.execute("truncate access_log")
    d.pg.execute("insert into access_log (key, hits) select 'k' || i, round(1e6 / power(i + 1, %s)) "
                 "from generate_series(0, %s) i", (ZIPF_S, ROWS - 1))


# -- history helpers ------------------------------------------------------------------------------
def _completions(history: list[dict[str, Any]]) -> tuple[list[Op], dict[str, float]]:
    """The client ops that completed (invoke order), and phase start times in ns."""
    view = paired(history)
    phases: dict[str, float] = {}
    for rec in view.nemesis:
        if rec.get("f") == "phase" and isinstance(rec.get("value"), str):
            phases.setdefault(rec["value"], rec["time_ns"])
    return [op for op in view.ops if op.comp is not None], phases


def check_stale_set(history: list[dict[str, Any]], max_anomalies: int = 20, **_: Any) -> dict[str, Any]:
    ops, _phases = _completions(history)
    acked: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # key -> (ack ns, version, index)
    for op in ops:
        if op.f == "write" and op.type == "ok" and isinstance(op.version, int):
            acked[op.key].append((op.t1, op.version, op.cindex))
    prefix_max: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
    for key, ws in acked.items():
        ws.sort()
        best: tuple[int, int] = (0, -1)
        pm = []
        for _t, v, i in ws:
            if v > best[0]:
                best = (v, i)
            pm.append(best)
        prefix_max[key] = ([w[0] for w in ws], pm)
    stale: dict[tuple[str, int, Any], dict[str, Any]] = {}
    hits = judged = 0
    for op in ops:
        if op.f != "read" or op.type != "ok" or not op.hit or not isinstance(op.version, int):
            continue
        hits += 1
        pm = prefix_max.get(op.key)
        if pm is None:
            continue
        i = bisect.bisect_left(pm[0], op.t0) - 1  # writes acknowledged before the read began
        if i < 0:
            continue
        judged += 1
        newest, w_index = pm[1][i]
        if op.version >= newest:
            continue
        filled_by = op.comp.get("filled_by")
        k = (op.key, op.version, filled_by)
        s = stale.setdefault(k, {"key": op.key, "version": op.version, "filled_by": filled_by,
                                 "newer": newest, "write": w_index, "first": op.cindex, "t": op.t1,
                                 "served": 0, "final": False})
        s["served"] += 1
        s["newer"] = max(s["newer"], newest)
        s["final"] = s["final"] or op.is_final
    by_filler: dict[str, int] = defaultdict(int)
    for s in stale.values():
        by_filler[str(s["filled_by"])] += 1
    anomalies = []
    for s in sorted(stale.values(), key=lambda s: s["t"])[:max_anomalies]:
        who = {"warmer": "the warming job", "read": "a read-aside fill"}.get(s["filled_by"], "some fill")
        anomalies.append({
            "type": "stale-set", "key": s["key"], "ops": [s["write"], s["first"]],
            "explanation": f"{s['key']}: a write of version {s['newer']} was acknowledged (it had committed and "
            f"invalidated the cache), yet from {s['t'] / 1e9:.3f} s the cache served version {s['version']}, set by "
            f"{who} that had read the DB before that write and set its value after the invalidation; it served "
            f"{s['served']} hit(s){' and was still there at the final read' if s['final'] else ''}"})
    out = {"valid": not stale, "stale_sets": len(stale), "stale_hits": sum(s["served"] for s in stale.values()),
           "by_filler": dict(by_filler), "still_cached_at_end": sum(1 for s in stale.values() if s["final"]),
           "hits_checked": hits, "hits_after_a_write": judged, "writes": sum(len(w) for w in acked.values()),
           "anomalies": anomalies}
    if not judged:
        why = ("no acknowledged writes (of known version)" if not acked else
               "no cache hits (of known version)" if not hits else
               "no cache hit on a key after an acknowledged write to it")
        return nothing_to_judge(why, **out)
    return out


def check_warm_up(history: list[dict[str, Any]], slow_ms: float = 50.0, bucket_s: float = 1.0,
                  threshold: float = 0.1, min_reads: int = 20, db_hit_cost: float | None = None, warm_row_weight: float = 1.0,
                  max_slow_share: float | None = None, **_: Any) -> dict[str, Any]:
    ops, phases = _completions(history)
    t_load = phases.get("load", 0.0)
    t_end = phases.get("heal", max((op.comp["time_ns"] for op in ops), default=t_load))
    span = max(t_end - t_load, 1.0)
    nb = max(1, math.ceil(span / (bucket_s * 1e9)))
    reads = [0] * nb
    slow = [0] * nb
    db = [0] * nb
    rows_at: list[dict[Any, int]] = [defaultdict(int) for _ in range(nb)]
    last_warm: dict[Any, dict[str, Any]] = {}
    done_est: list[float] = []
    live_hits = writes = slow_total = n_reads = hit_count = 0
    price_seen: float | None = None
    for op in ops:
        if op.is_final or op.t0 < t_load or op.t0 > t_end:
            continue
        if op.f == "write":
            writes += op.type == "ok"
            continue
        if op.f != "read":
            continue
        b = min(nb - 1, int((op.t0 - t_load) / (bucket_s * 1e9)))
        is_slow = op.type != "ok" or (op.t1 - op.t0) / 1e6 >= slow_ms  # failed or timed out: slow
        reads[b] += 1
        slow[b] += is_slow
        n_reads += 1
        slow_total += is_slow
        if op.type == "ok":
            hit_count += bool(op.hit)
            if op.db_load:
                db[b] += 1
                live_hits += 1
            w = op.comp.get("warm")
            if isinstance(w, dict):
                node = op.node
                prev = last_warm.get(node)
                if prev is None or w.get("rows", 0) >= prev.get("rows", 0):
                    last_warm[node] = w
                rows_at[b][node] = max(rows_at[b][node], int(w.get("rows", 0)))
                if w.get("done_ago_ms") is not None:
                    done_est.append(op.t1 - float(w["done_ago_ms"]) * 1e6)
                if isinstance(w.get("cost"), (int, float)):
                    price_seen = float(w["cost"])
    # warmer rows loaded per bucket (cumulative per node -> deltas)
    warm_rows = [0] * nb
    cum: dict[Any, int] = defaultdict(int)
    for b in range(nb):
        for node, r in rows_at[b].items():
            if r > cum[node]:
                warm_rows[b] += r - cum[node]
                cum[node] = r
    share = [round(s / r, 4) if r else None for s, r in zip(slow, reads, strict=True)]
    warm_from = None
    for i in range(nb - 1, -1, -1):
        if share[i] is None or reads[i] < min_reads:
            continue  # an empty or tiny (trailing) bucket says nothing either way
        if share[i] > threshold:
            break
        warm_from = i
    jobs = [w for w in last_warm.values() if w.get("job")]
    job_rows = sum(int(w.get("rows", 0)) for w in jobs)
    job_queries = sum(int(w.get("queries", 0)) for w in jobs)
    rejected = sum(int(w.get("rejected", 0)) for w in jobs)
    price = db_hit_cost if db_hit_cost is not None else (price_seen if price_seen is not None else 0.01)
    cost_live = live_hits * price
    cost_warm = job_rows * price * warm_row_weight
    overall = round(slow_total / n_reads, 4) if n_reads else None
    out: dict[str, Any] = {
        "valid": True, "slow_ms": slow_ms, "threshold": threshold, "bucket_s": bucket_s,
        "reads": n_reads, "slow_reads": slow_total, "slow_share": overall,
        "hit_rate": round(hit_count / n_reads, 4) if n_reads else None, "writes": writes,
        "db_load": {"live_db_hits": live_hits, "warmer_queries": job_queries, "warmer_rows": job_rows,
                    "total_queries": live_hits + job_queries},
        "warmer": {"job": bool(jobs), "rows": job_rows, "rejected_sets": rejected,
                   "done_s": round((min(done_est) - t_load) / 1e9, 3) if done_est else None,
                   "errors": sorted({w["error"] for w in jobs if w.get("error")})},
        "time_to_warm_s": None if warm_from is None else round(warm_from * bucket_s, 3),
        "cost": {"db_hit_cost": price, "warm_row_weight": warm_row_weight, "live": round(cost_live, 4),
                 "warmer": round(cost_warm, 4), "total": round(cost_live + cost_warm, 4),
                 "per_slow_read": round((cost_live + cost_warm) / slow_total, 4) if slow_total else None},
        "timeline": [{"t_s": round(i * bucket_s, 3), "reads": reads[i], "slow": slow[i], "slow_share": share[i],
                      "live_db_hits": db[i], "warmer_rows": warm_rows[i]} for i in range(nb)],
        "anomalies": [],
    }
    out["warmer_done_s"] = out["warmer"]["done_s"]
    if n_reads == 0:
        return nothing_to_judge("no reads during the load phase", **out)
    if max_slow_share is not None and overall is not None and overall > max_slow_share:
        out["valid"] = False
        out["anomalies"].append({"type": "slow-warm-up", "key": None, "ops": [],
                                 "explanation": f"{slow_total} of {n_reads} reads ({overall:.1%}) took >= {slow_ms:g} ms "
                                 f"or failed during the load phase; the bound is {max_slow_share:.1%}"})
    return out


WORKLOAD = Workload(
    name="cache-warming",
    description="A cold cache warmed in the background under Zipfian live traffic and a slow DB",
    strategies=WARM_STRATEGIES,
    default_strategy="warm-read-aside",
    keys=ROWS,
    key_dist=f"zipf:{ZIPF_S}",
    mix={"read": 0.99, "write": 0.01},
    time_limit=8.0,
    concurrency=16,
    rate=800.0,
    quiesce=0.2,
    checkers=("stale-set", "warm-up", "convergence"),
    checker_opts={"warm-up": {"slow_ms": 50.0, "bucket_s": 1.0, "threshold": 0.1}},
    extra_checkers={"stale-set": check_stale_set, "warm-up": check_warm_up},
    plans={"none": "", "slow-db": SLOW_DB, "very-slow-db": "latency:postgres:ms=300@0+100%"},
    default_plan="slow-db",
    fault_menu=["latency:postgres:ms=100", "latency:postgres:ms=300", "latency:redis:ms=20"],
    setup=setup_warming,
    invoke=invoke_register,
    final_read=final_kv,
)
