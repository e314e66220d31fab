"""Write-through strategies and their failure handling: seed scenario 3 ("write succeeds in cache,
fails in DB").

Why this module exists: when the DB write of a write-through cache fails or times out, the cache and
the DB disagree, and each strategy below resolves that disagreement differently. The
``write-through-db-failure`` workload runs them side by side under DB timeouts (ambiguous commits),
DB outages and Redis crashes, and the checkers show which promise each one keeps:

``cache-then-db``        SET cache, then write the DB. A DB failure leaves a value in the cache that
                         the DB never committed: readers see it (aborted reads) until the TTL.
``rollback-on-failure``  the same, but DEL the cache key when the DB write fails. Narrows the window
                         to the length of the failed DB call; readers inside it still see the value.
``db-first-invalidate``  write the DB first; only then DEL the cache key (also on an ambiguous DB
                         error). The cache only ever holds values loaded from the DB.
``versioned-cas``        read the DB version E, put ``{value, E+1, pending}`` in the cache, then a DB
                         compare-and-set ``where version = E``. Readers never return a pending entry
                         without checking the DB, so an uncommitted value is never served.
``write-behind``         SET cache + append to a per-node buffer in Redis, acknowledge at once; a
                         background sync job replays the buffer into the DB in order and retries on
                         failure. The cache is the source of truth until the replay: the buffer dies
                         with Redis, and DB readers lag the acknowledged state during an outage.

All of them take DB-assigned versions from the ``kv`` table (``versioned-cas`` writes ``E+1`` itself,
still contiguous per key). Every strategy also offers ``read_db(key)``: a reader that bypasses the
cache (another service, a report), which is how the workload measures how far the DB lags.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, ClassVar

import psycopg
import redis

from strategies.base import DefiniteFailure, Env, KvTable, ParamError, decode, encode, positive

log = logging.getLogger("cachecert.strategy")


def connect_or_fail(db: KvTable) -> None:
    """Open this thread's DB connection now, so that a refused or timed-out connect is a *definite*
    failure (no statement was sent) rather than an indeterminate one."""
    try:
        db.pg._conn()
    except psycopg.OperationalError as e:
        raise DefiniteFailure(f"DB connect failed: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from None


def redis_definite(e: redis.RedisError) -> bool:
    """True when a Redis error happened while connecting (the command was never sent)."""
    return isinstance(e, redis.ConnectionError) and "connecting to" in str(e)


def integer(value: Any, name: str, low: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be an integer, got {value!r}") from None
    if v != value and not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        raise ParamError(f"{name} must be an integer, got {value!r}")
    if v < low:
        raise ParamError(f"{name} must be >= {low}, got {v}")
    return v


def _cached_result(entry: dict[str, Any]) -> dict[str, Any]:
    out = {"value": entry["value"], "source": "cache", "hit": True}
    if entry.get("version") is not None:
        out["version"] = entry["version"]
    return out


class _Base:
    name: ClassVar[str] = ""
    default_prefix: ClassVar[str] = "wt:"

    def __init__(self, ttl: float = 30.0, prefix: str | None = None) -> None:
        self.ttl = positive({"ttl": ttl}, "ttl", 30.0, allow_zero=True)  # 0 = never expires
        self.ttl_ms: int | None = int(self.ttl * 1000) or None
        self.prefix = self.default_prefix if prefix is None else str(prefix)

    def setup(self, env: Env) -> None:
        self.redis = env.redis()
        self.db = KvTable(env.pg())

    def ck(self, key: str) -> str:
        return self.prefix + key

    def read(self, key: str) -> dict[str, Any]:
        """Cache-aside read: hit → cached entry; miss → DB, then fill the cache."""
        cached = decode(self.redis.get(self.ck(key)))
        if cached is not None:
            return _cached_result(cached)
        value, version = self.db.read(key)
        self.redis.set(self.ck(key), encode(value, version), px=self.ttl_ms)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}

    def read_db(self, key: str) -> dict[str, Any]:
        """Read the DB directly, as a service that does not use the cache would."""
        value, version = self.db.read(key)
        return {"value": value, "version": version, "source": "db", "hit": False}

    def close(self) -> None:
        self.redis.close()


class CacheThenDb(_Base):
    """Naive write-through: cache first, then the DB; a failed DB write leaves the cache ahead."""

    name: ClassVar[str] = "cache-then-db"

    def write(self, key: str, value: Any) -> dict[str, Any]:
        self.redis.set(self.ck(key), encode(value, None), px=self.ttl_ms)
        connect_or_fail(self.db)
        return {"version": self.db.write(key, value)}


class RollbackOnFailure(_Base):
    """Cache first, then the DB; on a DB error, DEL the cache key (seed option 1)."""

    name: ClassVar[str] = "rollback-on-failure"

    def write(self, key: str, value: Any) -> dict[str, Any]:
        self.redis.set(self.ck(key), encode(value, None), px=self.ttl_ms)
        try:
            connect_or_fail(self.db)
            return {"version": self.db.write(key, value)}
        except BaseException:
            try:
                self.redis.delete(self.ck(key))
            except redis.RedisError as e:
                log.warning("rollback of %s failed: %s", key, e)
            raise


class DbFirstInvalidate(_Base):
    """DB first; DEL the cache key after the commit, and also after an ambiguous DB error (seed option 5)."""

    name: ClassVar[str] = "db-first-invalidate"
    default_prefix: ClassVar[str] = "dbf:"

    def write(self, key: str, value: Any) -> dict[str, Any]:
        connect_or_fail(self.db)
        try:
            version = self.db.write(key, value)
        except BaseException:
            try:  # the commit may have happened (ack lost): drop what the cache holds
                self.redis.delete(self.ck(key))
            except redis.RedisError:
                pass
            raise
        self.redis.delete(self.ck(key))
        return {"version": version}


# Version-guarded cache updates for versioned-cas. Entries: {"value", "version", "pending"}.
_SET_PENDING = """
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[2])
if cur then
  local c = cjson.decode(cur)
  if tonumber(c.version) >= v then return 0 end
