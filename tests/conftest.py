"""Shared fixtures: one real embedded cluster per test session (Redis, PostgreSQL, Kafka, Toxiproxy).

Tests that need a guarantee talk to these real services through their Toxiproxy proxies. The
``cluster`` fixture resets toxics and proxies before each test that uses it, so faults never leak
from one test to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from harness.cluster import Cluster
from harness.topology import Topology


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(name=f"pytest-{tmp_path_factory.getbasetemp().name}")
    c.up()
    try:
        yield c
    finally:
        c.down()
        c.remove()


def _healed(c: Cluster) -> Cluster:
    c.toxiproxy.reset()
    for svc in c.svc.values():
        svc.resume()
        if not svc.running():  # a test killed it
            svc.start()
    return c


@pytest.fixture
def cluster(session_cluster: Cluster) -> Iterator[Cluster]:
    yield _healed(session_cluster)
    session_cluster.toxiproxy.reset()
    for svc in session_cluster.svc.values():
        svc.resume()


@pytest.fixture(scope="session")
def cluster_for(session_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Callable[[Topology], Cluster | None]]:
    """``cluster_for(topology)``: the session cluster, or one of that topology started the first time a
    test asks for it and kept for the session (a run on a cluster of another topology would start
    its own: a 3-broker Kafka costs ~6 s to start and stop), healed before each use; None (the run
    starts its own) for a Sentinel topology."""
    made: dict[str, Cluster] = {}

    def get(topology: Topology) -> Cluster | None:
        if topology == session_cluster.topology:
            return _healed(session_cluster)
        if topology.redis == "sentinel":
            # not shared: a node a run left dead restarts as a replica of its first primary, which may
            # be a replica itself by now (a shared Sentinel cluster needs the promotion history healed)
            return None
        c = made.get(topology.text())
        if c is None:
            c = Cluster(name=f"pytest-{tmp_path_factory.getbasetemp().name}-{len(made) + 1}", topology=topology)
            made[topology.text()] = c
            c.up()
        return _healed(c)

    try:
        yield get
    finally:
        for c in made.values():
            c.down()
            c.remove()


# Tests that start or use real services (the session cluster, a private state dir of clusters,
# an inner pytest session with its own cluster, the docker backend) are marked ``cluster``, so
# `pytest -m cluster` (`make flake ARGS="-m cluster"`) repeats just the timing-sensitive part.
CLUSTER_FIXTURES = frozenset({"session_cluster", "cluster_for", "state", "pytester", "docker_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
