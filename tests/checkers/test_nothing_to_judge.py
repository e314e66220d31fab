"""Nothing to judge is not valid (issue 13); and the final read is named in words, not by its id.

Every checker, shared and workload, three ways: a history with nothing it judges answers
``unknown`` with a reason starting "nothing to judge"; a tiny history with something to judge and
no anomaly is valid; one with an anomaly is invalid. (test_chk_units.py has more anomalies per
shared checker; the histories here are the smallest that show each verdict.)
"""

from __future__ import annotations

from typing import Any

import pytest
from hist_builder import H
from test_chk_units import final, fresh_history, stale_history

from checkers import (
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
from core.ops import Who, clear_memo, nothing_to_judge, who
from workloads import (
    cache_warming,
    crashed_subscriber,
    feature_flags,
    invalidation_race,
    offline_sync,
    schema_migration,
    thundering_herd,
    write_through,
)

FINAL = 1_000_000
History = list[dict[str, Any]]


@pytest.fixture(autouse=True)
def _fresh() -> None:
    clear_memo()


def run(fn: Any, h: History, **opts: Any) -> dict[str, Any]:
    clear_memo()
    return fn(h, **opts)


def nothing(r: dict[str, Any], *words: str) -> None:
    assert r["valid"] == "unknown", r
    assert r["reason"].startswith("nothing to judge: "), r
    for w in words:
        assert w in r["reason"], (w, r["reason"])


def invalid(r: dict[str, Any], typ: str) -> None:
    assert r["valid"] is False, r
    assert typ in {a["type"] for a in r["anomalies"]}, r["anomalies"]


def finals(b: H, keys: list[str], t: float = 1000, value: Any = None, version: int = 0) -> H:
    """Final reads of ``keys``: through node 0's cache, then from the DB."""
    for i, k in enumerate(keys):
        t0 = t + 10 * i
        b.op(FINAL, "read", k, value, t0, t0 + 1, version=version, phase="final", node=0, source="cache", hit=False)
        b.op(FINAL + 999, "read", k, value, t0 + 2, t0 + 3, version=version, phase="final", source="db",
             inv_source="db")
    return b


def reads_only() -> History:
    """``cachecert run register --mix read=2``: reads of the initial value, then the final reads."""
    b = H()
    for i in range(6):
        b.op(i % 3, "read", f"k{i % 2}", None, 10 * i, 10 * i + 5, version=0, source="cache", hit=True)
    return finals(b, ["k0", "k1"]).build()


def writes_only() -> History:
    b = H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "write", "k", 2, 2, 3, version=2)
    return b.build()


# -- the helper --------------------------------------------------------------------------------------

def test_nothing_to_judge_helper() -> None:
    r = nothing_to_judge("no acknowledged writes", reads=3, valid=True)
    assert r == {"reads": 3, "valid": "unknown", "reason": "nothing to judge: no acknowledged writes"}


def test_a_read_only_register_run_is_not_valid() -> None:
    """The issue's example: no writes at all. Each checker that judges writes says so; perf judged the
    reads' latency (ok ops), so it stands; the run is unknown, not valid."""
    names = ["linearizable", "versions", "staleness", "session", "durability", "perf"]
    out = run_checkers(reads_only(), names, {"staleness": {"bound_ms": 1000}})
    for n in names[:-1]:
        nothing(out["checkers"][n])
    assert out["checkers"]["perf"]["valid"] is True
    assert out["valid"] == "unknown"


# -- linearizable ----------------------------------------------------------------------------------------

def test_linearizable_nothing_to_judge() -> None:
    nothing(run(linearizable.check, reads_only()), "no write")
    nothing(run(linearizable.check, writes_only()), "no ok reads")
    h = H().op(1, "write", "a", 1, 0, 1).op(2, "read", "b", None, 2, 3).build()
    nothing(run(linearizable.check, h), "no key with both")
    # a write that failed never happened, and an indeterminate one nobody saw constrains nothing
    h = H().op(1, "write", "k", 1, 0, 1, type="fail").op(2, "write", "k", 2, 0, None).op(3, "read", "k", None, 5, 6)
    nothing(run(linearizable.check, h.build()), "no writes that could have taken effect")


def test_linearizable_empty_ok_follows_knossos() -> None:
    h = H().nemesis("start", 0).nemesis("stop", 10).build()
    nothing(run(linearizable.check, h), "no client operations")
    r = run(linearizable.check, h, empty_ok=True)
    assert r["valid"] is True and r["note"].startswith("nothing to judge")
    assert run(linearizable.check, fresh_history(), empty_ok=True).get("note") is None


