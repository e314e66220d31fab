"""End-to-end runs of the run engine on the real embedded cluster (issue 3)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import pytest

from core.history import load_history, read_history
from harness.cluster import Cluster
from harness.runner import ConfigError, Run, RunConfig, prepare

REPO = Path(__file__).resolve().parents[1]


def _run(cluster: Cluster, tmp_path: Path, **kw) -> dict:
    cfg = RunConfig(reports=str(tmp_path), quiesce=kw.pop("quiesce", 0.2), **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False).execute()


def _pairs(history: list[dict]) -> tuple[int, int]:
    client = [o for o in history if o["process"] != "nemesis"]
    return sum(o["type"] == "invoke" for o in client), sum(o["type"] != "invoke" for o in client)


def test_no_fault_run_records_balanced_pairs(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, workload="register", strategy="no-cache", time_limit=1.5, concurrency=4, seed=3)
    run_dir = Path(res["run_dir"])
    history = load_history(run_dir / "history.jsonl")  # validates pairing per process
    invokes, completions = _pairs(history)
    assert invokes > 100 and invokes == completions
    assert [o["index"] for o in history] == list(range(len(history)))
    assert res["counts"]["info"] == 0 and res["counts"]["fail"] == 0
    finals = [o for o in history if o.get("phase") == "final" and o["type"] == "ok"]
    assert {o["key"] for o in finals} == {f"k{i}" for i in range(5)}
    for name in ("config.json", "results.json", "harness.log"):
        assert (run_dir / name).exists()
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["seed"] == 3


def test_latency_fault_window_shows_in_history(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, workload="register", strategy="cache-aside", time_limit=3.0, concurrency=4,
               seed=5, faults="latency:redis:ms=80@1+1")
    history = load_history(Path(res["run_dir"]) / "history.jsonl")
    nem = [o for o in history if o["process"] == "nemesis" and o["f"] in ("start", "stop", "probe")]
    assert [o["f"] for o in nem if o["f"] != "probe"] == ["start", "stop"]
    probe = next(o for o in nem if o["f"] == "probe")
    assert probe["value"]["verified"] is True, probe
    start, stop = (o["time_ns"] for o in nem if o["f"] != "probe")
    # the nemesis never fires early (it waits for load start + 1 s, + 2 s; the load phase is recorded
    # before that clock starts); how late it fires depends on the machine, so only a generous bound
    load = next(o["time_ns"] for o in history if o["process"] == "nemesis" and o.get("value") == "load")
    assert load + 1.0e9 <= start < load + 3.0e9 and load + 2.0e9 <= stop < load + 4.0e9, (load, start, stop)
    invoked: dict = {}
    inside, outside = [], []
    for o in history:
        if o["process"] == "nemesis" or o.get("phase") == "final":
            continue
        if o["type"] == "invoke":
            invoked[o["process"]] = o["time_ns"]
        else:
            t0 = invoked.pop(o["process"])
            lat = o["time_ns"] - t0
            (inside if start + 0.1e9 < t0 and o["time_ns"] < stop else outside).append(lat)
    assert inside and outside
    # every op inside waits >= 80 ms for a Redis reply (but the few in flight when the toxic was
    # removed, just before the stop was recorded); outside, fast ops outnumber the slow ones of the
    # first 0.1 s of the fault many times over
    assert median(inside) >= 80e6 > median(outside)


def test_same_seed_same_schedule_and_ops() -> None:
    a = prepare(RunConfig(workload="register", faults="random", seed=42, time_limit=20))
    b = prepare(RunConfig(workload="register", faults="random", seed=42, time_limit=20))
    c = prepare(RunConfig(workload="register", faults="random", seed=43, time_limit=20))
    text = [[s.to_text() for s in p.schedule] for p in (a, b, c)]
    assert text[0] == text[1] and text[0] != text[2] and len(text[0]) >= 2
    ga, gb = a.generator.for_worker(42, 3), b.generator.for_worker(42, 3)
    assert [ga.next() for _ in range(200)] == [gb.next() for _ in range(200)]


@pytest.mark.parametrize("kw, msg", [
    ({"workload": "nope"}, "unknown workload 'nope' (valid: "),
    ({"strategy": "nope"}, "unknown strategy 'nope' (valid: "),
    ({"strategy": "no.such.module:X"}, "cannot import strategy module"),
    ({"faults": "bogus"}, "unknown fault plan 'bogus'"),
    ({"faults": "melt:redis@1+1"}, "unknown fault 'melt' (valid: "),
    ({"faults": "latency:mysql@1+1"}, "unknown target 'mysql'"),
    ({"faults": "latency:redis@1+30", "time_limit": 5}, "after the run's 5 s time limit"),
    ({"concurrency": 0}, "concurrency must be >= 1"),
    ({"time_limit": -1}, "time limit must be > 0"),
    ({"params": {"ttl": -5}}, "ttl must be > 0"),
    ({"params": {"bogus": 1}}, "has no parameter 'bogus'"),
    ({"key_dist": "zipf:0"}, "zipf exponent must be > 0"),
])
def test_bad_config_is_one_clear_error(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        prepare(RunConfig(**kw))
    assert msg in str(e.value) and "\n" not in str(e.value)


def _terminal_signals() -> None:
    """The CLI as started from a terminal: a job started in the background (`cmd &` without job
    control, as some CI runners and scripts do) inherits SIGINT ignored, and Ctrl-C tests would
    then test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_terminal_signals, **kw)


