"""Crash and restart of an application node: the process holding an in-process cache, a lock or an
invalidation subscriber. Crashing drops the node's in-memory state and connections without a clean
shutdown; the restart builds a fresh strategy instance, as a redeployed process would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, RunContext


@dataclass
class CrashNode(BaseFault):
    kinds: ClassVar[dict[str, Kind]] = {
        "crash-node": Kind("an application node (in-process cache, subscriber) dies and is rebuilt empty", "#2c3e50",
                           example="1")}
    targets: ClassVar[str] = "node"

    def validate(self, run: RunContext) -> None:
        if self.target.isdigit() and int(self.target) >= run.config.nodes:
            raise FaultError(f"a crash-node fault names a node this run does not have (nodes: {run.config.nodes})")
    def _index(self, ctx: FaultContext) -> int:
        try:
            i = int(self.target)
        except ValueError:
            raise FaultError(f"crash-node target must be a node number, got {self.target!r}") from None
        if ctx.nodes is None or not 0 <= i < len(ctx.nodes):
            raise FaultError(f"crash-node: no node {i} (the run has {len(ctx.nodes or [])})")
        return i

    def start(self, ctx: FaultContext) -> None:
        ctx.nodes.crash(self._index(ctx))

    def stop(self, ctx: FaultContext) -> None:
        ctx.nodes.restart(self._index(ctx))

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        i = self._index(ctx)
        down = ctx.nodes.is_down(i)
        if down and hasattr(ctx.nodes, "pid"):  # an app node: the process itself must be gone
            gone = ctx.nodes.pid(i) is None
            return gone, "node's process is gone (SIGKILL)" if gone else "node marked down but its process runs"
        return down, "node is down" if down else "node still serving"
