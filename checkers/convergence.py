"""Convergence: after heal, every cache comes to agree with the DB, within the strategy's bound.

Why this module exists: eventual consistency is a promise about the end state. After the nemesis
heals and the system quiesces, the harness reads every key through every node's cache and straight
from the DB (``phase: "final"``), in rounds, until every cache agrees or the convergence limit
passes (a ``converge`` record gives the limit and the strategy's bound, its TTL). The last round is
judged: each cache view must equal the DB's value. A missed invalidation (a crashed subscriber, a
lost pub/sub message) shows up as a key that stays wrong; a cache whose TTL had seconds left is
given those seconds, as Polaris measures consistency, instead of being judged at once.
``converge_s`` is how long after heal the caches took to agree (None if they never did); "did not
converge" past a limit shorter than the strategy's own bound is unknown, not a violation.
It also measures, when the history has fault windows and versions, how long after the last fault
ended reads kept returning stale data (``time_to_converge_ms``).
"""

from __future__ import annotations

from typing import Any

from checkers.staleness import read_staleness
from core.ops import anomaly, hashable, key_versions, pair, read_version, secs, vtext, who


def check(history: list[dict[str, Any]], *, initial: Any = None, initial_version: int = 0,
          max_converge_ms: float | None = None, max_anomalies: int = 100, bound_s: float | None = None,
          **_: Any) -> dict[str, Any]:
    """Result: ``keys_checked``, ``diverged`` (count of key/node views that differ from the DB),
    ``unchecked_keys``, ``last_fault_stop_s``, ``time_to_converge_ms``, ``anomalies`` of type
    ``divergent`` (a node's cache differs from the DB after heal; and ``slow-convergence`` when over
    ``max_converge_ms``)."""
    paired = pair(history)
    kvs = key_versions(paired, initial=initial, initial_version=initial_version)
    checked = diverged = 0
    unchecked: list[Any] = []
    anomalies: list[dict[str, Any]] = []
    any_final_cache = False
    for key, kv in kvs.items():
        if not kv.final_db:
            if kv.final_cache:
                unchecked.append(key)
            continue
        if not kv.final_cache:
            continue
        any_final_cache = True
        fin = max(kv.final_db, key=lambda o: o.t0)
        fh = hashable(fin.value)
        last_per_node: dict[Any, Any] = {}
        for r in kv.final_cache:
            cur = last_per_node.get(r.node)
            if cur is None or r.t0 > cur.t0:
                last_per_node[r.node] = r
        checked += 1
        for node, r in last_per_node.items():
            rv, fv = read_version(kv, r), read_version(kv, fin)
            if hashable(r.value) == fh and (rv is None or fv is None or rv == fv):
                continue
            diverged += 1
            if len(anomalies) < max_anomalies:
                where = f"node {node}'s cache" if node is not None else "the cache"
                src = " (a cache hit)" if r.hit or r.source == "cache" else ""
                anomalies.append(anomaly(
                    "divergent", key, [r, fin],
                    f"After the run healed and quiesced, {where} returned {key} = "
                    f"{vtext(r.value, read_version(kv, r))}{src} at {secs(r.t0)}, while the DB holds "
                    f"{vtext(fin.value, read_version(kv, fin))}: the cache did not converge.", node=node))
    window = _window(paired.nemesis)
    if bound_s is not None:  # a bound the user demands (checker option convergence.bound_s)
        window["bound_s"] = bound_s
    converge_s = _converge_s(kvs, window["heal_ns"]) if window["heal_ns"] is not None else None
    if anomalies and window["limit_s"] is not None:
        for a in anomalies:
            a["explanation"] += " " + _past(window)
    out: dict[str, Any] = {"keys_checked": checked, "diverged": diverged, "unchecked_keys": len(unchecked),
                           "converge_s": converge_s, "converge_limit_s": window["limit_s"],
                           "bound_s": window["bound_s"]}
    last_stop = paired.last_fault_stop_ns
    out["last_fault_stop_s"] = None if last_stop is None or last_stop == float("inf") else round(last_stop / 1e9, 6)
    ttc = None
    if out["last_fault_stop_s"] is not None:
        converged_at = last_stop
        worst = None
        for kv in kvs.values():
            for r, _vr, st, _b, _w in read_staleness(kv):
                if st > 0 and r.t0 >= last_stop and r.t1 > converged_at and r.t1 != float("inf"):
                    converged_at, worst = r.t1, r
        ttc = round((converged_at - last_stop) / 1e6, 3)
        out["last_stale_read_after_fault"] = worst.index if worst is not None else None
        if max_converge_ms is not None and ttc > max_converge_ms and worst is not None:
            anomalies.append(anomaly(
                "slow-convergence", worst.key, [worst],
                f"The last fault ended at {secs(last_stop)}, but {who(worst)} still read a stale "
                f"{worst.key} until {secs(worst.t1)}: {ttc:g} ms to converge, over the {max_converge_ms:g} ms bound."))
    out["time_to_converge_ms"] = ttc
    out["anomaly_count"] = diverged + sum(1 for a in anomalies if a["type"] == "slow-convergence")
    short = window["limit_s"] is not None and window["bound_s"] is not None and window["limit_s"] < window["bound_s"]
    if diverged and short and not any(a["type"] == "slow-convergence" for a in anomalies):
        out["valid"] = "unknown"
        out["reason"] = (f"{diverged} cache view(s) still differed from the DB at the convergence limit "
                         f"({window['limit_s']:g} s after heal), which is shorter than the strategy's own "
                         f"bound ({window['bound_s']:g} s): cannot tell whether it would have converged")
        out["anomalies_if_judged"] = anomalies
    elif anomalies:
        out["valid"] = False
        out["anomalies"] = anomalies
    elif not any_final_cache:
        out["valid"] = "unknown"
        out["error"] = "no final cache reads with a matching final DB read: convergence cannot be judged"
    else:
        out["valid"] = True
    return out


