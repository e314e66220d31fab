"""Per-run namespaces on servers cachecert did not start: Redis keys and channels under a prefix,
PostgreSQL tables in a schema of their own.

Why: on a user's own cluster (``--backend external``) a run must never touch data it did not
create. Rewriting every strategy and workload to carry a prefix would leave any code path that
forgets it free to clobber foreign keys, so the prefix is applied where no code path can bypass
it: in the Redis *connection*, which rewrites the key positions of every command it sends (plain,
pipelined, scripted, pub/sub) from the server's own command table (``COMMAND``: first key, last
key, step; ``EVAL``-style commands by their ``numkeys``), and strips the prefix from the channel
names of pub/sub messages it receives. Commands that cannot be confined to a prefix (``FLUSHALL``,
``FLUSHDB``, ``KEYS``, ``SCAN``, ``SWAPDB``, commands with keys in positions the table cannot give)
are refused with a ``NamespaceError`` instead of being sent. ``clear`` deletes the prefix's keys
(SCAN + UNLINK, in batches, never blocking the server) and is what a workload calls where the
embedded backend flushes.

PostgreSQL needs no rewriting: every connection sets ``search_path`` to the run's schema alone, so
unqualified names resolve only there (``drop table kv`` cannot reach ``public.kv``), and a table
cannot be created before the harness created the schema.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import redis
from redis.connection import Connection, SSLConnection

NAME = re.compile(r"^[a-z][a-z0-9_]{2,40}$")  # no glob characters: the prefix is also a SCAN pattern
REFUSED = frozenset({"flushall", "flushdb", "swapdb", "keys", "scan", "randomkey", "move", "select",
                     "shutdown", "debug", "migrate", "sort", "sort_ro"})
CHANNELS_ALL = frozenset({"subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe"})
CHANNEL_FIRST = frozenset({"publish", "spublish"})
NUMKEYS_AT_2 = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
REFUSED_SUB = frozenset({"script|flush", "script|kill", "function|flush", "function|delete", "function|restore",
                         "config|set", "config|resetstat", "client|kill", "client|pause", "cluster|reset"})
BOOTSTRAP = frozenset({"command", "hello", "auth", "client", "ping", "readonly", "script", "echo"})
PUSH_ONE = frozenset({b"message", b"subscribe", b"unsubscribe", b"ssubscribe", b"sunsubscribe", b"smessage",
                      b"psubscribe", b"punsubscribe"})

# command (lower case, "container|sub" for subcommands) -> (first key, last key, step, movable keys)
_SPECS: dict[str, tuple[int, int, int, bool]] = {}
_SPECS_LOCK = threading.Lock()


class NamespaceError(redis.RedisError):
    """A command that cannot be confined to the run's prefix; it was not sent."""


def check_name(ns: str) -> str:
    if not NAME.match(ns):
        raise ValueError(f"namespace {ns!r} must be 3-41 of [a-z0-9_], starting with a letter")
    return ns


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def load_specs(reply: list[Any]) -> None:
    """Fill the key-position table from a ``COMMAND`` reply (RESP2 or RESP3 arrays)."""
    table: dict[str, tuple[int, int, int, bool]] = {}
    for entry in reply:
        name = _text(entry[0]).lower()
        flags = {_text(f).lower() for f in entry[2]}
        table[name] = (int(entry[3]), int(entry[4]), int(entry[5]), "movablekeys" in flags)
        for sub in entry[9] if len(entry) > 9 and entry[9] else []:
            sflags = {_text(f).lower() for f in sub[2]}
            table[_text(sub[0]).lower()] = (int(sub[3]), int(sub[4]), int(sub[5]), "movablekeys" in sflags)
    with _SPECS_LOCK:
        _SPECS.update(table)


def _key_positions(argv: list[Any]) -> list[int]:
    name = _text(argv[0]).lower()
    if name in REFUSED:
        raise NamespaceError(f"{name.upper()} is refused on a namespaced connection (it reaches beyond the run's keys)")
    if len(argv) > 1 and f"{name}|{_text(argv[1]).lower()}" in REFUSED_SUB:
        raise NamespaceError(f"{name.upper()} {_text(argv[1]).upper()} is refused on a namespaced connection")
    if name in NUMKEYS_AT_2:
        n = int(argv[2])
        return list(range(3, 3 + n))
    spec = _SPECS.get(name)
    if len(argv) > 1 and (sub := _SPECS.get(f"{name}|{_text(argv[1]).lower()}")) is not None:
        spec = sub
    if spec is None:
        if name in BOOTSTRAP:
            return []
        raise NamespaceError(f"{name.upper()}: unknown command, cannot place its keys in the run's namespace")
    first, last, step, movable = spec
    if movable:
        raise NamespaceError(f"{name.upper()} has keys in variable positions; refused on a namespaced connection")
    if first <= 0:
        return []
    end = len(argv) + last if last < 0 else last
    return list(range(first, min(end, len(argv) - 1) + 1, max(step, 1)))


