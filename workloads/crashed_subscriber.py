"""crashed-subscriber (seed scenario 6): a cache node's subscriber crashes while updates continue.

Several application nodes (``--nodes N``, at least 2) each keep a node-local cache that survives
their process (see strategies/subscriber.py for why that is what makes the incident real) and
subscribe to invalidations. The nemesis crashes node 1 (``crash-node:1``) while the other nodes keep
writing, then restarts it. Then the question is what the restarted node serves:

* pub/sub, and Kafka with a fresh group + ``latest``: the invalidations published while it was down
  are gone, so it serves its old entries for those keys until something else changes them —
  forever, for keys nobody updates again: the final per-node reads disagree with the DB;
* pub/sub + TTL: stale at most the TTL;
* a stable Kafka consumer group: stale only until the backlog is replayed, then converged;
* version check on read: never serves a version the DB has moved past (beyond one check period).

Keys are many (100) and updates relatively rare, so some keys the node missed are not written again
after it comes back: that is what turns "missed a message" into "stale forever".

The ``crash-recovery`` checker reports, per crash: the keys whose invalidation the node missed,
the stale reads it served after its restart (how many, the oldest, how long after the restart the
last one came), stale reads served *during a replay* of a durable bus (the backlog follow-up), and
whether every node's final read agrees with the DB. Invalid when a node never converged, or when a
stale read is older than ``bound_ms`` (off by default: "bounded by the TTL" is a figure to read,
not a promise every strategy makes).
"""

from __future__ import annotations

from typing import Any

from core.namespace import run_token
from core.ops import nothing_to_judge
from workloads.base import Direct, Workload, pct, setup_kv
from workloads.feature_flags import Reads

SUB_STRATEGIES = ("sub-pubsub", "sub-pubsub-ttl", "sub-kafka-group", "sub-kafka-latest", "sub-version-check")


def setup(d: Direct) -> None:
    """Fresh tables and cache, and a fresh bus namespace (Kafka topic and group ids) for this run."""
    setup_kv(d)
    d.redis.set("cc:bus-token", run_token(d.redis))  # on an external cluster it names the run's namespace


def crash_windows(rd: Reads) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    open_: dict[int, int] = {}
    for op in rd.nemesis:
        v = op.get("value") if isinstance(op.get("value"), dict) else {}
        if v.get("fault") != "crash-node":
            continue
        node = int(v["target"])
        if op["f"] == "start":
            open_[node] = op["time_ns"]
        elif op["f"] == "stop" and node in open_:
            out.append({"node": node, "down_ns": open_.pop(node), "up_ns": op["time_ns"]})
    for node, t in open_.items():  # never restarted during the load (healed at the end)
        out.append({"node": node, "down_ns": t, "up_ns": None})
    return out


def _judged(rd: Reads, bound_ms: float | None) -> bool:
    """Did the verdict have anything to judge: a node's final read of a written key next to the DB's,
    or (with ``bound_ms``) any read of a written key?"""
    if any(r.get("phase") == "final" and r["key"] in rd.db_final and r["key"] in rd.writes for r in rd.reads):
        return True
    return bound_ms is not None and any(r["key"] in rd.writes for r in rd.reads)


