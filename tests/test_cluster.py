"""The embedded cluster (issue 2): real Redis, PostgreSQL, Kafka and Toxiproxy, every client through
a proxy; faults by toxic, proxy switch, SIGKILL and SIGSTOP; nothing left running afterwards, even
when the harness itself is SIGKILLed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from _procs import TAG_VAR, make_state, new_tag, pid_records, wait_gone

from harness.cluster import Cluster, list_clusters

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state() -> Iterator[Path]:
    d = make_state()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _redis(cluster: Cluster, timeout: float | None = 5.0) -> redis.Redis:
    host, port = cluster.endpoints["redis"].split(":")
    return redis.Redis(host=host, port=int(port), socket_timeout=timeout, socket_connect_timeout=timeout,
                       retry_on_timeout=False)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


# -- every service answers through its proxy ----------------------------------------------
def test_proxies_front_every_service(cluster: Cluster) -> None:
    proxies = cluster.toxiproxy.proxies()
    for s in ("redis", "postgres", "kafka"):
        assert proxies[s]["enabled"] is True
        assert proxies[s]["listen"] == cluster.endpoints[s]
        assert proxies[s]["upstream"] == cluster.direct[s]
        assert cluster.endpoints[s] != cluster.direct[s]


def test_redis_ping_set_get_through_proxy(cluster: Cluster) -> None:
    r = _redis(cluster)
    assert r.ping() is True
    key = f"k-{uuid.uuid4().hex}"
    assert r.set(key, "v1") is True
    assert r.get(key) == b"v1"
    # the proxy really is in the path: switching it off breaks this very client
    cluster.toxiproxy.set_enabled("redis", False)
    with pytest.raises(redis.ConnectionError):
        r.get(key)
    cluster.toxiproxy.set_enabled("redis", True)
    assert _redis(cluster).get(key) == b"v1"


def test_postgres_query_through_proxy(cluster: Cluster) -> None:
    host, port = cluster.endpoints["postgres"].split(":")
    with psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres", connect_timeout=5) as c:
        c.execute("create temporary table t (k int primary key, v text)")
        c.execute("insert into t values (1, 'one'), (2, 'two')")
        assert c.execute("select v from t where k = 2").fetchone() == ("two",)
        # the server sees the connection coming from the proxy, not from us directly
        (port_seen,) = c.execute("select inet_server_port()").fetchone()
        assert port_seen == _port(cluster.direct["postgres"])


def test_kafka_produce_consume_through_proxy(cluster: Cluster) -> None:
    from confluent_kafka import Consumer, Producer

    ep = cluster.endpoints["kafka"]
    topic = f"t-{uuid.uuid4().hex[:12]}"
    delivered: list[object] = []
    p = Producer({"bootstrap.servers": ep, "log_level": 0, "message.timeout.ms": 20000})
    p.produce(topic, b"hello-through-proxy", on_delivery=lambda err, msg: delivered.append(err))
    assert p.flush(25) == 0
    assert delivered == [None]

    c = Consumer({"bootstrap.servers": ep, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                  "log_level": 0})
    try:
        md = c.list_topics(timeout=10)
        # the broker advertises the proxy port: after bootstrap, clients still go through the proxy
        assert md.brokers, "no broker metadata"
        assert {(b.host, b.port) for b in md.brokers.values()} == {("127.0.0.1", _port(ep))}
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        got = None
        while got is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                got = msg.value()
        assert got == b"hello-through-proxy"
    finally:
        c.close()


# -- faults through Toxiproxy ---------------------------------------------------------------
def test_latency_toxic_delays_get_and_removal_restores(cluster: Cluster) -> None:
    latency_ms = 200
    r = _redis(cluster)
    r.set("lat", "x")
    cluster.toxiproxy.latency("redis", latency_ms)
    t = time.monotonic()
    assert r.get("lat") == b"x"
    assert (time.monotonic() - t) * 1000 >= latency_ms
    cluster.toxiproxy.remove_toxic("redis", "latency_downstream")
    t = time.monotonic()
    assert r.get("lat") == b"x"
    assert (time.monotonic() - t) * 1000 < latency_ms


def test_disabled_proxy_fails_new_connections_fast(cluster: Cluster) -> None:
    cluster.toxiproxy.set_enabled("redis", False)
    assert cluster.toxiproxy.get_proxy("redis")["enabled"] is False
    t = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        _redis(cluster, timeout=10).ping()
    assert time.monotonic() - t < 3.0  # refused at once (vs the 10 s timeout): a crash, not a hang
    cluster.toxiproxy.set_enabled("redis", True)
    assert _redis(cluster).ping() is True


def test_timeout_toxic_zero_is_a_black_hole(cluster: Cluster) -> None:
    cluster.toxiproxy.timeout("redis", 0)
    r = _redis(cluster, timeout=0.5)
    t = time.monotonic()
    with pytest.raises(redis.TimeoutError):  # the client's socket timeout, nothing answers
        r.ping()
    assert 0.4 < time.monotonic() - t < 3
    cluster.toxiproxy.remove_toxic("redis", "timeout_downstream")
    assert _redis(cluster).ping() is True


# -- process faults ---------------------------------------------------------------------------
def test_kill_makes_clients_fail_and_restart_brings_redis_back(cluster: Cluster) -> None:
    svc = cluster.service("redis")
    old_pid = svc.proc.pid  # type: ignore[attr-defined]
    r = _redis(cluster)
    r.set("survives", "no")  # no persistence: a crash loses it
    svc.kill()
    assert not svc.running()
    with pytest.raises(redis.ConnectionError):
        _redis(cluster, timeout=2).ping()
    with pytest.raises(redis.ConnectionError):
        r.ping()  # the live connection is gone too
    t = time.monotonic()
    svc.restart()
    assert time.monotonic() - t < 10
    assert svc.proc.pid != old_pid  # type: ignore[attr-defined]
    fresh = _redis(cluster)
    assert fresh.ping() is True
    assert fresh.get("survives") is None


def test_pause_hangs_a_call_until_resume(cluster: Cluster) -> None:
    svc = cluster.service("redis")
    r = _redis(cluster, timeout=15)
    r.set("paused", "v")
    svc.pause()
    result: list[object] = []
    th = threading.Thread(target=lambda: result.append(r.get("paused")), daemon=True)
    try:
        th.start()
        time.sleep(0.7)
        assert th.is_alive() and not result  # hangs: alive but silent
        with pytest.raises(redis.TimeoutError):
            _redis(cluster, timeout=0.3).ping()
    finally:
        svc.resume()
    th.join(5)
    assert result == [b"v"]


# -- nothing left running -------------------------------------------------------------------
def test_teardown_leaves_no_process(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)  # inherited by every server the cluster spawns
    c = Cluster(services=("redis", "postgres"), state=state)
    c.up()
    try:
        recs = pid_records(c.dir)
        assert {r.name for r in recs} == {"toxiproxy", "redis", "postgres"}
        assert all(r.matches() for r in recs)
        # PostgreSQL forks a backend per connection: it must die with the group
        host, port = c.endpoints["postgres"].split(":")
        conn = psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres")
    finally:
        c.down()
    conn.close()
    assert wait_gone(recs, tag) == []
    assert pid_records(c.dir) == []
    c.remove()
    assert not c.dir.exists()


HARNESS_UP = """
import sys, time
from pathlib import Path
from harness.cluster import Cluster
c = Cluster(services=("redis", "postgres"), state=Path(sys.argv[1]), name="victim")
c.up()
print("READY", flush=True)
time.sleep(600)
"""


def _env(state: Path, tag: str) -> dict[str, str]:
    return dict(os.environ, CACHECERT_STATE_DIR=str(state), **{TAG_VAR: tag})


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 90) -> str:
    """Read stdout until a line contains ``needle`` (bounded by a watchdog that kills the child)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if needle in line:
                return line
    finally:
        timer.cancel()
    raise AssertionError(f"{needle!r} never printed; exit {proc.wait()}: {proc.stderr.read()}")  # type: ignore[union-attr]


