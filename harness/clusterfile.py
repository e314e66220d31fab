"""The cluster file of ``--backend external``: where the user's own servers are and how to fault them.

Why a file of its own: a staging cluster is described once and reused by every nightly run; it
holds endpoints (Redis by URL or through Sentinel, the PostgreSQL primary and replicas, Kafka
bootstrap servers), optional shell commands for process faults (``kill``, ``pause``, ``resume``,
``start``, ``restart``: a ``systemctl`` or ``kubectl`` line), and credentials only as ``${VAR}``
references (a literal password is refused: the file is often committed). Every mistake is one line
naming the file and line: ``cluster.toml:7: unknown key 'urll' in [redis]``.

    [redis]
    url = "rediss://:${REDIS_PASSWORD}@cache.internal:6380"   # or sentinels = [...] + master = "..."
    ca_file = "/etc/ssl/internal-ca.pem"
    kill = "kubectl delete pod redis-0 --grace-period=0 --force"
    start = "kubectl wait --for=condition=ready pod/redis-0"

    [postgres]
    url = "postgresql://app:${PGPASSWORD}@db.internal:5432/app?sslmode=verify-full"
    replicas = ["postgresql://app:${PGPASSWORD}@db-ro.internal:5432/app"]

    [kafka]
    bootstrap = ["kafka-1.internal:9092"]
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from core.access import REF

COMMANDS = ("kill", "pause", "resume", "start", "restart")
KEYS: dict[str, tuple[str, ...]] = {
    "redis": ("url", "sentinels", "master", "username", "password", "ca_file", "server_hostname", "timeout",
              *COMMANDS),
    "postgres": ("url", "replicas", "ca_file", "server_hostname", "timeout", *COMMANDS),
    "kafka": ("bootstrap", "tls", "ca_file", "timeout", *COMMANDS),
}
PG_QUERY = ("sslmode", "sslrootcert")


class ClusterFileError(ValueError):
    """A cluster file that cannot be used: one line, ``FILE:LINE: what``."""


@dataclass
class Server:
    """One external server as the file gives it (secrets still ``${VAR}`` references)."""

    name: str  # redis, postgres, postgres-replica, postgres-replica-2, kafka
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    dbname: str | None = None
    tls: bool = False
    sslmode: str | None = None
    ca_file: str | None = None
    server_hostname: str | None = None
    sentinels: list[tuple[str, int]] = field(default_factory=list)  # redis via Sentinel: resolved at start, then followed
    master: str | None = None
    commands: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0  # seconds a command may take

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class ClusterFile:
    path: Path
    servers: dict[str, Server]
    lines: dict[str, int]  # "redis.kill" -> line (for messages)

    def where(self, key: str) -> str:
        return f"{self.path}:{self.lines.get(key, self.lines.get(key.partition('.')[0], 1))}"

    def services(self) -> tuple[str, ...]:
        return tuple(s for s in ("redis", "postgres", "kafka") if s in self.servers)


def _lines(text: str) -> dict[str, int]:
    """Where each ``table.key`` (and each table) is first written: tomllib keeps no positions."""
    out: dict[str, int] = {}
    table = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := re.match(r"^\[\s*([A-Za-z0-9_.\-\"]+)\s*\]", line):
            table = m.group(1).strip('"')
            out.setdefault(table, n)
        elif m := re.match(r"^([A-Za-z0-9_\-\"]+)\s*=", line):
            key = m.group(1).strip('"')
            out.setdefault(f"{table}.{key}" if table else key, n)
    return out


def _port(cf: str, key: str, text: str, default: int) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon:
        return text, default
    if not port.isdigit():
        raise ClusterFileError(f"{cf}: {key}: bad port in {text!r}")
    return host.strip("[]"), int(port)


def _no_literal_secret(where: str, key: str, value: str | None) -> None:
    if value and not REF.fullmatch(value):
        raise ClusterFileError(f"{where}: {key} holds a literal password; write a reference like ${{REDIS_PASSWORD}} "
                               "and set the variable in the environment")


def load(path: str | Path) -> ClusterFile:
    """Parse and check a cluster file; ClusterFileError (one line, with the line number) if it is wrong."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ClusterFileError(f"{p}: cannot read the cluster file: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ClusterFileError(f"{p}: not valid TOML: {e}") from None
    cf = ClusterFile(p, {}, _lines(text))
    for table, body in data.items():
        if table not in KEYS:
            raise ClusterFileError(f"{cf.where(table)}: unknown key {table!r} (valid: {', '.join(KEYS)})")
        if not isinstance(body, dict):
            raise ClusterFileError(f"{cf.where(table)}: {table} must be a table ([{table}])")
        for key in body:
            if key not in KEYS[table]:
                raise ClusterFileError(f"{cf.where(f'{table}.{key}')}: unknown key {key!r} in [{table}] "
                                       f"(valid: {', '.join(KEYS[table])})")
        for key in body:
            want: Any = list if key in ("sentinels", "replicas", "bootstrap") else \
                bool if key == "tls" else (int, float) if key == "timeout" else str
            if not isinstance(body[key], want) or (key == "bootstrap" and not body[key]):
                raise ClusterFileError(f"{cf.where(f'{table}.{key}')}: {table}.{key} has the wrong type "
                                       f"({type(body[key]).__name__})")
    if not data:
        raise ClusterFileError(f"{p}: the cluster file names no service ([redis], [postgres] or [kafka])")
    if "redis" in data:
        cf.servers["redis"] = _redis(cf, data["redis"])
    if "postgres" in data:
        body = data["postgres"]
        cf.servers["postgres"] = _postgres(cf, "postgres", body.get("url"), body, "postgres.url")
        for i, url in enumerate(body.get("replicas", []), 1):
            name = "postgres-replica" if i == 1 else f"postgres-replica-{i}"
            cf.servers[name] = _postgres(cf, name, url, body, "postgres.replicas")
            cf.servers[name].commands = {}  # the commands are the primary's
    if "kafka" in data:
        cf.servers["kafka"] = _kafka(cf, data["kafka"])
    return cf


