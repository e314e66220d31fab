"""Each checker, both ways: a history that must pass and one that must fail, with the anomaly
named and explained in the cache's terms."""

from __future__ import annotations

from typing import Any

import pytest
from hist_builder import H

from checkers import (
    CHECKERS,
    convergence,
    durability,
    herd,
    integrity,
    linearizable,
    perf,
    run_checkers,
    session,
    staleness,
    versions,
)
from core.ops import clear_memo, pair


@pytest.fixture(autouse=True)
def _fresh() -> None:
    clear_memo()


def one(r: dict[str, Any], typ: str) -> dict[str, Any]:
    assert r["valid"] is False, r
    got = [a for a in r["anomalies"] if a["type"] == typ]
    assert got, r["anomalies"]
    a = got[0]
    assert a["explanation"] and a["ops"] and all(isinstance(i, int) for i in a["ops"])
    return a


# -- a stale read from the cache -------------------------------------------------------------------

def stale_history() -> list[dict[str, Any]]:
    return (H()
            .op(1, "write", "k1", 7, 0, 10, version=4)
            .op(1, "write", "k1", 9, 1000, 1100, version=5)
            .op(3, "read", "k1", 7, 1203, 1210, version=4, source="cache", hit=True)
            .build())


def fresh_history() -> list[dict[str, Any]]:
    return (H()
            .op(1, "write", "k1", 7, 0, 10, version=1)
            .op(2, "read", "k1", 7, 5, 20, version=1, source="db", hit=False, db_load=True)
            .op(1, "write", "k1", 9, 30, 50, version=2)
            .op(3, "read", "k1", 7, 40, 45, version=1, source="cache", hit=True)   # concurrent: fine
            .op(3, "read", "k1", 9, 60, 70, version=2, source="cache", hit=True)
            .build())


def test_versions_stale_read_explained_elle_style() -> None:
    a = one(versions.check(stale_history()), "stale-read")
    assert a["key"] == "k1"
    assert a["explanation"] == (
        "Process 3 read k1 = 7 (version 4) from the cache at 1.203 s, but the write of 9 (version 5) by "
        "process 1 had completed at 1.100 s, 103 ms before that read began: a stale read.")
    assert a["cycle"] and any("-rt->" in s for s in a["cycle"])


def test_versions_pass_and_graph_method_agrees() -> None:
    assert versions.check(fresh_history())["valid"] is True
    assert versions.check(fresh_history(), method="graph")["valid"] is True
    clear_memo()
    assert versions.check(stale_history(), method="graph")["valid"] is False


def test_versions_non_monotonic_future_and_order() -> None:
    h = (H().op(1, "write", "k", 1, 0, 1, version=1).op(1, "write", "k", 2, 2, 3, version=2)
         .op(5, "read", "k", 2, 4, 5, version=2).op(5, "read", "k", 1, 6, 7, version=1).build())
    one(versions.check(h), "non-monotonic-read")
    clear_memo()
    h = (H().op(2, "read", "k", 5, 0, 1, version=1).op(1, "write", "k", 5, 2, 3, version=1).build())
    one(versions.check(h), "future-read")
    clear_memo()
    h = (H().op(1, "write", "k", 1, 0, 1, version=2).op(2, "write", "k", 2, 2, 3, version=1).build())
    one(versions.check(h), "version-order-violation")


def test_versions_garbage_and_aborted_reads() -> None:
    h = (H().op(1, "write", "k", 1, 0, 1, type="fail", error="timeout in DB")
         .op(2, "read", "k", 1, 2, 3, source="cache")
         .op(2, "read", "k", 99, 4, 5, source="cache").build())
    r = versions.check(h)
    a = one(r, "aborted-read")
    assert "failed" in a["explanation"] and "aborted read" in a["explanation"]
    g = one(r, "garbage-read")
    assert "no operation ever wrote 99" in g["explanation"]


