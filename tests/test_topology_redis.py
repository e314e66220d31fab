"""redis=replica and redis=sentinel on the real servers: roles and announced addresses, a client that
follows the primary through Sentinel, ``failover:redis`` (kill and partition) verified by its probe
with the old primary rejoining as a replica, ``partition:redis-primary`` resolving the alias to the
primary's cluster-side proxy (split brain: the cut-off primary keeps taking writes), the primary
watch, refusals, and nothing left running after ``down``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from core.clients import redis_client, sentinel_master
from harness.cluster import Cluster
from harness.faults import FaultError, make_fault
from harness.faults.base import FaultContext, FaultWindow
from harness.runner import ConfigError, RunConfig, prepare
from harness.services import redis_ha
from harness.services.base import marked_groups
from harness.topology import Topology
from strategies.base import Env

pytestmark = pytest.mark.cluster
TOPO = Topology(redis="sentinel")
NAMES = TOPO.names(("redis",))


@pytest.fixture(scope="module")
def sentinel_cluster() -> Iterator[Cluster]:
    with Cluster(services=("redis",), topology=TOPO) as c:
        yield c


def _settled(c: Cluster) -> str:
    """Heal, restart what is down, and wait for one primary with two live replicas; its name."""
    c.toxiproxy.reset()
    for svc in c.svc.values():
        svc.resume()
        if not svc.running():
            svc.start()

    def whole() -> bool:
        votes = redis_ha.sentinel_votes(c)
        p = redis_ha.agreed_primary(votes)
        return p is not None and all(v == p for v in votes.values()) and redis_ha.masters(c) == [p] and all(
            redis_ha.replica_link_up(c, n) == (True, p) for n in redis_ha.redis_nodes(c) if n != p)

    assert redis_ha.wait_for(whole, 30, 0.2), (redis_ha.sentinel_votes(c), redis_ha.masters(c))
    return redis_ha.current_primary(c)


@pytest.fixture
def cluster(sentinel_cluster: Cluster) -> Iterator[Cluster]:
    _settled(sentinel_cluster)
    yield sentinel_cluster
    sentinel_cluster.toxiproxy.reset()


def _ctx(c: Cluster) -> tuple[FaultContext, FaultWindow]:
    w = FaultWindow()
    return FaultContext(c, window=w), w


def test_sentinel_topology_roles_and_announced_addresses(cluster: Cluster) -> None:
    primary = redis_ha.current_primary(cluster)
    assert set(cluster.endpoints) == {"redis", "redis-2", "redis-3", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert {"redis.cluster", "redis-2.cluster", "redis-3.cluster"} <= cluster.links
    for n in ("redis", "redis-2", "redis-3"):
        c = redis_client(cluster.direct[n])
        try:
            # every node announces its cluster-side proxy, never its own port
            assert int(c.config_get("replica-announce-port")["replica-announce-port"]) == cluster.proxies[f"{n}.cluster"]
        finally:
            c.close()
    s = redis_client(cluster.direct["sentinel-1"])
    try:
        m = s.sentinel_master("mymaster")
        assert m["port"] == cluster.proxies[f"{primary}.cluster"] and m["num-slaves"] == 2
        assert m["num-other-sentinels"] == 2 and m["quorum"] == 2
        # the other Sentinels are known at their proxy ports, the replicas at their cluster sides
        assert {x["port"] for x in s.sentinel_sentinels("mymaster")} == \
            {cluster.proxies["sentinel-2"], cluster.proxies["sentinel-3"]}
        assert {x["port"] for x in s.sentinel_slaves("mymaster")} == \
            {cluster.proxies[f"{n}.cluster"] for n in redis_ha.redis_nodes(cluster) if n != primary}
    finally:
        s.close()
    # a Sentinel-following client lands on the primary's *client* proxy
    r = sentinel_master(cluster.endpoints, timeout=1.0)
    try:
        r.set("k", "v")
        assert r.connection_pool.get_master_address() == ("127.0.0.1", cluster.proxies[primary])
    finally:
        r.close()


def test_failover_kill_promotes_a_replica_and_the_old_primary_rejoins(cluster: Cluster) -> None:
    old = redis_ha.current_primary(cluster)
    strategy_client = Env(cluster.endpoints, timeout=1.0).redis()  # what every strategy's env.redis() gives
    strategy_client.set("k", "before")
    f = make_fault("failover", "redis", {"how": "kill"}, NAMES)
    ctx, window = _ctx(cluster)
    f.start(ctx)
    ok, observed = _probe_while_on(f, ctx, window, 12)
    assert ok, observed
    new = f.describe()["promoted"]
    assert new != old and f.describe()["primary"] == old and "answers ROLE master" in observed
    assert redis_ha.role(cluster, old) is None  # dead
    # the strategies' client lost its connection with the old primary and reconnects to the new one
    try:
        strategy_client.set("k", "after")
    except redis.ConnectionError:  # the stale connection may fail once (no retries of its own)
        strategy_client.set("k", "after")
    assert strategy_client.connection_pool.get_master_address() == ("127.0.0.1", cluster.proxies[new])
    assert redis_client(cluster.direct[new]).get("k") == b"after"
    strategy_client.close()
    window.end()
    f.stop(ctx)
    d = f.describe()
    assert d["rejoined"] is True, d
    # a replica of the primary now (a second, competing failover may have followed the first)
    assert redis_ha.replica_link_up(cluster, old) == (True, redis_ha.current_primary(cluster))


def _probe_while_on(f: Any, ctx: FaultContext, window: FaultWindow, limit: float) -> tuple[bool, str]:
    """The nemesis's way: the probe runs while the fault is on; the window ends after ``limit`` s."""
    import threading

    out: list[tuple[bool, str]] = []
    t = threading.Thread(target=lambda: out.append(f.probe(ctx)))
    t.start()
    t.join(limit)
    window.end()
    t.join(5)
    return out[0]


