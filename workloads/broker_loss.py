"""broker-loss (issue 16): durable invalidation over three Kafka brokers, one of which dies.

The crashed-subscriber design (each node keeps a cache that survives its process and applies the
invalidation events every write publishes on Kafka; strategies/subscriber.py) over ``kafka=3,min_isr=2``.
The question is the bus's own durability: is an invalidation the producer was told had been written
still there after the broker that acknowledged it dies?

The plan makes the invalidation topic's partition leader the broker that is killed: set-up creates
the run's topic with its replicas on brokers 2, 1, 3 (preferred leader ``kafka-2``), the nemesis
first cuts kafka-2's replication link (``kafka-2.repl``: its followers get none of the newest events,
yet stay in sync for replica.lag.time.max.ms), then kills kafka-2 while they are behind. (Plan
``lagging-loss`` makes them lag by a 1 s latency instead; in some runs the followers were found only
~0.1 s behind at the kill despite it, cause not found, so the default plan black-holes the link.) Unclean leader election
is off, so an in-sync follower becomes leader, without the newest events:

    sub-kafka-acks1     those events had been acknowledged (leader only): lost; the nodes that cached
                        the keys keep the old values for good (positive control)
    sub-kafka-acks-all  nothing was acknowledged before two brokers had it: no acknowledged event is
                        lost; events not yet acknowledged are retried to the new leader (negative control)

The final DB read of each key also reads the run's invalidation topic once, straight after heal and
quiesce (``bus_versions``: the versions of the key's events the topic holds), so the
``missed-invalidations`` checker judges the bus from the bus's side, not from what a node says:

* a *lost invalidation*: an acknowledged write (its event acknowledged by Kafka) whose event is not in
  the topic, so no subscriber can ever have applied it;
* *stranded*: a lost one with no later event for its key (nothing will invalidate the key again);
* *not converged*: a node whose final read of a key differs from the DB's (the cache side of it).

Invalid when any acknowledged invalidation was lost or any node did not converge; unknown when the
topic could not be read and every node converged; nothing to judge without acknowledged writes.
"""

from __future__ import annotations

import time
from typing import Any

from core.ops import nothing_to_judge
from strategies.base import kafka_brokers
from workloads.base import Direct, Workload, final_kv, paired, setup_kv
from workloads.feature_flags import Reads

TOKEN_KEY = "cc:bus-token"
LEADER = "kafka-2"  # the broker the plans kill: the invalidation partition's preferred leader
READ_TIMEOUT_S = 15.0


def _node_id(name: str) -> int:
    return 1 if name == "kafka" else int(name.rpartition("-")[2])


def _admin_conf(d: Direct) -> dict[str, Any]:
    return {"bootstrap.servers": ",".join(kafka_brokers(d.endpoints)), "socket.timeout.ms": 5000, "log_level": 0}


def topic_of(d: Direct) -> str:
    return f"cc-inv-{d.redis.get(TOKEN_KEY).decode()}"


def setup(d: Direct) -> None:
    """Fresh tables and cache, a fresh bus token, and the run's invalidation topic created with one
    partition replicated to every broker, ``kafka-2`` first (its preferred, hence first, leader)."""
    import uuid

    from confluent_kafka.admin import AdminClient, NewTopic

    setup_kv(d)
    d.redis.set(TOKEN_KEY, uuid.uuid4().hex[:12])
    topic = topic_of(d)
    names = sorted((n for n in d.endpoints if n == "kafka" or n.startswith("kafka-")), key=_node_id)
    ids = [_node_id(n) for n in names]
    leader = _node_id(LEADER) if LEADER in names else ids[0]
    replicas = [leader] + [i for i in ids if i != leader]
    admin = AdminClient(_admin_conf(d))
    admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[replicas])])[topic].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every broker's metadata may lag the controller's a little
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and 0 in md.partitions and md.partitions[0].leader == leader \
                and len(md.partitions[0].isrs) == len(replicas):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic}: leader {leader} with {len(replicas)} in-sync replicas not seen within 30 s")


