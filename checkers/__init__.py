"""The checkers: pure functions from a history to a verdict with evidence.

Why this module exists: the run engine, ``cachecert check``, the report and certification all need
one registry of checkers and one way to run several of them that can never turn a crash or a
timeout into a pass. ``run_checkers`` is that way: each checker runs under a time limit (option
``time_limit_s``, default 300 s); an exception or an overrun gives ``valid: "unknown"`` with the
reason, and verdicts merge as false > unknown > true. The checkers share one pairing of invokes
with completions (``core.ops.pair``, memoised), released when ``run_checkers`` returns.

Every checker is ``fn(history: list[dict], **opts) -> dict`` with ``valid: True | False |
"unknown"`` plus evidence; an invalid result carries ``anomalies: [{type, key, ops, explanation}]``.
A checker that saw nothing it judges answers ``"unknown"`` with a ``reason``, never ``True``.

One registry for every checker: the shared ones below and a workload's own (``Workload.
extra_checkers``). ``plan_for`` resolves which checkers judge a run of a workload, with which
options; the run engine records that plan in the run's ``config.json`` and ``cachecert check
RUN_DIR`` replays exactly it, so a re-check is the same judgement as the run. ``judge`` is the
whole verdict of a run's history: the checkers, plus the run-level rules that can only lower it
(a fault whose probe never confirmed it took effect, a history cut short, a missing final phase).

Time limits: on the main thread a SIGALRM timer interrupts the checker wherever it is (pure Python
loops included); elsewhere the checker runs in a daemon thread that is abandoned at the limit, and
long loops also poll a cooperative deadline (``core.ops.check_deadline``).
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
from core.ops import CheckerTimeout, clear_deadline, clear_memo, set_deadline
from core.verdict import merge

Checker = Callable[..., dict[str, Any]]
DEFAULT_TIME_LIMIT_S = 300.0
# shared checkers that judge the final phase (reads after heal); a workload's own checker says so with
# a ``needs_final = True`` attribute on its function
NEEDS_FINAL = frozenset({"durability", "convergence"})

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


def run_one(name: str, history: list[dict[str, Any]], opts: dict[str, Any] | None = None,
            fn: Checker | None = None) -> dict[str, Any]:
    """Run one checker (``fn``, else the shared checker ``name``) under its time limit; never raises,
    never turns trouble into a pass."""
    fn = fn or CHECKERS.get(name)
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
        if not (res.get("reason") or res.get("error")):
            res["reason"] = f"checker {name} gave no verdict"
    if res["valid"] is False:
        res.setdefault("anomalies", [])
    if "anomalies" in res:
        res.setdefault("anomaly_count", len(res["anomalies"]))
    res.setdefault("elapsed_s", round(elapsed, 3))
    return res


def run_checkers(history: list[dict[str, Any]], names: Iterable[str] | None = None,
                 opts: dict[str, dict[str, Any]] | None = None,
                 extra: dict[str, Checker] | None = None) -> dict[str, Any]:
    """Run ``names`` (default: every shared checker) on ``history``; ``opts`` maps a checker name to
    its options, ``extra`` adds a workload's own checkers by name. Returns ``{"valid": merged,
    "checkers": {name: result}}``."""
    opts = opts or {}
    extra = extra or {}
    results: dict[str, Any] = {}
    # the checkers allocate millions of small objects while a big history is alive: the cyclic GC
    # would rescan all of it again and again (measured: 3x slower); nothing here makes cycles
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in (list(CHECKERS) if names is None else names):
            results[name] = run_one(name, history, opts.get(name), extra.get(name))
    finally:
        clear_memo()
        if gc_was_enabled:
            gc.enable()
    return {"valid": merge(r.get("valid") for r in results.values()), "checkers": results}


# -- one plan per run, one judgement per history ------------------------------------------------------
@dataclass
class CheckPlan:
    """Which checkers judge a history, in order, with their options and functions (plain data but
    for ``fns``; ``to_record`` is what a run's config.json keeps)."""

    names: list[str]
    opts: dict[str, dict[str, Any]]
    fns: dict[str, Checker] = field(default_factory=dict)  # a workload's own checkers by name
    workload: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {"workload": self.workload, "names": list(self.names), "opts": self.opts}


class CheckerLookupError(LookupError):
    """A checker name that neither the shared registry nor the workload knows."""


def plan_for(workload: Any = None, names: Iterable[str] | None = None,
             opts: dict[str, dict[str, Any]] | None = None, strategy: str | None = None) -> CheckPlan:
    """The checkers that judge a run of ``workload`` (a Workload, or None for a bare history) by
    ``strategy``: ``names`` (default: the workload's list, less the checkers it reserves for other
    strategies), with the workload's options under ``opts``. Raises CheckerLookupError for a name
    nobody knows."""
    own: dict[str, Checker] = dict(getattr(workload, "extra_checkers", None) or {})
    chosen = list(names) if names else list(getattr(workload, "checkers", None) or CHECKERS)
    if not names and strategy is not None:
        only = getattr(workload, "checker_strategies", None) or {}
        chosen = [n for n in chosen if n not in only or strategy in only[n]]
    known = {**CHECKERS, **own}
    bad = [n for n in chosen if n not in known]
    if bad:
        wl = f" or workload {workload.name}'s own" if workload is not None else ""
        raise CheckerLookupError(f"unknown checker {bad[0]!r} (shared: {', '.join(CHECKERS)}{wl}"
                                 f"{': ' + ', '.join(own) if own else ''})")
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (getattr(workload, "checker_opts", None) or {}).items()}
    for k, v in (opts or {}).items():
        merged.setdefault(k, {}).update(v)
    return CheckPlan(chosen, {n: merged[n] for n in chosen if merged.get(n)},
                     {n: own[n] for n in chosen if n in own}, getattr(workload, "name", None))


