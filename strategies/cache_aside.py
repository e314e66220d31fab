"""Cache-aside with TTL over Redis + PostgreSQL: the most common caching strategy there is.

read:  GET cache → hit: return it. miss: SELECT from the DB → SET cache with TTL → return.
write: commit to the DB, then DEL the cache key.

Known weakness (which cachecert should find): a reader that misses, reads the old row, and is slow
to SET, can put the old value back *after* a writer's DEL; the cache then serves it until the TTL
runs out. A failed DEL (Redis link down after the commit) leaves the old value too. Both are stale
reads bounded by the TTL.
"""

from __future__ import annotations

from typing import Any, ClassVar

from strategies.base import Env, KvTable, decode, encode, positive


class CacheAside:
    name: ClassVar[str] = "cache-aside"

    def __init__(self, ttl: float = 5.0, prefix: str = "ca:") -> None:
        self.ttl_ms = int(positive({"ttl": ttl}, "ttl", 5.0) * 1000)
        self.prefix = prefix

    def setup(self, env: Env) -> None:
        self.redis = env.redis()
        self.db = KvTable(env.pg())

    def read(self, key: str) -> dict[str, Any]:
        ck = self.prefix + key
        cached = decode(self.redis.get(ck))
        if cached is not None:
            return {"value": cached["value"], "version": cached["version"], "source": "cache", "hit": True}
        value, version = self.db.read(key)
        self.redis.set(ck, encode(value, version), px=self.ttl_ms)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self.db.write(key, value)
        self.redis.delete(self.prefix + key)
        return {"version": version}

    def close(self) -> None:
        self.redis.close()