def read_bus(d: Direct) -> dict[str, Any]:
    """Every event of the run's invalidation topic: ``{"versions": {key: [v, ...]}, "events": n}``, or
    ``{"error": why}``. Read once per final phase (kept on the Direct object)."""
    cached = getattr(d, "_bus", None)
    if cached is not None:
        return cached
    try:
        out: dict[str, Any] = {"versions": _read_topic(d), "error": None}
        out["events"] = sum(len(v) for v in out["versions"].values())
    except Exception as e:  # noqa: BLE001 - the checker says unknown, with why
        out = {"versions": {}, "events": 0, "error": f"{type(e).__name__}: {e}"}
    d._bus = out  # type: ignore[attr-defined]
    return out


def _read_topic(d: Direct) -> dict[str, list[int]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = topic_of(d)
    c = Consumer(_admin_conf(d) | {"group.id": f"cc-final-{topic}", "enable.auto.commit": False,
                                   "enable.partition.eof": True})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        versions: dict[str, set[int]] = {}
        if hi <= lo:
            return {}
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline, pos = time.monotonic() + READ_TIMEOUT_S, lo
        while pos < hi:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic}: read up to offset {pos} of {hi} in {READ_TIMEOUT_S:g} s")
            for m in c.consume(1000, timeout=0.5):
                if m.error() is not None:
                    continue
                pos = m.offset() + 1
                key, _, ver = m.value().decode().partition(" ")
                versions.setdefault(key, set()).add(int(ver))
        return {k: sorted(v) for k, v in versions.items()}
    finally:
        c.close()


def final_read(d: Direct, key: str) -> dict[str, Any]:
    bus = read_bus(d)
    out = final_kv(d, key)
    if bus["error"] is not None:
        return out | {"bus_error": bus["error"]}
    return out | {"bus_versions": bus["versions"].get(key, []), "bus_events": bus["events"]}


def _bus_record(history: list[dict[str, Any]]) -> tuple[dict[str, list[int]], str | None, int | None]:
    """(key -> versions in the topic, why the topic is unknown, events in it) from the last final DB reads."""
    versions: dict[str, list[int]] = {}
    error: str | None = None
    events: int | None = None
    for op in paired(history).ops:
        c = op.comp
        if op.type != "ok" or op.f != "read" or not op.is_final or c.get("node") is not None:
            continue
        if "bus_error" in c:
            error = c["bus_error"]
        elif "bus_versions" in c:
            versions[op.key] = list(c["bus_versions"])
            events = c.get("bus_events", events)
    if error is None and not versions and events is None:
        error = "no final DB read carried the invalidation topic's contents"
    return versions, error, events


def last_round_divergence(rd: Reads) -> list[dict[str, Any]]:
    """The nodes' last final reads (the final reads repeat until they agree or the strategy's
    convergence bound passes) whose version differs from the DB's last final read."""
    last: dict[tuple[Any, str], dict[str, Any]] = {}
    for r in sorted((r for r in rd.reads if r.get("phase") == "final"), key=lambda r: r["index"]):
        last[(r.get("node"), r["key"])] = r
    return [{"node": r.get("node"), "key": r["key"], "version": r["version"], "db_version": rd.db_final[r["key"]],
             "index": r["index"]}
            for r in last.values() if r["key"] in rd.db_final and r["version"] != rd.db_final[r["key"]]]


