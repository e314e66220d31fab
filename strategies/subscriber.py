"""Invalidation subscribers that crash (seed scenario 6): what does a node serve after it restarts?

The incident: "a cache node crashes and restarts. It missed invalidation messages published while
down. Now it has stale data." For that to be real, the node's cached data must **outlive the
crash** of the process that keeps it fresh. A node whose cache lived only in its own memory would
come back empty, re-read everything from the DB, and be perfectly fresh: no incident. So each node
here owns a **node-local cache that survives the node's process**: a per-node namespace ``nI:`` in
Redis, standing for the Redis/memcached sidecar (or on-disk cache) that runs next to an app process
and is not wiped when the app is redeployed. What crashes (``crash-node``) is the node's process:
its subscriber thread and connections. The restarted node finds its old cache entries and serves
them, unless its subscriber learns, somehow, about what it missed.

    sub-pubsub          Redis pub/sub (non-durable): messages published while down are gone
    sub-pubsub-ttl      pub/sub + TTL on entries (default 2 s): stale at most the TTL after restart
    sub-kafka-group     Kafka, one stable consumer group per node, offsets committed *after* the
                        invalidation is applied: the restarted node replays what it missed
    sub-kafka-latest    Kafka with a fresh group id at every start and auto.offset.reset=latest:
                        the common misconfiguration that silently skips everything missed
    sub-version-check   pub/sub + a version check on read against the DB (the "central version
                        table"): a cached entry is served only if its version is still current
                        (checked at most every ``check_interval`` s, default 0 = every read)

Every write commits to PostgreSQL (``kv``, DB-assigned version), invalidates the writer's own node
cache, and announces ``key version`` on the bus (the node's own Redis link ``redis.subI`` for
pub/sub, the shared ``kafka`` proxy for Kafka: Kafka's advertised listener is that proxy, so a
per-node Kafka proxy would be bypassed after bootstrap). Invalidations and cache fills are
version-guarded Lua scripts (an invalidation leaves a tombstone with its version; a fill older than
the entry or tombstone is refused), so the classic fill/invalidate race cannot cause staleness:
what remains is exactly what the bus lost.

Backlog follow-up: ``filler=N`` makes every write also publish N invalidations of other entities
(keys outside the working set, as on a busy shared topic), so a node that was down comes back to a
backlog of thousands of messages; ``gate=true`` (Kafka group) makes the node serve reads from the
DB, not its cache, until its consumer has caught up with the end offsets it saw at restart.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, ClassVar

import redis

from core.clients import redis_client
from core.namespace import run_token
from strategies.base import Env, KvTable, ParamError, decode, encode, positive

log = logging.getLogger("cachecert.subscriber")
CHANNEL = "cc:inv"
TOKEN_KEY = "cc:bus-token"

# Lua: fill the node cache unless it already holds this version or newer (entry or tombstone).
FILL = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if c.tomb and tonumber(c.tomb) > tonumber(ARGV[2]) then return 0 end
  if c.version and tonumber(c.version) >= tonumber(ARGV[2]) then return 0 end
end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
# Lua: apply "key changed to version V": replace anything older with a tombstone carrying V.
INVALIDATE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if c.version and tonumber(c.version) >= tonumber(ARGV[1]) then return 0 end
  if c.tomb and tonumber(c.tomb) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], cjson.encode({tomb = tonumber(ARGV[1])}), 'PX', ARGV[2])
return 1
"""
TOMB_MS = 600_000


class BusUnreachable(RuntimeError):
    """A node cannot reach its invalidation bus at start: it must not serve without it."""


