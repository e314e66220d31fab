"""The `local` backend: Redis, PostgreSQL, Kafka (KRaft) and Toxiproxy as local processes.

This is the embedded default: nothing but Debian packages, Maven jars and a Go binary, all on
127.0.0.1 and on free ports, each with its data and log under the cluster directory. Start-up cost
matters because every test and every certification cell starts a cluster, so the slow one-time
steps are cached: PostgreSQL's initdb runs once into a template that later clusters copy, and the
Kafka JVM gets start-up friendly flags.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from harness import paths
from harness.services.base import ProcessService, ServiceError, log_tail
from harness.toxiproxy import Toxiproxy


class RedisService(ProcessService):
    name = "redis"
    start_timeout = 10.0
    stop_timeout = 5.0  # nothing to save (persistence off by default)

    def __init__(self, cluster_dir: Path, port: int, persistence: bool = False) -> None:
        super().__init__(cluster_dir, port)
        self.persistence = persistence

    def command(self) -> list[str]:
        cmd = [paths.redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "no",
               "--save", "", "--appendonly", "yes" if self.persistence else "no"]
        return cmd

    def healthy(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()


class PostgresService(ProcessService):
    """PostgreSQL as the `postgres` user when we are root (initdb refuses to run as root)."""

    name = "postgres"
    start_timeout = 20.0
    # SIGTERM is PostgreSQL's *smart* shutdown, which waits for every client to disconnect (a worker
    # abandoned by the watchdog can hold one for a long time); SIGINT is its fast shutdown.
    stop_signal = signal.SIGINT

    def __init__(self, cluster_dir: Path, port: int) -> None:
        super().__init__(cluster_dir, port)
        import os

        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.data = self.dir / "data"

    def _chown(self, path: Path) -> None:
        if self.run_as:  # one chown -R: a Python walk over ~1000 files was most of the copy's cost
            subprocess.run(["chown", "-R", f"{self.run_as}:{self.run_as}", str(path)], check=True,
                           capture_output=True, timeout=60)

    def _template(self) -> Path | None:
        """An initdb'd data directory, made once per PostgreSQL version and copied per cluster."""
        initdb = paths.pg_bin("initdb")
        version = Path(initdb).parents[1].name
        # 1 MB WAL segments (not 16): the per-cluster copy is 28 MB instead of 39 MB
        tpl = paths.CACHE / f"pg-template-{version}-wal1"
        if (tpl / "PG_VERSION").exists():
            return tpl
        tmp = paths.CACHE / f"pg-template-{version}.tmp-{uuid.uuid4().hex[:6]}"
        tmp.mkdir(parents=True)
        (tmp.parent).chmod(0o755)
        self._chown(tmp)
        res = subprocess.run([initdb, "-D", str(tmp), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                              "--no-sync", "--locale=C", "--wal-segsize=1"], capture_output=True, text=True,
                             user=self.run_as, timeout=120)
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ServiceError(f"postgres: initdb failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        try:
            tmp.rename(tpl)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return tpl

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            if (self.data / "postmaster.pid").exists():
                raise ServiceError(f"postgres: stale data directory {self.data} (postmaster.pid present); "
                                   "run `cachecert down` or remove it")
            return
        if self.run_as and subprocess.run(["test", "-x", str(self.dir)], user=self.run_as).returncode != 0:
            raise ServiceError(f"postgres: the {self.run_as} user cannot reach {self.dir} (a parent directory is "
                               "not searchable); set CACHECERT_STATE_DIR to a directory under /tmp")
        res = subprocess.run(["cp", "-a", str(self._template()), str(self.data)], capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise ServiceError(f"postgres: cannot copy the initdb template: {res.stderr.strip()[-300:]}")
        self.dir.chmod(0o755)
        self.data.chmod(0o700)
        self._chown(self.dir)

    def command(self) -> list[str]:
        return [paths.pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                "-c", "max_connections=300", "-c", "shared_buffers=64MB", "-c", "logging_collector=off",
                "-c", "log_min_messages=warning", "-c", "log_timezone=UTC"]

    def healthy(self) -> bool:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             connect_timeout=1) as c:
            return c.execute("select 1").fetchone() == (1,)


class KafkaService(ProcessService):
    """Single-node Kafka in KRaft mode (broker + controller in one JVM).

    Two client listeners: INTERNAL (advertised as itself, for the broker's own use and our health
    probe) and CLIENT, advertised as the *Toxiproxy* port, so that clients who bootstrap through
    the proxy keep going through it for every later connection.
    """

    name = "kafka"
    start_timeout = 40.0
    storage_template = True  # copy a cached formatted log dir instead of running StorageTool
    # class-data-sharing archive of the broker's classes: about 40% less CPU to start (5.0 -> 3.1 s
    # measured); made by the first broker that stops cleanly, then shared by every later one
    cds = True
    _cds_dump: Path | None = None

    def __init__(self, cluster_dir: Path, port: int, internal_port: int, controller_port: int,
                 name: str = "kafka", node_id: int = 1) -> None:
        self.name = name  # kafka, kafka-2, ... (harness/services/kafka_brokers.py)
        super().__init__(cluster_dir, port)
        self.internal_port = internal_port
        self.controller_port = controller_port
        self.advertised_port = port  # set to the proxy's listen port by the cluster
        self.config = self.dir / "server.properties"
        # one broker of several (set by harness/services/kafka_brokers.py): its node id, every
        # voter of the controller quorum, the shared cluster id, the replication defaults, and
        # the port the INTERNAL listener is advertised as (its replication-link proxy)
        self.node_id = node_id
        self.voters = f"{node_id}@127.0.0.1:{controller_port}"
        self.cluster_id: str | None = None  # None: a fresh one
        self.replication = 1
        self.min_isr = 1
        self.internal_advertised_port = internal_port
        self.xmx = "512m"

    def _java(self, main: str, *args: str) -> list[str]:
        libs = paths.kafka_libs()
        return [paths.java(), "-Xms128m", f"-Xmx{self.xmx}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Xshare:auto", "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
                "-cp", f"{libs}/*", main, *args]

    def prepare(self) -> None:
        logs = self.dir / "data"
        self.config.write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters}",
            f"listeners=INTERNAL://127.0.0.1:{self.internal_port},CLIENT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=INTERNAL://127.0.0.1:{self.internal_advertised_port},"
            f"CLIENT://127.0.0.1:{self.advertised_port}",
            "listener.security.protocol.map=INTERNAL:PLAINTEXT,CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=INTERNAL",
            "controller.listener.names=CONTROLLER",
            f"log.dirs={logs}",
            "num.partitions=1",
            f"offsets.topic.replication.factor={self.replication}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={self.replication}",
            f"transaction.state.log.min.isr={self.min_isr}",
            *self._replicated(),
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.check.interval.ms=600000",
            "",
        ]))
        (self.dir / "log4j.properties").write_text("\n".join([
            "log4j.rootLogger=WARN, stdout",
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.kafka.server.KafkaRaftServer=INFO",
            "log4j.logger.kafka.server.BrokerServer=INFO",
            "",
        ]))
        if (logs / "meta.properties").exists():
            return
        tpl = self._template() if self.storage_template else None
        if tpl is None:
            self._format(self.config)
            return
        shutil.copytree(tpl, logs)
        # fresh ids per cluster, as a format would give (the bootstrap checkpoint holds neither)
        meta = logs / "meta.properties"
        # (several brokers: one cluster id for all, each its own node.id; the checkpoint holds only
        # the metadata version, the static quorum lives in controller.quorum.voters)
        lines = [f"cluster.id={self.cluster_id or _kafka_uuid()}" if ln.startswith("cluster.id=") else
                 f"directory.id={_kafka_uuid()}" if ln.startswith("directory.id=") else
                 f"node.id={self.node_id}" if ln.startswith("node.id=") else ln
                 for ln in meta.read_text().splitlines()]
        meta.write_text("\n".join(lines) + "\n")

    def _format(self, config: Path) -> None:
        res = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id or _kafka_uuid(),
                                        "-c", str(config), "--ignore-formatted"),
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise ServiceError(f"kafka: storage format failed: {(res.stderr or res.stdout).strip()[-400:]}")

    def _template(self) -> Path:
        """A KRaft log directory formatted once per Kafka version and copied per cluster.

        `StorageTool format` is a second JVM start (about 1-2 s of CPU on a 2-core machine) and
        its output does not depend on ports or paths: only node.id and the metadata version,
        which are the same for every cluster we start. Same idea as PostgreSQL's initdb template.
        None if no usable template can be made (the caller formats directly).
        """
        jar = next(paths.kafka_libs().glob("kafka_2.13-*.jar"))
        tpl = paths.CACHE / f"kafka-storage-{jar.stem.removeprefix('kafka_2.13-')}-node1"
        if (tpl / "meta.properties").exists() and (tpl / "bootstrap.checkpoint").exists():
            return tpl
        tmp = paths.CACHE / f"{tpl.name}.tmp-{uuid.uuid4().hex[:6]}"
        tmp.mkdir(parents=True)
        try:
            config = tmp.parent / f"{tmp.name}.properties"
            config.write_text("\n".join(
                f"log.dirs={tmp}" if ln.startswith("log.dirs=") else "node.id=1" if ln.startswith("node.id=") else
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}"
                if ln.startswith("controller.quorum.voters=") else ln
                for ln in self.config.read_text().splitlines()) + "\n")
            try:
                self._format(config)
            finally:
                config.unlink(missing_ok=True)
            try:
                tmp.rename(tpl)
            except OSError:  # another process made it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return tpl if (tpl / "meta.properties").exists() and (tpl / "bootstrap.checkpoint").exists() else None

    def command(self) -> list[str]:
        cmd = self._java("kafka.Kafka", str(self.config))
        cmd[1:1] = self._cds_flags()
        return cmd

    def _cds_path(self) -> Path:
        libs = paths.kafka_libs()
        java = Path(paths.java()).resolve()
        key = "|".join([str(java), str(java.stat().st_mtime_ns), *sorted(p.name for p in libs.glob("*.jar"))])
        return paths.CACHE / f"kafka-cds-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"

    def _cds_flags(self) -> list[str]:
        self._cds_dump = None
        if not self.cds:
            return []
        jsa = self._cds_path()
        if jsa.exists():  # -Xshare:auto: an unusable archive is ignored, never fatal
            return [f"-XX:SharedArchiveFile={jsa}"]
        for old in jsa.parent.glob(f"{jsa.name}.tmp-*"):  # dumps of brokers that never stopped cleanly
            if time.time() - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)
        self._cds_dump = jsa.with_name(f"{jsa.name}.tmp-{uuid.uuid4().hex[:8]}")
        return [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]

    def stop(self) -> None:
        proc, dump = self.proc, self._cds_dump
        if dump is None or proc is None:
            super().stop()
            return
        saved, self.stop_timeout = self.stop_timeout, 90.0  # this exit also writes the archive
        try:
            super().stop()
        finally:
            self.stop_timeout = saved
            self._cds_dump = None
        if proc.returncode != -signal.SIGKILL and dump.exists() and dump.stat().st_size > 0:
            os.replace(dump, self._cds_path())
        else:
            dump.unlink(missing_ok=True)

    def kill(self) -> None:
        super().kill()
        if self._cds_dump is not None:
            self._cds_dump.unlink(missing_ok=True)
            self._cds_dump = None

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.internal_port}",
                             "socket.timeout.ms": 1000, "log_level": 0})
        md = admin.list_topics(timeout=1.0)
        return self.node_id in md.brokers  # registered (and unfenced) with the controller quorum

    def _replicated(self) -> list[str]:
        """Settings of one broker of several (none for a single broker): topics replicated to
        every broker by default, acknowledged by ``min_isr`` of them under acks=all, no unclean
        leader election, and a dead broker fenced (its partitions led elsewhere) within 3 s."""
        if self.replication <= 1:
            return []
        return [f"default.replication.factor={self.replication}", f"min.insync.replicas={self.min_isr}",
                "unclean.leader.election.enable=false", "broker.session.timeout.ms=3000",
                "broker.heartbeat.interval.ms=500"]


def _kafka_uuid() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class ToxiproxyService(ProcessService):
    name = "toxiproxy"
    start_timeout = 10.0
    stop_timeout = 3.0  # stateless: no reason to wait for its open connections

    def command(self) -> list[str]:
        return [paths.toxiproxy_server(), "-host", "127.0.0.1", "-port", str(self.port)]

    def healthy(self) -> bool:
        return bool(Toxiproxy("127.0.0.1", self.port, timeout=0.5).version())

    def client(self, timeout: float = 5.0) -> Toxiproxy:
        return Toxiproxy("127.0.0.1", self.port, timeout=timeout)


__all__ = ["RedisService", "PostgresService", "KafkaService", "ToxiproxyService", "log_tail"]