def test_versions_unversioned_writes_are_unknown_not_valid() -> None:
    h = H().op(1, "write", "k", 1, 0, 1).op(2, "read", "k", None, 2, 3).build()
    r = versions.check(h)
    assert r["valid"] == "unknown" and r["unversioned_writes"] == 1


# -- linearizable -------------------------------------------------------------------------------------

def test_linearizable_pass_fail_and_explanation() -> None:
    assert linearizable.check(fresh_history())["valid"] is True
    clear_memo()
    r = linearizable.check(stale_history())
    a = one(r, "nonlinearizable")
    assert a["key"] == "k1" and a["states"] == ["9"]
    assert a["explanation"].startswith("Process 3 read k1 = 7 (op 4, from 1.203 s to 1.210 s), but")
    assert "k1 could only hold 9, and no operation was concurrent with it" in a["explanation"]
    assert "cannot be linearized" in a["explanation"]


def test_linearizable_info_may_happen_later_or_never() -> None:
    # an indeterminate write may take effect after a later read began ...
    h = (H().op(1, "write", "k", 1, 0, 5, type="info").op(2, "read", "k", None, 10, 11)
         .op(2, "read", "k", 1, 20, 21).build())
    assert linearizable.check(h)["valid"] is True
    clear_memo()
    # ... or never; but a failed write never happened
    h = H().op(1, "write", "k", 1, 0, 5, type="fail").op(2, "read", "k", 1, 10, 11).build()
    assert linearizable.check(h)["valid"] is False


def test_linearizable_cas_and_multi_key_first_bad_key() -> None:
    h = (H().op(1, "write", "a", 0, 0, 1).op(1, "cas", "a", [0, 5], 2, 3).op(2, "read", "a", 5, 4, 5)
         .op(3, "write", "b", 1, 0, 1).op(3, "read", "b", 2, 2, 3).build())
    r = linearizable.check(h, model="cas-register")
    assert r["valid"] is False and r["anomalies"][0]["key"] == "b"


def test_linearizable_time_limit_is_unknown() -> None:
    # many concurrent writes and an impossible read at the end: exponential without help
    b = H()
    for p in range(18):
        b.op(p, "write", "k", p, 0, 100)
    b.op(99, "read", "k", 1000, 200, 201)
    r = linearizable.check(b.build(), key_time_limit_s=0.0, slice_steps=10)
    assert r["valid"] == "unknown" and "time limit" in r["error"]


# -- staleness ----------------------------------------------------------------------------------------

def test_staleness_figures_and_bound() -> None:
    r = staleness.check(stale_history(), bound_ms=50)
    a = one(r, "stale-read")
    assert a["staleness_ms"] == pytest.approx(103.0) and a["versions_behind"] == 1
    assert "over the 50 ms bound" in a["explanation"]
    assert r["max_staleness_ms"] == pytest.approx(103.0)
    assert r["k_staleness"] == {"1": 1}
    assert r["worst_per_key"][0]["key"] == "k1"
    clear_memo()
    assert staleness.check(stale_history(), bound_ms=200)["valid"] is True
    clear_memo()
    assert staleness.check(stale_history())["valid"] is True  # figures only


def test_staleness_t_visibility_and_share() -> None:
    r = staleness.check(fresh_history(), bound_ms=0)
    assert r["valid"] is True and r["stale_reads"] == 0
    assert all(p["p"] == 1.0 for p in r["t_visibility"])
    assert all(x == 1.0 for x in r["visible_within"].values())
    clear_memo()
    r = staleness.check(stale_history())
    assert r["visible_within"]["0"] < 1.0


def test_staleness_versions_bound() -> None:
    h = (H().op(1, "write", "k", 1, 0, 1, version=1).op(1, "write", "k", 2, 2, 3, version=2)
         .op(1, "write", "k", 3, 4, 5, version=3).op(2, "read", "k", 1, 6, 7, version=1).build())
    r = staleness.check(h, bound_versions=1)
    a = one(r, "stale-read")
    assert a["versions_behind"] == 2


