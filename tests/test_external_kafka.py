"""Kafka on --backend external: crashed-subscriber against a foreign Redis + PostgreSQL + Kafka
cluster (started with ``cachecert up``, tests/_external.py). The run's topic and consumer groups are
named after its namespace and removed at the end, someone else's topic and group are untouched, the
verdicts are those of the embedded backend on the same seed (a fresh group at ``latest`` misses the
invalidations published while node 1 was down; a stable group replays them), and a link fault on
Kafka, which could not bite there (the brokers advertise their own addresses), is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _external
import pytest
from _external import Foreign, _ports, _run

from harness.runner import ConfigError, RunConfig, prepare

PLANTED_TOPIC, PLANTED_GROUP = "someone-else.orders", "someone-else-billing"


@pytest.fixture(scope="module")
def foreign() -> Iterator[Foreign]:
    yield from _external.start_foreign("redis,postgres,kafka")


def _admin(c: Foreign) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": c.direct["kafka"], "log_level": 0})


def _file(tmp: Path, c: Foreign, kafka_extra: str = "") -> Path:
    rp, pp = _ports(c)
    f = tmp / "cluster.toml"
    f.write_text(f'[redis]\nurl = "redis://127.0.0.1:{rp}"\n\n[postgres]\nurl = "postgresql://postgres@127.0.0.1:{pp}'
                 f'/postgres"\n\n[kafka]\nbootstrap = ["{c.direct["kafka"]}"]\n{kafka_extra}')
    return f


def _plant(c: Foreign) -> None:
    """Someone else's topic, with an event in it, and a consumer group with a committed offset."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    admin = _admin(c)
    if PLANTED_TOPIC not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(PLANTED_TOPIC, num_partitions=1, replication_factor=1)])[PLANTED_TOPIC].result(15)
        p = Producer({"bootstrap.servers": c.direct["kafka"]})
        p.produce(PLANTED_TOPIC, b"invoice 1")
        assert p.flush(15) == 0
        cons = Consumer({"bootstrap.servers": c.direct["kafka"], "group.id": PLANTED_GROUP})
        cons.commit(offsets=[TopicPartition(PLANTED_TOPIC, 0, 1)], asynchronous=False)
        cons.close()


def _kafka_names(c: Foreign) -> tuple[set[str], set[str]]:
    admin = _admin(c)
    topics = {t for t in admin.list_topics(timeout=10).topics if not t.startswith("__")}
    groups = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(15).valid}
    return topics, groups


@pytest.mark.parametrize("strategy, valid", [("sub-kafka-latest", False), ("sub-kafka-group", True)])
def test_crashed_subscriber_same_verdict_as_embedded_and_only_its_names_removed(
        foreign: Foreign, tmp_path: Path, strategy: str, valid: bool) -> None:
    kw: dict[str, Any] = dict(workload="crashed-subscriber", nodes=3, time_limit=6.0, seed=21,
                              checkers=["convergence", "crash-recovery"])
    emb = _run(tmp_path / "emb", strategy, "crash-node:1@20%+35%", **kw)  # the embedded backend: its own cluster
    _plant(foreign)
    ext = _run(tmp_path / "ext", strategy, "crash-node:1@20%+35%", backend="external",
               cluster_file=str(_file(tmp_path, foreign)), **kw)
    for res in (emb, ext):
        assert not res.get("error") and not res.get("fault_errors"), res
        assert res["faults"] and all(p["verified"] for p in res["faults"]), res["faults"]
        cr = res["checkers"]["crash-recovery"]
        assert res["valid"] is valid and cr["valid"] is valid, cr.get("anomalies", [])[:1]
        assert cr["crashes"][0]["keys_updated_while_down"] > 0
        assert (cr["not_converged"] > 0) is (not valid)
    log = (Path(ext["run_dir"]) / "harness.log").read_text()
    ns = log.split("this run's namespace is ")[1].split()[0]
    assert f"topic cc-inv-{ns}-" in log, "the run's topic was not named after its namespace, or not removed"
    topics, groups = _kafka_names(foreign)
    assert topics == {PLANTED_TOPIC}, f"left or lost topics: {topics}"
    assert groups == {PLANTED_GROUP}, f"left or lost groups: {groups}"


def test_kafka_link_faults_and_tls_are_refused_before_anything_starts(foreign: Foreign, tmp_path: Path) -> None:
    f = _file(tmp_path, foreign)
    with pytest.raises(ConfigError, match=r"latency:kafka: a link fault on Kafka would not bite on the external "
                                          r"backend: the brokers advertise their own addresses"):
        prepare(RunConfig(workload="crashed-subscriber", strategy="sub-kafka-group", faults="latency:kafka:ms=200@1+2",
                          backend="external", cluster_file=str(f)))
    tls = _file(tmp_path, foreign, kafka_extra="tls = true\n")
    with pytest.raises(ConfigError, match=r"Kafka over TLS is not built for the external backend"):
        prepare(RunConfig(workload="crashed-subscriber", strategy="sub-kafka-group", backend="external",
                          cluster_file=str(tls)))


def test_a_sigkilled_run_leaves_no_topic_or_group(foreign: Foreign, tmp_path: Path) -> None:
    """The run's reaper removes the dead run's topic and consumer groups (they carry its namespace;
    the groups' members died with it, so it waits out their sessions), and nothing else."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from harness.services.base import wait_until

    _plant(foreign)
    state = Path(tempfile.mkdtemp(prefix="cachecert-extk-", dir="/tmp"))
    env = dict(os.environ, CACHECERT_STATE_DIR=str(state), CACHECERT_REPORTS=str(tmp_path / "r"))
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "crashed-subscriber", "-s", "sub-kafka-group",
                          "-t", "60", "-f", "none", "--backend", "external", "--cluster", str(_file(tmp_path, foreign)),
                          "--no-progress"], cwd=_external.REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def ours() -> tuple[set[str], set[str]]:
        topics, groups = _kafka_names(foreign)
        return topics - {PLANTED_TOPIC}, groups - {PLANTED_GROUP}

    try:
        deadline = time.monotonic() + 40
        seen = ours()
        while not (seen[0] and len(seen[1]) >= 4):  # the run is in its load phase: its topic and 4 groups
            assert time.monotonic() < deadline and p.poll() is None, f"the run never created its names: {seen}"
            time.sleep(0.3)
            seen = ours()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert all(t.startswith("cc-inv-cc_") for t in seen[0]) and all(g.startswith("cc-cc_") for g in seen[1]), seen
    assert wait_until(lambda: ours() == (set(), set()), 40, interval=0.5), f"left: {ours()} (before the kill: {seen})"
    assert _kafka_names(foreign) == ({PLANTED_TOPIC}, {PLANTED_GROUP})
    import shutil

    shutil.rmtree(state, ignore_errors=True)