def _cli(state: Path, tag: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=_env(state, tag),
                          capture_output=True, text=True, timeout=timeout)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, whatever started pytest


@pytest.mark.parametrize("launcher", ["python", "cli-foreground"])
def test_sigkilled_harness_then_down_leaves_nothing(state: Path, launcher: str) -> None:
    tag = new_tag()
    if launcher == "python":
        cmd, name, needle = [sys.executable, "-c", HARNESS_UP, str(state)], "victim", "READY"
    else:
        cmd = [sys.executable, "-m", "harness.cli", "up", "--foreground", "--services", "redis,postgres",
               "--name", "fg"]
        name, needle = "fg", " up in "
    # without its reaper (harness/reaper.py, tests/test_reaper.py): the `down` fallback
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(state, tag) | {"CACHECERT_REAPER": "0"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        _wait_line(proc, needle)
        cdir = state / "clusters" / name
        recs = pid_records(cdir)
        assert {r.name for r in recs} == {"toxiproxy", "redis", "postgres"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the servers outlive their harness (own sessions): orphans, visible as such
        assert all(r.matches() for r in recs)
        (st,) = [c for c in list_clusters(state) if c["id"] == name]
        assert st["running"] and st["orphaned"]
        status = _cli(state, tag, "status")
        assert "orphaned" in status.stdout
        down = _cli(state, tag, "down")
        assert down.returncode == 0, down.stderr
        assert f"{name}: reaped 3 process group(s)" in down.stdout
        assert wait_gone(recs, tag) == []
        assert not cdir.exists()
    finally:
        proc.kill()
        proc.wait()
        _cli(state, tag, "down", "--force")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_foreground_up_tears_everything_down(state: Path, sig: signal.Signals) -> None:
    tag = new_tag()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "up", "--foreground", "--services", "redis",
                             "--name", "sig"], cwd=REPO, env=_env(state, tag), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        _wait_line(proc, " up in ")
        recs = pid_records(state / "clusters" / "sig")
        assert {r.name for r in recs} == {"toxiproxy", "redis"}
        proc.send_signal(sig)
        assert proc.wait(30) == 130
        assert "services stopped" in proc.stderr.read()  # type: ignore[union-attr]
        assert wait_gone(recs, tag, timeout=2) == []  # torn down before it exited
        assert not (state / "clusters" / "sig").exists()
    finally:
        proc.kill()
        proc.wait()
        _cli(state, tag, "down", "--force")


def test_sigterm_while_services_start_leaks_nothing(state: Path) -> None:
    """A signal in the middle of a parallel start (Kafka still booting) cancels the other starts and
    tears down every process already spawned."""
    tag = new_tag()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "up", "--foreground", "--services",
                             "redis,kafka", "--name", "mid"], cwd=REPO, env=_env(state, tag),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        pids = state / "clusters" / "mid" / "pids"
        deadline = time.monotonic() + 60
        while not (pids / "kafka.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (pids / "kafka.json").exists()
        recs = pid_records(pids.parent)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 130
        assert wait_gone(recs, tag, timeout=5) == []
    finally:
        proc.kill()
        proc.wait()
        _cli(state, tag, "down", "--force")
