"""--backend external: bad input (one line; exit 3 for the file and refusals, 255 for a missing
credential or a dead endpoint; nothing left running), the CLI's run / up / certify, the fault
commands (exit status, timeout, masking, never a kill at teardown), and the pieces without a run:
the cluster file parser, the namespaced Redis connection, the TLS client settings."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _external
import pytest
import redis
from _external import REPO, Foreign, _file, _pg, _plant, _ports, _untouched

from core.access import Access, AccessError, expand, register, unregister
from core.clients import redis_client, subscribe_confirmed
from core.namespace import NamespaceError, PrefixedSSLConnection, clear
from harness.cluster import list_clusters
from harness.clusterfile import ClusterFileError, load
from harness.runner import ConfigError, RunConfig, prepare
from harness.services import ServiceError

foreign = _external.foreign  # the module-scoped "foreign" cluster (one per test module)
pgpass = _external.pgpass


def test_a_process_fault_without_its_command_is_refused(foreign: Foreign, tmp_path: Path) -> None:
    f = str(_file(tmp_path, foreign, commands=False))
    with pytest.raises(ConfigError, match=r"^kill:redis needs a kill command for redis in cluster.toml$"):
        prepare(RunConfig(workload="register", faults="redis-kill", backend="external", cluster_file=f))
    with pytest.raises(ConfigError, match=r"^pause:redis needs a pause command"):
        prepare(RunConfig(workload="register", faults="redis-pause", backend="external", cluster_file=f))
    # a workload whose set-up is not confined to the namespace (it may flushall) is refused
    with pytest.raises(ConfigError, match=r"workload feature-flags cannot run on the external backend"):
        prepare(RunConfig(workload="feature-flags", backend="external", cluster_file=f))
    with pytest.raises(ConfigError, match=r"topology postgres=replica is for the embedded backend"):
        prepare(RunConfig(workload="register", topology="postgres=replica", backend="external", cluster_file=f))
    with pytest.raises(ConfigError, match=r"--backend external needs --cluster FILE"):
        prepare(RunConfig(workload="register", backend="external"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    state = Path(tempfile.mkdtemp(prefix="cachecert-ext-", dir="/tmp"))  # its own clusters only
    state.chmod(0o755)
    (tmp_path / "state").symlink_to(state)
    env = {k: v for k, v in os.environ.items() if k != "CC_TEST_PGPASSWORD"}
    yield dict(env, CACHECERT_STATE_DIR=str(state), CACHECERT_REPORTS=str(tmp_path / "r"))
    if not [c for c in list_clusters(state) if c["running"]]:
        shutil.rmtree(state, ignore_errors=True)


def _nothing_running(env: dict[str, str]) -> None:
    assert not [c for c in list_clusters(Path(env["CACHECERT_STATE_DIR"])) if c["running"]]


def test_cli_run_and_bad_input(foreign: Foreign, tmp_path: Path, cli_env: dict[str, str]) -> None:
    _plant(foreign)
    good = _file(tmp_path, foreign)
    # missing credential variable: exit 255, one line naming it, Toxiproxy stopped
    p = _cli("run", "register", "-s", "no-cache", "-t", "1", "--backend", "external", "--cluster", str(good),
             "--no-progress", env=cli_env)
    assert p.returncode == 255, p.stderr
    assert "CC_TEST_PGPASSWORD is not set" in p.stderr
    _nothing_running(cli_env)
    # the same with the variable set: a valid run, the secret nowhere in the run directory
    env = dict(cli_env, CC_TEST_PGPASSWORD="pg-Cli-Secret-99")
    p = _cli("run", "register", "-s", "no-cache", "-t", "1", "--seed", "3", "--backend", "external", "--cluster",
             str(good), "--no-progress", "-f", "none", env=env)
    assert p.returncode == 0, p.stderr
    hits = subprocess.run(["grep", "-rl", "pg-Cli-Secret-99", str(tmp_path / "r")], capture_output=True, text=True)
    assert hits.stdout == "" and (tmp_path / "r").exists()
    _untouched(foreign)
    # an endpoint that does not answer: exit 255, one line naming it, nothing left running
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = tmp_path / "down.toml"
    down.write_text(good.read_text().replace(f"127.0.0.1:{_ports(foreign)[0]}", f"127.0.0.1:{closed}"))
    p = _cli("run", "register", "-s", "no-cache", "-t", "1", "--backend", "external", "--cluster", str(down),
             "--no-progress", env=env)
    assert p.returncode == 255, p.stderr
    assert f"redis: external endpoint 127.0.0.1:{closed} does not answer" in p.stderr
    _nothing_running(env)
    # an unknown key: its line number; a fault without a command: one line; both before anything starts
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("timeout = 10", "timeout = 10\nurll = \"x\""))
    line = bad.read_text().splitlines().index('urll = "x"') + 1
    p = _cli("run", "register", "--backend", "external", "--cluster", str(bad), env=env)
    assert p.returncode == 3 and f"{bad}:{line}: unknown key 'urll' in [redis]" in p.stderr
    assert p.stderr.count("\n") == 1
    (tmp_path / "bare").mkdir()
    bare = _file(tmp_path / "bare", foreign, commands=False)
    p = _cli("run", "register", "-f", "redis-kill", "--backend", "external", "--cluster", str(bare), env=env)
    assert p.returncode == 3 and "kill:redis needs a kill command for redis in cluster.toml" in p.stderr
    _nothing_running(env)


def test_cli_up_external_starts_only_toxiproxy(foreign: Foreign, tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = dict(cli_env, CC_TEST_PGPASSWORD="x")
    p = _cli("up", "--backend", "external", "--cluster", str(_file(tmp_path, foreign)), "--name", "ext", env=env)
    try:
        assert p.returncode == 0, p.stderr
        assert "redis" in p.stdout and "postgres" in p.stdout
        running = [c for c in list_clusters(Path(env["CACHECERT_STATE_DIR"])) if c["running"]]
        assert len(running) == 1 and running[0]["backend"] == "external"
        pids = sorted(p.name for p in Path(running[0]["dir"], "pids").glob("*.json"))
        assert pids == ["toxiproxy.json"]  # no server of its own
        ep = running[0]["endpoints"]["redis"]
        assert redis.Redis(port=int(ep.rpartition(":")[2])).ping()  # through our proxy, to the foreign server
    finally:
        _cli("down", env=env)
    _nothing_running(env)
    _untouched(foreign)


def test_certify_on_the_external_cluster(foreign: Foreign, tmp_path: Path, pgpass: str) -> None:
    from harness import certify as C

    _plant(foreign)
    plan = C.resolve(["no-cache"], ["register"], ["none", "db-down"], time_limit=1.5, seed=5, quiesce=0.3,
                     reports=str(tmp_path))
    plan.cluster_file = str(_file(tmp_path, foreign))
    cells = C.execute(plan, log=lambda m: None)
    assert [(c.plan, c.valid) for c in cells] == [("none", True), ("db-down", True)], [c.error for c in cells]
    _untouched(foreign)


def test_commands_checked_timed_masked_and_never_kill_at_teardown(foreign: Foreign, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from harness.clusterfile import Server
    from harness.services.external import ExternalService

    monkeypatch.setenv("CC_TEST_TOKEN", "tok-Secret-5")
    server = Server("redis", "127.0.0.1", _ports(foreign)[0], timeout=0.5, commands={
        "kill": f"touch {tmp_path / 'killed'}", "pause": "echo using ${CC_TEST_TOKEN}; exit 0",
        "resume": "echo no; exit 3", "restart": "sleep 30"})
    svc = ExternalService(server, tmp_path, "cc_unit", 1)
    svc.pause()
    with pytest.raises(ServiceError, match=r"^redis: resume command exited 3: no$"):
        svc.resume()
    t = time.monotonic()
    with pytest.raises(ServiceError, match=r"^redis: restart command timed out after 0.5 s$"):
        svc.restart()
    assert time.monotonic() - t < 5
    svc.closing = True  # Cluster.down: a failed resume is logged, and what "failed to stop" is never killed
    svc.stop()
    svc.kill()
    assert not (tmp_path / "killed").exists()
    assert svc.log_path is not None
    log = svc.log_path.read_text()
    assert "using ${CC_TEST_TOKEN}" in log and "tok-Secret-5" not in log and "resume: echo no; exit 3 -> exit 3" in log
    missing = ExternalService(Server("redis", "127.0.0.1", 1, commands={"kill": "kill ${CC_NOT_SET_ANYWHERE}"}),
                              tmp_path, "cc_unit", 1)
    with pytest.raises(ServiceError, match="environment variable CC_NOT_SET_ANYWHERE is not set"):
        missing.kill()


def test_namespaced_redis_connection(foreign: Foreign) -> None:
    port = _ports(foreign)[0]
    plain = redis.Redis(port=port)
    plain.set("someone-else:key", "keep me")
    ep = f"127.0.0.1:{port}"
    register(ep, Access("cc_unit"))
    try:
        r = redis_client(ep)
        r.set("a", "1")
        r.register_script("return redis.call('SET', KEYS[1], ARGV[1])")(keys=["b"], args=["2"])
        pipe = r.pipeline()
        pipe.mget("a", "b")
        pipe.delete("a")
        assert pipe.execute() == [[b"1", b"2"], 1]
        assert plain.get("cc_unit:b") == b"2" and plain.get("b") is None
        for refused in (r.flushall, r.flushdb, lambda: r.keys("*"), lambda: r.scan(0)):
            with pytest.raises(NamespaceError):
                refused()
        ps = subscribe_confirmed(r, "inv", 2)
        assert b"cc_unit:inv" in plain.pubsub_channels()
        redis_client(ep).publish("inv", "k1")
        msg = ps.get_message(timeout=2)
        assert msg is not None and msg["channel"] == b"inv" and msg["data"] == b"k1"
        ps.close()
        assert clear(r) == 1 and plain.get("someone-else:key") == b"keep me"
    finally:
        unregister(ep)


def test_cluster_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"

    def err(text: str) -> str:
        f.write_text(text)
        with pytest.raises(ClusterFileError) as e:
            load(f)
        return str(e.value)

    assert err('[redis]\nurl = "redis://h:1"\n\n[postgres]\nurl = "postgresql://u@h/db"\nport = 5\n') == \
        f"{f}:6: unknown key 'port' in [postgres] (valid: url, replicas, ca_file, server_hostname, timeout, kill, " \
        "pause, resume, start, restart)"
    assert err('[memcached]\nurl = "x"\n').startswith(f"{f}:1: unknown key 'memcached'")
    assert "literal password" in err('[redis]\nurl = "redis://:hunter2@h:6379"\n')
    assert "literal password" in err('[postgres]\nurl = "postgresql://u:hunter2@h/db"\n')
    assert err('[redis]\nurl = "redis://h:1/3"\n') == f"{f}:2: redis.url: database 3: only database 0 is supported"
    assert "unknown parameter 'foo'" in err('[postgres]\nurl = "postgresql://u@h/db?foo=1"\n')
    assert "not valid TOML" in err("[redis\n")
    assert "needs either url or sentinels" in err("[redis]\nmaster = \"m\"\n")
    f.write_text('[redis]\nurl = "rediss://:${RP}@cache.example:6380"\nca_file = "/ca.pem"\n'
                 '[postgres]\nurl = "postgresql://app:${PGP}@db.example/app?sslmode=verify-full"\n'
                 'replicas = ["postgresql://app:${PGP}@ro.example/app"]\n[kafka]\nbootstrap = ["k:9093"]\ntls = true\n')
    cf = load(f)
    r, pg = cf.servers["redis"], cf.servers["postgres"]
    assert (r.host, r.port, r.tls, r.password, r.server_hostname) == ("cache.example", 6380, True, "${RP}", "cache.example")
    assert (pg.dbname, pg.sslmode, pg.tls, pg.password) == ("app", "verify-full", True, "${PGP}")
    assert cf.servers["postgres-replica"].host == "ro.example" and cf.servers["kafka"].port == 9093


def test_tls_client_keeps_the_server_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the proxy the client dials 127.0.0.1 but checks the certificate (and sends SNI) for
    the real name: redis-py's socket wrap, libpq's host= + hostaddr=."""
    monkeypatch.setenv("CC_TLS_PW", "tls-pw")
    acc = Access("cc_tls", password="${CC_TLS_PW}", tls=True, server_hostname="cache.example", ca_file=None,
                 sslmode="verify-full", dbname="app", username="app")
    seen: dict[str, Any] = {}

    def wrap(self: ssl.SSLContext, sock: Any, server_hostname: str | None = None, **kw: Any) -> Any:
        seen.update(hostname=server_hostname, check=self.check_hostname, verify=self.verify_mode)
        raise ssl.SSLError("stop here")

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", wrap)
    kw = acc.redis_kwargs()
    assert kw["connection_class"] is PrefixedSSLConnection and kw["ssl_check_hostname"] is True
    conn = PrefixedSSLConnection(host="127.0.0.1", port=1, **{k: v for k, v in kw.items() if k != "connection_class"})
    a, b = socket.socketpair()
    with a, b, pytest.raises(ssl.SSLError):
        conn._wrap_socket_with_ssl(a)
    assert seen == {"hostname": "cache.example", "check": True, "verify": ssl.CERT_REQUIRED}
    assert conn.host == "127.0.0.1"  # still dials the proxy
    assert kw["credential_provider"].get_credentials() == ("app", "tls-pw")  # expanded now, not stored
    pg = acc.pg_kwargs("127.0.0.1", 4242)
    assert (pg["host"], pg["hostaddr"], pg["port"], pg["sslmode"]) == ("cache.example", "127.0.0.1", 4242, "verify-full")
    assert pg["options"] == "-c search_path=cc_tls" and pg["password"] == "tls-pw" and pg["user"] == "app"
    monkeypatch.delenv("CC_TLS_PW")
    with pytest.raises(AccessError, match="CC_TLS_PW is not set"):
        expand("${CC_TLS_PW}")