def test_linearizable_judges_both_ways() -> None:
    assert run(linearizable.check, fresh_history())["valid"] is True
    invalid(run(linearizable.check, stale_history()), "nonlinearizable")
    # a read of a value nobody wrote is judged even with no write at all
    invalid(run(linearizable.check, H().op(1, "read", "k", 5, 0, 1).build()), "nonlinearizable")


# -- versions, staleness, session --------------------------------------------------------------------------

def test_versions_three_ways() -> None:
    nothing(run(versions.check, reads_only()), "no writes")
    nothing(run(versions.check, writes_only()), "no ok reads")
    assert run(versions.check, fresh_history())["valid"] is True
    invalid(run(versions.check, stale_history()), "stale-read")
    invalid(run(versions.check, H().op(1, "read", "k", 99, 0, 1).build()), "garbage-read")


def test_staleness_three_ways() -> None:
    nothing(run(staleness.check, reads_only(), bound_ms=10), "no acknowledged writes")
    nothing(run(staleness.check, writes_only(), bound_ms=10), "no ok reads")
    h = H().op(1, "write", "a", 1, 0, 1, version=1).op(2, "read", "b", None, 2, 3, version=0).build()
    nothing(run(staleness.check, h), "no ok read of a key with an acknowledged write")
    assert run(staleness.check, fresh_history(), bound_ms=0)["valid"] is True
    assert run(staleness.check, fresh_history())["valid"] is True  # figures only, but figures of something
    invalid(run(staleness.check, stale_history(), bound_ms=50), "stale-read")


def test_session_three_ways() -> None:
    # p1 writes k and never reads; p2 reads k once; p3 reads an unwritten key twice
    h = (H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "read", "k", 1, 2, 3, version=1)
         .op(3, "read", "j", None, 0, 1, version=0).op(3, "read", "j", None, 2, 3, version=0).build())
    nothing(run(session.check, h), "no process read a key after writing it")
    nothing(run(session.check, reads_only()))
    ok = H().op(1, "write", "k", 1, 0, 1, version=1).op(1, "read", "k", 1, 2, 3, version=1).build()
    assert run(session.check, ok)["valid"] is True
    # another process's writes and one reader reading twice: monotonic reads had a say
    mono = (H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "read", "k", 1, 2, 3, version=1)
            .op(2, "read", "k", 1, 4, 5, version=1).build())
    assert run(session.check, mono)["valid"] is True
    bad = (H().op(1, "write", "k", 1, 0, 1, version=1).op(1, "write", "k", 2, 2, 3, version=2)
           .op(1, "read", "k", 1, 4, 5, version=1).build())
    invalid(run(session.check, bad), "read-your-writes")


# -- durability, integrity, herd, perf ------------------------------------------------------------------

def test_durability_three_ways() -> None:
    nothing(run(durability.check, reads_only()), "no acknowledged writes")
    nothing(run(durability.check, writes_only()), "no final reads of the DB")
    b = H().op(1, "write", "k", 1, 0, 1, version=1)
    assert run(durability.check, final(b, "k", 1, 1, 1, 1).build())["valid"] is True
    b = H().op(1, "write", "k", 1, 0, 1, version=1).op(2, "write", "k", 2, 5, 6, version=2)
    invalid(run(durability.check, final(b, "k", 1, 1, 2, 2).build()), "lost-write")


def test_integrity_three_ways() -> None:
    nothing(run(integrity.check, reads_only()), "no ok reads of object values")
    nothing(run(integrity.check, writes_only(), required_fields=["a"]), "no ok reads of a value")
    b = H().op(1, "write", "o", {"a": 1, "b": 1}, 0, 1).op(2, "read", "o", {"a": 1, "b": 1}, 2, 3)
    assert run(integrity.check, b.build())["valid"] is True
    b.op(2, "read", "o", {"a": 1, "b": 2}, 4, 5)
    invalid(run(integrity.check, b.build()), "torn-read")
    # not an object, with a schema: judged (old-schema), not "nothing"
    invalid(run(integrity.check, H().op(1, "read", "o", 5, 0, 1).build(), required_fields=["a"]), "old-schema-read")


def _loads(n: int, t: float = 1000) -> H:
    b = H()
    for i in range(n):
        b.op(i, "read", "hot", 1, t + i, t + 50 + i, db_load=True, source="db", hit=False)
    return b