def needs_final(name: str, fn: Checker | None) -> bool:
    return name in NEEDS_FINAL or bool(getattr(fn, "needs_final", False))


def final_phase_complete(history: list[dict[str, Any]], truncated: bool) -> bool:
    """Did the run get through its final reads? A history with phase markers must reach ``done``;
    one without any (synthetic, converted) counts as whole unless it was cut mid-record."""
    if truncated:
        return False
    phases = [op.get("value") for op in history if op.get("process") == "nemesis" and op.get("f") == "phase"]
    return not phases or "done" in phases


def unverified_faults(history: list[dict[str, Any]]) -> list[str]:
    """Faults the nemesis started whose probe never confirmed they took effect (no probe record, or
    one with ``verified`` false), by name; a fault started twice needs two confirmations."""
    started: Counter[tuple[Any, ...]] = Counter()
    confirmed: Counter[tuple[Any, ...]] = Counter()
    names: dict[tuple[Any, ...], str] = {}
    for op in history:
        v = op.get("value")
        if op.get("process") != "nemesis" or not isinstance(v, dict):
            continue
        ident = (v.get("name"), v.get("fault"), v.get("target"))
        if op.get("f") == "start":
            started[ident] += 1
            names.setdefault(ident, str(v.get("name") or v.get("fault")))
        elif op.get("f") == "probe" and v.get("verified") is True:
            confirmed[ident] += 1
    return [names[i] for i, n in started.items() for _ in range(n - min(n, confirmed[i]))]


def unstarted_faults(history: list[dict[str, Any]], scheduled: int | None) -> int:
    """How many of ``scheduled`` faults never recorded a start (None: the schedule is not known)."""
    if scheduled is None:
        return 0
    started = sum(1 for op in history if op.get("process") == "nemesis" and op.get("f") == "start")
    return max(0, scheduled - started)


def judge(history: list[dict[str, Any]], plan: CheckPlan, *, truncated: dict[str, Any] | None = None,
          time_limit_s: float | None = None, scheduled: int | None = None) -> dict[str, Any]:
    """The verdict of one history: the plan's checkers, then the run-level rules. Unknown (never
    valid) when a fault was not confirmed or never started (of ``scheduled``), the history was cut
    short, or a checker that needs the final phase had none to judge. Adds ``unknown_reasons``,
    ``unverified_faults`` and, when cut, ``history_truncated``."""
    whole = final_phase_complete(history, truncated is not None)
    opts = {n: dict(o) for n, o in plan.opts.items()}
    if time_limit_s is not None:
        for n in plan.names:
            opts.setdefault(n, {})["time_limit_s"] = time_limit_s
    runnable = [n for n in plan.names if whole or not needs_final(n, plan.fns.get(n))]
    out = run_checkers(history, runnable, opts, plan.fns)
    checks: dict[str, Any] = {}
    for n in plan.names:  # the plan's order; skipped ones say why
        checks[n] = out["checkers"].get(n) or {
            "valid": "unknown", "reason": "not judged: the history has no complete final phase "
                                          "(final reads after heal); the run was cut short"}
    reasons = [f"{n}: {r.get('reason') or r.get('error') or 'unknown'}" for n, r in checks.items()
               if r.get("valid") == "unknown"]
    unverified = unverified_faults(history)
    if unverified:
        reasons.insert(0, f"fault not verified: {', '.join(unverified)}")
    unstarted = unstarted_faults(history, scheduled)
    if unstarted:
        reasons.insert(0, f"{unstarted} of {scheduled} scheduled fault(s) never started")
        unverified = [*unverified, *[f"(fault {i + 1} never started)" for i in range(unstarted)]]
    if truncated is not None:
        reasons.insert(0, truncated["message"])
    valid = merge([*(r.get("valid") for r in checks.values()),
                   *(["unknown"] if unverified or truncated is not None else [])])
    if not checks:
        reasons.append("no checkers ran")
    res: dict[str, Any] = {"valid": valid, "checkers": checks, "unknown_reasons": reasons,
                           "unverified_faults": unverified, "check_plan": plan.to_record()}
    if truncated is not None:
        res["history_truncated"] = truncated
    return res


__all__ = ["CHECKERS", "CheckPlan", "CheckerLookupError", "judge", "merge", "plan_for",
           "run_checkers", "run_one", "unverified_faults"]
