"""Schema-migration strategies (seed scenario 1): a warm cache meets an ALTER TABLE mid-run.

The user object grows from {id, name, email} (schema 1) to {.., phone, address, updated_at}
(schema 2). The migration itself (ALTER TABLE + backfill, a pub/sub event, then the switch of the
application code to schema 2) is played by the schema-migration workload as ``step`` faults; what
the *application* knows is ``APP``: the code and config currently deployed on every node of this
process (schema version, whether the operator cut TTLs). Each strategy is one way the cache copes:

    schema-plain       key ``user:ID``, no change to the cache logic. Old-format entries stay until
                       their TTL. Under schema-2 code some request paths (``reject_share``) need the
                       new fields, count the object as a miss and read the DB (without refilling:
                       the cache logic only fills on a real miss); the others null-coalesce and
                       serve it as valid: old-schema reads *and* a hit-rate collapse (the seed).
    schema-versioned   key ``user:v{schema}:ID``: the new code reads new keys only; old ones age out.
    schema-ttl-cut     plain keys, but when the operator cuts TTLs (step ``ttl-cut``) every fill uses
                       ``cut_ttl`` and live entries are shortened to it: old entries outlive the
                       deploy by at most ``cut_ttl``.
    schema-event-bump  the key prefix is bumped when the migration's ``schema_version_change`` event
                       arrives over Redis pub/sub (each node's own link ``redis.subN``, so a fault can
                       lose one node's event); naive subscriber: no catch-up after a reconnect.
    schema-dual-read   plain keys; a cached object lacking a field the running code requires is a
                       miss: read the DB and refill in the new format.

Every read returns the object as ``value`` with ``version`` (DB commit order), ``hit``,
``source``, and ``schema`` (the code version that served it), so a checker can tell an
old-schema object served as valid.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any, ClassVar

import redis

from core.clients import redis_client
from strategies.base import DefiniteFailure, Env, ParamError, positive

FIELDS = {1: ("id", "name", "email"), 2: ("id", "name", "email", "phone", "address", "updated_at")}
CRITICAL = ("phone",)  # payment verification: must never be served missing under schema 2
CHANNEL = "schema-events"
VERSION_KEY = "schema:version"  # the prefix version a booting node starts from (set by the migration)


class App:
    """What is deployed on the application nodes of this process right now (code + config)."""

    def __init__(self) -> None:
        self.schema = 1
        self.ttl_cut = False

    def reset(self) -> None:
        self.schema, self.ttl_cut = 1, False


APP = App()


def missing_fields(obj: Any, schema: int) -> list[str]:
    """Fields the schema-``schema`` code needs that ``obj`` lacks (critical ones must be non-null)."""
    if not isinstance(obj, dict):
        return list(FIELDS[schema])
    return [f for f in FIELDS[schema] if f not in obj or (f in CRITICAL and obj[f] is None)]


class _SchemaBase:
    name: ClassVar[str | None] = None

    def __init__(self, ttl: float = 3.0, build: int = 0) -> None:
        self.ttl_ms = int(positive({"ttl": ttl}, "ttl", 3.0) * 1000)
        if self.ttl_ms < 1:
            raise ParamError(f"ttl must be at least 1 ms, got {ttl}")
        if build not in (0, 1, 2):
            raise ParamError(f"build must be 1 or 2 (the schema this build's code reads), or 0 to follow the "
                             f"migration in-process; got {build!r}")
        self.build = build

    @property
    def code_schema(self) -> int:
        """The schema this node's code reads: its build's (an app node: v1 and v2 are two builds, swapped
        by a rolling deploy), or the in-process application's, switched by the migration step."""
        return self.build or APP.schema

    def setup(self, env: Env) -> None:
        self.env = env
        self.redis = env.redis()
        self.pg = env.pg()

    # -- naming and data access -------------------------------------------------------------
    def ckey(self, key: str) -> str:
        return f"user:{key}"

    def _ttl_ms(self) -> int:
        return self.ttl_ms

    def _load(self, key: str, schema: int) -> tuple[dict[str, Any] | None, int]:
        """Read the row as the schema-``schema`` code does: it selects the columns it knows."""
        cols = ", ".join(FIELDS[schema])
        rows = self.pg.execute(f"select {cols}, version from users where id = %s", (key,))
        if not rows:
            return None, 0
        *vals, version = rows[0]
        obj = {c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in zip(FIELDS[schema], vals, strict=True)}
        return obj, int(version)

    def _get(self, key: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.ckey(key))
        return None if raw is None else json.loads(raw)

    def _set(self, key: str, obj: Any, version: int) -> None:
        self.redis.set(self.ckey(key), json.dumps({"value": obj, "version": version}), px=self._ttl_ms())

    def _from_db(self, key: str, schema: int, fill: bool = True, **extra: Any) -> dict[str, Any]:
        obj, version = self._load(key, schema)
        if fill:
            self._set(key, obj, version)
        return {"value": obj, "version": version, "source": "db", "hit": False, "db_load": True,
                "schema": schema, **extra}

    @staticmethod
    def _hit(cached: dict[str, Any], schema: int) -> dict[str, Any]:
        return {"value": cached["value"], "version": cached["version"], "source": "cache", "hit": True,
                "schema": schema}

    # -- the strategy -----------------------------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        schema = self.code_schema
        cached = self._get(key)
        if cached is None:
            return self._from_db(key, schema)
        return self._serve(key, cached, schema)

    def _serve(self, key: str, cached: dict[str, Any], schema: int) -> dict[str, Any]:
        return self._hit(cached, schema)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        schema = self.code_schema
        extra = ", updated_at = now()" if schema >= 2 else ""
        rows = self.pg.execute(f"update users set name = %s, email = %s, version = version + 1{extra} "
                               "where id = %s returning version", (f"user-{value}", f"u{value}@example.com", key))
        if not rows:
            raise DefiniteFailure(f"no user {key}")
        self.redis.delete(self.ckey(key))
        return {"version": int(rows[0][0]), "schema": schema}

    def close(self) -> None:
        self.redis.close()


