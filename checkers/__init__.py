"""The checkers: pure functions from a history to a verdict with evidence.

Why this module exists: the run engine, ``cachecert check``, the report and certification all need
one registry of checkers and one way to run several of them that can never turn a crash or a
timeout into a pass. ``run_checkers`` is that way: each checker runs under a time limit (option
``time_limit_s``, default 60 s); an exception or an overrun gives ``valid: "unknown"`` with the
reason, and verdicts merge as false > unknown > true.

Every checker is ``fn(history: list[dict], **opts) -> dict`` with ``valid: True | False |
"unknown"`` plus evidence; an invalid result carries ``anomalies: [{type, key, ops, explanation}]``
(capped, with the total in ``anomaly_count``). The general linearizability search lives in
``checkers/linearizable.py`` and is registered lazily, so this package works without it.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from checkers import convergence, durability, herd, integrity, perf, session, staleness, versions

Checker = Callable[..., dict[str, Any]]
DEFAULT_TIME_LIMIT_S = 60.0


def _linearizable(history: list[dict[str, Any]], **opts: Any) -> dict[str, Any]:
    """Lazy entry: the general search if checkers/linearizable.py is installed, else unknown."""
    try:
        mod = importlib.import_module("checkers.linearizable")
    except ImportError as e:
        return {"valid": "unknown", "error": f"linearizability checker not installed ({e})"}
    fn = getattr(mod, "check", None)
    if not callable(fn):
        return {"valid": "unknown", "error": "linearizability checker not installed"}
    return fn(history, **opts)


CHECKERS: dict[str, Checker] = {
    "linearizable": _linearizable,
    "versions": versions.check,
    "staleness": staleness.check,
    "session": session.check,
    "durability": durability.check,
    "convergence": convergence.check,
    "integrity": integrity.check,
    "herd": herd.check,
    "perf": perf.check,
}


def merge(verdicts: Iterable[Any]) -> bool | str:
    """false > unknown > true; no verdict at all is unknown."""
    seen = list(verdicts)
    if any(v is False for v in seen):
        return False
    if not seen or any(v is not True for v in seen):
        return "unknown"
    return True


def run_one(name: str, history: list[dict[str, Any]], opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one checker under its time limit; never raises, never turns trouble into a pass."""
    fn = CHECKERS.get(name)
    if fn is None:
        return {"valid": "unknown", "error": f"unknown checker {name!r}; valid names: {', '.join(CHECKERS)}"}
    opts = dict(opts or {})
    limit = float(opts.pop("time_limit_s", DEFAULT_TIME_LIMIT_S))
    if name == "linearizable":
        opts.setdefault("time_limit_s", limit)  # the search has its own cooperative limit
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(history, **opts)
        except Exception as e:  # noqa: BLE001 - a crashed checker says unknown, never valid
            box["error"] = f"{type(e).__name__}: {e}"

    t0 = time.monotonic()
    th = threading.Thread(target=target, name=f"checker-{name}", daemon=True)
    th.start()
    th.join(limit)
    elapsed = time.monotonic() - t0
    if th.is_alive():
        return {"valid": "unknown", "error": f"time limit ({limit:g} s) reached", "elapsed_s": round(elapsed, 3)}
    if "error" in box:
        return {"valid": "unknown", "error": box["error"], "elapsed_s": round(elapsed, 3)}
    res = box.get("result")
    if not isinstance(res, dict) or "valid" not in res:
        return {"valid": "unknown", "error": f"checker {name} returned no verdict", "elapsed_s": round(elapsed, 3)}
    if res["valid"] not in (True, False):
        res["valid"] = "unknown"
    res.setdefault("elapsed_s", round(elapsed, 3))
    return res


def run_checkers(history: list[dict[str, Any]], names: Iterable[str],
                 opts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``names`` on ``history``; ``opts`` maps a checker name to its options.

    Returns ``{"valid": merged, "checkers": {name: result}}``.
    """
    opts = opts or {}
    results: dict[str, Any] = {}
    for name in names:
        results[name] = run_one(name, history, opts.get(name))
    return {"valid": merge(r.get("valid") for r in results.values()), "checkers": results}


__all__ = ["CHECKERS", "merge", "run_checkers", "run_one"]