def test_failover_partition_is_a_split_brain_and_heals(cluster: Cluster) -> None:
    old = redis_ha.current_primary(cluster)
    client = sentinel_master(cluster.endpoints, timeout=1.0)
    client.set("sb", "before")
    f = make_fault("failover", "redis", {"how": "partition"}, NAMES)
    ctx, window = _ctx(cluster)
    f.start(ctx)
    ok, observed = _probe_while_on(f, ctx, window, 12)
    assert ok, observed
    assert "split brain" in observed
    new = f.describe()["promoted"]
    assert {old, new} <= set(redis_ha.masters(cluster))  # two masters (at least)
    client.set("sb", "split")  # the open connection still reaches the old primary: acknowledged...
    fresh = sentinel_master(cluster.endpoints, timeout=1.0)
    assert fresh.get("sb") == b"before"  # ...but the new primary never got it
    f.stop(ctx)
    assert f.describe()["rejoined"] is True, f.describe()
    now = redis_ha.current_primary(cluster)
    assert redis_ha.wait_for(lambda: fresh.get("sb") == b"before" and redis_ha.masters(cluster) == [now], 5)
    old_direct = redis_client(cluster.direct[old])
    assert redis_ha.wait_for(lambda: old_direct.get("sb") == b"before", 5)  # the old primary dropped "split"
    for c in (client, fresh, old_direct):
        c.close()


def test_partition_redis_primary_resolves_the_alias_to_the_cluster_side(cluster: Cluster) -> None:
    primary = redis_ha.current_primary(cluster)
    f = make_fault("partition", "redis-primary", {}, NAMES)
    ctx, window = _ctx(cluster)
    f.start(ctx)
    try:
        d = f.describe()
        assert d["primary"] == primary and d["resolved"] == f"{primary}.cluster"
        assert {t["name"] for t in cluster.toxiproxy.toxics(f"{primary}.cluster")} == \
            {"cc_partition_downstream", "cc_partition_upstream"}
        assert cluster.toxiproxy.toxics(primary) == []  # the client proxy is untouched
        c = redis_client(cluster.endpoints[primary], timeout=1.0)
        assert c.set("still", "writable")  # clients that reach it keep writing
        c.close()
        ok, observed = _probe_while_on(f, ctx, window, 2.5)
        assert ok, observed
    finally:
        window.end()
        f.stop(ctx)
    assert cluster.toxiproxy.toxics(f"{primary}.cluster") == []


def test_kill_of_the_primary_alias_and_a_replica_probe_the_right_ports(cluster: Cluster) -> None:
    primary = redis_ha.current_primary(cluster)
    replica = next(n for n in redis_ha.redis_nodes(cluster) if n != primary)
    f = make_fault("kill", replica, {}, NAMES)
    ctx, window = _ctx(cluster)
    f.start(ctx)
    ok, observed = f.probe(ctx)
    assert ok, observed  # refused at the replica's own port, while the primary (and its port) still answers
    assert redis_ha.role(cluster, primary) == "master"
    f.stop(ctx)
    assert redis_ha.wait_for(lambda: redis_ha.replica_link_up(cluster, replica)[0], 10)
    p = make_fault("pause", "redis-primary", {}, NAMES)
    p.start(ctx)
    try:
        assert p.describe()["resolved"] == primary
    finally:
        p.stop(ctx)


