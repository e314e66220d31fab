"""The "foreign" cluster of the external-backend tests: a Redis + PostgreSQL cluster started with
``cachecert up`` (as a user would start one) and then treated as the user's own, a cluster file pointing at its direct addresses with
kill/start/pause/resume lines (tests/data/external_ctl.py), someone else's data planted in it, and
the check that a run left that data (and nothing of its own) behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from harness.cluster import Cluster, list_clusters
from harness.runner import Run, RunConfig, prepare

REPO = Path(__file__).resolve().parents[1]
CTL = f"{sys.executable} {REPO / 'tests' / 'data' / 'external_ctl.py'}"
WT = "write-through-db-failure"


@dataclass
class Foreign:
    """The foreign cluster as its user knows it: where its state is and its servers' own addresses."""

    id: str
    dir: Path
    direct: dict[str, str]
    env: dict[str, str]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def start_foreign(services: str) -> Iterator[Foreign]:
    """Started as a user starts one, ``cachecert up`` (detached, in a state directory of its own),
    stopped with ``cachecert down --name``."""
    state = Path(tempfile.mkdtemp(prefix="cachecert-foreign-", dir="/tmp"))
    state.chmod(0o755)
    env = dict(os.environ, CACHECERT_STATE_DIR=str(state))
    name = f"foreign-{os.getpid()}"
    p = cli("up", "--services", services, "--name", name, "--json", env=env)
    try:
        assert p.returncode == 0, p.stderr
        info = json.loads(p.stdout)
        yield Foreign(info["id"], Path(info["dir"]), info["direct"], env)
    finally:
        down = cli("down", "--name", name, env=env)  # also reaps a server the kill test restarted (its pidfile)
        assert down.returncode == 0, down.stderr
        left = [c for c in list_clusters(state) if c["running"]]
        shutil.rmtree(state, ignore_errors=True)
        assert not left, f"cachecert down --name {name} left {left}"


@pytest.fixture(scope="module")
def foreign() -> Iterator[Foreign]:
    yield from start_foreign("redis,postgres")


def _ports(c: Foreign) -> tuple[int, int]:
    return int(c.direct["redis"].rpartition(":")[2]), int(c.direct["postgres"].rpartition(":")[2])


def _pg(c: Foreign) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=_ports(c)[1], user="postgres", dbname="postgres", autocommit=True)


def _file(tmp: Path, c: Foreign, redis_extra: str = "", pg_url: str | None = None, commands: bool = True) -> Path:
    rp, pp = _ports(c)
    pid = c.dir / "pids" / "redis.json"
    cmds = (f'kill = "{CTL} kill {pid}"\nstart = "{CTL} start {pid}"\n'
            f'pause = "{CTL} pause {pid}"\nresume = "{CTL} resume {pid}"\ntimeout = 10\n') if commands else ""
    url = pg_url or f"postgresql://postgres:${{CC_TEST_PGPASSWORD}}@127.0.0.1:{pp}/postgres"
    f = tmp / "cluster.toml"
    f.write_text(f'[redis]\nurl = "redis://127.0.0.1:{rp}"\n{redis_extra}{cmds}\n[postgres]\nurl = "{url}"\n')
    return f


def _plant(c: Foreign) -> None:
    """Someone else's data: a Redis key, a row in public.kv (the name our workloads use) and a
    table in another schema."""
    r = redis.Redis(port=_ports(c)[0])
    r.flushall()  # what an embedded run left
    r.set("someone-else:key", "keep me")
    with _pg(c) as conn:
        conn.execute("drop table if exists public.kv cascade")  # what an embedded run left
        conn.execute("create table public.kv (key text primary key, value jsonb, version bigint)")
        conn.execute("insert into public.kv values ('precious', '\"keep\"', 41) on conflict do nothing")
        conn.execute("create schema if not exists billing")
        conn.execute("create table if not exists billing.invoices (id int primary key)")
        conn.execute("insert into billing.invoices values (1) on conflict do nothing")


def _untouched(c: Foreign) -> None:
    r = redis.Redis(port=_ports(c)[0])
    assert r.keys("*") == [b"someone-else:key"], "the run left keys outside its namespace, or in it"
    assert r.get("someone-else:key") == b"keep me"
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
