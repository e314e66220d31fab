"""The `external` backend: servers cachecert did not start, described by a cluster file.

Why: teams want to run the same workloads against a staging cluster in nightly CI. cachecert then
starts only its own Toxiproxy, with one proxy per server to the external address, so every link
fault works as on the embedded backend; process faults run the file's shell commands (a
``systemctl`` or ``kubectl`` line) instead of signals, and a fault the file gives no command for is
refused before the run starts.

Each server gets a second, never-faulted proxy of the harness's own (``NAME.harness``): the
cluster's ``direct`` address of an external server is that proxy, so probes, set-up and final
reads see the server itself, exactly as they use a local server's own port (the probes dial
127.0.0.1), and the client proxy chains to it. Health is checked at the protocol level (Redis
PING, PostgreSQL SSLRequest, Kafka ApiVersions), credentials when the cluster comes up.

Data it did not create is never touched: the run works in a fresh namespace ``cc_<time>_<hex>``
(core/namespace.py: Redis keys under ``NS:``, PostgreSQL in schema ``NS``) that every connection
to this cluster's addresses is confined to (core/access.py), and ``teardown`` removes that
namespace alone. Workloads whose set-up is not known to stay inside it are refused (``refusal``).
Kafka names cannot be rewritten in a connection, so the run's topics and consumer groups carry the
namespace in their names (core.namespace.run_token) and the clean-up deletes those; Kafka link
faults are refused (the brokers advertise their own addresses: after bootstrap the clients do not
pass through the proxy). A Redis behind Sentinel is followed across failovers (SentinelFollower).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.access import Access, AccessError, add_resolver, expand, refs, remove_resolver
from harness.clusterfile import ClusterFile, Server
from harness.clusterfile import load as load_file
from harness.services.base import ServiceError

PROCESS_FAULTS = {  # fault kind -> command sets that can play it (any one set, all of its commands)
    "kill": (("kill", "start"), ("kill", "restart")),
    "pause": (("pause", "resume"),),
    "restart": (("restart",), ("kill", "start")),
}
_REQ_CACHE: dict[str, bytes] = {}
RECORD = "namespace.json"  # the run's namespace and cluster file, for the reaper of a killed run


def new_namespace() -> str:
    return f"cc_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}_{secrets.token_hex(3)}"


def _request(protocol: str) -> bytes:
    if not _REQ_CACHE:
        from harness.faults.probe import REQUESTS

        _REQ_CACHE.update(REQUESTS)
    return _REQ_CACHE[protocol]


class ExternalService:
    """One server of the user's (the Service interface, by the file's commands)."""

    def __init__(self, server: Server, cluster_dir: Path, namespace: str, harness_port: int) -> None:
        self.server = server
        self.name = server.name
        self.protocol = "postgres" if server.name.startswith("postgres") else server.name
        self.access = Access(namespace, server.username, server.password, server.dbname, server.tls,
                             server.server_hostname, server.ca_file, server.sslmode, service=server.name)
        self.harness_port = harness_port
        self.dir = cluster_dir / "external"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path: Path | None = self.dir / f"{self.name}.log"
        self.toxiproxy: Any = None  # set by add_servers: a function returning the cluster's Toxiproxy client
        self.paused = False
        self.killed = False
        self.namespaced = False  # the schema exists / keys may: teardown removes them
        self.started = False
        self.follower: SentinelFollower | None = None  # Redis through Sentinel: keeps the proxy on the primary
        self.closing = False  # the cluster is coming down: never kill, a failed resume is only logged
        self.cancel = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The harness's own proxy to the server (what client proxies chain to, probes and final reads dial)."""
        return f"127.0.0.1:{self.harness_port}"

    @property
    def address(self) -> str:
        return self.server.address

    # -- the service interface ---------------------------------------------------------------
    def command(self) -> list[str]:
        return []  # nothing to spawn

    def start(self, wait: bool = True) -> None:
        """First start: resolve the address (Sentinel), create the harness proxy, check the server
        answers and the credentials work, create the namespace. After a kill: the start command."""
        if not self.started:
            self._first_start()
            self.started = True
            return
        if self.killed:
            self._run("start" if "start" in self.server.commands else "restart")
            self.killed = False
        if wait:
            self.wait_healthy()

    def _first_start(self) -> None:
        s = self.server
        if s.sentinels:
            s.host, s.port = _sentinel_master(s)
        self.toxiproxy().create_proxy(f"{self.name}.harness", self.endpoint, s.address)
        if s.sentinels:
            self.follower = SentinelFollower(self)
        self.wait_healthy(timeout=min(s.timeout, 5.0))  # it runs already: not answering is not "starting"
        try:
            self._check_access()
        except AccessError as e:
            raise ServiceError(f"{self.name}: {e}") from None
        except ServiceError:
            raise
        except Exception as e:  # noqa: BLE001 - one line naming the server
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ServiceError(f"{self.name}: external endpoint {s.address} does not accept the connection: {first}") from None

    def _check_access(self) -> None:
        if self.protocol == "redis":
            client = self.redis()
            try:
                client.ping()
                self.namespaced = True
            finally:
                client.close()
        elif self.name == "postgres":
            import psycopg

            with psycopg.connect(**self.access.pg_kwargs(self.server.host, self.server.port), autocommit=True,
                                 connect_timeout=5) as c:
                try:  # fails if it exists: a run never adopts (and so never drops) a schema it did not create
                    c.execute(f'create schema "{self.access.namespace}"')
                except psycopg.Error as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise ServiceError(f"postgres: cannot create the run's schema {self.access.namespace} on "
                                       f"{self.server.address}: {first}") from None
                self.namespaced = True
        elif self.protocol == "postgres":
            import psycopg

            with psycopg.connect(**self.access.pg_kwargs(self.server.host, self.server.port), autocommit=True,
                                 connect_timeout=5) as c:
                c.execute("select 1")
        elif self.protocol == "kafka":
            self.namespaced = True  # topics and groups are named after the namespace (core.namespace.run_token)

    def redis(self, host: str | None = None, port: int | None = None, timeout: float = 5) -> Any:
        """A namespaced client of the server (or of another node of it at host:port), with the
        file's credentials and TLS settings."""
        import redis

        pool = redis.ConnectionPool(host=host or self.server.host, port=port or self.server.port,
                                    socket_timeout=timeout, socket_connect_timeout=timeout,
                                    **self.access.redis_kwargs())
        return redis.Redis.from_pool(pool)  # close() disconnects, not the garbage collector later

    def stop(self) -> None:
        """Never stops a server of the user's; only undoes a pause of ours."""
        if self.follower is not None:
            self.follower.stop()
        try:
            self.resume()
        except Exception:  # noqa: BLE001 - logged by _run; stopping must not escalate to kill
            pass

    def kill(self) -> None:
        if self.closing:  # Cluster.down kills what failed to stop: not a server of the user's
            return
        self._run("kill")
        self.killed = True

    def pause(self) -> None:
        self._run("pause")
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            try:
                self._run("resume")
            except Exception:
                if not self.closing:
                    raise
                return  # logged; the cluster's teardown goes on (and must not kill instead)
            self.paused = False

    def restart(self, kill: bool = False) -> None:
        if "restart" in self.server.commands:
            self._run("restart")
        else:
            self.kill()
            self.start(wait=False)
        self.wait_healthy()

    def healthy(self) -> bool:
        """The server answers a protocol request (any answer: an auth error is an answer); a
        TLS-only Redis or Kafka resets plain requests, so for those a completed TLS handshake."""
        if self.server.tls and self.protocol != "postgres":
            return self._tls_handshake()
        try:
            with socket.create_connection((self.server.host, self.server.port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                sock.sendall(_request(self.protocol))
                return bool(sock.recv(64))
        except OSError:
            return False

    def _tls_handshake(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False  # liveness only: the clients check the certificate
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((self.server.host, self.server.port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                with ctx.wrap_socket(sock, server_hostname=self.server.server_hostname or self.server.host):
                    return True
        except (OSError, ssl.SSLError):
            return False

    def running(self) -> bool:
        up = self.healthy()
        if up:
            self.killed = False  # back (a supervisor restarted it): nothing for start() to bring back
        return up

    def wait_healthy(self, timeout: float | None = None) -> None:
        timeout = self.server.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() >= deadline:
                raise ServiceError(f"{self.name}: external endpoint {self.server.address} does not answer "
                                   f"(no {self.protocol} reply within {timeout:g} s)")
            if self.cancel is not None and self.cancel.is_set():
                raise ServiceError(f"{self.name}: start cancelled")
            time.sleep(0.1)

    # -- commands ----------------------------------------------------------------------------
    def _run(self, action: str) -> None:
        """Run the file's ``action`` command (a shell line; ``${VAR}`` expanded by the shell from the
        environment), with a timeout and its exit status checked. Logged with the template, never
        with the values: any referenced variable's value is masked in what the command printed."""
        cmd = self.server.commands.get(action)
        if cmd is None:
            raise ServiceError(f"{self.name}: no {action} command in the cluster file")
        try:
            expand(cmd, f"the {action} command of {self.name}")  # a missing variable: one line, before running
        except AccessError as e:
            raise ServiceError(str(e)) from None
        t0 = time.monotonic()
        proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")
        try:
            out, _ = proc.communicate(timeout=self.server.timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            out, _ = proc.communicate()
            self._log(action, cmd, f"timed out after {self.server.timeout:g} s", out)
            raise ServiceError(f"{self.name}: {action} command timed out after {self.server.timeout:g} s") from None
        self._log(action, cmd, f"exit {proc.returncode} in {time.monotonic() - t0:.2f} s", out)
        if proc.returncode != 0:
            last = _mask(out, cmd).strip().splitlines()[-1:] or ["(no output)"]
            raise ServiceError(f"{self.name}: {action} command exited {proc.returncode}: {last[0][:200]}")

    def _log(self, action: str, cmd: str, status: str, out: str) -> None:
        assert self.log_path is not None
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {action}: {cmd} -> {status}\n")
            for line in _mask(out, cmd).splitlines()[-20:]:
                f.write(f"    {line}\n")


def _mask(text: str, cmd: str) -> str:
    for name in refs(cmd):
        v = os.environ.get(name)
        if v:
            text = text.replace(v, f"${{{name}}}")
    return text


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SentinelFollower:
    """Keeps the harness proxy of a Redis reached through Sentinel on the primary the Sentinels name.

    Clients of a Sentinel deployment ask the Sentinels where the primary is and reconnect there
    after a failover; cachecert's clients reach the one proxy instead, so the proxy does the asking:
    every ``interval`` s it asks the Sentinels, and when they name a new address that answers ROLE
    as master it re-points the proxy there (Toxiproxy drops the proxy's live connections on a new
    upstream, so every client reconnects, to the new primary, as a Sentinel client would). Each
    switch is kept in ``switches`` and given to the listener (the nemesis's ``primary`` record)."""

    def __init__(self, svc: ExternalService, interval: float = 0.5) -> None:
        self.svc, self.interval = svc, interval
        self.current = svc.server.address
        self.switches: list[dict[str, Any]] = []
        self.listener: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sentinel-follow", daemon=True)
        self._thread.start()

    def listen(self, note: Any) -> SentinelFollower:
        """``note(view)`` now with the current primary, then with each switch (PrimaryWatch's records)."""
        with self._lock:
            self.listener = note
            note(self._view(self.current))
        return self

    @staticmethod
    def _view(addr: str) -> dict[str, Any]:
        return {"primary": addr, "masters": [addr], "votes": {}}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - following must never take the run down
                logging.getLogger("cachecert.external").debug("sentinel follow: %s", e)

    def poll(self) -> bool:
        """One look; True when the proxy was moved."""
        s = self.svc.server
        try:
            host, port = _sentinel_master(s)
        except ServiceError:
            return False  # no Sentinel answered (a fault, a restart): keep the proxy where it is
        addr = f"{host}:{port}"
        if addr == self.current or _role(self.svc, host, port) != "master":
            return False  # the same, or named before it took over: the next look decides
        with self._lock:
            if self._stop.is_set():
                return False
            self.svc.toxiproxy().set_upstream(f"{self.svc.name}.harness", addr)
            was, self.current = self.current, addr
            s.host, s.port = host, port
            self.switches.append({"at": time.time(), "from": was, "to": addr})
            logging.getLogger("cachecert.external").warning("redis: the Sentinels moved the primary %s -> %s; "
                                                            "the proxy follows", was, addr)
            if self.listener is not None:
                self.listener(self._view(addr))
        return True

    def unlisten(self) -> None:
        with self._lock:
            self.listener = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _role(svc: ExternalService, host: str, port: int) -> str | None:
    """What the node at host:port says it is (ROLE), or None when it does not answer."""
    import redis

    r = svc.redis(host, port, timeout=2)
    try:
        role = r.execute_command("ROLE")
        return role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    except (redis.RedisError, OSError, IndexError):
        return None
    finally:
        r.close()


def _sentinel_master(s: Server) -> tuple[str, int]:
    """The primary's address as the first Sentinel that answers says now (at start, and for every
    look of the SentinelFollower)."""
    import redis

    errors = []
    for host, port in s.sentinels:
        try:
            r = redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)
            try:
                addr = r.execute_command("SENTINEL", "get-master-addr-by-name", s.master)
            finally:
                r.close()
            if addr:
                return (addr[0].decode() if isinstance(addr[0], bytes) else addr[0]), int(addr[1])
            errors.append(f"{host}:{port} knows no master {s.master!r}")
        except redis.RedisError as e:
            errors.append(f"{host}:{port}: {e}")
    raise ServiceError(f"redis: no Sentinel answered for master {s.master!r} ({'; '.join(errors)})")


# -- the cluster's external branch ----------------------------------------------------------
def add_servers(cluster: Any) -> None:
    """Add the file's servers to ``cluster`` (each with its client proxy) and confine every client
    of the cluster's addresses to a fresh namespace."""
    from harness.cluster import ClusterError

    if not cluster.cluster_file:
        raise ClusterError("the external backend needs a cluster file (--cluster FILE)")
    if not cluster.topology.single:
        raise ClusterError(f"--topology {cluster.topology.text()} is for the embedded backend; on the external "
                           "backend the cluster file says which servers there are")
    cf = load_cluster_file(cluster.cluster_file)  # a service it lacks: the runs that need it are refused (refusal)
    cluster.namespace = new_namespace()
    record = cluster.dir / "external" / RECORD  # for the reaper, should this run die before its teardown
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"namespace": cluster.namespace, "cluster_file": str(cf.path.resolve())}))
    logging.getLogger("cachecert.external").info("external cluster %s: this run's namespace is %s (keys %s:*, "
                                                 "schema %s)", cf.path, cluster.namespace, cluster.namespace,
                                                 cluster.namespace)
    for name, server in cf.servers.items():
        if name.partition("-")[0] not in cluster.services and name not in cluster.services:
            continue
        svc = ExternalService(replace(server), cluster.dir, cluster.namespace, cluster.port())
        svc.toxiproxy = lambda: cluster.toxiproxy
        cluster.add(svc)
    cluster.resolver = _resolver(cluster)
    add_resolver(cluster.resolver)


def load_cluster_file(path: str) -> ClusterFile:
    from harness.cluster import ClusterError
    from harness.clusterfile import ClusterFileError

    try:
        return load_file(path)
    except ClusterFileError as e:
        raise ClusterError(str(e)) from None


def _resolver(cluster: Any) -> Any:
    def find(endpoint: str) -> Access | None:
        host, _, port = endpoint.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            return None
        p = int(port)
        for name, listen in list(cluster.proxies.items()):
            if listen == p:
                svc = cluster.svc.get(cluster.upstream.get(name, name))
                return svc.access if isinstance(svc, ExternalService) else None
        for svc in list(cluster.svc.values()):
            if isinstance(svc, ExternalService) and svc.harness_port == p:
                return svc.access
        return None

    return find


def teardown(cluster: Any) -> list[str]:
    """Remove the run's namespace (its keys, its schema: nothing else) and forget its addresses.
    Returns what could not be removed (logged by the caller; the namespace name says whose it is)."""
    problems: list[str] = []
    for svc in list(cluster.svc.values()):
        if isinstance(svc, ExternalService):
            svc.closing = True
            if svc.follower is not None:
                svc.follower.stop()
            svc.resume()  # a server still paused would hold the clean-up (a failed resume is logged)
            problems += _remove_namespace(svc)
    resolver = getattr(cluster, "resolver", None)
    if resolver is not None:
        remove_resolver(resolver)
        cluster.resolver = None
    if not problems:
        (cluster.dir / "external" / RECORD).unlink(missing_ok=True)
    return problems


def _remove_namespace(svc: ExternalService) -> list[str]:
    if not svc.namespaced:
        return []
    try:
        if svc.protocol == "redis":
            from core.namespace import clear

            client = svc.redis()
            try:
                clear(client)
            finally:
                client.close()
        elif svc.name == "postgres":
            import psycopg

            with psycopg.connect(**svc.access.pg_kwargs(svc.server.host, svc.server.port), autocommit=True,
                                 connect_timeout=5) as c:
                c.execute(f'drop schema if exists "{svc.access.namespace}" cascade')
        elif svc.protocol == "kafka":
            _remove_kafka_names(svc.server.address, svc.access.namespace)
        svc.namespaced = False
    except Exception as e:  # noqa: BLE001 - the rest is still removed
        return [f"{svc.name}: namespace {svc.access.namespace} not removed: {e}"]
    return []


def _remove_kafka_names(bootstrap: str, namespace: str, timeout: float = 15.0) -> list[str]:
    """Delete the consumer groups and topics whose names contain ``namespace`` (unique to the run:
    ``cc_<time>_<hex>``; every Kafka name a run creates carries it), nothing else. A group whose
    last member has only just left may still be non-empty for a moment: retried until ``timeout``.
    Returns what was removed."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "log_level": 0})
    removed: list[str] = []
    deadline = time.monotonic() + timeout
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(15).valid
              if namespace in g.group_id]
    while groups:
        left = []
        for g, fut in admin.delete_consumer_groups(groups, request_timeout=10).items():
            try:
                fut.result(15)
                removed.append(f"group {g}")
            except KafkaException as e:
                if "GROUP_ID_NOT_FOUND" in str(e):
                    continue
                if time.monotonic() >= deadline:
                    raise
                left.append(g)
        groups = left
        if groups:
            time.sleep(0.5)
    for attempt in range(4):  # a client of the run still alive can re-create a topic (auto-create): look again
        topics = [t for t in admin.list_topics(timeout=10).topics if namespace in t]
        if not topics:
            break
        if attempt == 3:
            raise ServiceError(f"topics {', '.join(topics)} are created again as fast as they are deleted")
        for t, fut in admin.delete_topics(topics, operation_timeout=10).items():
            try:
                fut.result(15)
                removed.append(f"topic {t}")
            except KafkaException as e:
                if "UNKNOWN_TOPIC" not in str(e):
                    raise
        time.sleep(1.0)
    if removed:
        logging.getLogger("cachecert.external").info("kafka %s: removed %s", bootstrap, ", ".join(removed))
    return removed


def reap_namespace(cluster_dir: Path) -> str:
    """After the owning run died (SIGKILL): remove its namespace from the servers its record names
    (the reaper inherited the run's environment, so ``${VAR}`` credentials still resolve)."""
    try:
        rec = json.loads((cluster_dir / "external" / RECORD).read_text())
    except (OSError, ValueError):
        return ""
    try:
        cf = load_file(rec["cluster_file"])
    except Exception as e:  # noqa: BLE001
        return f"; namespace {rec.get('namespace')} left: {e}"
    problems: list[str] = []
    for name, server in cf.servers.items():
        if name not in ("redis", "postgres", "kafka"):
            continue
        svc = ExternalService(server, cluster_dir, rec["namespace"], 0)
        svc.closing = svc.namespaced = True
        try:
            if server.sentinels:
                server.host, server.port = _sentinel_master(server)
        except ServiceError as e:
            problems.append(str(e))
            continue
        problems += _remove_namespace(svc)
    return f"; namespace {rec['namespace']} " + (f"left: {problems[0]}" if problems else "removed")


# -- refusals before a run starts -----------------------------------------------------------
def refusal(cf: ClusterFile, workload: Any, schedule: list[Any], cfg: Any) -> str | None:
    """Why this run cannot go to the external cluster (one line), or None."""
    if not getattr(workload, "isolated", False):
        return (f"workload {workload.name} cannot run on the external backend: its set-up is not confined to a "
                "per-run namespace (it could flush or drop data cachecert did not create)")
    kafka = cf.servers.get("kafka")
    if "kafka" in workload.services and kafka is not None and kafka.tls:
        return (f"workload {workload.name} uses Kafka, and Kafka over TLS is not built for the external backend "
                "(the clients would need the brokers' own names to check their certificates)")
    if getattr(cfg, "app", None) or getattr(cfg, "app_file", None):
        return "--app/--app-file on the external backend: the service's own connections cannot be confined to the run's namespace"
    if getattr(cfg, "topology", None) not in (None, "", "single"):
        return (f"topology {cfg.topology} is for the embedded backend; on the external backend the cluster file "
                "says which servers there are")
    for name in workload.services:
        if name not in cf.servers:
            return f"{cf.path}: no [{name}] section, and workload {workload.name} needs {name}"
    for s in schedule:
        f = s.fault
        tls = cf.servers.get(f.target.partition(".")[0])
        if tls is not None and tls.tls and tls.name in ("redis", "kafka"):
            # the probes speak the plain protocol: a TLS-only server resets them alive or dead, so a
            # kill (or a reset) would look verified when nothing happened
            return (f"{f.kind}:{f.target}: {tls.name} is TLS-only in {cf.path.name}, and fault probes speak the plain "
                    "protocol (they cannot tell a fault from none); not available")
        if getattr(f, "targets", "") == "proxy" and f.target.partition(".")[0].startswith("kafka"):
            return (f"{f.kind}:{f.target}: a link fault on Kafka would not bite on the external backend: the brokers "
                    "advertise their own addresses, so after bootstrap the clients no longer pass through "
                    "cachecert's proxy (process faults by the file's commands work)")
        if getattr(f, "targets", "") != "service":
            continue
        server = cf.servers.get(f.target)
        if f.kind not in PROCESS_FAULTS:
            return f"{f.kind}:{f.target} is not available on the external backend"
        have = server.commands if server is not None else {}
        if not any(all(c in have for c in need) for need in PROCESS_FAULTS[f.kind]):
            need = next(c for c in PROCESS_FAULTS[f.kind][0] if c not in have)
            return f"{f.kind}:{f.target} needs a {need} command for {f.target} in {cf.path.name}"
    return None


__all__ = ["ExternalService", "add_servers", "teardown", "reap_namespace", "refusal", "new_namespace", "load_cluster_file"]
