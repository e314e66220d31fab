"""The fault interface: a package that knows how to start, stop, verify and draw itself.

The nemesis and the reports only see this interface, so adding a fault type never touches them.
``probe`` returns (took_effect, what was observed); a fault whose probe fails is still recorded,
marked unverified, so a run never silently claims a fault it did not inject. The verdict must follow
from the observation: a fault that did nothing observable is not verified.

A probe runs in its own thread while the fault is on, and may have to wait (a 5 s latency takes 5 s
to observe). The nemesis gives it the fault's ``window`` (``FaultContext.window``), which ends just
before the fault is stopped: a probe stops waiting then, and an answer held until the fault ended
is itself the observation (removing a latency toxic releases what it held; a resumed process
answers).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

PALETTE = {
    "latency": "#f2b134", "bandwidth": "#e8a0bf", "slow_close": "#c9a0e8", "timeout": "#e86f5b",
    "partition": "#c0392b", "reset_peer": "#d35400", "slicer": "#b0c4de", "limit_data": "#a3d9a5",
    "down": "#7f8c8d", "kill": "#34495e", "pause": "#8e44ad", "restart": "#16a085",
    "crash-node": "#2c3e50", "step": "#2980b9",
}


class FaultError(ValueError):
    """A fault spec that cannot be run (unknown kind, bad target or parameter)."""


class FaultWindow:
    """When one started fault is on: ``end()`` is called just before the fault is stopped."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self._ended = threading.Event()

    def end(self) -> None:
        if not self._ended.is_set():
            self.ended_at = time.monotonic()
            self._ended.set()

    def over(self) -> bool:
        return self._ended.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the fault to end; True if it has."""
        return self._ended.wait(timeout)


@dataclass
class FaultContext:
    """What faults act on: the cluster (services + Toxiproxy) and the application nodes."""

    cluster: Any
    nodes: Any = None  # harness.nodes.NodePool
    workload: Any = None  # workloads.base.Workload, for ``step`` faults (workload hooks)
    window: FaultWindow | None = None  # set for probes: when the probed fault ends


class Fault(Protocol):
    kind: str
    target: str
    params: dict[str, Any]

    @property
    def name(self) -> str: ...  # e.g. "latency(postgres, 200 ms)"
    @property
    def color(self) -> str: ...
    def start(self, ctx: FaultContext) -> None: ...
    def stop(self, ctx: FaultContext) -> None: ...
    def probe(self, ctx: FaultContext) -> tuple[bool, str]: ...


@dataclass
class BaseFault:
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({self.target}{', ' + shown if shown else ''})"

    @property
    def color(self) -> str:
        return PALETTE.get(self.kind, "#95a5a6")

    def describe(self) -> dict[str, Any]:
        return {"fault": self.kind, "target": self.target, "name": self.name, "color": self.color, **self.params}
