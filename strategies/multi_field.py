"""Multi-field cached objects and the invalidation race: seed scenario 4 ("another service is in
the middle of reading the cache ... gets partial data").

Why this module exists: an object cached as several fields (a Redis hash read field by field, as a
streaming or lazily-loading reader does) can be invalidated between two field reads; the reader then
fills the rest from the DB, at a newer version, and returns a *torn* object that never existed. The
strategies below are the seed's answers, run side by side by the ``invalidation-race`` workload:

``delete-invalidate``  DB update, then DEL the hash. Readers HGET field by field and, on a missing
                       field, load the row from the DB and refill the hash. Tears under concurrency.
``atomic-replace``     DB update, then replace the whole hash in one step (Lua, version-guarded).
                       ``reads=whole`` reads it in one HGETALL (never torn); ``reads=fields`` keeps
                       the field-by-field reader, which replacing does not save.
``read-lock``          readers and invalidators take ``SET lock NX PX lock_ttl``; a reader holds it
                       across its field reads. Safe while the lock outlives the read; costs waiting.
``versioned-keys``     each version is an immutable hash ``<key>:v<N>`` behind a pointer; readers
                       resolve the pointer once and read that version field by field. Old versions
                       are garbage collected ``gc_grace`` s after being superseded (``gc=ttl``), or
                       never (``gc=none``). A reader whose version vanished mid-read restarts.
                       Writes report ``live_versions``: versions of that key still in Redis.

Objects are dicts ``{field: value}`` stored as one jsonb row in the ``kv`` table, so the DB side is
always consistent; every write writes one unique id into every field, so a torn read is visible as
mixed ids.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from strategies.base import DefiniteFailure, Env, KvTable, ParamError, positive
from strategies.write_through import connect_or_fail, integer

FIELDS: tuple[str, ...] = ("name", "email", "phone", "address")
DEFAULT_FIELDS = ",".join(FIELDS)
VERSION_FIELD = "_v"


def parse_fields(fields: Any) -> tuple[str, ...]:
    names = tuple(f.strip() for f in fields.split(",")) if isinstance(fields, str) else tuple(fields)
    if not names or any(not n or n == VERSION_FIELD for n in names) or len(set(names)) != len(names):
        raise ParamError(f"fields must be distinct non-empty names (not {VERSION_FIELD!r}), got {fields!r}")
    return names


def _decode_field(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    s = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return int(s)
    except ValueError:
        return s


class _MultiField:
    name: ClassVar[str] = ""
    default_prefix: ClassVar[str] = "mf:"

    def __init__(self, ttl: float = 30.0, fields: Any = DEFAULT_FIELDS, prefix: str | None = None) -> None:
        self.ttl_ms = int(positive({"ttl": ttl}, "ttl", 30.0) * 1000)
        self.fields = parse_fields(fields)
        self.prefix = self.default_prefix if prefix is None else str(prefix)

    def setup(self, env: Env) -> None:
        self.redis = env.redis()
        self.db = KvTable(env.pg())

    def ck(self, key: str) -> str:
        return self.prefix + key

    def _db_object(self, key: str) -> tuple[dict[str, Any] | None, int]:
        row, version = self.db.read(key)
        return (row if isinstance(row, dict) else None), version

    def _fill(self, key: str, row: dict[str, Any], version: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.ck(key), mapping={**{f: row.get(f) for f in self.fields}, VERSION_FIELD: version})
        pipe.pexpire(self.ck(key), self.ttl_ms)
        pipe.execute()

    def _read_fields(self, key: str) -> dict[str, Any]:
        """The field-by-field reader: one HGET per field; a missing field loads the row from the DB,
        refills the hash and goes on with the next field from the cache."""
        ck, out, hits, loaded = self.ck(key), {}, 0, False
        for f in self.fields:
            raw = self.redis.hget(ck, f)
            if raw is None:
                row, version = self._db_object(key)
                if row is None:
                    return {"value": None, "source": "db", "hit": False, "db_load": True}
                self._fill(key, row, version)
                out[f] = row.get(f)
                loaded = True
            else:
                out[f] = _decode_field(raw)
                hits += 1
        source = "cache" if hits == len(self.fields) else "db" if hits == 0 else "mixed"
        return {"value": out, "source": source, "hit": hits == len(self.fields), "db_load": loaded}

    def _db_write(self, key: str, value: Any) -> int:
        obj = value if isinstance(value, dict) else {f: value for f in self.fields}
        connect_or_fail(self.db)
        return self.db.write(key, obj)

    def close(self) -> None:
        self.redis.close()


class DeleteInvalidate(_MultiField):
    """DB update then DEL; field-by-field reads with per-miss refill (the seed's failing setup)."""

    name: ClassVar[str] = "delete-invalidate"
    default_prefix: ClassVar[str] = "di:"

    def read(self, key: str) -> dict[str, Any]:
        return self._read_fields(key)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        try:
            version = self._db_write(key, value)
        finally:  # also after an ambiguous DB error: the commit may have happened
            self.redis.delete(self.ck(key))
        return {"version": version}


_REPLACE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local v = tonumber(ARGV[2])
if cur and tonumber(cur) >= v then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], v, unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class AtomicReplace(_MultiField):
    """DB update then replace the whole hash in one Lua step (never older over newer)."""

    name: ClassVar[str] = "atomic-replace"
    default_prefix: ClassVar[str] = "ar:"

    def __init__(self, ttl: float = 30.0, fields: Any = DEFAULT_FIELDS, reads: str = "whole",
                 prefix: str | None = None) -> None:
        super().__init__(ttl, fields, prefix)
        if reads not in ("whole", "fields"):
            raise ParamError(f"reads must be 'whole' (one HGETALL) or 'fields' (HGET per field), got {reads!r}")
        self.reads = reads

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._replace = self.redis.register_script(_REPLACE)

    def _fill(self, key: str, row: dict[str, Any], version: int) -> None:
        args: list[Any] = [VERSION_FIELD, version, self.ttl_ms]
        for f in self.fields:
            args += [f, row.get(f)]
        self._replace(keys=[self.ck(key)], args=args)

    def read(self, key: str) -> dict[str, Any]:
        if self.reads == "fields":
            return self._read_fields(key)
        h = self.redis.hgetall(self.ck(key))
        if h:
            d = {(k.decode() if isinstance(k, bytes) else k): _decode_field(v) for k, v in h.items()}
            return {"value": {f: d.get(f) for f in self.fields}, "version": d.get(VERSION_FIELD),
                    "source": "cache", "hit": True}
        row, version = self._db_object(key)
        if row is None:
            return {"value": None, "source": "db", "hit": False, "db_load": True}
        self._fill(key, row, version)
        return {"value": {f: row.get(f) for f in self.fields}, "version": version, "source": "db", "hit": False,
                "db_load": True}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        obj = value if isinstance(value, dict) else {f: value for f in self.fields}
        try:
            version = self._db_write(key, obj)
        except DefiniteFailure:
            raise
        except BaseException:
            self.redis.delete(self.ck(key))  # ambiguous commit: drop rather than keep a maybe-old value
            raise
        self._fill(key, obj, version)
        return {"version": version}


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ReadLock(_MultiField):
    """Readers and invalidators share one ``SET NX PX`` lock per object (seed option 1).

    A reader holds the lock across all its field reads (and the DB fetch on a miss, bounded by
    ``fetch_timeout``); an invalidator waits for it before DEL. ``lock_ttl`` must outlive the fetch,
    or the lock expires mid-read and the invalidation tears it anyway. A reader that cannot get the
    lock within ``wait`` fails (definitely: it read nothing); an invalidator that cannot get it
    within ``wait`` deletes anyway (reported as ``forced``), because the DB has already changed.
    """

    name: ClassVar[str] = "read-lock"
    default_prefix: ClassVar[str] = "rl:"

    def __init__(self, ttl: float = 30.0, fields: Any = DEFAULT_FIELDS, lock_ttl: float = 2.0,
                 fetch_timeout: float = 0.5, wait: float = 2.0, poll: float = 0.002,
                 prefix: str | None = None) -> None:
        super().__init__(ttl, fields, prefix)
        self.lock_ttl = positive({"lock_ttl": lock_ttl}, "lock_ttl", 2.0)
        self.fetch_timeout = positive({"fetch_timeout": fetch_timeout}, "fetch_timeout", 0.5)
        self.wait = positive({"wait": wait}, "wait", 2.0)
        self.poll = positive({"poll": poll}, "poll", 0.002)
        if self.lock_ttl <= self.fetch_timeout:
            raise ParamError(f"lock_ttl ({self.lock_ttl:g} s) must be longer than fetch_timeout "
                             f"({self.fetch_timeout:g} s): a lock that expires mid-fetch lets an invalidation "
                             "tear the read it was meant to protect")

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._release = self.redis.register_script(_RELEASE)

    def _db_object(self, key: str) -> tuple[dict[str, Any] | None, int]:
        rows = self.db.pg.execute(f"select value, version from {self.db.table} where key = %s", (key,),
                                  timeout=self.fetch_timeout)
        if not rows:
            return None, 0
        return (rows[0][0] if isinstance(rows[0][0], dict) else None), rows[0][1]

    def _acquire(self, lk: str, token: str) -> tuple[bool, float]:
        t0 = time.monotonic()
        deadline = t0 + self.wait
        while True:
            if self.redis.set(lk, token, nx=True, px=int(self.lock_ttl * 1000)):
                return True, time.monotonic() - t0
            if time.monotonic() >= deadline:
                return False, time.monotonic() - t0
            time.sleep(self.poll)

    def read(self, key: str) -> dict[str, Any]:
        lk, token = self.ck(key) + ":lock", uuid.uuid4().hex
        got, waited = self._acquire(lk, token)
        if not got:
            raise DefiniteFailure(f"read lock on {key} busy for {self.wait:g} s")
        try:
            res = self._read_fields(key)
        except BaseException:
            self._release(keys=[lk], args=[token])
            raise
        # released by us = still held at the end of the read; otherwise it expired mid-read and an
        # invalidation may have torn it (reported, so a run shows when lock_ttl is too short)
        held = bool(self._release(keys=[lk], args=[token]))
        return res | {"lock_wait_ms": round(waited * 1000, 2), "lock_lost": not held}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        version = self._db_write(key, value)
        lk, token = self.ck(key) + ":lock", uuid.uuid4().hex
        got, waited = self._acquire(lk, token)
        try:
            self.redis.delete(self.ck(key))
        finally:
            if got:
                self._release(keys=[lk], args=[token])
        return {"version": version, "forced": not got, "lock_wait_ms": round(waited * 1000, 2)}


