"""postgres=replica on the real servers: the hot standby streams through its link proxy, a write on the
primary appears on it, a killed replica catches up again, ``lag`` and ``partition`` on the
replication link are verified by their probes, bad input is refused in one line, and nothing is left
running after ``down`` or after a replica that cannot start."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.cluster import Cluster, ClusterError
from harness.faults import FaultError, make_fault
from harness.faults.base import FaultContext, FaultWindow
from harness.faults.replica import measure
from harness.runner import ConfigError, RunConfig, prepare
from harness.services.base import ServiceError, free_port, marked_groups
from harness.services.pg_replica import LINK, REPLICA, PostgresReplica
from harness.topology import Topology

pytestmark = pytest.mark.cluster
TOPO = Topology(postgres="replica")
NAMES = TOPO.names(("redis", "postgres"))


@pytest.fixture(scope="module")
def pgr() -> Iterator[Cluster]:
    with Cluster(services=("redis", "postgres"), topology=TOPO) as c:
        yield c


@pytest.fixture
def cluster(pgr: Cluster) -> Iterator[Cluster]:
    pgr.toxiproxy.reset()
    for svc in pgr.svc.values():
        if not svc.running():
            svc.start()
    yield pgr
    pgr.toxiproxy.reset()


def _conn(endpoint: str) -> psycopg.Connection[Any]:
    host, _, port = endpoint.rpartition(":")
    return psycopg.connect(host=host, port=int(port), user="postgres", autocommit=True, connect_timeout=3)


def _eventually(conn: psycopg.Connection[Any], sql: str, want: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        try:
            got = conn.execute(sql).fetchall()
            if got == want:
                return got
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(0.02)
    return got


def test_replica_streams_through_its_link_proxy(cluster: Cluster) -> None:
    assert set(cluster.endpoints) == {"redis", "postgres", REPLICA}  # the link is not a client endpoint
    assert LINK in cluster.proxies and cluster.upstream[LINK] == "postgres"
    with _conn(cluster.direct[REPLICA]) as r:
        rec, status, sender = r.execute(
            "select pg_is_in_recovery(), status, sender_port from pg_stat_wal_receiver").fetchone()
    assert (rec, status) == (True, "streaming")
    assert sender == cluster.proxies[LINK]  # the WAL comes through the link proxy, not straight from the primary
    with _conn(cluster.endpoints["postgres"]) as p, _conn(cluster.endpoints[REPLICA]) as r:
        p.execute("drop table if exists topo_t")
        p.execute("create table topo_t (x int)")
        p.execute("insert into topo_t values (42)")
        assert _eventually(r, "select x from topo_t", [(42,)]) == [(42,)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            r.execute("insert into topo_t values (1)")
        assert p.execute("select count(*) from pg_stat_replication where state = 'streaming'").fetchone() == (1,)


def test_killed_replica_catches_up_after_restart(cluster: Cluster) -> None:
    replica = cluster.service(REPLICA)
    replica.kill()
    with _conn(cluster.endpoints["postgres"]) as p:
        p.execute("drop table if exists topo_k")
        p.execute("create table topo_k (x int)")
        p.execute("insert into topo_k select generate_series(1, 1000)")  # WAL the slot keeps for it
    replica.start()
    assert replica.healthy()
    with _conn(cluster.endpoints[REPLICA]) as r:
        assert _eventually(r, "select count(*) from topo_k", [(1000,)]) == [(1000,)]


def _probe(fault: Any, c: Cluster, end_after: float | None = None) -> tuple[bool, str]:
    window = FaultWindow()
    if end_after is not None:
        threading.Timer(end_after, window.end).start()
    return fault.probe(FaultContext(cluster=c, window=window))


def test_lag_is_verified_by_replay_and_heals(cluster: Cluster) -> None:
    ctx = FaultContext(cluster=cluster)
    fault = make_fault("lag", REPLICA, {"ms": 300}, NAMES)
    fault.start(ctx)
    try:
        toxics = cluster.toxiproxy.toxics(LINK)
        assert [(t["type"], t["stream"]) for t in toxics] == [("latency", "downstream")]  # primary -> replica
        ok, seen = _probe(fault, cluster)
        assert ok, seen
        assert "replayed a marker" in seen
        took, outcome = measure(ctx, REPLICA, timeout=5)
        assert outcome == "replayed" and took >= 0.28  # a delay timer never fires early
    finally:
        fault.stop(ctx)
    assert cluster.toxiproxy.toxics(LINK) == []
    took, outcome = measure(ctx, REPLICA, timeout=10)
    assert outcome == "replayed"  # replication goes on after the heal


def test_the_wal_flows_downstream_on_the_link(cluster: Cluster) -> None:
    """Why ``lag`` delays the downstream: the replica's WAL receiver is the link proxy's client, so
    the WAL (primary -> replica) is downstream; a latency upstream (the replica's feedback) leaves
    replay alone."""
    ctx = FaultContext(cluster=cluster)
    up = make_fault("latency", LINK, {"ms": 1500, "stream": "upstream"}, NAMES)
    up.start(ctx)
    try:
        took, outcome = measure(ctx, REPLICA, timeout=5)
    finally:
        up.stop(ctx)
    assert outcome == "replayed" and took < 1.5, took


def test_a_lag_that_ends_before_the_replica_replays_is_verified(cluster: Cluster) -> None:
    ctx = FaultContext(cluster=cluster)
    fault = make_fault("lag", REPLICA, {"ms": 2000}, NAMES)
    fault.start(ctx)
    try:
        ok, seen = _probe(fault, cluster, end_after=0.6)  # the fault ends long before the WAL arrives
    finally:
        fault.stop(ctx)
    assert ok and "had not replayed a marker" in seen and "before the fault ended" in seen, seen


def test_a_lag_that_delays_nothing_is_not_verified(cluster: Cluster) -> None:
    ok, seen = _probe(make_fault("lag", REPLICA, {"ms": 0}, NAMES), cluster)
    assert not ok and "nothing to observe" in seen
    ok, seen = _probe(make_fault("lag", REPLICA, {"ms": 2000}, NAMES), cluster)  # never started
    assert not ok and "replayed a marker" in seen, seen


def test_partition_of_the_replication_link_is_verified(cluster: Cluster) -> None:
    ctx = FaultContext(cluster=cluster)
    fault = make_fault("partition", LINK, {}, NAMES)
    fault.start(ctx)
    try:
        ok, seen = _probe(fault, cluster, end_after=0.5)
        assert ok, seen
        took, outcome = measure(ctx, REPLICA, timeout=0.5)
        assert outcome == "timeout"  # nothing replays while the link is cut
    finally:
        fault.stop(ctx)
    took, outcome = measure(ctx, REPLICA, timeout=10)
    assert outcome == "replayed"


def test_lag_is_refused_without_a_replica() -> None:
    with pytest.raises(FaultError, match="needs a replica: run with --topology postgres=replica"):
        make_fault("lag", REPLICA, {}, ("redis", "postgres"))
    with pytest.raises(FaultError, match="target must be a read replica"):
        make_fault("lag", "postgres", {}, NAMES)
    for cfg in (RunConfig(workload="register", faults="lag:postgres-replica@1+1", time_limit=3, seed=1),
                RunConfig(workload="replica-fill", faults="lag", topology="postgres=single", time_limit=3, seed=1)):
        with pytest.raises(ConfigError) as e:
            prepare(cfg)
        assert "\n" not in str(e.value) and "postgres-replica" in str(e.value), e.value
    with pytest.raises(ConfigError, match="strategy fill-after-lsn needs the server postgres-replica, which topology "
                                          "single does not have"):
        prepare(RunConfig(workload="replica-fill", strategy="fill-after-lsn", faults="none", topology="postgres=single",
                          time_limit=3, seed=1))


def test_up_and_down_leave_nothing_running() -> None:
    c = Cluster(services=("postgres",), topology=TOPO)
    t = time.monotonic()
    c.up()
    up_s = time.monotonic() - t
    try:
        assert c.service(REPLICA).healthy()
        assert len(marked_groups(c.dir)) == 3  # toxiproxy, primary, replica
    finally:
        c.down()
    assert marked_groups(c.dir) == []
    assert not list((c.dir / "pids").glob("*.json"))
    c.remove()
    print(f"postgres=replica up in {up_s:.2f} s")


def test_a_replica_that_does_not_catch_up_is_reported_in_one_line(
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()  # nothing listens there: the standby's WAL receiver never connects
    base = PostgresReplica.command
    monkeypatch.setattr(PostgresReplica, "command", lambda self: [
        *base(self), "-c", f"primary_conninfo=host=127.0.0.1 port={closed} user=postgres"])
    monkeypatch.setattr(PostgresReplica, "start_timeout", 3.0)
    c = Cluster(services=("postgres",), topology=TOPO)
    with pytest.raises((ServiceError, ClusterError)) as e:
        c.up()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{REPLICA}: not healthy after 3 s"), msg
    assert "did not catch up with the primary" in msg and "WAL receiver" in msg and "log " in msg
    assert marked_groups(c.dir) == []  # the primary and toxiproxy were stopped too
    c.remove()


def test_a_failed_base_backup_is_one_line() -> None:
    d = Path(tempfile.mkdtemp(prefix="cc-pgr-", dir="/tmp"))
    d.chmod(0o755)
    try:
        r = PostgresReplica(d, free_port(), link_port=free_port())  # no primary behind that port
        with pytest.raises(ServiceError) as e:
            r.prepare()
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{REPLICA}: pg_basebackup from the primary through {LINK} failed")
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)
        assert not os.path.exists(d)


def test_other_backends_are_refused_in_one_line() -> None:
    c = Cluster(services=("postgres",), topology=TOPO, backend="docker")
    with pytest.raises(ClusterError, match="^postgres=replica is only built on the local backend, not 'docker'$"):
        c.up()
    assert marked_groups(c.dir) == []
    c.remove()


def test_a_base_backup_in_progress_honours_cancellation() -> None:
    d = Path(tempfile.mkdtemp(prefix="cc-pgr-", dir="/tmp"))
    d.chmod(0o755)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        try:
            r = PostgresReplica(d, free_port(), link_port=silent.getsockname()[1])
            r.cancel = threading.Event()
            running: list[int] = []

            def cancel() -> None:
                running.extend(marked_groups(d))  # pg_basebackup, waiting for an answer
                r.cancel.set()  # type: ignore[union-attr]

            threading.Timer(0.5, cancel).start()
            t = time.monotonic()
            with pytest.raises(ServiceError, match=f"^{REPLICA}: start cancelled$"):
                r.prepare()
            assert time.monotonic() - t < 3
            assert len(running) == 1 and marked_groups(d) == []  # pg_basebackup was running, and was killed
        finally:
            subprocess.run(["rm", "-rf", str(d)], check=False)
