"""Thundering-herd strategies (seed scenario 7): what happens when a hot key expires under load.

A hot key expires; every concurrent reader misses at once and, unless something coalesces them,
all of them query a slow DB and all set the cache ("100 concurrent requests -> 100 DB hits"). The
strategies here are the seed's answers, each over the same Redis + PostgreSQL ``kv`` data:

    herd-none           plain cache-aside: a miss goes to the DB (the herd)
    herd-lock           request coalescing: ``SET lock NX PX`` + waiters polling the cache;
                        optional fencing token so a holder that outlived its lock cannot set late
    herd-single-flight  in-process single-flight: one DB fetch per key per *node*, shared by futures
    herd-xfetch         probabilistic early refresh (XFetch, Vattani et al.), beta configurable
    herd-lease          memcache-style leases: the first misser gets a token, the others wait; a
                        set is accepted only with the live token (a write's delete revokes it)

Instrumentation shared by all, so the herd can be counted *exactly* rather than guessed from
timing: every cache fill is a Lua script that takes a fill id (``INCR``), stores it in the value
and in a never-expiring ``last`` marker. A reader that misses reads the marker in the same round
trip as the value: all loads that found fill N gone (expired or deleted) report ``epoch: N``, so
"DB loads per expiry" is the number of ``db_load`` reads per (key, epoch); epoch 0 is the cold
start. Early refreshes report the epoch of the fill they refresh. Every read also reports the
``fill`` id of the value it returned, so a fill that put an *older* version than an earlier fill
(a late, stale set) is visible in the history.

Writes commit to the DB and, by default, leave the cache alone: hot "soft" data refreshed by its
TTL (the seed's lazy-load cache), so every herd is an expiry herd. With ``invalidate=true`` a write
also deletes the key (cache-aside), an invalidation event counted like an expiry of the deleted
fill (and, for leases, a revocation of the outstanding lease).

The follow-up (the lock holder dies mid-fetch) is modelled with ``stall_at``/``stall_for``/
``stall_node``: the first lock (or lease) holder after ``stall_at`` seconds stalls for
``stall_for`` seconds between its DB read and its cache set, as a process in a long GC pause or a
hung one would (any node unless ``stall_node`` is given; once per run, marked in ``herd:stalled``).
Killing that node during the stall (the workload's ``kill-holder`` step) means the set never
happens; without it the holder wakes up after its lock expired and sets late. The workload's
holder steps arm that stall themselves (``arm_stall``) when the run did not configure one, so its
plans bite with the defaults.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from typing import Any, ClassVar

from strategies.base import Env, ParamError, positive

FILL = """
local token = tonumber(ARGV[3])
if token then
  local seen = tonumber(redis.call('GET', KEYS[4]) or '0')
  if token < seen then return -1 end
  redis.call('SET', KEYS[4], token)
