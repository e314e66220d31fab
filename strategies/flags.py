"""Feature-flag caching strategies (seed scenario 2): how fast does a flag change reach every node?

Each strategy instance is one application node serving flag reads from its **in-process cache**
(the L1 dict below): that cache is what goes stale, and what the checkers judge per node. The
strategies differ only in how a node learns that a flag changed:

    flags-ttl-long     L1 with a long TTL (default 3600 s, the seed's "1 hour"): fast, stale for the TTL
    flags-ttl-short    L1 with a short TTL (default 1 s, the seed's "30 s" scaled to 10 s runs)
    flags-pubsub       L1 without TTL + Redis pub/sub invalidation: fast; a lost message = stale forever
    flags-pubsub-ttl   pub/sub + TTL safety net (default 1.5 s): a lost message is stale at most the TTL
    flags-polling      L1 + each node polls a version counter in Redis every ``poll`` s (default 0.5)
    flags-l1-l2        L1 with a short TTL (default 1 s) over an L2 Redis cache that writes update
                       (write-through, version-guarded); the L1 TTL bounds propagation

The event link: a node's subscriber connection goes through its *own* Toxiproxy proxy
(``redis.busG``, created with ``Env.link``), so a fault can delay or cut the events of some nodes
only. Node ``i`` uses link ``G = i % links`` (strategy parameter ``links``, default 8).

Scale model (stated, because "1000 nodes" in one Python process is a model, not 1000 processes):
nodes that share a link share **one** subscriber connection, whose messages are fanned out
in-process to each member node's own L1 cache. A fault on link G hits exactly the nodes of group G,
as if each had its own connection through that network path. DB reads go through one bounded
connection pool per process (``db_pool``, default 8 connections) and Redis commands through one
shared client, like a connection pooler in front of a fleet: the per-node state — L1 contents,
subscription membership, poll schedule — is private to each node. Crashing a node drops its L1
and its subscription; a restarted node starts cold and re-subscribes.

Every write commits to PostgreSQL (the ``kv`` table, DB-assigned version), puts the new value in
the writing node's own L1 (read-your-writes on that node) and then announces the change (publish,
version counter or L2). Invalidations carry the version, and each L1 keeps a per-key floor, so a
slow DB read can never put back a value older than an invalidation the node already received.
"""

from __future__ import annotations

import heapq
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
import redis

from core.clients import close_quietly, redis_client, subscribe_confirmed, watchdog
from strategies.base import Env, KvTable, ParamError, decode, encode, positive

log = logging.getLogger("cachecert.flags")
CHANNEL = "cc:flags"
GEN_KEY = "cc:flags:gen"
VER_KEY = "cc:flags:ver"
L2_PREFIX = "cc:l2:"


class BusUnreachable(RuntimeError):
    """A node cannot reach its event bus at start: it must not serve without its subscription."""


