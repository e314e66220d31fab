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
    nothing_to_judge,
    pair,
    read_version,
    stale_read_words,
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


def _nothing_reason(kvs: dict[Any, KeyVersions], n_reads: int) -> str:
    acked = any(w.type == "ok" and read_version(kv, w) is not None for kv in kvs.values() for w in kv.writes)
    if not acked:
        return "no acknowledged writes (of known version)"
    if not n_reads:
        return "no ok reads (of known version)"
    return "no ok read of a key with an acknowledged write"


class _Scan:
    """One pass over every read of known version: what the figures and the verdict are made of."""

    def __init__(self, bound_ns: float | None, bound_versions: int | None, keep: int) -> None:
        self.bound_ns = bound_ns
        self.bound_versions = bound_versions
        self.keep = keep  # over-bound reads kept as candidate anomalies (the worst are shown)
        self.n_reads = 0
        self.judged = 0  # reads of a key with an acknowledged write of known version
        self.stale: list[float] = []  # ns stale, of each stale read
        self.k_hist: dict[int, int] = {}  # versions behind -> reads
        self.ages: list[tuple[float, bool]] = []  # (ns since the latest ack, saw it or newer), per read
        self.lags: list[float] = []  # per acked write: ns until every later-begun read saw it
        self.worst: list[tuple[float, Any, Op, Op | None]] = []  # the stalest read of each key
        self.over: list[tuple[float, Op, int, Op | None, int, Any]] = []
        self.n_over = 0

    def add_key(self, key: Any, kv: KeyVersions) -> None:
        ix = _KeyIndex(kv)
        bound_ns, bound_versions = self.bound_ns, self.bound_versions
        stale, k_hist, ages, over = self.stale, self.k_hist, self.ages, self.over
        has_acked = bool(ix.acked)
        kworst: tuple[float, Any, Op, Op | None] | None = None
        for r, vr, st, behind, w in read_staleness(kv, ix):
            self.n_reads += 1
            self.judged += has_acked
            k_hist[behind] = k_hist.get(behind, 0) + 1
            if st > 0:
                stale.append(st)
                if kworst is None or st > kworst[0]:
                    kworst = (st, key, r, w)
                if (bound_ns is not None and st > bound_ns) or (bound_versions is not None and behind > bound_versions):
                    self.n_over += 1
                    if len(over) < self.keep:
                        over.append((st, r, vr, w, behind, key))
            lb = ix.latest_before(r.t0)
            if lb is not None:
                ages.append((r.t0 - lb[1].t1, vr >= lb[0]))
        if kworst is not None:
            self.worst.append(kworst)
        self.lags.extend(_visibility_lags(kv, ix))


def _visibility_lags(kv: KeyVersions, ix: _KeyIndex) -> Iterator[float]:
    """Polaris: for each acked write, how long until every read that began after its ack saw it."""
    reads_by_v = sorted((v, r.t0) for r, v in ((r, read_version(kv, r)) for r in kv.reads) if v is not None)
    j = 0
    run_max = -INF
    for v, t1, _w in ix.acked:
        while j < len(reads_by_v) and reads_by_v[j][0] < v:
            run_max = max(run_max, reads_by_v[j][1])
            j += 1
        yield max(0.0, run_max - t1)


