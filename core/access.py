"""How clients reach servers cachecert did not start: credentials, TLS through a proxy, namespace.

Why a registry keyed by endpoint: on the external backend every connection to a server (a
strategy's, a workload's set-up, the final reads, a step hook's) must authenticate, keep TLS
hostname checks, and stay in the run's namespace (core/namespace.py). Making each caller pass
that along would leave the first one that forgets it writing into a foreign keyspace. Instead the
cluster registers what each of *its* proxy addresses needs, and ``core.clients`` looks the address
up whenever it builds a client: no caller can get a plain connection to a registered endpoint.
Endpoints of embedded clusters are never registered, so they behave exactly as before.

Secrets: the cluster file holds only ``${VAR}`` references; they are kept as references here and
expanded from the environment only at the moment a connection authenticates, so no object that
is logged, recorded or passed to a worker process holds a secret.

TLS through Toxiproxy: the proxy forwards TCP, so TLS runs end to end between the client and the
real server; the client dials 127.0.0.1:PROXY but checks the certificate against (and sends SNI
for) the server's own name, ``server_hostname``: redis-py gets it in the socket wrap, libpq as
``host=NAME hostaddr=127.0.0.1``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class AccessError(RuntimeError):
    """A credential reference that cannot be resolved (one line, naming the variable)."""


def refs(text: str | None) -> list[str]:
    """The environment variables ``text`` refers to."""
    return REF.findall(text or "")


def expand(text: str | None, what: str = "") -> str | None:
    """``text`` with every ``${VAR}`` replaced from the environment; AccessError naming a missing one."""
    if text is None:
        return None

    def one(m: re.Match[str]) -> str:
        v = os.environ.get(m.group(1))
        if v is None:
            raise AccessError(f"environment variable {m.group(1)} is not set{f' (needed by {what})' if what else ''}")
        return v

    return REF.sub(one, text)


@dataclass(frozen=True)
class Access:
    """What a client needs beyond the address: all strings may hold ``${VAR}`` references."""

    namespace: str  # key prefix ``NS:`` / PostgreSQL schema ``NS``
    username: str | None = None
    password: str | None = None
    dbname: str | None = None
    tls: bool = False
    server_hostname: str | None = None  # the name certificates are checked against (the dial goes to a proxy)
    ca_file: str | None = None
    sslmode: str | None = None  # PostgreSQL: require, verify-ca, verify-full
    service: str = ""  # for messages

    @property
    def prefix(self) -> bytes:
        return f"{self.namespace}:".encode()

    def redis_kwargs(self) -> dict[str, Any]:
        """Connection-pool keyword arguments for a redis-py pool (core/namespace.py classes)."""
        from redis.credentials import CredentialProvider

        from core.namespace import PrefixedConnection, PrefixedSSLConnection

        acc = self

        class FromEnv(CredentialProvider):  # expanded per connection, never stored
            def get_credentials(self) -> tuple[str] | tuple[str, str]:
                pw = expand(acc.password, acc.service) or ""
                user = expand(acc.username, acc.service)
                return (user, pw) if user else (pw,)

        kw: dict[str, Any] = {"prefix": self.prefix}
        if self.password or self.username:
            kw["credential_provider"] = FromEnv()
        if self.tls:
            kw |= {"connection_class": PrefixedSSLConnection, "server_hostname": self.server_hostname,
                   "ssl_ca_certs": self.ca_file, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
        else:
            kw["connection_class"] = PrefixedConnection
        return kw

    def pg_kwargs(self, host: str, port: int) -> dict[str, Any]:
        """psycopg.connect keyword arguments (password expanded now, at connect time)."""
        kw: dict[str, Any] = {"host": host, "port": port, "user": expand(self.username, self.service) or "postgres",
                              "dbname": expand(self.dbname, self.service) or "postgres",
                              "options": f"-c search_path={self.namespace}"}
        if self.password:
            kw["password"] = expand(self.password, self.service)
        if self.tls or self.sslmode:
            kw["sslmode"] = self.sslmode or "verify-full"
            if self.ca_file:
                kw["sslrootcert"] = self.ca_file
            if self.server_hostname:  # dial the proxy, check the certificate (and send SNI) for the real name
                kw |= {"host": self.server_hostname, "hostaddr": host}
        return kw


_REGISTRY: dict[str, Access] = {}
_RESOLVERS: list[Callable[[str], Access | None]] = []  # a cluster's: endpoint -> Access, for links added later too
_LOCK = threading.Lock()


def add_resolver(fn: Callable[[str], Access | None]) -> None:
    with _LOCK:
        _RESOLVERS.append(fn)


def remove_resolver(fn: Callable[[str], Access | None]) -> None:
    with _LOCK:
        if fn in _RESOLVERS:
            _RESOLVERS.remove(fn)


def register(endpoint: str, access: Access) -> None:
    with _LOCK:
        _REGISTRY[endpoint] = access


def unregister(endpoint: str) -> None:
    with _LOCK:
        _REGISTRY.pop(endpoint, None)


def lookup(endpoint: str) -> Access | None:
    with _LOCK:
        found = _REGISTRY.get(endpoint)
        resolvers = list(_RESOLVERS)
    for fn in resolvers:
        found = found or fn(endpoint)
    return found


__all__ = ["Access", "AccessError", "expand", "refs", "register", "unregister", "lookup", "add_resolver",
           "remove_resolver"]
