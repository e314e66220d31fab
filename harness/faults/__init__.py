"""Fault kinds by name, and fault schedules: parsed from text, a file, a named plan or a seed.

A schedule is a list of ``Scheduled(fault, at, duration)`` (seconds from the start of the load
phase). The text form, used on the command line and in schedule files, one fault per item::

    KIND:TARGET[:PARAM=V[,PARAM=V]]@AT+DURATION      e.g.  latency:postgres:ms=300@2+3
                                                          timeout:postgres:stream=downstream@30%+20%

AT and DURATION are seconds or a percentage of the time limit. Files hold one item per line (``#``
comments) or a JSON list of objects ``{"kind", "target", "at", "duration", ...params}``; errors
name the file and line. ``random`` draws a schedule from a workload's fault menu with the run's
seed, so the same seed gives the same faults.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.faults.base import BaseFault, Fault, FaultContext, FaultError
from harness.faults.node import CrashNode
from harness.faults.process import Kill, Pause, Restart
from harness.faults.proxy import Partition, ProxyDown, ToxicFault
from harness.faults.step import Step
from harness.toxiproxy import TOXIC_TYPES

PROXY_KINDS = (*TOXIC_TYPES, "down", "partition")
SERVICE_KINDS = ("kill", "pause", "restart")
KINDS = (*PROXY_KINDS, *SERVICE_KINDS, "crash-node", "step")  # step: a workload hook (harness/faults/step.py)


def make_fault(kind: str, target: str, params: dict[str, Any] | None = None,
               services: tuple[str, ...] | None = None) -> Fault:
    params = dict(params or {})
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r} (valid: {', '.join(KINDS)})")
    # a target is a service's proxy, or an extra link proxy to it named SERVICE.SUFFIX (Cluster.add_proxy)
    if kind not in ("crash-node", "step") and services is not None and target.partition(".")[0] not in services:
        raise FaultError(f"{kind}: unknown target {target!r} (this run's services: {', '.join(services)})")
    if kind in TOXIC_TYPES:
        return ToxicFault(kind, target, params)
    if params:
        raise FaultError(f"{kind} takes no parameters, got {', '.join(params)}")
    cls = {"down": ProxyDown, "partition": Partition, "kill": Kill, "pause": Pause, "restart": Restart,
           "crash-node": CrashNode, "step": Step}[kind]
    return cls(kind=kind, target=target)


@dataclass
class Scheduled:
    fault: Fault
    at: float
    duration: float

    @property
    def end(self) -> float:
        return self.at + self.duration

    def to_dict(self) -> dict[str, Any]:
        p = {k: v for k, v in self.fault.params.items() if not (k == "stream" and v == "downstream")}
        return {"kind": self.fault.kind, "target": self.fault.target, "at": round(self.at, 3),
                "duration": round(self.duration, 3), **p}

    def to_text(self) -> str:
        d = self.to_dict()
        params = ",".join(f"{k}={v}" for k, v in d.items() if k not in ("kind", "target", "at", "duration"))
        return f"{d['kind']}:{d['target']}{':' + params if params else ''}@{d['at']:g}+{d['duration']:g}"


def _seconds(text: str, time_limit: float, what: str) -> float:
    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100 * time_limit
        return float(text.removesuffix("s"))
    except ValueError:
        raise FaultError(f"bad {what} {text!r} (seconds like 2.5 or a percentage like 30%)") from None


def _value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def parse_item(text: str, time_limit: float, services: tuple[str, ...] | None = None) -> Scheduled:
    spec, at_sep, when = text.strip().partition("@")
    if not at_sep:
        raise FaultError(f"fault {text!r}: missing @AT+DURATION (e.g. latency:redis:ms=200@2+3)")
    at_s, plus, dur_s = when.partition("+")
    if not plus:
        raise FaultError(f"fault {text!r}: missing +DURATION after @{at_s}")
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise FaultError(f"fault {text!r}: expected KIND:TARGET")
    params: dict[str, Any] = {}
    if len(parts) == 3 and parts[2]:
        for kv in parts[2].split(","):
            k, eq, v = kv.partition("=")
            if not eq:
                raise FaultError(f"fault {text!r}: parameter {kv!r} is not NAME=VALUE")
            params[k.strip()] = _value(v.strip())
    fault = make_fault(parts[0].strip(), parts[1].strip(), params, services)
    return Scheduled(fault, _seconds(at_s, time_limit, "start"), _seconds(dur_s, time_limit, "duration"))


def validate(schedule: list[Scheduled], time_limit: float, where: list[str] | None = None) -> None:
    for i, s in enumerate(schedule):
        label = where[i] if where else s.to_text()
        if s.at < 0:
            raise FaultError(f"{label}: starts before the run ({s.at:g} s)")
        if s.duration <= 0 and s.fault.kind != "restart":
            raise FaultError(f"{label}: duration must be > 0, got {s.duration:g} s")
        if s.end > time_limit + 1e-9:
            raise FaultError(f"{label}: ends at {s.end:g} s, after the run's {time_limit:g} s time limit")


def parse(text: str, time_limit: float, services: tuple[str, ...] | None = None) -> list[Scheduled]:
    items = [t for t in text.replace(";", "\n").splitlines() if t.strip() and not t.strip().startswith("#")]
    schedule = [parse_item(t, time_limit, services) for t in items]
    validate(schedule, time_limit)
    return schedule


def load_file(path: str | Path, time_limit: float, services: tuple[str, ...] | None = None) -> list[Scheduled]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise FaultError(f"{p}: cannot read fault schedule: {e.strerror}") from None
    schedule: list[Scheduled] = []
    where: list[str] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as e:
            raise FaultError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None  # type: ignore[attr-defined]
        for i, d in enumerate(items, 1):
            label = f"{p}: item {i}"
            if not isinstance(d, dict) or not {"kind", "target", "at", "duration"} <= d.keys():
                raise FaultError(f"{label}: expected an object with kind, target, at, duration")
            params = {k: v for k, v in d.items() if k not in ("kind", "target", "at", "duration")}
            try:
                f = make_fault(str(d["kind"]), str(d["target"]), params, services)
                at = _seconds(str(d["at"]), time_limit, "start")
                dur = _seconds(str(d["duration"]), time_limit, "duration")
            except FaultError as e:
                raise FaultError(f"{label}: {e}") from None
            schedule.append(Scheduled(f, at, dur))
            where.append(label)
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                schedule.append(parse_item(line, time_limit, services))
            except FaultError as e:
                raise FaultError(f"{p}:{n}: {e}") from None
            where.append(f"{p}:{n}")
    validate(schedule, time_limit, where)
    return schedule


def save_file(path: str | Path, schedule: list[Scheduled]) -> None:
    Path(path).write_text(json.dumps([s.to_dict() for s in schedule], indent=2) + "\n")


def random_schedule(menu: list[str], time_limit: float, seed: int, n: int | None = None,
                    services: tuple[str, ...] | None = None) -> list[Scheduled]:
    """``n`` faults (default: one per 4 s of load) drawn from ``menu`` (KIND:TARGET[:PARAMS] items),
    each starting in the first 80% of the run and lasting 5-25% of it, non-overlapping per target."""
    if not menu:
        raise FaultError("this workload has no fault menu for a random schedule")
    rng = random.Random(f"faults-{seed}")
    n = n if n is not None else max(1, int(time_limit // 4))
    out: list[Scheduled] = []
    for _ in range(n * 4):
        if len(out) >= n:
            break
        item = rng.choice(menu)
        at = round(rng.uniform(0.05, 0.8) * time_limit, 2)
        dur = round(rng.uniform(0.05, 0.25) * time_limit, 2)
        s = parse_item(f"{item}@{at}+{min(dur, time_limit - at)}", time_limit, services)
        if any(o.fault.target == s.fault.target and o.at < s.end and s.at < o.end for o in out):
            continue
        out.append(s)
    out.sort(key=lambda s: s.at)
    validate(out, time_limit)
    return out


__all__ = ["BaseFault", "Fault", "FaultContext", "FaultError", "KINDS", "Scheduled", "make_fault", "parse",
           "load_file", "save_file", "random_schedule"]