end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
# commit/resolve: replace if missing, older, or a pending entry at the same version
_SET_COMMITTED = """
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[2])
if cur then
  local c = cjson.decode(cur)
  local cv = tonumber(c.version)
  if cv > v or (cv == v and not c.pending) then return 0 end
end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
_DEL_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class VersionedCas(_Base):
    """Versioned compare-and-set write-through (seed option 2).

    write: E = DB version; cache ``{value, E+1, pending}`` (only if the cache holds nothing newer);
    DB ``update ... set version = E+1 where version = E``; on success mark the entry committed, on a
    CAS conflict remove our pending entry and retry (``retries`` times, then a definite failure).
    read: a committed entry is served; a pending one (or a miss) is resolved against the DB, and
    the DB's value is returned — so a value the DB never committed is never served.
    """

    name: ClassVar[str] = "versioned-cas"
    default_prefix: ClassVar[str] = "vcas:"

    def __init__(self, ttl: float = 30.0, retries: int = 3, prefix: str | None = None) -> None:
        super().__init__(ttl, prefix)
        self.retries = integer(retries, "retries", 0)

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._pending = self.redis.register_script(_SET_PENDING)
        self._commit = self.redis.register_script(_SET_COMMITTED)
        self._del_same = self.redis.register_script(_DEL_IF_SAME)

    def _cas(self, key: str, value: Any, expected: int) -> bool:
        t = self.db.table
        if expected == 0:
            rows = self.db.pg.execute(
                f"insert into {t} (key, value, version) values (%s, %s, 1) on conflict (key) do nothing "
                "returning version", (key, json.dumps(value)))
        else:
            rows = self.db.pg.execute(
                f"update {t} set value = %s, version = %s where key = %s and version = %s returning version",
                (json.dumps(value), expected + 1, key, expected))
        return bool(rows)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        ck, ttl = self.ck(key), self.ttl_ms or 0
        for _ in range(self.retries + 1):
            connect_or_fail(self.db)
            try:
                _, expected = self.db.read(key)
            except psycopg.Error as e:  # nothing written anywhere yet
                raise DefiniteFailure(f"reading the DB version failed: {type(e).__name__}") from None
            v = expected + 1
            pending = encode(value, v, pending=True)
            self._pending(keys=[ck], args=[pending, v, ttl])
            if self._cas(key, value, expected):
                try:
                    self._commit(keys=[ck], args=[encode(value, v), v, ttl])
                except redis.RedisError as e:  # the entry stays pending; readers resolve it
                    log.warning("commit mark of %s v%d failed: %s", key, v, e)
                return {"version": v}
            self._del_same(keys=[ck], args=[pending])  # lost the race: retry on the new version
        raise DefiniteFailure(f"compare-and-set on {key} lost {self.retries + 1} times to concurrent writers")

    def read(self, key: str) -> dict[str, Any]:
        cached = decode(self.redis.get(self.ck(key)))
        if cached is not None and not cached.get("pending"):
            return _cached_result(cached)
        value, version = self.db.read(key)
        if version > 0:
            self._commit(keys=[self.ck(key)], args=[encode(value, version), version, self.ttl_ms or 0])
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                "resolved_pending": cached is not None}


# write-behind: one atomic step sets the cache and appends to this node's buffer
_WB_WRITE = """
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('RPUSH', KEYS[2], ARGV[2])
"""
# after a sync: stamp the DB version on the cache entry if it still holds that value
_WB_STAMP = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if cjson.encode(c.value) ~= ARGV[1] then return 0 end
c.version = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(c), 'KEEPTTL')
return 1
"""