# -- session ------------------------------------------------------------------------------------------

def test_session_ryw_and_monotonic() -> None:
    assert session.check(fresh_history())["valid"] is True
    clear_memo()
    h = (H().op(1, "write", "k", 1, 0, 1, version=1).op(1, "write", "k", 2, 2, 3, version=2)
         .op(1, "read", "k", 1, 4, 5, version=1, source="cache").build())
    r = session.check(h)
    a = one(r, "read-your-writes")
    assert "did not see its own write" in a["explanation"]
    assert r["read_your_writes"] is False and r["monotonic_reads"] is True
    clear_memo()
    h = (H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "write", "k", 2, 2, 3, version=2)
         .op(3, "read", "k", 2, 4, 5, version=2).op(3, "read", "k", 1, 6, 7, version=1).build())
    r = session.check(h)
    one(r, "non-monotonic-read")
    assert r["monotonic_reads"] is False and r["read_your_writes"] is True


# -- durability and convergence ----------------------------------------------------------------------

def final(b: H, key: str, db: Any, dbv: int, cache: Any, cachev: int, t: float = 1000) -> H:
    b.op(1_000_000, "read", key, cache, t, t + 1, version=cachev, phase="final", node=0, source="cache", hit=True)
    b.op(1_000_999, "read", key, db, t + 2, t + 3, version=dbv, phase="final", source="db", inv_source="db")
    return b


def test_durability_pass_and_lost_write() -> None:
    b = H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "write", "k", 2, 5, 6, version=2)
    assert durability.check(final(b, "k", 2, 2, 2, 2).build())["valid"] is True
    clear_memo()
    b = H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "write", "k", 2, 5, 6, version=2)
    r = durability.check(final(b, "k", 1, 1, 2, 2).build())
    a = one(r, "lost-write")
    assert "was acknowledged at" in a["explanation"] and "lost" in a["explanation"]
    clear_memo()
    b = H().op(1, "write", "k", 1, 0, 1, version=1)
    one(durability.check(final(b, "k", None, 0, None, 0).build()), "lost-write")  # back to initial


def test_durability_without_final_reads_is_unknown() -> None:
    assert durability.check(H().op(1, "write", "k", 1, 0, 1, version=1).build())["valid"] == "unknown"


def test_convergence_pass_fail_and_time_to_converge() -> None:
    b = H().op(1, "write", "k", 1, 0, 1, version=1).nemesis("start", 10).nemesis("stop", 20)
    b.op(2, "read", "k", None, 30, 31, version=0, source="cache")  # stale after the fault
    b.op(2, "read", "k", 1, 40, 41, version=1, source="cache")
    r = convergence.check(final(b, "k", 1, 1, 1, 1).build())
    assert r["valid"] is True and r["time_to_converge_ms"] == pytest.approx(11.0)
    clear_memo()
    r = convergence.check(final(H().op(1, "write", "k", 1, 0, 1, version=1), "k", 1, 1, None, 0).build())
    a = one(r, "divergent")
    assert "did not converge" in a["explanation"] and "node 0" in a["explanation"]


def test_convergence_bound() -> None:
    b = H().op(1, "write", "k", 1, 0, 1, version=1).nemesis("start", 10).nemesis("stop", 20)
    b.op(2, "read", "k", None, 30, 31, version=0, source="cache")
    r = convergence.check(final(b, "k", 1, 1, 1, 1).build(), max_converge_ms=5)
    one(r, "slow-convergence")


# -- integrity ----------------------------------------------------------------------------------------

