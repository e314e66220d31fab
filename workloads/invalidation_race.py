"""invalidation-race: seed scenario 4 — multi-field objects read by many clients while others update
and invalidate them; torn reads, and how many cached versions pile up.

Why this workload exists: a tear needs an invalidation to land *between* two field reads of one
reader, so it needs many readers on few objects, and a slow cache link to widen each read
(default plan: latency on the Redis link). Every write writes one unique id into every field
(``{name: w, email: w, ...}``), and a read returns ``{field: id}``, so the shared ``integrity``
checker sees a torn read as mixed ids.

The follow-up ("how many versions are live at once, and does GC keep that bounded without breaking
in-flight readers?") is answered by the ``live-versions`` checker: versioned strategies report the
number of live versions of a key on every write (``live_versions``) and how often a reader found
its version collected mid-read (``restarts``); the final DB read of each key also counts the
version keys left in Redis (``cache_versions``). The verdict is bounded: at most ``max_live`` live
versions of one key at any time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from core.history import Op
from core.ops import nothing_to_judge
from strategies.multi_field import FIELDS
from workloads.base import Direct, Workload, setup_kv

STRATEGIES = ("delete-invalidate", "atomic-replace", "read-lock", "versioned-keys")


def setup(d: Direct) -> None:
    setup_kv(d)
    d.pg.execute("drop trigger if exists cc_kv_log on kv")  # write-through-db-failure's commit log


def invoke(strategy: Any, op: dict[str, Any]) -> dict[str, Any]:
    if op["f"] == "read":
        return strategy.read(op["key"])
    if op["f"] == "write":
        res = strategy.write(op["key"], {f: op["value"] for f in FIELDS})
        res.pop("value", None)
        return res
    raise ValueError(f"invalidation-race has no op {op['f']!r}")


def final_read(d: Direct, key: str) -> dict[str, Any]:
    rows = d.pg.execute("select value, version from kv where key = %s", (key,))
    value, version = (rows[0][0], rows[0][1]) if rows else (None, 0)
    n = sum(1 for _ in d.redis.scan_iter(match=f"*:{key}:v[0-9]*", count=1000))
    return {"value": value, "version": version, "cache_versions": n}


def check_live_versions(history: list[Op], max_live: int | None = None, growth: float = 1.5, min_peak: int = 10,
                        bucket_s: float = 0.5, **_: Any) -> dict[str, Any]:
    """Live cached versions per key over time, and in-flight reads broken by garbage collection.

    Unbounded growth: the peak live count in the second half of the samples is at least ``growth``
    times the first half's (and above ``min_peak``), and after quiescence at least half that many
    versions of a key are still cached: versions accumulate with the number of writes instead of
    being collected. That does not depend on how fast the machine is; ``max_live`` adds
    an absolute bound when given. No write reporting a live version count (a strategy that keeps
    one copy per key) leaves nothing to judge: unknown, with that reason.
    """
    per_key: dict[str, int] = defaultdict(int)
    timeline: dict[int, int] = defaultdict(int)
    samples = 0
    restarted = restarts = gc_failed = reads = 0
    final: dict[str, int] = {}
    worst: tuple[int, Op] | None = None
    seen: list[tuple[float, int]] = []
    for o in history:
        if o.get("process") == "nemesis" or o["type"] == "invoke":
            continue
        if o.get("phase") == "final" and o.get("source") == "db" and "cache_versions" in o:
            final[o["key"]] = int(o["cache_versions"])
            continue
        if "live_versions" in o:
            n = int(o["live_versions"])
            samples += 1
            seen.append((o["time_ns"] / 1e9, n))
            per_key[o["key"]] = max(per_key[o["key"]], n)
            b = int(o["time_ns"] / 1e9 // bucket_s)
            timeline[b] = max(timeline[b], n)
            if worst is None or n > worst[0]:
                worst = (n, o)
        if o["f"] == "read" and o.get("phase") != "final":
            reads += 1
            if o.get("restarts"):
                restarted += 1
                restarts += int(o["restarts"])
            if o["type"] == "fail" and "collected mid-read" in str(o.get("error", "")):
                gc_failed += 1
    peak = max(per_key.values(), default=0)
    first_half = second_half = 0
    if seen:
        mid = (seen[0][0] + seen[-1][0]) / 2
        first_half = max((n for t, n in seen if t <= mid), default=0)
        second_half = max((n for t, n in seen if t > mid), default=0)
    # a burst of writes while the collector is starved can also raise the second half's peak; what
    # tells "not collected" from "collected late" is what is left after quiescence (the final reads)
    left = max(final.values(), default=None)
    grows = (second_half > min_peak and second_half >= growth * max(first_half, 1)
             and (left is None or left >= second_half / 2))
    over = max_live is not None and peak > max_live
    out: dict[str, Any] = {
        "valid": not (grows or over),
        "max_live": max_live, "peak_live_versions": peak, "peak_first_half": first_half,
        "peak_second_half": second_half, "unbounded_growth": grows, "peak_per_key": dict(sorted(per_key.items())),
        "final_cache_versions": dict(sorted(final.items())), "final_cache_versions_total": sum(final.values()),
        "samples": samples, "reads": reads, "reads_restarted_by_gc": restarted, "gc_restarts": restarts,
        "reads_failed_by_gc": gc_failed,
        "timeline": [{"t": round(k * bucket_s, 3), "max_live_versions": v} for k, v in sorted(timeline.items())],
        "anomalies": [],
    }
    if worst is not None and (grows or over):
        why = (f"the peak grew from {first_half} in the first half of the run to {second_half} in the second"
               if grows else f"above the bound of {max_live}")
        out["anomalies"].append({
            "type": "unbounded-versions", "key": worst[1]["key"], "ops": [worst[1]["index"]],
            "explanation": f"{worst[0]} versions of {worst[1]['key']} were live in the cache at "
                           f"{worst[1]['time_ns'] / 1e9:.3f} s ({why}): superseded versions are not being collected"})
    out["explanation"] = (
        (f"at most {peak} versions of one key were live ({first_half} in the first half of the run, "
         f"{second_half} in the second); "
         if samples else "the strategy reported no version counts (it keeps one copy per key); ")
        + f"{sum(final.values())} version keys left in Redis at the end; {restarted} of {reads} reads had their "
          f"version collected mid-read and restarted, {gc_failed} gave up")
    if not samples:
        return nothing_to_judge("no write reported its live version count (the strategy keeps one copy "
                                "per key, or nothing was written)", **out)
    return out


WORKLOAD = Workload(
    name="invalidation-race",
    description="Multi-field objects read field by field by many clients while others update and invalidate",
    strategies=STRATEGIES,
    default_strategy="delete-invalidate",
    keys=3,
    mix={"read": 0.8, "write": 0.2},
    time_limit=6.0,
    concurrency=8,
    quiesce=0.5,
    checkers=("integrity", "live-versions", "convergence", "perf"),
    checker_opts={},
    extra_checkers={"live-versions": check_live_versions},
    checker_strategies={"live-versions": ("versioned-keys",)},  # the others keep one copy per key
    plans={
        "none": "",
        "redis-latency": "latency:redis:ms=3@5%+90%",
        "db-latency": "latency:postgres:ms=20@5%+90%",
        "redis-jitter": "latency:redis:ms=2,jitter=2@5%+90%",
    },
    default_plan="redis-latency",
    fault_menu=["latency:redis:ms=3", "latency:postgres:ms=20", "latency:redis:ms=2,jitter=2"],
    setup=setup,
    invoke=invoke,
    final_read=final_read,
)
