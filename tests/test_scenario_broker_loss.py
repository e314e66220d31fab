"""broker-loss (durable invalidation under broker loss) on three real Kafka brokers.

The invalidation partition is led by kafka-2; its followers are cut off from it (partition of the
``kafka-2.repl`` link), then kafka-2 is killed. Positive control: acks=1 loses invalidations the
producer had been told were written (missing from the topic after heal) and nodes keep stale entries
for good. Negative control: acks=all with min.insync.replicas=2 loses none and every node converges.
The ``missed-invalidations`` checker is also judged both ways on hand-written histories.

One cluster (Redis, PostgreSQL, three brokers) serves the module's runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import make_state

from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare
from harness.topology import resolve
from workloads.broker_loss import WORKLOAD, check_missed_invalidations

pytestmark = pytest.mark.cluster  # real servers (not one of conftest's fixtures)
SERVICES = ("redis", "postgres", "kafka")
FINAL = 1_000_000


@pytest.fixture(scope="module")
def bcluster() -> Iterator[Cluster]:
    c = Cluster(services=SERVICES, state=make_state(), topology=resolve(WORKLOAD.topology, None, SERVICES))
    try:
        c.up()
        yield c
    finally:
        c.down()
        c.remove()


def _run(c: Cluster, tmp_path: Path, strategy: str, seed: int = 7) -> dict[str, Any]:
    for svc in c.svc.values():  # a run that failed midway may have left a broker down
        if not svc.running():
            svc.start()
    cfg = RunConfig(workload="broker-loss", strategy=strategy, seed=seed, reports=str(tmp_path), time_limit=8)
    return Run(prepare(cfg), cluster=c, progress=False).execute()


def _faults_verified(res: dict[str, Any]) -> None:
    assert not res.get("fault_errors"), res.get("fault_errors")
    kinds = {f["fault"].split("(")[0]: f for f in res["faults"]}
    assert set(kinds) == {"partition", "kill"}, res["faults"]
    assert all(f["verified"] is True for f in res["faults"]), res["faults"]


def test_acks1_loses_acknowledged_invalidations_when_the_leader_dies(bcluster: Cluster, tmp_path: Path) -> None:
    res = _run(bcluster, tmp_path, "sub-kafka-acks1")
    _faults_verified(res)
    mi = res["checkers"]["missed-invalidations"]
    print("acks=1:", {k: mi[k] for k in ("acked_writes", "bus_events", "lost_invalidations", "stranded_keys",
                                        "not_converged")})
    assert res["valid"] is False and mi["valid"] is False
    assert mi["bus_error"] is None
    # the followers were cut off when the leader died: what it alone had acknowledged is gone
    assert mi["lost_invalidations"] > 0
    assert mi["stranded_keys"] > 0  # and for some keys no later event will ever invalidate them
    assert {a["type"] for a in mi["anomalies"]} >= {"lost-invalidation"}
    lost = [a for a in mi["anomalies"] if a["type"] == "lost-invalidation"]
    assert "no subscriber can have applied it" in lost[0]["explanation"]


def test_acks_all_with_min_isr_2_loses_nothing(bcluster: Cluster, tmp_path: Path) -> None:
    res = _run(bcluster, tmp_path, "sub-kafka-acks-all")
    _faults_verified(res)
    mi = res["checkers"]["missed-invalidations"]
    print("acks=all:", {k: mi[k] for k in ("acked_writes", "bus_events", "lost_invalidations", "not_converged")})
    assert res["valid"] is True, {n: r.get("anomalies", [])[:2] for n, r in res["checkers"].items()}
    assert mi["valid"] is True and mi["acked_writes"] > 0 and mi["bus_events"] >= mi["acked_writes"]
    assert mi["lost_invalidations"] == 0 and mi["not_converged"] == 0
    assert res["checkers"]["convergence"]["valid"] is True


@pytest.mark.parametrize(("kw", "needle"), [
    ({"strategy": "sub-kafka-acks1", "params": {"acks": "2"}}, "acks must be one of all, 1"),
    ({"strategy": "sub-kafka-acks-all", "params": {"delivery_timeout": -1}}, "delivery_timeout must be > 0"),
    ({"topology": "kafka=1,min_isr=1"}, "kafka-2"),  # the plan kills a broker this topology lacks
    ({"topology": "kafka=3,min_isr=4"}, "min_isr must be between 1 and the 3 broker"),
])
def test_bad_input_is_a_clear_error(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        prepare(RunConfig(workload="broker-loss", **kw))


# -- the checker both ways, on hand-written histories ----------------------------------------------
def _history(writes: list[tuple[str, int, str]], bus: dict[str, list[int]] | None, node_final: dict[str, int],
             db_final: dict[str, int], bus_error: str | None = None) -> list[dict[str, Any]]:
    """Writes (key, version, type) by node 1, then one final round: node 0 reads ``node_final``, the
    DB ``db_final`` (with the topic's contents ``bus``, or ``bus_error``)."""
    out: list[dict[str, Any]] = []
    t = 0

    def add(rec: dict[str, Any]) -> None:
        nonlocal t
        t += 1_000_000
        out.append(dict(rec, time_ns=t, index=len(out)))

    for p, (key, ver, typ) in enumerate(writes):
        add({"process": p, "type": "invoke", "f": "write", "key": key, "value": ver, "node": 1})
        add({"process": p, "type": typ, "f": "write", "key": key, "value": ver, "node": 1,
             **({"version": ver} if typ == "ok" else {"error": "TimeoutError"})})
    for key, ver in node_final.items():
        add({"process": FINAL, "type": "invoke", "f": "read", "key": key, "value": None, "node": 0, "phase": "final"})
        add({"process": FINAL, "type": "ok", "f": "read", "key": key, "value": ver, "version": ver, "node": 0,
             "phase": "final", "source": "cache"})
    for key, ver in db_final.items():
        extra = {"bus_error": bus_error} if bus is None else {
            "bus_versions": bus.get(key, []), "bus_events": sum(len(v) for v in bus.values())}
        add({"process": FINAL + 999, "type": "invoke", "f": "read", "key": key, "value": None, "source": "db",
             "phase": "final"})
        add({"process": FINAL + 999, "type": "ok", "f": "read", "key": key, "value": ver, "version": ver,
             "source": "db", "phase": "final", **extra})
    return out


def test_checker_valid_when_every_acknowledged_event_is_in_the_topic() -> None:
    h = _history([("a", 1, "ok"), ("a", 2, "ok"), ("b", 1, "ok")], {"a": [1, 2], "b": [1]}, {"a": 2, "b": 1},
                 {"a": 2, "b": 1})
    r = check_missed_invalidations(h)
    assert r["valid"] is True and r["acked_writes"] == 3 and r["lost_invalidations"] == 0 and r["bus_events"] == 3


def test_checker_invalid_for_a_lost_event_and_the_stale_node() -> None:
    h = _history([("a", 1, "ok"), ("b", 1, "ok")], {"b": [1]}, {"a": 0, "b": 1}, {"a": 1, "b": 1})
    r = check_missed_invalidations(h)
    assert r["valid"] is False
    assert (r["lost_invalidations"], r["stranded_keys"], r["not_converged"]) == (1, 1, 1)
    assert [a["type"] for a in r["anomalies"]] == ["lost-invalidation", "not-converged"]
    assert r["anomalies"][0]["key"] == "a" and "no later event" in r["anomalies"][0]["explanation"]


def test_checker_invalid_for_a_lost_event_even_when_a_later_one_covers_it() -> None:
    h = _history([("a", 1, "ok"), ("a", 2, "ok")], {"a": [2]}, {"a": 2}, {"a": 2})
    r = check_missed_invalidations(h)
    assert r["valid"] is False and r["lost_invalidations"] == 1 and r["stranded_keys"] == 0 and r["not_converged"] == 0
    assert "covers the key" in r["anomalies"][0]["explanation"]


def test_checker_ignores_unacknowledged_writes_missing_from_the_topic() -> None:
    h = _history([("a", 1, "ok"), ("a", 2, "info")], {"a": [1]}, {"a": 1}, {"a": 1})
    assert check_missed_invalidations(h)["valid"] is True


def test_checker_unknown_without_the_topic_or_without_writes() -> None:
    r = check_missed_invalidations(_history([("a", 1, "ok")], None, {"a": 1}, {"a": 1}, bus_error="TimeoutError"))
    assert r["valid"] == "unknown" and "could not be read" in r["error"]
    r = check_missed_invalidations(_history([], {}, {"a": 0}, {"a": 0}))
    assert r["valid"] == "unknown" and "no acknowledged writes" in r["reason"]
    # a node that never converged is invalid whatever the topic says
    r = check_missed_invalidations(_history([("a", 1, "ok")], None, {"a": 0}, {"a": 1}, bus_error="TimeoutError"))
    assert r["valid"] is False and r["not_converged"] == 1