def check_crash_recovery(history: list[dict[str, Any]], bound_ms: float | None = None, tolerance_ms: float = 100,
                         max_anomalies: int = 20, **_: Any) -> dict[str, Any]:
    rd = Reads(history)
    tol = tolerance_ms * 1e6
    windows = crash_windows(rd)
    ack_at = {w[2]: (k, w[0], w[1]) for k, ws in rd.writes.items() for w in ws}  # index -> (key, version, ack)
    crashes, anomalies = [], []
    crashed_nodes = {w["node"] for w in windows}
    load_reads = [r for r in rd.reads if r.get("phase") != "final"]
    for w in windows:
        n, down, up = w["node"], w["down_ns"], w["up_ns"]
        missed = sorted({k for k, ws in rd.writes.items() for (_, t, _) in ws if down <= t <= (up or rd.end_ns)})
        after = [r for r in rd.reads if r.get("node") == n and up is not None and r["t_inv"] >= up]
        stale = [r for r in after if r["age_ns"] > tol]
        replay = [r for r in after if r.get("replaying")]
        c = {"node": n, "down_s": round(down / 1e9, 3), "up_s": round(up / 1e9, 3) if up else None,
             "down_for_s": round(((up or rd.end_ns) - down) / 1e9, 3),
             "keys_updated_while_down": len(missed),
             "reads_after_restart": sum(1 for r in after if r.get("phase") != "final"),
             "stale_reads_after_restart": sum(1 for r in stale if r.get("phase") != "final"),
             "stale_keys_after_restart": len({r["key"] for r in stale}),
             "max_stale_ms": round(max((r["age_ns"] for r in stale), default=0) / 1e6, 1),
             "stale_until_s_after_restart": round((max((r["t_inv"] for r in stale if r.get("phase") != "final"),
                                                       default=up or 0) - (up or 0)) / 1e9, 3),
             "replay_reads": len(replay), "stale_replay_reads": sum(1 for r in replay if r["age_ns"] > tol),
             "replay_seen_for_s": round((max((r["t_inv"] for r in replay), default=up or 0) - (up or 0)) / 1e9, 3),
             "replay_db_reads": sum(1 for r in replay if r.get("source") == "db")}
        crashes.append(c)
        seen: set[str] = set()
        for r in stale:
            if r["key"] in seen or len(anomalies) >= max_anomalies:
                continue
            seen.add(r["key"])
            key, ver, ack = ack_at.get(r["newer_index"], (r["key"], "?", 0))
            anomalies.append({
                "type": "stale-read", "key": r["key"], "ops": [r["newer_index"], r["index"]],
                "explanation": f"node {n} was down from {down / 1e9:.2f} s to {(up or 0) / 1e9:.2f} s; "
                               f"version {ver} of {key} was acknowledged at {ack / 1e9:.2f} s, yet after its "
                               f"restart the node served version {r['version']} from its surviving cache "
                               f"(op {r['index']}{', a final read' if r.get('phase') == 'final' else ''}), "
                               f"{r['age_ns'] / 1e6:.0f} ms after the newer version existed"})
    others = [r for r in load_reads if r.get("node") not in crashed_nodes]
    other_stale = [r["age_ns"] for r in others if r["age_ns"] > tol]
    diverged = rd.divergence()
    for d in diverged[:max(0, max_anomalies - len(anomalies))]:
        anomalies.insert(0, {"type": "not-converged", "key": d["key"], "ops": [d["index"]],
                             "explanation": f"after heal and quiesce node {d['node']} still serves {d['key']} version "
                                            f"{d['version']}; the DB holds {d['db_version']}: stale forever"})
    over = [r for r in rd.reads if bound_ms is not None and r["age_ns"] > bound_ms * 1e6]
    hits = sum(1 for r in load_reads if r.get("hit"))
    checks = sum(1 for r in load_reads if r.get("version_check"))
    db_loads = sum(1 for r in load_reads if r.get("db_load"))
    out: dict[str, Any] = {
        "crashes": crashes, "bound_ms": bound_ms, "tolerance_ms": tolerance_ms,
        "stale_reads_after_restart": sum(c["stale_reads_after_restart"] for c in crashes),
        "not_converged": len(diverged), "not_converged_keys": diverged[:50],
        "other_nodes": {"reads": len(others), "stale_reads": len(other_stale),
                        "p99_stale_ms": round(pct(other_stale, 99) / 1e6, 1)},
        "reads": len(load_reads), "hit_rate": round(hits / len(load_reads), 4) if load_reads else None,
        "db_loads": db_loads, "version_checks": checks, "anomalies": anomalies,
    }
    if diverged or over:
        out["valid"] = False
        if over and not diverged:
            out["over_bound"] = len(over)
    elif not _judged(rd, bound_ms):
        why = ("no acknowledged writes" if not rd.writes else
               "no final node read of a written key with a final DB read to compare it with")
        return nothing_to_judge(why + ("" if bound_ms is None else ", and no read of a written key"), **out)
    elif not windows:
        out["valid"] = True
        out["note"] = "no crash-node fault in this run: only convergence was checked"
    else:
        out["valid"] = True
    return out


WORKLOAD = Workload(
    name="crashed-subscriber",
    description="Nodes with caches that survive their process, invalidated over a bus; node 1 crashes "
                "while updates continue and restarts (run with --nodes >= 2)",
    strategies=SUB_STRATEGIES,
    default_strategy="sub-kafka-group",
    app_ops=("read", "write"),
    services=("redis", "postgres", "kafka"),
    isolated=True,  # setup_kv + a bus token that names the namespace (Kafka topic, groups): external-safe
    keys=100,
    mix={"read": 0.97, "write": 0.03},
    time_limit=10.0,
    concurrency=8,
    nodes=4,  # the default plan crashes node 1; nodes 0, 2, 3 keep serving
    rate=400.0,
    quiesce=1.0,
    # not "versions" (linearizability): asynchronous invalidation never promises it (see feature-flags)
    checkers=("staleness", "convergence", "perf", "crash-recovery"),
    checker_opts={"crash-recovery": {"tolerance_ms": 100}},
    extra_checkers={"crash-recovery": check_crash_recovery},
    setup=setup,
    plans={
        "none": "",
        "crash": "crash-node:1@20%+30%",
        "crash-late": "crash-node:1@40%+40%",
        "crash-twice": "crash-node:1@10%+20%;crash-node:1@50%+20%",
        "sub-link-down": "down:redis.sub1@20%+30%",
    },
    # node 1's pub/sub link: the Kafka strategies never open it
    plan_strategies={"sub-link-down": ("sub-pubsub", "sub-pubsub-ttl", "sub-version-check")},
    default_plan="crash",
    fault_menu=["crash-node:1", "down:redis.sub1", "latency:kafka:ms=200"],
)
