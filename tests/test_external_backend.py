"""--backend external on real servers: a Redis + PostgreSQL cluster started with ``cachecert up`` plays
the user's own ("foreign") cluster (tests/_external.py); cachecert is pointed at its direct
addresses through a cluster file with kill/pause commands, and must give the verdicts the embedded
backend (a run starting its own cluster) gives on the same seeds (positive and negative controls of register and write-through),
fault by those commands (verified by probes), keep to its own namespace (a foreign key, a foreign
public.kv row and another schema's table survive; nothing of the run's namespace is left), never
write a credential into the run directory, reach a TLS-only Redis with its certificate's hostname
checked, and find a Redis primary through Sentinel and follow it across a failover. Bad input and the pieces: test_external_cli.py."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _external
import pytest
import redis
from _external import Foreign, _file, _plant, _ports, _run, _untouched, _verified

from harness.cluster import Cluster
from harness.runner import ConfigError, RunConfig, prepare
from harness.services import ServiceError
from harness.services.base import wait_until

foreign = _external.foreign  # the module-scoped "foreign" cluster (one per test module)
pgpass = _external.pgpass


def test_positive_control_same_verdict_as_embedded(foreign: Foreign, tmp_path: Path, pgpass: str) -> None:
    emb = _run(tmp_path / "emb", "cache-then-db", "db-down")  # the embedded backend: a cluster of its own
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


def test_negative_control_same_verdict_as_embedded(foreign: Foreign, tmp_path: Path, pgpass: str) -> None:
    f = str(_file(tmp_path, foreign))
    emb = _run(tmp_path / "emb", "db-first-invalidate", "db-failures", time_limit=4.0)
    _plant(foreign)
    for res in (emb, _run(tmp_path / "ext", "db-first-invalidate", "db-failures", backend="external", cluster_file=f,
                          time_limit=4.0)):
        _verified(res)
        truth = res["checkers"]["db-truth"]
        assert truth["valid"] is True and truth["aborted_reads"] == 0 and truth["lost_writes"] == 0
        assert truth["writes"]["fail"]["total"] > 0 and truth["writes"]["ok"]["total"] > 100
    _untouched(foreign)


# register: Redis down for the second half; cache-aside's DEL after a commit is lost and the old
# value stays cached (positive control), versioned CAS holds (negative): both backends, same seeds
@pytest.mark.parametrize("strategy, valid", [("cache-aside", False), ("versioned-cas", True)])
def test_register_same_verdicts_as_embedded(foreign: Foreign, tmp_path: Path, pgpass: str, strategy: str,
                                            valid: bool) -> None:
    kw: dict[str, Any] = dict(workload="register", time_limit=2.0, rate=100, concurrency=4, seed=11,
                              params={"ttl": 5}, checkers=["versions", "durability"])
    emb = _run(tmp_path / "emb", strategy, "down:redis@50%+50%", **kw)
    _plant(foreign)
    ext = _run(tmp_path / "ext", strategy, "down:redis@50%+50%", backend="external",
               cluster_file=str(_file(tmp_path, foreign)), **kw)
    for res in (emb, ext):
        _verified(res)
        assert res["valid"] is valid and res["checkers"]["versions"]["valid"] is valid, res["checkers"]["versions"]
        count = res["checkers"]["versions"]["anomaly_count"]
        assert count == 0 if valid else count > 0  # seed 11 gave 9 stale reads on both backends
    _untouched(foreign)


def test_kill_command_loses_write_behind_buffer(foreign: Foreign, tmp_path: Path, pgpass: str) -> None:
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


def test_pause_command_is_verified_and_resumed(foreign: Foreign, tmp_path: Path, pgpass: str) -> None:
    _plant(foreign)
    res = _run(tmp_path, "no-cache", "pause:redis@20%+40%", workload="register", time_limit=2.0,
               backend="external", cluster_file=str(_file(tmp_path, foreign)), checkers=["durability"])
    _verified(res)
    assert res["valid"] is True
    assert redis.Redis(port=_ports(foreign)[0], socket_timeout=2).ping()  # resumed
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


def test_tls_redis_through_the_proxy(foreign: Foreign, tmp_path: Path, pgpass: str,
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


def test_redis_found_through_sentinel_and_followed_across_a_failover(foreign: Foreign, tmp_path: Path,
                                                                      pgpass: str) -> None:
    """The primary is found through the Sentinels (the first one listed does not answer), and when
    the user's Sentinels fail over mid-run (SENTINEL FAILOVER, as an operator would) the proxy
    follows: the history records both primaries, and writes succeed on the new one."""
    import threading

    import orjson

    from harness.topology import Topology

    with Cluster(services=("redis",), name=f"foreign-sentinel-{os.getpid()}", topology=Topology(redis="sentinel")) as s:
        sentinel = s.direct["sentinel-1"]
        f = tmp_path / "sentinel.toml"
        f.write_text(f'[redis]\nsentinels = ["127.0.0.1:1", "{sentinel}"]\nmaster = "mymaster"\n\n'
                     f'[postgres]\nurl = "postgresql://postgres:${{CC_TEST_PGPASSWORD}}@127.0.0.1:{_ports(foreign)[1]}'
                     '/postgres"\n')
        sent = redis.Redis(host="127.0.0.1", port=int(sentinel.rpartition(":")[2]))
        before = sent.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        timer = threading.Timer(2.5, lambda: sent.execute_command("SENTINEL", "FAILOVER", "mymaster"))
        timer.start()
        try:
            res = _run(tmp_path, "cache-aside", "none", workload="register", time_limit=6.0, backend="external",
                       cluster_file=str(f), checkers=["durability"])
        finally:
            timer.cancel()
        after = sent.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        assert after != before, "the Sentinels did not fail over during the run"
        assert not res.get("error") and res["counts"]["ok"] > 50
        hist = [orjson.loads(line) for line in (Path(res["run_dir"]) / "history.jsonl").read_bytes().splitlines()]
        assert any(r.get("source") == "cache" for r in hist if r.get("type") == "ok")  # fills were SET: a primary
        primaries = [(r["time_ns"], r["value"]["primary"]) for r in hist if r.get("f") == "primary"]
        new = f"{after[0].decode()}:{int(after[1])}"
        assert [p for _, p in primaries] == [f"{before[0].decode()}:{int(before[1])}", new], primaries
        switched = primaries[1][0]
        late_writes = [r for r in hist if r.get("f") == "write" and r.get("type") == "ok" and r["time_ns"] > switched
                       and r.get("phase") != "final"]
        assert late_writes, "no write succeeded after the proxy moved to the new primary"
        def ours(node: str) -> list[bytes]:
            return [k for k in redis.Redis(port=int(s.direct[node].rpartition(":")[2])).keys("*") if k.startswith(b"cc_")]

        primary = next(n for n in ("redis-2", "redis-3")  # the failover moved it off "redis"
                       if redis.Redis(port=int(s.direct[n].rpartition(":")[2])).execute_command("ROLE")[0] == b"master")
        assert ours(primary) == [], "the run's namespace was left on the new primary"
        # the old primary took writes until the proxy moved; Sentinel turns it into a replica, whose
        # resync from the new primary drops them (and the clean-up's deletes reach every replica)
        assert wait_until(lambda: not ours("redis") and not ours("redis-2") and not ours("redis-3"), 20)
        log = (Path(res["run_dir"]) / "harness.log").read_text()
        assert "namespace is cc_" in log and "the proxy follows" in log


def test_redis_password_by_reference(foreign: Foreign, tmp_path: Path, pgpass: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "redis-Secret-8086"
    monkeypatch.setenv("CC_TEST_REDIS_PW", secret)
    admin = redis.Redis(port=_ports(foreign)[0])
    _plant(foreign)
    f = _file(tmp_path, foreign)
    f.write_text(f.read_text().replace("redis://127.0.0.1", "redis://:${CC_TEST_REDIS_PW}@127.0.0.1"))
    admin.config_set("requirepass", secret)
    try:
        res = _run(tmp_path / "r", "cache-aside", "redis-latency", workload="register", time_limit=2.0,
                   backend="external", cluster_file=str(f), checkers=["durability"])
        _verified(res)  # the probes' PING is answered (NOAUTH is an answer)
        hist = (Path(res["run_dir"]) / "history.jsonl").read_text()
        assert res["counts"]["ok"] > 50 and ('"source": "cache"' in hist or '"source":"cache"' in hist)
    finally:
        redis.Redis(port=_ports(foreign)[0], password=secret).config_set("requirepass", "")
    hits = subprocess.run(["grep", "-rl", secret, str(tmp_path / "r")], capture_output=True, text=True)
    assert hits.stdout == "", f"the secret was written to {hits.stdout}"
    _untouched(foreign)


def test_worker_processes_stay_in_the_namespace(foreign: Foreign, tmp_path: Path, pgpass: str) -> None:
    """--procs 2: each worker process registers the run's access (namespace, ${VAR} references)."""
    _plant(foreign)
    res = _run(tmp_path, "cache-aside", "none", workload="register", time_limit=1.5, procs=2, nodes=2,
               backend="external", cluster_file=str(_file(tmp_path, foreign)), checkers=["durability"])
    hist = (Path(res["run_dir"]) / "history.jsonl").read_text()
    assert not res.get("error") and res["counts"]["ok"] > 50
    assert '"source": "cache"' in hist or '"source":"cache"' in hist
    _untouched(foreign)