# Publish version v of an object: create its immutable hash, move the pointer, collect the old
# version (expire after the grace period, or delete at once), and count the versions still live.
_PUBLISH = """
local ptr, idx, base = KEYS[1], KEYS[2], ARGV[1]
local v, gc, grace = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local cur = tonumber(redis.call('GET', ptr) or '0')
local made = 0
if v > cur then
  redis.call('HSET', base .. v, unpack(ARGV, 5))
  redis.call('ZADD', idx, v, v)
  redis.call('SET', ptr, v)
  made = 1
  if gc == 'ttl' and cur > 0 then
    if grace > 0 then redis.call('PEXPIRE', base .. cur, grace) else redis.call('DEL', base .. cur) end
  end
end
local live = 0
for _, m in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
  if redis.call('EXISTS', base .. m) == 1 then live = live + 1 else redis.call('ZREM', idx, m) end
end
return {made, live}
"""


class VersionedKeys(_MultiField):
    """Immutable versions ``<prefix><key>:v<N>`` behind a pointer ``<prefix><key>:ptr`` (seed option 5)."""

    name: ClassVar[str] = "versioned-keys"
    default_prefix: ClassVar[str] = "vk:"

    def __init__(self, ttl: float = 30.0, fields: Any = DEFAULT_FIELDS, gc: str = "ttl", gc_grace: float = 0.5,
                 retries: int = 3, prefix: str | None = None) -> None:
        super().__init__(ttl, fields, prefix)
        if gc not in ("ttl", "none"):
            raise ParamError(f"gc must be 'ttl' (collect superseded versions after gc_grace) or 'none', got {gc!r}")
        self.gc = gc
        self.gc_grace_ms = int(positive({"gc_grace": gc_grace}, "gc_grace", 0.5, allow_zero=True) * 1000)
        self.retries = integer(retries, "retries", 0)

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._publish = self.redis.register_script(_PUBLISH)

    def _keys(self, key: str) -> tuple[str, str, str]:
        b = self.ck(key)
        return b + ":ptr", b + ":idx", b + ":v"

    def _publish_version(self, key: str, row: dict[str, Any], version: int) -> int:
        args: list[Any] = [self._keys(key)[2], version, self.gc, self.gc_grace_ms]
        for f in self.fields:
            args += [f, row.get(f)]
        _, live = self._publish(keys=list(self._keys(key)[:2]), args=args)
        return int(live)

    def read(self, key: str) -> dict[str, Any]:
        ptr, _, base = self._keys(key)
        restarts = 0
        for _ in range(self.retries + 1):
            v = self.redis.get(ptr)
            if v is None:
                row, version = self._db_object(key)
                if row is None:
                    return {"value": None, "source": "db", "hit": False, "db_load": True}
                live = self._publish_version(key, row, version)
                return {"value": {f: row.get(f) for f in self.fields}, "version": version, "source": "db",
                        "hit": False, "db_load": True, "live_versions": live, "restarts": restarts}
            vk, out = base + v.decode(), {}
            for f in self.fields:
                raw = self.redis.hget(vk, f)
                if raw is None:
                    break  # this version was collected while we read it
                out[f] = _decode_field(raw)
            else:
                return {"value": out, "version": int(v), "source": "cache", "hit": True, "restarts": restarts}
            restarts += 1
        raise DefiniteFailure(f"version of {key} collected mid-read {restarts} times in a row")

    def write(self, key: str, value: Any) -> dict[str, Any]:
        obj = value if isinstance(value, dict) else {f: value for f in self.fields}
        version = self._db_write(key, obj)
        return {"version": version, "live_versions": self._publish_version(key, obj, version)}
