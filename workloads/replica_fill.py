"""replica-fill: cache misses filled from a lagging read replica, with no TTL to end the damage.

Why this workload exists: a cache-aside read path that fills from a read replica looks harmless
(the replica is only ever a little behind), but a miss right after a write's invalidation reads the
*old* row from a lagging replica and puts it in the cache; with no TTL the cache then keeps a value
older than an acknowledged write until that key is written again — for good, if it never is. The
workload runs on ``postgres=replica`` (primary + hot standby streaming through the link proxy
``postgres.replica``) and its ``lag`` plan delays the WAL stream (``lag:postgres-replica``) up to
the end of the load, so the last write to each key is the one a stale fill can outlive.

Writes go to the primary then invalidate (strategies/replica_fill.py); reads hit Redis and fill on a
miss, reporting where the value came from (``source``: cache, replica, primary). The shared checkers
judge the outcome — ``convergence`` reads every key through the cache and from the primary after
heal and quiescence: a cache that kept a stale replica fill disagrees with the DB (``divergent``);
``staleness`` and ``versions`` see the reads older than an acknowledged write — and this module's
``replica-staleness`` measures the replica itself:

``replica-staleness``  for every read served from the replica, how far behind the latest
                       acknowledged write of its key it was (the time since the oldest acknowledged
                       write it missed, and how many versions), as percentiles, the staleness
                       curve (the share of replica reads more than x ms behind), a versions-behind
                       histogram and a timeline; and how many keys the cache still held, at the
                       final reads, at a value older than the DB's that a replica read had returned
                       (the stale fills kept). A measurement (valid) unless ``bound_ms`` is
                       given: then a replica read more than that behind is a ``stale-replica-read``.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from typing import Any

from core.clients import Pg
from core.ops import INF, anomaly, hashable, key_versions, nothing_to_judge, read_version, secs, vtext
from workloads.base import Direct, Workload, paired, pct, setup_kv

STRATEGIES = ("fill-from-replica", "fill-from-primary", "fill-after-lsn", "version-checked-fill")
REPLICA = "postgres-replica"
REPLICA_READERS = ("fill-from-replica", "fill-after-lsn", "version-checked-fill")
CURVE_MS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 2000, 5000)


def setup(d: Direct) -> None:
    """A fresh ``kv`` on the primary, and the replica caught up with it before the load starts (a
    fill must not fail on a table the replica has not replayed yet)."""
    setup_kv(d)
    if REPLICA not in d.endpoints:
        return
    lsn = d.pg.execute("select pg_current_wal_lsn()")[0][0]
    replica = Pg(d.endpoints[REPLICA], timeout=10)
    try:
        deadline = time.monotonic() + 10
        while not replica.execute("select coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", (lsn,))[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{REPLICA} did not replay the workload's set-up ({lsn}) in 10 s")
            time.sleep(0.01)
    finally:
        replica.close()


# -- replica-staleness ----------------------------------------------------------------------
class _Acks:
    """One key's acknowledged writes of known version, indexed so that each read costs O(log n)."""

    def __init__(self, kv: Any) -> None:
        acked = sorted((v, w.t1) for w in kv.writes if w.type == "ok" and w.t1 != INF
                       and (v := read_version(kv, w)) is not None)
        self.versions = [v for v, _ in acked]
        self.first_ack = [INF] * (len(acked) + 1)  # earliest ack among the writes from this version rank up
        for i in range(len(acked) - 1, -1, -1):
            self.first_ack[i] = min(acked[i][1], self.first_ack[i + 1])
        by_time = sorted((t, v) for v, t in acked)
        self.times = [t for t, _ in by_time]
        self.top: list[int] = []  # highest version acknowledged up to each ack (by ack time)
        for _, v in by_time:
            self.top.append(max(v, self.top[-1]) if self.top else v)

    def __bool__(self) -> bool:
        return bool(self.versions)

    def behind(self, vr: int, t0: float) -> tuple[float, int, int | None]:
        """(ns behind, versions behind, newest version missed) for a read of version ``vr`` begun at
        ``t0``: behind the oldest acknowledgement, before ``t0``, of a write above ``vr``."""
        since = self.first_ack[bisect_right(self.versions, vr)]
        if since >= t0:
            return 0.0, 0, None
        newest = self.top[bisect_left(self.times, t0) - 1]
        return t0 - since, max(newest - vr, 1), newest


