"""Process faults on a service: kill (SIGKILL, restarted when the fault ends), pause (SIGSTOP until
SIGCONT) and restart (a clean stop and start, instantaneous as a fault).

They act through the service interface, so the same fault kills a local process or a container.
Probes go to the service's *direct* address, to see the process itself rather than the proxy. A
paused server still accepts connections (the kernel completes the handshake) but answers nothing,
so its probe waits for silence — up to 2 s, or until the pause ends, whichever is first: a short
pause is verified by the request being held until the process was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.faults import _alias as alias
from harness.faults.base import BaseFault, FaultContext, Kind
from harness.faults.probe import expect_silence, roundtrip


def _direct_port(ctx: FaultContext, target: str) -> int:
    return int(ctx.cluster.direct[target].rpartition(":")[2])


@dataclass
class _ServiceFault(BaseFault):
    """``server(ctx)``: the process the target names (``redis-primary``: the primary when the fault
    started, harness/faults/_alias.py), recorded in ``describe()``."""

    def server(self, ctx: FaultContext) -> str:
        return alias.resolve(self, ctx, "service")

    def describe(self) -> dict[str, Any]:
        return super().describe() | alias.note(self)


@dataclass
class Kill(_ServiceFault):
    kinds: ClassVar[dict[str, Kind]] = {"kill": Kind("SIGKILL of the service (restarted when the fault ends)", "#34495e")}
    targets: ClassVar[str] = "service"

    def start(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.server(ctx)).kill()

    def stop(self, ctx: FaultContext) -> None:
        svc = ctx.cluster.service(self.server(ctx))
        if not svc.running():
            svc.start()

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.server(ctx), _direct_port(ctx, self.server(ctx)), timeout=1.0, window=ctx.window)
        return p.outcome in ("refused", "reset", "closed"), f"{p} (expected refused)"


@dataclass
class Pause(_ServiceFault):
    kinds: ClassVar[dict[str, Kind]] = {"pause": Kind("SIGSTOP of the service until the fault ends (SIGCONT)", "#8e44ad")}
    targets: ClassVar[str] = "service"

    def start(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.server(ctx)).pause()

    def stop(self, ctx: FaultContext) -> None:
        ctx.cluster.service(self.server(ctx)).resume()

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.server(ctx), _direct_port(ctx, self.server(ctx)), timeout=2.0, window=ctx.window)
        return expect_silence(p, ctx.window)


@dataclass
class Restart(_ServiceFault):
    kinds: ClassVar[dict[str, Kind]] = {"restart": Kind("clean restart of the service", "#16a085")}
    targets: ClassVar[str] = "service"
    instant: ClassVar[bool] = True  # over when it is done: a duration of 0 is fine
    restarted: bool = field(default=False, repr=False, compare=False)

    def start(self, ctx: FaultContext) -> None:
        self.restarted = False
        ctx.cluster.service(self.server(ctx)).restart()
        self.restarted = True  # a healthy server alone would not tell a restart from nothing

    def stop(self, ctx: FaultContext) -> None:
        pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        p = roundtrip(self.server(ctx), _direct_port(ctx, self.server(ctx)), timeout=1.0)
        if not self.restarted:
            return False, f"the restart did not complete; {p}"
        return p.outcome == "ok", f"restarted; {p} (expected healthy after restart)"
