"""Strategies that meet a Redis failover: which acknowledged writes survive Sentinel promoting a replica.

Why this module exists: a strategy that acknowledges a write once Redis has it treats Redis as the
source of truth until something copies the write on. Redis replication is asynchronous, so a
failover can promote a replica that never got the write; and a primary cut off from the Sentinels
keeps taking writes from the clients that still reach it until it is demoted, when it throws them
away. Every strategy here reaches Redis through Sentinel (``core.clients.sentinel_master``,
following ``+switch-master`` like Jedis and Lettuce do: connections to a demoted primary are closed
as soon as the Sentinels name another one), and PostgreSQL is the truth at the end:

``cache-first``             write-behind: SET + append to this node's queue in one script, acknowledge;
                            a flusher copies the queue to PostgreSQL every ``interval`` s (default 1),
                            only from a primary a Sentinel quorum vouches for. What the old primary
                            acknowledged since its last flush dies with it.
``cache-first-wait``        the same, then ``WAIT 1 wait_ms``: acknowledged only once a replica has it;
                            a WAIT that times out makes the write indeterminate (it is on the primary,
                            maybe nowhere else). Narrows the window; the runs say how much is left.
``write-through-pg-first``  commit in PostgreSQL first (its version), then SET the cache; a lost cache
                            write only leaves the cache behind (TTL), never loses an acknowledged write.
"""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

import redis
from redis.sentinel import MasterNotFoundError

from core.clients import sentinel_master
from strategies.base import DefiniteFailure, Env, KvTable, ParamError, decode, encode, positive
from strategies.write_through import _WB_STAMP, _WB_WRITE, WriteBehind, integer, redis_definite

FOLLOW_S = 0.2  # how often a client asks the Sentinels who the primary is


def _client(env: Env) -> redis.Redis:
    if not any(n.startswith("sentinel-") for n in env.endpoints):
        raise ParamError("this strategy finds Redis through Sentinel: run with --topology redis=sentinel")
    return sentinel_master(env.endpoints, timeout=env.timeout, follow_s=FOLLOW_S)


def _definite(e: redis.RedisError) -> bool:
    """The command was never sent: no primary to send it to, or the connect itself failed."""
    return isinstance(e, MasterNotFoundError) or redis_definite(e)