def test_herd_three_ways() -> None:
    nothing(run(herd.check, reads_only(), max_loads=1), "no DB loads")
    assert run(herd.check, _loads(3).build(), max_loads=3)["valid"] is True
    assert run(herd.check, _loads(3).build())["valid"] is True  # figures only
    invalid(run(herd.check, _loads(3).build(), max_loads=1), "herd")


def test_perf_three_ways() -> None:
    failed = H().op(1, "read", "k", None, 0, 5, type="fail").op(2, "write", "k", 1, 0, 5, type="fail").build()
    nothing(run(perf.check, failed), "no ok ops")
    only_final = finals(H(), ["k"]).build()
    nothing(run(perf.check, only_final), "no client ops")
    invalid(run(perf.check, failed, max_fail_rate=0.5), "fail-rate")  # the failures are what it judged
    assert run(perf.check, fresh_history())["valid"] is True
    invalid(run(perf.check, fresh_history(), min_hit_rate=0.99), "hit-rate")


# -- workload checkers ------------------------------------------------------------------------------------

def test_cache_warming_stale_set_three_ways() -> None:
    check = cache_warming.check_stale_set
    nothing(check(reads_only()), "no acknowledged writes")
    b = H().op(1, "write", "k", 1, 0, 10, version=2)
    nothing(check(b.build()), "no cache hits")
    b.op(2, "read", "k", 1, 20, 21, version=2, hit=True)
    assert check(b.build())["valid"] is True
    b.op(3, "read", "k", 0, 30, 31, version=1, hit=True, filled_by="warmer")
    invalid(check(b.build()), "stale-set")


def test_cache_warming_warm_up_three_ways() -> None:
    check = cache_warming.check_warm_up
    nothing(check(writes_only()), "no reads during the load phase")
    fast = H().op(1, "read", "k", 1, 0, 1, hit=True).op(1, "read", "k", 1, 2, 3, hit=True)
    assert check(fast.build())["valid"] is True
    slow = fast.op(2, "read", "k", 1, 0, 100, hit=False, db_load=True)
    invalid(check(slow.build(), max_slow_share=0.1), "slow-warm-up")


def _crash(b: H, t0: float, t1: float, node: int = 1) -> H:
    v = {"fault": "crash-node", "target": node, "name": f"crash-node({node})"}
    return b.nemesis("start", t0, value=v).nemesis("stop", t1, value=v)


def test_crash_recovery_three_ways() -> None:
    check = crashed_subscriber.check_crash_recovery
    nothing(check(_crash(finals(H(), ["k"]), 0, 10).build()), "no acknowledged writes")
    b = H().op(1, "write", "k", 1, 0, 1, version=1, node=0)
    nothing(check(b.build()), "no final node read of a written key")
    assert check(finals(H().op(1, "write", "k", 1, 0, 1, version=1, node=0), ["k"], value=1, version=1).build()
                 )["valid"] is True
    b = H().op(1, "write", "k", 1, 0, 1, version=1, node=0)
    b.op(FINAL, "read", "k", 0, 1000, 1001, version=0, phase="final", node=0, source="cache", hit=True)
    b.op(FINAL + 999, "read", "k", 1, 1002, 1003, version=1, phase="final", source="db", inv_source="db")
    invalid(check(b.build()), "not-converged")


def _flags(stale_node1: bool) -> H:
    b = H().op(1, "write", "f", 1, 0, 10, version=1, node=0)
    b.op(2, "read", "f", 1, 20, 21, version=1, node=0, hit=True)
    b.op(3, "read", "f", 1, 20, 21, version=1, node=1, hit=True)
    b.op(FINAL, "read", "f", 1, 1000, 1001, version=1, phase="final", node=0)
    b.op(FINAL + 1, "read", "f", 0 if stale_node1 else 1, 1000, 1001, version=0 if stale_node1 else 1,
         phase="final", node=1)
    b.op(FINAL + 999, "read", "f", 1, 1002, 1003, version=1, phase="final", source="db", inv_source="db")
    return b


def test_feature_flags_propagation_three_ways() -> None:
    check = feature_flags.check_propagation
    two_nodes = (H().op(2, "read", "f", 0, 0, 1, version=0, node=0).op(3, "read", "f", 0, 0, 1, version=0, node=1)
                 .build())
    nothing(check(two_nodes), "no acknowledged updates")
    one_node = H().op(1, "write", "f", 1, 0, 1, version=1, node=0).op(2, "read", "f", 1, 2, 3, version=1, node=0)
    nothing(check(one_node.build()), "one node")
    unread = (H().op(2, "read", "f", 0, 0, 1, version=0, node=0).op(3, "read", "f", 0, 0, 1, version=0, node=1)
              .op(1, "write", "f", 1, 5, 6, version=1, node=0).build())
    nothing(check(unread), "no read after an acknowledged update")
    assert check(_flags(stale_node1=False).build())["valid"] is True
    invalid(check(_flags(stale_node1=True).build()), "not-converged")