def _common(s: Server, body: dict[str, Any]) -> Server:
    s.commands = {k: body[k] for k in COMMANDS if k in body}
    s.timeout = float(body.get("timeout", 30.0))
    s.ca_file = body.get("ca_file", s.ca_file)
    s.server_hostname = body.get("server_hostname") or s.server_hostname
    return s


def _redis(cf: ClusterFile, body: dict[str, Any]) -> Server:
    if ("url" in body) == ("sentinels" in body):
        raise ClusterFileError(f"{cf.where('redis')}: [redis] needs either url or sentinels (+ master)")
    _no_literal_secret(cf.where("redis.password"), "redis.password", body.get("password"))
    if "url" in body:
        u = urlsplit(body["url"])
        where = cf.where("redis.url")
        if u.scheme not in ("redis", "rediss") or not u.hostname:
            raise ClusterFileError(f"{where}: redis.url must look like redis://HOST:PORT or rediss://HOST:PORT")
        if u.path.strip("/") not in ("", "0"):
            raise ClusterFileError(f"{where}: redis.url: database {u.path.strip('/')}: only database 0 is supported")
        password = unquote(u.password) if u.password else body.get("password")
        _no_literal_secret(where, "the password in redis.url", password)
        s = Server("redis", u.hostname, u.port or 6379, username=unquote(u.username) if u.username else None,
                   password=password, tls=u.scheme == "rediss", server_hostname=u.hostname)
    else:
        if "master" not in body:
            raise ClusterFileError(f"{cf.where('redis.sentinels')}: redis.sentinels needs master = \"NAME\"")
        sentinels = [_port(str(cf.path), "redis.sentinels", str(x), 26379) for x in body["sentinels"]]
        if not sentinels:
            raise ClusterFileError(f"{cf.where('redis.sentinels')}: redis.sentinels is empty")
        s = Server("redis", "", 0, password=body.get("password"), sentinels=sentinels, master=body["master"])
    s.username = body.get("username", s.username)
    return _common(s, body)


def _postgres(cf: ClusterFile, name: str, url: Any, body: dict[str, Any], key: str) -> Server:
    where = cf.where(key)
    if not isinstance(url, str):
        raise ClusterFileError(f"{where}: {key} must be a postgresql://USER@HOST:PORT/DB URL")
    u = urlsplit(url)
    if u.scheme not in ("postgresql", "postgres") or not u.hostname:
        raise ClusterFileError(f"{where}: {key} must look like postgresql://USER@HOST:PORT/DB")
    password = unquote(u.password) if u.password else None
    _no_literal_secret(where, f"the password in {key}", password)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    for k in q:
        if k not in PG_QUERY:
            raise ClusterFileError(f"{where}: {key}: unknown parameter {k!r} (valid: {', '.join(PG_QUERY)})")
    sslmode = q.get("sslmode")
    s = Server(name, u.hostname, u.port or 5432, username=unquote(u.username) if u.username else None,
               password=password, dbname=u.path.strip("/") or None, sslmode=sslmode,
               tls=sslmode not in (None, "disable", "allow", "prefer"), ca_file=q.get("sslrootcert"),
               server_hostname=u.hostname)
    return _common(s, body)


def _kafka(cf: ClusterFile, body: dict[str, Any]) -> Server:
    if "bootstrap" not in body:
        raise ClusterFileError(f"{cf.where('kafka')}: [kafka] needs bootstrap = [\"HOST:PORT\", ...]")
    host, port = _port(str(cf.path), "kafka.bootstrap", str(body["bootstrap"][0]), 9092)
    return _common(Server("kafka", host, port, tls=bool(body.get("tls", False)), server_hostname=host), body)


__all__ = ["ClusterFile", "ClusterFileError", "Server", "load", "COMMANDS"]
