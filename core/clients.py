"""Client connections for strategies and workloads, always through the proxies, always bounded.

A fault must never wedge a worker: a black-holed link (Toxiproxy ``timeout`` toxic) leaves a plain
client blocked in ``recv`` forever. Redis clients get socket timeouts. libpq has no read timeout
at all, so every PostgreSQL call runs under the watchdog: a single thread that, when an operation
passes its deadline, shuts the connection's socket down, which makes the blocked call fail at
once; the connection is then thrown away and the next call reconnects.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.access import lookup


def host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


class ThreadPool(redis.ConnectionPool):
    """A connection pool that gives each thread its own connection, kept between commands.

    Why: a strategy's client is shared by a node's worker threads, and for every command redis-py's
    pool takes its lock twice (get, release) and asks the connection whether it has unread data (a
    ``select``). At 8 threads that, not Redis, set the pace (``benchmarks/run_engine_bench.py``).
    A thread's own connection needs none of it: its commands run one after another, and redis-py
    drops a connection on any error (a timeout, a reset, even an interrupt: ``read_response``,
    ``_disconnect_raise``), so a reply that comes after its command gave up is never read as the
    next one's. Anything that holds a connection apart (pub/sub) goes through the ordinary pool; a
    pipeline runs on the thread's connection, as its commands run in that thread.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._mine = threading.local()
        self._owned: list[Any] = []
        self._owner_pid = os.getpid()

    def get_connection(self, command_name: str | None = None, *keys: Any, **options: Any) -> Any:
        if command_name == "pubsub":
            return super().get_connection(command_name, *keys, **options)
        if self._owner_pid != os.getpid():  # a forked child: its parent's connections are not its own
            self._mine, self._owned, self._owner_pid = threading.local(), [], os.getpid()
        conn = getattr(self._mine, "conn", None)
        if conn is None:
            with self._lock:
                conn = self._mine.conn = self.make_connection()
                self._owned.append(conn)
        conn.connect()  # at once when connected
        return conn

    def release(self, connection: Any) -> None:
        if getattr(self._mine, "conn", None) is not connection:
            super().release(connection)

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        with self._lock:
            owned = list(self._owned)
        for conn in owned:
            conn.disconnect()


def redis_client(endpoint: str, timeout: float = 2.0, **kw: Any) -> redis.Redis:
    """A Redis client that never retries on its own (the strategy decides), never blocks forever, and
    gives each thread its own connection (``ThreadPool``)."""
    host, port = host_port(endpoint)
    acc = lookup(endpoint)  # a server cachecert did not start: credentials, TLS, the run's namespace
    extra = acc.redis_kwargs() if acc is not None else {}
    pool = ThreadPool(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                      retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0, **extra, **kw)
    return redis.Redis.from_pool(pool)  # close() disconnects the pool's connections


SENTINEL_SERVICE = "mymaster"


def sentinel_master(endpoints: dict[str, str], timeout: float = 2.0, service: str = SENTINEL_SERVICE,
                    follow_s: float | None = None, **kw: Any) -> redis.Redis:
    """A client of whichever node the Sentinels (``sentinel-*`` in ``endpoints``) name as primary,
    bounded like ``redis_client`` (socket timeouts, no retry of its own). A connection asks the
    Sentinels at connect time; a connection that stays open keeps talking to the node it reached (as
    real clients do: that is how a partitioned old primary keeps taking writes), until the node
    answers READONLY (it was demoted) and the next connect asks again. ``follow_s``: also ask the
    Sentinels every that many seconds and, when they name a new primary, close the connections to
    the old one (idle ones at once, busy ones when their command returns), as clients that listen for
    Sentinel's ``+switch-master`` do (Jedis, Lettuce); ``close()`` stops that.

    Sentinel hands out each node's cluster-side address (harness/services/redis_ha.py); it is
    translated to that node's client proxy, learnt from ``replica-announce-port`` of the redis nodes
    in ``endpoints`` (at first, and again for an address not learnt yet), so a client keeps going
    through its own proxies."""
    from redis.sentinel import Sentinel

    translate: dict[tuple[str, int], tuple[str, int]] = {}

    def learn() -> None:
        for name, ep in endpoints.items():
            if (name == "redis" or name.startswith("redis-")) and host_port(ep) not in translate.values():
                c = redis_client(ep, timeout=timeout)
                try:
                    announced = c.config_get("replica-announce-port").get("replica-announce-port")
                    if announced and int(announced):
                        translate[("127.0.0.1", int(announced))] = host_port(ep)
                except (redis.RedisError, OSError, ValueError):
                    pass  # down now: asked again when Sentinel names an address not learnt yet
                finally:
                    c.close()

    learn()

    class _Translating(Sentinel):
        def discover_master(self, service_name: str) -> tuple[str, int]:
            host, port = super().discover_master(service_name)
            if (host, int(port)) not in translate:
                learn()  # a node that was down at first (else used as given: still a proxy)
            return translate.get((host, int(port)), (host, int(port)))

    sentinels = [host_port(ep) for name, ep in sorted(endpoints.items()) if name.startswith("sentinel-")]
    if not sentinels:
        raise ValueError("no sentinel-* endpoints: this cluster has no Sentinels (topology redis=sentinel)")
    bound = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    s = _Translating(sentinels, sentinel_kwargs={**bound, "retry": Retry(NoBackoff(), 0)}, **bound)
    stop = threading.Event()

    class _Following(redis.Redis):
        def close(self) -> None:
            stop.set()
            super().close()

    client = s.master_for(service, redis_class=_Following, retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                          health_check_interval=0, **kw)
    if follow_s:
        pool = client.connection_pool

        def follow() -> None:
            while not stop.wait(follow_s):
                try:
                    pool.get_master_address()  # a new address disconnects the old one's connections
                except (redis.RedisError, OSError):
                    pass  # no primary named right now (a failover in progress): keep the last one

        threading.Thread(target=follow, name="sentinel-follow", daemon=True).start()
    return client


