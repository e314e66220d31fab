"""What cachecert can run, in one line each: workloads, strategies, fault kinds and fault plans.

Why: before this, the only way to learn a strategy's name was to mistype one and read the error.
``cachecert ls workloads | strategies [--workload W] | faults | plans [--workload W]`` prints these
entries; every entry is read from the live registries (workload modules, strategy classes, fault
kinds), so a new workload, strategy or toxic shows up without touching this file. Nothing here
starts a service.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from core.verdict import UsageError

KINDS_ALIASES = {"workload": "workloads", "strategy": "strategies", "fault": "faults", "plan": "plans",
                 "run": "runs"}
WHAT = ("runs", "workloads", "strategies", "faults", "plans")


@dataclass
class Entry:
    """One catalog line: a name, what it is, and how to parameterise it."""

    name: str
    description: str
    params: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "params": self.params, **self.extra}


def first_sentence(text: str | None, limit: int = 120) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    para = " ".join((text or "").strip().split("\n\n")[0].split())
    m = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", para)
    s = para[: m.start() + 1] if m else para
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def _value_text(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def load_workload(name: str) -> Any:
    """The workload ``name``, or a one-line UsageError naming the valid ones."""
    import workloads

    try:
        return workloads.load(name)
    except LookupError as e:
        raise UsageError(str(e)) from None


# -- workloads --------------------------------------------------------------------------------------
def workload_entries() -> list[Entry]:
    import workloads

    out = []
    for name in sorted(workloads.REGISTRY):
        wl = workloads.load(name)
        mix = ",".join(f"{k}={v:g}" for k, v in wl.mix.items())
        params = (f"keys={wl.keys} key-dist={wl.key_dist} mix={mix} time-limit={wl.time_limit:g} "
                  f"concurrency={wl.concurrency} nodes={wl.nodes}" + (f" rate={wl.rate:g}" if wl.rate else ""))
        out.append(Entry(wl.name, first_sentence(wl.description, 160), params, {
            "services": list(wl.services), "strategies": list(wl.strategies),
            "default_strategy": wl.default_strategy, "plans": list(wl.plans), "default_plan": wl.default_plan,
            "checkers": [*wl.checkers, *wl.extra_checkers],
            # as a black box (--app): the ops a service answers, or why it cannot be one
            "app_ops": list(wl.app_ops), "app_note": None if wl.app_ops else wl.app_note}))
    return out


# -- strategies -------------------------------------------------------------------------------------
def strategy_description(cls: type) -> str:
    """The class's own docstring (not an inherited one), else its module's, else its name."""
    doc = cls.__dict__.get("__doc__") or getattr(cls, "description", None)
    if not isinstance(doc, str) or not doc.strip():
        doc = getattr(sys.modules.get(cls.__module__), "__doc__", None)
    return first_sentence(doc) or cls.__name__


def strategy_params(cls: type) -> str:
    """``-p`` parameters with their defaults, e.g. ``ttl=5.0 prefix=ca:``."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return ""
    out = []
    for n, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            out.append(f"{n}=...")
        elif p.default is p.empty:
            out.append(f"{n}=(required)")
        else:
            out.append(f"{n}={_value_text(p.default)}")
    return " ".join(out)


def strategy_entries(workload: str | None = None) -> list[Entry]:
    import strategies
    import workloads

    served: dict[str, list[str]] = {}
    for wname in sorted(workloads.REGISTRY):
        for s in workloads.load(wname).strategies:
            served.setdefault(s, []).append(wname)
    if workload is not None:
        wl = load_workload(workload)
        names = list(wl.strategies)
        default = wl.default_strategy
    else:
        names, default = sorted(strategies.REGISTRY), None
    out = []
    for name in names:
        try:
            cls = strategies.load(name)
        except LookupError as e:
            out.append(Entry(name, f"(cannot load: {e})"))
            continue
        out.append(Entry(name, strategy_description(cls), strategy_params(cls), {
            "workloads": served.get(name, []), "default": name == default,
            "class": strategies.REGISTRY.get(name, name)}))
    return out


# -- faults and plans -------------------------------------------------------------------------------
def fault_entries() -> list[Entry]:
    """Every registered fault kind (built-in or plugin), as its class declares it."""
    from harness.faults import REGISTRY, TARGETS

    out = []
    for kind, cls in REGISTRY.items():
        k = cls.kinds[kind]
        params = " ".join(p.text(name) for name, p in k.params.items()) or "(none)"
        floor = cls.min_on_s
        text = (k.text or "(no description)") + (f" [needs >= {floor:g} s on]" if floor else "")
        out.append(Entry(kind, text, params,
                         {"target": TARGETS[cls.targets], "example": f"{kind}:{k.example}@2+{max(3, floor):g}",
                          **({"min_on_s": floor} if floor else {})}))
    return out


def plan_entries(workload: str | None = None) -> list[Entry]:
    import workloads

    names = [workload] if workload is not None else sorted(workloads.REGISTRY)
    out = []
    for wname in names:
        wl = load_workload(wname)
        for plan, text in wl.plans.items():
            schedule = "; ".join(t.strip() for t in text.replace(";", "\n").splitlines() if t.strip())
            out.append(Entry(plan, schedule or "no faults", "", {
                "workload": wl.name, "default": plan == wl.default_plan}))
        if wl.fault_menu:
            out.append(Entry("random", "drawn from the fault menu with the run's seed: "
                             + ", ".join(wl.fault_menu), "", {"workload": wl.name, "default": False}))
        if wl.steps:
            out.append(Entry("step:NAME", "scenario steps for your own schedules (step:NAME@AT+DURATION): "
                             + ", ".join(wl.steps), "",
                             {"workload": wl.name, "default": False}))
    return out


# -- text --------------------------------------------------------------------------------------------
def entries(what: str, workload: str | None = None) -> list[Entry]:
    what = KINDS_ALIASES.get(what, what)
    if what == "workloads":
        return workload_entries()
    if what == "strategies":
        return strategy_entries(workload)
    if what == "faults":
        return fault_entries()
    if what == "plans":
        return plan_entries(workload)
    raise UsageError(f"cannot list {what!r} (valid: {', '.join(WHAT)})")


def lines(what: str, items: list[Entry]) -> list[str]:
    """One line per entry: name, description, then parameters (and what the kind needs)."""
    what = KINDS_ALIASES.get(what, what)
    if not items:
        return []
    width = max(len(e.name) for e in items) + 2
    if what == "plans":
        wwidth = max(len(str(e.extra.get("workload", ""))) for e in items) + 2
    out = []
    for e in items:
        tail = ""
        if what == "workloads":
            tail = (f"  [{e.params}; services: {','.join(e.extra['services'])}; "
                    f"{len(e.extra['strategies'])} strategies, default {e.extra['default_strategy']}; "
                    f"plans: {', '.join(e.extra['plans'])}; "
                    + (f"as an app: {','.join(e.extra['app_ops'])}]" if e.extra["app_ops"] else "not as an app]"))
        elif what == "strategies":
            served = ",".join(e.extra.get("workloads") or []) or "no built-in workload"
            mark = " (default)" if e.extra.get("default") else ""
            tail = f"  [params: {e.params or 'none'}; workloads: {served}]{mark}"
        elif what == "faults":
            tail = f"  [target: {e.extra['target']}; params: {e.params}; e.g. {e.extra['example']}]"
        elif what == "plans":
            mark = " (default)" if e.extra.get("default") else ""
            out.append(f"{e.extra['workload']:<{wwidth}}{e.name:<{width}}{e.description}{mark}")
            continue
        out.append(f"{e.name:<{width}}{e.description}{tail}")
    return out