class WriteBehind(_Base):
    """Write-behind buffer (seed option 3): acknowledge after the cache write + buffer append; a sync
    thread per node replays the buffer into the DB in order every ``interval`` s (up to ``batch``
    writes per round), retrying from the failed write while the DB is unreachable.

    The buffer is the Redis list ``<prefix>queue:<node>``; an entry leaves it only after its DB
    commit, so a crash of the *node* loses nothing, but a crash of *Redis* (no persistence) loses
    every acknowledged write still buffered. Reads report ``backlog`` (this node's buffer length).
    Per-node buffers keep per-node order only: with several nodes, two writes to one key from
    different nodes can reach the DB in either order.
    """

    name: ClassVar[str] = "write-behind"
    default_prefix: ClassVar[str] = "wb:"

    def __init__(self, ttl: float = 0.0, interval: float = 0.05, batch: int = 100, prefix: str | None = None) -> None:
        super().__init__(ttl, prefix)
        self.interval = positive({"interval": interval}, "interval", 0.05)
        self.batch = integer(batch, "batch", 1)

    def setup(self, env: Env) -> None:
        super().setup(env)
        self.queue = f"{self.prefix}queue:{env.node}"
        self._write = self.redis.register_script(_WB_WRITE)
        self._stamp = self.redis.register_script(_WB_STAMP)
        self._sync_redis = env.redis()
        self._stop = threading.Event()
        self.synced = 0
        self._thread = threading.Thread(target=self._sync_loop, name=f"write-behind-sync-{env.node}", daemon=True)
        self._thread.start()

    def write(self, key: str, value: Any) -> dict[str, Any]:
        item = json.dumps({"key": key, "value": value}, separators=(",", ":"))
        try:
            backlog = self._write(keys=[self.ck(key), self.queue], args=[encode(value, None), item, self.ttl_ms or 0])
        except redis.RedisError as e:
            if redis_definite(e):
                raise DefiniteFailure(f"Redis refused: {e}") from None
            raise
        return {"backlog": backlog}

    def read(self, key: str) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.ck(key))
        pipe.llen(self.queue)
        raw, backlog = pipe.execute()
        cached = decode(raw)
        if cached is not None:
            return _cached_result(cached) | {"backlog": backlog}
        value, version = self.db.read(key)
        # NX: never overwrite a write that was buffered while we read the DB
        self.redis.set(self.ck(key), encode(value, version), px=self.ttl_ms, nx=True)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                "backlog": backlog}

    def _commit_batch(self, items: list[dict[str, Any]]) -> list[int | None]:
        """Apply a batch of buffered writes in order, in one transaction (one fsync, pipelined).

        Idempotent replay: a retried batch whose first attempt committed (ack lost) does not bump a
        row that already holds the value; those come back as None."""
        t = self.db.table
        sql = (f"insert into {t} (key, value, version) values (%s, %s, 1) on conflict (key) do update "
               f"set value = excluded.value, version = {t}.version + 1 "
               f"where {t}.value is distinct from excluded.value returning version")

        def apply(conn: Any) -> list[int | None]:
            with conn.transaction(), conn.pipeline():
                curs = [conn.execute(sql, (it["key"], json.dumps(it["value"]))) for it in items]
            return [(row[0] if (row := c.fetchone()) else None) for c in curs]

        return self.db.pg.run(apply)

    def _sync_loop(self) -> None:
        r = self._sync_redis
        while not self._stop.is_set():
            try:
                raw = r.lrange(self.queue, 0, self.batch - 1)
                if raw:
                    items = [json.loads(x) for x in raw]
                    versions = self._commit_batch(items)
                    pipe = r.pipeline(transaction=False)
                    pipe.ltrim(self.queue, len(items), -1)  # only this node's sync job trims this queue
                    for it, v in zip(items, versions, strict=True):
                        if v is not None:
                            self._stamp(keys=[self.ck(it["key"])],
                                        args=[json.dumps(it["value"], separators=(",", ":")), v], client=pipe)
                    pipe.execute()
                    self.synced += len(items)
                    if len(raw) == self.batch:
                        continue  # more to replay: no pause
            except Exception as e:  # noqa: BLE001 - the job retries forever; the DB or Redis may be down
                log.debug("write-behind sync retry: %s", e)
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self._sync_redis.close()
        super().close()