class SubPubSub:
    """Node cache in a per-node Redis namespace, invalidated by Redis pub/sub."""

    name: ClassVar[str] = "sub-pubsub"
    default_ttl: ClassVar[float] = 0.0  # 0 = no TTL

    def __init__(self, ttl: float | None = None, filler: int = 0) -> None:
        t = self.default_ttl if ttl is None else ttl
        self.ttl_ms = int(positive({"ttl": t}, "ttl", 0, allow_zero=True) * 1000)
        self.filler = _whole(filler, "filler")
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.applied = 0
        self.replaying = False  # a durable bus is replaying a backlog (reported on reads)
        self.gate = False

    # cache ------------------------------------------------------------------------------------
    def setup(self, env: Env) -> None:
        self.node, self.env = env.node, env
        self.prefix = f"n{env.node}:"
        self.redis = env.redis()
        self.db = KvTable(env.pg())
        self._fill = self.redis.register_script(FILL)
        self._inv = self.redis.register_script(INVALIDATE)
        self.start_bus(env)

    def fill(self, key: str, value: Any, version: int) -> None:
        self._fill(keys=[self.prefix + key], args=[encode(value, version), version, self.ttl_ms])

    def invalidate(self, key: str, version: int, client: Any = None) -> None:
        self._inv(keys=[self.prefix + key], args=[version, max(self.ttl_ms, TOMB_MS)], client=client)

    def cached(self, key: str) -> dict[str, Any] | None:
        e = decode(self.redis.get(self.prefix + key))
        return None if e is None or "tomb" in e else e

    def read(self, key: str) -> dict[str, Any]:
        replaying = self.replaying
        if replaying and self.gate:  # the cache may hold what the backlog will invalidate: bypass it
            value, version = self.db.read(key)
            self.fill(key, value, version)
            return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                    "replaying": True}
        e = self.cached(key)
        if e is not None:
            out = {"value": e["value"], "version": e["version"], "source": "cache", "hit": True}
        else:
            value, version = self.db.read(key)
            self.fill(key, value, version)
            out = {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}
        if replaying:
            out["replaying"] = True
        return out

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.db.write(key, value)
        self.invalidate(key, version)
        self.publish(key, version)
        return {"version": version}

    # bus: Redis pub/sub ------------------------------------------------------------------------
    def start_bus(self, env: Env) -> None:
        self.link = env.link("redis", f"sub{env.node}")
        try:
            self.sub_client = redis_client(self.link, timeout=env.timeout)
            self.sub_client.ping()
            self.pubsub = self._subscribe()
        except (redis.RedisError, OSError, TimeoutError) as e:
            raise BusUnreachable(f"node {env.node}: cannot subscribe to {CHANNEL} over redis.sub{env.node} "
                                 f"({self.link}): {type(e).__name__}: {e}") from None
        self.thread = threading.Thread(target=self._listen, name=f"sub-{env.node}", daemon=True)
        self.thread.start()

    def _subscribe(self) -> Any:
        ps = self.sub_client.pubsub(ignore_subscribe_messages=False)
        ps.subscribe(CHANNEL)
        deadline = time.monotonic() + self.env.timeout * 2
        while time.monotonic() < deadline:
            m = ps.get_message(timeout=0.05)
            if m and m["type"] == "subscribe":
                return ps
        ps.close()
        raise TimeoutError("no subscribe confirmation")

    def _listen(self) -> None:
        while not self.stop.is_set():
            try:
                if self.pubsub is None:  # naive reconnect: what was published meanwhile is lost
                    self.pubsub = self._subscribe()
                m = self.pubsub.get_message(timeout=0.2)
                if m and m["type"] == "message":
                    key, _, ver = m["data"].decode().partition(" ")
                    self.invalidate(key, int(ver))
                    self.applied += 1
            except (redis.RedisError, OSError, ValueError, AttributeError, TimeoutError):
                self.pubsub = None
                self.stop.wait(0.2)

    def publish(self, key: str, version: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.publish(CHANNEL, f"{key} {version}")
        for i in range(self.filler):
            pipe.publish(CHANNEL, f"other:{uuid.uuid4().hex[:8]}{i} 1")
        pipe.execute()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=1.0)
        for c in (getattr(self, "pubsub", None), getattr(self, "sub_client", None), getattr(self, "redis", None)):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001
                pass


