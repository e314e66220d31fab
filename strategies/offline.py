"""Offline-sync strategies (seed scenario 8): client replicas with a local SQLite cache of a server table.

Why this module exists: a mobile app keeps a local copy of a server table, learns of server changes
by push over a flaky link, goes offline, and lets the user edit while offline. The seed asks for a
sync design that converges and does not silently lose an edit when an offline edit and a server
edit collide. Each strategy instance is one client replica (an application node):

* local cache: an in-memory stdlib ``sqlite3`` database (tables ``local`` and ``outbox``);
* the server: PostgreSQL table ``items`` (value, per-key ``version``, version vector ``vv``,
  ``updated_at`` = server clock), plus the harness's ``item_log`` (every committed version with the
  version its editor had seen: ``base``) and ``sync_conflicts`` (conflicts a strategy detected);
* pushes: the server publishes every committed row on Redis channel ``cc:items``;
* the replica's link: its own proxies ``postgres.syncN`` and ``redis.syncN`` (``Env.link``), so a
  fault on them (``down``, ``reset_peer``, ``partition``) takes this client offline and no other.

A local edit (``write``) is acknowledged once committed to SQLite and queued in the outbox (chained
edits of one key while offline keep the server version the chain started from: ``base``); an
uploader thread sends the outbox whenever the link works. Server edits (``server-write``, another
device or the web app) commit on the server side (shared, unfaulted proxies) and are pushed. A
pushed or pulled row replaces the local row when it is newer, unless the key has a pending local
edit (the user's edit stays on screen until it is uploaded).

    offline-push-only    pushes only: whatever is pushed while the client is offline is never seen
    offline-delta-sync   pushes + on every reconnect, pull rows with ``updated_at`` > the last one
                         seen (minus ``overlap`` s, for commits that land out of timestamp order)
    offline-periodic     pushes + a delta pull every ``period`` s, whatever the link state
    offline-vv           pushes + delta sync on reconnect + version vectors: an upload whose vector
                         does not dominate the server's is a conflict, resolved by ``rule``
                         (``server-wins``, default: the server keeps its value, the local edit is
                         kept in ``sync_conflicts`` and the replica takes the server's row;
                         ``client-wins``: the local edit replaces it, the server's value is kept in
                         ``sync_conflicts``); either way the conflict is recorded, never silent

Uploads are idempotent (a retried upload whose first attempt committed is not applied twice; edits
are unique values, as an edit id would be). The first three upload blindly (last upload wins): an offline edit based on version 5 overwrites a
server edit at version 6 it never saw, and nothing records it — the lost edit the checker looks for.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any, ClassVar

import psycopg
import redis

from core.clients import Pg, close_quietly, redis_client, subscribe_confirmed
from strategies.base import DefiniteFailure, Env, ParamError, positive

CHANNEL = "cc:items"
RULES = ("server-wins", "client-wins")
LINK_ERRORS = (psycopg.Error, redis.RedisError, OSError, TimeoutError)


class ServerUnreachable(RuntimeError):
    """A replica cannot reach the server or the push channel at start."""


# -- the server side (what an API server would do), shared by all strategies --------------------
def _commit(conn: psycopg.Connection[Any], key: str, value: Any, vv: dict[str, int], base: int,
            origin: str) -> tuple[int, str]:
    """Write one row and its log entry in the caller's transaction; (version, updated_at)."""
    row = conn.execute(
        "insert into items as i (key, value, version, vv, updated_at) values (%s, %s, 1, %s, clock_timestamp()) "
        "on conflict (key) do update set value = excluded.value, version = i.version + 1, vv = excluded.vv, "
        "updated_at = clock_timestamp() returning version, updated_at::text",
        (key, json.dumps(value), json.dumps(vv))).fetchone()
    assert row is not None
    conn.execute("insert into item_log (key, version, value, base, origin) values (%s, %s, %s, %s, %s)",
                 (key, row[0], json.dumps(value), base, origin))
    return row[0], row[1]


def _current(conn: psycopg.Connection[Any], key: str) -> tuple[Any, int, dict[str, int]]:
    row = conn.execute("select value, version, vv from items where key = %s for update", (key,)).fetchone()
    return (row[0], row[1], dict(row[2] or {})) if row else (None, 0, {})


