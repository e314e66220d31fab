"""A scheduled workload step: a scenario event that is not a failure of the infrastructure.

Some incidents are caused by an operation, not a fault: a schema migration run mid-traffic, a TTL
cut before it, a deploy. Playing them from the nemesis puts them on the same timeline as faults
(``step:NAME@AT+DURATION``, seconds or % of the time limit), recorded in the history as nemesis
ops and shaded in reports, with no workload-side timer. The workload names its steps in
``Workload.steps`` (name -> hook); the hook is called with the FaultContext and ``"start"`` or
``"stop"`` and may return a short description of what it did, which becomes the probe's
observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.faults.base import BaseFault, FaultContext, FaultError


@dataclass
class Step(BaseFault):
    observed: list[str] = field(default_factory=list)

    def _hook(self, ctx: FaultContext):  # noqa: ANN202 - Callable[[FaultContext, str], str | None]
        steps = getattr(ctx.workload, "steps", None) or {}
        if self.target not in steps:
            raise FaultError(f"step: workload has no step {self.target!r} (valid: {', '.join(steps) or 'none'})")
        return steps[self.target]

    def start(self, ctx: FaultContext) -> None:
        self.observed.append(str(self._hook(ctx)(ctx, "start") or "done"))

    def stop(self, ctx: FaultContext) -> None:
        self._hook(ctx)(ctx, "stop")

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        return bool(self.observed), "; ".join(self.observed) or "step did not run"
