"""The reaper (issue 13, part 4): no process outlives its run, whatever kills the run.

A run SIGKILLed in the middle of a pause fault (Redis SIGSTOPped) must leave nothing within 10 s:
no server, no stopped process, no state directory, no reaper. A detached `cachecert up` cluster is
kept until `cachecert down`; a normal run leaves no reaper behind. The guards are checked on real
processes too: the reaper never signals a process that is not the cluster's.

Processes are found exactly, never by name (other clusters run on this machine): by pidfile with
start time, and by a tag in the environment that every process a test starts inherits, the reaper
included (tests/_procs.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import TAG_VAR, make_state, new_tag, pid_records, tagged, wait_gone

from harness import reaper
from harness.cluster import Cluster, list_clusters
from harness.services.base import PidRecord, alive, marked_groups, proc_start_time, write_pidfile

REPO = Path(__file__).resolve().parents[1]
# The promise is 10 s from the run's death; measured it is well under a second (the reaper is
# already running and reads EOF on its lifeline at once). The tests poll up to 15 s because this
# suite shares 2 cores with other agents' JVMs: the assertion proves nothing is left, it is not a
# benchmark. The measured time is printed (pytest -s) and written to reaper.log.
GONE_S = 15.0


@pytest.fixture
def state() -> Iterator[Path]:
    d = make_state()
    yield d
    subprocess.run([sys.executable, "-m", "harness.cli", "down", "--force"], cwd=REPO, capture_output=True,
                   env=dict(os.environ, CACHECERT_STATE_DIR=str(d)), timeout=60)
    shutil.rmtree(d, ignore_errors=True)


def _env(state: Path, tag: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, CACHECERT_STATE_DIR=str(state), **{TAG_VAR: tag}, **extra)


def _cli(state: Path, tag: str, *args: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A `cachecert` subprocess; output to a file (a pipe nobody reads could block the run)."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=_env(state, tag, **env),
                                stdout=out, stderr=subprocess.STDOUT)


def _reapers(tag: str) -> list[int]:
    return [pid for pid, cmd in tagged(tag) if "harness.reaper" in cmd]


def _poll(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _history_has_pause_start(reports: Path) -> bool:
    for hist in reports.glob("register/cache-aside/*/history.jsonl"):
        for line in hist.read_bytes().splitlines():
            if b'"process":"nemesis"' in line.replace(b" ", b"") and b'"f":"start"' in line.replace(b" ", b""):
                return True
    return False


# -- a SIGKILLed run ------------------------------------------------------------------------
def test_sigkilled_run_during_pause_leaves_nothing(state: Path, tmp_path: Path) -> None:
    tag = new_tag()
    reports = tmp_path / "r"
    run = _cli(state, tag, "run", "register", "-s", "cache-aside", "-t", "60", "--no-progress",
               "-f", "pause:redis@1+50", log=tmp_path / "run.log", CACHECERT_REPORTS=str(reports))
    try:
        _poll(lambda: _history_has_pause_start(reports) or run.poll() is not None, 120, "the pause to start")
        assert run.poll() is None, (tmp_path / "run.log").read_text()
        (cdir,) = list((state / "clusters").iterdir())
        recs = pid_records(cdir)
        assert {r.name for r in recs} == {"redis", "postgres", "toxiproxy"}
        redis_pid = next(r.pid for r in recs if r.name == "redis")
        _poll(lambda: _proc_state(redis_pid) == "T", 10, "redis to be SIGSTOPped")
        assert len(_reapers(tag)) == 1
        run.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        run.wait(10)
        left = wait_gone(recs, tag, timeout=GONE_S)  # the tag covers the reaper itself too
        _poll(lambda: not cdir.exists(), max(0.0, GONE_S - (time.monotonic() - t0)), f"{cdir} to be removed")
        elapsed = time.monotonic() - t0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert left == []
    print(f"SIGKILL -> everything gone in {elapsed:.2f} s")
    log = (state / "reaper.log").read_text()
    assert f"{cdir.name}: owner {run.pid} died" in log and "killed 3 process group(s)" in log, log


def test_detached_up_survives_its_cli_and_down_removes_it(state: Path, tmp_path: Path) -> None:
    tag = new_tag()
    up = _cli(state, tag, "up", "--services", "redis", "--name", "keep", log=tmp_path / "up.log")
    assert up.wait(120) == 0, (tmp_path / "up.log").read_text()
    cdir = state / "clusters" / "keep"
    recs = pid_records(cdir)
    assert {r.name for r in recs} == {"redis", "toxiproxy"}
    assert _reapers(tag) == []  # released once the services were up
    time.sleep(3 * reaper.POLL_S)  # a reaper that was still watching would have acted by now
    assert all(r.matches() for r in recs) and cdir.exists()
    (rec,) = list_clusters(state)
    assert rec["running"] and not rec["orphaned"]
    down = _cli(state, tag, "down", log=tmp_path / "down.log")
    assert down.wait(60) == 0
    assert "keep: reaped 2 process group(s)" in (tmp_path / "down.log").read_text()
    assert wait_gone(recs, tag) == [] and not cdir.exists()


def test_detached_up_killed_while_starting_is_reaped(state: Path, tmp_path: Path) -> None:
    """Detached means kept once up: an `up` killed halfway (Kafka still booting) is still reaped."""
    tag = new_tag()
    up = _cli(state, tag, "up", "--services", "redis,kafka", "--name", "half", log=tmp_path / "up.log")
    try:
        kafka = state / "clusters" / "half" / "pids" / "kafka.json"
        _poll(lambda: kafka.exists() or up.poll() is not None, 120, "kafka to be spawned")
        recs = pid_records(kafka.parent.parent)
        assert up.poll() is None and {r.name for r in recs} >= {"kafka"}, (tmp_path / "up.log").read_text()
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        assert wait_gone(recs, tag, timeout=GONE_S) == []
        _poll(lambda: not kafka.parent.parent.exists(), GONE_S, "the cluster dir to be removed")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_normal_run_leaves_no_reaper(state: Path, tmp_path: Path) -> None:
    tag = new_tag()
    run = _cli(state, tag, "run", "register", "-s", "no-cache", "-t", "3", "--no-progress",
               log=tmp_path / "run.log", CACHECERT_REPORTS=str(tmp_path / "r"))
    seen: set[int] = set()
    try:
        while run.poll() is None:
            seen.update(_reapers(tag))
            time.sleep(0.1)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode in (0, 1, 2), (tmp_path / "run.log").read_text()  # a verdict, not a crash
    assert len(seen) == 1  # the run had its reaper ...
    assert tagged(tag) == []  # ... and waited for it to stand down: nothing left, at once
    assert not (state / "reaper.log").exists() or "died" not in (state / "reaper.log").read_text()
    assert not list((state / "clusters").iterdir())


def test_session_cluster_has_a_reaper_watching_this_process(session_cluster: Cluster) -> None:
    """A killed pytest leaves nothing either: the suite's shared cluster is watched like a run's."""
    h = session_cluster._reaper
    assert h is not None and alive(h.pid) and h.proc.poll() is None
    with open(f"/proc/{h.pid}/cmdline", "rb") as f:
        cmd = f.read().split(b"\0")
    assert cmd[cmd.index(b"--owner-pid") + 1] == str(os.getpid()).encode()
    assert os.getsid(h.pid) == h.pid  # its own session: a Ctrl-C or a group kill does not reach it


# -- guards: the reaper only ever touches its own cluster --------------------------------------
def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def _fake_cluster(state: Path, name: str, owner: tuple[int, int | None], proc: subprocess.Popen[bytes],
                  start_time: int | None) -> Path:
    cdir = state / "clusters" / name
    (cdir / "pids").mkdir(parents=True)
    (cdir / "cluster.json").write_text(json.dumps({"id": name, "dir": str(cdir), "owner_pid": owner[0],
                                                   "owner_start": owner[1]}))
    write_pidfile(cdir / "pids" / "redis.json", PidRecord("redis", proc.pid, proc.pid, start_time, ["sleep"]))
    return cdir


def test_reap_checks_start_times_and_ownership(state: Path) -> None:
    dead_owner = (999_999_999, 1)
    procs = [_sleeper() for _ in range(3)]
    try:
        starts = [proc_start_time(p.pid) for p in procs]
        assert None not in starts
        # a pidfile whose pid was reused by an unrelated process (other start time): left alone
        reused = _fake_cluster(state, "reused", dead_owner, procs[0], starts[0] - 1)  # type: ignore[operator]
        # a directory now owned by someone else (same name claimed again): left alone entirely
        other = _fake_cluster(state, "other", (os.getpid(), proc_start_time(os.getpid())), procs[1], starts[1])
        # the real thing: reaped, directory removed
        mine = _fake_cluster(state, "mine", dead_owner, procs[2], starts[2])
        assert "killed 0 process group(s)" in reaper.reap(reused, "reused", "local", *dead_owner)
        assert "nothing to do" in reaper.reap(other, "other", "local", *dead_owner)
        assert "killed 1 process group(s)" in reaper.reap(mine, "mine", "local", *dead_owner)
        assert procs[0].poll() is None and procs[1].poll() is None and other.exists()
        assert procs[2].wait(10) == -signal.SIGTERM and not mine.exists()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch, state: Path) -> None:
    monkeypatch.setenv(reaper.ENV, "0")
    assert reaper.spawn(state / "clusters" / "x", "x", "local") is None


# -- docker backend -------------------------------------------------------------------------
def _docker_reason() -> str | None:
    try:
        from harness.services.docker import client

        client()
        return None
    except Exception as e:  # noqa: BLE001 - any failure means no usable daemon
        return str(e)


DOCKER_UP = """
import sys, time
from pathlib import Path
from harness.cluster import Cluster
c = Cluster(services=("redis",), state=Path(sys.argv[1]), name=sys.argv[2], backend="docker")
c.up()
c.service("redis").pause()
print("READY", flush=True)
time.sleep(600)
"""


def test_docker_containers_of_a_sigkilled_owner_are_removed(state: Path, tmp_path: Path) -> None:
    reason = _docker_reason()
    if reason is not None:
        pytest.skip(f"no Docker daemon: {reason}")
    import docker

    name = f"reap-{os.getpid()}"
    tag = new_tag()
    out = tmp_path / "owner.log"
    with open(out, "ab") as log:
        owner = subprocess.Popen([sys.executable, "-c", DOCKER_UP, str(state), name], cwd=REPO,
                                 env=_env(state, tag), stdout=log, stderr=subprocess.STDOUT)
    dc = docker.from_env(timeout=30)

    def labelled() -> list:  # sparse: no inspect per container, which 404s on one the reaper removed meanwhile
        return dc.containers.list(all=True, sparse=True, filters={"label": f"cachecert.cluster={name}"})

    try:
        _poll(lambda: b"READY" in out.read_bytes() or owner.poll() is not None, 180, "the docker cluster")
        assert owner.poll() is None, out.read_text()
        assert {c.status for c in labelled()} == {"running", "paused"}  # redis frozen, toxiproxy running
        owner.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        owner.wait(10)
        _poll(lambda: not labelled() and not (state / "clusters" / name).exists(), GONE_S,
              "the labelled containers and the cluster dir to go")
        print(f"docker: SIGKILL -> containers gone in {time.monotonic() - t0:.2f} s")
        assert wait_gone([], tag, timeout=GONE_S) == []  # the reaper too
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for ctr in labelled():
            ctr.remove(force=True)


def test_a_server_spawned_before_its_pidfile_is_still_found_by_its_mark(tmp_path: Path) -> None:
    """A run killed between spawning a server and writing its pidfile: the server's environment names
    its cluster, so the reaper still finds it; a server of another cluster is left alone."""
    import os
    import subprocess

    from harness.services.base import CLUSTER_MARK, kill_marked

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    procs = [subprocess.Popen(["sleep", "60"], env={**os.environ, CLUSTER_MARK: str(d)}, start_new_session=True)
             for d in (ours, theirs)]
    try:
        assert kill_marked(ours) == 1
        assert procs[0].wait(5) == -signal.SIGKILL
        assert procs[1].poll() is None
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def test_sigkilled_run_leaves_no_app_node(state: Path, tmp_path: Path) -> None:
    """App nodes carry the cluster's mark: the reaper kills them with the services when the run dies."""
    tag = new_tag()
    reports = tmp_path / "r"
    run = _cli(state, tag, "run", "register", "--app", f"{sys.executable} -m harness.cli serve-node no-cache",
               "--nodes", "2", "-t", "60", "--no-progress", log=tmp_path / "run.log", CACHECERT_REPORTS=str(reports))
    try:
        def nodes_up() -> bool:
            return len(list(reports.glob("register/*/*/logs/node*.log"))) == 2 or run.poll() is not None

        _poll(nodes_up, 120, "two app nodes to start")
        assert run.poll() is None, (tmp_path / "run.log").read_text()
        (cdir,) = list((state / "clusters").iterdir())
        _poll(lambda: len(marked_groups(cdir)) >= 4, 30, "the app nodes to run")  # redis, postgres + 2 nodes
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        _poll(lambda: not marked_groups(cdir), GONE_S, "every marked process, app nodes included, to be gone")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
