"""Convergence measured, not snapshotted: rounds of final reads after heal, judged at the last round,
``converge_s`` reported either way, "did not converge" only past the strategy's bound (or unknown
when the run stopped re-reading before that bound)."""

from __future__ import annotations

from typing import Any

from checkers import convergence

S = 1_000_000_000


def _history(rounds: list[tuple[float, Any]], limit_s: float | None = 3.0, bound_s: float | None = 2.0,
             db_value: Any = 2) -> list[dict[str, Any]]:
    """A write of 1 then 2 during load, heal at 10 s, then one final round per (time after heal, value
    node 0's cache returned)."""
    h: list[dict[str, Any]] = []

    def add(op: dict[str, Any]) -> None:
        op["index"] = len(h)
        h.append(op)

    add({"process": "nemesis", "type": "info", "f": "phase", "value": "load", "time_ns": 0})
    for i, v in enumerate((1, 2)):
        add({"process": 0, "type": "invoke", "f": "write", "key": "k", "value": v, "time_ns": (2 * i + 1) * S})
        add({"process": 0, "type": "ok", "f": "write", "key": "k", "value": v, "version": i + 1,
             "time_ns": (2 * i + 1) * S + 1000})
    add({"process": "nemesis", "type": "info", "f": "phase", "value": "heal", "time_ns": 10 * S})
    add({"process": "nemesis", "type": "info", "f": "phase", "value": "final", "time_ns": 10 * S + 1})
    if limit_s is not None:
        add({"process": "nemesis", "type": "info", "f": "converge", "value": {"limit_s": limit_s, "bound_s": bound_s},
             "time_ns": 10 * S + 2})
    for after, seen in rounds:
        t = int((10 + after) * S)
        add({"process": 1_000_000, "type": "invoke", "f": "read", "key": "k", "value": None, "node": 0,
             "phase": "final", "time_ns": t})
        add({"process": 1_000_000, "type": "ok", "f": "read", "key": "k", "value": seen, "node": 0,
             "version": {1: 1, 2: 2}.get(seen), "phase": "final", "source": "cache", "time_ns": t + 1000})
        add({"process": 1_000_999, "type": "invoke", "f": "read", "key": "k", "value": None, "source": "db",
             "phase": "final", "time_ns": t + 2000})
        add({"process": 1_000_999, "type": "ok", "f": "read", "key": "k", "value": db_value, "version": 2,
             "source": "db", "phase": "final", "time_ns": t + 3000})
    add({"process": "nemesis", "type": "info", "f": "phase", "value": "done", "time_ns": 20 * S})
    return h


def test_a_cache_that_agrees_before_its_bound_converges_and_the_time_is_measured() -> None:
    r = convergence.check(_history([(1.0, 1), (1.5, 1), (1.9, 2)]))
    assert r["valid"] is True, r
    assert r["converge_s"] == 1.9 and r["converge_limit_s"] == 3.0 and r["bound_s"] == 2.0


def test_a_cache_still_stale_at_the_limit_past_its_bound_did_not_converge() -> None:
    r = convergence.check(_history([(1.0, 1), (2.0, 1), (3.0, 1)]))
    assert r["valid"] is False and r["converge_s"] is None
    why = r["anomalies"][0]["explanation"]
    assert "did not converge" in why and "3 s after heal" in why and "bound (its TTL) is 2 s" in why, why


def test_a_cache_that_agreed_then_went_stale_again_has_not_converged() -> None:
    r = convergence.check(_history([(1.0, 2), (2.0, 1), (3.0, 1)]))
    assert r["valid"] is False and r["converge_s"] is None


def test_stopping_before_the_strategys_own_bound_is_unknown_not_a_violation() -> None:
    r = convergence.check(_history([(0.5, 1), (1.0, 1)], limit_s=1.0, bound_s=5.0))
    assert r["valid"] == "unknown" and "shorter than the strategy's own bound (5 s)" in r["reason"], r


def test_without_a_converge_record_the_last_final_read_is_judged_as_before() -> None:
    assert convergence.check(_history([(1.0, 1)], limit_s=None))["valid"] is False
    ok = convergence.check(_history([(1.0, 2)], limit_s=None))
    assert ok["valid"] is True and ok["converge_s"] == 1.0