def rewrite(prefix: bytes, args: tuple[Any, ...]) -> list[Any]:
    """``args`` of one command with every key (and pub/sub channel) under ``prefix``."""
    argv: list[Any] = [*_text(args[0]).split(), *args[1:]]
    name = _text(argv[0]).lower()
    if name in CHANNELS_ALL:
        positions = list(range(1, len(argv)))
    elif name in CHANNEL_FIRST:
        positions = [1]
    else:
        positions = _key_positions(argv)
    for i in positions:
        v = argv[i]
        argv[i] = prefix + (v if isinstance(v, bytes) else str(v).encode())
    return argv


class _RewritingPacker:
    def __init__(self, conn: _Prefixing, inner: Any) -> None:
        self.conn = conn
        self.inner = inner

    def pack(self, *args: Any) -> Any:
        if self.conn.raw:
            return self.inner.pack(*args)
        argv = rewrite(self.conn.prefix, args)
        if _text(argv[0]).lower() in CHANNELS_ALL:
            self.conn.subscribed = True  # a pub/sub connection from now on: its replies name channels
        return self.inner.pack(*argv)


class _Prefixing:
    """Mixed into a redis-py connection class: keys and channels go out under ``prefix``."""

    prefix: bytes
    raw: bool = False  # set while ``clear`` scans: its own commands go out unchanged
    subscribed: bool = False  # sent a (P|S)SUBSCRIBE: replies are pub/sub messages, channels to strip

    def on_connect(self) -> None:
        self.subscribed = False  # a fresh connection (a pub/sub one subscribes again after this)
        super().on_connect()  # type: ignore[misc]
        if not _SPECS:  # once per process: the server's own table of key positions
            self.raw = True
            try:
                self.send_command("COMMAND")  # type: ignore[attr-defined]
                load_specs(self.read_response())  # type: ignore[attr-defined]
            finally:
                self.raw = False

    def _construct_command_packer(self, packer: Any) -> Any:
        # every way redis-py sends (send_command, pack_command, pack_commands) goes through this packer
        return _RewritingPacker(self, super()._construct_command_packer(packer))  # type: ignore[misc]

    def read_response(self, *a: Any, **kw: Any) -> Any:
        r = super().read_response(*a, **kw)  # type: ignore[misc]
        if self.subscribed and isinstance(r, list) and len(r) >= 2 and isinstance(r[0], (bytes, str)):
            kind = r[0].encode() if isinstance(r[0], str) else r[0]
            if kind in PUSH_ONE:
                r[1] = self._strip(r[1])
            elif kind == b"pmessage" and len(r) >= 3:
                r[1], r[2] = self._strip(r[1]), self._strip(r[2])
        return r

    def _strip(self, v: Any) -> Any:
        p = self.prefix
        if isinstance(v, bytes) and v.startswith(p):
            return v[len(p):]
        if isinstance(v, str) and v.startswith(p.decode()):
            return v[len(p):]
        return v


class PrefixedConnection(_Prefixing, Connection):
    def __init__(self, *, prefix: bytes, **kw: Any) -> None:
        self.prefix = prefix
        super().__init__(**kw)


class PrefixedSSLConnection(_Prefixing, SSLConnection):
    """TLS end to end through a TCP proxy: dials the proxy (``host``), but checks the certificate
    against, and sends SNI for, the real server's name (``server_hostname``)."""

    def __init__(self, *, prefix: bytes, server_hostname: str | None = None, **kw: Any) -> None:
        self.prefix = prefix
        self.server_hostname = server_hostname
        super().__init__(**kw)

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        dial, self.host = self.host, self.server_hostname or self.host
        try:
            return super()._wrap_socket_with_ssl(sock)
        finally:
            self.host = dial


def prefix_of(client: Any) -> bytes | None:
    """The prefix a client's connections write under, or None for a plain client."""
    pool = getattr(client, "connection_pool", None)
    return getattr(pool, "connection_kwargs", {}).get("prefix") if pool is not None else None


def run_token(client: Any) -> str:
    """A fresh token for the names a run creates outside Redis and PostgreSQL (Kafka topics and
    consumer groups, which no connection can rewrite). Under a namespaced client it starts with the
    namespace, which is unique to the run, so the clean-up of that namespace finds exactly those
    names (harness/services/external.py) and nothing of anyone else's."""
    import uuid

    prefix = prefix_of(client)
    token = uuid.uuid4().hex[:12]
    return f"{prefix.decode().rstrip(':')}-{token}" if prefix else token


def clear(client: Any, batch: int = 500) -> int:
    """Delete every key under the client's prefix (SCAN MATCH + UNLINK in batches); how many."""
    prefix = prefix_of(client)
    if prefix is None:
        raise NamespaceError("clear needs a namespaced client (a plain one would need FLUSHALL)")
    conn = client.connection_pool.get_connection("SCAN")
    n = 0
    try:
        conn.raw = True
        cursor: Any = b"0"
        while True:
            conn.send_command("SCAN", cursor, "MATCH", prefix + b"*", "COUNT", batch)
            cursor, keys = conn.read_response()
            if keys:
                conn.send_command("UNLINK", *keys)
                n += int(conn.read_response())
            if _text(cursor) == "0":
                return n
    finally:
        conn.raw = False
        client.connection_pool.release(conn)


__all__ = ["NamespaceError", "PrefixedConnection", "PrefixedSSLConnection", "check_name", "clear", "prefix_of",
           "rewrite", "load_specs"]
