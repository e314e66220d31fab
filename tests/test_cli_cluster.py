"""`cachecert up / status / down` and bad input: each mistake gives one clear line and a non-zero
exit, never a hang, never a leaked process. Every test runs the CLI in a private state dir
(CACHECERT_STATE_DIR), so `down` here can never reap anybody else's cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from _procs import TAG_VAR, make_state, new_tag, pid_records, tagged, wait_gone

from core.verdict import Exit
from harness import paths
from harness.cluster import Cluster, list_clusters
from harness.services import ServiceError
from harness.services.local import PostgresService, RedisService

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state() -> Iterator[Path]:
    d = make_state()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tag(state: Path) -> Iterator[str]:
    t = new_tag()
    yield t
    subprocess.run([sys.executable, "-m", "harness.cli", "down", "--force"], cwd=REPO,
                   env=dict(os.environ, CACHECERT_STATE_DIR=str(state)), capture_output=True, timeout=60)
    assert wait_gone([], t) == [], "a test leaked processes"


def cli(state: Path, tag: str, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, CACHECERT_STATE_DIR=str(state), **{TAG_VAR: tag}, **env),
                          timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    if lines[0].startswith("usage: "):  # argparse's own errors: the usage, then the one line
        lines = [ln for ln in lines if ln.startswith("cachecert: ")]
    first = lines[0]
    assert first.startswith("cachecert: ") and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in first, (n, first)
    return first


# -- the happy path -----------------------------------------------------------------------------
def test_up_status_down(state: Path, tag: str) -> None:
    up = cli(state, tag, "up", "--services", "redis", "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert info["id"] == "default" and info["detached"] is True
    assert set(info["endpoints"]) == {"redis"} and set(info["startup_s"]) >= {"redis", "toxiproxy", "total"}
    host, port = info["endpoints"]["redis"].split(":")
    assert redis.Redis(host=host, port=int(port), socket_timeout=5).ping()  # outlives `up`
    recs = pid_records(Path(info["dir"]))
    assert len(recs) == 2 and all(r.matches() for r in recs)

    st = cli(state, tag, "status")
    assert st.returncode == 0 and "default: running" in st.stdout and info["endpoints"]["redis"] in st.stdout
    (rec,) = json.loads(cli(state, tag, "status", "--json").stdout)
    assert rec["running"] is True and rec["orphaned"] is False

    # a second up while one runs: refused, and the first is untouched
    again = cli(state, tag, "up", "--services", "redis")
    one_line_error(again, Exit.USAGE, "already running", "default")
    same = cli(state, tag, "up", "--services", "redis", "--name", "default")
    one_line_error(same, Exit.USAGE, "already running")
    assert all(r.matches() for r in recs) and Path(info["dir"], "cluster.json").exists()
    assert redis.Redis(host=host, port=int(port), socket_timeout=5).ping()

    down = cli(state, tag, "down")
    assert down.returncode == 0 and "default: reaped 2 process group(s)" in down.stdout
    assert wait_gone(recs, tag) == []
    assert cli(state, tag, "status").stdout.strip() == "no clusters"
    assert cli(state, tag, "down").stdout.strip() == "nothing to reap"


def test_refused_up_in_python_leaves_the_running_cluster_alone(state: Path) -> None:
    first = Cluster(services=("redis",), state=state, name="twin")
    first.up()
    try:
        second = Cluster(services=("redis",), state=state, name="twin")
        with pytest.raises(Exception, match="already running"):
            second.up()
        second.down()
        second.remove()  # used to rmtree the first cluster's directory, pidfiles and all
        assert (first.dir / "cluster.json").exists() and len(pid_records(first.dir)) == 2
        assert first.service("redis").running()
    finally:
        first.down()
        first.remove()


# -- bad input ---------------------------------------------------------------------------------
def test_port_already_taken(state: Path, tag: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        for base in (port, port - 2):  # the first port, or one further into the range
            t = time.monotonic()
            res = cli(state, tag, "up", "--services", "redis", "--port-base", str(base), "--name", f"p{base}")
            one_line_error(res, Exit.HARNESS, "already in use", *([f"port {port} "] if base == port else []))
            assert time.monotonic() - t < 15
    assert tagged(tag) == []


def test_bad_options_are_usage_errors(state: Path, tag: str) -> None:
    one_line_error(cli(state, tag, "up", "--services", "redis,memcached"), Exit.USAGE, "unknown service 'memcached'")
    one_line_error(cli(state, tag, "up", "--services", ","), Exit.USAGE, "--services is empty")
    one_line_error(cli(state, tag, "up", "--port-base", "70000"), Exit.USAGE, "out of range")
    one_line_error(cli(state, tag, "up", "--port-base", "many"), Exit.USAGE, "invalid int value")
    assert tagged(tag) == []


def test_missing_binary(state: Path, tag: str) -> None:
    t = time.monotonic()
    res = cli(state, tag, "up", "--services", "redis,postgres", CACHECERT_REDIS_SERVER="/nonexistent/redis-server")
    one_line_error(res, Exit.HARNESS, "redis-server not found", "CACHECERT_REDIS_SERVER")
    assert time.monotonic() - t < 15
    assert tagged(tag) == []  # found before anything (even toxiproxy) was spawned


def test_missing_binary_in_python(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise paths.MissingBinary("redis-server not found; run `make bootstrap`")

    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)
    monkeypatch.setattr(paths, "redis_server", missing)
    c = Cluster(services=("redis",), state=state)
    with pytest.raises(paths.MissingBinary, match="redis-server not found"):
        c.up()
    assert tagged(tag) == [] and pid_records(c.dir) == []


def _pg_copy(state: Path, name: str) -> Path:
    """A real initdb'd data directory at the place cluster NAME's PostgreSQL will use."""
    svc_dir = state / "clusters" / name / "postgres"
    svc_dir.mkdir(parents=True)
    probe = PostgresService(state / "clusters" / name, 1)
    data = svc_dir / "data"
    shutil.copytree(probe._template(), data, symlinks=True)
    for p in (state / "clusters", state / "clusters" / name, svc_dir):
        p.chmod(0o755)
    data.chmod(0o700)
    probe._chown(svc_dir)
    return data


def test_corrupt_postgres_data_dir(state: Path, tag: str) -> None:
    data = _pg_copy(state, "corrupt")
    (data / "global" / "pg_control").write_bytes(os.urandom(8192))  # garbage control file
    t = time.monotonic()
    res = cli(state, tag, "up", "--services", "postgres", "--name", "corrupt")
    first = one_line_error(res, Exit.HARNESS, "postgres:", "during start")
    assert time.monotonic() - t < 30
    assert "FATAL" in res.stderr and "initdb" in res.stderr, res.stderr  # the log tail says why
    assert "log " in first
    assert tagged(tag) == []


def test_stale_postmaster_pid(state: Path, tag: str) -> None:
    data = _pg_copy(state, "stale")
    (data / "postmaster.pid").write_text("999999\n")
    res = cli(state, tag, "up", "--services", "postgres", "--name", "stale")
    one_line_error(res, Exit.HARNESS, "postgres: stale data directory", "postmaster.pid")
    assert tagged(tag) == []


def test_leftover_of_a_killed_run_is_wiped_on_next_up(state: Path, tag: str) -> None:
    """A dead cluster record with a stale postmaster.pid (what a SIGKILLed run leaves) does not
    block the next up of that name: it is reaped and started fresh."""
    data = _pg_copy(state, "again")
    (data / "postmaster.pid").write_text("999999\n")
    cdir = state / "clusters" / "again"
    (cdir / "cluster.json").write_text(json.dumps({"id": "again", "dir": str(cdir), "owner_pid": 999999,
                                                   "owner_start": 1, "detached": False}))
    res = cli(state, tag, "up", "--services", "postgres", "--name", "again")
    assert res.returncode == 0, res.stderr
    assert cli(state, tag, "down").returncode == 0


class NeverHealthyRedis(RedisService):
    start_timeout = 1.0

    def healthy(self) -> bool:
        return False


def test_never_healthy_names_the_service_and_shows_its_log(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.cluster

    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)
    monkeypatch.setattr(harness.cluster, "RedisService", NeverHealthyRedis)
    c = Cluster(services=("redis",), state=state)
    t = time.monotonic()
    with pytest.raises(ServiceError) as err:
        c.up()
    assert time.monotonic() - t < 10
    first, *tail = str(err.value).splitlines()
    assert first.startswith("redis: not healthy after 1 s; log ") and first.endswith("redis.log:")
    assert any("Ready to accept connections" in line for line in tail)  # the log tail
    assert wait_gone([], tag, timeout=5) == [] and pid_records(c.dir) == []
    c.remove()


NEVER_HEALTHY_CLI = """
import sys
import harness.cluster
from harness.services.local import RedisService
class R(RedisService):
    start_timeout = 1.0
    def healthy(self):
        return False
harness.cluster.RedisService = R
from harness.cli import main
sys.exit(main(["up", "--services", "redis,postgres"]))
"""


def test_never_healthy_from_the_cli(state: Path, tag: str) -> None:
    res = subprocess.run([sys.executable, "-c", NEVER_HEALTHY_CLI], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, CACHECERT_STATE_DIR=str(state), **{TAG_VAR: tag}))
    one_line_error(res, Exit.HARNESS, "redis: not healthy after 1 s")
    assert "Ready to accept connections" in res.stderr
    assert wait_gone([], tag, timeout=5) == []
    # the failed cluster is recorded as stopped, and `down` clears it
    (rec,) = list_clusters(state)
    assert rec["running"] is False
    assert "default: reaped 0" in cli(state, tag, "down").stdout