def _window(nemesis: list[dict[str, Any]]) -> dict[str, Any]:
    """When the run healed, and the re-read window it gave the caches (from its ``converge`` record)."""
    out: dict[str, Any] = {"heal_ns": None, "limit_s": None, "bound_s": None}
    for op in nemesis:
        if op.get("f") == "phase" and op.get("value") == "heal":
            out["heal_ns"] = op.get("time_ns")
        elif op.get("f") == "converge" and isinstance(op.get("value"), dict):
            out["limit_s"] = op["value"].get("limit_s")
            out["bound_s"] = op["value"].get("bound_s")
    return out


def _past(window: dict[str, Any]) -> str:
    bound = f"; the strategy's own bound (its TTL) is {window['bound_s']:g} s" if window["bound_s"] is not None else ""
    return (f"It was re-read until the convergence limit, {window['limit_s']:g} s after heal{bound}, and never "
            f"agreed.")


def _converge_s(kvs: dict[Any, Any], heal_ns: int) -> float | None:
    """Seconds from heal until every node's final reads of every key agreed with the DB for good
    (None if some node's last final read still disagreed). Each final cache read is compared with the
    DB read of its round: the first final DB read of the key after it."""
    converged_at = heal_ns
    for kv in kvs.values():
        dbs = sorted(kv.final_db, key=lambda o: o.t0)
        by_node: dict[Any, list[Any]] = {}
        for r in kv.final_cache:
            by_node.setdefault(r.node, []).append(r)
        for reads in by_node.values():
            since = None  # start of the current run of agreeing reads
            for r in sorted(reads, key=lambda o: o.t0):
                db = next((d for d in dbs if d.t0 > r.t0), dbs[-1] if dbs else None)
                ok = db is not None and hashable(r.value) == hashable(db.value) and (
                    r.version is None or db.version is None or r.version == db.version)
                since = (since if since is not None else r.t0) if ok else None
            if since is None:
                return None
            converged_at = max(converged_at, since)
    return round(max(0, converged_at - heal_ns) / 1e9, 3)