def check_missed_invalidations(history: list[dict[str, Any]], max_anomalies: int = 20, **_: Any) -> dict[str, Any]:
    rd = Reads(history)
    bus, bus_error, events = _bus_record(history)
    acked = sorted((ack, key, ver, idx) for key, ws in rd.writes.items() for ver, ack, idx in ws)
    lost, stranded = [], []
    if bus_error is None:
        for ack, key, ver, idx in acked:
            have = bus.get(key, [])
            if ver not in have:
                lost.append((ack, key, ver, idx))
                if max(have, default=0) < ver:
                    stranded.append(key)
    diverged = last_round_divergence(rd)
    anomalies: list[dict[str, Any]] = []  # some of each kind: lost events first (the cause), then stale nodes
    shown_lost = lost[:max(max_anomalies // 2, max_anomalies - len(diverged))]
    for ack, key, ver, idx in shown_lost:
        later = [v for v in bus.get(key, []) if v > ver]
        anomalies.append({"type": "lost-invalidation", "key": key, "ops": [idx],
                          "explanation": f"the write of {key} version {ver} and its invalidation were acknowledged "
                                         f"at {ack / 1e9:.2f} s, yet after heal the invalidation topic holds no "
                                         f"such event: no subscriber can have applied it"
                                         + (f" (a later event, version {later[0]}, covers the key)" if later else
                                            " and no later event for the key exists")})
    for d in diverged[:max(0, max_anomalies - len(anomalies))]:
        anomalies.append({"type": "not-converged", "key": d["key"], "ops": [d["index"]],
                          "explanation": f"after heal and quiesce node {d['node']} still serves {d['key']} version "
                                         f"{d['version']}; the DB holds {d['db_version']}: stale for good"})
    out: dict[str, Any] = {
        "acked_writes": len(acked), "bus_events": events, "bus_error": bus_error,
        "lost_invalidations": len(lost), "lost_keys": len({k for _, k, _, _ in lost}),
        "stranded_keys": len(set(stranded)),
        "lost_acked_between_s": [round(lost[0][0] / 1e9, 3), round(lost[-1][0] / 1e9, 3)] if lost else None,
        "not_converged": len(diverged), "not_converged_nodes": sorted({d["node"] for d in diverged}),
        "not_converged_keys": diverged[:50], "anomalies": anomalies,
    }
    if lost or diverged:
        out["valid"] = False
        return out
    if not acked:
        return nothing_to_judge("no acknowledged writes", **out)
    if bus_error is not None:
        out["valid"] = "unknown"
        out["error"] = f"the invalidation topic could not be read after heal: {bus_error}"
        return out
    out["valid"] = True
    return out


WORKLOAD = Workload(
    name="broker-loss",
    description="Nodes with caches that survive their process, invalidated over a 3-broker Kafka; the "
                "invalidation partition's leader lags its followers, then dies (acks=1 vs acks=all)",
    strategies=("sub-kafka-acks1", "sub-kafka-acks-all"),
    default_strategy="sub-kafka-acks-all",
    app_ops=("read", "write"),
    services=("redis", "postgres", "kafka"),
    topology="kafka=3,min_isr=2",
    keys=300,
    mix={"read": 0.8, "write": 0.2},  # every write an invalidation event: many in the leader-only window
    time_limit=10.0,
    concurrency=8,
    nodes=3,
    rate=300.0,
    quiesce=2.0,
    checkers=("staleness", "convergence", "perf", "missed-invalidations"),
    extra_checkers={"missed-invalidations": check_missed_invalidations},
    setup=setup,
    final_read=final_read,
    plans={
        "none": "",
        # kafka-2's followers are cut off from it (replication link black-holed) from 10% to 45%,
        # still in sync (replica.lag.time.max.ms is 30 s); kafka-2 dies at 40%, restarted at 70% (the
        # link probe waits 2 s for silence: a kill sooner would close its connection)
        "broker-loss": "partition:kafka-2.repl@10%+35%;kill:kafka-2@40%+30%",
        "lagging-loss": "latency:kafka-2.repl:ms=1000@0%+60%;kill:kafka-2@40%+30%",
        "kill": "kill:kafka-2@40%+30%",
    },
    default_plan="broker-loss",
    fault_menu=["kill:kafka-2", "latency:kafka-2.repl:ms=1000", "partition:kafka-2.repl", "partition:kafka-3"],
)
