"""Topology family ``kafka=N``: N Kafka brokers in KRaft mode, every one also a controller.

Why: a broker loss can drop an invalidation a producer was told had been written (acks=1 and a
leader that dies before its followers copied the event), and only a replicated cluster shows it.
The cluster has already made the first broker (``kafka``, node 1, behind its client proxy); this
module adds ``kafka-2`` .. ``kafka-N`` (node ids 2..N) and wires them together:

* **clients**: each broker's CLIENT listener is advertised as its own client proxy (``kafka-2`` ...),
  as the single broker does, so every connection a client makes after bootstrap goes through a
  proxy and ``partition:kafka-2`` cuts clients off that broker;
* **replication**: each broker's INTERNAL (inter-broker) listener is advertised as a link proxy
  ``kafka-I.repl`` to that broker, so followers fetch from a leader through the leader's link:
  ``latency:kafka-2.repl`` makes every follower of kafka-2's partitions lag, ``partition:kafka-2.repl``
  cuts them off. The link proxy forwards to the broker's CLIENT socket (a cluster proxy forwards
  to a server's endpoint; every listener is PLAINTEXT without authentication, so a broker serves a
  replica fetch on any of them); the INTERNAL socket itself answers the health probe;
* **controllers**: the quorum (``controller.quorum.voters`` lists every broker) talks directly, not
  through proxies: a link fault then never costs the quorum or fences a broker, so what it does is
  lag or cut replication only; ``kill:kafka-2`` takes its controller down with it (combined mode;
  N=3 keeps a quorum with one down);
* **defaults**: replication factor N for auto-created topics and the offsets topic,
  ``min.insync.replicas=M`` (``min_isr``), no unclean leader election, a dead broker fenced within
  3 s (harness/services/local.py: KafkaService._replicated);
* **storage**: each broker copies the same cached formatted template (the bootstrap checkpoint
  holds only the metadata version, the static quorum is in the config), with the cluster's one
  cluster.id and its own node.id written into meta.properties: no StorageTool run per broker;
* **heap**: 256 MB per broker (the single broker keeps 512 MB);
* **stop**: all brokers are stopped together; a broker still waiting for a quorum that has gone
  is killed after ``STOP_S`` (its log is recovered at the next start) instead of the 10 s default.

A broker is healthy when the metadata it serves lists its own node id (registered with the quorum
and unfenced); every broker healthy means all N are in the metadata.
"""

from __future__ import annotations

from typing import Any

from harness.services.local import KafkaService, _kafka_uuid
from harness.topology import Topology, TopologyError

HEAP = "256m"
STOP_S = 2.0


def expand(cluster: Any, topology: Topology) -> None:
    first = cluster.svc.get("kafka")
    if cluster.backend != "local" or not isinstance(first, KafkaService):
        raise TopologyError(f"topology kafka={topology.kafka} runs on the local backend only "
                            f"(this cluster's backend: {cluster.backend})")
    brokers = [first]
    for i in range(2, topology.kafka + 1):
        k = KafkaService(cluster.dir, cluster.port(), cluster.port(), cluster.port(), name=f"kafka-{i}", node_id=i)
        k.advertised_port = cluster.add(k)
        brokers.append(k)
    voters = ",".join(f"{k.node_id}@127.0.0.1:{k.controller_port}" for k in brokers)
    cluster_id = _kafka_uuid()
    for k in brokers:
        k.voters = voters
        k.cluster_id = cluster_id
        k.replication = topology.kafka
        k.min_isr = topology.min_isr
        k.xmx = HEAP
        k.stop_timeout = STOP_S
        k.internal_advertised_port = cluster.add_link(f"{k.name}.repl", k.name)


__all__ = ["expand"]
