"""A small Toxiproxy HTTP client owned by the harness.

Why not toxiproxy-python: it keeps its server address in process-global settings (one server per
process), sets no HTTP timeouts (a wedged API call hangs the whole run, and with it the nemesis's
promise to heal), and swallows some error statuses. The harness needs several independent
clusters per process (tests, certification matrices), a bounded wait on every call, and an
exception on every non-2xx. The API surface is tiny, so we speak it directly (stdlib only).

API reference: https://github.com/Shopify/toxiproxy#http-api
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

TOXIC_TYPES = ("latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data")
DIRECTIONS = ("downstream", "upstream")


class ToxiproxyError(RuntimeError):
    """A Toxiproxy API call failed or returned non-2xx."""


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, Any] | None = None


class Toxiproxy:
    """Client for one Toxiproxy server, e.g. ``Toxiproxy("127.0.0.1", 8474)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, timeout: float = 5.0) -> None:
        self.base = f"http://{host}:{port}"
        # not ``self.timeout``: that name is the timeout-toxic method below (an attribute of that
        # name shadowed it, and ``client.timeout(proxy, 0)`` raised "'float' is not callable")
        self.http_timeout = timeout

    # -- transport ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "cachecert")
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace").strip()
            raise ToxiproxyError(f"toxiproxy {method} {path}: HTTP {e.code} {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ToxiproxyError(f"toxiproxy {method} {path}: {reason} (is toxiproxy at {self.base}?)") from None
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ToxiproxyError(f"toxiproxy {method} {path}: not JSON: {raw[:200]!r}") from None

    # -- server ------------------------------------------------------------------------------
    def version(self) -> str:
        req = urllib.request.Request(self.base + "/version", method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout) as resp:
                return resp.read().decode().strip()
        except (urllib.error.URLError, OSError) as e:
            raise ToxiproxyError(f"toxiproxy GET /version: {e}") from None

    def reset(self) -> None:
        """Enable every proxy and remove every toxic (the nemesis's heal)."""
        self._call("POST", "/reset")

    # -- proxies -----------------------------------------------------------------------------
    def proxies(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/proxies")

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict[str, Any]:
        if not listen.startswith("127.0.0.1:"):
            raise ToxiproxyError(f"proxy {name}: listen address must be on 127.0.0.1, got {listen}")
        return self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                                "enabled": enabled})

    def get_proxy(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/proxies/{name}")

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def set_upstream(self, name: str, upstream: str) -> None:
        """Point a proxy at another server; Toxiproxy closes the proxy's live connections (clients
        reconnect, to the new upstream) and keeps its listen address and toxics."""
        self._call("POST", f"/proxies/{name}", {"upstream": upstream, "enabled": True})

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disable = the proxy closes its listener and live connections: clients fail fast."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    # -- toxics ------------------------------------------------------------------------------
    def add_toxic(self, proxy: str, type: str, *, name: str | None = None, stream: str = "downstream",
                  toxicity: float = 1.0, **attributes: Any) -> dict[str, Any]:
        if type not in TOXIC_TYPES:
            raise ToxiproxyError(f"unknown toxic type {type!r} (valid: {', '.join(TOXIC_TYPES)})")
        if stream not in DIRECTIONS:
            raise ToxiproxyError(f"unknown toxic stream {stream!r} (valid: {', '.join(DIRECTIONS)})")
        body = {"name": name or f"{type}_{stream}", "type": type, "stream": stream,
                "toxicity": toxicity, "attributes": attributes}
        return self._call("POST", f"/proxies/{proxy}/toxics", body)

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/proxies/{proxy}/toxics")

    def update_toxic(self, proxy: str, name: str, **attributes: Any) -> dict[str, Any]:
        return self._call("POST", f"/proxies/{proxy}/toxics/{name}", {"attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    # convenience wrappers, one per toxic type ----------------------------------------------
    def latency(self, proxy: str, latency_ms: int, jitter_ms: int = 0, **kw: Any) -> dict[str, Any]:
        return self.add_toxic(proxy, "latency", latency=latency_ms, jitter=jitter_ms, **kw)

    def bandwidth(self, proxy: str, rate_kbps: int, **kw: Any) -> dict[str, Any]:
        return self.add_toxic(proxy, "bandwidth", rate=rate_kbps, **kw)

    def slow_close(self, proxy: str, delay_ms: int, **kw: Any) -> dict[str, Any]:
        return self.add_toxic(proxy, "slow_close", delay=delay_ms, **kw)

    def timeout(self, proxy: str, timeout_ms: int = 0, **kw: Any) -> dict[str, Any]:
        """``timeout_ms=0`` is a black hole: data is dropped and the connection hangs."""
        return self.add_toxic(proxy, "timeout", timeout=timeout_ms, **kw)

    def reset_peer(self, proxy: str, timeout_ms: int = 0, **kw: Any) -> dict[str, Any]:
        return self.add_toxic(proxy, "reset_peer", timeout=timeout_ms, **kw)

    def slicer(self, proxy: str, average_size: int, size_variation: int = 0, delay_us: int = 0,
               **kw: Any) -> dict[str, Any]:
        return self.add_toxic(proxy, "slicer", average_size=average_size, size_variation=size_variation,
                              delay=delay_us, **kw)

    def limit_data(self, proxy: str, nbytes: int, **kw: Any) -> dict[str, Any]:
        return self.add_toxic(proxy, "limit_data", bytes=nbytes, **kw)
