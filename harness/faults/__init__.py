"""Fault kinds by name, and fault schedules: parsed from text, a file, a named plan or a seed.

A schedule is a list of ``Scheduled(fault, at, duration)`` (seconds from the start of the load
phase). The text form, used on the command line and in schedule files, one fault per item::

    KIND:TARGET[:PARAM=V[,PARAM=V]]@AT+DURATION      e.g.  latency:postgres:ms=300@2+3
                                                          timeout:postgres:stream=downstream@30%+20%

AT and DURATION are seconds or a percentage of the time limit. Files hold one item per line (``#``
comments) or a JSON list of objects ``{"kind", "target", "at", "duration", ...params}``; errors
name the file and line. ``random`` draws a schedule from a workload's fault menu with the run's
seed, so the same seed gives the same faults.

**Adding a fault is adding a file.** The registry (``REGISTRY``: kind -> class) holds every class
in a module of harness/faults/ that subclasses ``BaseFault`` and declares ``kinds`` itself (see
harness/faults/base.py for what a class declares: kinds with their text, colour and parameters,
its target type, ``start``/``stop``/``probe`` and a ``validate`` hook), listed in the order of
``TARGETS`` (proxy, service, node, step), then module and class order. ``make_fault``, ``KINDS``
and ``PALETTE`` are derived from it, so a new kind parses, lists (``cachecert ls faults``), colours
its report windows, is validated before a run and probed during it without an edit elsewhere.

Your own faults, outside this package: name them in ``$CACHECERT_FAULTS``, a list separated like
``PATH`` (``:``) of directories (every ``*.py`` in them, ``_``-prefixed ones excepted), ``.py``
files or importable module names (``mypkg.faults``). They are loaded with the registry, so every
command (``run``, ``rerun``, ``ls faults``, ``search``...) knows them; ``load_plugins`` does the
same from code. A plugin kind that a built-in already has is refused (see ``BROKEN``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.faults.base import TARGETS, BaseFault, Fault, FaultContext, FaultError, Kind, Param, RunContext

PLUGINS_ENV = "CACHECERT_FAULTS"
REGISTRY: dict[str, type[BaseFault]] = {}  # kind -> fault class, in listing order
BROKEN: dict[str, str] = {}  # module -> why its faults are not registered


def _fault_classes(mod: ModuleType) -> list[type[BaseFault]]:
    """The fault classes ``mod`` defines (each declaring its own ``kinds``), in definition order."""
    return [obj for obj in vars(mod).values()
            if inspect.isclass(obj) and issubclass(obj, BaseFault) and obj.__module__ == mod.__name__
            and obj.__dict__.get("kinds")]


def _add(mod: ModuleType, source: str) -> list[str]:
    found: dict[str, type[BaseFault]] = {}
    for cls in _fault_classes(mod):
        for kind in cls.kinds:
            if kind in REGISTRY or kind in found:
                other = REGISTRY.get(kind) or found[kind]
                BROKEN[source] = f"fault kind {kind!r} of {cls.__name__} is already {other.__module__}.{other.__name__}'s"
                return []
            if cls.targets not in TARGETS:
                BROKEN[source] = f"{cls.__name__}.targets must be one of {', '.join(TARGETS)}, got {cls.targets!r}"
                return []
            found[kind] = cls
    order = list(TARGETS)
    merged = {**REGISTRY, **found}
    ranked = sorted(enumerate(merged.items()), key=lambda e: (order.index(e[1][1].targets), e[0]))
    REGISTRY.clear()
    REGISTRY.update(kv for _, kv in ranked)
    return list(found)


def _import_file(path: Path) -> ModuleType:
    name = f"cachecert_fault_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # before running it: dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def load_plugins(*entries: str | Path) -> list[str]:
    """Register the faults of each entry: a directory (its ``*.py`` modules), a ``.py`` file, or a
    module name. Returns the kinds added; an entry that fails to load is recorded in ``BROKEN``."""
    added: list[str] = []
    for entry in entries:
        text = str(entry)
        path = Path(text)
        if path.is_dir():
            files = sorted(f for f in path.glob("*.py") if not f.name.startswith("_"))
        elif text.endswith(".py"):
            files = [path]
        else:
            files = []
        try:
            if files or path.is_dir():
                for f in files:
                    try:
                        added += _add(_import_file(f), str(f))
                    except Exception as e:  # noqa: BLE001 - one broken plugin must not hide the others
                        BROKEN[str(f)] = f"{type(e).__name__}: {e}"
            else:
                added += _add(importlib.import_module(text), text)
        except Exception as e:  # noqa: BLE001
            BROKEN[text] = f"{type(e).__name__}: {e}"
    return added


def _discover() -> None:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_") or info.name == "base":
            continue
        name = f"{__name__}.{info.name}"
        try:
            _add(importlib.import_module(name), name)
        except Exception as e:  # noqa: BLE001 - one broken module must not hide the others
            BROKEN[name] = f"{type(e).__name__}: {e}"
    plugins = [e for e in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if e.strip()]
    load_plugins(*plugins)


def __getattr__(name: str) -> Any:
    """``KINDS`` (every kind, in listing order) and ``PALETTE`` (kind -> colour), always read from
    the registry, so a plugin loaded later is in them too."""
    if name == "KINDS":
        return tuple(REGISTRY)
    if name == "PALETTE":
        return {kind: cls.kinds[kind].color for kind, cls in REGISTRY.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_fault(kind: str, target: str, params: dict[str, Any] | None = None,
               services: tuple[str, ...] | None = None) -> Fault:
    cls = REGISTRY.get(kind)
    if cls is None:
        broken = f"; fault modules that failed to load: {', '.join(f'{m} ({e})' for m, e in BROKEN.items())}" \
            if BROKEN else ""
        raise FaultError(f"unknown fault {kind!r} (valid: {', '.join(REGISTRY)}){broken}")
    node, slash, service = target.partition("/")
    if slash and node.startswith("node") and cls.targets == "proxy":  # one app node's link: node1/redis
        target = f"{service}.{node}"
    cls.check_target(kind, target, services)
    return cls(kind=kind, target=target, params=dict(params or {}))


@dataclass
class Scheduled:
    fault: Fault
    at: float
    duration: float

    @property
    def end(self) -> float:
        return self.at + self.duration

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.fault.kind, "target": self.fault.target, "at": round(self.at, 3),
                "duration": round(self.duration, 3), **self.fault.text_params()}

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
        if s.duration <= 0 and not s.fault.instant:
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
        floor = type(s.fault).min_on_s
        if s.duration < floor:  # a fault that needs longer to bite (a failover) gets it, or is not drawn
            if at + floor > time_limit:
                continue
            s = Scheduled(s.fault, s.at, floor)
        if any(o.fault.target == s.fault.target and o.at < s.end and s.at < o.end for o in out):
            continue
        out.append(s)
    out.sort(key=lambda s: s.at)
    validate(out, time_limit)
    return out


_discover()

__all__ = ["BROKEN", "REGISTRY", "TARGETS", "BaseFault", "Fault", "FaultContext", "FaultError", "KINDS", "Kind",
           "PALETTE", "Param", "RunContext", "Scheduled", "load_plugins", "make_fault", "parse", "load_file",
           "save_file", "random_schedule"]