end
local id = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1] .. ',"fill":' .. id .. '}', 'PX', ARGV[2])
redis.call('SET', KEYS[2], id)
return id
"""

LEASE_GET = """
local v = redis.call('GET', KEYS[1])
local last = redis.call('GET', KEYS[2]) or '0'
if v then return {1, v} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {2, last} end
local t = redis.call('INCR', KEYS[4])
redis.call('SET', KEYS[3], t, 'PX', ARGV[1])
return {3, last, t}
"""

LEASE_FILL = """
if redis.call('GET', KEYS[4]) ~= ARGV[3] then return -1 end
redis.call('DEL', KEYS[4])
local id = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1] .. ',"fill":' .. id .. '}', 'PX', ARGV[2])
redis.call('SET', KEYS[2], id)
return id
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _flag(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


class _HerdBase:
    """Cache-aside over ``kv`` with instrumented fills (fill ids, epochs); the ``herd-none`` read.
    Not a strategy by itself (no ``name``), so discovery skips it and its abstract subclasses."""

    name: ClassVar[str | None] = None

    def __init__(self, ttl: float = 1.0, fetch_timeout: float = 1.0, prefix: str = "herd:",
                 invalidate: Any = False) -> None:
        self.invalidate = _flag(invalidate)
        self.ttl_ms = int(positive({"ttl": ttl}, "ttl", 1.0) * 1000)
        if self.ttl_ms < 1:
            raise ParamError(f"ttl must be at least 1 ms, got {ttl}")
        self.fetch_timeout = positive({"fetch_timeout": fetch_timeout}, "fetch_timeout", 1.0)
        self.prefix = prefix
        self._closed = threading.Event()

    # -- plumbing ---------------------------------------------------------------------------
    def setup(self, env: Env) -> None:
        self.env = env
        self.node = env.node
        self.t_setup = time.monotonic()
        self.redis = env.redis()
        self.pg = env.pg()
        self._fill_script = self.redis.register_script(FILL)

    def k(self, key: str, part: str = "") -> str:
        return f"{self.prefix}{key}{':' + part if part else ''}"

    def _get(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """The cached entry (or None) and the id of the last fill, in one round trip."""
        raw, last = self.redis.mget(self.k(key), self.k(key, "last"))
        return (json.loads(raw) if raw is not None else None), int(last or 0)

    def _load(self, key: str) -> tuple[Any, int]:
        rows = self.pg.execute("select value, version from kv where key = %s", (key,), timeout=self.fetch_timeout)
        return (rows[0][0], rows[0][1]) if rows else (None, 0)

    def _payload(self, value: Any, version: int, **extra: Any) -> str:
        return json.dumps({"value": value, "version": version, **extra}, separators=(",", ":"))[:-1]

    def _fill(self, key: str, value: Any, version: int, token: int | None = None, **extra: Any) -> int:
        """Set the cache (with a new fill id); -1 if a fencing token says a newer holder got there first."""
        keys = [self.k(key), self.k(key, "last"), self.k(key, "fills"), self.k(key, "seen")]
        return int(self._fill_script(keys=keys, args=[self._payload(value, version, **extra), self.ttl_ms,
                                                      "" if token is None else token]))

    @staticmethod
    def _hit(cached: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"value": cached["value"], "version": cached["version"], "source": "cache", "hit": True,
                "fill": cached.get("fill"), **extra}

    def _loaded(self, key: str, epoch: int, token: int | None = None, **extra: Any) -> dict[str, Any]:
        value, version = self._load(key)
        fill = self._fill(key, value, version, token)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                "epoch": epoch, "fill": fill, **({"rejected": True} if fill < 0 else {}), **extra}

    # -- the strategy -----------------------------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        cached, last = self._get(key)
        if cached is not None:
            return self._hit(cached)
        return self._loaded(key, last)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        rows = self.pg.execute(
            "insert into kv (key, value, version) values (%s, %s, 1) on conflict (key) do update "
            "set value = excluded.value, version = kv.version + 1 returning version", (key, json.dumps(value)))
        if self.invalidate:
            self.redis.delete(self.k(key))
        return {"version": rows[0][0]}

    def close(self) -> None:
        self._closed.set()
        self.redis.close()


class HerdNone(_HerdBase):
    """Plain cache-aside: every reader that misses goes to the DB."""

    name: ClassVar[str] = "herd-none"


class _Waiting(_HerdBase):
    """Shared by lock and lease: waiters poll the cache; a holder may be made to stall (follow-up)."""

    def __init__(self, ttl: float = 1.0, fetch_timeout: float = 1.0, poll: float = 0.02,
                 max_wait: float | None = None, stall_at: float | None = None, stall_for: float = 10.0,
                 stall_node: int | None = None, prefix: str = "herd:", invalidate: Any = False) -> None:
        super().__init__(ttl, fetch_timeout, prefix, invalidate)
        self.poll = positive({"poll": poll}, "poll", 0.02)
        self.max_wait = None if max_wait is None else positive({"max_wait": max_wait}, "max_wait", 1.0)
        self.stall_at = None if stall_at is None else positive({"stall_at": stall_at}, "stall_at", 0, allow_zero=True)
        self.stall_for = positive({"stall_for": stall_for}, "stall_for", 10.0)
        try:
            self.stall_node = None if stall_node is None else int(stall_node)
        except (TypeError, ValueError):
            raise ParamError(f"stall_node must be a node number, got {stall_node!r}") from None

    hold_ttl: float  # how long the lock (lease) holds: set by each subclass

    def arm_stall(self, stall_for: float | None = None) -> bool:
        """Make the next lock (lease) holder stall mid-fetch from now on (for ``stall_for`` s), as the
        workload's holder steps do. A stall the run configured (``stall_at``) is left as it is.
        Returns whether this call armed one."""
        if self.stall_at is not None:
            return False
        if stall_for is not None:
            self.stall_for = positive({"stall_for": stall_for}, "stall_for", 10.0)
        self.stall_at = time.monotonic() - self.t_setup
        return True

    def _maybe_stall(self) -> float:
        """Stall mid-fetch if this is the chosen holder; raise if the node is crashed meanwhile."""
        if (self.stall_at is None or (self.stall_node is not None and self.node != self.stall_node)
                or time.monotonic() - self.t_setup < self.stall_at
                or not self.redis.set(f"{self.prefix}stalled", self.node, nx=True)):
            return 0.0
        t0 = time.monotonic()
        if self._closed.wait(self.stall_for):
            raise ConnectionError("node crashed mid-fetch while holding the lock/lease: the set never happens")
        return (time.monotonic() - t0) * 1000

    def _wait_budget(self, hold_ttl: float) -> float:
        return self.max_wait if self.max_wait is not None else hold_ttl + self.fetch_timeout


class HerdLock(_Waiting):
    """Request coalescing with ``SET lock token NX PX lock_ttl``; the others poll the cache.

    The lock's value is a fencing token (``INCR``); with ``fencing=true`` the fill script rejects a
    set whose token is older than one already used, so a holder that outlived its lock cannot
    overwrite a newer value. A waiter that waits longer than ``max_wait`` (default lock_ttl +
    fetch_timeout) loads from the DB itself (``fallback``).
    """

    name: ClassVar[str] = "herd-lock"

    def __init__(self, ttl: float = 1.0, lock_ttl: float = 3.0, fetch_timeout: float = 1.0, poll: float = 0.02,
                 max_wait: float | None = None, fencing: Any = False, stall_at: float | None = None,
                 stall_for: float = 10.0, stall_node: int | None = None, prefix: str = "herd:",
                 invalidate: Any = False) -> None:
        super().__init__(ttl, fetch_timeout, poll, max_wait, stall_at, stall_for, stall_node, prefix, invalidate)
        self.lock_ttl = self.hold_ttl = positive({"lock_ttl": lock_ttl}, "lock_ttl", 3.0)
        if self.lock_ttl <= self.fetch_timeout:
            raise ParamError(f"lock_ttl ({self.lock_ttl:g} s) must be longer than fetch_timeout "
                             f"({self.fetch_timeout:g} s): a lock that expires mid-fetch lets a second loader in "
                             "and the first one's late set can overwrite a newer value")
        self.fencing = _flag(fencing)

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._release = self.redis.register_script(RELEASE)

    def read(self, key: str) -> dict[str, Any]:
        t0 = time.monotonic()
        cached, last = self._get(key)
        if cached is not None:
            return self._hit(cached)
        deadline = t0 + self._wait_budget(self.lock_ttl)
        while True:
            token = int(self.redis.incr(self.k(key, "token")))
            if self.redis.set(self.k(key, "lock"), token, nx=True, px=int(self.lock_ttl * 1000)):
                try:
                    # filled between our miss and our lock? (and which fill's end are we refilling now)
                    again, last = self._get(key)
                    waited = round((time.monotonic() - t0) * 1000, 1)
                    if again is not None:
                        return self._hit(again, hit=False, waited_ms=waited)
                    value, version = self._load(key)
                    stalled = self._maybe_stall()
                    fill = self._fill(key, value, version, token if self.fencing else None)
                    out = {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                           "epoch": last, "fill": fill, "token": token, "waited_ms": waited}
                    if fill < 0:
                        out["rejected"] = True
                    if stalled:
                        out["stalled_ms"] = round(stalled, 1)
                    return out
                finally:
                    if not self._closed.is_set():  # a crashed process runs no clean-up: only the TTL frees it
                        try:
                            self._release(keys=[self.k(key, "lock")], args=[token])
                        except Exception:  # noqa: BLE001 - the lock's TTL frees it
                            pass
            time.sleep(self.poll)
            cached, _ = self._get(key)
            waited = round((time.monotonic() - t0) * 1000, 1)
            if cached is not None:
                return self._hit(cached, hit=False, coalesced=True, waited_ms=waited)
            if time.monotonic() > deadline:
                return self._loaded(key, last, fallback=True, waited_ms=waited)


class _Flight:
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None


class HerdSingleFlight(_HerdBase):
    """In-process single-flight: concurrent misses of one key on one node share one DB fetch.

    Coalesces per node only: with N nodes an expiry costs up to N DB loads.
    """

    name: ClassVar[str] = "herd-single-flight"

    def __init__(self, ttl: float = 1.0, fetch_timeout: float = 1.0, prefix: str = "herd:",
                 invalidate: Any = False) -> None:
        super().__init__(ttl, fetch_timeout, prefix, invalidate)
        self._mu = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def read(self, key: str) -> dict[str, Any]:
        t0 = time.monotonic()
        cached, last = self._get(key)
        if cached is not None:
            return self._hit(cached)
        with self._mu:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            if not flight.done.wait(self.fetch_timeout + 1.0):
                raise TimeoutError("single-flight leader did not finish")
            if flight.error is not None or flight.result is None:
                raise RuntimeError(f"single-flight leader failed: {flight.error!r}")
            r = flight.result
            return {"value": r["value"], "version": r["version"], "source": "flight", "hit": False,
                    "coalesced": True, "fill": r.get("fill"), "waited_ms": round((time.monotonic() - t0) * 1000, 1)}
        try:
            again, last = self._get(key)
            flight.result = self._hit(again, hit=False) if again is not None else self._loaded(key, last)
            return flight.result
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._mu:
                self._flights.pop(key, None)
            flight.done.set()


class HerdXFetch(_HerdBase):
    """Probabilistic early refresh (XFetch): refresh when ``now - delta*beta*ln(U) >= expiry``.

    ``delta`` is the measured recompute time stored with the value; ``beta`` > 1 refreshes earlier,
    < 1 later. A reader that wins the draw recomputes synchronously while the others keep hitting
    the still-cached value; only a real expiry (nobody drew in time) makes a herd.
    """

    name: ClassVar[str] = "herd-xfetch"

    def __init__(self, ttl: float = 1.0, beta: float = 1.0, fetch_timeout: float = 1.0, prefix: str = "herd:",
                 invalidate: Any = False) -> None:
        super().__init__(ttl, fetch_timeout, prefix, invalidate)
        try:
            self.beta = float(beta)
        except (TypeError, ValueError):
            raise ParamError(f"beta must be a number, got {beta!r}") from None
        if not self.beta > 0 or math.isinf(self.beta):
            raise ParamError(f"beta must be > 0 (and finite), got {beta!r}: with beta <= 0 nobody ever refreshes "
                             "early and every expiry is a herd")
        self._rng = random.Random()

    def _refresh(self, key: str, epoch: int, **extra: Any) -> dict[str, Any]:
        t0 = time.monotonic()
        value, version = self._load(key)
        delta = (time.monotonic() - t0) * 1000
        exp = time.time() * 1000 + self.ttl_ms
        fill = self._fill(key, value, version, delta=round(delta, 2), exp=round(exp, 1))
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                "epoch": epoch, "fill": fill, **extra}

    def read(self, key: str) -> dict[str, Any]:
        cached, last = self._get(key)
        if cached is None:
            return self._refresh(key, last)
        delta, exp = cached.get("delta", 0.0), cached.get("exp", 0.0)
        if time.time() * 1000 - delta * self.beta * math.log(1.0 - self._rng.random()) >= exp:
            return self._refresh(key, int(cached.get("fill") or last), early=True)
        return self._hit(cached)


