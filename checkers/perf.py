"""Performance figures: hit rate over time and latency, overall and inside/outside fault windows.

Why this module exists: a strategy that is correct but collapses the hit rate (a schema migration
that empties the cache) or stalls readers for a lock TTL has a cost the consistency checkers do not
see. This checker mostly reports figures; it is invalid only when a threshold given as an option is
violated (``min_hit_rate``, ``max_p50_ms``, ``max_p99_ms``, ``max_p999_ms``, ``max_fail_rate``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.ops import anomaly, nothing_to_judge, pair
from core.stats import percentile

QS = (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9), ("max", 100))


def _quantiles(a: np.ndarray) -> dict[str, float] | None:
    if not len(a):
        return None
    s = np.sort(a)
    return {name: round(percentile(s, q, presorted=True) / 1e6, 3) for name, q in QS} | {"n": int(len(a))}


def check(history: list[dict[str, Any]], *, bucket_s: float | None = None, min_hit_rate: float | None = None,
          max_p50_ms: float | None = None, max_p99_ms: float | None = None, max_p999_ms: float | None = None,
          max_fail_rate: float | None = None, **_: Any) -> dict[str, Any]:
    """Result: ``counts`` (ok/fail/info), ``hit_rate`` (overall), ``hit_rate_over_time``
    ([t_s, rate, n] per bucket), ``latency_ms`` ({all, read, write, in_fault, outside_fault} ->
    quantiles), ``faults`` (windows), ``throughput_ops_s``. Nothing to judge (unknown, with the reason)
    without an ok op (unless ``max_fail_rate`` judges the failed ones)."""
    paired = pair(history)
    ops = [o for o in paired.ops if o.phase not in ("final", "setup")]
    n = len(ops)
    t0 = np.fromiter((o.t0 for o in ops), dtype=np.float64, count=n)
    t1 = np.fromiter((o.t1 for o in ops), dtype=np.float64, count=n)
    typ = np.fromiter(((0 if o.type == "ok" else 1 if o.type == "fail" else 2) for o in ops), dtype=np.int8, count=n)
    is_read = np.fromiter((o.f == "read" for o in ops), dtype=bool, count=n)
    is_write = np.fromiter((o.f == "write" for o in ops), dtype=bool, count=n)
    hit = np.fromiter(((1 if o.hit is True else 0 if o.hit is False else -1) for o in ops), dtype=np.int8, count=n)
    ok = typ == 0
    lat = t1 - t0
    in_fault = np.zeros(n, dtype=bool)
    for f in paired.faults:
        in_fault |= (t0 >= f.start_ns) & (t0 <= f.stop_ns)
    out: dict[str, Any] = {
        "ops": n,
        "counts": {"ok": int(ok.sum()), "fail": int((typ == 1).sum()), "info": int((typ == 2).sum())},
        "faults": [{"fault": f.name, "start_s": round(f.start_ns / 1e9, 6),
                    "stop_s": None if f.stop_ns == float("inf") else round(f.stop_ns / 1e9, 6)} for f in paired.faults],
    }
    out["latency_ms"] = {
        "all": _quantiles(lat[ok]), "read": _quantiles(lat[ok & is_read]), "write": _quantiles(lat[ok & is_write]),
        "in_fault": _quantiles(lat[ok & in_fault]), "outside_fault": _quantiles(lat[ok & ~in_fault]),
    }
    known = ok & (hit >= 0)
    out["hit_rate"] = round(float((hit[known] == 1).mean()), 6) if known.any() else None
    if n:
        start, end = float(t0.min()), float(t0.max())
        span = max(end - start, 1.0)
        b = bucket_s * 1e9 if bucket_s else max(span / 50, 1e6)
        idx = ((t0 - start) // b).astype(np.int64)
        nb = int(idx.max()) + 1
        tot = np.bincount(idx[known], minlength=nb)
        hits = np.bincount(idx[known & (hit == 1)], minlength=nb)
        out["hit_rate_over_time"] = [[round((start + i * b) / 1e9, 6), round(float(hits[i] / tot[i]), 6), int(tot[i])]
                                     for i in range(nb) if tot[i]]
        out["bucket_s"] = round(b / 1e9, 6)
        out["throughput_ops_s"] = round(n / (span / 1e9), 3) if span > 1 else None
    fails = out["counts"]["fail"] + out["counts"]["info"]
    out["fail_rate"] = round(fails / n, 6) if n else 0.0
    anomalies = []
    lat_all = out["latency_ms"]["all"] or {}
    checks = [("p50", max_p50_ms), ("p99", max_p99_ms), ("p999", max_p999_ms)]
    for q, lim in checks:
        if lim is not None and lat_all.get(q) is not None and lat_all[q] > lim:
            anomalies.append(anomaly("latency", None, [], f"The {q} latency was {lat_all[q]:g} ms, over the "
                                                          f"{lim:g} ms threshold."))
    if min_hit_rate is not None and out["hit_rate"] is not None and out["hit_rate"] < min_hit_rate:
        anomalies.append(anomaly("hit-rate", None, [], f"The cache hit rate was {out['hit_rate']:.1%}, under the "
                                                       f"{min_hit_rate:.1%} threshold."))
    if max_fail_rate is not None and out["fail_rate"] > max_fail_rate:
        anomalies.append(anomaly("fail-rate", None, [], f"{out['fail_rate']:.1%} of operations failed or timed out, "
                                                        f"over the {max_fail_rate:.1%} threshold."))
    judged_fail_rate = max_fail_rate is not None and n > 0
    if not anomalies and not out["counts"]["ok"] and not judged_fail_rate:
        return nothing_to_judge("no ok ops" if n else "no client ops (outside the set-up and final phases)", **out)
    out["valid"] = not anomalies
    out["anomaly_count"] = len(anomalies)
    if anomalies:
        out["anomalies"] = anomalies
    return out
