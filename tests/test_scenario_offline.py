"""offline-sync (seed scenario 8) on the real cluster: replicas with a local SQLite cache go offline.

Replica 0's links (``postgres.sync0``, ``redis.sync0``) go ``down`` from 20% to 80% of the run while
server edits and local edits continue. Positive controls: push only never learns what was pushed
while it was offline (the shared convergence checker: ``divergent``); delta sync converges but
its blind upload overwrites server edits it never saw (``lost-edit``). Negative control: version
vectors detect every such conflict, resolve it by the stated rule (server wins) and record it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare
from workloads.offline_sync import check_lost_edits

KW = dict(keys=50, time_limit=4.0, nodes=2, faults="offline")


def _run(cluster: Cluster, tmp_path: Path, strategy: str, **kw) -> dict:
    cfg = RunConfig(workload="offline-sync", strategy=strategy, reports=str(tmp_path), seed=kw.pop("seed", 8),
                    **(KW | kw))
    return Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()


def _offline_verified(res: dict) -> None:
    probes = [p for p in res["faults"] if "sync0" in p["fault"]]
    assert probes and all(p.get("verified") for p in probes), res["faults"]


def test_push_only_never_converges(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "offline-push-only")
    _offline_verified(res)
    conv = res["checkers"]["convergence"]
    assert res["valid"] is False and conv["valid"] is False, conv
    # the link is down for 60% of the run while server edits go on (measured 13-15 keys diverged)
    assert conv["diverged"] >= 3
    a = conv["anomalies"][0]
    assert a["type"] in ("divergent", "not-converged") and "node 0" in a["explanation"]  # renamed in adab007


def test_delta_sync_converges_but_loses_conflicting_edits(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "offline-delta-sync")
    _offline_verified(res)
    assert res["checkers"]["convergence"]["valid"] is True, res["checkers"]["convergence"]
    le = res["checkers"]["lost-edits"]
    assert le["valid"] is False and le["lost_edits"] >= 1 and le["conflicts_recorded"] == 0, le
    a = le["anomalies"][0]
    assert a["type"] == "lost-edit" and "vanished silently" in a["explanation"]
    # by construction: the first full pull, then one on the reconnect (0.8 s before the end)
    assert le["replicas"]["0"]["reconnects"] >= 1 and le["replicas"]["0"]["syncs"] >= 2


def test_version_vectors_detect_and_record_conflicts(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "offline-vv")
    _offline_verified(res)
    le = res["checkers"]["lost-edits"]
    assert res["checkers"]["convergence"]["valid"] is True, res["checkers"]["convergence"]
    assert le["valid"] is True and le["lost_edits"] == 0, le
    assert le["conflicts_recorded"] >= 1 and le["resolved_edits"] >= 1, le
    assert set(le["conflict_resolutions"]) == {"server-wins: server value kept"}
    assert res["valid"] is True


def test_bad_parameters_are_rejected_before_anything_starts() -> None:
    for strategy, params, msg in (("offline-periodic", {"period": -1}, "period"),
                                  ("offline-periodic", {"period": 0}, "period"),
                                  ("offline-vv", {"rule": "coin-flip"}, "rule"),
                                  ("offline-delta-sync", {"overlap": -0.5}, "overlap")):
        with pytest.raises(ConfigError, match=msg):
            prepare(RunConfig(workload="offline-sync", strategy=strategy, params=params))
    with pytest.raises(ConfigError, match="nodes"):
        prepare(RunConfig(workload="offline-sync", strategy="offline-vv", nodes=0))
    with pytest.raises(ConfigError, match="cannot serve"):
        prepare(RunConfig(workload="register", strategy="offline-vv"))


def _hist(log: list, conflicts: list, edits: list) -> list[dict]:
    h: list[dict] = []
    for i, (f, key, value, node, prev) in enumerate(edits):
        h.append({"index": len(h), "time_ns": i * 10, "process": i, "type": "invoke", "f": f, "key": key,
                  "value": value})
        h.append({"index": len(h), "time_ns": i * 10 + 5, "process": i, "type": "ok", "f": f, "key": key,
                  "value": value, "node": node, "prev": prev})
    h.append({"index": len(h), "time_ns": 1000, "process": 99, "type": "invoke", "f": "read", "key": "k0",
              "value": None, "phase": "final"})
    h.append({"index": len(h), "time_ns": 1001, "process": 99, "type": "ok", "f": "read", "key": "k0", "value": 0,
              "phase": "final", "source": "db", "log": log, "conflicts": conflicts})
    return h


def test_lost_edits_checker_both_ways() -> None:
    edits = [("server-write", "k0", 10, 0, None), ("write", "k0", 11, 1, 0)]
    # replica 1's edit (based on version 1) overwrote the server's version 2: lost, nothing recorded
    lost = check_lost_edits(_hist([[1, 0, 0, "seed"], [2, 10, 1, "server"], [3, 11, 1, "n1"]], [], edits))
    assert lost["valid"] is False and lost["lost_edits"] == 1
    assert "never saw 10" in lost["anomalies"][0]["explanation"]
    # the same collision detected: server wins, the local edit is recorded as the loser
    ok = check_lost_edits(_hist([[1, 0, 0, "seed"], [2, 10, 1, "server"]],
                                [{"winner": 10, "loser": 11, "loser_origin": "n1", "rule": "server-wins", "node": 1,
                                  "server_version": 2}], edits))
    assert ok["valid"] is True and ok["resolved_edits"] == 1 and ok["conflicts_recorded"] == 1
    # a local edit that never reached the server and no later edit built on it: lost
    gone = check_lost_edits(_hist([[1, 0, 0, "seed"], [2, 10, 1, "server"]], [], edits))
    assert gone["valid"] is False and gone["lost_by_kind"] == {"never-uploaded:write": 1}
    # ... but superseded by a later local edit on the same replica that saw it: fine
    chained = edits + [("write", "k0", 12, 1, 11)]
    fine = check_lost_edits(_hist([[1, 0, 0, "seed"], [2, 10, 1, "server"], [3, 12, 2, "n1"]], [], chained))
    assert fine["valid"] is True, fine
    # an upload retried after its reply was lost committed twice: one edit, not an overwrite
    twice = check_lost_edits(_hist([[1, 0, 0, "seed"], [2, 10, 1, "server"], [3, 11, 2, "n1"], [4, 11, 2, "n1"]],
                                   [], edits))
    assert twice["valid"] is True, twice
