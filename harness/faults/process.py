"""Process faults on a service: kill (SIGKILL, restarted when the fault ends), pause (SIGSTOP until
SIGCONT) and restart (a clean stop and start, instantaneous as a fault).

They act through the service interface, so the same fault kills a local process or a container.
Probes go to the service's *direct* address, to see the process itself rather than the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.faults.base import BaseFault, FaultContext
from harness.faults.probe import roundtrip


def _direct_port(ctx: FaultContext, target: str) -> int:
    return int(ctx.cluster.direct[target].rpartition(":")[2])


@dataclass
class Kill(BaseFault):

    def start(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.target).kill()

    def stop(self, ctx: FaultContext) -> None:
        svc = ctx.cluster.service(self.target)
        if not svc.running():
            svc.start()

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.target, _direct_port(ctx, self.target), timeout=1.0)
        return p.outcome in ("refused", "reset", "closed"), f"{p} (expected refused)"


@dataclass
class Pause(BaseFault):

    def start(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.target).pause()

    def stop(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.target).resume()

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.target, _direct_port(ctx, self.target), timeout=0.5)
        return p.outcome == "timeout", f"{p} (expected no answer)"


@dataclass
class Restart(BaseFault):

    def start(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.target).restart()

    def stop(self, ctx: FaultContext) -> None:
        pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.target, _direct_port(ctx, self.target), timeout=1.0)
        return p.outcome == "ok", f"{p} (expected healthy after restart)"
