"""Network faults on a service's proxy: Toxiproxy toxics, a downed proxy, a black-hole partition.

``down`` disables the proxy: connections are refused or closed at once, like a crashed peer.
``partition`` adds a ``timeout 0`` toxic on both directions: bytes vanish and calls hang until the
client's own timeout, like a real network partition. ``timeout`` on one direction (``stream``) is
the ambiguous-commit maker: with ``stream=downstream`` the DB receives and commits the statement,
but the acknowledgement never comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.faults.base import BaseFault, FaultContext, FaultError
from harness.faults.probe import roundtrip
from harness.toxiproxy import TOXIC_TYPES

# attribute names Toxiproxy expects, per toxic, with the friendlier param names we accept
TOXIC_ATTRS: dict[str, dict[str, str]] = {
    "latency": {"ms": "latency", "jitter": "jitter"},
    "bandwidth": {"kbps": "rate"},
    "slow_close": {"ms": "delay"},
    "timeout": {"ms": "timeout"},
    "reset_peer": {"ms": "timeout"},
    "slicer": {"size": "average_size", "variation": "size_variation", "delay_us": "delay"},
    "limit_data": {"bytes": "bytes"},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "latency": {"ms": 200}, "bandwidth": {"kbps": 10}, "slow_close": {"ms": 1000}, "timeout": {"ms": 0},
    "reset_peer": {"ms": 0}, "slicer": {"size": 16, "delay_us": 1000}, "limit_data": {"bytes": 64},
}


@dataclass
class ToxicFault(BaseFault):
    """Any Toxiproxy toxic on one proxy. ``stream``: downstream, upstream or both."""

    def __post_init__(self) -> None:
        if self.kind not in TOXIC_TYPES:
            raise FaultError(f"unknown toxic {self.kind!r}")
        params = dict(DEFAULTS.get(self.kind, {}))
        params.update(self.params)
        stream = params.pop("stream", "downstream")
        if stream not in ("downstream", "upstream", "both"):
            raise FaultError(f"{self.kind}: stream must be downstream, upstream or both, got {stream!r}")
        allowed = TOXIC_ATTRS[self.kind]
        bad = [k for k in params if k not in allowed]
        if bad:
            raise FaultError(f"{self.kind}: unknown parameter {bad[0]!r} (valid: stream, {', '.join(allowed)})")
        for k, v in params.items():
            if not isinstance(v, (int, float)) or v < 0:
                raise FaultError(f"{self.kind}: {k} must be a number >= 0, got {v!r}")
        self.params = {**params, "stream": stream}

    def _streams(self) -> list[str]:
        s = self.params["stream"]
        return ["downstream", "upstream"] if s == "both" else [s]

    def start(self, ctx: FaultContext) -> None:
        attrs = {TOXIC_ATTRS[self.kind][k]: v for k, v in self.params.items() if k != "stream"}
        for stream in self._streams():
            ctx.cluster.toxiproxy.add_toxic(self.target, self.kind, name=f"cc_{self.kind}_{stream}",
                                            stream=stream, **attrs)

    def stop(self, ctx: FaultContext) -> None:
        for stream in self._streams():
            try:
                ctx.cluster.toxiproxy.remove_toxic(self.target, f"cc_{self.kind}_{stream}")
            except Exception:  # noqa: BLE001 - already gone (a reset healed it)
                pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        port = ctx.cluster.proxies[self.target]
        if self.kind == "latency":
            want = self.params["ms"] / 1000
            p = roundtrip(self.target, port, timeout=want * 2 + 1)
            return p.outcome == "ok" and p.seconds >= want * 0.8, f"{p} (expected >= {want * 1000:.0f} ms)"
        if self.kind == "timeout":
            p = roundtrip(self.target, port, timeout=0.5 if self.params["ms"] == 0 else self.params["ms"] / 1000 + 1)
            expect = ("timeout",) if self.params["ms"] == 0 else ("closed", "reset", "timeout")
            return p.outcome in expect, f"{p} (expected {' or '.join(expect)})"
        if self.kind == "reset_peer":
            p = roundtrip(self.target, port, timeout=self.params["ms"] / 1000 + 1)
            return p.outcome in ("reset", "closed"), f"{p} (expected reset)"
        p = roundtrip(self.target, port, timeout=2.0)
        return True, f"{p} (a {self.kind} toxic is installed; answers may be slowed or cut)"


@dataclass
class ProxyDown(BaseFault):
    """The proxy is disabled: new connections are refused, live ones closed (fast failure)."""


    def start(self, ctx: FaultContext) -> None:
        ctx.cluster.toxiproxy.set_enabled(self.target, False)

    def stop(self, ctx: FaultContext) -> None:
        ctx.cluster.toxiproxy.set_enabled(self.target, True)

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.target, ctx.cluster.proxies[self.target], timeout=1.0)
        return p.outcome in ("refused", "reset", "closed"), f"{p} (expected refused)"


@dataclass
class Partition(BaseFault):
    """Black hole in both directions: the link is up but nothing crosses; calls hang."""


    def start(self, ctx: FaultContext) -> None:
        for stream in ("downstream", "upstream"):
            ctx.cluster.toxiproxy.add_toxic(self.target, "timeout", name=f"cc_partition_{stream}",
                                            stream=stream, timeout=0)

    def stop(self, ctx: FaultContext) -> None:
        for stream in ("downstream", "upstream"):
            try:
                ctx.cluster.toxiproxy.remove_toxic(self.target, f"cc_partition_{stream}")
            except Exception:  # noqa: BLE001
                pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.target, ctx.cluster.proxies[self.target], timeout=0.5)
        return p.outcome == "timeout", f"{p} (expected no answer)"