def test_a_sigkilled_run_leaves_no_namespace(foreign: Foreign, tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The run's reaper (it inherited the run's environment: the ${VAR} credentials) removes the
    dead run's keys and schema, and stops its Toxiproxy."""
    import signal
    import time

    _plant(foreign)
    env = dict(cli_env, CC_TEST_PGPASSWORD="x")
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "register", "-s", "cache-aside", "-t", "60",
                          "--backend", "external", "--cluster", str(_file(tmp_path, foreign)), "--no-progress"],
                         cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=_ports(foreign)[0])

    def ours() -> tuple[list[Any], list[Any]]:
        with _pg(foreign) as conn:
            schemas = conn.execute("select nspname from pg_namespace where nspname like 'cc\\_%'").fetchall()
        return schemas, [k for k in r.keys("*") if k.startswith(b"cc_")]

    try:
        deadline = time.monotonic() + 40
        seen = ours()
        while not all(seen):  # the run is in its load phase: schema and cache keys exist
            assert time.monotonic() < deadline and p.poll() is None, "the run never wrote its namespace"
            time.sleep(0.2)
            seen = ours()  # (kept as seen: cache-aside deletes keys, so a second look may find none)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    deadline = time.monotonic() + 30
    while any(ours()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours() == ([], []), f"before the kill: {seen}"
    assert len(seen[0]) == 1 and seen[1]
    _untouched(foreign)
    deadline = time.monotonic() + 10
    while [c for c in list_clusters(Path(env["CACHECERT_STATE_DIR"])) if c["running"]] and time.monotonic() < deadline:
        time.sleep(0.2)
    _nothing_running(env)
