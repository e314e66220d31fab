"""Cache-warming strategies (seed scenario 5): a cold Redis in front of a slow PostgreSQL.

Why this module exists: a cache that starts empty makes every early request a slow DB hit. The seed
compares ways to fill it while live traffic (Zipfian: a few keys take most requests) already runs:

    warm-none        no warming job: plain read-aside, the cache fills only on misses
    warm-sequential  a background job loads the whole table in primary-key order (``order by key``,
                     unrelated to popularity); while it runs, live misses read the DB but do not fill
    warm-hot-first   the job loads keys in order of yesterday's access log (table ``access_log``,
                     most-requested first); while it runs, live misses read the DB but do not fill
    warm-read-aside  read-aside (misses fill) *and* the background job, hot-first

The job runs in a background thread started in ``setup`` on one node (``warm_node``, default 0;
the others only serve) and is stopped by ``close``. It reads ``batch`` rows per DB query and loads
them into Redis at ``warm_rate`` keys/s (a throttled loader, as the seed's "10 GB over 10 minutes"
job is), so a row can sit in the job's memory for a while between its DB read and its cache set.
When the job has loaded every row it sets a flag key; from then on every node is plain read-aside
(misses fill), whatever the strategy: normal operation after the warm-up.

Writes go on during the warm-up (commit to the DB, then invalidate the cache key). A naive fill
(``guard=none``: read the DB, later SET) can therefore put back a value older than a write that
committed and invalidated in between: a *stale set*, served until the next write to that key. With
``guard=version`` a write leaves a tombstone carrying its version instead of deleting, and every
fill is a Lua compare-and-set that refuses to replace a newer version (or a tombstone of a newer
version), so the cache never goes backwards; refused fills are counted (``rejected``).

Every read reports ``filled_by`` (warmer | read) on hits, and cumulative warm-up counters in
``warm``: rows loaded, DB queries, rejected sets, how long ago the job finished (``done_ago_ms``,
None while it runs) and the price per DB hit (``db_hit_cost``) so the checker can cost the run.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, ClassVar

from strategies.base import Env, ParamError, positive

# Set ARGV[1] (payload) if the cached entry is absent, older, or a tombstone of a version <= ARGV[2].
GUARDED_FILL = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  local v = tonumber(ARGV[2])
  if c.version > v or (c.version == v and not c.tomb) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# A write's tombstone: replaces anything not newer than the write's version.
TOMBSTONE = """
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).version > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

GUARDS = ("none", "version")
DONE = "!done"  # set by the job when it has loaded every row: from then on every node fills on a miss