def test_integrity_torn_and_old_schema() -> None:
    b = (H().op(1, "write", "o", {"a": 1, "b": 1}, 0, 1)
         .op(2, "read", "o", {"a": 1, "b": 1}, 2, 3, source="cache"))
    assert integrity.check(b.build(), required_fields=["a", "b"])["valid"] is True
    clear_memo()
    b.op(2, "read", "o", {"a": 1, "b": 2}, 4, 5, source="cache")
    a = one(integrity.check(b.build()), "torn-read")
    assert "torn read" in a["explanation"]
    clear_memo()
    h = (H().op(2, "read", "o", {"a": 1}, 4, 5, source="cache")
         .op(3, "read", "o", {"a": 1}, 6, 7, source="cache", valid_object=False).build())
    r = integrity.check(h, required_fields=["a", "b"])
    assert r["old_schema"] == 1
    assert "old-schema" in one(r, "old-schema-read")["explanation"]


# -- herd -------------------------------------------------------------------------------------------

def test_herd_sizes_and_bound() -> None:
    b = H()
    for i in range(12):  # one expiry: 12 loads within 12 ms
        b.op(i, "read", "hot", 1, 1000 + i, 1050 + i, db_load=True, source="db", hit=False)
    b.op(50, "read", "hot", 1, 5000, 5010, db_load=True, source="db", hit=False)  # a later, lone load
    h = b.build()
    r = herd.check(h)
    assert r["valid"] is True and r["max"] == 12 and r["events"] == 2 and r["mean"] == 6.5
    clear_memo()
    a = one(herd.check(h, max_loads=1), "herd")
    assert a["loads"] == 12 and "12 requests loaded hot" in a["explanation"]


# -- perf ---------------------------------------------------------------------------------------------

def test_perf_figures_and_thresholds() -> None:
    b = H().nemesis("start", 100).nemesis("stop", 200)
    for i in range(20):
        t = i * 15
        slow = 100 <= t <= 200
        b.op(i, "read", "k", 1, t, t + (50 if slow else 1), hit=i % 2 == 0, source="cache")
    h = b.build()
    r = perf.check(h)
    assert r["valid"] is True and r["hit_rate"] == 0.5
    assert r["latency_ms"]["in_fault"]["p50"] == pytest.approx(50.0)
    assert r["latency_ms"]["outside_fault"]["p50"] == pytest.approx(1.0)
    assert r["hit_rate_over_time"]
    clear_memo()
    r = perf.check(h, min_hit_rate=0.9, max_p99_ms=10)
    assert {a["type"] for a in r["anomalies"]} == {"hit-rate", "latency"} and r["valid"] is False


# -- the registry -------------------------------------------------------------------------------------

def test_run_checkers_merges_and_never_passes_a_crash() -> None:
    out = run_checkers(stale_history(), ["versions", "session"], {})
    assert out["valid"] is False
    clear_memo()
    out = run_checkers(fresh_history(), ["versions", "nope"], {})
    assert out["valid"] == "unknown" and "unknown checker" in out["checkers"]["nope"]["error"]

    def boom(history: Any, **_: Any) -> dict[str, Any]:
        raise RuntimeError("kaput")

    CHECKERS["boom"] = boom
    try:
        out = run_checkers(fresh_history(), ["versions", "boom"], {})
        assert out["valid"] == "unknown" and "kaput" in out["checkers"]["boom"]["error"]
    finally:
        del CHECKERS["boom"]


def test_run_checkers_time_limit_is_unknown() -> None:
    import time

    def slow(history: Any, **_: Any) -> dict[str, Any]:
        time.sleep(3)
        return {"valid": True}

    CHECKERS["slow"] = slow
    try:
        out = run_checkers(fresh_history(), ["slow"], {"slow": {"time_limit_s": 0.2}})
        assert out["valid"] == "unknown"
    finally:
        del CHECKERS["slow"]


def test_pair_shapes() -> None:
    p = pair(stale_history())
    assert [o.type for o in p.ops] == ["ok", "ok", "ok"]
    assert p.ops[2].source == "cache" and p.ops[2].version == 4
    h = H().op(1, "write", "k", 1, 0, None).build()
    clear_memo()
    assert pair(h).ops[0].type == "info" and pair(h).ops[0].t1 == float("inf")