def _staleness_ms(stale: list[float]) -> dict[str, Any]:
    """The largest and the quantiles of how stale the stale reads were (``stale`` sorted)."""
    return {
        "max_staleness_ms": round(stale[-1] / 1e6, 3) if stale else 0.0,
        "staleness_quantiles_ms": {
            q: round(stale[min(len(stale) - 1, int(len(stale) * p))] / 1e6, 3) if stale else 0.0
            for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
    }


def _k_staleness(k_hist: dict[int, int]) -> dict[str, int]:
    """Versions behind -> reads, with 10 or more in one bucket."""
    kk = sorted(k_hist)
    out = {str(k): k_hist[k] for k in kk if k < 10}
    if any(k >= 10 for k in kk):
        out["10+"] = sum(k_hist[k] for k in kk if k >= 10)
    return out


def _t_visibility(ages: list[tuple[float, bool]]) -> list[dict[str, Any]]:
    """P(read sees the latest acked write | it began >= t after that ack), on the T_GRID_MS grid."""
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
    return curve


def _visible_within(lags: list[float], deltas_ms: Any) -> dict[str, float]:
    """Per Δ: the share of acked writes every read begun Δ after their ack saw."""
    lags.sort()
    return {str(d): round(bisect_right(lags, d * 1e6) / len(lags), 6) if lags else 1.0 for d in deltas_ms}


def _worst_per_key(worst: list[tuple[float, Any, Op, Op | None]]) -> list[dict[str, Any]]:
    worst.sort(key=lambda x: -x[0])
    return [{"key": k, "ms": round(st / 1e6, 3), "op": r.index, "missed_write": w.index if w else None}
            for st, k, r, w in worst[:20]]


def _figures(scan: _Scan, deltas_ms: Any, max_samples: int) -> dict[str, Any]:
    """Every figure of the result, from the scan (in the result's order)."""
    stale = scan.stale
    stale.sort()
    out = _staleness_ms(stale)
    out["k_staleness"] = _k_staleness(scan.k_hist)
    out["k_histogram"] = out["k_staleness"]
    out["t_visibility"] = _t_visibility(scan.ages)
    out["visible_within"] = _visible_within(scan.lags, deltas_ms)
    out["writes"] = len(scan.lags)
    out["worst_per_key"] = _worst_per_key(scan.worst)
    if len(stale) > max_samples:
        rnd = random.Random(0)
        sample = sorted(rnd.sample(stale, max_samples))
        out["stale_intervals_sampled"] = True
    else:
        sample = stale
    out["stale_intervals_ms"] = [round(x / 1e6, 3) for x in sample]
    return out


def _over_bound_anomalies(scan: _Scan, kvs: dict[Any, KeyVersions], bound_ms: float | None,
                          bound_versions: int | None, max_anomalies: int) -> list[dict[str, Any]]:
    """The stalest over-bound reads as ``stale-read`` anomalies, each saying which bound it broke."""
    over = scan.over
    over.sort(key=lambda x: -x[0])
    anomalies = []
    for st, r, vr, w, behind, key in over[:max_anomalies]:
        bound_txt = []
        if scan.bound_ns is not None and st > scan.bound_ns:
            bound_txt.append(f"over the {bound_ms:g} ms bound")
        if bound_versions is not None and behind > bound_versions:
            bound_txt.append(f"{behind} versions behind, over the bound of {bound_versions}")
        assert w is not None
        anomalies.append(anomaly(
            "stale-read", key, [r, w],
            f"{stale_read_words(key, r, vr, w, read_version(kvs[key], w))}, {' and '.join(bound_txt)}.",
            staleness_ms=round(st / 1e6, 3), versions_behind=behind))
    return anomalies


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
    scan = _Scan(None if bound_ms is None else float(bound_ms) * 1e6, bound_versions, max_anomalies * 20)
    for key, kv in kvs.items():
        if kv.reads:
            scan.add_key(key, kv)
    out: dict[str, Any] = {"reads": scan.n_reads, "stale_reads": len(scan.stale), "keys": len(kvs)}
    out.update(_figures(scan, deltas_ms, max_samples))
    out["bound_ms"] = bound_ms
    if bound_versions is not None:
        out["bound_versions"] = bound_versions
    if not scan.judged:
        return nothing_to_judge(_nothing_reason(kvs, scan.n_reads), **out)
    if bound_ms is None and bound_versions is None:
        out["valid"] = True
        out["note"] = "no bound given: figures only"
        return out
    out["over_bound"] = scan.n_over
    out["anomaly_count"] = scan.n_over
    if not scan.n_over:
        out["valid"] = True
        return out
    out["valid"] = False
    out["anomalies"] = _over_bound_anomalies(scan, kvs, bound_ms, bound_versions, max_anomalies)
    return out