class _Warming:
    """Shared read/write paths and the background job; subclasses choose order and fill-on-miss."""

    name: ClassVar[str | None] = None
    order: ClassVar[str | None] = None  # None: no warming job; "key" or "hot"
    fill_default: ClassVar[bool] = True

    def __init__(self, guard: str = "none", warm_rate: float = 500.0, batch: int = 200, warm_node: int = 0,
                 fill_on_miss: Any = None, db_hit_cost: float = 0.01, prefix: str = "warm:") -> None:
        if guard not in GUARDS:
            raise ParamError(f"guard must be one of {', '.join(GUARDS)}, got {guard!r}")
        self.guard = guard
        self.warm_rate = positive({"warm_rate": warm_rate}, "warm_rate", 500.0)
        try:
            self.batch = int(batch)
            self.warm_node = int(warm_node)
        except (TypeError, ValueError):
            raise ParamError(f"batch and warm_node must be integers, got {batch!r}, {warm_node!r}") from None
        if self.batch < 1:
            raise ParamError(f"batch must be >= 1, got {self.batch}")
        if self.warm_node < 0:
            raise ParamError(f"warm_node must be >= 0, got {self.warm_node}")
        self.db_hit_cost = positive({"db_hit_cost": db_hit_cost}, "db_hit_cost", 0.01, allow_zero=True)
        if fill_on_miss is None:
            self.fill_on_miss = self.fill_default
        elif isinstance(fill_on_miss, str):
            if fill_on_miss.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ParamError(f"fill_on_miss must be true or false, got {fill_on_miss!r}")
            self.fill_on_miss = fill_on_miss.lower() in ("true", "1", "yes")
        else:
            self.fill_on_miss = bool(fill_on_miss)
        self.prefix = prefix
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.rows = self.queries = self.rejected = 0
        self.done_at: float | None = None
        self.error: str | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def setup(self, env: Env) -> None:
        self.redis = env.redis()
        self.pg = env.pg()
        self._fill_script = self.redis.register_script(GUARDED_FILL)
        self._tomb_script = self.redis.register_script(TOMBSTONE)
        if self.order is not None and env.node == self.warm_node:
            self._thread = threading.Thread(target=self._warm, name=f"warmer-{env.node}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.redis.close()

    def _set(self, key: str, value: Any, version: int, by: str) -> bool:
        payload = json.dumps({"value": value, "version": version, "by": by}, separators=(",", ":"))
        if self.guard == "none":
            self.redis.set(self.prefix + key, payload)
            return True
        return bool(self._fill_script(keys=[self.prefix + key], args=[payload, version]))

    # -- the background job ---------------------------------------------------------------
    def _batches(self) -> Any:
        if self.order == "hot":
            rows = self.pg.execute("select key from access_log order by hits desc, key", timeout=10)
            self._count_query()
            keys = [r[0] for r in rows]
            for i in range(0, len(keys), self.batch):
                part = keys[i:i + self.batch]
                got = self.pg.execute("select key, value, version from kv where key = any(%s)", (part,), timeout=10)
                self._count_query()
                by_key = {r[0]: r for r in got}
                yield [by_key[k] for k in part if k in by_key]
        else:
            last = ""
            while True:
                got = self.pg.execute("select key, value, version from kv where key > %s order by key limit %s",
                                      (last, self.batch), timeout=10)
                self._count_query()
                if not got:
                    return
                yield got
                last = got[-1][0]

    def _count_query(self) -> None:
        with self._lock:
            self.queries += 1

    def _warm(self) -> None:
        t0 = time.monotonic()
        n = 0
        try:
            for rows in self._batches():
                for key, value, version in rows:
                    # throttled loader: the n-th row is set no earlier than n / warm_rate after the start
                    if self._stop.wait(max(0.0, t0 + n / self.warm_rate - time.monotonic())):
                        return
                    ok = self._set(key, value, version, "warmer")
                    n += 1
                    with self._lock:
                        self.rows += 1
                        self.rejected += 0 if ok else 1
                if self._stop.is_set():
                    return
            self.done_at = time.monotonic()
            self.redis.set(self.prefix + DONE, "1")
        except Exception as e:  # noqa: BLE001 - a dead job is a figure (warm never finishes), not a crash
            self.error = f"{type(e).__name__}: {e}"[:200]

    def _warm_fields(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {"rows": self.rows, "queries": self.queries, "rejected": self.rejected,
                                   "cost": self.db_hit_cost}
        out["job"] = self._thread is not None
        out["done_ago_ms"] = None if self.done_at is None else round((time.monotonic() - self.done_at) * 1000, 1)
        if self.error:
            out["error"] = self.error
        return out

    # -- the strategy -----------------------------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        raw, done = self.redis.mget(self.prefix + key, self.prefix + DONE)
        if raw is not None:
            c = json.loads(raw)
            if not c.get("tomb"):
                return {"value": c["value"], "version": c["version"], "source": "cache", "hit": True,
                        "filled_by": c.get("by"), "warm": self._warm_fields()}
        rows = self.pg.execute("select value, version from kv where key = %s", (key,))
        value, version = (rows[0][0], rows[0][1]) if rows else (None, 0)
        out = {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}
        if self.fill_on_miss or done is not None:
            if not self._set(key, value, version, "read"):
                out["rejected"] = True
        return out | {"warm": self._warm_fields()}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        rows = self.pg.execute(
            "insert into kv (key, value, version) values (%s, %s, 1) on conflict (key) do update "
            "set value = excluded.value, version = kv.version + 1 returning version", (key, json.dumps(value)))
        version = rows[0][0]
        if self.guard == "none":
            self.redis.delete(self.prefix + key)
        else:
            tomb = json.dumps({"value": None, "version": version, "tomb": True}, separators=(",", ":"))
            self._tomb_script(keys=[self.prefix + key], args=[tomb, version])
        return {"version": version}


class NoWarming(_Warming):
    name: ClassVar[str] = "warm-none"


class SequentialWarming(_Warming):
    name: ClassVar[str] = "warm-sequential"
    order = "key"
    fill_default = False


class HotFirstWarming(_Warming):
    name: ClassVar[str] = "warm-hot-first"
    order = "hot"
    fill_default = False


class ReadAsideWarming(_Warming):
    name: ClassVar[str] = "warm-read-aside"
    order = "hot"
    fill_default = True
