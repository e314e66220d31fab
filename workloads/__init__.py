"""Workloads by name: every module in workloads/ that defines ``WORKLOAD`` (discovered, so adding a
workload is adding a module)."""

from __future__ import annotations

import importlib

from workloads.base import Workload

BROKEN: dict[str, str] = {}


def _discover() -> dict[str, str]:
    import pkgutil
    from pathlib import Path

    found = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_") or info.name == "base":
            continue
        try:
            wl = getattr(importlib.import_module(f"workloads.{info.name}"), "WORKLOAD", None)
        except Exception as e:  # noqa: BLE001 - one broken module must not hide the others
            BROKEN[info.name] = f"{type(e).__name__}: {e}"
            continue
        if isinstance(wl, Workload):
            found[wl.name] = f"workloads.{info.name}"
    return dict(sorted(found.items()))


REGISTRY: dict[str, str] = _discover()


class WorkloadLoadError(LookupError):
    pass


def load(name: str) -> Workload:
    mod = REGISTRY.get(name, name if "." in name else None)
    if mod is None:
        broken = f"; modules that failed to import: {', '.join(f'{m} ({e})' for m, e in BROKEN.items())}" \
            if BROKEN else ""
        raise WorkloadLoadError(f"unknown workload {name!r} (valid: {', '.join(sorted(REGISTRY))}){broken}")
    try:
        return importlib.import_module(mod).WORKLOAD
    except (ImportError, AttributeError) as e:
        raise WorkloadLoadError(f"cannot load workload {name!r}: {e}") from None


def homes(strategy: str) -> tuple[str, ...] | None:
    """The workloads a strategy is bound to, from the workloads' declarations (the one place the pairing
    is written), or None when it is general: a user's own strategy, one no workload lists, or one the
    general workload (register) certifies."""
    general = load("register").strategies if "register" in REGISTRY else ()
    if strategy in general:
        return None
    bound = tuple(n for n in REGISTRY if strategy in (w := load(n)).strategies + w.also_runs)
    return bound or None


__all__ = ["REGISTRY", "Workload", "load", "homes", "WorkloadLoadError"]