class HerdLease(_Waiting):
    """Memcache-style leases: a miss grants a token to one reader (the others get a "hot miss" and
    poll); the set succeeds only while that token is the live lease. A write deletes the value *and*
    the lease, so a loader that read the DB before the write cannot set its stale value after it."""

    name: ClassVar[str] = "herd-lease"

    def __init__(self, ttl: float = 1.0, lease_ttl: float = 3.0, fetch_timeout: float = 1.0, poll: float = 0.02,
                 max_wait: float | None = None, stall_at: float | None = None, stall_for: float = 10.0,
                 stall_node: int | None = None, prefix: str = "herd:", invalidate: Any = False) -> None:
        super().__init__(ttl, fetch_timeout, poll, max_wait, stall_at, stall_for, stall_node, prefix, invalidate)
        self.lease_ttl = self.hold_ttl = positive({"lease_ttl": lease_ttl}, "lease_ttl", 3.0)
        if self.lease_ttl <= self.fetch_timeout:
            raise ParamError(f"lease_ttl ({self.lease_ttl:g} s) must be longer than fetch_timeout "
                             f"({self.fetch_timeout:g} s): a lease that expires mid-fetch is granted twice")

    def setup(self, env: Env) -> None:
        super().setup(env)
        self._lease_get = self.redis.register_script(LEASE_GET)
        self._lease_fill = self.redis.register_script(LEASE_FILL)

    def read(self, key: str) -> dict[str, Any]:
        t0 = time.monotonic()
        deadline = t0 + self._wait_budget(self.lease_ttl)
        keys = [self.k(key), self.k(key, "last"), self.k(key, "lease"), self.k(key, "token")]
        first = True
        epoch = 0
        while True:
            r = self._lease_get(keys=keys, args=[int(self.lease_ttl * 1000)])
            waited = round((time.monotonic() - t0) * 1000, 1)
            if int(r[0]) == 1:
                cached = json.loads(r[1])
                return self._hit(cached) if first else self._hit(cached, hit=False, coalesced=True, waited_ms=waited)
            first = False
            epoch = int(r[1])  # the last fill, as of this call: the one whose end we would be refilling
            if int(r[0]) == 3:
                token = int(r[2])
                value, version = self._load(key)
                stalled = self._maybe_stall()
                fill = int(self._lease_fill(keys=[self.k(key), self.k(key, "last"), self.k(key, "fills"),
                                                  self.k(key, "lease")],
                                            args=[self._payload(value, version), self.ttl_ms, token]))
                out = {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                       "epoch": epoch, "fill": fill, "token": token, "waited_ms": waited}
                if fill < 0:
                    out["rejected"] = True
                if stalled:
                    out["stalled_ms"] = round(stalled, 1)
                return out
            if time.monotonic() > deadline:
                value, version = self._load(key)  # give up waiting: serve from the DB, don't set
                return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True,
                        "epoch": epoch, "fallback": True, "waited_ms": waited}
            time.sleep(self.poll)

    def write(self, key: str, value: Any) -> dict[str, Any]:
        out = super().write(key, value)
        if self.invalidate:
            self.redis.delete(self.k(key, "lease"))  # revoke any outstanding lease: its holder read old data
        return out