class CacheFirst(WriteBehind):
    """Write-behind through Sentinel: acknowledged once the primary has the value and the queue entry."""

    name: ClassVar[str] = "cache-first"
    default_prefix: ClassVar[str] = "cf:"

    def __init__(self, ttl: float = 0.0, interval: float = 1.0, batch: int = 1000, prefix: str | None = None) -> None:
        super().__init__(ttl=ttl, interval=interval, batch=batch, prefix=prefix)

    def setup(self, env: Env) -> None:
        self.redis = _client(env)
        self.db = KvTable(env.pg())
        self.queue = f"{self.prefix}queue:{env.node}"
        self._write = self.redis.register_script(_WB_WRITE)
        self._stamp = self.redis.register_script(_WB_STAMP)
        self._sync_redis = _client(env)  # the flusher's own connection (it follows the primary too)
        self._stop = threading.Event()
        self.synced = 0
        self._thread = threading.Thread(target=self._sync_loop, name=f"cache-first-flush-{env.node}", daemon=True)
        self._thread.start()

    wait_ms: int = 0  # cache-first-wait: WAIT 1 wait_ms on the write's own connection

    def write(self, key: str, value: Any) -> dict[str, Any]:
        """One pipeline, so one connection: the write script, CLIENT INFO (its ``laddr`` is the
        server's own port: which node acknowledged the write, ``acked_by``; the history's ``primary``
        records map ports to node names) and, with ``wait_ms``, WAIT (which counts the replicas that
        have every write of *this* connection: on another one it would vouch for nothing)."""
        item = json.dumps({"key": key, "value": value}, separators=(",", ":"))
        pipe = self.redis.pipeline(transaction=False)
        self._write(keys=[self.ck(key), self.queue], args=[encode(value, None), item, self.ttl_ms or 0], client=pipe)
        pipe.execute_command("CLIENT", "INFO")
        if self.wait_ms:
            pipe.execute_command("WAIT", 1, self.wait_ms)
        try:
            backlog, info, *waited = pipe.execute()
        except redis.RedisError as e:
            if _definite(e):
                raise DefiniteFailure(f"Redis: {e}") from None
            raise
        out: dict[str, Any] = {"backlog": int(backlog)}
        text = info.decode() if isinstance(info, bytes) else str(info)
        laddr = next((f[len("laddr="):] for f in text.split() if f.startswith("laddr=")), None)
        if laddr:
            out["acked_by"] = laddr
        if waited:
            if int(waited[0]) < 1:  # on the primary, on no replica: it may survive or not
                raise TimeoutError(f"WAIT 1 {self.wait_ms}: no replica acknowledged the write "
                                   f"(on {laddr or 'the primary'})")
            out["replicas"] = int(waited[0])
        return out

    def read(self, key: str) -> dict[str, Any]:
        try:
            return super().read(key)
        except MasterNotFoundError as e:
            raise DefiniteFailure(f"Redis: {e}") from None

    def _sync_loop(self) -> None:
        """write-behind's flusher, but it flushes only while a Sentinel quorum vouches for a primary,
        and from that one: never from a node the Sentinels hold down (it may be deposed). The writes
        the old primary takes while it is held down are therefore never flushed: from the Sentinels'
        down-after (2 s) to the promotion, a split brain's old primary loses whatever it acknowledges."""
        pool = self._sync_redis.connection_pool
        while not self._stop.is_set():
            try:
                pool.get_master_address()  # raises while no primary is vouched for; switches on a new one
            except (redis.RedisError, OSError):
                self._stop.wait(self.interval)
                continue
            self._flush_once()
            self._stop.wait(self.interval)

    def _flush_once(self) -> None:
        r = self._sync_redis
        while True:
            try:
                raw = r.lrange(self.queue, 0, self.batch - 1)
                if not raw:
                    return
                items = [json.loads(x) for x in raw]
                versions = self._commit_batch(items)
                pipe = r.pipeline(transaction=False)
                pipe.ltrim(self.queue, len(items), -1)
                for it, v in zip(items, versions, strict=True):
                    if v is not None:
                        self._stamp(keys=[self.ck(it["key"])],
                                    args=[json.dumps(it["value"], separators=(",", ":")), v], client=pipe)
                pipe.execute()
                self.synced += len(items)
                if len(raw) < self.batch:
                    return
            except Exception:  # noqa: BLE001 - retried at the next interval (the DB or Redis may be down)
                return


class CacheFirstWait(CacheFirst):
    """cache-first, acknowledged only after ``WAIT 1 wait_ms`` says a replica has the write."""

    name: ClassVar[str] = "cache-first-wait"

    def __init__(self, ttl: float = 0.0, interval: float = 1.0, batch: int = 1000, wait_ms: int = 200,
                 prefix: str | None = None) -> None:
        super().__init__(ttl=ttl, interval=interval, batch=batch, prefix=prefix)
        self.wait_ms = integer(wait_ms, "wait_ms", 1)


class WriteThroughPgFirst:
    """Commit in PostgreSQL (the truth) first, then SET the cache with the committed version."""

    name: ClassVar[str] = "write-through-pg-first"
    default_prefix: ClassVar[str] = "wtpg:"

    def __init__(self, ttl: float = 5.0, prefix: str | None = None) -> None:
        self.ttl = positive({"ttl": ttl}, "ttl", 5.0)
        self.ttl_ms = int(self.ttl * 1000)
        self.prefix = self.default_prefix if prefix is None else str(prefix)

    def setup(self, env: Env) -> None:
        self.redis = _client(env)
        self.db = KvTable(env.pg())

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.db.write(key, value)
        try:
            self.redis.set(self.prefix + key, encode(value, version), px=self.ttl_ms)
            cached = True
        except redis.RedisError:
            cached = False  # committed all the same; the cache catches up at its TTL
        return {"version": version, "cached": cached}

    def read(self, key: str) -> dict[str, Any]:
        try:
            hit = decode(self.redis.get(self.prefix + key))
        except redis.RedisError:
            hit = None  # no cache: read the truth
        if hit is not None:
            return {"value": hit["value"], "version": hit["version"], "source": "cache", "hit": True}
        value, version = self.db.read(key)
        try:
            self.redis.set(self.prefix + key, encode(value, version), px=self.ttl_ms)
        except redis.RedisError:
            pass
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}

    def close(self) -> None:
        self.redis.close()
