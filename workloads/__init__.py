"""Workloads by name. Each module defines ``WORKLOAD``; add yours to ``REGISTRY``."""

from __future__ import annotations

import importlib

from workloads.base import Workload

REGISTRY: dict[str, str] = {
    "register": "workloads.register",
}


class WorkloadLoadError(LookupError):
    pass


def load(name: str) -> Workload:
    mod = REGISTRY.get(name, name if "." in name else None)
    if mod is None:
        raise WorkloadLoadError(f"unknown workload {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    try:
        return importlib.import_module(mod).WORKLOAD
    except (ImportError, AttributeError) as e:
        raise WorkloadLoadError(f"cannot load workload {name!r}: {e}") from None


__all__ = ["REGISTRY", "Workload", "load", "WorkloadLoadError"]
