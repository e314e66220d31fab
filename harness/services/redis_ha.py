"""Topology family redis: ``redis=replica`` (primary + async replica) and ``redis=sentinel`` (primary,
two replicas and three Sentinels), and how the harness finds which node is the primary.

Why: a Redis failover that drops writes the old primary had acknowledged, and a primary cut off
from its Sentinels while clients still write to it (split brain), are the incidents a cache-first
strategy must be certified against; both need real replication and a real Sentinel quorum.

Which proxy carries what (every name is a Toxiproxy proxy; see harness/topology.py):

    redis=replica
      redis, redis-replica       client proxies (strategies read the replica through its own)
      redis.replica              the replica's replication link to the primary (REPLICAOF through it)

    redis=sentinel
      redis, redis-2, redis-3    client proxies: what strategies use (core.clients.sentinel_master
                                 translates Sentinel's answers to these)
      redis.cluster, redis-2.cluster, redis-3.cluster
                                 each node's *cluster side*: every connection a Sentinel or a
                                 replica opens to that node. Each node announces this address
                                 (replica-announce-port), Sentinel monitors it and hands it out,
                                 replicas replicate through it. A partition here isolates the node
                                 from the Sentinels and the replicas while clients that still reach
                                 it through its client proxy keep writing to it (the Jepsen split
                                 brain); ``partition:redis-primary`` is that partition on whichever
                                 node is primary when the fault starts.
      sentinel-1..3              each Sentinel's proxy: clients, and the other Sentinels (each
                                 announces its proxy port), reach it there.

Sentinel: quorum 2, down-after 2 s, failover-timeout 4 s (a failover completes in ~3-5 s); every
Sentinel is born knowing the replicas and the other Sentinels (``known-replica``/``known-sentinel``
with fixed ids), so the cluster is whole from its first second instead of after Sentinel's 10 s INFO
period. Replicas sync diskless with no delay. Health: the primary answers; a replica reports
``master_link_status:up``; a Sentinel names the primary and counts 2 replicas and 2 other Sentinels.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from harness import paths
from harness.services.base import ServiceError, wait_until
from harness.services.local import RedisService
from harness.topology import Topology, TopologyError

MASTER = "mymaster"  # the Sentinel service name
QUORUM = 2
DOWN_AFTER_MS = 2000  # 1000 on a loaded 2-core box: a new primary was once held down 1 s after its promotion
FAILOVER_TIMEOUT_MS = 4000
CLUSTER_SIDE = "cluster"  # suffix of each node's cluster-side proxy: redis-2.cluster


def _client(endpoint: str, timeout: float = 0.5) -> redis.Redis:
    host, _, port = endpoint.rpartition(":")
    return redis.Redis(host=host, port=int(port), socket_timeout=timeout, socket_connect_timeout=timeout,
                       decode_responses=True)


class RedisNode(RedisService):
    """One Redis server of a replicated topology: its own name, the address it announces to
    Sentinel and replicas, and the primary it replicates from at start (None: it is the primary)."""

    def __init__(self, cluster_dir: Path, name: str, port: int, announce_port: int | None = None,
                 replicaof: int | None = None, persistence: bool = False) -> None:
        self.name = name
        super().__init__(cluster_dir, port, persistence=persistence)
        self.announce_port = announce_port
        self.replicaof = replicaof

    def command(self) -> list[str]:
        cmd = super().command() + ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                                   "--repl-ping-replica-period", "1", "--repl-timeout", "5"]
        if self.announce_port is not None:
            cmd += ["--replica-announce-ip", "127.0.0.1", "--replica-announce-port", str(self.announce_port)]
        if self.replicaof is not None:
            cmd += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        return cmd

    def healthy(self) -> bool:
        c = _client(self.endpoint)
        try:
            if self.replicaof is None:
                return bool(c.ping())
            return c.info("replication").get("master_link_status") == "up"
        finally:
            c.close()


class SentinelNode(RedisService):
    """``redis-server --sentinel`` with a generated sentinel.conf (Sentinel rewrites it as it runs)."""

    start_timeout = 15.0

    def __init__(self, cluster_dir: Path, name: str, port: int, myid: str) -> None:
        self.name = name
        super().__init__(cluster_dir, port)
        self.myid = myid
        self.conf_lines: list[str] = []  # filled by expand() once every port is known
        self.primary_port = 0  # the cluster side of the primary it monitors at start
        self.conf = self.dir / "sentinel.conf"

    def prepare(self) -> None:
        self.conf.write_text("\n".join(self.conf_lines) + "\n")

    def command(self) -> list[str]:
        return [paths.redis_server(), str(self.conf), "--sentinel"]

    def healthy(self) -> bool:
        c = _client(self.endpoint)
        try:
            m = c.sentinel_master(MASTER)
            return m.get("port") == self.primary_port and not m.get("is_sdown") \
                and int(m.get("num-slaves", 0)) >= 2 and int(m.get("num-other-sentinels", 0)) >= 2
        finally:
            c.close()


def expand(cluster: Any, topology: Topology) -> None:
    """Add the replicas (and Sentinels) of ``topology.redis`` to a cluster that already has ``redis``."""
    base = cluster.svc["redis"]
    persistence = getattr(base, "persistence", False)
    if cluster.backend != "local":
        raise TopologyError(f"redis={topology.redis} runs on the local backend only (not {cluster.backend})")
    if topology.redis == "replica":
        cluster.svc["redis"] = RedisNode(cluster.dir, "redis", base.port, persistence=persistence)  # no sync delay
        link = cluster.add_link("redis.replica", "redis")
        replica = RedisNode(cluster.dir, "redis-replica", cluster.port(), replicaof=link, persistence=persistence)
        replica.announce_port = cluster.add(replica, after="redis")
        return
    if topology.redis != "sentinel":
        raise TopologyError(f"unknown redis topology {topology.redis!r}")
    nodes = ["redis", "redis-2", "redis-3"]
    side = {n: cluster.add_link(f"{n}.{CLUSTER_SIDE}", n) for n in nodes}
    # the primary keeps its port and client proxy; it now announces its cluster side
    cluster.svc["redis"] = RedisNode(cluster.dir, "redis", base.port, announce_port=side["redis"],
                                     persistence=persistence)
    for n in nodes[1:]:
        cluster.add(RedisNode(cluster.dir, n, cluster.port(), announce_port=side[n], replicaof=side["redis"],
                              persistence=persistence), after="redis")  # not before: its first SYNC retry is 1 s later
    sentinels: list[tuple[SentinelNode, int]] = []
    for i in range(1, 4):
        s = SentinelNode(cluster.dir, f"sentinel-{i}", cluster.port(), secrets.token_hex(20))
        sentinels.append((s, cluster.add(s, after="redis") or s.port))
    for s, announce in sentinels:
        s.primary_port = side["redis"]
        s.conf_lines = [
            f"port {s.port}", "bind 127.0.0.1", "protected-mode no", "daemonize no", f"dir {s.dir}",
            f"sentinel myid {s.myid}", "sentinel announce-ip 127.0.0.1", f"sentinel announce-port {announce}",
            f"sentinel monitor {MASTER} 127.0.0.1 {side['redis']} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER} 2",
            *(f"sentinel known-replica {MASTER} 127.0.0.1 {side[n]}" for n in nodes[1:]),
            *(f"sentinel known-sentinel {MASTER} 127.0.0.1 {a} {o.myid}" for o, a in sentinels if o is not s),
        ]


# -- who is primary (harness side: direct addresses, never through a proxy) -------------------
def redis_nodes(cluster: Any) -> list[str]:
    """The Redis data nodes of the cluster (no Sentinels), primary-at-start first."""
    return [n for n in cluster.svc if n == "redis" or (n.startswith("redis-"))]


def sentinel_names(cluster: Any) -> list[str]:
    return [n for n in cluster.svc if n.startswith("sentinel-")]


def node_of_port(cluster: Any, port: int) -> str | None:
    """The node whose cluster-side (or client) proxy listens on ``port``."""
    for name, p in cluster.proxies.items():
        if p == port:
            return name.partition(".")[0]
    return None


def role(cluster: Any, name: str, timeout: float = 0.5) -> str | None:
    """``master`` / ``slave`` as the node itself answers ROLE (directly), None if it does not answer."""
    c = _client(cluster.direct[name], timeout)
    try:
        return str(c.execute_command("ROLE")[0])
    except (redis.RedisError, OSError, IndexError):
        return None
    finally:
        c.close()


def replica_link_up(cluster: Any, name: str, timeout: float = 0.5) -> tuple[bool, str | None]:
    """(its link to a primary is up, that primary's name), as the node reports it."""
    c = _client(cluster.direct[name], timeout)
    try:
        info = c.info("replication")
    except (redis.RedisError, OSError):
        return False, None
    finally:
        c.close()
    port = info.get("master_port")
    up = info.get("role") == "slave" and info.get("master_link_status") == "up"
    return up, node_of_port(cluster, int(port)) if port else None


def sentinel_votes(cluster: Any, timeout: float = 0.5) -> dict[str, str | None]:
    """Sentinel name -> the node it names as primary (None: no answer)."""
    out: dict[str, str | None] = {}
    for s in sentinel_names(cluster):
        c = _client(cluster.direct[s], timeout)
        try:
            addr = c.sentinel_get_master_addr_by_name(MASTER)
            out[s] = node_of_port(cluster, int(addr[1])) if addr else None
        except (redis.RedisError, OSError, IndexError, ValueError):
            out[s] = None
        finally:
            c.close()
    return out


def agreed_primary(votes: dict[str, str | None]) -> str | None:
    """The node a quorum of Sentinels names, else None."""
    counts = Counter(v for v in votes.values() if v)
    if not counts:
        return None
    node, n = counts.most_common(1)[0]
    return node if n >= QUORUM else None


def current_primary(cluster: Any) -> str:
    """The primary now: the Sentinels' quorum answer (``redis=sentinel``), else ``redis``."""
    topo = getattr(cluster, "topology", Topology())
    if topo.redis != "sentinel":
        return "redis"
    primary = agreed_primary(sentinel_votes(cluster))
    if primary is None:
        raise ServiceError("no quorum of Sentinels names a primary (is a failover in progress?)")
    return primary


def masters(cluster: Any) -> list[str]:
    """Every node that answers ROLE as master (two of them: split brain)."""
    return [n for n in redis_nodes(cluster) if role(cluster, n) == "master"]


def wait_for(pred: Any, timeout: float, interval: float = 0.1) -> bool:
    return wait_until(pred, timeout, interval)



class PrimaryWatch:
    """Polls who is primary (the Sentinels' quorum answer, and which nodes answer ROLE as master)
    every ``interval`` s, directly, and calls ``note(value)`` with the first view and each change:
    ``{"primary": NODE|None, "masters": [NODE...], "votes": {sentinel: NODE|None}}``, the first one
    also with ``nodes`` (node -> its own address, what a server reports as its ``laddr``). Two masters
    is a split brain; ``primary`` None is a failover in progress (no quorum)."""

    def __init__(self, cluster: Any, note: Any, interval: float = 0.25) -> None:
        self.cluster, self.note, self.interval = cluster, note, interval
        self.changes: list[dict[str, Any]] = []
        self._last: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._clients: dict[str, redis.Redis] = {}
        self._thread = threading.Thread(target=self._loop, name="primary-watch", daemon=True)

    @classmethod
    def start_for(cls, cluster: Any, note: Any) -> PrimaryWatch | _FollowerWatch | None:
        """A running watch when the cluster has Sentinels, else None. An external Redis reached
        through Sentinel has its follower (services/external.py) report the primary instead."""
        follower = getattr(getattr(cluster, "svc", {}).get("redis"), "follower", None)
        if follower is not None:
            return _FollowerWatch(follower.listen(note))
        if getattr(getattr(cluster, "topology", None), "redis", "single") != "sentinel":
            return None
        w = cls(cluster, note)
        w._thread.start()
        return w

    def _ask(self, name: str, *cmd: Any) -> Any:
        """The answer, or None when the server does not answer twice in a row (a loaded box answers
        late: one missed answer must not be recorded as a change of primary)."""
        for _ in range(2):
            c = self._clients.get(name)
            if c is None:
                c = self._clients[name] = _client(self.cluster.direct[name], 1.0)
            try:
                return c.execute_command(*cmd)
            except (redis.RedisError, OSError):
                self._clients.pop(name).close()
        return None

    def poll(self) -> None:
        votes: dict[str, str | None] = {}
        for s in sentinel_names(self.cluster):
            addr = self._ask(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            try:
                votes[s] = node_of_port(self.cluster, int(addr[1])) if addr else None
            except (TypeError, ValueError, IndexError):
                votes[s] = None
        ms = []
        for n in redis_nodes(self.cluster):
            r = self._ask(n, "ROLE")
            if r and str(r[0]) == "master":
                ms.append(n)
        view = {"primary": agreed_primary(votes), "masters": ms, "votes": votes}
        key = (view["primary"], tuple(ms))
        if key != self._last:
            if self._last is None:  # the first record also says which server address is which node
                view["nodes"] = {n: self.cluster.direct[n] for n in redis_nodes(self.cluster)}
            self._last = key
            self.changes.append(view)
            self.note(view)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a watch must never take the run down
                pass
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """One last look (after the heal), then stop."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.poll()
        except Exception:  # noqa: BLE001
            pass
        for c in self._clients.values():
            c.close()


class _FollowerWatch:
    """PrimaryWatch's stop() for an external Sentinel follower: stop listening (the follower itself
    runs until the cluster's teardown)."""

    def __init__(self, follower: Any) -> None:
        self.follower = follower

    def stop(self) -> None:
        self.follower.unlisten()


__all__ = ["CLUSTER_SIDE", "MASTER", "PrimaryWatch", "RedisNode", "SentinelNode", "agreed_primary", "current_primary", "expand",
           "masters", "redis_nodes", "replica_link_up", "role", "sentinel_names", "sentinel_votes"]