class SchemaPlain(_SchemaBase):
    """Plain keys, cache logic unchanged by the migration (see the module docstring)."""

    name: ClassVar[str] = "schema-plain"

    def __init__(self, ttl: float = 3.0, reject_share: float = 0.6, build: int = 0) -> None:
        super().__init__(ttl, build)
        try:
            self.reject_share = float(reject_share)
        except (TypeError, ValueError):
            raise ParamError(f"reject_share must be a number in [0, 1], got {reject_share!r}") from None
        if not 0 <= self.reject_share <= 1:
            raise ParamError(f"reject_share must be in [0, 1], got {reject_share!r}")
        self._rng = random.Random()

    def _serve(self, key: str, cached: dict[str, Any], schema: int) -> dict[str, Any]:
        if missing_fields(cached["value"], schema) and self._rng.random() < self.reject_share:
            # this request path needs the new fields: "cache miss reported", served from the DB
            return self._from_db(key, schema, fill=False, rejected_old=True)
        return self._hit(cached, schema)


class SchemaVersioned(_SchemaBase):
    """Schema version in the key: ``user:v2:ID`` — the new code never sees an old-format entry."""

    name: ClassVar[str] = "schema-versioned"

    def ckey(self, key: str) -> str:
        return f"user:v{self.code_schema}:{key}"

    def read(self, key: str) -> dict[str, Any]:
        schema = self.code_schema  # one code version for the whole request: key and fields agree
        raw = self.redis.get(f"user:v{schema}:{key}")
        if raw is None:
            obj, version = self._load(key, schema)
            self.redis.set(f"user:v{schema}:{key}", json.dumps({"value": obj, "version": version}), px=self.ttl_ms)
            return {"value": obj, "version": version, "source": "db", "hit": False, "db_load": True, "schema": schema}
        return self._hit(json.loads(raw), schema)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        out = super().write(key, value)
        self.redis.delete(f"user:v1:{key}", f"user:v2:{key}")  # both generations: neither may serve the old value
        return out


