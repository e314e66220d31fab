"""Staleness: how stale each read was, in time and in versions, and a bounded-staleness verdict.

Why this module exists: most caches are not linearizable and do not claim to be; what a team needs
to know is *how* stale reads get, and whether a promised bound holds ("at most 1 s behind"). For
every read of a known version this module computes

* time-staleness: how long before the read began the first write it missed had been acknowledged
  (0 if it missed none), and
* versions behind: how many acknowledged versions newer than the one read existed when it began,

and from them the PBS-style t-visibility curve (probability that a read which began at least t
after a write's ack returns that write or newer), the k-staleness histogram, the Polaris-style share
of writes visible to every later read within Δ, the worst stale interval per key, and the verdict
for ``bound_ms`` (and ``bound_versions``). Every over-bound read is a ``stale-read`` anomaly.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

from core.ops import (
    INF,
    KeyVersions,
    Op,
    anomaly,
    key_versions,
    ms,
    nothing_to_judge,
    pair,
    read_version,
    reader,
    secs,
    vtext,
    who,
)

T_GRID_MS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
DELTAS_MS = (0, 10, 100, 1000, 10000)


class _KeyIndex:
    """Acknowledged writes of one key, indexed for O(log n) staleness queries."""

    def __init__(self, kv: KeyVersions) -> None:
        acked: list[tuple[int, float, Op]] = []
        for w in kv.writes:
            if w.type != "ok" or w.t1 == INF:
                continue
            v = read_version(kv, w)
            if v is not None:
                acked.append((v, w.t1, w))
        acked.sort(key=lambda x: x[0])
        self.acked = acked
        self.vs = [v for v, _, _ in acked]
        # suffix min over version rank of the ack time: the first-acked write newer than rank i
        n = len(acked)
        self.sufmin: list[tuple[float, Op | None]] = [(INF, None)] * (n + 1)
        for i in range(n - 1, -1, -1):
            t = acked[i][1]
            self.sufmin[i] = (t, acked[i][2]) if t < self.sufmin[i + 1][0] else self.sufmin[i + 1]
        # prefix max version over ack time
        by_t = sorted(acked, key=lambda x: x[1])
        self.t1s = [t for _, t, _ in by_t]
        self.pmax: list[tuple[int, Op]] = []
        best: tuple[int, Op] | None = None
        for v, _, w in by_t:
            if best is None or v > best[0]:
                best = (v, w)
            self.pmax.append(best)

    def latest_before(self, t: float) -> tuple[int, Op] | None:
        """The highest-version write acknowledged strictly before ``t``."""
        i = bisect_left(self.t1s, t)
        return self.pmax[i - 1] if i else None

    def staleness(self, vr: int, t: float) -> tuple[float, int, Op | None]:
        """(ns stale, versions behind, the first missed write) for a read of ``vr`` begun at ``t``."""
        idx = bisect_right(self.vs, vr)
        since, w = self.sufmin[idx]
        if since >= t or w is None:
            return 0.0, 0, None
        lb = self.latest_before(t)
        behind = bisect_right(self.vs, lb[0]) - idx if lb else 0
        return t - since, max(behind, 1), w


def read_staleness(kv: KeyVersions, index: _KeyIndex | None = None) -> Iterator[tuple[Op, int, float, int, Op | None]]:
    """(read, version read, ns stale, versions behind, first missed write) for each read of known version."""
    ix = index or _KeyIndex(kv)
    for r in kv.reads:
        vr = read_version(kv, r)
        if vr is None:
            continue
        st, behind, w = ix.staleness(vr, r.t0)
        yield r, vr, st, behind, w


def _src(op: Op) -> str:
    return {"cache": " from the cache", "db": " from the DB"}.get(op.source, "")


def _nothing_reason(kvs: dict[Any, KeyVersions], n_reads: int) -> str:
    acked = any(w.type == "ok" and read_version(kv, w) is not None for kv in kvs.values() for w in kv.writes)
    if not acked:
        return "no acknowledged writes (of known version)"
    if not n_reads:
        return "no ok reads (of known version)"
    return "no ok read of a key with an acknowledged write"


def check(history: list[dict[str, Any]], *, bound_ms: float | None = None, bound_versions: int | None = None,
          initial: Any = None, initial_version: int = 0, deltas_ms: Any = DELTAS_MS,
          max_anomalies: int = 100, max_samples: int = 20000, **_: Any) -> dict[str, Any]:
    """Staleness figures and the bounded-staleness verdict (valid if no bound is given). Nothing to
    judge (unknown, with the reason) when no read of known version is of a key with an acknowledged
    write of known version.

    Result fields: ``reads`` (reads of known version), ``stale_reads``, ``max_staleness_ms``,
    ``staleness_quantiles_ms``, ``k_staleness`` = ``k_histogram`` (versions behind -> count),
    ``t_visibility`` ([{t_ms, p, n}] points), ``visible_within`` ({Δ ms: share of writes seen by
    every read that began Δ after the write's ack}), ``worst_per_key``,
    ``stale_intervals_ms`` (sampled), ``bound_ms``, ``over_bound``, ``anomalies``.
    """
    paired = pair(history)
    kvs = key_versions(paired, initial=initial, initial_version=initial_version)
    n_reads = judged = 0
    stale: list[float] = []
    k_hist: dict[int, int] = {}
    ages: list[tuple[float, bool]] = []
    lags: list[float] = []
    worst: list[tuple[float, Any, Op, Op | None]] = []
    over: list[tuple[float, Op, int, Op | None, int, Any]] = []
    n_over = 0
    bound_ns = None if bound_ms is None else float(bound_ms) * 1e6
    for key, kv in kvs.items():
        if not kv.reads:
            continue
        ix = _KeyIndex(kv)
        kworst: tuple[float, Any, Op, Op | None] | None = None
        for r, vr, st, behind, w in read_staleness(kv, ix):
            n_reads += 1
            judged += bool(ix.acked)
            k_hist[behind] = k_hist.get(behind, 0) + 1
            if st > 0:
                stale.append(st)
                if kworst is None or st > kworst[0]:
                    kworst = (st, key, r, w)
                if (bound_ns is not None and st > bound_ns) or (bound_versions is not None and behind > bound_versions):
                    n_over += 1
                    if len(over) < max_anomalies * 20:
                        over.append((st, r, vr, w, behind, key))
            lb = ix.latest_before(r.t0)
            if lb is not None:
                ages.append((r.t0 - lb[1].t1, vr >= lb[0]))
        if kworst is not None:
            worst.append(kworst)
        # Polaris: for each acked write, how long until every read that began after its ack saw it
        reads_by_v = sorted((v, r.t0) for r, v in ((r, read_version(kv, r)) for r in kv.reads) if v is not None)
        j = 0
        run_max = -INF
        for v, t1, _w in ix.acked:
            while j < len(reads_by_v) and reads_by_v[j][0] < v:
                run_max = max(run_max, reads_by_v[j][1])
                j += 1
            lags.append(max(0.0, run_max - t1))
    out: dict[str, Any] = {"reads": n_reads, "stale_reads": len(stale), "keys": len(kvs)}
    stale.sort()
    out["max_staleness_ms"] = round(stale[-1] / 1e6, 3) if stale else 0.0
    out["staleness_quantiles_ms"] = {
        q: round(stale[min(len(stale) - 1, int(len(stale) * p))] / 1e6, 3) if stale else 0.0
        for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}
    kk = sorted(k_hist)
    out["k_staleness"] = {str(k): k_hist[k] for k in kk if k < 10}
    if any(k >= 10 for k in kk):
        out["k_staleness"]["10+"] = sum(k_hist[k] for k in kk if k >= 10)
    out["k_histogram"] = out["k_staleness"]
    # t-visibility: P(read sees the latest acked write | it began >= t after that ack)
    ages.sort()
    age_t = [a for a, _ in ages]
    seen_suffix = [0] * (len(ages) + 1)
    for i in range(len(ages) - 1, -1, -1):
        seen_suffix[i] = seen_suffix[i + 1] + (1 if ages[i][1] else 0)
    curve = []
    for t in T_GRID_MS:
        i = bisect_left(age_t, t * 1e6)
        n = len(ages) - i
        if n:
            curve.append({"t_ms": t, "p": round(seen_suffix[i] / n, 6), "n": n})
    out["t_visibility"] = curve
    lags.sort()
    out["visible_within"] = {str(d): round(bisect_right(lags, d * 1e6) / len(lags), 6) if lags else 1.0
                             for d in deltas_ms}
    out["writes"] = len(lags)
    worst.sort(key=lambda x: -x[0])
    out["worst_per_key"] = [{"key": k, "ms": round(st / 1e6, 3), "op": r.index,
                             "missed_write": w.index if w else None} for st, k, r, w in worst[:20]]
    if len(stale) > max_samples:
        rnd = random.Random(0)
        sample = sorted(rnd.sample(stale, max_samples))
        out["stale_intervals_sampled"] = True
    else:
        sample = stale
    out["stale_intervals_ms"] = [round(x / 1e6, 3) for x in sample]
    out["bound_ms"] = bound_ms
    if bound_versions is not None:
        out["bound_versions"] = bound_versions
    if not judged:
        return nothing_to_judge(_nothing_reason(kvs, n_reads), **out)
    if bound_ms is None and bound_versions is None:
        out["valid"] = True
        out["note"] = "no bound given: figures only"
        return out
    out["over_bound"] = n_over
    out["anomaly_count"] = n_over
    if not n_over:
        out["valid"] = True
        return out
    over.sort(key=lambda x: -x[0])
    anomalies = []
    for st, r, vr, w, behind, key in over[:max_anomalies]:
        bound_txt = []
        if bound_ns is not None and st > bound_ns:
            bound_txt.append(f"over the {bound_ms:g} ms bound")
        if bound_versions is not None and behind > bound_versions:
            bound_txt.append(f"{behind} versions behind, over the bound of {bound_versions}")
        assert w is not None
        anomalies.append(anomaly(
            "stale-read", key, [r, w],
            f"{reader(r)} {key} = {vtext(r.value, vr)}{_src(r)} at {secs(r.t0)}, but the write of "
            f"{vtext(w.value, read_version(kvs[key], w))} by {who(w)} had completed at {secs(w.t1)}, "
            f"{ms(st)} before that read began: a stale read, {' and '.join(bound_txt)}.",
            staleness_ms=round(st / 1e6, 3), versions_behind=behind))
    out["valid"] = False
    out["anomalies"] = anomalies
    return out
