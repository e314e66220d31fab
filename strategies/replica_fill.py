"""Cache-aside with fills from a read replica: what keeps a lagging replica's old rows out of the cache.

Why this module exists: offloading cache-miss fills to a read replica is a common optimisation, and
with a cache that has no TTL it turns replica lag into permanent staleness. Every strategy here
writes the same way — commit on the primary, then invalidate the cache key — and reads the cache
first; they differ only in how a miss is filled. Reads report ``source``: ``cache``, ``replica`` or
``primary`` (where the value came from). No strategy sets a TTL: what a fill puts in the cache stays
until the next write to that key invalidates it.

``fill-from-replica``     fill from the replica. Under lag, a read right after a write's DEL misses,
                          reads the old row from the replica and caches it: the cache keeps a value
                          older than an acknowledged write, for good if that key is not written again.
``fill-from-primary``     fill from the primary, under a row lock: ``SELECT ... FOR SHARE``, SET the
                          cache, then commit. A writer's UPDATE waits for the lock, so its commit —
                          and the DEL after it — come after the fill's SET: the classic cache-aside
                          race (a slow fill putting an old value back after the DEL) cannot happen.
                          A missing row is not cached (there is no row to lock). Only a primary can
                          do this: a hot standby takes no row locks.
``fill-after-lsn``        a write returns the primary's WAL position after its commit
                          (``pg_current_wal_lsn()``) and the node remembers the highest one it wrote;
                          a fill waits (bounded by ``max_wait`` s, else reads the primary) until the
                          replica has replayed that position (``pg_last_wal_replay_lsn()``), then
                          reads the replica. A fill SETs only if no write of this node to that key
                          completed since the fill began: the check and the SET, and a write's
                          "completed" mark and its DEL, are each done under the key's lock in the
                          node, so a fill's SET either precedes the write's DEL (which removes it) or
                          sees the write and sets nothing. Guarantee, for the writes of its own node
                          only: no read that starts after such a write is acknowledged returns or
                          caches an older value. Across nodes it promises nothing: another node's
                          write is not in this node's LSN, so with several nodes a stale replica fill
                          can stick for good (``--nodes 2`` under ``lag``: INVALID). Its price: a miss
                          waits about the lag (about a third of the throughput under a 400 ms lag).
``version-checked-fill``  the cache holds ``{value, version}`` (the DB's per-key version). A write
                          commits, then replaces the entry with a *tombstone* of its version — unless
                          the cache already holds that version or a newer one (a Lua compare, so the
                          cached version never goes down). A fill puts a value in only if its version
                          is newer than the cached one (or equal to a tombstone's). A read that finds
                          a tombstone fills from the replica; when the replica's row is older than the
                          tombstone (the replica lags), the fill is refused and the read goes to the
                          primary. Once a write is acknowledged its tombstone (or something newer) is
                          in the cache, so no read that starts later can return, or cache, an older
                          value — from any node, whatever the lag.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, ClassVar

from core.clients import Pg
from strategies.base import Env, KvTable, ParamError, decode, encode, positive

REPLICA = "postgres-replica"


def lsn_int(text: str) -> int:
    """A pg_lsn (``16/B374D848``) as an integer, to compare positions."""
    hi, _, lo = str(text).partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(n: int) -> str:
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


class _ReplicaFill:
    """The shared write path (commit on the primary, then DEL) and cache read; ``fill`` differs. (No
    ``name`` here: it is not a strategy of its own.)"""

    name: ClassVar[str]
    needs_servers: ClassVar[tuple[str, ...]] = (REPLICA,)  # refused before a run without it (harness/runner.py)
    prefix = "rf:"

    def setup(self, env: Env) -> None:
        if REPLICA not in env.endpoints:
            raise ParamError(f"{self.name} reads from a replica, but the run has none "
                             "(run it with --topology postgres=replica)")
        self.redis = env.redis()
        self.pg = env.pg()
        self.primary = KvTable(self.pg)
        self.replica_pg = Pg(env.endpoints[REPLICA], timeout=env.timeout)
        self.replica = KvTable(self.replica_pg)
        self.timeout = env.timeout

    def ck(self, key: str) -> str:
        return self.prefix + key

    def read(self, key: str) -> dict[str, Any]:
        cached = decode(self.redis.get(self.ck(key)))
        if cached is not None:
            return {"value": cached["value"], "version": cached["version"], "source": "cache", "hit": True}
        return {**self.fill(key), "hit": False, "db_load": True}

    def fill(self, key: str) -> dict[str, Any]:
        raise NotImplementedError

    def commit(self, key: str, value: Any) -> int:
        return self.primary.write(key, value)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.commit(key, value)
        self.redis.delete(self.ck(key))
        return {"version": version}

    def close(self) -> None:
        self.redis.close()
        self.replica_pg.close()


class FillFromReplica(_ReplicaFill):
    """Misses filled from the replica, cached with no TTL (fails under replica lag)."""

    name: ClassVar[str] = "fill-from-replica"

    def fill(self, key: str) -> dict[str, Any]:
        value, version = self.replica.read(key)
        self.redis.set(self.ck(key), encode(value, version))
        return {"value": value, "version": version, "source": "replica"}


class FillFromPrimary(_ReplicaFill):
    """Misses filled from the primary while holding a share lock on the row (no stale fill can stick)."""

    name: ClassVar[str] = "fill-from-primary"

    def fill(self, key: str) -> dict[str, Any]:
        def locked(conn: Any) -> tuple[Any, int]:
            with conn.transaction():
                row = conn.execute("select value, version from kv where key = %s for share", (key,)).fetchone()
                if row is None:
                    return None, 0  # nothing to lock: not cached
                self.redis.set(self.ck(key), encode(row[0], row[1]))  # before the lock is released
                return row[0], row[1]

        value, version = self.pg.run(locked)
        return {"value": value, "version": version, "source": "primary"}


class FillAfterLsn(_ReplicaFill):
    """Misses filled from the replica once it has replayed this node's latest write (bounded wait)."""

    name: ClassVar[str] = "fill-after-lsn"

    def __init__(self, max_wait: float = 1.0, poll: float = 0.005) -> None:
        self.max_wait = positive({"max_wait": max_wait}, "max_wait", 1.0, allow_zero=True)
        self.poll = positive({"poll": poll}, "poll", 0.005)
        self._lock = threading.Lock()
        self.last_lsn = 0  # the highest WAL position this node has written (after a commit)
        self.gen: dict[str, int] = {}  # key -> writes of this node completed (marked before their DEL)
        self._key_locks: dict[str, threading.Lock] = {}

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.primary.write(key, value)
        lsn = lsn_int(self.pg.execute("select pg_current_wal_lsn()")[0][0])
        with self._key_lock(key):  # a fill's check-and-SET is either before this or sees it
            with self._lock:
                self.last_lsn = max(self.last_lsn, lsn)
                self.gen[key] = self.gen.get(key, 0) + 1
            self.redis.delete(self.ck(key))
        return {"version": version}

    def _replayed(self, lsn: int) -> bool:
        rows = self.replica_pg.execute("select coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
                                       (lsn_text(lsn),))
        return bool(rows[0][0])

    def fill(self, key: str) -> dict[str, Any]:
        with self._lock:
            target, gen = self.last_lsn, self.gen.get(key, 0)
        deadline = time.monotonic() + min(self.max_wait, self.timeout / 2)
        source = "replica"
        while target and not self._replayed(target):
            if time.monotonic() >= deadline:
                source = "primary"
                break
            time.sleep(self.poll)
        value, version = (self.replica if source == "replica" else self.primary).read(key)
        with self._key_lock(key):
            if self.gen.get(key, 0) == gen:  # else a write of this node completed meanwhile: not cached
                self.redis.set(self.ck(key), encode(value, version))
        return {"value": value, "version": version, "source": source, "waited_for": lsn_text(target)}


