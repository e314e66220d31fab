"""thundering-herd (seed scenario 7): a hot key expires under many concurrent readers, slow DB.

A couple of hot keys (``k0``, ``k1``) with a short cache TTL (1 s by default) are read by C
concurrent workers in a tight loop while PostgreSQL answers slowly (a 100 ms latency toxic for the
whole run), so every expiry is a window in which all readers miss. A few writes (2%) commit to the
DB only (hot soft data refreshed by its TTL), so a later fill carries a newer version and a late
set of an older one shows; with ``-p invalidate=true`` writes also delete the key, and each delete
is an invalidation event counted like an expiry.

The strategies (strategies/herd.py) number every cache fill and report, on each DB load, the fill
whose end it is reacting to (``epoch``), so the checkers here count exactly, with no timing guess:

* ``herd-epochs``: DB loads per (key, expiry/invalidation event): max, p99, mean, histogram, per
  node; the cold start (epoch 0) is reported apart and left out of the verdict. Valid when no event
  cost more than ``bound`` loads (default 1; ``scope: node`` bounds loads per node instead, which
  is what single-flight promises). Also the waiter stall (how long coalesced readers waited:
  max/p99, ~lock TTL when a holder dies), fallbacks, and sets refused by a fencing token or lease.
* ``late-fill``: a fill that put an *older* version than an earlier fill of the same key (the
  cache went backwards): a late set by a loader that read the DB before another loader that
  already filled — the herd's race, or a lock holder that outlived its lock. Each anomaly names
  both fills, the versions and how many reads the stale fill served.

Follow-up (the lock holder dies mid-fetch): plan ``holder-crash`` on ``herd-lock`` or ``herd-lease``
with ``--nodes 2`` or more. Its step ``kill-holder`` makes the next lock holder stall between its
DB read and its set (``arm_stall``; or the run's own ``-p stall_at=S``) and crashes that holder's
node while the others keep reading: the waiters stall until the lock TTL frees the key. Plan
``holder-pause``: its step ``pause-holder`` makes the next holder stall past its lock TTL (lock TTL
+ 0.5 s, or the run's ``stall_at``/``stall_for``), so it wakes after its lock expired, and the step
``db-write`` (at 40%) commits new versions meanwhile, so the successor caches a newer version and
the woken holder's late set is a stale set — unless ``fencing=true``. Both refuse to start
(naming what is missing) with a strategy that has no lock holder, and ``holder-crash`` with fewer
than two nodes; a step that found no holder to act on is reported not verified.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from core.clients import Pg, redis_client
from core.ops import nothing_to_judge
from workloads.base import Direct, NothingDone, Workload, final_kv, invoke_register, pct, requires, setup_kv

HERD_STRATEGIES = ("herd-none", "herd-lock", "herd-single-flight", "herd-xfetch", "herd-lease")
SLOW_DB = "latency:postgres:ms=100@0+100%"


def setup_herd(d: Direct) -> None:
    setup_kv(d)
    d.pg.execute("insert into kv (key, value, version) select 'k' || i, '0'::jsonb, 1 from generate_series(0, 63) i")


def _client_ok_reads(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in history if o["process"] != "nemesis" and o["type"] == "ok" and o["f"] == "read"
            and o.get("phase") != "final"]


def check_herd_epochs(history: list[dict[str, Any]], bound: int = 1, scope: str = "cluster",
                      include_cold: bool = False, **_: Any) -> dict[str, Any]:
    reads = _client_ok_reads(history)
    loads = [o for o in reads if o.get("db_load")]
    if not loads:
        return nothing_to_judge("no DB loads", loads=0)
    if not any("epoch" in o for o in loads):
        return nothing_to_judge("no DB load reported an epoch (strategy not instrumented for exact herd "
                                "counting; see strategies/herd.py)", loads=len(loads))
    by_event: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for o in loads:
        by_event[(o["key"], int(o.get("epoch", 0)))].append(o)
    events = {e: ops for e, ops in by_event.items() if include_cold or e[1] != 0}
    cold = {e: len(ops) for e, ops in by_event.items() if e[1] == 0}
    counts = [len(ops) for ops in events.values()]
    per_node = [n for ops in events.values() for n in Counter(o.get("node") for o in ops).values()]
    judged = per_node if scope == "node" else counts
    worst = max(judged, default=0)
    anomalies = []
    for (key, epoch), ops in sorted(events.items(), key=lambda kv: -len(kv[1])):
        n = max(Counter(o.get("node") for o in ops).values()) if scope == "node" else len(ops)
        if n <= bound or len(anomalies) >= 10:
            continue
        span = (max(o["time_ns"] for o in ops) - min(o["time_ns"] for o in ops)) / 1e6
        nodes = sorted({o.get("node") for o in ops}, key=str)
        anomalies.append({"type": "herd", "key": key, "ops": [o["index"] for o in ops][:50],
                          "explanation": f"when fill {epoch} of {key} expired or was deleted, {len(ops)} reads "
                          f"queried the DB to refill it (on nodes {nodes}, completions within {span:.0f} ms); "
                          f"the bound is {bound} per {'node' if scope == 'node' else 'event'}"})
    waits = [float(o["waited_ms"]) for o in reads if o.get("waited_ms") is not None and not o.get("db_load")]
    hits = sum(1 for o in reads if o.get("hit"))
    stalled = [o for o in history if o.get("stalled_ms")]
    infos = [o for o in history if o["process"] != "nemesis" and o["type"] == "info" and o["f"] == "read"]
    out: dict[str, Any] = {
        "valid": worst <= bound, "bound": bound, "scope": scope,
        "events": len(counts), "loads": len(loads), "cold_loads": sum(cold.values()),
        "loads_per_event": {"max": max(counts, default=0), "p99": pct(counts, 99), "p50": pct(counts, 50),
                            "mean": round(sum(counts) / len(counts), 2) if counts else 0.0},
        "loads_per_event_per_node_max": max(per_node, default=0),
        "histogram": dict(sorted(Counter(counts).items())),
        "early_refreshes": sum(1 for o in loads if o.get("early")),
        "fallback_loads": sum(1 for o in loads if o.get("fallback")),
        "rejected_sets": sum(1 for o in loads if o.get("rejected")),
        "waiter_stall_ms": {"n": len(waits), "max": max(waits, default=0.0), "p99": pct(waits, 99),
                            "p50": pct(waits, 50)},
        "stalled_holders": [{"index": o["index"], "node": o.get("node"), "stalled_ms": o["stalled_ms"]}
                            for o in stalled],
        "read_infos": len(infos),
        "hit_rate": round(hits / len(reads), 4) if reads else None,
        "anomalies": anomalies,
    }
    if not counts:
        return nothing_to_judge("no expiry or invalidation event after the cold start", **out)
    return out


def check_herd_db(history: list[dict[str, Any]], bound: int = 1, window_ms: float = 200.0,
                  **_: Any) -> dict[str, Any]:
    """DB loads per expiry counted on the DB side (app nodes: a black box's own word is not taken).

    The run's ``db-reads`` record lists every ``SELECT ... FROM kv`` PostgreSQL logged during the load
    phase, with its key and the server's time. Loads of one key less than ``window_ms`` apart are one
    refill event (a herd arrives within milliseconds; a key's next expiry is a TTL later); the first
    event of each key is the cold start and is left out. Valid when no event cost more than
    ``bound`` loads."""
    rec = next((o.get("value") for o in history if o.get("process") == "nemesis" and o.get("f") == "db-reads"), None)
    if not isinstance(rec, dict):
        return nothing_to_judge("no DB-side record of reads (runs with app nodes record one)")
    if rec.get("unavailable"):
        return nothing_to_judge(f"DB reads not observable: {rec['unavailable']}")
    load = next((o["time_ns"] for o in history if o.get("f") == "phase" and o.get("value") == "load"), 0) / 1e9
    heal = next((o["time_ns"] for o in history if o.get("f") == "phase" and o.get("value") == "heal"), None)
    until = heal / 1e9 if heal is not None else float("inf")
    by_key: dict[str, list[float]] = defaultdict(list)
    for t, key in rec.get("loads") or []:
        if load <= t <= until:
            by_key[key].append(t)
    events: list[tuple[str, list[float]]] = []
    cold = 0
    for key, times in sorted(by_key.items()):
        times.sort()
        groups: list[list[float]] = []
        for t in times:
            if groups and (t - groups[-1][0]) * 1000 <= window_ms:
                groups[-1].append(t)
            else:
                groups.append([t])
        cold += len(groups[0])
        events += [(key, g) for g in groups[1:]]
    counts = [len(g) for _, g in events]
    anomalies = [{"type": "herd", "key": key,
                  "explanation": f"PostgreSQL logged {len(g)} reads of {key} within {(g[-1] - g[0]) * 1000:.0f} ms "
                  f"from {g[0]:.3f} s: one refill cost {len(g)} DB loads (the bound is {bound})"}
                 for key, g in sorted(events, key=lambda e: -len(e[1])) if len(g) > bound][:10]
    out: dict[str, Any] = {
        "valid": max(counts, default=0) <= bound, "bound": bound, "window_ms": window_ms,
        "source": rec.get("source"), "events": len(counts), "loads": sum(counts) + cold, "cold_loads": cold,
        "loads_per_event": {"max": max(counts, default=0), "p99": pct(counts, 99), "p50": pct(counts, 50),
                            "mean": round(sum(counts) / len(counts), 2) if counts else 0.0},
        "histogram": dict(sorted(Counter(counts).items())), "anomalies": anomalies,
    }
    if not counts:
        return nothing_to_judge("the DB saw no refill after the cold start (no key expired during the load?)", **out)
    return out


def check_late_fill(history: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
    """A fill that cached an older version than an earlier fill of the same key (the cache went
    backwards): a loader that read the DB earlier set its value later. Not cache-warming's
    ``stale-set`` (a fill after a write's invalidation), which judges against acknowledged writes."""
    fills: dict[str, dict[int, int]] = defaultdict(dict)  # key -> fill id -> version
    served: Counter[tuple[str, int]] = Counter()
    first: dict[tuple[str, int], int] = {}
    for o in _client_ok_reads(history):
        f, v = o.get("fill"), o.get("version")
        if not isinstance(f, int) or f < 1 or not isinstance(v, int):
            continue
        fills[o["key"]][f] = v
        first.setdefault((o["key"], f), o["index"])
        if o.get("hit"):
            served[(o["key"], f)] += 1
    if not fills:
        return nothing_to_judge("no read reported a fill id", fills=0)
    if all(len(fv) < 2 for fv in fills.values()):
        return nothing_to_judge("no key was filled twice (no fills to compare)",
                                fills=sum(len(v) for v in fills.values()))
    anomalies = []
    count = 0
    for key, fv in fills.items():
        best_fill, best_v = 0, -1
        for f in sorted(fv):
            v = fv[f]
            if v < best_v:
                count += 1
                if len(anomalies) < 10:
                    anomalies.append({
                        "type": "late-fill", "key": key, "ops": [first[(key, best_fill)], first[(key, f)]],
                        "explanation": f"fill {f} of {key} set version {v} after fill {best_fill} had already "
                        f"cached version {best_v}: a loader that read the DB earlier set its value later (the "
                        f"cache went backwards); it served {served[(key, f)]} cache hits"})
            elif v >= best_v:
                best_fill, best_v = f, v
    return {"valid": count == 0, "late_fills": count, "fills": sum(len(v) for v in fills.values()),
            "rejected_sets": sum(1 for o in history if o.get("rejected")), "anomalies": anomalies}


# -- the follow-up: a lock holder stalls mid-fetch, and is killed or wakes late -----------------
_killed: dict[int, int] = {}
HOLDER_STRATEGIES = ("herd-lock", "herd-lease")


def _needs_holder(cfg: Any, cls: type) -> str | None:
    if callable(getattr(cls, "arm_stall", None)):
        return None
    return (f"a lock or lease strategy ({', '.join(HOLDER_STRATEGIES)}): "
            f"{getattr(cls, 'name', cls.__name__)} has no lock holder to stall")


def _needs_holder_and_peers(cfg: Any, cls: type) -> str | None:
    if (missing := _needs_holder(cfg, cls)) is not None:
        return missing
    if (cfg.nodes or 1) < 2:
        return (f"--nodes 2 or more (got {cfg.nodes or 1}): the lock holder's node is crashed, and the "
                "waiters on another node show the stall")
    return None


def _stall_holder(ctx: Any, stall_for: float | None) -> tuple[int, Any]:
    """Arm a mid-fetch stall on every node (unless the run configured one) and wait for a lock holder
    to stall: (its node, its strategy instance). NothingDone if none stalls in time."""
    nodes = list(getattr(ctx.nodes, "instances", None) or [])
    holders = [i for i in nodes if callable(getattr(i, "arm_stall", None))]
    if not holders:
        raise NothingDone("the strategy has no lock holder to stall (it is not herd-lock or herd-lease)")
    for h in holders:
        h.arm_stall(stall_for)
    # the next expiry comes within one cache TTL; its holder stalls after one DB fetch
    patience = max(h.ttl_ms / 1000 + h.fetch_timeout for h in holders) + 2.0
    r = redis_client(ctx.cluster.direct["redis"], timeout=2)
    try:
        deadline = time.monotonic() + patience
        while (node := r.get(f"{holders[0].prefix}stalled")) is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        r.close()
    if node is None:
        raise NothingDone(f"no lock holder stalled within {patience:.1f} s of arming the stall")
    i = int(node)
    return i, nodes[i]


@requires(_needs_holder_and_peers)
def kill_holder(ctx: Any, phase: str) -> str | None:
    """Step: make a lock/lease holder stall mid-fetch and crash its node (restarted at the stop)."""
    if phase == "stop":
        node = _killed.pop(id(ctx), None)
        if node is not None and ctx.nodes is not None:
            ctx.nodes.restart(node)
        return None
    i, _ = _stall_holder(ctx, None)
    if len(ctx.nodes) < 2:
        raise NothingDone(f"lock holder is on node {i}, the only node: not killed (run with --nodes 2 or more)")
    ctx.nodes.crash(i)
    _killed[id(ctx)] = i
    return f"crashed node {i}, whose worker held the lock stalled mid-fetch"


@requires(_needs_holder)
def pause_holder(ctx: Any, phase: str) -> str | None:
    """Step: make a lock/lease holder stall mid-fetch past its lock TTL, so it wakes after its lock
    expired and sets late (the stall ends by itself)."""
    if phase == "stop":
        return None
    nodes = list(getattr(ctx.nodes, "instances", None) or [])
    hold = max((getattr(h, "hold_ttl", 0.0) for h in nodes), default=0.0)
    i, h = _stall_holder(ctx, hold + 0.5)
    late = "past" if h.stall_for > h.hold_ttl else "within"
    return (f"the lock holder on node {i} stalls mid-fetch for {h.stall_for:g} s, {late} its {h.hold_ttl:g} s "
            "lock TTL")


def db_write(ctx: Any, phase: str) -> str | None:
    """Step: another service commits a new version of every hot row, straight to the DB.

    While a lock holder stalls, the readers of its key are all waiting, so the run's own writes
    nearly stop; this makes sure the data changed between the stalled holder's read and its
    successor's, so a late set is visibly stale."""
    if phase != "start":
        return None
    pg = Pg(ctx.cluster.direct["postgres"], timeout=10)
    try:
        rows = pg.execute("update kv set value = to_jsonb(-version), version = version + 1 returning key")
    finally:
        pg.close()
    if not rows:
        raise NothingDone("no row to update: nothing committed")
    return f"committed a new version of {len(rows)} rows directly in the DB"


WORKLOAD = Workload(
    name="thundering-herd",
    description="Hot keys expire under many concurrent readers with a slow DB: DB loads per expiry",
    strategies=HERD_STRATEGIES,
    default_strategy="herd-lock",
    keys=2,
    mix={"read": 0.98, "write": 0.02},
    time_limit=6.0,
    concurrency=16,
    quiesce=0.5,
    # the shared time-gap ``herd`` checker runs beside the exact one as a cross-check (figures only): gap
    # clustering merges the cold start with the first expiry and adjacent expiries (e.g. 31 "loads per
    # event" with 16 readers), which is why herd-epochs counts by fill id instead
    checkers=("herd-epochs", "late-fill", "herd", "perf"),
    checker_opts={"herd-epochs": {"bound": 1}},
    extra_checkers={"herd-epochs": check_herd_epochs, "late-fill": check_late_fill, "herd-db": check_herd_db},
    plans={
        "none": "",
        "slow-db": SLOW_DB,
        "holder-crash": f"{SLOW_DB};step:kill-holder@30%+50%",
        "holder-pause": f"{SLOW_DB};step:pause-holder@10%+60%;step:db-write@40%+10%",
    },
    default_plan="slow-db",
    # as a black box: DB loads are counted by PostgreSQL (its statement log), not taken from the answers
    app_ops=("read", "write"),
    app_checkers=("herd-db", "herd", "perf"),
    app_db_reads=True,
    fault_menu=["latency:postgres:ms=100", "latency:postgres:ms=300", "latency:redis:ms=20"],
    steps={"kill-holder": kill_holder, "pause-holder": pause_holder, "db-write": db_write},
    setup=setup_herd,
    invoke=invoke_register,
    final_read=final_kv,
)
