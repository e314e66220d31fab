"""A toy caching service for the app-node tests: the cache-aside strategy behind HTTP, misbehaving
on purpose as ``TOY_MODE`` says.

    protocol   the node protocol, well behaved (what `cachecert serve-node cache-aside` does)
    exit-once  exits with status 3 after TOY_AFTER ops, the first time only (TOY_MARK: a file)
    garbage    answers every TOY_EVERY-th op with a body that is not JSON
    rest       no /op: its own REST API (GET/PUT /items/{key}), certified through a mapping file
    v2         claims node protocol 2 on /health
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

from harness.serve_node import Handler, NodeServer, env_endpoints
from strategies import build, load
from strategies.base import DefiniteFailure, Env
from workloads.base import invoke_register

MODE = os.environ.get("TOY_MODE", "protocol")
COUNT = itertools.count(1)


class ToyHandler(Handler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            self._answer(200, {"protocol": 2 if MODE == "v2" else 1, "ready": True})
        elif MODE == "rest" and self.path.startswith("/items/"):
            self._rest("read", self.path.removeprefix("/items/"), None)
        else:
            self._answer(404, {"error": "no such path"})

    def do_PUT(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self._rest("write", self.path.removeprefix("/items/"), body.get("value"))

    def _rest(self, f: str, key: str, value: object) -> None:
        try:
            res = invoke_register(self.server.strategy, {"f": f, "key": key, "value": value})
        except DefiniteFailure as e:
            self._answer(409, {"error": str(e)})
            return
        except Exception as e:  # noqa: BLE001
            self._answer(503, {"error": str(e)})
            return
        if f == "read" and res.get("value") is None:
            self._answer(404, {"error": "no such item"})
            return
        self._answer(200, {"item": {"value": res.get("value"), "version": res.get("version")},
                           "source": res.get("source")})

    def do_POST(self) -> None:  # noqa: N802
        n = next(COUNT)
        if MODE == "exit-once" and n > int(os.environ.get("TOY_AFTER", "100")):
            mark = Path(os.environ["TOY_MARK"])
            if not mark.exists():
                mark.write_text("exited once")
                os._exit(3)
        if MODE == "garbage" and n % int(os.environ.get("TOY_EVERY", "10")) == 0:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html>oops</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_POST()


def main() -> None:
    strategy = build(load("cache-aside"), {"ttl": float(os.environ.get("CACHECERT_PARAM_TTL", "30"))})
    strategy.setup(Env(env_endpoints(dict(os.environ)), {}, int(os.environ.get("CACHECERT_NODE", "0")), 1.0))
    server = NodeServer(int(os.environ["PORT"]), strategy, invoke_register)
    server.RequestHandlerClass = ToyHandler
    print(f"toy service ({MODE}) on {os.environ['PORT']}", flush=True)
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    sys.exit(main())
