"""--backend external on real servers: a Redis + PostgreSQL cluster this module starts itself plays
the user's own ("foreign") cluster; cachecert is pointed at its direct addresses through a cluster
file with kill/pause commands (tests/data/external_ctl.py), and must give the verdicts the embedded
backend gives on the same seeds, fault by those commands (verified by probes), keep to its own
namespace (a foreign key, a foreign public.kv row and another schema's table survive; nothing of
the run's namespace is left), never write a credential into the run directory, and refuse bad
input in one line. Plus the cluster file parser, the namespaced Redis connection and the TLS client
settings without servers."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from core.access import Access, AccessError, expand, register, unregister
from core.clients import redis_client, subscribe_confirmed
from core.namespace import NamespaceError, PrefixedSSLConnection, clear
from harness.cluster import Cluster, list_clusters
from harness.clusterfile import ClusterFileError, load
from harness.runner import ConfigError, Run, RunConfig, prepare
from harness.services import ServiceError
from harness.services.base import reap_pidfile

REPO = Path(__file__).resolve().parents[1]
CTL = f"{sys.executable} {REPO / 'tests' / 'data' / 'external_ctl.py'}"
WT = "write-through-db-failure"


# -- the "foreign" cluster -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def foreign() -> Iterator[Cluster]:
    c = Cluster(services=("redis", "postgres"), name=f"foreign-{os.getpid()}")
    c.up()
    try:
        yield c
    finally:
        for pf in (c.dir / "pids").glob("*.json"):  # a server the kill test restarted is not c's child
            reap_pidfile(pf)
        c.down()
        c.remove()


def _ports(c: Cluster) -> tuple[int, int]:
    return int(c.direct["redis"].rpartition(":")[2]), int(c.direct["postgres"].rpartition(":")[2])


def _pg(c: Cluster) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=_ports(c)[1], user="postgres", dbname="postgres", autocommit=True)


def _file(tmp: Path, c: Cluster, redis_extra: str = "", pg_url: str | None = None, commands: bool = True) -> Path:
    rp, pp = _ports(c)
    pid = c.dir / "pids" / "redis.json"
    cmds = (f'kill = "{CTL} kill {pid}"\nstart = "{CTL} start {pid}"\n'
            f'pause = "{CTL} pause {pid}"\nresume = "{CTL} resume {pid}"\ntimeout = 10\n') if commands else ""
    url = pg_url or f"postgresql://postgres:${{CC_TEST_PGPASSWORD}}@127.0.0.1:{pp}/postgres"
    f = tmp / "cluster.toml"
    f.write_text(f'[redis]\nurl = "redis://127.0.0.1:{rp}"\n{redis_extra}{cmds}\n[postgres]\nurl = "{url}"\n')
    return f


def _plant(c: Cluster) -> None:
    """Someone else's data: a Redis key, a row in public.kv (the name our workloads use) and a
    table in another schema."""
    redis.Redis(port=_ports(c)[0]).set("someone-else:key", "keep me")
    with _pg(c) as conn:
        conn.execute("drop table if exists public.kv cascade")  # what an embedded run left
        conn.execute("create table public.kv (key text primary key, value jsonb, version bigint)")
        conn.execute("insert into public.kv values ('precious', '\"keep\"', 41) on conflict do nothing")
        conn.execute("create schema if not exists billing")
        conn.execute("create table if not exists billing.invoices (id int primary key)")
        conn.execute("insert into billing.invoices values (1) on conflict do nothing")


def _untouched(c: Cluster) -> None:
    r = redis.Redis(port=_ports(c)[0])
    assert r.get("someone-else:key") == b"keep me"
    assert not [k for k in r.keys("*") if k.startswith(b"cc_")], "the run's keys were left behind"
    with _pg(c) as conn:
        assert conn.execute("select value, version from public.kv where key = 'precious'").fetchall() == [("keep", 41)]
        assert conn.execute("select count(*) from public.kv").fetchone() == (1,)
        assert conn.execute("select id from billing.invoices").fetchall() == [(1,)]
        left = conn.execute("select nspname from pg_namespace where nspname like 'cc\\_%'").fetchall()
        assert left == [], f"the run's schema was left behind: {left}"


def _run(tmp: Path, strategy: str, faults: str, cluster: Cluster | None = None, **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload=kw.pop("workload", WT), strategy=strategy, faults=faults, reports=str(tmp),
                    time_limit=kw.pop("time_limit", 3.0), seed=kw.pop("seed", 7), quiesce=0.5, converge_limit=1.0,
                    checkers=kw.pop("checkers", ["db-truth", "durability"]), **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()


def _verified(res: dict[str, Any]) -> None:
    assert res["faults"] and all(p.get("verified") for p in res["faults"]), res["faults"]


@pytest.fixture
def pgpass(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CC_TEST_PGPASSWORD", "pg-Secret-4711")  # trust auth: accepted, must never be written
    return "pg-Secret-4711"


# -- same verdicts as the embedded backend, faults by the file's commands ---------------------
def test_positive_control_same_verdict_as_embedded(foreign: Cluster, tmp_path: Path, pgpass: str) -> None:
    emb = _run(tmp_path / "emb", "cache-then-db", "db-down", cluster=foreign)  # flushes, drops public.kv
    _plant(foreign)
    ext = _run(tmp_path / "ext", "cache-then-db", "db-down", backend="external",
               cluster_file=str(_file(tmp_path, foreign)))
    for res in (emb, ext):
        _verified(res)
        truth = res["checkers"]["db-truth"]
        assert res["valid"] is False and truth["aborted_reads"] > 20 and truth["lost_writes"] == 0
        assert {a["type"] for a in truth["anomalies"]} == {"aborted-read"}
    _untouched(foreign)
    hits = subprocess.run(["grep", "-rl", pgpass, str(tmp_path / "ext")], capture_output=True, text=True)
    assert hits.stdout == "", f"the secret was written to {hits.stdout}"


def test_negative_control_same_verdict_as_embedded(foreign: Cluster, tmp_path: Path, pgpass: str) -> None:
    f = str(_file(tmp_path, foreign))
    emb = _run(tmp_path / "emb", "db-first-invalidate", "db-failures", cluster=foreign, time_limit=4.0)
    _plant(foreign)  # after the embedded run: that one flushes and drops public.kv
    for res in (emb, _run(tmp_path / "ext", "db-first-invalidate", "db-failures", backend="external", cluster_file=f,
                          time_limit=4.0)):
        _verified(res)
        truth = res["checkers"]["db-truth"]
        assert truth["valid"] is True and truth["aborted_reads"] == 0 and truth["lost_writes"] == 0
        assert truth["writes"]["fail"]["total"] > 0 and truth["writes"]["ok"]["total"] > 100
    _untouched(foreign)


def test_kill_command_loses_write_behind_buffer(foreign: Cluster, tmp_path: Path, pgpass: str) -> None:
    # kill:redis runs the file's kill line (SIGKILL of the foreign server), then its start line
    res = _run(tmp_path, "write-behind", "redis-kill-buffered-end", backend="external", time_limit=4.0,
               cluster_file=str(_file(tmp_path, foreign)))
    _verified(res)
    kill = next(p for p in res["faults"] if p["fault"].startswith("kill"))
    assert "expected refused" in kill["observed"]
    truth = res["checkers"]["db-truth"]
    assert truth["valid"] is False and truth["lost_writes"] > 20 and truth["aborted_reads"] == 0
    log = (Path(res["run_dir"]) / "logs" / "redis.log").read_text()
    assert "kill: " in log and "start: " in log and "exit 0" in log
    assert redis.Redis(port=_ports(foreign)[0]).ping()  # the start command brought it back


def test_pause_command_is_verified_and_resumed(foreign: Cluster, tmp_path: Path, pgpass: str) -> None:
    _plant(foreign)
    res = _run(tmp_path, "no-cache", "pause:redis@20%+40%", workload="register", time_limit=2.0,
               backend="external", cluster_file=str(_file(tmp_path, foreign)), checkers=["durability"])
    _verified(res)
    assert res["valid"] is True
    assert redis.Redis(port=_ports(foreign)[0], socket_timeout=2).ping()  # resumed
    _untouched(foreign)


# -- bad input: one line, nothing left running -------------------------------------------------
def test_a_process_fault_without_its_command_is_refused(foreign: Cluster, tmp_path: Path) -> None:
    f = str(_file(tmp_path, foreign, commands=False))
    with pytest.raises(ConfigError, match=r"^kill:redis needs a kill command for redis in cluster.toml$"):
        prepare(RunConfig(workload="register", faults="redis-kill", backend="external", cluster_file=f))
    with pytest.raises(ConfigError, match=r"^pause:redis needs a pause command"):
        prepare(RunConfig(workload="register", faults="redis-pause", backend="external", cluster_file=f))
    # a workload whose set-up is not confined to the namespace (it may flushall) is refused
    with pytest.raises(ConfigError, match=r"workload feature-flags cannot run on the external backend"):
        prepare(RunConfig(workload="feature-flags", backend="external", cluster_file=f))
    with pytest.raises(ConfigError, match=r"--backend external needs --cluster FILE"):
        prepare(RunConfig(workload="register", backend="external"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    state = Path(tempfile.mkdtemp(prefix="cachecert-ext-", dir="/tmp"))
    state.chmod(0o755)
    (tmp_path / "state").symlink_to(state)
    env = {k: v for k, v in os.environ.items() if k != "CC_TEST_PGPASSWORD"}
    return dict(env, CACHECERT_STATE_DIR=str(state), CACHECERT_REPORTS=str(tmp_path / "r"))


def _nothing_running(env: dict[str, str]) -> None:
    assert not [c for c in list_clusters(Path(env["CACHECERT_STATE_DIR"])) if c["running"]]


def test_cli_run_and_bad_input(foreign: Cluster, tmp_path: Path, cli_env: dict[str, str]) -> None:
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


def test_cli_up_external_starts_only_toxiproxy(foreign: Cluster, tmp_path: Path, cli_env: dict[str, str]) -> None:
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


# -- pieces, without servers ----------------------------------------------------------------
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


def test_namespaced_redis_connection(foreign: Cluster) -> None:
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


def test_certify_on_the_external_cluster(foreign: Cluster, tmp_path: Path, pgpass: str) -> None:
    from harness import certify as C

    _plant(foreign)
    plan = C.resolve(["no-cache"], ["register"], ["none", "db-down"], time_limit=1.5, seed=5, quiesce=0.3,
                     reports=str(tmp_path))
    plan.cluster_file = str(_file(tmp_path, foreign))
    cells = C.execute(plan, log=lambda m: None)
    assert [(c.plan, c.valid) for c in cells] == [("none", True), ("db-down", True)], [c.error for c in cells]
    _untouched(foreign)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only Redis with a certificate for ``localhost`` only (no IP address in it), signed by a
    throw-away CA: a client that checked it against the proxy's 127.0.0.1 would fail."""
    d = tmp_path / "tls"
    d.mkdir()

    def ssl_(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl_("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=cachecert-test-ca")
    ssl_("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    ssl_("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem",
         "-days", "2", "-extfile", "ext.cnf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", "srv.pem", "--tls-key-file", "srv.key", "--tls-ca-cert-file", "ca.pem",
                             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                import time

                time.sleep(0.05)
        yield port, d / "ca.pem"
    finally:
        proc.kill()
        proc.wait(5)


def test_tls_redis_through_the_proxy(foreign: Cluster, tmp_path: Path, pgpass: str,
                                     tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    pp = _ports(foreign)[1]
    f = tmp_path / "tls.toml"
    f.write_text(f'[redis]\nurl = "rediss://localhost:{port}"\nca_file = "{ca}"\n\n'
                 f'[postgres]\nurl = "postgresql://postgres:${{CC_TEST_PGPASSWORD}}@127.0.0.1:{pp}/postgres"\n')
    res = _run(tmp_path / "ok", "cache-aside", "none", workload="register", time_limit=1.5, backend="external",
               cluster_file=str(f), checkers=["durability"])
    assert not res.get("error") and res["counts"]["ok"] > 50
    hist = (Path(res["run_dir"]) / "history.jsonl").read_text()
    assert '"source": "cache"' in hist or '"source":"cache"' in hist  # reads served by the TLS Redis
    # the check is on: a name the certificate does not carry fails at start, one line
    f.write_text(f.read_text().replace(f'ca_file = "{ca}"', f'ca_file = "{ca}"\nserver_hostname = "cache.example"'))
    with pytest.raises(ServiceError, match=r"^redis: external endpoint localhost:\d+ does not accept the connection: "
                                           r".*certificate is not valid for 'cache.example'"):
        _run(tmp_path / "bad", "cache-aside", "none", workload="register", time_limit=1.0, backend="external",
             cluster_file=str(f), checkers=["durability"])
    # plain-protocol probes cannot verify a fault against a TLS-only server: refused up front
    with pytest.raises(ConfigError, match=r"kill:redis: redis is TLS-only in tls.toml"):
        prepare(RunConfig(workload="register", faults="redis-kill", backend="external", cluster_file=str(f)))


def test_redis_found_through_sentinel(foreign: Cluster, tmp_path: Path, pgpass: str) -> None:
    from harness.topology import Topology

    with Cluster(services=("redis",), name=f"foreign-sentinel-{os.getpid()}", topology=Topology(redis="sentinel")) as s:
        sentinel = s.direct["sentinel-1"]
        f = tmp_path / "sentinel.toml"
        f.write_text(f'[redis]\nsentinels = ["127.0.0.1:1", "{sentinel}"]\nmaster = "mymaster"\n\n'
                     f'[postgres]\nurl = "postgresql://postgres:${{CC_TEST_PGPASSWORD}}@127.0.0.1:{_ports(foreign)[1]}'
                     '/postgres"\n')
        res = _run(tmp_path, "cache-aside", "none", workload="register", time_limit=1.5, backend="external",
                   cluster_file=str(f), checkers=["durability"])
        assert not res.get("error") and res["counts"]["ok"] > 50
        hist = (Path(res["run_dir"]) / "history.jsonl").read_text()
        assert '"source": "cache"' in hist or '"source":"cache"' in hist  # fills were SET: the primary
        primary = redis.Redis(port=int(s.direct["redis"].rpartition(":")[2]))
        assert not [k for k in primary.keys("*") if k.startswith(b"cc_")]  # wrote there, and cleaned up
        log = (Path(res["run_dir"]) / "harness.log").read_text()
        assert "namespace is cc_" in log


def test_commands_checked_timed_masked_and_never_kill_at_teardown(foreign: Cluster, tmp_path: Path,
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


# register: Redis down for the second half; cache-aside's DEL after a commit is lost and the old
# value stays cached (positive control), versioned CAS holds (negative): both backends, same seeds
@pytest.mark.parametrize("strategy, valid", [("cache-aside", False), ("versioned-cas", True)])
def test_register_same_verdicts_as_embedded(foreign: Cluster, tmp_path: Path, pgpass: str, strategy: str,
                                            valid: bool) -> None:
    kw: dict[str, Any] = dict(workload="register", time_limit=2.0, rate=100, concurrency=4, seed=11,
                              params={"ttl": 5}, checkers=["versions", "durability"])
    emb = _run(tmp_path / "emb", strategy, "down:redis@50%+50%", cluster=foreign, **kw)
    _plant(foreign)
    ext = _run(tmp_path / "ext", strategy, "down:redis@50%+50%", backend="external",
               cluster_file=str(_file(tmp_path, foreign)), **kw)
    for res in (emb, ext):
        _verified(res)
        assert res["valid"] is valid and res["checkers"]["versions"]["valid"] is valid, res["checkers"]["versions"]
        count = res["checkers"]["versions"]["anomaly_count"]
        assert count == 0 if valid else count > 0  # seed 11 gave 9 stale reads on both backends
    _untouched(foreign)
