"""`cachecert serve-node STRATEGY`: a built-in (or user) strategy served over the node protocol.

This makes every Python strategy an app node like any other (``--app "cachecert serve-node
cache-aside"``): the same ops, run through the same HTTP path as a Go or Java service. It is the
protocol's reference server, the conformance test's other half (in-process vs app node, same seeds,
same verdict classes), and the benchmark's measure of what the protocol itself costs.

It reads the environment the harness gives every node (docs/node-protocol.md), builds the strategy
with ``-p`` parameters or ``CACHECERT_PARAM_*``, and answers ``GET /health`` and ``POST /op`` on
127.0.0.1:$PORT with HTTP/1.1 keep-alive, one thread per connection. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from core.verdict import Exit, UsageError
from harness.run_cli import _param
from strategies.base import DefiniteFailure, Env
from strategies.remote import PROTOCOL


def env_endpoints(environ: dict[str, str]) -> dict[str, str]:
    """host:port endpoints from the node's environment (REDIS_URL, DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS)."""
    out = {}
    for svc, var in (("redis", "REDIS_URL"), ("postgres", "DATABASE_URL")):
        if environ.get(var):
            u = urlsplit(environ[var])
            out[svc] = f"{u.hostname}:{u.port}"
    if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        out["kafka"] = environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0]
    return out


def env_params(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in environ.items():
        if k.startswith("CACHECERT_PARAM_"):
            try:
                out[k.removeprefix("CACHECERT_PARAM_").lower()] = json.loads(v)
            except ValueError:
                out[k.removeprefix("CACHECERT_PARAM_").lower()] = v
    return out


class NodeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, strategy: Any, invoke: Any) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.strategy = strategy
        self.invoke = invoke


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: NodeServer

    def setup(self) -> None:
        super().setup()  # answers go out as two writes (head, body): without NODELAY, Nagle + delayed ACK = 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/health":
            self._answer(200, {"protocol": PROTOCOL, "ready": True})
        else:
            self._answer(404, {"error": f"no {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        try:
            op = json.loads(self.rfile.read(n))
        except ValueError:
            self._answer(400, {"error": "body is not JSON"})
            return
        if self.path != "/op" or not isinstance(op, dict) or "f" not in op:
            self._answer(404, {"error": "POST /op with {f, key, value}"})
            return
        try:
            res = self.server.invoke(self.server.strategy, op)
            self._answer(200, {"type": "ok", **res})
        except DefiniteFailure as e:
            self._answer(200, {"type": "fail", "error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # noqa: BLE001 - indeterminate, as in-process
            self._answer(200, {"type": "info", "error": f"{type(e).__name__}: {e}"})


def serve(strategy_spec: str, params: dict[str, Any], environ: dict[str, str]) -> int:
    import strategies
    import workloads

    port = int(environ.get("PORT") or 0)
    if not port:
        raise UsageError("serve-node: PORT is not set (cachecert sets it for every app node)")
    try:
        cls = strategies.load(strategy_spec)
        inst = strategies.build(cls, {**env_params(environ), **params})
        wl = workloads.load(environ.get("CACHECERT_WORKLOAD") or "register")
    except (LookupError, strategies.ParamError) as e:
        raise UsageError(f"serve-node: {e}") from None
    env = Env(env_endpoints(environ), params, int(environ.get("CACHECERT_NODE") or 0),
              float(environ.get("CACHECERT_OP_TIMEOUT") or 1.0), wl.name)
    inst.setup(env)
    server = NodeServer(port, inst, wl.invoke)
    stop = threading.Event()

    def on_term(*_: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"serve-node {strategy_spec} on 127.0.0.1:{port} ({env.endpoints})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        try:
            inst.close()
        finally:
            env.close()
    return Exit.VALID


def cmd_serve_node(args: argparse.Namespace) -> int:
    return serve(args.strategy, dict(args.param), dict(os.environ))


def register(sub: argparse._SubParsersAction, handlers: dict[str, Any]) -> None:
    p = sub.add_parser("serve-node", help="serve a strategy over the app-node protocol (an app node in Python)")
    p.add_argument("strategy", help="strategy name or module.path:Class")
    p.add_argument("--param", "-p", action="append", type=_param, default=[], metavar="NAME=VALUE")
    handlers["serve-node"] = cmd_serve_node


def main(argv: list[str]) -> int:
    """`cachecert serve-node ...` on its own, without the rest of the CLI's imports."""
    parser = argparse.ArgumentParser(prog="cachecert")
    sub = parser.add_subparsers(dest="cmd", required=True)
    handlers: dict[str, Any] = {}
    register(sub, handlers)
    args = parser.parse_args(argv)
    try:
        return handlers[args.cmd](args)
    except UsageError as e:
        print(f"cachecert: error: {e}", file=sys.stderr)
        return Exit.USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
