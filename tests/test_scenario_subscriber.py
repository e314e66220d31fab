"""crashed-subscriber (seed scenario 6) on the real cluster: crash node 1 while updates continue.

Positive controls: Redis pub/sub and Kafka with a fresh group + ``latest`` lose what the node
missed, stale forever (final per-node reads disagree with the DB). Negative controls: a stable
Kafka consumer group replays and converges; a version check on read never serves a version the DB
moved past. Bad input: unknown offset reset, negative periods, no such node, Kafka unreachable.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare
from strategies.base import Env
from strategies.subscriber import BusUnreachable, SubKafkaGroup

CRASH = "crash-node:1@20%+35%"


def _run(cluster: Cluster, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("quiesce", 0.5)
    kw.setdefault("faults", CRASH)
    cfg = RunConfig(workload="crashed-subscriber", reports=str(tmp_path), nodes=3, time_limit=6, **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False).execute()


def _cr(res: dict[str, Any]) -> dict[str, Any]:
    return res["checkers"]["crash-recovery"]


@pytest.mark.parametrize("strategy", ["sub-pubsub", "sub-kafka-latest"])
def test_missed_invalidations_stay_stale_forever(cluster: Cluster, tmp_path: Path, strategy: str) -> None:
    res = _run(cluster, tmp_path, strategy=strategy, seed=21)
    c = _cr(res)
    assert res["valid"] is False and c["valid"] is False
    assert not res.get("fault_errors"), res.get("fault_errors")
    assert c["not_converged"] > 0
    assert {d["node"] for d in c["not_converged_keys"]} == {1}
    assert c["anomalies"][0]["type"] == "not-converged"
    crash = c["crashes"][0]
    assert crash["node"] == 1 and crash["keys_updated_while_down"] > 0
    assert crash["stale_reads_after_restart"] > 0
    # the live nodes got every invalidation (a few lagging reads under load are not the point)
    assert res["checkers"]["convergence"]["valid"] is False  # the shared checker agrees


def test_stable_consumer_group_replays_and_converges(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, strategy="sub-kafka-group", seed=21)
    c = _cr(res)
    assert res["valid"] is True, {n: r.get("anomalies", [])[:1] for n, r in res["checkers"].items()}
    assert c["not_converged"] == 0
    crash = c["crashes"][0]
    assert crash["keys_updated_while_down"] > 0 and crash["up_s"] is not None


def test_version_check_on_read_never_serves_a_superseded_version(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, strategy="sub-version-check", seed=21)
    c = _cr(res)
    assert res["valid"] is True, {n: r.get("anomalies", [])[:1] for n, r in res["checkers"].items()}
    assert c["crashes"][0]["stale_reads_after_restart"] == 0 and c["not_converged"] == 0
    assert c["version_checks"] > 0


@pytest.mark.parametrize(("kw", "needle"), [
    ({"nodes": 0}, "nodes must be >= 1"),
    ({"nodes": 2, "faults": "crash-node:5@1+1"}, "does not have"),
    ({"strategy": "sub-kafka-group", "params": {"offset_reset": "newest"}}, "offset_reset must be one of"),
    ({"strategy": "sub-pubsub-ttl", "params": {"ttl": -1}}, "ttl must be >= 0"),
    ({"strategy": "sub-version-check", "params": {"check_interval": -0.5}}, "check_interval must be >= 0"),
    ({"strategy": "sub-kafka-group", "params": {"gate": "maybe"}}, "gate must be true or false"),
    ({"strategy": "flags-pubsub"}, "cannot serve workload crashed-subscriber"),
])
def test_bad_input_is_a_clear_error(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        prepare(RunConfig(workload="crashed-subscriber", **kw))


def test_node_that_cannot_reach_kafka_fails_fast(cluster: Cluster) -> None:
    dead = cluster.add_proxy("kafka.dead", "kafka")
    cluster.toxiproxy.set_enabled("kafka.dead", False)
    env = Env(cluster.endpoints | {"kafka": dead}, node=0, timeout=1.0, add_proxy=cluster.add_proxy)
    node = SubKafkaGroup()
    err: list[BaseException] = []

    def boot() -> None:
        try:
            node.setup(env)
        except BaseException as e:  # noqa: BLE001
            err.append(e)
        finally:
            node.close()
            env.close()

    t = threading.Thread(target=boot, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "setup hung on an unreachable Kafka"
    assert err and isinstance(err[0], BusUnreachable), err
    assert "cannot reach Kafka" in str(err[0])
