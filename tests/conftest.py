"""Shared fixtures: one real embedded cluster per test session (Redis, PostgreSQL, Kafka, Toxiproxy).

Tests that need a guarantee talk to these real services through their Toxiproxy proxies. The
``cluster`` fixture resets toxics and proxies before each test that uses it, so faults never leak
from one test to the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.cluster import Cluster


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(name=f"pytest-{tmp_path_factory.getbasetemp().name}")
    c.up()
    try:
        yield c
    finally:
        c.down()
        c.remove()


@pytest.fixture
def cluster(session_cluster: Cluster) -> Iterator[Cluster]:
    session_cluster.toxiproxy.reset()
    for svc in session_cluster.svc.values():
        if not svc.running():  # a test killed it
            svc.start()
    yield session_cluster
    session_cluster.toxiproxy.reset()
    for svc in session_cluster.svc.values():
        svc.resume()


# Tests that start or use real services (the session cluster, a private state dir of clusters,
# an inner pytest session with its own cluster, the docker backend) are marked ``cluster``, so
# `pytest -m cluster` (`make flake ARGS="-m cluster"`) repeats just the timing-sensitive part.
CLUSTER_FIXTURES = frozenset({"session_cluster", "state", "pytester", "docker_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