# -- shared, bounded resources (one per process and endpoint) -----------------------------------
class DbPool:
    """A small bounded pool of PostgreSQL connections, each call time-bounded by the watchdog.

    ``core.clients.Pg`` keeps one connection per thread; with hundreds of in-process nodes (one
    worker thread each) that would be hundreds of connections. This pool has ``size`` at most;
    waiting for a connection longer than the timeout raises TimeoutError (an ``info`` op).
    """

    def __init__(self, endpoint: str, size: int = 8, timeout: float = 2.0) -> None:
        host, _, port = endpoint.rpartition(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self._free: queue.LifoQueue[psycopg.Connection[Any] | None] = queue.LifoQueue()
        for _ in range(size):
            self._free.put(None)  # a slot; connected lazily

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            conn = self._free.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError("no DB connection free in the pool") from None
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(host=self.host, port=self.port, user="postgres", dbname="postgres",
                                       autocommit=True, connect_timeout=max(1, math.ceil(self.timeout)))
            with watchdog().guard(conn.fileno(), self.timeout):
                cur = conn.execute(sql, params)
                rows = cur.fetchall() if cur.description else []
        except BaseException:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
            self._free.put(None)
            raise
        self._free.put(conn)
        return rows


@dataclass
class Shared:
    redis: Any
    db: KvTable


_shared: dict[tuple[str, str, int], Shared] = {}
_shared_lock = threading.Lock()


def shared(env: Env, db_pool: int) -> Shared:
    key = (env.endpoints["redis"], env.endpoints["postgres"], db_pool)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Shared(redis_client(env.endpoints["redis"], timeout=env.timeout),
                                  KvTable(DbPool(env.endpoints["postgres"], db_pool, env.timeout)))  # type: ignore[arg-type]
        return _shared[key]


# -- the event bus: one subscriber connection per link, fanned out to the link's nodes ----------
class BusHub:
    """One Redis pub/sub subscription over one link proxy, delivering to every member node.

    A naive subscriber, like most: when the connection breaks it reconnects and re-subscribes, but
    messages published meanwhile are gone (Redis pub/sub keeps nothing for absent subscribers).
    """

    def __init__(self, endpoint: str, link: str, timeout: float) -> None:
        self.endpoint, self.link, self.timeout = endpoint, link, timeout
        self.members: dict[int, Callable[[str, int], None]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.received = 0
        self.reconnects = 0
        self.client: Any = None
        self.pubsub: Any = None
        self.thread: threading.Thread | None = None

    def _subscribe(self) -> None:
        self.client = redis_client(self.endpoint, timeout=self.timeout)
        self.client.ping()
        self.pubsub = subscribe_confirmed(self.client, CHANNEL, self.timeout * 2)

    def start(self) -> None:
        try:
            self._subscribe()
        except (redis.RedisError, OSError) as e:
            raise BusUnreachable(f"cannot subscribe to {CHANNEL} over link {self.link} ({self.endpoint}): "
                                 f"{type(e).__name__}: {e}") from None
        self.thread = threading.Thread(target=self._loop, name=f"bus-{self.link}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                if self.pubsub is None:
                    self._subscribe()
                    self.reconnects += 1
                m = self.pubsub.get_message(timeout=0.2)
            except (redis.RedisError, OSError, ValueError, AttributeError):
                self._drop()
                self.stop.wait(0.2)
                continue
            if not m or m["type"] != "message":
                continue
            self.received += 1
            key, _, ver = (m["data"].decode() if isinstance(m["data"], bytes) else m["data"]).partition(" ")
            with self.lock:
                members = list(self.members.values())
            for deliver in members:
                deliver(key, int(ver))

    def _drop(self) -> None:
        ps, self.pubsub = self.pubsub, None
        close_quietly(ps, self.client)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=1.0)
        self._drop()


_hubs: dict[str, BusHub] = {}
_hubs_lock = threading.Lock()


def join_bus(env: Env, link: str, node: int, deliver: Callable[[str, int], None]) -> BusHub:
    endpoint = env.link("redis", link)
    with _hubs_lock:
        hub = _hubs.get(endpoint)
        if hub is None or hub.stop.is_set():
            hub = BusHub(endpoint, f"redis.{link}", env.timeout)
            hub.start()  # raises BusUnreachable: the node does not come up
            _hubs[endpoint] = hub
        with hub.lock:
            hub.members[node] = deliver
    return hub


def leave_bus(hub: BusHub, node: int, deliver: Callable[[str, int], None]) -> None:
    with _hubs_lock:
        with hub.lock:
            if hub.members.get(node) == deliver:  # bound methods: equal, never identical
                del hub.members[node]
            empty = not hub.members
        if empty:
            hub.close()
            if _hubs.get(hub.endpoint) is hub:
                del _hubs[hub.endpoint]


# -- per-node periodic tasks (polling), one scheduler thread per process ------------------------
class Scheduler:
    """Runs each node's poll at its own period on one thread (one real request per node per poll)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Any]] = []
        self.cv = threading.Condition()
        self.seq = 0
        threading.Thread(target=self._loop, name="flag-poller", daemon=True).start()

    def add(self, task: Any, first: float) -> None:
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (first, self.seq, task))
            self.cv.notify()

    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.heap:
                    self.cv.wait()
                at, _, task = self.heap[0]
                now = time.monotonic()
                if at > now:
                    self.cv.wait(at - now)
                    continue
                heapq.heappop(self.heap)
            if task.closed:
                continue
            try:
                task.poll()
            except Exception as e:  # noqa: BLE001 - a failed poll is retried next period
                task.poll_errors += 1
                log.debug("poll failed on node %s: %s", getattr(task, "node", "?"), e)
            self.add(task, max(at + task.period, time.monotonic()))


_scheduler: Scheduler | None = None


def scheduler() -> Scheduler:
    global _scheduler
    with _shared_lock:
        if _scheduler is None:
            _scheduler = Scheduler()
        return _scheduler


# -- the strategies -------------------------------------------------------------------------
class FlagsTtl:
    """L1 in-process cache with a TTL; no invalidation at all (the seed's starting point)."""

    name: ClassVar[str] = "flags-ttl-long"
    default_ttl: ClassVar[float] = 3600.0
    uses_bus: ClassVar[bool] = False

    def __init__(self, ttl: float | None = None, links: int = 8, db_pool: int = 8) -> None:
        t = self.default_ttl if ttl is None else ttl
        self.ttl = math.inf if t in ("inf", "none", None) else positive({"ttl": t}, "ttl", 0)
        self.links = _count(links, "links")
        self.db_pool = _count(db_pool, "db_pool")
        self.l1: dict[str, tuple[Any, int, float]] = {}
        self.floor: dict[str, int] = {}
        self.lock = threading.Lock()
        self.bg_queries = 0  # background queries (version polls) this node made, reported on every read
        self.closed = False

    def setup(self, env: Env) -> None:
        self.node = env.node
        self.sh = shared(env, self.db_pool)
        self.hub: BusHub | None = None
        for g in range(self.links):  # every link exists, so a fault plan can name any of them
            env.link("redis", f"bus{g}")
        if self.uses_bus:
            self.hub = join_bus(env, f"bus{env.node % self.links}", env.node, self.invalidate)

    # L1 -------------------------------------------------------------------------------------
    def invalidate(self, key: str, version: int) -> None:
        with self.lock:
            if self.floor.get(key, 0) < version:
                self.floor[key] = version
            e = self.l1.get(key)
            if e is not None and e[1] < version:
                del self.l1[key]

    def fill(self, key: str, value: Any, version: int, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else ttl
        with self.lock:
            if version < self.floor.get(key, 0):
                return  # an invalidation for a newer version already arrived: don't put this back
            e = self.l1.get(key)
            if e is None or e[1] <= version:
                self.l1[key] = (value, version, time.monotonic() + ttl)

    def cached(self, key: str) -> tuple[Any, int] | None:
        e = self.l1.get(key)
        if e is None or e[2] <= time.monotonic():
            return None
        return e[0], e[1]

    # interface --------------------------------------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        c = self.cached(key)
        if c is not None:
            return {"value": c[0], "version": c[1], "source": "cache", "hit": True, "bg_queries": self.bg_queries}
        value, version = self.load(key)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                "bg_queries": self.bg_queries}

    def load(self, key: str) -> tuple[Any, int]:
        value, version = self.sh.db.read(key)
        self.fill(key, value, version)
        return value, version

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.sh.db.write(key, value)
        self.fill(key, value, version)
        self.announce(key, value, version)
        return {"version": version}

    def announce(self, key: str, value: Any, version: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        if self.hub is not None:
            leave_bus(self.hub, self.node, self.invalidate)
            self.hub = None


class FlagsTtlShort(FlagsTtl):
    """The seed's "30 s TTL": fast enough propagation, paid for in DB reads (hit rate)."""

    name: ClassVar[str] = "flags-ttl-short"
    default_ttl: ClassVar[float] = 1.0


class FlagsPubSub(FlagsTtl):
    """Event-driven invalidation over Redis pub/sub, no TTL: a lost message is never repaired."""

    name: ClassVar[str] = "flags-pubsub"
    default_ttl: ClassVar[float] = math.inf  # type: ignore[assignment]
    uses_bus: ClassVar[bool] = True

    def announce(self, key: str, value: Any, version: int) -> None:
        self.sh.redis.publish(CHANNEL, f"{key} {version}")


class FlagsPubSubTtl(FlagsPubSub):
    """Pub/sub + a TTL safety net: fast when events arrive, bounded by the TTL when they don't."""

    name: ClassVar[str] = "flags-pubsub-ttl"
    default_ttl: ClassVar[float] = 1.5


# Lua: record a flag's version in the version hash (never backwards) and bump the global counter.
BUMP = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cur < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return redis.call('INCR', KEYS[2])
"""


class FlagsPolling(FlagsTtl):
    """Versioned cache with polling: each node reads a global change counter every ``poll`` s and,
    when it moved, fetches the per-flag versions and drops the flags that changed."""

    name: ClassVar[str] = "flags-polling"
    default_ttl: ClassVar[float] = math.inf  # type: ignore[assignment]

    def __init__(self, poll: float = 0.5, ttl: float | None = None, links: int = 8, db_pool: int = 8) -> None:
        super().__init__(ttl, links, db_pool)
        self.period = positive({"poll": poll}, "poll", 0.5)
        self.seen_gen: int | None = None
        self.poll_errors = 0

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._bump = self.sh.redis.register_script(BUMP)
        self.poll()  # fails loudly when the version source is unreachable at start
        scheduler().add(self, time.monotonic() + self.period)

    def poll(self) -> None:
        gen = int(self.sh.redis.get(GEN_KEY) or 0)
        self.bg_queries += 1
        if gen != self.seen_gen:
            versions = self.sh.redis.hgetall(VER_KEY)
            self.bg_queries += 1
            for k, v in versions.items():
                self.invalidate(k.decode(), int(v))
            self.seen_gen = gen

    def announce(self, key: str, value: Any, version: int) -> None:
        self._bump(keys=[VER_KEY, GEN_KEY], args=[key, version])


# Lua: write-through into L2 only if it holds nothing newer.
L2_SET = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if c.version >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


class FlagsL1L2(FlagsTtl):
    """L1 in-process (short TTL) over L2 Redis (long TTL). Writes update L2 (version-guarded
    write-through); nodes see the change when their L1 entry expires and they re-read L2."""

    name: ClassVar[str] = "flags-l1-l2"

    def __init__(self, l1_ttl: float = 1.0, l2_ttl: float = 3600.0, links: int = 8, db_pool: int = 8) -> None:
        super().__init__(positive({"l1_ttl": l1_ttl}, "l1_ttl", 1.0), links, db_pool)
        self.l2_ms = int(positive({"l2_ttl": l2_ttl}, "l2_ttl", 3600.0) * 1000)

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._l2_set = self.sh.redis.register_script(L2_SET)

    def read(self, key: str) -> dict[str, Any]:
        c = self.cached(key)
        if c is not None:
            return {"value": c[0], "version": c[1], "source": "cache", "hit": True, "tier": "l1"}
        e = decode(self.sh.redis.get(L2_PREFIX + key))
        if e is not None:
            self.fill(key, e["value"], e["version"])
            return {"value": e["value"], "version": e["version"], "source": "cache", "hit": True, "tier": "l2"}
        value, version = self.sh.db.read(key)
        self._l2_set(keys=[L2_PREFIX + key], args=[encode(value, version), version, self.l2_ms])
        self.fill(key, value, version)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}

    def announce(self, key: str, value: Any, version: int) -> None:
        self._l2_set(keys=[L2_PREFIX + key], args=[encode(value, version), version, self.l2_ms])


def _count(v: Any, name: str) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be a whole number, got {v!r}") from None
    if n < 1 or n != float(v):
        raise ParamError(f"{name} must be a whole number >= 1, got {v!r}")
    return n