class SubPubSubTtl(SubPubSub):
    """Pub/sub plus a TTL on every cache entry: what a down node missed expires within the TTL."""

    name: ClassVar[str] = "sub-pubsub-ttl"
    default_ttl: ClassVar[float] = 2.0


class SubVersionCheck(SubPubSub):
    """Pub/sub plus a version check on read: serve a cached entry only if the DB's version for the
    key is still the cached one (a cheap ``select version``), checked at most every
    ``check_interval`` seconds per key and node (0 = on every read)."""

    name: ClassVar[str] = "sub-version-check"

    def __init__(self, check_interval: float = 0.0, ttl: float | None = None, filler: int = 0) -> None:
        super().__init__(ttl, filler)
        self.interval = positive({"check_interval": check_interval}, "check_interval", 0.0, allow_zero=True)
        self.checked: dict[str, tuple[int, float]] = {}  # in-process: lost on a crash, so a restart rechecks

    def read(self, key: str) -> dict[str, Any]:
        e = self.cached(key)
        if e is not None:
            last = self.checked.get(key)
            now = time.monotonic()
            if last is not None and last[0] == e["version"] and now - last[1] < self.interval:
                return {"value": e["value"], "version": e["version"], "source": "cache", "hit": True}
            rows = self.env.pg().execute("select version from kv where key = %s", (key,))
            current = rows[0][0] if rows else 0
            if current == e["version"]:
                self.checked[key] = (current, now)
                return {"value": e["value"], "version": e["version"], "source": "cache", "hit": True,
                        "version_check": True}
        value, version = self.db.read(key)
        self.fill(key, value, version)
        self.checked[key] = (version, time.monotonic())
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                "version_check": e is not None}


OFFSET_RESETS = ("earliest", "latest")
ACKS = ("all", "1")


