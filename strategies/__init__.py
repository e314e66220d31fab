"""Caching strategies under test, by name, and the loader for user strategies by import path.

``load("cache-aside")`` or ``load("mypkg.mod:MyStrategy")`` returns the class; ``build(spec, params)``
instantiates it with keyword parameters, turning a bad parameter into a one-line ParamError before
any service starts.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from strategies.base import DefiniteFailure, Env, ParamError, Strategy, convergence_bound

BROKEN: dict[str, str] = {}  # module -> import error, shown when a lookup fails


def _discover() -> dict[str, str]:
    """name -> "module:Class" for every class with a ``name`` and the four methods in strategies/*.py.

    Discovery keeps scenario modules independent: adding a strategy is adding a module.
    """
    import pkgutil
    from pathlib import Path

    found: dict[str, str] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_") or info.name == "base":
            continue
        try:
            mod = importlib.import_module(f"strategies.{info.name}")
        except Exception as e:  # noqa: BLE001 - one broken module must not hide the others
            BROKEN[info.name] = f"{type(e).__name__}: {e}"
            continue
        for attr, obj in vars(mod).items():
            if (isinstance(obj, type) and obj.__module__ == mod.__name__ and isinstance(getattr(obj, "name", None), str)
                    and all(callable(getattr(obj, m, None)) for m in ("setup", "read", "write", "close"))):
                found[obj.name] = f"{mod.__name__}:{attr}"
    return dict(sorted(found.items()))


REGISTRY: dict[str, str] = _discover()


class StrategyLoadError(LookupError):
    """Unknown strategy name or an import path that fails."""


def load(spec: str) -> type:
    target = REGISTRY.get(spec, spec)
    if ":" not in target:
        broken = f"; modules that failed to import: {', '.join(f'{m} ({e})' for m, e in BROKEN.items())}" \
            if BROKEN else ""
        raise StrategyLoadError(
            f"unknown strategy {spec!r} (valid: {', '.join(sorted(REGISTRY))}, or module.path:ClassName){broken}")
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to see
        raise StrategyLoadError(f"cannot import strategy module {mod_name!r}: {type(e).__name__}: {e}") from None
    cls = getattr(mod, attr, None)
    if cls is None:
        raise StrategyLoadError(f"module {mod_name!r} has no attribute {attr!r}")
    missing = [m for m in ("setup", "read", "write", "close") if not callable(getattr(cls, m, None))]
    if missing:
        raise StrategyLoadError(f"{target} is not a strategy: missing {', '.join(missing)}")
    return cls


def name_of(cls: type, spec: str) -> str:
    return getattr(cls, "name", None) or spec.rpartition(":")[2]


def build(cls: type, params: dict[str, Any]) -> Any:
    """Instantiate with keyword params; unknown or invalid ones raise ParamError."""
    sig = inspect.signature(cls)
    accepted = [n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in params if k not in accepted]
    if unknown and not takes_kwargs:
        raise ParamError(f"strategy {name_of(cls, cls.__name__)} has no parameter {unknown[0]!r} "
                         f"(takes: {', '.join(accepted) or 'none'})")
    try:
        return cls(**params)
    except ParamError:
        raise
    except (TypeError, ValueError) as e:
        raise ParamError(f"strategy {name_of(cls, cls.__name__)}: {e}") from None


__all__ = ["REGISTRY", "load", "build", "convergence_bound", "Env", "Strategy", "DefiniteFailure", "ParamError",
           "StrategyLoadError"]
