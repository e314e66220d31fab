"""App nodes (issue 15): the user's service as real processes, driven over the node protocol.

Against the real cluster: the same workload, strategy and seed give the same verdict class
in-process and as an app node (`cachecert serve-node`); node faults act on the real process and are
verified by probes on it; a node's own link can be cut alone; a node that exits by itself is an
event and is restarted; malformed answers are counted and make the verdict unknown; mapping mode
certifies a service with its own REST API; bad input is one line, a distinct exit code, and nothing
is left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.history import load_history
from core.verdict import Exit
from harness.appnodes import AppError, AppSpec
from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare

ROOT = Path(__file__).resolve().parents[1]
SERVE = f"{sys.executable} -m harness.cli serve-node"
TOY = f"env PYTHONPATH={ROOT} {sys.executable} {ROOT}/tests/apps/toy_service.py"


def _run(cluster: Cluster, tmp_path: Path, workload: str, **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload=workload, reports=str(tmp_path), quiesce=kw.pop("quiesce", 0.3), **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()


def _verified(res: dict[str, Any]) -> None:
    assert res["faults"] and all(p.get("verified") for p in res["faults"]), res["faults"]


# -- the same verdict class both ways ---------------------------------------------------------------
CONFORMANCE = [
    # cache-aside: a slow Redis turns the fill race into stale reads (positive control)
    ("register", "cache-aside", dict(params={"ttl": 0.05}, faults="redis-latency", seed=2, time_limit=4.0,
                                     concurrency=8), False),
    ("register", "no-cache", dict(faults="db-latency", seed=3, time_limit=3.0, concurrency=6), True),
    # write-through: the cache is written before a DB that is down (aborted reads) vs a versioned CAS after it
    ("write-through-db-failure", "cache-then-db", dict(faults="db-down", seed=7, time_limit=3.0,
                                                       checkers=["db-truth"]), False),
    ("write-through-db-failure", "versioned-cas", dict(faults="db-failures", seed=7, time_limit=4.0,
                                                       checkers=["db-truth", "versions", "durability"]), True),
]


@pytest.mark.parametrize("workload, strategy, kw, valid", CONFORMANCE,
                         ids=[f"{w}-{s}" for w, s, _, _ in CONFORMANCE])
def test_in_process_and_app_node_give_the_same_verdict_class(cluster: Cluster, tmp_path: Path, workload: str,
                                                             strategy: str, kw: dict[str, Any], valid: bool) -> None:
    inproc = _run(cluster, tmp_path / "in", workload, strategy=strategy, **kw)
    app = _run(cluster, tmp_path / "app", workload, app=f"{SERVE} {strategy}", **kw)
    _verified(inproc)
    _verified(app)
    assert inproc["valid"] is valid, inproc["checkers"]
    assert app["valid"] is valid, app["checkers"]
    assert app["strategy"] == f"app:{strategy}" and app["app"]["protocol_errors"] == 0
    if not valid:  # the same anomaly, explained in words
        kinds = {name for name, r in inproc["checkers"].items() if r["valid"] is False}
        assert kinds & {name for name, r in app["checkers"].items() if r["valid"] is False}


# -- node faults on real processes -----------------------------------------------------------------
def test_crash_pause_and_graceful_restart_act_on_the_real_process(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "register", app=f"{SERVE} no-cache", nodes=3, time_limit=4.0, seed=1,
               faults="crash-node:0@10%+25%;pause-node:1@37.5%+40%;restart-node:2@80%+15%")
    _verified(res)
    observed = {p["fault"].partition("(")[0]: p["observed"] for p in res["faults"]}
    assert "process is gone" in observed["crash-node"]
    assert "state T" in observed["pause-node"]
    assert "stopped on SIGTERM" in observed["restart-node"]
    assert res["app"]["crashes"][0] == 1 and res["app"]["exits"] == []  # ours, not events
    assert res["valid"] is True, res["checkers"]  # no-cache loses nothing to a dead node
    log = (Path(res["run_dir"]) / "logs" / "node0.log").read_text()
    assert log.count("--- cachecert: starting node0") == 2  # started, and started again after the crash
    # a hung (paused) node is bounded by the op timeout: its ops end as info within about 1 s (the pause,
    # 1.6 s, outlasts the 1 s op timeout: a pause of exactly 1 s let every op be answered at SIGCONT)
    h = load_history(Path(res["run_dir"]) / "history.jsonl")
    start: dict[Any, int] = {}
    hung = []
    for o in h:
        if o.get("node") == 1 and o.get("phase") != "final":
            if o["type"] == "invoke":
                start[o["process"]] = o["time_ns"]
            elif o["type"] == "info":
                hung.append((o["time_ns"] - start[o["process"]]) / 1e9)
    assert hung and max(hung) < 1.0 + 0.5, hung


def test_one_nodes_link_is_cut_alone(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "register", app=f"{SERVE} no-cache", nodes=2, time_limit=3.0, seed=4,
               concurrency=4, faults="down:node1/postgres@20%+50%")
    _verified(res)
    h = load_history(Path(res["run_dir"]) / "history.jsonl")
    load = [o for o in h if o.get("type") in ("ok", "fail", "info") and o.get("phase") != "final"
            and o.get("process") != "nemesis"]
    errors = {o["node"] for o in load if o["type"] != "ok"}
    assert errors == {1}, "node0's link stayed up; node1's was down"
    assert {o["node"] for o in load if o["type"] == "ok"} == {0, 1}
    assert all("node1" in o["error"] for o in load if o["type"] != "ok")


def test_a_node_link_fault_needs_app_nodes_and_that_node() -> None:
    with pytest.raises(ConfigError, match="needs --app"):
        prepare(RunConfig(workload="register", faults="down:node1/redis@1+1"))
    with pytest.raises(ConfigError, match="has 2 app node"):
        prepare(RunConfig(workload="register", app="x", nodes=2, faults="down:node2/redis@1+1"))
    with pytest.raises(ConfigError, match="pause-node acts on an app node"):
        prepare(RunConfig(workload="register", faults="pause-node:0@1+1"))


# -- the service misbehaving -------------------------------------------------------------------------
def test_a_node_that_exits_by_itself_is_recorded_and_restarted(cluster: Cluster, tmp_path: Path) -> None:
    mark = tmp_path / "exited"
    res = _run(cluster, tmp_path, "register", app=f"env TOY_MODE=exit-once TOY_AFTER=150 TOY_MARK={mark} {TOY}",
               nodes=1, time_limit=3.0, seed=5, concurrency=4)
    assert mark.exists()
    assert [e["status"] for e in res["app"]["exits"]] == [3]
    h = load_history(Path(res["run_dir"]) / "history.jsonl")
    events = [o for o in h if o.get("f") == "app-exit"]
    assert len(events) == 1 and events[0]["value"]["node"] == 0
    after = [o for o in h if o.get("type") == "ok" and o.get("time_ns", 0) > events[0]["time_ns"]
             and o.get("phase") != "final"]
    assert len(after) > 50  # the run went on against the restarted node
    assert res["counts"]["info"] >= 1  # what was in flight when it died
    from harness.report import render  # the report lists it, with its exit status

    render(res["run_dir"], write_png=False)
    html = (Path(res["run_dir"]) / "report.html").read_text()
    assert 'id="app-exits"' in html and "<td>node0</td>" in html


def test_malformed_answers_beyond_one_percent_make_the_verdict_unknown(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, "register", app=f"env TOY_MODE=garbage TOY_EVERY=20 {TOY}", time_limit=2.0,
               seed=6, concurrency=4, faults="none")
    assert res["app"]["protocol_errors"] > 10
    assert res["valid"] == "unknown" and res["exit_code"] == Exit.UNKNOWN
    assert "malformed" in res["unknown_reasons"][0] and "%" in res["unknown_reasons"][0]


def test_mapping_mode_certifies_a_service_through_its_own_api(cluster: Cluster, tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text(f'''command = "env TOY_MODE=rest {TOY}"
name = "toy-rest"

[ops.read]
method = "GET"
path = "/items/{{key}}"
value = "/item/value"
version = "/item/version"
source = "/source"
fail_status = [409]

[ops.write]
method = "PUT"
path = "/items/{{key}}"
body = '{{"value": {{value}}}}'
version = "/item/version"
fail_status = [409]
''')
    res = _run(cluster, tmp_path, "register", app_file=str(app), params={"ttl": 0.05}, faults="redis-latency",
               seed=2, time_limit=4.0, concurrency=8)
    _verified(res)
    assert res["strategy"] == "toy-rest" and res["app"]["protocol_errors"] == 0
    assert res["valid"] is False and res["checkers"]["versions"]["valid"] is False  # cache-aside's stale reads
    h = load_history(Path(res["run_dir"]) / "history.jsonl")
    assert any(o.get("source") == "cache" and o.get("version") for o in h if o.get("type") == "ok")


# -- bad input ---------------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _no_leftovers(run_root: Path) -> None:
    out = subprocess.run(["pgrep", "-f", "toy_service.py|serve-node|no-such-binary"], capture_output=True, text=True)
    mine = [p for p in out.stdout.split() if str(run_root) in Path(f"/proc/{p}/environ").read_bytes().decode(
        errors="replace")] if out.stdout else []
    assert not mine


@pytest.mark.parametrize("app, code, words", [
    ("no-such-binary --flag", Exit.USAGE, ["node0 exited with status 127", "command not found"]),
    ("sh -c 'echo boom >&2; exit 4'", Exit.HARNESS, ["node0 exited with status 4", "boom"]),
])
def test_an_app_that_never_starts_is_one_line_naming_the_node(session_cluster: Cluster, tmp_path: Path, app: str,
                                                               code: int, words: list[str]) -> None:
    r = _cli("run", "register", "--app", app, "-t", "1", "--no-progress", "--reports", str(tmp_path))
    assert r.returncode == code, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert all(w in last for w in words), last
    _no_leftovers(tmp_path)


def test_an_app_never_ready_is_bounded_by_its_start_timeout(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text(f'command = "{sys.executable} -c \\"import time; print(\'starting\', flush=True); '
                   f'time.sleep(60)\\""\nstart_timeout_s = 1.5\n')
    r = _cli("run", "register", "--app-file", str(app), "-t", "1", "--no-progress", "--reports", str(tmp_path))
    assert r.returncode == Exit.HARNESS, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "node0 not ready after 1.5 s" in last and "starting" in last, last


def test_a_protocol_version_mismatch_is_refused(tmp_path: Path) -> None:
    r = _cli("run", "register", "--app", f"env TOY_MODE=v2 {TOY}", "-t", "1", "--no-progress",
             "--reports", str(tmp_path))
    assert r.returncode == Exit.USAGE, r.stderr
    assert "speaks node protocol 2; cachecert speaks 1" in r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("text, words", [
    ('command = "x"\nport = 3\n', ["app.toml:2: unknown key 'port'"]),
    ('workdir = "."\n', ["'command'", "required"]),
    ('command = "x"\n[ops.read]\nmethod = "GET"\npath = "items"\n', ["app.toml:2", "path must start with '/'"]),
    ('command = [\n', ["not TOML"]),
])
def test_a_bad_app_file_is_one_line(tmp_path: Path, text: str, words: list[str]) -> None:
    app = tmp_path / "app.toml"
    app.write_text(text)
    with pytest.raises(AppError) as e:
        AppSpec.from_file(app)
    assert e.value.exit_code == Exit.USAGE and all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


def test_what_cannot_be_driven_as_a_black_box_says_so_before_starting(tmp_path: Path) -> None:
    r = _cli("run", "feature-flags", "--app", "anything", "--no-progress", "--reports", str(tmp_path))
    assert r.returncode == Exit.USAGE
    assert "cannot be driven as a black box" in r.stderr
    app = tmp_path / "app.toml"
    app.write_text('command = "x"\n[ops.read]\npath = "/r/{key}"\n')
    with pytest.raises(ConfigError, match=r"no \[ops.write\] mapping"):
        prepare(RunConfig(workload="register", app_file=str(app)))
    with pytest.raises(ConfigError, match="exclude each other"):
        prepare(RunConfig(workload="register", app="x", strategy="cache-aside"))


# -- a real process crashed and restarted: what its surviving cache serves --------------------------
@pytest.mark.parametrize("strategy, valid", [("sub-pubsub", False), ("sub-kafka-group", True)])
def test_crashed_subscriber_with_the_real_process_killed(cluster: Cluster, tmp_path: Path, strategy: str,
                                                         valid: bool) -> None:
    res = _run(cluster, tmp_path, "crashed-subscriber", app=f"{SERVE} {strategy}", seed=1, time_limit=8.0)
    _verified(res)
    assert "process is gone" in res["faults"][0]["observed"]
    rec = res["checkers"]["crash-recovery"]
    assert rec["valid"] is valid, rec.get("explanation") or rec
    if not valid:  # pub/sub lost what was published while the process was dead: stale forever
        assert any("stale forever" in a["explanation"] for a in rec["anomalies"])


def test_a_rolling_deploy_moves_every_node_to_the_next_build(cluster: Cluster, tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text(f'command = "{SERVE} no-cache"\nnext = "{SERVE} versioned-cas"\nname = "rolling"\n')
    res = _run(cluster, tmp_path, "register", app_file=str(app), nodes=2, time_limit=4.0, seed=2, concurrency=4,
               faults="deploy:all@40%+0")
    _verified(res)
    assert "2 of 2 node(s) run the next build" in res["faults"][0]["observed"]
    for i in (0, 1):
        log = (Path(res["run_dir"]) / "logs" / f"node{i}.log").read_text()
        assert f"starting node{i}: {SERVE} versioned-cas" in log and "serve-node versioned-cas" in log
    assert res["valid"] is True, res["checkers"]  # both builds are correct designs; the deploy loses nothing
    with pytest.raises(ConfigError, match="no 'next' command"):
        app.write_text(f'command = "{SERVE} no-cache"\n')
        prepare(RunConfig(workload="register", app_file=str(app), faults="deploy:all@1+0"))


# -- schema-migration: v1 and v2 as two builds, the code switch a rolling deploy ----------------------
@pytest.mark.parametrize("strategy, valid", [("schema-plain", False), ("schema-versioned", True)])
def test_schema_migration_rolls_the_v2_build_out(cluster: Cluster, tmp_path: Path, strategy: str,
                                                 valid: bool) -> None:
    app = tmp_path / "app.toml"
    app.write_text(f'command = "{SERVE} {strategy} -p build=1"\nnext = "{SERVE} {strategy} -p build=2"\n')
    res = _run(cluster, tmp_path, "schema-migration", app_file=str(app), nodes=2, seed=3, time_limit=6.0)
    _verified(res)
    migrate = next(p for p in res["faults"] if "migrate" in p["fault"])["observed"]
    assert "rolling deploy of 2 node(s) to the next build" in migrate
    r = res["checkers"]["schema"]
    assert r["valid"] is valid, r.get("anomalies", [])[:2]
    if not valid:  # v2 code served an object cached by v1, in the old format
        assert "cached in the old format" in r["anomalies"][0]["explanation"]


def test_schema_migration_as_a_black_box_needs_the_next_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'next' command is the schema-2 build"):
        prepare(RunConfig(workload="schema-migration", app=f"{SERVE} schema-plain"))


def test_a_port_already_taken_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _cli("run", "register", "--app", f"env PORT={port} {SERVE} no-cache", "-t", "1", "--no-progress",
                 "--reports", str(tmp_path))
    assert r.returncode == Exit.HARNESS, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "node0 exited with status" in last and "Address already in use" in last, last
    assert "taken on 4 ports in a row" in last, last  # tried fresh ports, but the command pins its own


def test_a_node_whose_port_was_taken_before_it_bound_starts_on_another(cluster: Cluster, tmp_path: Path) -> None:
    # the port race at ~1,000 nodes: free when handed out, some connection's by the bind; the node says so and
    # exits, and is started again on a fresh port (a node that fails for any other reason is not retried); mkdir
    # is atomic, so of the two nodes starting at once exactly one fails
    mark = tmp_path / "bound-once"
    app = (f"sh -c 'if mkdir {mark} 2>/dev/null; then echo \"listen tcp 127.0.0.1:$PORT: bind: address "
           f"already in use\" >&2; exit 1; fi; exec {SERVE} no-cache'")
    res = _run(cluster, tmp_path, "register", app=app, nodes=2, time_limit=1.5, seed=6, concurrency=4)
    assert mark.exists() and res["valid"] is True, res["checkers"]
    logs = [(Path(res["run_dir"]) / "logs" / f"node{i}.log").read_text() for i in range(2)]
    assert sorted(text.count("--- cachecert: starting") for text in logs) == [1, 2], logs
    assert res["counts"]["ok"] > 20 and res["app"]["exits"] == []  # not an exit of a running node
