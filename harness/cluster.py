"""A cluster: the services of one run, each behind its own Toxiproxy proxy.

Why: every client connection in a run must go through a proxy, or faults would miss it. The
cluster starts Toxiproxy and the services (in parallel: start-up time is dominated by the Kafka
JVM), creates one proxy per service, and exposes ``endpoints`` — the proxy addresses clients use —
next to ``direct`` addresses that only the harness's own probes and final reads may use.

Each cluster lives in ``STATE/clusters/<id>/`` with its pidfiles, logs and a ``cluster.json``; that
record is what ``cachecert status`` shows and what ``cachecert down`` uses to reap the processes of
a run that was itself killed. Before that, the cluster's reaper (harness/reaper.py), a watcher
process, kills the services and removes the directory within seconds of its owning process's death,
by any signal: a SIGKILLed run leaves nothing behind even without `cachecert down`. A detached
cluster (`cachecert up`) releases its reaper once it is up, and is kept until `cachecert down`.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import paths, reaper
from harness.services import Service, ServiceError
from harness.services.base import alive, free_port, port_in_use, proc_start_time, reap_pidfile
from harness.services.local import KafkaService, PostgresService, RedisService, ToxiproxyService
from harness.topology import Topology, TopologyError
from harness.toxiproxy import Toxiproxy

ALL_SERVICES = ("redis", "postgres", "kafka")
BACKENDS = ("local", "docker", "external")
_PROXY_LOCK = threading.Lock()
_SEQ = itertools.count(1)  # default ids stay unique for clusters started in the same second


class ClusterError(RuntimeError):
    """The cluster cannot be brought up (or is in a state that forbids the request)."""


def clusters_dir(state: Path | None = None) -> Path:
    return (state or paths.STATE) / "clusters"


def _stop_one(svc: Service) -> None:
    try:
        svc.resume()
        svc.stop()
    except Exception:  # noqa: BLE001 - stopping anyway
        svc.kill()


@dataclass
class Cluster:
    """Services + proxies for one run. Use as a context manager or call ``up``/``down``."""

    services: tuple[str, ...] = ALL_SERVICES
    name: str | None = None
    detached: bool = False  # started by `cachecert up`: outlives this process
    port_base: int | None = None  # fixed ports from here on, instead of free ones
    redis_persistence: bool = False
    state: Path | None = None
    backend: str = "local"  # "local" processes or "docker" containers (harness/services/docker.py)
    images: dict[str, str] = field(default_factory=dict)  # docker: per-service image overrides
    topology: Topology = field(default_factory=Topology)  # replicas, sentinels, brokers (harness/topology.py)
    cluster_file: str | None = None  # external: the servers to put proxies in front of (harness/clusterfile.py)
    id: str = field(init=False)
    dir: Path = field(init=False)
    svc: dict[str, Service] = field(init=False, default_factory=dict)
    proxies: dict[str, int] = field(init=False, default_factory=dict)
    upstream: dict[str, str] = field(init=False, default_factory=dict)  # proxy -> the server it forwards to
    links: set[str] = field(init=False, default_factory=set)  # replication-link proxies (not client endpoints)
    after: dict[str, str] = field(init=False, default_factory=dict)  # server -> the server healthy before it starts
    toxiproxy_service: ToxiproxyService | None = field(init=False, default=None)
    timings: dict[str, float] = field(init=False, default_factory=dict)
    _given: int = field(init=False, default=0)  # fixed ports handed out from port_base
    _claimed: bool = field(init=False, default=False)  # this object owns self.dir (may remove it)
    _reaper: reaper.Handle | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ClusterError(f"unknown backend {self.backend!r} (valid: {', '.join(BACKENDS)})")
        unknown = set(self.services) - set(ALL_SERVICES)
        if unknown:
            raise ClusterError(f"unknown service {sorted(unknown)[0]!r} (valid: {', '.join(ALL_SERVICES)})")
        self.id = self.name or f"c{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_SEQ)}"
        self.dir = clusters_dir(self.state) / self.id

    # -- ports ------------------------------------------------------------------------------
    def port(self) -> int:
        """The next port: a free one, or with ``port_base`` the next fixed one (refused if taken)."""
        if self.port_base is None:
            return free_port()
        p = self.port_base + self._given
        self._given += 1
        if port_in_use(p):
            raise ClusterError(f"port {p} on 127.0.0.1 is already in use (ports from {self.port_base} needed)")
        return p

    # -- building (harness/services/*: each topology family adds its servers and links) ---------
    def add(self, svc: Service, proxy: bool = True, after: str | None = None) -> int | None:
        """Add a server under its name, with a client proxy of the same name (its listen port is
        returned) unless ``proxy`` is False; ``after``: a server that must be healthy first."""
        self.svc[svc.name] = svc
        if after:
            self.after[svc.name] = after
        return self.add_link(svc.name, svc.name, link=False) if proxy else None

    def add_link(self, name: str, service: str, link: bool = True) -> int:
        """A proxy ``name`` to server ``service``, created before any server starts (a replica can
        connect through it from its first second); returns its listen port. ``link``: a
        replication link (not offered to clients as an endpoint)."""
        port = self.port()
        self.proxies[name] = port
        self.upstream[name] = service
        if link:
            self.links.add(name)
        return port

    # -- lifecycle --------------------------------------------------------------------------
    def up(self) -> Cluster:
        t0 = time.monotonic()
        self._claim()
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        if self.detached:  # kept until `cachecert down`: only a start cut short is reaped
            self._release_reaper()
        self.timings["total"] = time.monotonic() - t0
        return self

    def _claim(self) -> None:
        """Take this cluster's directory, or refuse if a live cluster (or a live run starting it)
        has it. A dead leftover of the same name (a killed run) is reaped and wiped: every up starts
        fresh, so a stale pidfile or postmaster.pid of a crashed run cannot block it. The check and
        the first record are written under a lock, so two concurrent `up`s cannot both win."""
        root = clusters_dir(self.state)
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            rec = read_record(self.dir) if self.dir.exists() else None
            if rec is not None:
                if cluster_alive(rec) or (owner_alive(rec) and not rec.get("stopped")):
                    raise ClusterError(f"cluster {self.id!r} is already running; run `cachecert down` first")
                reap_cluster(self.dir)
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
            self.dir.chmod(0o755)
            self._claimed = True
            self._write_record()
        finally:
            os.close(fd)  # releases the lock

    def _up(self) -> None:
        self.toxiproxy_service = ToxiproxyService(self.dir, self.port())
        if self.backend == "external":  # servers cachecert did not start: only proxies to them
            from harness.services import external

            external.add_servers(self)
        for s in self.services if self.backend != "external" else ():
            if s == "redis":
                self.add(RedisService(self.dir, self.port(), persistence=self.redis_persistence))
            elif s == "postgres":
                self.add(PostgresService(self.dir, self.port()))
            elif s == "kafka":
                k = KafkaService(self.dir, self.port(), self.port(), self.port())
                k.advertised_port = self.add(k) or k.port
        self._expand()
        if self.backend == "docker":
            self._containerize()
        servers = list(self.svc.values())
        for svc in [self.toxiproxy_service, *servers]:  # a missing binary or jar fails here, before anything is spawned
            svc.command()
        self._write_record()
        self._reaper = reaper.spawn(self.dir, self.id, self.backend)  # before anything can leak
        t = time.monotonic()
        self.toxiproxy_service.start()  # first (~0.1 s): every proxy exists before any server starts
        self.timings["toxiproxy"] = time.monotonic() - t
        tp = self.toxiproxy
        for name, port in self.proxies.items():
            tp.create_proxy(name, f"127.0.0.1:{port}", self.svc[self.upstream[name]].endpoint)
        self._start_all(servers)
        self._write_record()

    def _expand(self) -> None:
        """Add the replicas, sentinels and brokers the topology asks for (one module per family)."""
        topo = self.topology
        try:
            if "redis" in self.services and topo.redis != "single":
                from harness.services import redis_ha

                redis_ha.expand(self, topo)
            if "postgres" in self.services and topo.postgres != "single":
                from harness.services import pg_replica

                pg_replica.expand(self, topo)
            if "kafka" in self.services and topo.kafka > 1:
                from harness.services import kafka_brokers

                kafka_brokers.expand(self, topo)
        except TopologyError as e:
            raise ClusterError(str(e)) from None

    def _start_all(self, servers: list[Service]) -> None:
        """Start every server in parallel (start-up is dominated by JVMs and basebackups), each one
        named in ``after`` once that one is healthy; the first failure cancels the rest."""
        errors: list[BaseException] = []
        cancel = threading.Event()
        healthy = {svc.name: threading.Event() for svc in servers}

        def start(svc: Service) -> None:
            t = time.monotonic()
            try:
                dep = self.after.get(svc.name)
                if dep is not None:
                    while not healthy[dep].wait(0.05):
                        if cancel.is_set():
                            raise ServiceError(f"{svc.name}: start cancelled")
                svc.start()
                self.timings[svc.name] = time.monotonic() - t
                healthy[svc.name].set()
            except BaseException as e:  # noqa: BLE001 - reported below, first one wins
                errors.append(e)
                cancel.set()  # no point waiting for the others (Kafka takes seconds)

        threads = [threading.Thread(target=start, args=(s,), daemon=True) for s in servers]
        for svc in servers:
            svc.cancel = cancel  # type: ignore[attr-defined]
        for th in threads:
            th.start()
        try:
            for th in threads:
                th.join()
        except BaseException:
            # Ctrl-C / SIGTERM while services start: make every start thread stop spawning and
            # waiting, and wait for them, so the teardown that follows sees every process.
            cancel.set()
            for th in threads:
                th.join()
            raise
        if errors:
            real = [e for e in errors if "start cancelled" not in str(e)]
            raise (real or errors)[0]

    def _containerize(self) -> None:
        """Docker backend: keep each service's definition, run its process in a container."""
        from harness.services import docker as dk

        c = dk.client()
        default = dk.ensure_host_image(c)
        mounts = [Path("/usr"), Path("/etc"), paths.CACHE, self.dir]
        for name, svc in list(self.svc.items()):
            self.svc[name] = dk.ContainerService(svc, c, self.images.get(name, default), self.id, mounts)  # type: ignore[arg-type]
        assert self.toxiproxy_service is not None
        self.toxiproxy_service = dk.ContainerService(  # type: ignore[assignment]
            self.toxiproxy_service, c, self.images.get("toxiproxy", default), self.id, mounts)

    def down(self) -> None:
        """Heal every fault, stop every service, then toxiproxy. Safe to call twice."""
        if not self._claimed:
            return  # a refused up started nothing; the pidfiles there belong to the cluster that refused it
        if self.backend == "external":  # remove the run's namespace (only it) while the servers are known
            from harness.services import external

            for problem in external.teardown(self):
                print(f"cachecert: warning: {problem}", file=sys.stderr)
        if self.toxiproxy_service is not None and self.toxiproxy_service.running():
            try:
                self.toxiproxy.reset()
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        # every server at once: a replicated server's last member out can wait on peers already gone
        # (the last Kafka broker waits for a quorum), and in sequence those waits add up
        stoppers = [threading.Thread(target=_stop_one, args=(svc,), daemon=True) for svc in self.svc.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        if self.toxiproxy_service is not None:
            self.toxiproxy_service.stop()
        for pf in (self.dir / "pids").glob("*.json") if (self.dir / "pids").exists() else []:
            reap_pidfile(pf)
        if self.backend == "docker":
            from harness.services.docker import sweep

            sweep(self.id)
        rec = self.dir / "cluster.json"
        if rec.exists():
            data = json.loads(rec.read_text())
            data["stopped"] = True
            rec.write_text(json.dumps(data, indent=2))
        self._release_reaper()

    def _release_reaper(self) -> None:
        """The cluster is stopped (or detached): its reaper exits without touching anything."""
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None

    def remove(self) -> None:
        """Delete the cluster directory (after ``down``; copy logs out first if you want them).
        Does nothing if this object never claimed the directory (e.g. its ``up`` was refused
        because another live cluster has that name: that one's pidfiles must survive)."""
        if self._claimed:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
        self.remove()

    # -- access -----------------------------------------------------------------------------
    @property
    def toxiproxy(self) -> Toxiproxy:
        assert self.toxiproxy_service is not None, "cluster is not up"
        return self.toxiproxy_service.client()

    @property
    def endpoints(self) -> dict[str, str]:
        """The proxy address of each server: what every client must use (replication links excepted)."""
        return {s: f"127.0.0.1:{p}" for s, p in self.proxies.items() if s not in self.links}

    @property
    def direct(self) -> dict[str, str]:
        """The service's own address, bypassing the proxy (harness probes and final reads only)."""
        return {s: svc.endpoint for s, svc in self.svc.items()}

    def add_proxy(self, name: str, service: str) -> str:
        """An extra proxy to ``service`` named ``name`` (e.g. ``redis.bus3``, one application node's
        event link), so a fault can hit one node's link without touching the others. Idempotent:
        asking again for the same name returns the existing endpoint. Names must be
        ``SERVICE.SUFFIX``: fault specs accept them as targets and probe them as ``SERVICE``."""
        svc, dot, suffix = name.partition(".")
        if svc != service or not dot or not suffix:
            raise ClusterError(f"extra proxy name must look like {service}.SUFFIX, got {name!r}")
        with _PROXY_LOCK:
            if name in self.proxies:
                return f"127.0.0.1:{self.proxies[name]}"
            target = self.service(service)
            port = free_port()
            self.toxiproxy.create_proxy(name, f"127.0.0.1:{port}", target.endpoint)
            self.proxies[name] = port
            self.upstream[name] = service
        return f"127.0.0.1:{port}"

    def service(self, name: str) -> Service:
        if name == "toxiproxy" and self.toxiproxy_service is not None:
            return self.toxiproxy_service
        try:
            return self.svc[name]
        except KeyError:
            raise ClusterError(f"no service {name!r} in this cluster (have: {', '.join(self.svc)})") from None

    def logs(self) -> dict[str, Path]:
        out = {s: svc.log_path for s, svc in self.svc.items() if svc.log_path}
        if self.toxiproxy_service:
            out["toxiproxy"] = self.toxiproxy_service.log_path
        return out

    def collect_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for name, p in self.logs().items():
            if p.exists():
                shutil.copyfile(p, dest / f"{name}.log")

    def describe(self) -> dict[str, Any]:
        tp = self.toxiproxy_service
        return {
            "id": self.id, "dir": str(self.dir), "backend": self.backend, "owner_pid": os.getpid(),
            "owner_start": proc_start_time(os.getpid()), "detached": self.detached,
            "toxiproxy": tp.endpoint if tp else None, "topology": self.topology.text(),
            "endpoints": self.endpoints, "direct": self.direct,
            "logs": {k: str(v) for k, v in self.logs().items()},
        }

    def _write_record(self) -> None:
        (self.dir / "cluster.json").write_text(json.dumps(self.describe(), indent=2))


# -- records of clusters (status / down) ---------------------------------------------------
def read_record(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / "cluster.json").read_text())
    except (OSError, ValueError):
        return None


