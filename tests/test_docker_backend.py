"""The docker backend on a real daemon: same services in containers, same verdicts (issue 8).

The CI bootstrap starts Debian's dockerd (vfs) when it can; the backend then builds its stand-in
image locally (no registry needed). Without a daemon, these tests skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.history import load_history
from harness.cluster import Cluster
from harness.runner import Run, RunConfig, prepare
from harness.services import ServiceError

REPO = Path(__file__).resolve().parents[1]


def _daemon() -> str | None:
    try:
        from harness.services.docker import client

        client()
        return None
    except ServiceError as e:
        return str(e)


SKIP = _daemon()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=f"no Docker daemon: {SKIP}")


def _labelled() -> list:
    import docker

    return docker.from_env().containers.list(all=True, filters={"label": "cachecert.cluster"})


@pytest.fixture(scope="module")
def docker_cluster():
    with Cluster(services=("redis", "postgres"), name=f"pytest-docker-{os.getpid()}", backend="docker") as c:
        yield c
    assert not [x for x in _labelled() if x.labels.get("cachecert.cluster") == c.id]


def test_services_run_in_labelled_containers(docker_cluster: Cluster) -> None:
    import psycopg
    import redis

    import docker

    mine = [x for x in _labelled() if x.labels.get("cachecert.cluster") == docker_cluster.id]
    assert {x.labels["cachecert.service"] for x in mine} == {"redis", "postgres", "toxiproxy"}
    assert all(x.status == "running" for x in mine)
    r = redis.Redis(host="127.0.0.1", port=docker_cluster.proxies["redis"])
    assert r.ping() and r.set("a", "1") and r.get("a") == b"1"
    with psycopg.connect(host="127.0.0.1", port=docker_cluster.proxies["postgres"], user="postgres") as conn:
        assert conn.execute("select 41 + 1").fetchone() == (42,)
    assert docker.from_env().containers.get(mine[0].id).attrs["HostConfig"]["NetworkMode"] == "host"


def test_workload_same_verdict_as_local(docker_cluster: Cluster, session_cluster: Cluster, tmp_path: Path) -> None:
    verdicts = []
    for c in (docker_cluster, session_cluster):
        cfg = RunConfig(workload="register", strategy="no-cache", time_limit=1.5, concurrency=4, seed=11,
                        quiesce=0.2, reports=str(tmp_path))
        res = Run(prepare(cfg), cluster=c, progress=False).execute()
        assert res["counts"]["ok"] > 50
        verdicts.append(res["valid"])
    assert verdicts[0] == verdicts[1]


@pytest.mark.parametrize("fault", ["kill:redis@0.3+0.6", "pause:redis@0.3+0.6", "restart:postgres@0.3+0"])
def test_container_faults_take_effect(docker_cluster: Cluster, tmp_path: Path, fault: str) -> None:
    cfg = RunConfig(workload="register", strategy="cache-aside", time_limit=1.5, concurrency=2, seed=3,
                    quiesce=0.2, faults=fault, reports=str(tmp_path), checkers=[])
    res = Run(prepare(cfg), cluster=docker_cluster, progress=False).execute()
    assert res["faults"] and res["faults"][0]["verified"] is True, res["faults"]
    history = load_history(Path(res["run_dir"]) / "history.jsonl")
    assert [o["f"] for o in history if o["process"] == "nemesis" and o["f"] in ("start", "stop")] == ["start", "stop"]
    assert all(docker_cluster.service(s).running() for s in ("redis", "postgres"))


def test_unreachable_docker_is_one_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock", CACHECERT_REPORTS=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "register", "-s", "no-cache", "-t", "1",
                        "--backend", "docker", "--no-progress"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 255
    line = [x for x in p.stderr.splitlines() if "Docker is not reachable" in x]
    assert line and "--backend local" in line[0]


def test_missing_image_is_one_clear_error() -> None:
    c = Cluster(services=("redis",), name=f"pytest-docker-img-{os.getpid()}", backend="docker",
                images={"redis": "cachecert/no-such-image:1"})
    with pytest.raises(ServiceError, match="no-such-image"):
        c.up()
    c.remove()
    assert not [x for x in _labelled() if x.labels.get("cachecert.cluster") == c.id]
