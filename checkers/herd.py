"""Thundering herd: how many DB loads one expiry or invalidation causes, per key.

Why this module exists: when a hot key expires, every concurrent reader may miss and query the DB
at once. The mean hides it; the max and p99 of loads per event show it. Loads are ops flagged
``db_load`` (the op queried the DB to fill the cache). Per key, loads that begin within ``gap_ms``
of an event's first load belong to that event (one expiry or invalidation); measuring from the first
load, not the previous one, keeps a steady stream of misses from chaining into one endless event.
Verdict against ``max_loads``.
"""

from __future__ import annotations

from typing import Any

from core.ops import anomaly, ms, nothing_to_judge, pair, secs


def check(history: list[dict[str, Any]], *, gap_ms: float = 50.0, max_loads: int | None = None,
          max_anomalies: int = 100, **_: Any) -> dict[str, Any]:
    """Result: ``loads``, ``events``, ``max``, ``p99``, ``mean`` (loads per event), ``worst``
    (largest events: key, loads, start_s, span_ms), ``anomalies`` of type ``herd``. Nothing to judge
    (unknown, with the reason) without a DB load."""
    paired = pair(history)
    gap = gap_ms * 1e6
    per_key: dict[Any, list[Any]] = {}
    for op in paired.ops:
        if op.db_load and op.type == "ok" and op.phase != "final":
            per_key.setdefault(op.key, []).append(op)
    events: list[tuple[int, Any, list[Any]]] = []
    for key, loads in per_key.items():
        loads.sort(key=lambda o: o.t0)
        cur = [loads[0]]
        for o in loads[1:]:
            if o.t0 - cur[0].t0 > gap:  # within gap_ms of the event's first load
                events.append((len(cur), key, cur))
                cur = [o]
            else:
                cur.append(o)
        events.append((len(cur), key, cur))
    sizes = sorted(e[0] for e in events)
    out: dict[str, Any] = {"loads": sum(sizes), "events": len(sizes), "gap_ms": gap_ms, "max_loads": max_loads}
    if sizes:
        out["max"] = sizes[-1]
        out["p99"] = sizes[min(len(sizes) - 1, int(len(sizes) * 0.99))]
        out["p50"] = sizes[len(sizes) // 2]
        out["mean"] = round(sum(sizes) / len(sizes), 4)
    else:
        out.update(max=0, p99=0, p50=0, mean=0.0)
    events.sort(key=lambda e: (-e[0], e[2][0].t0))
    out["worst"] = [{"key": k, "loads": n, "start_s": round(ops[0].t0 / 1e9, 6),
                     "span_ms": round((ops[-1].t0 - ops[0].t0) / 1e6, 3)} for n, k, ops in events[:10]]
    if not sizes:
        return nothing_to_judge("no DB loads (no ok op flagged db_load)", **out)
    if max_loads is None:
        out["valid"] = True
        return out
    bad = [e for e in events if e[0] > max_loads]
    out["over_bound"] = len(bad)
    out["anomaly_count"] = len(bad)
    out["valid"] = not bad
    if bad:
        out["anomalies"] = [anomaly(
            "herd", k, ops[:50],
            f"At {secs(ops[0].t0)}, {n} requests loaded {k} from the DB within {ms(ops[-1].t0 - ops[0].t0)} "
            f"(one expiry or invalidation event): a thundering herd, over the bound of {max_loads} "
            f"load{'s' if max_loads != 1 else ''} per event.", loads=n) for n, k, ops in bad[:max_anomalies]]
    return out