def test_invalidation_race_live_versions_three_ways() -> None:
    check = invalidation_race.check_live_versions
    nothing(check([]), "no write reported its live version count")
    nothing(check(writes_only()), "no write reported its live version count")
    flat = [{"index": i, "time_ns": int(i * 1e8), "process": 0, "type": "ok", "f": "write", "key": "k",
             "value": i, "live_versions": 3 + i % 4} for i in range(40)]
    assert check(flat)["valid"] is True
    invalid(check(flat, max_live=5), "unbounded-versions")


def _server_final(b: H, key: str, log: list[list[Any]], t: float = 1000) -> H:
    return b.op(FINAL + 999, "read", key, log[-1][1], t, t + 1, version=log[-1][0], phase="final",
                source="db", inv_source="db", log=log, conflicts=[])


def test_offline_sync_lost_edits_three_ways() -> None:
    check = offline_sync.check_lost_edits
    local = H().op(1, "write", "k0", "a", 0, 1, node=0, prev=0)
    nothing(check(local.build()), "no final server read")
    nothing(check(_server_final(H(), "k0", [[1, 0, 0, "seed"]]).build()), "no acknowledged edit")
    ok = _server_final(H().op(1, "write", "k0", "a", 0, 1, node=0, prev=0), "k0",
                       [[1, 0, 0, "seed"], [2, "a", 1, "n0"]])
    assert check(ok.build())["valid"] is True
    lost = H().op(1, "write", "k0", "a", 0, 1, node=0, prev=0).op(2, "server-write", "k0", "b", 2, 3)
    invalid(check(_server_final(lost, "k0", [[1, 0, 0, "seed"], [2, "a", 1, "n0"], [3, "b", 1, "server"]]).build()),
            "lost-edit")


def test_schema_migration_three_ways() -> None:
    check = schema_migration.check_schema
    nothing(check(writes_only()), "no ok reads through a node")
    user = {"id": "k0", "name": "user-k0", "email": "k0@example.com"}
    unschemed = H().op(1, "read", "k0", user, 0, 1, node=0, hit=True).build()
    nothing(check(unschemed), "no ok read of a user by code that says its schema")
    assert check(H().op(1, "read", "k0", user, 0, 1, node=0, hit=True, schema=1).build())["valid"] is True
    invalid(check(H().op(1, "read", "k0", user, 0, 1, node=0, hit=True, schema=2).build()), "old-schema-read")


def _herd_loads(epochs: list[int]) -> H:
    b = H()
    for i, e in enumerate(epochs):
        b.op(i, "read", "k0", 1, 10 * i, 10 * i + 5, version=1, db_load=True, epoch=e, node=0)
    return b


def test_thundering_herd_epochs_three_ways() -> None:
    check = thundering_herd.check_herd_epochs
    nothing(check(reads_only()), "no DB loads")
    nothing(check(H().op(1, "read", "k0", 1, 0, 1, db_load=True).build()), "no DB load reported an epoch")
    nothing(check(_herd_loads([0, 0, 0]).build()), "no expiry or invalidation event")
    assert check(_herd_loads([0, 1, 2]).build())["valid"] is True
    invalid(check(_herd_loads([0, 1, 1, 1]).build()), "herd")


def test_thundering_herd_late_fill_three_ways() -> None:
    check = thundering_herd.check_late_fill
    nothing(check(reads_only()), "no read reported a fill id")
    one_fill = H().op(1, "read", "k0", 1, 0, 1, version=1, fill=1).op(2, "read", "k1", 1, 0, 1, version=1, fill=2)
    nothing(check(one_fill.build()), "no key was filled twice")
    ok = H().op(1, "read", "k0", 1, 0, 1, version=1, fill=1).op(2, "read", "k0", 2, 2, 3, version=2, fill=2)
    assert check(ok.build())["valid"] is True
    bad = H().op(1, "read", "k0", 2, 0, 1, version=2, fill=1).op(2, "read", "k0", 1, 2, 3, version=1, fill=2, hit=True)
    invalid(check(bad.build()), "late-fill")


