"""A scheduled workload step: a scenario event that is not a failure of the infrastructure.

Some incidents are caused by an operation, not a fault: a schema migration run mid-traffic, a TTL
cut before it, a deploy. Playing them from the nemesis puts them on the same timeline as faults
(``step:NAME@AT+DURATION``, seconds or % of the time limit), recorded in the history as nemesis
ops and shaded in reports, with no workload-side timer. The workload names its steps in
``Workload.steps`` (name -> hook); the hook is called with the FaultContext and ``"start"`` or
``"stop"``.

What the start returns is the probe's verdict, so a step that did nothing is never reported as
done: a string says what it did (verified); ``(False, why)`` — or raising ``NothingDone(why)`` —
says it did nothing (not verified); ``(True, what)`` is the same as the string; ``None`` means done
without details. A step that cannot bite in some configuration (too few nodes, a strategy without
the thing it acts on) declares it with ``@requires(check)``, and the run refuses to start with the
check's one line, instead of running a plan that does not do what its name says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, RunContext
from workloads.base import NothingDone, StepHook, missing_for


def outcome(result: Any) -> tuple[bool, str]:
    """A hook's start result as (took effect, what happened)."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
        return result[0], str(result[1])
    if result is None:
        return True, "done"
    return True, str(result)


@dataclass
class Step(BaseFault):
    kinds: ClassVar[dict[str, Kind]] = {
        "step": Kind("a workload's scenario event (e.g. a schema migration), played on the fault timeline", "#2980b9",
                     example="NAME")}
    targets: ClassVar[str] = "step"

    observed: list[tuple[bool, str]] = field(default_factory=list)

    def validate(self, run: RunContext) -> None:
        """The workload has the step, and the run has what its ``@requires`` check asks for."""
        wl = run.workload
        if self.target not in wl.steps:
            raise FaultError(f"step:{self.target}: workload {wl.name} has no such step "
                             f"(valid: {', '.join(wl.steps) or 'none'})")
        if missing := missing_for(wl.steps[self.target], run.config, run.strategy_cls):
            raise FaultError(f"{run.label}: step {self.target} needs {missing}")

    def _hook(self, ctx: FaultContext) -> StepHook:
        steps = getattr(ctx.workload, "steps", None) or {}
        if self.target not in steps:
            raise FaultError(f"step: workload has no step {self.target!r} (valid: {', '.join(steps) or 'none'})")
        return steps[self.target]

    def start(self, ctx: FaultContext) -> None:
        hook = self._hook(ctx)
        try:
            self.observed.append(outcome(hook(ctx, "start")))
        except NothingDone as e:
            self.observed.append((False, str(e) or "the step found nothing to act on"))

    def stop(self, ctx: FaultContext) -> None:
        self._hook(ctx)(ctx, "stop")

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        if not self.observed:
            return False, "step did not run"
        return all(ok for ok, _ in self.observed), "; ".join(text for _, text in self.observed)
