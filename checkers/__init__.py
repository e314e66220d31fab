"""The checkers: pure functions from a history to a verdict with evidence.

Why this module exists: the run engine, ``cachecert check``, the report and certification all need
one registry of checkers and one way to run several of them that can never turn a crash or a
timeout into a pass. ``run_checkers`` is that way: each checker runs under a time limit (option
``time_limit_s``, default 300 s); an exception or an overrun gives ``valid: "unknown"`` with the
reason, and verdicts merge as false > unknown > true. The checkers share one pairing of invokes
with completions (``checkers.ops.pair``, memoised), released when ``run_checkers`` returns.

Every checker is ``fn(history: list[dict], **opts) -> dict`` with ``valid: True | False |
"unknown"`` plus evidence; an invalid result carries ``anomalies: [{type, key, ops, explanation}]``.

Time limits: on the main thread a SIGALRM timer interrupts the checker wherever it is (pure Python
loops included); elsewhere the checker runs in a daemon thread that is abandoned at the limit, and
long loops also poll a cooperative deadline (``checkers.ops.check_deadline``).
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from checkers import (
    convergence,
    durability,
    herd,
    integrity,
    linearizable,
    perf,
    session,
    staleness,
    versions,
)
from checkers.ops import CheckerTimeout, clear_deadline, clear_memo, set_deadline

Checker = Callable[..., dict[str, Any]]
DEFAULT_TIME_LIMIT_S = 300.0

CHECKERS: dict[str, Checker] = {
    "linearizable": linearizable.check,
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


merge_verdicts = merge


def _call_with_limit(fn: Checker, history: list[dict[str, Any]], opts: dict[str, Any], limit: float) -> Any:
    """Call ``fn`` and return its result; raise CheckerTimeout past ``limit`` seconds."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum: int, frame: Any) -> None:
            raise CheckerTimeout()

        # someone else's alarm (pytest-timeout, the run engine) is put back afterwards; if it is
        # due first, it fires first, with its own handler
        outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
        if outer_delay and outer_delay < limit:
            return fn(history, **opts)
        t_start = time.monotonic()
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        set_deadline(time.monotonic() + limit)
        try:
            return fn(history, **opts)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            clear_deadline()
            if outer_delay:
                left = outer_delay - (time.monotonic() - t_start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), outer_interval)
    box: dict[str, Any] = {}

    def target() -> None:
        set_deadline(time.monotonic() + limit)
        try:
            box["result"] = fn(history, **opts)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["exc"] = e
        finally:
            clear_deadline()

    th = threading.Thread(target=target, name="checker", daemon=True)
    th.start()
    th.join(limit)
    if th.is_alive():
        raise CheckerTimeout()
    if "exc" in box:
        raise box["exc"]
    return box.get("result")


def run_one(name: str, history: list[dict[str, Any]], opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one checker under its time limit; never raises, never turns trouble into a pass."""
    fn = CHECKERS.get(name)
    if fn is None:
        return {"valid": "unknown", "error": f"unknown checker {name!r}; valid names: {', '.join(CHECKERS)}"}
    opts = dict(opts or {})
    limit = float(opts.pop("time_limit_s", DEFAULT_TIME_LIMIT_S))
    if name == "linearizable":
        opts.setdefault("time_limit_s", max(0.5, limit * 0.95))  # its own limit answers first, per key
    t0 = time.monotonic()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # see run_checkers
    try:
        res = _call_with_limit(fn, history, opts, limit)
    except CheckerTimeout:
        return {"valid": "unknown", "error": f"time limit ({limit:g} s) reached",
                "elapsed_s": round(time.monotonic() - t0, 3)}
    except Exception as e:  # noqa: BLE001 - a crashed checker says unknown, never valid
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" ({tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno})" if tb else ""
        return {"valid": "unknown", "error": f"{type(e).__name__}: {e}{where}",
                "elapsed_s": round(time.monotonic() - t0, 3)}
    finally:
        if gc_was_enabled:
            gc.enable()
    elapsed = time.monotonic() - t0
    if not isinstance(res, dict) or "valid" not in res:
        return {"valid": "unknown", "error": f"checker {name} returned no verdict", "elapsed_s": round(elapsed, 3)}
    if res["valid"] is not True and res["valid"] is not False:
        res["valid"] = "unknown"
    if res["valid"] is False:
        res.setdefault("anomalies", [])
    if "anomalies" in res:
        res.setdefault("anomaly_count", len(res["anomalies"]))
    res.setdefault("elapsed_s", round(elapsed, 3))
    return res


def run_checkers(history: list[dict[str, Any]], names: Iterable[str] | None = None,
                 opts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``names`` (default: every checker) on ``history``; ``opts`` maps a checker name to its
    options. Returns ``{"valid": merged, "checkers": {name: result}}``."""
    opts = opts or {}
    results: dict[str, Any] = {}
    # the checkers allocate millions of small objects while a big history is alive: the cyclic GC
    # would rescan all of it again and again (measured: 3x slower); nothing here makes cycles
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in (list(CHECKERS) if names is None else names):
            results[name] = run_one(name, history, opts.get(name))
    finally:
        clear_memo()
        if gc_was_enabled:
            gc.enable()
    return {"valid": merge(r.get("valid") for r in results.values()), "checkers": results}


__all__ = ["CHECKERS", "merge", "merge_verdicts", "run_checkers", "run_one"]