def test_primary_watch_records_each_change(cluster: Cluster) -> None:
    seen: list[dict[str, Any]] = []
    w = redis_ha.PrimaryWatch.start_for(cluster, seen.append)
    assert w is not None
    old = redis_ha.current_primary(cluster)
    f = make_fault("failover", "redis", {"how": "kill"}, NAMES)
    ctx, window = _ctx(cluster)
    f.start(ctx)
    ok, observed = _probe_while_on(f, ctx, window, 12)
    f.stop(ctx)
    w.stop()
    assert ok, observed
    assert seen[0]["primary"] == old and old in seen[0]["masters"], seen
    promoted = f.describe()["promoted"]
    assert any(v["primary"] == promoted and promoted in v["masters"] for v in seen), seen  # the promotion recorded
    assert seen[-1]["primary"] not in (None, old), seen


def test_refusals_are_one_line() -> None:
    with pytest.raises(FaultError, match="needs Sentinel: run with --topology redis=sentinel"):
        make_fault("failover", "redis", {}, Topology().names(("redis",)))
    with pytest.raises(FaultError, match="target must be redis"):
        make_fault("failover", "redis-2", {}, NAMES)
    with pytest.raises(FaultError, match="how must be kill or partition"):
        make_fault("failover", "redis", {"how": "nuke"}, NAMES)
    with pytest.raises(ConfigError, match="unknown target 'redis-primary'"):
        prepare(RunConfig(workload="register", faults="partition:redis-primary@1+1", time_limit=3))


def test_replica_topology_and_nothing_left_running() -> None:
    c = Cluster(services=("redis",), topology=Topology(redis="replica"))
    c.up()
    try:
        assert set(c.endpoints) == {"redis", "redis-replica"} and "redis.replica" in c.links
        up, of = redis_ha.replica_link_up(c, "redis-replica")
        assert up
        w = redis_client(c.endpoints["redis"])
        w.set("x", "1")
        r = redis_client(c.endpoints["redis-replica"])
        assert redis_ha.wait_for(lambda: r.get("x") == b"1", 5)
        with pytest.raises(redis.ReadOnlyError):
            r.set("x", "2")
        # the replication link is a proxy like any other: a partition there stops replication only
        f = make_fault("partition", "redis.replica", {}, Topology(redis="replica").names(("redis",)))
        ctx, window = _ctx(c)
        f.start(ctx)
        try:
            w.set("x", "3")  # the primary still takes writes...
            time.sleep(0.5)
            assert r.get("x") == b"1"  # ...the replica does not see them
        finally:
            window.end()
            f.stop(ctx)
        c.toxiproxy.set_enabled("redis.replica", False)  # drop the black-holed link: the replica reconnects
        c.toxiproxy.set_enabled("redis.replica", True)
        assert redis_ha.wait_for(lambda: r.get("x") == b"3", 15)
        w.close()
        r.close()
        pids = [svc.proc.pid for svc in c.svc.values() if svc.proc is not None]  # type: ignore[attr-defined]
    finally:
        c.down()
    from harness.services.base import alive

    assert len(pids) == 2 and not any(alive(p) for p in pids) and marked_groups(c.dir) == []
    c.remove()


def test_sentinel_cluster_down_leaves_nothing(sentinel_cluster: Cluster) -> None:
    # last in this module: the module's cluster goes down here (its fixture's down is then a no-op)
    from harness.services.base import alive

    pids = [svc.proc.pid for svc in sentinel_cluster.svc.values() if svc.proc is not None]  # type: ignore[attr-defined]
    assert len(pids) == 6  # 3 redis + 3 sentinels
    sentinel_cluster.down()
    assert not any(alive(p) for p in pids) and not list((sentinel_cluster.dir / "pids").glob("*.json"))


def test_a_sentinel_that_cannot_start_is_named_and_nothing_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.services.base import ServiceError, alive, read_pidfile

    real = redis_ha.SentinelNode.prepare

    def broken(self: redis_ha.SentinelNode) -> None:
        real(self)
        if self.name == "sentinel-2":
            self.conf.write_text(self.conf.read_text() + "sentinel no-such-directive 1\n")

    monkeypatch.setattr(redis_ha.SentinelNode, "prepare", broken)
    c = Cluster(services=("redis",), topology=TOPO)
    started: list[int] = []
    real_start = redis_ha.RedisNode.start

    def spy(self: Any, wait: bool = True) -> None:
        real_start(self, wait)
        if self.proc is not None:
            started.append(self.proc.pid)

    monkeypatch.setattr(redis_ha.RedisNode, "start", spy)
    with pytest.raises(ServiceError) as e:
        c.up()
    assert str(e.value).startswith("sentinel-2: exited with code")
    assert started and not any(alive(p) for p in started)  # redis was up before the Sentinels started
    assert [read_pidfile(p) for p in (c.dir / "pids").glob("*.json")] == []
    c.remove()
