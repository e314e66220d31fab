"""Topology words: parsing, names, and refusals before anything starts (harness/topology.py)."""

from __future__ import annotations

import pytest

from harness.runner import ConfigError, RunConfig, prepare
from harness.topology import Topology, TopologyError, parse, protocol, resolve


def test_default_is_one_of_each() -> None:
    t = resolve("", None, ("redis", "postgres", "kafka"))
    assert t.single and t.text() == "single"
    assert t.names(("redis", "postgres", "kafka")) == ("redis", "postgres", "kafka")


def test_words_on_top_of_the_workload_default() -> None:
    t = resolve("postgres=replica", "redis=sentinel,kafka=3,min_isr=2", ("redis", "postgres", "kafka"))
    assert (t.redis, t.postgres, t.kafka, t.min_isr) == ("sentinel", "replica", 3, 2)
    assert t.text() == "redis=sentinel,postgres=replica,kafka=3,min_isr=2"
    assert resolve(t.text(), None, ("redis", "postgres", "kafka")) == t  # the text round-trips
    names = t.names(("redis", "postgres", "kafka"))
    assert names[:6] == ("redis", "redis-2", "redis-3", "sentinel-1", "sentinel-2", "sentinel-3")
    assert {"postgres-replica", "kafka-2", "kafka-3", "redis-primary"} <= set(names)
    assert resolve("postgres=replica", "postgres=single", ("redis", "postgres")).single  # the user's word wins


@pytest.mark.parametrize("text, error", [
    ("redis=cluster", "unknown redis topology 'cluster'"),
    ("postgres=replicas", "unknown postgres topology 'replicas'"),
    ("kafka=9", "kafka takes 1 to 5 brokers, got 9"),
    ("kafka=three", "kafka must be a whole number"),
    ("kafka=3,min_isr=4", "min_isr must be between 1 and the 3 broker(s), got 4"),
    ("zookeeper=3", "unknown topology word 'zookeeper=3'"),
    ("redis", "topology redis needs a value"),
])
def test_bad_words_are_one_line_errors(text: str, error: str) -> None:
    with pytest.raises(TopologyError) as e:
        resolve(None, text, ("redis", "postgres", "kafka"))
    assert error in str(e.value) and "\n" not in str(e.value)


def test_a_word_about_a_service_the_workload_does_not_use_is_refused() -> None:
    with pytest.raises(ConfigError, match="topology kafka=... is about kafka, which this workload does not use"):
        prepare(RunConfig(workload="register", topology="kafka=3"))


def test_fault_targets_follow_the_topology() -> None:
    with pytest.raises(ConfigError, match="unknown target 'postgres-replica'"):
        prepare(RunConfig(workload="register", faults="kill:postgres-replica@1+1", time_limit=3))
    p = prepare(RunConfig(workload="register", topology="postgres=replica", faults="kill:postgres-replica@1+1",
                          time_limit=3))
    assert p.topology == Topology(postgres="replica") and p.config.topology == "postgres=replica"


def test_protocols_of_names() -> None:
    assert [protocol(n) for n in ("redis-2", "sentinel-3", "postgres.replica", "kafka-3.node1", "redis")] == \
        ["redis", "redis", "postgres", "kafka", "redis"]
    assert parse("single") == {} and parse("") == {}
