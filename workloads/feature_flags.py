"""feature-flags (seed scenario 2): how long after a flag update does every node serve it?

Many application nodes (``--nodes N``) read a few flags at a high rate from their in-process caches;
now and then a worker updates a flag (a DB commit with a DB-assigned version). The question is
propagation: from the update's acknowledgement to the moment the *last* node stops serving the
older version. The shared checkers judge the same history for staleness and convergence; the
``propagation`` checker here turns it into the figures the seed asks for:

* propagation time per update, p50/p99/max over updates. Measured from the reads: an update
  acknowledged at ``t`` has reached every node no earlier than the last read (on any node) that
  was invoked after ``t`` and still returned an older version. So each figure is a lower bound,
  exact to within one read interval of a node for that flag (many reads per second per node here).
  An update some node still does not serve at the final reads never propagated: "unbounded".
* per node: how many stale reads and the oldest one (which nodes serve stale data, for how long);
* hit rate of the node caches, DB load (reads that went to the DB), and background load: queries a
  node makes on its own, such as version polls, which strategies report cumulatively in
  ``bg_queries`` on every read (summed over nodes; a crashed node's count restarts from 0).

Verdict: invalid when an update took longer than ``bound_ms`` to reach every node (default 2000 ms:
the seed's "< 30 s" business promise, scaled to 10 s runs) or a node's final read disagrees with
the DB. With a single node nothing propagates between nodes, so the verdict is "unknown".

Event-link faults target one node group's link proxy, ``redis.busG`` (node ``i`` is in group
``i % links``, see strategies/flags.py): ``down:redis.bus1@50%+50%`` cuts node 1's events.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any

from core.ops import nothing_to_judge
from workloads.base import Workload, paired, pct

FLAG_STRATEGIES = ("flags-ttl-long", "flags-ttl-short", "flags-pubsub", "flags-pubsub-ttl", "flags-polling",
                   "flags-l1-l2")


# -- history analysis shared with crashed-subscriber ---------------------------------------------
class Reads:
    """The client reads and acknowledged writes of a history, indexed for staleness questions.

    A read of version ``v`` invoked at ``t`` is *stale* when some write of a newer version was
    acknowledged before ``t``; its age is ``t`` minus the earliest such acknowledgement.
    """

    def __init__(self, history: list[dict[str, Any]]) -> None:
        view = paired(history)
        self.writes: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # key -> (version, ack_ns, index)
        self.reads: list[dict[str, Any]] = []  # ok reads (completion records) with invoke time, incl. per-node final reads
        self.db_final: dict[str, int] = {}
        self.nemesis: list[dict[str, Any]] = view.nemesis
        self.end_ns = view.end_ns
        for op in view.ops:
            c = op.comp
            if op.type != "ok" or not isinstance(c.get("version"), int):
                continue
            if op.f == "write":
                self.writes[op.key].append((c["version"], op.t1, op.cindex))
            elif op.f == "read":
                if op.is_final and c.get("node") is None:
                    self.db_final[op.key] = c["version"]
                    continue
                self.reads.append({**c, "t_inv": op.t0, "inv_index": op.index})
        self._first_newer: dict[str, tuple[list[int], list[int], list[int]]] = {}
        for key, ws in self.writes.items():
            ws.sort()
            versions = [w[0] for w in ws]
            sm_t, sm_i = [0] * len(ws), [0] * len(ws)
            best = (math.inf, -1)
            for i in range(len(ws) - 1, -1, -1):
                best = min(best, (ws[i][1], ws[i][2]))
                sm_t[i], sm_i[i] = best  # type: ignore[assignment]
            self._first_newer[key] = (versions, sm_t, sm_i)
        for r in self.reads:
            r["age_ns"], r["newer_index"] = self.staleness(r["key"], r["version"], r["t_inv"])

    def staleness(self, key: str, version: int, t: int) -> tuple[int, int | None]:
        """(age in ns, index of the newer write's ack) — (0, None) when the read is not stale."""
        fn = self._first_newer.get(key)
        if fn is None:
            return 0, None
        versions, sm_t, sm_i = fn
        i = bisect.bisect_right(versions, version)
        if i < len(versions) and sm_t[i] < t:
            return t - sm_t[i], sm_i[i]
        return 0, None

    def nodes(self) -> set[int]:
        return {r["node"] for r in self.reads if r.get("node") is not None}

    def divergence(self) -> list[dict[str, Any]]:
        """Final per-node reads whose version differs from the DB's (nodes that never converged)."""
        out = []
        for r in self.reads:
            if r.get("phase") == "final" and r["key"] in self.db_final and r["version"] != self.db_final[r["key"]]:
                out.append({"node": r.get("node"), "key": r["key"], "version": r["version"],
                            "db_version": self.db_final[r["key"]], "index": r["index"]})
        return out


def ms(x: float) -> float | str:
    return "unbounded" if math.isinf(x) else round(x / 1e6, 1)


def check_propagation(history: list[dict[str, Any]], bound_ms: float = 2000, max_anomalies: int = 20,
                      **_: Any) -> dict[str, Any]:
    rd = Reads(history)
    load_reads = [r for r in rd.reads if r.get("phase") != "final"]
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rd.reads:
        by_key[r["key"]].append(r)
    for rs in by_key.values():
        rs.sort(key=lambda r: r["t_inv"])
    # per update: the last read invoked after its ack that still returned an older version
    props: list[float] = []
    worst: list[tuple[float, str, int, dict[str, Any]]] = []
    read_after = 0  # updates some read (on any node) began after
    for key, ws in rd.writes.items():
        rs = by_key.get(key, [])
        for version, ack, idx in ws:
            read_after += bool(rs) and rs[-1]["t_inv"] > ack
            last = None
            for r in reversed(rs):
                if r["t_inv"] <= ack:
                    break
                if r["version"] < version:
                    last = r
                    break
            if last is None:
                props.append(0.0)
                continue
            p = math.inf if last.get("phase") == "final" else float(last["t_inv"] - ack)
            props.append(p)
            worst.append((p, key, idx, last))
    per_node: dict[int, dict[str, Any]] = {}
    for r in rd.reads:
        if r["age_ns"] > 0:
            n = per_node.setdefault(r.get("node"), {"stale_reads": 0, "max_stale_ms": 0.0})
            n["stale_reads"] += 1
            n["max_stale_ms"] = max(n["max_stale_ms"], round(r["age_ns"] / 1e6, 1))
    hits = sum(1 for r in load_reads if r.get("hit"))
    db_loads = sum(1 for r in load_reads if r.get("db_load"))
    bg: dict[int, int] = {}
    for r in rd.reads:
        if isinstance(r.get("bg_queries"), int):
            bg[r.get("node")] = max(bg.get(r.get("node"), 0), r["bg_queries"])
    load_s = max(1e-9, _load_seconds(rd))
    diverged = rd.divergence()
    bound_ns = bound_ms * 1e6
    slow = sorted((w for w in worst if w[0] > bound_ns), key=lambda w: -w[0])
    anomalies: list[dict[str, Any]] = []
    for d in diverged[:max_anomalies]:
        anomalies.append({"type": "not-converged", "key": d["key"], "ops": [d["index"]],
                          "explanation": f"after heal and quiesce, node {d['node']} still serves {d['key']} "
                                         f"version {d['version']} while the DB holds version {d['db_version']}: "
                                         "the invalidation never reached it and nothing else will repair it"})
    for p, key, idx, r in slow[:max(0, max_anomalies - len(anomalies))]:
        if math.isinf(p):
            continue
        anomalies.append({"type": "stale-read", "key": key, "ops": [idx, r["index"]],
                          "explanation": f"the update acknowledged at op {idx} had not reached node {r.get('node')} "
                                         f"{p / 1e6:.0f} ms later (op {r['index']} read version {r['version']}), "
                                         f"beyond the {bound_ms:g} ms propagation bound"})
    finite = [p for p in props if not math.isinf(p)]
    # resolution: how often a node re-reads the same flag (the figures are exact to about this)
    last: dict[tuple[Any, str], int] = {}
    gaps: list[float] = []
    for r in sorted(load_reads, key=lambda r: r["t_inv"]):
        nk = (r.get("node"), r["key"])
        if nk in last:
            gaps.append(r["t_inv"] - last[nk])
        last[nk] = r["t_inv"]
    nodes = rd.nodes()
    out: dict[str, Any] = {
        "bound_ms": bound_ms, "nodes": len(nodes), "updates": len(props),
        "propagation_ms": {"p50": ms(pct(props, 50)), "p99": ms(pct(props, 99)),
                           "max": ms(max(props, default=0.0)),
                           "max_finite": ms(max(finite, default=0.0))},
        "read_interval_ms": {"p50": round(pct(gaps, 50) / 1e6, 1), "p99": round(pct(gaps, 99) / 1e6, 1)},
        "unpropagated_updates": sum(1 for p in props if math.isinf(p)),
        "slow_updates": len(slow),
        "stale_reads": sum(n["stale_reads"] for n in per_node.values()),
        "stale_nodes": len(per_node),
        "per_node": {str(k): v for k, v in sorted(per_node.items(), key=lambda kv: str(kv[0]))},
        "reads": len(load_reads), "hit_rate": round(hits / len(load_reads), 4) if load_reads else None,
        "db_loads": db_loads, "db_loads_per_s": round(db_loads / load_s, 1),
        "bg_queries": sum(bg.values()), "not_converged": diverged[:50], "anomalies": anomalies,
    }
    if slow or diverged:
        out["valid"] = False
    elif len(nodes) < 2:
        return nothing_to_judge("one node: nothing propagates between nodes (run with --nodes N)", **out)
    elif not props:
        return nothing_to_judge("no acknowledged updates", **out)
    elif not read_after:
        return nothing_to_judge("no read after an acknowledged update", **out)
    else:
        out["valid"] = True
    return out


def _load_seconds(rd: Reads) -> float:
    t = {o["value"]: o["time_ns"] for o in rd.nemesis if o["f"] == "phase"}
    if "load" in t and "heal" in t:
        return (t["heal"] - t["load"]) / 1e9
    return rd.end_ns / 1e9


def _all_links(kind: str, links: int = 8) -> str:
    return ";".join(kind.replace("LINK", f"redis.bus{g}") for g in range(links))


WORKLOAD = Workload(
    name="feature-flags",
    description="Flags read at a high rate from each node's in-process cache, updated now and then; "
                "measures propagation to every node (run with --nodes N and a --rate)",
    strategies=FLAG_STRATEGIES,
    default_strategy="flags-pubsub-ttl",
    services=("redis", "postgres"),
    keys=8,
    mix={"read": 0.995, "write": 0.005},
    time_limit=10.0,
    concurrency=8,
    nodes=4,
    rate=2000.0,
    quiesce=2.5,
    # not "versions" (linearizability): no strategy here promises it — an in-process cache with
    # asynchronous invalidation serves an older version right after another node saw the newer one,
    # so it would fail every strategy alike; ask for it with --checkers to see exactly where.
    checkers=("staleness", "convergence", "perf", "propagation"),
    checker_opts={"staleness": {"bound_ms": 2000}, "propagation": {"bound_ms": 2000}},
    extra_checkers={"propagation": check_propagation},
    plans={
        "none": "",
        # node 1's event link cut until the end: what it misses, pub/sub alone never repairs
        "bus-down": "down:redis.bus1@50%+50%",
        # node 1's link silently black-holed (the subscriber does not even notice)
        "bus-partition": "partition:redis.bus1@50%+50%",
        "bus-latency": "latency:redis.bus1:ms=1000@20%+60%",
        # every link delayed (with 8 links: every node), the "5 s event delay" follow-up
        "all-bus-latency": _all_links("latency:LINK:ms=5000@10%+80%"),
        # half the fleet delayed
        "half-bus-latency": _all_links("latency:LINK:ms=5000@10%+80%", 4),
        "redis-down": "down:redis@40%+20%",
    },
    fault_menu=["down:redis.bus1", "partition:redis.bus2", "latency:redis.bus1:ms=1000", "latency:redis:ms=100",
                "down:redis"],
)