def check_replica_staleness(history: list[dict[str, Any]], bound_ms: float | None = None, bucket_s: float = 0.5,
                            max_anomalies: int = 50, **_: Any) -> dict[str, Any]:
    """How far behind the acknowledged writes the replica's reads were, and which stale fills stuck."""
    view = paired(history)
    kvs = key_versions(view)
    lags_ms: list[float] = []  # every replica read, 0 when it missed nothing
    k_hist: dict[int, int] = defaultdict(int)
    timeline: dict[int, dict[str, Any]] = defaultdict(lambda: {"reads": 0, "behind": 0, "max_lag_ms": 0.0})
    from_replica: dict[Any, dict[Any, Any]] = defaultdict(dict)  # key -> value a replica read returned -> first such read
    anomalies: list[dict[str, Any]] = []
    over = judged = 0
    for key, kv in kvs.items():
        acked = _Acks(kv)
        for r in kv.reads:
            if r.source != "replica" or r.is_final:
                continue
            vr = read_version(kv, r)
            if vr is None:
                continue
            from_replica[key].setdefault(hashable(r.value), r)
            ns, versions, newest = acked.behind(vr, r.t0)
            judged += bool(acked)
            ms = ns / 1e6
            lags_ms.append(ms)
            k_hist[versions] += 1
            b = timeline[int(r.t0 / 1e9 // bucket_s)]
            b["reads"] += 1
            if ns > 0:
                b["behind"] += 1
                b["max_lag_ms"] = round(max(b["max_lag_ms"], ms), 3)
                if bound_ms is not None and ms > bound_ms:
                    over += 1
                    if len(anomalies) < max_anomalies:
                        anomalies.append(anomaly(
                            "stale-replica-read", key, [r],
                            f"A read of {key} served by the replica at {secs(r.t0)} returned "
                            f"{vtext(r.value, vr)}, {ms:.1f} ms behind an acknowledged write (newest missed: "
                            f"version {newest}, {versions} version(s) behind), over the {bound_ms:g} ms bound."))
    kept = _kept(kvs, from_replica)
    behind = [x for x in lags_ms if x > 0]
    n = len(lags_ms)
    out: dict[str, Any] = {
        "replica_reads": len(lags_ms), "behind": len(behind),
        "behind_share": round(len(behind) / len(lags_ms), 4) if lags_ms else 0.0,
        "lag_ms": {"p50": round(pct(behind, 50), 3), "p90": round(pct(behind, 90), 3),
                   "p99": round(pct(behind, 99), 3), "max": round(max(behind, default=0.0), 3)},
        # the staleness curve: the share of replica reads more than ms behind, for each ms
        "behind_curve": [{"ms": g, "share": round(sum(x > g for x in lags_ms) / n, 4) if n else 0.0}
                         for g in CURVE_MS],
        "versions_behind": {str(k): v for k, v in sorted(k_hist.items())},
        "timeline": [{"t": round(k * bucket_s, 3), **v} for k, v in sorted(timeline.items())],
        "stale_fills_kept": len(kept), "kept": kept[:20], "bound_ms": bound_ms, "over_bound": over,
    }
    out["explanation"] = (f"{len(behind)} of {len(lags_ms)} replica reads were behind an acknowledged write "
                          f"(p50 {out['lag_ms']['p50']:.1f} ms, max {out['lag_ms']['max']:.1f} ms behind); "
                          f"{len(kept)} key(s) still cached a stale value read from the replica at the end"
                          + ("" if bound_ms is None else f"; {over} over the {bound_ms:g} ms bound"))
    if not judged:
        return nothing_to_judge("no read served from the replica of a key with an acknowledged write", **out)
    if over:
        return {**out, "valid": False, "anomalies": anomalies}
    return {**out, "valid": True}


def _kept(kvs: dict[Any, Any], from_replica: dict[Any, dict[Any, Any]]) -> list[dict[str, Any]]:
    """Keys whose last final cache read returned a value older than the final DB read, which a
    replica read had returned during the load: a fill from the replica that the cache kept."""
    out = []
    for key, kv in kvs.items():
        if not kv.final_db or not kv.final_cache or key not in from_replica:
            continue
        fin = max(kv.final_db, key=lambda o: o.t0)
        last = max(kv.final_cache, key=lambda o: o.t0)
        vc, vd = read_version(kv, last), read_version(kv, fin)
        src = from_replica[key].get(hashable(last.value))
        if src is not None and vc is not None and vd is not None and vc < vd:
            out.append({"key": key, "cached_version": vc, "db_version": vd, "filled_at_s": round(src.t0 / 1e9, 3),
                        "ops": [*src.ops, *last.ops, *fin.ops]})
    return out


WORKLOAD = Workload(
    name="replica-fill",
    description="Cache-aside whose misses fill from a read replica (no TTL) while the replica lags: stale "
                "fills the cache keeps for good",
    strategies=STRATEGIES,
    default_strategy="fill-from-replica",
    app_note="its strategies need their own replica connection and report where each read came from",
    services=("redis", "postgres"),
    topology="postgres=replica",
    # the last op on a key must be a read for a stale fill to outlive the run: with 9 reads to a write,
    # a key ends on a write one time in ten, all six keys one time in a million
    keys=6,
    mix={"read": 0.9, "write": 0.1},
    time_limit=8.0,
    concurrency=8,
    rate=300.0,
    quiesce=1.0,
    checkers=("versions", "staleness", "session", "convergence", "replica-staleness", "perf"),
    extra_checkers={"replica-staleness": check_replica_staleness},
    checker_strategies={"replica-staleness": REPLICA_READERS},
    plans={
        "none": "",
        # the WAL stream 400 ms late from 10% of the load to its end: every write's invalidation is
        # followed, within the lag, by misses that can only read the old row from the replica
        "lag": "lag:postgres-replica:ms=400@10%+90%",
        # the replication link cut instead (the replica serves ever older rows)
        "replica-partition": "partition:postgres.replica@10%+90%",
    },
    default_plan="lag",
    fault_menu=["lag:postgres-replica:ms=400", "lag:postgres-replica:ms=100", "partition:postgres.replica"],
    setup=setup,
)
