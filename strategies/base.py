"""The strategy interface: the caching code under test, in four methods.

A strategy instance is one *application node*: it owns its connections, any in-process cache and
any invalidation subscriber, and is called concurrently by the workers assigned to that node (so
it must be thread-safe). The nemesis "crashes" a node by closing it and building a fresh one.

    setup(env)          connect; start subscribers. Called once per node instance.
    read(key)  -> dict  {"value": v, "version": n, "source": "cache"|"db", "hit": bool, "db_load": bool}
    write(key, value) -> dict  {"version": n} (DB-assigned, if known)
    close()             release everything; must not block on a dead link.

Raise ``DefiniteFailure`` when the operation certainly did not take effect (e.g. the DB refused the
connection before anything was sent): the history records ``fail``. Any other exception or a
timeout is indeterminate and recorded as ``info``.

Strategies get everything through ``Env``: the proxy endpoints (never the direct addresses), the
parameters the user gave, and helpers that build bounded clients. Plug your own with
``--strategy mypkg.mod:MyStrategy``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from core.clients import Pg, redis_client, sentinel_master


class DefiniteFailure(Exception):
    """The operation certainly did not take effect (recorded as ``fail``)."""


class ParamError(ValueError):
    """A strategy parameter is invalid (reported before any service starts)."""


@dataclass
class Env:
    endpoints: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    node: int = 0
    timeout: float = 2.0
    workload: str = ""
    _pg: Pg | None = None
    # creates an extra proxy ``SERVICE.SUFFIX`` to a service (Cluster.add_proxy); None = no per-node links
    add_proxy: Callable[[str, str], str] | None = None

    def link(self, service: str, suffix: str) -> str:
        """Endpoint of a dedicated, separately faultable link to ``service`` (proxy ``service.suffix``,
        e.g. one node's event-bus link), or the shared proxy when the harness offers no extra proxies."""
        if self.add_proxy is None:
            return self.endpoints[service]
        return self.add_proxy(f"{service}.{suffix}", service)

    def redis(self, **kw: Any) -> Any:
        """A client of the Redis primary: node ``redis``, or, with Sentinels (``redis=sentinel``),
        whichever node they name at connect time (a killed primary's clients reconnect to the
        promoted one; an open connection to a cut-off primary keeps reaching it, as real clients do)."""
        if any(name.startswith("sentinel-") for name in self.endpoints):
            return sentinel_master(self.endpoints, timeout=self.timeout, **kw)
        return redis_client(self.endpoints["redis"], timeout=self.timeout, **kw)

    def pg(self) -> Pg:
        if self._pg is None:
            self._pg = Pg(self.endpoints["postgres"], timeout=self.timeout)
        return self._pg

    def kafka_conf(self) -> dict[str, Any]:
        """Client settings bootstrapping from every broker's client proxy (``kafka``, ``kafka-2``, ...:
        a run with several brokers still starts when the first one is down)."""
        return {"bootstrap.servers": ",".join(kafka_brokers(self.endpoints)),
                "socket.timeout.ms": int(self.timeout * 1000), "log_level": 0}

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None


def kafka_brokers(endpoints: dict[str, str]) -> list[str]:
    """The Kafka client endpoints among ``endpoints``, first broker first (``kafka``, ``kafka-2``, ...)."""
    names = [n for n in endpoints if n == "kafka" or (n.startswith("kafka-") and n[6:].isdigit())]
    return [endpoints[n] for n in sorted(names, key=lambda n: 1 if n == "kafka" else int(n[6:]))]


@runtime_checkable
class Strategy(Protocol):
    name: ClassVar[str]

    def setup(self, env: Env) -> None: ...
    def read(self, key: str) -> dict[str, Any]: ...
    def write(self, key: str, value: Any) -> dict[str, Any]: ...
    def close(self) -> None: ...


def convergence_bound(strategy: Any) -> float | None:
    """Seconds within which the strategy promises its caches agree with the DB once faults heal:
    its ``converge_bound_s`` if it declares one, else its TTL (``ttl_ms`` or a finite ``ttl`` in
    seconds), else None (no promise: the run reads once after quiescence)."""
    declared = getattr(strategy, "converge_bound_s", None)
    if isinstance(declared, (int, float)):
        return float(declared)
    ttl_ms = getattr(strategy, "ttl_ms", None)
    if isinstance(ttl_ms, (int, float)) and ttl_ms > 0:
        return ttl_ms / 1000
    ttl = getattr(strategy, "ttl", None)
    if isinstance(ttl, (int, float)) and 0 < ttl < float("inf"):
        return float(ttl)
    return None


# -- shared pieces for strategies over the standard `kv` table --------------------------------
KV_SCHEMA = """
create table if not exists kv (
    key     text primary key,
    value   jsonb,
    version bigint not null default 0
)
"""


class KvTable:
    """The DB side every register-style strategy shares: a per-key value with a commit version.

    ``write`` returns the version the DB assigned (``version + 1`` in the same statement, so the
    version order is the commit order), which is what lets checkers order writes.
    """

    def __init__(self, pg: Pg, table: str = "kv") -> None:
        self.pg = pg
        self.table = table

    def read(self, key: str) -> tuple[Any, int]:
        rows = self.pg.execute(f"select value, version from {self.table} where key = %s", (key,))
        return (rows[0][0], rows[0][1]) if rows else (None, 0)

    def write(self, key: str, value: Any) -> int:
        rows = self.pg.execute(
            f"insert into {self.table} (key, value, version) values (%s, %s, 1) "
            f"on conflict (key) do update set value = excluded.value, version = {self.table}.version + 1 "
            "returning version",
            (key, json.dumps(value)),
        )
        return rows[0][0]


def encode(value: Any, version: int, **extra: Any) -> str:
    return json.dumps({"value": value, "version": version, **extra}, separators=(",", ":"))


def decode(raw: bytes | str | None) -> dict[str, Any] | None:
    return None if raw is None else json.loads(raw)


def positive(params: dict[str, Any], name: str, default: float, *, allow_zero: bool = False) -> float:
    """Read a numeric parameter, rejecting negative (and zero unless allowed) values."""
    v = params.get(name, default)
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be a number, got {v!r}") from None
    if v < 0 or (v == 0 and not allow_zero):
        raise ParamError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v:g}")
    return v