class Watchdog:
    """Shuts down sockets whose operation ran past its deadline (one daemon thread per process)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []  # (deadline, token, fd)
        self._live: dict[int, int] = {}
        self._ids = itertools.count()
        self._cv = threading.Condition()
        threading.Thread(target=self._loop, name="watchdog", daemon=True).start()

    @contextmanager
    def guard(self, fd: int, timeout: float) -> Iterator[None]:
        token = next(self._ids)
        with self._cv:
            self._live[token] = fd
            heapq.heappush(self._heap, (time.monotonic() + timeout, token, fd))
            self._cv.notify()
        try:
            yield
        finally:
            with self._cv:
                self._live.pop(token, None)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline, token, fd = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cv.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                expired = self._live.pop(token, None) is not None
            if expired:
                _shutdown(fd)


def _shutdown(fd: int) -> None:
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


_watchdog: Watchdog | None = None
_watchdog_lock = threading.Lock()


def watchdog() -> Watchdog:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None:
            _watchdog = Watchdog()
        return _watchdog


class Pg:
    """Thread-local PostgreSQL connections (autocommit) through a proxy, each call time-bounded.

    ``pg.run(fn)`` calls ``fn(conn)`` on this thread's connection under the watchdog; on any
    connection-level error the connection is discarded so the next call reconnects.
    """

    def __init__(self, endpoint: str, timeout: float = 2.0, dbname: str = "postgres") -> None:
        self.host, self.port = host_port(endpoint)
        self.timeout = timeout
        self.dbname = dbname
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _conn(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            acc = lookup(f"{self.host}:{self.port}")  # external: credentials, TLS, search_path = the run's schema
            where = acc.pg_kwargs(self.host, self.port) if acc is not None else \
                {"host": self.host, "port": self.port, "user": "postgres", "dbname": self.dbname}
            conn = psycopg.connect(**where, autocommit=True, connect_timeout=max(1, int(self.timeout + 0.999)))
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def run(self, fn: Any, timeout: float | None = None) -> Any:
        conn = self._conn()
        try:
            with watchdog().guard(conn.fileno(), self.timeout if timeout is None else timeout):
                return fn(conn)
        except psycopg.OperationalError:
            self._discard(conn)
            raise
        except psycopg.Error:
            if conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._discard(conn)
            raise

    def execute(self, sql: str, params: Any = None, timeout: float | None = None) -> list[tuple[Any, ...]]:
        def q(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

        return self.run(q, timeout)

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        self._local.conn = None
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


def subscribe_confirmed(client: redis.Redis, channel: str, timeout: float) -> Any:
    """A pub/sub on ``channel`` that counts only once Redis confirmed the subscription (a message
    published before that would be lost silently); TimeoutError if no confirmation in ``timeout``."""
    ps = client.pubsub(ignore_subscribe_messages=False)
    ps.subscribe(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = ps.get_message(timeout=0.05)
        if m and m["type"] == "subscribe":
            return ps
    ps.close()
    raise TimeoutError("no subscribe confirmation")


def close_quietly(*things: Any) -> None:
    """``close()`` each thing that has one, ignoring errors: teardown after a fault must not raise."""
    for t in things:
        fn = getattr(t, "close", None)
        if fn is None:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001
            pass