class SubKafkaGroup(SubPubSub):
    """Kafka invalidation topic; each node is its own consumer group (every node needs every
    message), with a stable group id, auto-commit off and a synchronous commit after each applied
    batch: a restarted node resumes from its last committed offset and replays what it missed."""

    name: ClassVar[str] = "sub-kafka-group"
    fresh_group: ClassVar[bool] = False
    default_reset: ClassVar[str] = "earliest"

    default_acks: ClassVar[str] = "all"
    # commit after apply, waiting for the commit (True) or not (False: a node whose group coordinator
    # is slow or failing over keeps applying; a commit lost meanwhile only means a longer replay)
    sync_commit: ClassVar[bool] = True
    # join the node's group (True), or assign the partition directly and use the group only for its
    # committed offsets (False: consuming never waits on a group coordinator; a node that lost its
    # coordinator with a broker, then its session, rejoined as a new member and waited 10-20 s for the
    # old member's session to expire on the new coordinator)
    group_membership: ClassVar[bool] = True
    default_delivery_timeout: ClassVar[float | None] = None  # None: 3 x the op timeout, at least 2 s

    def __init__(self, ttl: float | None = None, filler: int = 0, offset_reset: str | None = None,
                 gate: bool | str = False, join_timeout: float = 15.0, acks: str | int | None = None,
                 delivery_timeout: float | None = None) -> None:
        super().__init__(ttl, filler)
        # the producer's acks (``all``: every in-sync replica has the event; ``1``: the leader alone)
        # and how long it keeps retrying an event before giving up (message.timeout.ms)
        self.acks = self.default_acks if acks is None else str(acks)
        if self.acks not in ACKS:
            raise ParamError(f"acks must be one of {', '.join(ACKS)}, got {acks!r}")
        dt = self.default_delivery_timeout if delivery_timeout is None else delivery_timeout
        self.delivery_timeout = None if dt is None else positive({"delivery_timeout": dt}, "delivery_timeout", 0)
        self.offset_reset = self.default_reset if offset_reset is None else str(offset_reset)
        if self.offset_reset not in OFFSET_RESETS:
            raise ParamError(f"offset_reset must be one of {', '.join(OFFSET_RESETS)}, got {offset_reset!r}")
        if str(gate).lower() not in ("true", "false", "1", "0"):
            raise ParamError(f"gate must be true or false, got {gate!r}")
        self.gate = str(gate).lower() in ("true", "1")
        self.join_timeout = positive({"join_timeout": join_timeout}, "join_timeout", 15.0)
        self.assigned = threading.Event()
        self.target: int | None = None  # end offset seen at assignment: replay is done past it
        self.position = -1
        self.replay_from = -1

    def start_bus(self, env: Env) -> None:
        from confluent_kafka import Consumer, KafkaException, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        conf = env.kafka_conf()
        token = self.redis.get(TOKEN_KEY)
        if token is None:  # the workload sets one per run; alone, the first node picks it
            self.redis.set(TOKEN_KEY, run_token(self.redis), nx=True)
            token = self.redis.get(TOKEN_KEY)
        token = token.decode()
        self.topic = f"cc-inv-{token}"
        where = f"node {env.node}: cannot reach Kafka at {env.endpoints['kafka']}"
        try:
            admin = AdminClient(conf)
            admin.list_topics(timeout=max(2.0, env.timeout * 2))
            # the cluster's default replication (every broker with kafka=N); the workload may have
            # created it already with its leader on a chosen broker (workloads/broker_loss.py)
            fut = admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=-1)])[self.topic]
            try:
                fut.result(timeout=max(5.0, env.timeout * 5))
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                    raise
        except KafkaException as e:
            raise BusUnreachable(f"{where}: {e}") from None
        group = f"cc-{token}-n{env.node}" + (f"-{uuid.uuid4().hex[:8]}" if self.fresh_group else "")
        self.group = group
        delivery = self.delivery_timeout if self.delivery_timeout is not None else max(2.0, env.timeout * 3)
        self.producer = Producer(conf | {"linger.ms": 0, "acks": self.acks,
                                         "message.timeout.ms": int(delivery * 1000)})
        self.consumer = Consumer(conf | {"group.id": group, "enable.auto.commit": False,
                                         "auto.offset.reset": self.offset_reset, "session.timeout.ms": 6000,
                                         "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 50,
                                         "enable.partition.eof": False})
        if self.group_membership:
            self.consumer.subscribe([self.topic], on_assign=self._on_assign)
        else:  # the committed offset (else the reset policy) is where consuming starts
            from confluent_kafka import TopicPartition

            deadline = time.monotonic() + self.join_timeout
            self._on_assign(self.consumer, [TopicPartition(self.topic, 0)])
            while self.target is None and time.monotonic() < deadline:  # e.g. a coordinator moving
                time.sleep(0.2)
                self._on_assign(self.consumer, [TopicPartition(self.topic, 0)])
            if self.target is None:
                self.consumer.close()
                raise BusUnreachable(f"node {env.node}: cannot read the offsets of {self.topic} "
                                     f"(Kafka at {env.endpoints['kafka']})")
            self.consumer.assign([TopicPartition(self.topic, 0, self.position)])
        self.thread = threading.Thread(target=self._consume, name=f"kafka-{env.node}", daemon=True)
        self.thread.start()
        if not self.assigned.wait(self.join_timeout):
            self.stop.set()
            self.thread.join(timeout=2)
            self.consumer.close()
            raise BusUnreachable(f"node {env.node}: no partition assigned in consumer group {group} "
                                 f"within {self.join_timeout:g} s (Kafka at {env.endpoints['kafka']})")

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        try:  # where replay starts (committed offset, else the reset policy) and where it ends
            marks = [consumer.get_watermark_offsets(p, timeout=5) for p in partitions]
            committed = consumer.committed(partitions, timeout=5)
            self.target = sum(hi for _, hi in marks)
            self.position = sum(c.offset if c.offset >= 0 else (lo if self.offset_reset == "earliest" else hi)
                                for c, (lo, hi) in zip(committed, marks, strict=True))
            self.replay_from = self.position
            self.replaying = self.position < self.target
            self.replay_t0 = time.monotonic()
            log.info("node %s: assigned in group %s; replay offsets %s..%s (%s messages)", self.node, self.group,
                     self.position, self.target, self.target - self.position)
        except Exception as e:  # noqa: BLE001 - without a target there is no replay tracking (no gate)
            log.warning("node %s: cannot read offsets at assignment: %s", self.node, e)
            self.target, self.replaying = None, False
        self.assigned.set()

    def _consume(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        while not self.stop.is_set():
            try:
                msgs = self.consumer.consume(num_messages=2000, timeout=0.1)
            except Exception:  # noqa: BLE001 - closed under us (crash) or broker trouble
                if self.stop.wait(0.2):
                    return
                continue
            good = [m for m in msgs if m.error() is None]
            if good:
                for m in good:
                    key, _, ver = m.value().decode().partition(" ")
                    self.invalidate(key, int(ver), client=pipe)
                try:
                    pipe.execute()
                    if self.stop.is_set():
                        return  # crashed mid-batch: applied, never committed (replayed next time)
                    self.consumer.commit(asynchronous=not self.sync_commit)  # commit only what was applied
                except Exception as e:  # noqa: BLE001 - not committed: replayed later, idempotently
                    log.debug("node %s: apply/commit failed: %s", self.node, e)
                    pipe = self.redis.pipeline(transaction=False)
                    continue
                self.applied += len(good)
                self.position = good[-1].offset() + 1
            if self.replaying and (self.target is None or self.position >= self.target):
                self.replaying = False
                log.info("node %s: replay done up to offset %s in %.2f s", self.node, self.position,
                         time.monotonic() - getattr(self, "replay_t0", time.monotonic()))

    def publish(self, key: str, version: int) -> None:
        """Returns once Kafka acknowledged this event (under the producer's ``acks``); a delivery
        error or no acknowledgement within 2 x the op timeout raises (the write is then indeterminate:
        the DB committed, the event may still be delivered by the producer's retries)."""
        done, errors = threading.Event(), []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)
            done.set()

        self.producer.produce(self.topic, f"{key} {version}".encode(), key=key.encode(), on_delivery=delivered)
        for i in range(self.filler):
            self.producer.produce(self.topic, f"other:{self.node}-{i}-{version} 1".encode())
            if i % 1000 == 999:
                self.producer.poll(0)
        deadline = time.monotonic() + self.env.timeout * 2
        left = self.producer.flush(self.env.timeout * 2)
        # another thread's flush may serve this event's callback: wait for it, not for the queue
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"invalidation {key} {version} not acknowledged by Kafka "
                               f"({left} message(s) still queued)")
        if errors:
            raise RuntimeError(f"invalidation {key} {version} not delivered: {errors[0]}")

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=2.0)
        for c in (getattr(self, "consumer", None),):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001
                pass
        # drop the producer (librdkafka destroys it with the last reference): one left alive refreshes
        # its metadata after the run's topic is deleted and, with auto-create on, creates it again
        self.producer = self.consumer = None
        self.thread = None
        super().close()


class SubKafkaLatest(SubKafkaGroup):
    """The silent-loss misconfiguration: a new consumer group at every start (e.g. a group id with a
    random suffix or the pod name) and ``auto.offset.reset=latest``: a restarted node starts at the
    end of the topic and skips every invalidation published while it was down."""

    name: ClassVar[str] = "sub-kafka-latest"
    fresh_group: ClassVar[bool] = True
    default_reset: ClassVar[str] = "latest"


def _whole(v: Any, name: str) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be a whole number, got {v!r}") from None
    if n < 0 or n != float(v):
        raise ParamError(f"{name} must be a whole number >= 0, got {v!r}")
    return n