def owner_alive(rec: dict[str, Any]) -> bool:
    pid = rec.get("owner_pid")
    return bool(pid) and alive(pid) and proc_start_time(pid) == rec.get("owner_start")


def cluster_alive(rec: dict[str, Any]) -> bool:
    """Any recorded process of the cluster still running?"""
    from harness.services.base import read_pidfile

    pids = Path(rec["dir"]) / "pids"
    if any((r := read_pidfile(p)) is not None and r.matches() for p in pids.glob("*.json")):
        return True
    if rec.get("backend") == "docker":
        from harness.services.docker import running_containers

        return bool(running_containers(rec["id"]))
    return False


def list_clusters(state: Path | None = None) -> list[dict[str, Any]]:
    out = []
    root = clusters_dir(state)
    for d in sorted(root.iterdir()) if root.exists() else []:
        rec = read_record(d)
        if rec is None:
            continue
        rec["running"] = cluster_alive(rec)
        rec["orphaned"] = rec["running"] and not rec.get("detached") and not owner_alive(rec)
        out.append(rec)
    return out


def reap_cluster(d: Path) -> int:
    """Kill every process a cluster directory's pidfiles name; return how many were running."""
    n = 0
    pids = d / "pids"
    # services first, toxiproxy last (so nothing is left half-proxied)
    files = sorted(pids.glob("*.json"), key=lambda p: p.stem == "toxiproxy") if pids.exists() else []
    for pf in files:
        n += reap_pidfile(pf)
    return n


def down_all(state: Path | None = None, force: bool = False, name: str | None = None) -> list[tuple[str, int]]:
    """Reap detached clusters and leftovers of killed runs; live runs' clusters only with force.
    ``name``: that cluster only (others, and Docker orphans, are left alone)."""
    done = []
    records = list_clusters(state)
    for rec in records:
        if name is not None and rec["id"] != name:
            continue
        d = Path(rec["dir"])
        if not force and not rec.get("detached") and owner_alive(rec):
            continue  # a live run owns it and will tear it down itself
        n = reap_cluster(d)
        if rec.get("backend") == "docker":
            from harness.services.docker import sweep

            n += sweep(rec["id"])
        if rec.get("backend") == "external":  # a killed run's namespace on the user's servers
            from harness.services.external import reap_namespace

            reap_namespace(d)
        shutil.rmtree(d, ignore_errors=True)
        done.append((rec["id"], n))
    if name is not None:
        return done
    from harness.services.docker import sweep_orphans

    orphans = sweep_orphans({r["id"] for r in records})
    if orphans:
        done.append(("docker (by label)", orphans))
    return done


__all__ = ["Cluster", "ClusterError", "ServiceError", "list_clusters", "down_all", "reap_cluster"]