class SchemaTtlCut(_SchemaBase):
    """Plain keys; the operator's TTL cut (``APP.ttl_cut``) shortens fills and live entries."""

    name: ClassVar[str] = "schema-ttl-cut"

    def __init__(self, ttl: float = 3.0, cut_ttl: float = 0.5, build: int = 0) -> None:
        super().__init__(ttl, build)
        self.cut_ttl_ms = int(positive({"cut_ttl": cut_ttl}, "cut_ttl", 0.5) * 1000)
        if self.cut_ttl_ms < 1:
            raise ParamError(f"cut_ttl must be at least 1 ms, got {cut_ttl}")
        if self.cut_ttl_ms > self.ttl_ms:
            raise ParamError(f"cut_ttl ({cut_ttl:g} s) must not be longer than ttl ({ttl:g} s): it is a cut")
        self._cut_done = False

    def _ttl_ms(self) -> int:
        return self.cut_ttl_ms if APP.ttl_cut else self.ttl_ms

    def _shorten_live_entries(self) -> None:
        """Once per run (a Redis flag): every live entry gets at most ``cut_ttl`` left."""
        if self._cut_done:
            return
        self._cut_done = True
        if not self.redis.set("schema:ttl-cut-done", 1, nx=True):
            return
        for k in self.redis.scan_iter(match="user:*", count=500):
            self.redis.pexpire(k, self.cut_ttl_ms, lt=True)

    def read(self, key: str) -> dict[str, Any]:
        if APP.ttl_cut:
            self._shorten_live_entries()
        return super().read(key)


class SchemaEventBump(_SchemaBase):
    """Key prefix ``user:p{N}:ID``; N is bumped by the migration's pub/sub event, per node."""

    name: ClassVar[str] = "schema-event-bump"

    def __init__(self, ttl: float = 3.0, build: int = 0) -> None:
        super().__init__(ttl, build)
        self.prefix_version = 1
        self.events = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ckey(self, key: str) -> str:
        return f"user:p{self.prefix_version}:{key}"

    def setup(self, env: Env) -> None:
        super().setup(env)
        self.prefix_version = int(self.redis.get(VERSION_KEY) or 1)  # a booting node reads the current config
        self._link = env.link("redis", f"sub{env.node}")
        self._ps = self._subscribe()
        self._thread = threading.Thread(target=self._loop, name=f"schema-sub-{env.node}", daemon=True)
        self._thread.start()

    def _subscribe(self) -> Any:
        client = redis_client(self._link, timeout=self.env.timeout)
        ps = client.pubsub()
        ps.subscribe(CHANNEL)
        deadline = time.monotonic() + self.env.timeout * 2
        while time.monotonic() < deadline:  # a subscription counts only once confirmed
            m = ps.get_message(timeout=0.05)
            if m and m["type"] == "subscribe":
                return ps
        ps.close()
        raise TimeoutError("no subscribe confirmation")

    def _loop(self) -> None:
        ps = self._ps
        while not self._stop.is_set():
            try:
                if ps is None:
                    ps = self._subscribe()  # naive: whatever was published meanwhile is gone
                m = ps.get_message(timeout=0.2)
            except (redis.RedisError, OSError, ValueError, AttributeError, TimeoutError):
                if ps is not None:
                    try:
                        ps.close()
                    except Exception:  # noqa: BLE001
                        pass
                ps = None
                self._stop.wait(0.2)
                continue
            if m and m["type"] == "message":
                self.events += 1
                try:
                    self.prefix_version = max(self.prefix_version, int(m["data"]))
                except ValueError:
                    pass
        if ps is not None:
            try:
                ps.close()
            except Exception:  # noqa: BLE001
                pass

    def read(self, key: str) -> dict[str, Any]:
        out = super().read(key)
        out["prefix"] = self.prefix_version
        return out

    def write(self, key: str, value: Any) -> dict[str, Any]:
        out = super().write(key, value)
        self.redis.delete(*(f"user:p{v}:{key}" for v in range(1, self.prefix_version + 2)))
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        super().close()


class SchemaDualRead(_SchemaBase):
    """Validate on read: an entry lacking a field the running code requires is a miss (refill)."""

    name: ClassVar[str] = "schema-dual-read"

    def _serve(self, key: str, cached: dict[str, Any], schema: int) -> dict[str, Any]:
        missing = missing_fields(cached["value"], schema)
        if missing:
            return self._from_db(key, schema, invalid_cached=missing)
        return self._hit(cached, schema)
