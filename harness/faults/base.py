"""The fault interface: a package that knows how to start, stop, verify and draw itself.

The nemesis and the reports only see this interface, so adding a fault type never touches them.
A fault class declares, as class attributes, everything the rest of the harness asks about it:

    kinds    kind name -> ``Kind(text, color, params, example)``: what it does (``ls faults``), its
             shade in reports, its parameters (``Param``: default, allowed values, numeric), and a
             target for the example line. One class may handle many kinds (every Toxiproxy toxic).
    targets  what its target names: ``"proxy"`` (a service's proxy, or SERVICE.LINK), ``"service"``
             (a service's process), ``"node"`` (an application node) or ``"step"`` (a workload's
             step); see ``TARGETS``. Service and proxy targets are checked against the run's
             services when a schedule is parsed (``check_target``).
    instant  True when the fault happens at once (``restart``): its duration may be 0.

and implements ``start``, ``stop``, ``probe`` and, when it needs to refuse a run before anything
starts, ``validate(run)`` (a node the run does not have, a step the workload lacks). The registry
(``harness.faults``) finds every such class in harness/faults/*.py and in the user's plugin modules;
``make_fault``, ``KINDS`` and ``PALETTE`` are derived from it.
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
from typing import Any, ClassVar, Protocol

DEFAULT_COLOR = "#95a5a6"  # a fault window whose record names no colour

# what a fault's target names, in the order ``ls faults`` lists the kinds
TARGETS: dict[str, str] = {
    "proxy": "SERVICE or SERVICE.LINK (its proxy)",
    "service": "SERVICE (its process)",
    "node": "NODE (application node number, from 0)",
    "step": "STEP (a workload's step name; see `ls plans`)",
}


class FaultError(ValueError):
    """A fault spec that cannot be run (unknown kind, bad target or parameter)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a fault kind. ``default`` (None: optional, no default) is filled in when
    the spec leaves it out; ``choices`` are the only values it takes (else it must be a number >= 0
    when ``number``); ``omit_default`` leaves the default out of the schedule's text form (a toxic's
    ``stream=downstream``)."""

    default: Any = None
    choices: tuple[Any, ...] = ()
    number: bool = True
    omit_default: bool = False

    def text(self, name: str) -> str:
        """How ``ls faults`` shows it: ``ms=200``, ``jitter``, ``stream=downstream|upstream|both``."""
        if self.choices:
            return f"{name}={'|'.join(str(c) for c in self.choices)}"
        return name if self.default is None else f"{name}={self.default}"


@dataclass(frozen=True)
class Kind:
    """One fault kind: what it does (one line for ``ls faults``), its colour in reports, its
    parameters, and the target its example uses (``latency:redis@2+3``)."""

    text: str
    color: str = DEFAULT_COLOR
    params: dict[str, Param] = field(default_factory=dict)
    example: str = "redis"


@dataclass
class RunContext:
    """What a scheduled fault is checked against before anything starts (``BaseFault.validate``)."""

    config: Any  # harness.runner.RunConfig, resolved (nodes, time limit, ...)
    workload: Any  # workloads.base.Workload
    strategy_cls: type
    strategy: str
    label: str  # how an error names the schedule: "plan holder-crash" or "the fault schedule"


def _either(choices: tuple[Any, ...]) -> str:
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


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
    kinds: ClassVar[dict[str, Kind]]
    targets: ClassVar[str]
    instant: ClassVar[bool]
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
    def validate(self, run: RunContext) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def text_params(self) -> dict[str, Any]: ...


@dataclass
class BaseFault:
    kinds: ClassVar[dict[str, Kind]] = {}
    targets: ClassVar[str] = "service"
    instant: ClassVar[bool] = False
    # how long the fault must stay on before its effect can show (a Sentinel promotion takes seconds):
    # a schedule that gives it less is refused, and random schedules give it at least this long
    min_on_s: ClassVar[float] = 0.0

    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in self.kinds:
            raise FaultError(f"{type(self).__name__} does not handle fault kind {self.kind!r} "
                             f"(it handles: {', '.join(self.kinds)})")
        self.params = self.check_params(self.kind, dict(self.params))

    @classmethod
    def check_params(cls, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` validated against the kind's ``Param``s, defaults filled in (choice parameters
        last), or a one-line FaultError."""
        spec = cls.kinds[kind].params
        if not spec:
            if params:
                raise FaultError(f"{kind} takes no parameters, got {', '.join(params)}")
            return {}
        chosen = {n: p for n, p in spec.items() if p.choices}
        plain = {n: p for n, p in spec.items() if not p.choices}
        out = {n: p.default for n, p in plain.items() if p.default is not None}
        out.update(params)
        picked: dict[str, Any] = {}
        for n, p in chosen.items():
            v = out.pop(n, p.default)
            if v is None and p.default is None:
                continue
            if v not in p.choices:
                raise FaultError(f"{kind}: {n} must be {_either(p.choices)}, got {v!r}")
            picked[n] = v
        bad = [k for k in out if k not in spec]
        if bad:
            raise FaultError(f"{kind}: unknown parameter {bad[0]!r} (valid: {', '.join([*chosen, *plain])})")
        for k, v in out.items():
            if spec[k].number and (not isinstance(v, (int, float)) or v < 0):
                raise FaultError(f"{kind}: {k} must be a number >= 0, got {v!r}")
        return {**out, **picked}

    @classmethod
    def check_target(cls, kind: str, target: str, services: tuple[str, ...] | None) -> None:
        """Refuse a target this run cannot have, when the schedule is parsed. Service and proxy
        targets name one of the run's services, or an extra link proxy to it (SERVICE.SUFFIX,
        Cluster.add_proxy); node and step targets are checked by ``validate``."""
        if cls.targets in ("proxy", "service") and services is not None \
                and target.partition(".")[0] not in services:
            raise FaultError(f"{kind}: unknown target {target!r} (this run's services: {', '.join(services)})")

    def validate(self, run: RunContext) -> None:
        """Refuse, with a one-line FaultError, a fault that cannot take effect in this run; called
        for every scheduled fault before any service starts. Nothing to check by default."""

    def text_params(self) -> dict[str, Any]:
        """The parameters the schedule's text form writes (defaults marked ``omit_default`` left out)."""
        spec = self.kinds[self.kind].params
        return {k: v for k, v in self.params.items()
                if not (k in spec and spec[k].omit_default and v == spec[k].default)}

    @property
    def name(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({self.target}{', ' + shown if shown else ''})"

    @property
    def color(self) -> str:
        return self.kinds[self.kind].color

    def describe(self) -> dict[str, Any]:
        return {"fault": self.kind, "target": self.target, "name": self.name, "color": self.color, **self.params}