# A fill: replace the entry only with a newer version, or a tombstone with its own write's value.
_FILL = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  local v = tonumber(ARGV[1])
  if c.version > v or (c.version == v and not c.tomb) then return cur end
end
redis.call('SET', KEYS[1], ARGV[2])
return false
"""
# A write's tombstone: only over an older version (a newer write's tombstone or fill stays).
_TOMB = """
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).version >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class VersionCheckedFill(_ReplicaFill):
    """Version-guarded cache entries: write tombstones, fills that never go back in version."""

    name: ClassVar[str] = "version-checked-fill"
    prefix = "rv:"

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._fill = self.redis.register_script(_FILL)
        self._tomb = self.redis.register_script(_TOMB)

    def read(self, key: str) -> dict[str, Any]:
        cached = decode(self.redis.get(self.ck(key)))
        if cached is not None and not cached.get("tomb"):
            return {"value": cached["value"], "version": cached["version"], "source": "cache", "hit": True}
        return {**self.fill(key), "hit": False, "db_load": True}

    def _put(self, key: str, value: Any, version: int) -> dict[str, Any] | None:
        """Fill; None if it went in, else the newer entry that refused it."""
        cur = self._fill(keys=[self.ck(key)], args=[version, encode(value, version)])
        return None if cur is None else json.loads(cur)

    def fill(self, key: str) -> dict[str, Any]:
        value, version = self.replica.read(key)
        newer = self._put(key, value, version)
        if newer is None:
            return {"value": value, "version": version, "source": "replica"}
        if not newer.get("tomb"):
            return {"value": newer["value"], "version": newer["version"], "source": "cache"}
        # the replica is behind an acknowledged write: the primary has it
        value, version = self.primary.read(key)
        newer = self._put(key, value, version)
        if newer is not None and not newer.get("tomb"):
            return {"value": newer["value"], "version": newer["version"], "source": "cache"}
        return {"value": value, "version": version, "source": "primary"}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.commit(key, value)
        self._tomb(keys=[self.ck(key)], args=[version, json.dumps({"tomb": True, "version": version})])
        return {"version": version}


__all__ = ["FillAfterLsn", "FillFromPrimary", "FillFromReplica", "VersionCheckedFill", "lsn_int", "lsn_text"]
