"""Kafka invalidation that must survive a broker loss: the same node design as the stable consumer
group of strategies/subscriber.py, differing only in what the producer waits for.

Why: an invalidation the producer was told had been written, then lost with the broker that held it,
leaves every other node serving the old value for good (nothing else will ever tell them). Whether
that can happen is the producer's ``acks`` against the topic's replication:

    sub-kafka-acks1     acks=1: the partition leader alone acknowledges; a leader that dies before
                        its followers copied the event loses it (a follower without it is elected)
    sub-kafka-acks-all  acks=all with min.insync.replicas=2 (topology kafka=3,min_isr=2): an
                        acknowledged event is on at least two brokers, so one broker loss keeps it

Both keep retrying an unacknowledged event for ``delivery_timeout`` (30 s: longer than a leader
failover), so an event whose write timed out still reaches the subscribers once a new leader is
elected (both promise convergence within ``CONVERGE_S`` of the heal: the final reads are repeated
until then); what acks=1 loses is what was *acknowledged*. Their consumers commit (after applying)
without waiting for the commit: with kafka-2 slow to replicate or dead, a node whose group coordinator
sits on it would otherwise stop applying invalidations while its commit is retried (seen: a node
stuck for the whole latency window, each commit timing out at the 1 s socket timeout and retried),
and assign their one partition themselves, using the node's group only to keep its committed offset:
a node whose coordinator died with the broker lost its session, rejoined as a new member and waited
10-20 s for the old member to expire on the new coordinator, serving stale entries meanwhile.
"""

from __future__ import annotations

from typing import ClassVar

from strategies.subscriber import SubKafkaGroup

# promised: every node agrees with the DB within this long after the faults heal (a retried event
# reaches the new leader and every subscriber); the run re-reads until then (harness/runner.py)
CONVERGE_S = 6.0


class SubKafkaAcks1(SubKafkaGroup):
    """Stable consumer group per node; invalidations produced with acks=1 (leader only)."""

    name: ClassVar[str] = "sub-kafka-acks1"
    default_acks: ClassVar[str] = "1"
    default_delivery_timeout: ClassVar[float | None] = 30.0
    sync_commit: ClassVar[bool] = False
    group_membership: ClassVar[bool] = False
    converge_bound_s: ClassVar[float] = CONVERGE_S


class SubKafkaAcksAll(SubKafkaGroup):
    """Stable consumer group per node; invalidations produced with acks=all (every in-sync replica)."""

    name: ClassVar[str] = "sub-kafka-acks-all"
    default_acks: ClassVar[str] = "all"
    default_delivery_timeout: ClassVar[float | None] = 30.0
    sync_commit: ClassVar[bool] = False
    group_membership: ClassVar[bool] = False
    converge_bound_s: ClassVar[float] = CONVERGE_S
