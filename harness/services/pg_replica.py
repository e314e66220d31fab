"""``postgres=replica``: a hot-standby PostgreSQL fed by streaming replication through a proxy.

Why: a cache filled from a read replica can keep a value older than an acknowledged write for good
(the replica-fill workload). To make that lag a fault like any other, the replica reaches its primary
only through the replication-link proxy ``postgres.replica``: its base backup (``pg_basebackup``) and
its WAL stream both go through it, so ``lag:postgres-replica`` (latency on that proxy's downstream,
the primary -> replica direction that carries the WAL) and ``partition:postgres.replica`` act on real
replication.

The primary needs nothing beyond the local PostgresService: the cached initdb template already has
``wal_level=replica``, ``max_wal_senders=10`` (PostgreSQL's defaults) and a ``host replication``
trust entry for 127.0.0.1 in pg_hba.conf, so the single topology is not slowed at all. The base
backup creates a physical replication slot (``cachecert_replica``) so that the primary keeps the WAL
a killed or partitioned replica has not received yet (with 1 MB segments they would otherwise be
recycled quickly), and ``-R`` writes ``standby.signal`` and the ``primary_conninfo`` (the link
proxy's port). The replica is healthy when it answers queries, is in recovery and its WAL receiver
is streaming.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import paths
from harness.services.base import CLUSTER_MARK, ServiceError, log_tail
from harness.services.local import PostgresService
from harness.topology import Topology, TopologyError

LINK = "postgres.replica"  # the replication-link proxy: primary -> replica
REPLICA = "postgres-replica"
SLOT = "cachecert_replica"
BASEBACKUP_TIMEOUT = 60.0


def one_line(text: str, limit: int = 400) -> str:
    """A log tail or an error output as one line (``a | b | c``), its end kept when too long."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out = " | ".join(lines) or "(empty)"
    return out if len(out) <= limit else "..." + out[-limit:]


class PostgresReplica(PostgresService):
    """A hot standby of the cluster's ``postgres``, made and fed through the link proxy."""

    name = REPLICA
    start_timeout = 30.0

    def __init__(self, cluster_dir: Path, port: int, link_port: int) -> None:
        super().__init__(cluster_dir, port)
        self.link_port = link_port

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return  # a restart: the standby resumes from its own data directory
        if self.run_as and subprocess.run(["test", "-x", str(self.dir)], user=self.run_as).returncode != 0:
            raise ServiceError(f"{self.name}: the {self.run_as} user cannot reach {self.dir} (a parent directory is "
                               "not searchable); set CACHECERT_STATE_DIR to a directory under /tmp")
        self.dir.chmod(0o755)
        self._chown(self.dir)
        cmd = [paths.pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.link_port), "-U", "postgres",
               "-D", str(self.data), "-R", "-X", "stream", "-C", "-S", SLOT, "-c", "fast", "-N"]
        log = self.dir / "basebackup.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    user=self.run_as, start_new_session=True,  # marked: the reaper finds it
                                    env={**os.environ, CLUSTER_MARK: str(self.cluster_dir)})
        deadline = time.monotonic() + BASEBACKUP_TIMEOUT
        while proc.poll() is None:
            cancelled = self.cancel is not None and self.cancel.is_set()
            if cancelled or time.monotonic() > deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                if cancelled:
                    raise ServiceError(f"{self.name}: start cancelled")
                raise ServiceError(f"{self.name}: pg_basebackup from the primary through {LINK} did not finish in "
                                   f"{BASEBACKUP_TIMEOUT:g} s; log {log}: {one_line(log.read_text(errors='replace'))}")
            time.sleep(0.05)
        if proc.returncode != 0:
            raise ServiceError(f"{self.name}: pg_basebackup from the primary through {LINK} failed (exit "
                               f"{proc.returncode}): {one_line(log.read_text(errors='replace'))}")
        self.data.chmod(0o700)

    def healthy(self) -> bool:
        self.seen = self.status()
        return self.seen == (True, "streaming")

    def status(self) -> tuple[Any, Any]:
        """(in recovery?, WAL receiver status) as the replica reports them."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             connect_timeout=1) as c:
            row = c.execute("select pg_is_in_recovery(), (select status from pg_stat_wal_receiver)").fetchone()
        return (row[0], row[1]) if row else (None, None)

    def wait_healthy(self, timeout: float | None = None) -> None:
        """As every service, but a replica that does not catch up is reported in one line: which one,
        what it last reported (in recovery or not, its WAL receiver's status) and its log tail."""
        self.seen: tuple[Any, Any] | None = None
        try:
            super().wait_healthy(timeout)
        except ServiceError as e:
            if "start cancelled" in str(e):
                raise
            seen = ("it never answered a query" if self.seen is None else
                    f"last seen in recovery {self.seen[0]}, WAL receiver {self.seen[1] or 'not running'}")
            head = str(e).splitlines()[0].split("; log ")[0]
            raise ServiceError(f"{head} (did not catch up with the primary through {LINK}: {seen}); log "
                               f"{self.log_path}: {one_line(log_tail(self.log_path, 6), 300)}") from None


def expand(cluster: Any, topology: Topology) -> None:
    """Add ``postgres-replica`` (client proxy of that name) and its link proxy ``postgres.replica``."""
    if topology.postgres != "replica":
        return
    if getattr(cluster, "backend", "local") != "local":
        raise TopologyError(f"postgres=replica is only built on the local backend, not {cluster.backend!r}")
    primary = cluster.svc.get("postgres")
    if not isinstance(primary, PostgresService):
        raise TopologyError("postgres=replica needs the cluster's own postgres (the run has none)")
    link = cluster.add_link(LINK, "postgres")
    cluster.add(PostgresReplica(cluster.dir, cluster.port(), link), after="postgres")


__all__ = ["LINK", "REPLICA", "SLOT", "PostgresReplica", "expand"]
