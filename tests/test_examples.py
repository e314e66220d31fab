"""The reference services in examples/ (issue 15), certified as black boxes against the real
cluster, side by side with the Python strategy of the same design on the same workload, plan and
seed: the verdict classes must match (cache-aside and pub/sub fail, versioned CAS and a Kafka
consumer group hold), with the anomaly explained. `make` (scripts/bootstrap.sh) builds both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.runner import Run, RunConfig, prepare

ROOT = Path(__file__).resolve().parents[1]
GO = ROOT / "examples" / "go-cache" / "bin" / "go-cache"
JAVA_DIR = ROOT / "examples" / "java-cache"


def _run(cluster: Cluster, tmp_path: Path, workload: str, **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload=workload, reports=str(tmp_path), quiesce=kw.pop("quiesce", 0.5), **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()


def _verified(res: dict[str, Any]) -> None:
    assert res["faults"] and all(p.get("verified") for p in res["faults"]), res["faults"]


def _failing(res: dict[str, Any]) -> set[str]:
    return {name for name, r in res["checkers"].items() if r["valid"] is False}


@pytest.fixture(scope="module")
def go_cache() -> Path:
    if not GO.exists():
        pytest.fail(f"{GO} is missing: `make test` builds it (examples/go-cache/build.sh)")
    return GO


GO_CASES = [
    # (workload, Python design, Go mode, run options, the verdict both must give)
    # Redis down for the second half: a DEL after a commit is lost, the old value stays cached (5 s TTL)
    ("register", "cache-aside", "cache-aside", dict(faults="down:redis@50%+50%", params={"ttl": 5}, seed=11,
                                                     time_limit=2.0, rate=100, concurrency=4), False),
    ("register", "versioned-cas", "versioned-cas", dict(faults="down:redis@50%+50%", seed=11, time_limit=2.0,
                                                         rate=100, concurrency=4), True),
    ("write-through-db-failure", "versioned-cas", "versioned-cas",
     dict(faults="db-failures", seed=7, time_limit=5.0, checkers=["db-truth", "replay", "versions", "durability"]),
     True),
]


@pytest.mark.parametrize("workload, design, mode, kw, valid", GO_CASES,
                         ids=[f"{w}-{m}" for w, _, m, _, _ in GO_CASES])
def test_go_reference_service_matches_the_python_design(cluster: Cluster, tmp_path: Path, go_cache: Path,
                                                        workload: str, design: str, mode: str, kw: dict[str, Any],
                                                        valid: bool) -> None:
    py = _run(cluster, tmp_path / "py", workload, strategy=design, **kw)
    go = _run(cluster, tmp_path / "go", workload, app=f"env CACHE_MODE={mode} {go_cache}", nodes=2, **kw)
    _verified(py)
    _verified(go)
    assert py["valid"] is valid, py["checkers"]
    assert go["valid"] is valid, {n: r.get("explanation") or r.get("reason") for n, r in go["checkers"].items()}
    assert go["strategy"] == "app:go-cache" and go["app"]["protocol_errors"] == 0
    if not valid:  # the same anomaly, in words
        assert _failing(py) & _failing(go), (_failing(py), _failing(go))
        first = next(r for r in go["checkers"].values() if r["valid"] is False)["anomalies"][0]
        assert first["explanation"].split()  # a sentence naming the ops


@pytest.fixture(scope="module")
def java_cache() -> Path:
    if not (JAVA_DIR / "target" / "java-cache.jar").exists():
        pytest.fail(f"{JAVA_DIR}/target/java-cache.jar is missing: `make test` builds it (examples/java-cache/build.sh)")
    return JAVA_DIR


@pytest.mark.parametrize("design, app_file, valid", [
    ("sub-pubsub", "app-pubsub.toml", False),  # what was published while the JVM was dead is gone
    ("sub-kafka-group", "app-kafka.toml", True),  # the restarted consumer replays its group's backlog
])
def test_java_reference_service_matches_the_python_design(cluster: Cluster, tmp_path: Path, java_cache: Path,
                                                          design: str, app_file: str, valid: bool) -> None:
    kw = dict(seed=1, time_limit=8.0)
    py = _run(cluster, tmp_path / "py", "crashed-subscriber", strategy=design, **kw)
    java = _run(cluster, tmp_path / "java", "crashed-subscriber", app_file=str(java_cache / app_file), **kw)
    _verified(py)
    _verified(java)
    assert "process is gone" in java["faults"][0]["observed"]  # the real JVM was SIGKILLed
    for res in (py, java):
        rec = res["checkers"]["crash-recovery"]
        assert rec["valid"] is valid, (res["strategy"], rec.get("explanation"))
    assert java["app"]["protocol_errors"] == 0 and java["app"]["crashes"][1] == 1
    if not valid:
        words = [a["explanation"] for a in java["checkers"]["crash-recovery"]["anomalies"]]
        assert any("stale forever" in w for w in words), words[:3]


HERD = [  # (Python design, judged by its own fill epochs; Go mode, judged by PostgreSQL's statement log)
    ("herd-none", "cache-aside", False),  # every reader of an expired key loads it: a herd
    ("herd-lock", "lock", True),  # one loader per expiry, the others wait for its fill
]


@pytest.mark.parametrize("design, mode, valid", HERD, ids=[m for _, m, _ in HERD])
def test_go_reference_service_herd_counted_on_the_db_side(cluster: Cluster, tmp_path: Path, go_cache: Path,
                                                          design: str, mode: str, valid: bool) -> None:
    kw = dict(seed=7, time_limit=4.0, nodes=2, params={"ttl": 1})
    py = _run(cluster, tmp_path / "py", "thundering-herd", strategy=design, **kw)
    go = _run(cluster, tmp_path / "go", "thundering-herd", app=f"env CACHE_MODE={mode} {go_cache}", **kw)
    _verified(go)
    assert py["checkers"]["herd-epochs"]["valid"] is valid
    db = go["checkers"]["herd-db"]
    assert "herd-epochs" not in go["checkers"]  # a black box's own word about its loads is not taken
    assert db["valid"] is valid and db["source"] == "postgres statement log", db
    assert db["events"] >= 3  # expiries after the cold start, seen by the DB
    if valid:
        assert db["loads_per_event"]["max"] == 1
    else:
        assert db["loads_per_event"]["max"] >= 4 and "PostgreSQL logged" in db["anomalies"][0]["explanation"]


SCHEMA = [  # (Java mapping file, the verdict strategies/schema.py's design of the same name gives)
    ("app-schema-plain.toml", False),  # user:ID: the v2 build serves what the v1 build cached, in the old format
    ("app-schema-versioned.toml", True),  # user:v{schema}:ID: the v2 build never reads a v1 entry
]


@pytest.mark.parametrize("app_file, valid", SCHEMA, ids=["plain", "versioned"])
def test_java_schema_migration_rolling_deploy(cluster: Cluster, tmp_path: Path, java_cache: Path, app_file: str,
                                              valid: bool) -> None:
    """A rolling v1 -> v2 deploy of the Java users service (APP_MODE=users, SCHEMA_BUILD=1 then 2) across
    the schema-migration's ALTER TABLE, as `serve-node schema-plain|schema-versioned -p build=1/2` is in
    tests/test_app_nodes.py: same workload, same seed, same verdicts."""
    res = _run(cluster, tmp_path, "schema-migration", app_file=str(java_cache / app_file), nodes=2, seed=3,
               time_limit=8.0)
    _verified(res)
    migrate = next(p for p in res["faults"] if "migrate" in p["fault"])["observed"]
    assert "rolling deploy of 2 node(s) to the next build" in migrate, migrate
    assert res["app"]["protocol_errors"] == 0 and not res["app"]["exits"], res["app"]
    r = res["checkers"]["schema"]
    assert r["deploy_s"] is not None, r  # the v2 build answered reads: its verdict is not vacuous
    assert r["valid"] is valid, r.get("anomalies", [])[:2]
    if not valid:  # v2 code served an object the v1 code cached, without phone, address, updated_at
        assert "cached in the old format" in r["anomalies"][0]["explanation"], r["anomalies"][0]
        assert r["critical_missing"] > 0