def _db_final(b: H, key: str, committed: list[list[Any]], t: float = 1000) -> H:
    value, version = committed[-1] if committed else (None, 0)
    return b.op(FINAL + 999, "read", key, value, t, t + 1, version=version, phase="final", source="db",
                inv_source="db", committed=committed)


def test_write_through_db_truth_three_ways() -> None:
    check = write_through.check_db_truth
    nothing(check(H().op(1, "write", "k", "a", 0, 1).build()), "no commit log")
    nothing(check(_db_final(H().op(2, "read", "k", None, 0, 1), "k", []).build()), "no ok reads of a value")
    ok = H().op(1, "write", "k", "a", 0, 1, version=1).op(2, "read", "k", "a", 2, 3, source="cache")
    assert check(_db_final(ok, "k", [["a", 1]]).build())["valid"] is True
    lost = H().op(1, "write", "k", "a", 0, 1, version=1)
    invalid(check(_db_final(lost, "k", []).build()), "lost-write")


def test_write_through_replay_three_ways() -> None:
    check = write_through.check_replay
    nothing(check(reads_only()), "no commit log")
    unwritten = _db_final(H().op(2, "read", "j", None, 0, 1), "k", [["a", 1]])
    nothing(check(unwritten.build()), "no ok read of a key with an acknowledged, committed write")
    ok = H().op(1, "write", "k", "a", 0, 10).op(2, "read-db", "k", "a", 20, 21, version=1)
    assert check(_db_final(ok, "k", [["a", 1]]).build())["valid"] is True
    nothing(check(_db_final(ok, "k", [["a", 1]]).build(), bound_s=0.001), "no DB fault")
    down = {"fault": "down", "target": "postgres", "name": "down(postgres)"}
    b = H().nemesis("start", 100, value=down).op(1, "write", "k", "a", 0, 10).op(1, "write", "k", "b", 110, 120)
    b.nemesis("stop", 200, value=down).op(2, "read-db", "k", "a", 300, 301, version=1)
    invalid(check(_db_final(b, "k", [["a", 1], ["b", 2]]).build(), bound_s=0.001), "stale-read")


# -- the final read, in words ------------------------------------------------------------------------

def test_who_names_the_final_read() -> None:
    assert who({"process": FINAL, "phase": "final"}) == "the final read (after heal)"
    assert Who({"process": FINAL + 999, "phase": "final"}) == "The final read (after heal)"
    assert who({"process": 3}) == "process 3" and Who({"process": 3}) == "Process 3"


def _stale_final_read() -> History:
    """k: 1 then 2 written and acknowledged; after heal node 0's cache still returns 1."""
    b = H().op(1, "write", "k", 1, 0, 10, version=1).op(1, "write", "k", 2, 20, 30, version=2)
    b.op(FINAL, "read", "k", 1, 1000, 1001, version=1, phase="final", node=0, source="cache", hit=True)
    b.op(FINAL + 999, "read", "k", 2, 1002, 1003, version=2, phase="final", source="db", inv_source="db")
    return b.build()


def _says_final_read(r: dict[str, Any], typ: str) -> None:
    invalid(r, typ)
    texts = [a["explanation"] for a in r["anomalies"] if a["type"] == typ]
    assert any("final read (after heal)" in t for t in texts), texts
    assert not any(str(FINAL) in t for t in texts), texts


def test_explanations_name_the_final_read_not_its_process_id() -> None:
    h = _stale_final_read()
    _says_final_read(run(versions.check, h), "stale-read")
    _says_final_read(run(staleness.check, h, bound_ms=10), "stale-read")
    r = run(linearizable.check, h)
    _says_final_read(r, "nonlinearizable")
    assert r["anomalies"][0]["explanation"].startswith("The final read (after heal) returned k = 1")
    torn = H().op(1, "write", "o", {"a": 1, "b": 1}, 0, 1).op(1, "write", "o", {"a": 2, "b": 2}, 2, 3)
    torn.op(FINAL, "read", "o", {"a": 1, "b": 2}, 100, 101, phase="final", node=0, source="cache", hit=True)
    _says_final_read(run(integrity.check, torn.build()), "torn-read")
    garbage = H().op(1, "write", "k", 1, 0, 1, version=1)
    garbage.op(FINAL + 999, "read", "k", 99, 100, 101, version=5, phase="final", source="db", inv_source="db")
    _says_final_read(run(versions.check, garbage.build()), "garbage-read")