def server_edit(pg: Pg, key: str, value: Any) -> dict[str, Any]:
    """An edit made on the server: it sees the current row (base = current version)."""
    def tx(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        with conn.transaction():
            _old, version, vv = _current(conn, key)
            vv["server"] = vv.get("server", 0) + 1
            v, ts = _commit(conn, key, value, vv, version, "server")
        return {"key": key, "value": value, "version": v, "vv": vv, "ts": ts}
    return pg.run(tx)


def dominates(a: dict[str, int], b: dict[str, int]) -> bool:
    return all(a.get(k, 0) >= n for k, n in b.items())


# -- the client replica ----------------------------------------------------------------------------
class _Replica:
    name: ClassVar[str | None] = None
    sync_on_reconnect: ClassVar[bool] = False
    periodic: ClassVar[bool] = False
    vectors: ClassVar[bool] = False

    def __init__(self, overlap: float = 0.5, upload_every: float = 0.02, ping_every: float = 0.25,
                 period: float = 1.0, rule: str = "server-wins") -> None:
        self.overlap = positive({"overlap": overlap}, "overlap", 0.5, allow_zero=True)
        self.upload_every = positive({"upload_every": upload_every}, "upload_every", 0.02)
        self.ping_every = positive({"ping_every": ping_every}, "ping_every", 0.25)
        self.period = positive({"period": period}, "period", 1.0)
        if rule not in RULES:
            raise ParamError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.rule = rule
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.executescript(
            "create table local (key text primary key, value text, version integer, vv text);"
            "create table outbox (key text primary key, value text, base integer, vv text);")
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.since = ""  # server timestamp of the newest row seen (text, compared by the server)
        self.need_sync = threading.Event()
        self.stats = {"pushes": 0, "syncs": 0, "uploads": 0, "conflicts": 0, "reconnects": 0, "offline_s": 0.0}
        self.online = False
        self._offline_since: float | None = None

    # -- set-up and tear-down ---------------------------------------------------------------------
    def setup(self, env: Env) -> None:
        self.node = env.node
        self.me = f"n{env.node}"
        self.timeout = env.timeout
        self.link_pg = Pg(env.link("postgres", f"sync{env.node}"), timeout=env.timeout)
        self.link_redis = env.link("redis", f"sync{env.node}")
        self.server_pg = Pg(env.endpoints["postgres"], timeout=env.timeout)  # the server's own connections
        self.server_redis = redis_client(env.endpoints["redis"], timeout=env.timeout)
        self.ps: Any = None
        self.client: Any = None
        try:
            self._subscribe()  # before the first pull, so nothing committed in between is missed
            self._pull(full=True)
        except LINK_ERRORS as e:
            self._drop()
            raise ServerUnreachable(f"replica {self.node} cannot reach the server over its link "
                                    f"(postgres.sync{self.node}, redis.sync{self.node}): {type(e).__name__}: {e}") from None
        self.online = True
        self._spawn(self._listen, "push")
        self._spawn(self._upload_loop, "upload")
        if self.periodic:
            self._spawn(self._periodic_loop, "periodic")

    def _spawn(self, fn: Any, what: str) -> None:
        t = threading.Thread(target=fn, name=f"replica{self.node}-{what}", daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=3)
        self._drop()
        for c in (self.link_pg, self.server_pg, self.server_redis):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    # -- the push channel ---------------------------------------------------------------------------
    def _subscribe(self) -> None:
        self.client = redis_client(self.link_redis, timeout=self.timeout)
        self.ps = subscribe_confirmed(self.client, CHANNEL, self.timeout)

    def _drop(self) -> None:
        ps, self.ps = self.ps, None
        close_quietly(ps, self.client)

    def _set_online(self, up: bool) -> None:
        if up == self.online:
            return
        self.online = up
        now = time.monotonic()
        if not up:
            self._offline_since = now
        else:
            if self._offline_since is not None:
                self.stats["offline_s"] += now - self._offline_since
            self._offline_since = None
            self.stats["reconnects"] += 1
            if self.sync_on_reconnect:
                self.need_sync.set()

    def _listen(self) -> None:
        last_pong = time.monotonic()
        next_ping = 0.0
        while not self.stop.is_set():
            try:
                if self.ps is None:
                    self._subscribe()
                    last_pong = time.monotonic()
                    self._set_online(True)
                now = time.monotonic()
                if now >= next_ping:
                    self.ps.ping()
                    next_ping = now + self.ping_every
                if now - last_pong > max(1.0, 4 * self.ping_every):
                    raise TimeoutError("push link silent")  # a black hole: no error, no pong
                m = self.ps.get_message(timeout=0.05)
            except (*LINK_ERRORS, ValueError, AttributeError):
                self._drop()
                self._set_online(False)
                self.stop.wait(0.1)
                continue
            if not m:
                continue
            if m["type"] == "pong":
                last_pong = time.monotonic()
            elif m["type"] == "message":
                self.stats["pushes"] += 1
                self._apply_remote(json.loads(m["data"]))

    # -- local state ----------------------------------------------------------------------------------
    def _apply_remote(self, row: dict[str, Any]) -> None:
        with self.lock:
            if self.db.execute("select 1 from outbox where key = ?", (row["key"],)).fetchone():
                return  # a pending local edit stays on screen until it is uploaded
            cur = self.db.execute("select version from local where key = ?", (row["key"],)).fetchone()
            if cur is None or row["version"] > cur[0]:
                self.db.execute("insert or replace into local values (?, ?, ?, ?)",
                                (row["key"], json.dumps(row["value"]), row["version"], json.dumps(row.get("vv") or {})))

    def _pull(self, full: bool = False) -> int:
        if full or not self.since:
            rows = self.link_pg.execute("select key, value, version, vv, updated_at::text from items")
        else:
            rows = self.link_pg.execute(
                "select key, value, version, vv, updated_at::text from items "
                "where updated_at > %s::timestamptz - make_interval(secs => %s)", (self.since, self.overlap))
        newest = self.since
        for key, value, version, vv, ts in rows:
            self._apply_remote({"key": key, "value": value, "version": version, "vv": vv, "ts": ts})
            newest = max(newest, ts)
        self.since = newest  # only pulls advance it: a push seen after a gap says nothing about the gap
        self.stats["syncs"] += 1
        return len(rows)

    # -- uploads ----------------------------------------------------------------------------------------
    def _upload_loop(self) -> None:
        while not self.stop.wait(self.upload_every):
            try:
                if self.need_sync.is_set():
                    self._pull()
                    self.need_sync.clear()
                with self.lock:
                    pending = self.db.execute("select key, value, base, vv from outbox").fetchall()
                for key, value, base, vv in pending:
                    if self.stop.is_set():
                        return
                    self._upload(key, json.loads(value), base, json.loads(vv))
            except LINK_ERRORS:
                continue

    def _periodic_loop(self) -> None:
        while not self.stop.wait(self.period):
            try:
                self._pull()
            except LINK_ERRORS:
                continue

    def _upload(self, key: str, value: Any, base: int, vv: dict[str, int]) -> None:
        def tx(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], bool]:
            with conn.transaction():
                cur_value, cur_version, cur_vv = _current(conn, key)
                if cur_value == value and cur_version > base:
                    # a retry of an upload that committed but whose reply was lost (the link reset):
                    # idempotent, since every edit's value is unique
                    ts = conn.execute("select updated_at::text from items where key = %s", (key,)).fetchone()
                    return {"key": key, "value": cur_value, "version": cur_version, "vv": cur_vv,
                            "ts": ts[0] if ts else ""}, False
                if not self.vectors or dominates(vv, cur_vv):
                    new_vv = {k: max(vv.get(k, 0), cur_vv.get(k, 0)) for k in {*vv, *cur_vv}}
                    v, ts = _commit(conn, key, value, new_vv, base, self.me)
                    return {"key": key, "value": value, "version": v, "vv": new_vv, "ts": ts}, False
                # concurrent: neither saw the other. Resolve by the stated rule and record it.
                if self.rule == "server-wins":
                    conn.execute("insert into sync_conflicts (key, winner, loser, loser_origin, rule, node, "
                                 "server_version) values (%s, %s, %s, %s, %s, %s, %s)",
                                 (key, json.dumps(cur_value), json.dumps(value), self.me, self.rule, self.node,
                                  cur_version))
                    ts = conn.execute("select updated_at::text from items where key = %s", (key,)).fetchone()
                    return {"key": key, "value": cur_value, "version": cur_version, "vv": cur_vv,
                            "ts": ts[0] if ts else ""}, True
                conn.execute("insert into sync_conflicts (key, winner, loser, loser_origin, rule, node, "
                             "server_version) values (%s, %s, %s, %s, %s, %s, %s)",
                             (key, json.dumps(value), json.dumps(cur_value), "server", self.rule, self.node,
                              cur_version))
                new_vv = {k: max(vv.get(k, 0), cur_vv.get(k, 0)) for k in {*vv, *cur_vv}}
                v, ts = _commit(conn, key, value, new_vv, base, self.me)
                return {"key": key, "value": value, "version": v, "vv": new_vv, "ts": ts}, True

        row, conflict = self.link_pg.run(tx)
        self.stats["uploads"] += 1
        self.stats["conflicts"] += conflict
        with self.lock:
            cur = self.db.execute("select value from outbox where key = ?", (key,)).fetchone()
            if cur is not None and json.loads(cur[0]) == value:
                self.db.execute("delete from outbox where key = ?", (key,))
            if cur is not None and json.loads(cur[0]) != value:
                if not conflict:  # edited again meanwhile: the next upload builds on the version this one made
                    self.db.execute("update outbox set base = ? where key = ?", (row["version"], key))
            else:
                self.db.execute("insert or replace into local values (?, ?, ?, ?)",
                                (key, json.dumps(row["value"]), row["version"], json.dumps(row["vv"])))
        try:  # the server announces the committed row (its own connection: the client's link is not involved)
            self.server_redis.publish(CHANNEL, json.dumps(row))
        except LINK_ERRORS:
            pass

    # -- the strategy interface -----------------------------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        with self.lock:
            row = self.db.execute("select value, version from local where key = ?", (key,)).fetchone()
            pending = self.db.execute("select 1 from outbox where key = ?", (key,)).fetchone() is not None
        out: dict[str, Any] = {"source": "cache", "hit": row is not None, "pending": pending,
                               "online": self.online, "sync": dict(self.stats)}
        if row is None:
            return out | {"value": None, "version": 0}
        out["value"] = json.loads(row[0])
        if not pending:
            out["version"] = row[1]  # a pending local edit has no server version yet
        return out

    def write(self, key: str, value: Any) -> dict[str, Any]:
        """A local edit: committed to SQLite and queued for upload; acknowledged offline too."""
        with self.lock:
            row = self.db.execute("select value, version, vv from local where key = ?", (key,)).fetchone()
            prev, version, vv = (json.loads(row[0]), row[1], json.loads(row[2] or "{}")) if row else (None, 0, {})
            queued = self.db.execute("select base from outbox where key = ?", (key,)).fetchone()
            base = queued[0] if queued else version
            vv[self.me] = vv.get(self.me, 0) + 1
            self.db.execute("insert or replace into local values (?, ?, ?, ?)",
                            (key, json.dumps(value), version, json.dumps(vv)))
            self.db.execute("insert or replace into outbox values (?, ?, ?, ?)",
                            (key, json.dumps(value), base, json.dumps(vv)))
        return {"prev": prev, "base": base, "online": self.online}

    def server_write(self, key: str, value: Any) -> dict[str, Any]:
        """An edit made on the server (another device, the web app): committed, then pushed."""
        try:
            row = server_edit(self.server_pg, key, value)
        except psycopg.OperationalError as e:
            if "connect" in str(e).lower():
                raise DefiniteFailure(f"server unreachable: {e}") from None
            raise
        try:
            self.server_redis.publish(CHANNEL, json.dumps(row))
        except LINK_ERRORS:
            pass
        return {"version": row["version"]}


class PushOnly(_Replica):
    name: ClassVar[str] = "offline-push-only"


class DeltaSync(_Replica):
    name: ClassVar[str] = "offline-delta-sync"
    sync_on_reconnect = True


class PushPeriodic(_Replica):
    name: ClassVar[str] = "offline-periodic"
    periodic = True


class VersionVectors(_Replica):
    name: ClassVar[str] = "offline-vv"
    sync_on_reconnect = True
    vectors = True
