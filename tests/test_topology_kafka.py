"""kafka=3,min_isr=2 on real brokers: three KRaft brokers (each also a controller), every broker
behind its own client proxy and replicating through its own link proxy, replication factor 3 by
default, a killed broker verified dead and rejoined when the fault ends, nothing left running.

One cluster (Kafka only) serves the whole module: a 3-broker start is seconds of CPU.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _procs import TAG_VAR, make_state, new_tag, pid_records, wait_gone

from harness.cluster import Cluster
from harness.faults import make_fault
from harness.faults.base import FaultContext, FaultWindow
from harness.topology import resolve
from strategies.base import Env

pytestmark = pytest.mark.cluster  # real brokers (not one of conftest's fixtures)
SERVICES = ("kafka",)
TOPOLOGY = "kafka=3,min_isr=2"


@pytest.fixture(scope="module")
def kcluster() -> Iterator[Cluster]:
    tag = new_tag()
    old = os.environ.get(TAG_VAR)
    os.environ[TAG_VAR] = tag  # inherited by every broker the cluster spawns
    c = Cluster(services=SERVICES, state=make_state(), topology=resolve(None, TOPOLOGY, SERVICES))
    c.tag = tag  # type: ignore[attr-defined]
    try:
        c.up()
        yield c
    finally:
        c.down()
        c.remove()
        if old is None:
            os.environ.pop(TAG_VAR, None)
        else:
            os.environ[TAG_VAR] = old


def _admin(c: Cluster) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(Env(c.endpoints, timeout=2.0).kafka_conf())


def _topic(c: Cluster, rf: int = -1) -> str:
    from confluent_kafka.admin import NewTopic

    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = _admin(c)  # kept alive until the result: a collected client cancels its requests
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=rf)])[name].result(20)
    return name


def _partition(c: Cluster, topic: str, want_isr: int, timeout: float = 30.0) -> Any:
    """The topic's partition 0 once its ISR has ``want_isr`` replicas (or the last one seen)."""
    admin, p, deadline = _admin(c), None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and 0 in md.partitions:
            p = md.partitions[0]
            if len(p.isrs) == want_isr:
                return p
        time.sleep(0.2)
    return p


def _produce(c: Cluster, topic: str, n: int = 5) -> int:
    """Messages acknowledged under acks=all within 20 s."""
    from confluent_kafka import Producer

    acked: list[int] = []
    p = Producer(Env(c.endpoints, timeout=2.0).kafka_conf() | {"acks": "all", "message.timeout.ms": 20000})
    for i in range(n):
        p.produce(topic, str(i).encode(), on_delivery=lambda err, m: acked.append(1) if err is None else None)
    p.flush(25)
    return len(acked)


def test_three_brokers_each_behind_its_own_proxies(kcluster: Cluster) -> None:
    c = kcluster
    assert set(c.svc) == {"kafka", "kafka-2", "kafka-3"}
    assert set(c.endpoints) == {"kafka", "kafka-2", "kafka-3"}  # the replication links are not endpoints
    assert {"kafka.repl", "kafka-2.repl", "kafka-3.repl"} <= c.links
    md = _admin(c).list_topics(timeout=10)
    # each broker advertises its client listener as its own client proxy
    assert {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()} == {
        1: c.endpoints["kafka"], 2: c.endpoints["kafka-2"], 3: c.endpoints["kafka-3"]}
    conf = Env(c.endpoints).kafka_conf()
    assert conf["bootstrap.servers"].split(",") == [c.endpoints[n] for n in ("kafka", "kafka-2", "kafka-3")]


def test_topics_replicate_to_every_broker_with_min_isr(kcluster: Cluster) -> None:
    topic = _topic(kcluster)
    p = _partition(kcluster, topic, want_isr=3)
    assert sorted(p.replicas) == [1, 2, 3] and sorted(p.isrs) == [1, 2, 3], p
    assert _produce(kcluster, topic) == 5
    cfg = (kcluster.svc["kafka-2"].dir / "server.properties").read_text()  # type: ignore[attr-defined]
    for line in ("node.id=2", "default.replication.factor=3", "min.insync.replicas=2",
                 "unclean.leader.election.enable=false", "offsets.topic.replication.factor=3"):
        assert line in cfg.splitlines(), line
    assert cfg.count("@127.0.0.1:") == 3  # every broker is a voter


def test_replication_link_faults_are_verified(kcluster: Cluster) -> None:
    names = resolve(None, TOPOLOGY, SERVICES).names(SERVICES)
    ctx = FaultContext(kcluster)
    for spec in (("latency", "kafka-2.repl", {"ms": 300}), ("partition", "kafka-2.repl", {})):
        f = make_fault(spec[0], spec[1], spec[2], names)
        window = FaultWindow()
        f.start(ctx)
        try:
            ok, observed = f.probe(FaultContext(kcluster, window=window))
        finally:
            window.end()
            f.stop(ctx)
        assert ok, (spec, observed)


def test_kill_kafka_2_is_verified_and_the_broker_rejoins(kcluster: Cluster) -> None:
    c = kcluster
    topic = _topic(c)
    assert len(_partition(c, topic, want_isr=3).isrs) == 3
    names = resolve(None, TOPOLOGY, SERVICES).names(SERVICES)
    kill = make_fault("kill", "kafka-2", {}, names)
    ctx = FaultContext(c)
    kill.start(ctx)
    try:
        ok, observed = kill.probe(FaultContext(c, window=FaultWindow()))
        assert ok, observed
        assert "refused" in observed
        # two of three brokers: still a controller quorum, and min.insync.replicas=2 still met
        assert _produce(c, topic) == 5
    finally:
        kill.stop(ctx)  # restarts it (healthy = registered again)
    assert c.svc["kafka-2"].running()
    assert 2 in _admin(c).list_topics(timeout=10).brokers
    p = _partition(c, topic, want_isr=3)
    assert sorted(p.isrs) == [1, 2, 3], f"kafka-2 did not rejoin the ISR: {p}"


def test_down_leaves_no_broker_running(kcluster: Cluster) -> None:
    recs = pid_records(kcluster.dir)
    assert {r.name for r in recs} == {"toxiproxy", "kafka", "kafka-2", "kafka-3"}
    kcluster.down()
    assert wait_gone(recs, kcluster.tag) == []  # type: ignore[attr-defined]
    assert pid_records(kcluster.dir) == []
