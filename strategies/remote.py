"""The client side of the app-node protocol (docs/node-protocol.md): one application node that is
somebody else's process, in any language, driven over HTTP/1.1 + JSON.

An ``AppNodeClient`` stands where an in-process strategy instance stands: the runner sends it the
workload's ops (``perform(op)``) and records what comes back, so every checker judges a black-box
service exactly as it judges a built-in strategy. It speaks either the protocol (``POST /op``) or,
for a service that will not grow a test endpoint, a *mapping* of each op onto the service's own API
(``OpMapping``: method, path template, body template, JSON pointers into the answer, the statuses
that mean a definite failure).

The outcome rules are the harness's: ``fail`` only when the service says the op certainly did not
happen (``DefiniteFailure``); no answer, a timeout, a broken connection or a 5xx is indeterminate
(``info``); a malformed answer is indeterminate *and* counted (``ProtocolError``), because a run
full of them did not measure the service. Connections are kept alive, one per calling thread.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import quote

from strategies.base import DefiniteFailure

PROTOCOL = 1
RESERVED = frozenset({"process", "type", "f", "key", "time_ns", "node", "phase", "invoke_ns"})


class ProtocolError(Exception):
    """The node answered something the protocol does not allow: recorded as info and counted."""


class Indeterminate(Exception):
    """The node said ``info``, answered 5xx, timed out or dropped the connection."""


@dataclass(frozen=True)
class OpMapping:
    """One workload op mapped onto an existing HTTP API (mapping mode)."""

    method: str = "GET"
    path: str = "/"
    body: str | None = None  # template: {key} and {value} (the JSON text of the op's value)
    value: str | None = None  # JSON pointers into the answer
    version: str | None = None
    source: str | None = None  # "cache" | "db"; without a ``hit`` pointer, hit = (source == "cache")
    hit: str | None = None
    db_load: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # more fields for the history: name -> pointer
    fail_status: tuple[int, ...] = ()
    missing_status: tuple[int, ...] = (404,)  # on a read: the key has no value (ok, value null)

    @classmethod
    def parse(cls, f: str, d: dict[str, Any]) -> OpMapping:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ops.{f}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(known))})")
        for k in ("fail_status", "missing_status"):
            if k in d:
                d = {**d, k: tuple(int(s) for s in d[k])}
        m = cls(**d)
        if not m.path.startswith("/"):
            raise ValueError(f"ops.{f}: path must start with '/', got {m.path!r}")
        for p in (m.value, m.version, m.source, m.hit, m.db_load, *m.extra.values()):
            if p is not None and p and not p.startswith("/"):
                raise ValueError(f"ops.{f}: {p!r} is not a JSON pointer (it starts with '/')")
        return m


def pointer(doc: Any, ptr: str) -> Any:
    """RFC 6901 JSON pointer; a missing member is None."""
    if ptr == "":
        return doc
    for raw in ptr.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


@dataclass
class AppNodeClient:
    """One app node at 127.0.0.1:``port``; ``mapping`` (op name -> OpMapping) selects mapping mode."""

    port: int
    timeout: float = 2.0
    mapping: dict[str, OpMapping] | None = None
    node_id: str = "node0"
    protocol_errors: int = 0
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _all: list[Http1] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- transport ------------------------------------------------------------------------------
    def _conn(self) -> Http1:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = Http1(self.port, self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One exchange on this thread's keep-alive connection; transport failures are Indeterminate."""
        conn = self._conn()
        if conn.sock is None:  # a refused connect never reached the node: the op certainly did not happen
            try:
                conn.connect()
            except ConnectionRefusedError:
                self._drop()
                raise DefiniteFailure(f"{self.node_id}: connection refused (the node is not running)") from None
            except OSError as e:
                self._drop()
                raise Indeterminate(f"{self.node_id}: {type(e).__name__}: {e}") from None
        try:
            status, data, keep = conn.exchange(method, path, body)
            if not keep:
                self._drop()
            return status, data
        except (TimeoutError, OSError, ValueError) as e:
            self._drop()
            raise Indeterminate(f"{self.node_id}: {type(e).__name__}: {e}".rstrip(": ")) from None

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()

    def setup(self, env: Any) -> None:  # the node is its own process; nothing to connect here
        pass

    # -- ops ----------------------------------------------------------------------------------
    def perform(self, op: dict[str, Any]) -> dict[str, Any]:
        """One workload op; the completion's fields, or DefiniteFailure / Indeterminate / ProtocolError."""
        if self.mapping is not None:
            return self._mapped(op)
        body = json.dumps({"protocol": PROTOCOL, "f": op["f"], "key": op.get("key"),
                           "value": op.get("value")}).encode()
        status, data = self.request("POST", "/op", body)
        if status >= 500:
            raise Indeterminate(f"{self.node_id}: HTTP {status}: {_snippet(data)}")
        if status != 200:
            self._malformed(f"HTTP {status} (the protocol answers 200 with a type): {_snippet(data)}")
        try:
            ans = json.loads(data)
        except ValueError:
            self._malformed(f"answer is not JSON: {_snippet(data)}")
        if not isinstance(ans, dict) or ans.get("type") not in ("ok", "fail", "info"):
            self._malformed(f"answer has no type ok/fail/info: {_snippet(data)}")
        kind = ans["type"]
        if kind == "fail":
            raise DefiniteFailure(f"{self.node_id}: {ans.get('error') or 'failed'}")
        if kind == "info":
            raise Indeterminate(f"{self.node_id}: {ans.get('error') or 'indeterminate'}")
        return {k: v for k, v in ans.items() if k not in RESERVED}

    def _mapped(self, op: dict[str, Any]) -> dict[str, Any]:
        assert self.mapping is not None
        m = self.mapping.get(op["f"])
        if m is None:
            raise ProtocolError(f"the app file maps no {op['f']!r} op")
        key = str(op.get("key", ""))
        path = m.path.replace("{key}", quote(key, safe=""))
        body = None
        if m.body is not None:
            body = m.body.replace("{key}", json.dumps(key)[1:-1]).replace("{value}", json.dumps(op.get("value"))).encode()
        status, data = self.request(m.method, path, body)
        if status in m.fail_status:
            raise DefiniteFailure(f"{self.node_id}: HTTP {status}: {_snippet(data)}")
        if op["f"].startswith("read") and status in m.missing_status:
            return {"value": None}
        if status >= 500 or not 200 <= status < 300:
            raise Indeterminate(f"{self.node_id}: HTTP {status}: {_snippet(data)}")
        try:
            ans = json.loads(data) if data.strip() else {}
        except ValueError:
            self._malformed(f"answer is not JSON: {_snippet(data)}")
        out: dict[str, Any] = {}
        for name, ptr in (("value", m.value), ("version", m.version), ("source", m.source), ("hit", m.hit),
                          ("db_load", m.db_load), *m.extra.items()):
            if ptr is not None:
                out[name] = pointer(ans, ptr)
        if m.hit is None and out.get("source") in ("cache", "db"):
            out["hit"] = out["source"] == "cache"
        if op["f"].startswith("read") and m.value is None:
            out["value"] = ans
        return out

    def _malformed(self, why: str) -> NoReturn:
        self.protocol_errors += 1
        raise ProtocolError(f"{self.node_id}: {why}")

    # the register vocabulary, for workload invokes that call methods
    def read(self, key: str) -> dict[str, Any]:
        return self.perform({"f": "read", "key": key})

    def write(self, key: str, value: Any) -> dict[str, Any]:
        return self.perform({"f": "write", "key": key, "value": value})

    def read_db(self, key: str) -> dict[str, Any]:
        return self.perform({"f": "read-db", "key": key})


class Http1:
    """A lean HTTP/1.1 keep-alive client for one 127.0.0.1 port: one request is one ``sendall``
    (no Nagle wait), the answer is read with as few ``recv`` calls as it takes; Content-Length,
    chunked and read-until-close bodies. http.client costs about three times as much per exchange,
    and at 8 workers the harness's own per-op cost is what limits an app node's throughput."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, bool]:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + (body or b""))
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(parts[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, self._chunked(), keep
        if "content-length" in headers:
            return status, self._take(int(headers["content-length"])), keep
        while True:  # neither: the body runs until the server closes the connection
            try:
                self._recv()
            except ConnectionError:
                break
        data, self.buf = self.buf, b""
        return status, data, False

    def _recv(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the node")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._recv()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _chunked(self) -> bytes:
        out = []
        while True:
            size = int(self._line().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(out)
            out.append(self._take(size))
            self._take(2)  # the chunk's CRLF


def _snippet(data: bytes, n: int = 120) -> str:
    text = data.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:n] + ("…" if len(text) > n else "") if text else "(empty body)"