def test_cli_bad_input_exit_code() -> None:
    p = _cli("run", "register", "--strategy", "nope")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3 and "unknown strategy 'nope'" in err and err.count("\n") == 1


def _wait_lines(path: Path, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never reached {n} lines")


def _state_env(tmp_path: Path) -> dict:
    # the state dir must be reachable by the postgres user; pytest's tmp_path is under a 0700 dir
    state = Path(tempfile.mkdtemp(prefix="cachecert-test-", dir="/tmp"))
    state.chmod(0o755)
    (tmp_path / "state").symlink_to(state)
    return dict(os.environ, CACHECERT_STATE_DIR=str(state), CACHECERT_REPORTS=str(tmp_path / "r"))


def _cluster_pids(state: Path) -> list[int]:
    pids = []
    for pf in state.glob("clusters/*/pids/*.json"):
        pids.append(json.loads(pf.read_text())["pid"])
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.cluster  # its own cluster, started by the CLI
def test_sigkilled_run_leaves_readable_prefix_and_down_reaps(tmp_path: Path) -> None:
    env = _state_env(tmp_path) | {"CACHECERT_REAPER": "0"}  # else the reaper beats `down` to it
    p = _cli("run", "register", "-s", "no-cache", "-t", "60", "--no-progress", env=env)
    try:
        hist = next(iter((tmp_path / "r").glob("register/no-cache/*/history.jsonl")), None)
        deadline = time.monotonic() + 60
        while hist is None and time.monotonic() < deadline:
            time.sleep(0.2)
            hist = next(iter((tmp_path / "r").glob("register/no-cache/*/history.jsonl")), None)
        assert hist is not None
        _wait_lines(hist, 500, 30)
        pids = _cluster_pids(tmp_path / "state")
        assert pids and all(_alive(pid) for pid in pids)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=10)
    ops = list(read_history(hist))  # a torn last line is dropped, everything else validates
    assert len(ops) >= 500
    down = _cli("down", env=env)
    out, _ = down.communicate(timeout=60)
    assert down.returncode == 0 and "reaped" in out
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in pids)


def _start_faulted_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, list[int], dict]:
    """A 60 s cache-aside run under a latency fault, once the fault has started (history on disk)."""
    env = _state_env(tmp_path)
    p = _cli("run", "register", "-s", "cache-aside", "-t", "60", "--no-progress",
             "-f", "latency:redis:ms=50@0.5+50", env=env)
    hist = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and p.poll() is None:
        hist = next(iter((tmp_path / "r").glob("register/cache-aside/*/history.jsonl")), None)
        if hist and b'"f":"start"' in hist.read_bytes():
            break
        time.sleep(0.2)
    assert hist is not None and p.poll() is None, p.stderr.read() if p.poll() is not None else "no history"
    pids = _cluster_pids(tmp_path / "state")
    assert len(pids) == 3  # redis, postgres, toxiproxy
    return p, hist, pids, env


def _stopped_cleanly(hist: Path, pids: list[int], tmp_path: Path) -> dict:
    history = load_history(hist)  # kept, and readable whole
    fs = [o["f"] for o in history if o["process"] == "nemesis" and o["f"] in ("start", "stop")]
    assert fs == ["start", "stop"]  # the heal recorded the stop
    assert not any(_alive(pid) for pid in pids)
    assert not list((tmp_path / "state").glob("clusters/*/pids/*.json"))
    return json.loads((hist.parent / "results.json").read_text())


@pytest.mark.cluster  # its own cluster, started by the CLI
def test_ctrl_c_heals_judges_the_prefix_fast_and_stops_everything(tmp_path: Path) -> None:
    p, hist, pids, _ = _start_faulted_run(tmp_path)
    try:
        p.send_signal(signal.SIGINT)
        t = time.monotonic()
        # teardown (services stop with their prompt signals) + judging (<= Run.interrupted_judge_s
        # in all) + the report: ~10 s by hand; 60 s leaves room for a loaded 2-core machine
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert re.search(r"interrupted at \d+\.\d s; healed; judging the prefix", err), err
    results = _stopped_cleanly(hist, pids, tmp_path)
    assert results["interrupted"] is True and results["interrupted_at_s"] > 0, results
    assert results["error"].startswith("interrupted at") and results["valid"] in ("unknown", False)
    assert "interrupted" in results["unknown_reasons"][0]
    assert (hist.parent / "report.html").exists()
    # every checker ran under the short limit (5 s split between them), never the default 300 s
    assert all(c.get("elapsed_s", 0) < 5.5 for c in results["checkers"].values()), (took, results["checkers"])


@pytest.mark.cluster  # its own cluster, started by the CLI
def test_second_ctrl_c_skips_judging_and_keeps_the_history(tmp_path: Path) -> None:
    p, hist, pids, _ = _start_faulted_run(tmp_path)
    log = hist.parent / "harness.log"
    try:
        p.send_signal(signal.SIGINT)
        # two SIGINTs sent back to back can merge into one: wait until the first was handled. The
        # second then lands in the clean-up (shielded, counted) or in judging (skipped): both skip
        deadline = time.monotonic() + 30
        while b"interrupted at" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    results = _stopped_cleanly(hist, pids, tmp_path)
    assert results["valid"] == "unknown" and results["checkers"] == {} and results["not_judged"] is True
    assert results["error"].endswith("interrupted twice: not judged"), results["error"]
    assert results["interrupted"] is True
    assert not (hist.parent / "report.html").exists()
    assert "interrupted again: not judged; history kept in" in err, err
    assert "UNKNOWN" in err and "interrupted twice: not judged" in err, err
