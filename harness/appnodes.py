"""App nodes: the user's own service, in any language, started as N real processes and driven as a
black box over the node protocol (docs/node-protocol.md).

``AppSpec`` is what to start (``--app "CMD"`` or an app file: command, working directory, extra
environment, start timeout, the ``next`` build for rolling deploys, the op mapping for services
without a protocol endpoint). ``AppPool`` runs the nodes and stands where ``harness.nodes.NodePool``
stands for in-process strategies — same ``get``/``crash``/``restart``/``is_down`` — so workers,
final reads and the crash-node fault need no second code path. What only real processes have
(pause, graceful restart, a rolling deploy, a node that dies on its own) lives here too.

Every node gets its own Toxiproxy proxies (``redis.node1``, ``postgres.node1``) so a fault can cut
one node off (``partition:node1/redis``), the cluster's mark in its environment (the reaper kills
it if the harness dies), its own process group, and a log file. A node that exits by itself during
the run is recorded (``on_event``) and started again; its in-flight ops were already info.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.verdict import Exit
from harness.nodes import NodeDown
from harness.services.base import CLUSTER_MARK, free_port, kill_group
from strategies.base import DefiniteFailure
from strategies.remote import PROTOCOL, AppNodeClient, Indeterminate, OpMapping

log = logging.getLogger("cachecert.app")
STOP_GRACE_S = 5.0
# what a node's log says when its PORT was taken between our free_port() and its bind (Go, Python, Java,
# Node, Rust): the port was free when handed out, then an outgoing connection got it as its ephemeral port
PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE|errno 98\b|BindException", re.IGNORECASE)
PORT_RETRIES = 3
SUPERVISE_S = 0.1
APP_KEYS = ("command", "workdir", "env", "start_timeout_s", "next", "health", "name", "ttl_s", "ops")


class AppError(Exception):
    """An app that cannot run: bad spec, a command that does not exist, a node never ready.
    ``exit_code``: 3 for bad input (spec, command), 255 for everything else."""

    def __init__(self, message: str, exit_code: int = Exit.HARNESS) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class AppSpec:
    command: str
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 30.0
    next: str | None = None  # the next build, for a rolling deploy
    health: str = "/health"
    name: str | None = None  # how reports name the strategy (default: app:PROGRAM)
    ttl_s: float | None = None  # the service's promise: its caches agree with the DB this long after heal
    ops: dict[str, OpMapping] | None = None  # mapping mode

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        words = shlex.split(self.command) or ["app"]
        while words and (words[0] == "env" or "=" in words[0]) and len(words) > 1:  # env VAR=x prog ...
            words = words[1:]
        if "serve-node" in words and words.index("serve-node") + 1 < len(words):
            return f"app:{words[words.index('serve-node') + 1]}"
        return f"app:{Path(words[0]).name}"

    @classmethod
    def from_command(cls, command: str) -> AppSpec:
        if not command.strip():
            raise AppError("--app: empty command", Exit.USAGE)
        return cls(command=command)

    @classmethod
    def from_file(cls, path: str | Path) -> AppSpec:
        p = Path(path)
        try:
            text = p.read_text()
            raw = tomllib.loads(text)
        except OSError as e:
            raise AppError(f"{p}: cannot read app file: {e.strerror}", Exit.USAGE) from None
        except tomllib.TOMLDecodeError as e:
            raise AppError(f"{p}: not TOML: {e}", Exit.USAGE) from None
        unknown = [k for k in raw if k not in APP_KEYS]
        if unknown:
            raise AppError(f"{p}:{_line_of(text, unknown[0])}: unknown key {unknown[0]!r} "
                           f"(valid: {', '.join(APP_KEYS)})", Exit.USAGE)
        if not isinstance(raw.get("command"), str) or not raw["command"].strip():
            raise AppError(f"{p}: 'command' (the service's start command) is required", Exit.USAGE)
        ops = None
        if "ops" in raw:
            try:
                ops = {f: OpMapping.parse(f, dict(m)) for f, m in raw["ops"].items()}
            except (TypeError, ValueError) as e:
                raise AppError(f"{p}:{_line_of(text, 'ops')}: {e}", Exit.USAGE) from None
        workdir = raw.get("workdir")
        if workdir is not None and not Path(workdir).is_absolute():
            workdir = str((p.parent / workdir).resolve())
        try:
            return cls(command=raw["command"], workdir=workdir, env={k: str(v) for k, v in raw.get("env", {}).items()},
                       start_timeout_s=float(raw.get("start_timeout_s", 30.0)), next=raw.get("next"),
                       health=str(raw.get("health", "/health")), name=raw.get("name"),
                       ttl_s=None if raw.get("ttl_s") is None else float(raw["ttl_s"]), ops=ops)
        except (TypeError, ValueError) as e:
            raise AppError(f"{p}: {e}", Exit.USAGE) from None

    def describe(self) -> dict[str, Any]:
        return {"command": self.command, "workdir": self.workdir, "env": sorted(self.env), "next": self.next,
                "health": self.health, "name": self.label, "ttl_s": self.ttl_s,
                "mode": "mapping" if self.ops else "protocol", "ops": sorted(self.ops or ())}


def _line_of(text: str, key: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith((f"{key} ", f"{key}=", f"[{key}", f"[{key}.")):
            return n
    return 1


@dataclass
class _Node:
    index: int
    port: int
    client: AppNodeClient
    env: dict[str, str]
    command: str
    proc: subprocess.Popen[bytes] | None = None
    down: bool = False
    paused: bool = False
    expected_exit: bool = False  # we killed or stopped it: its exit is not an event
    starts: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    booting: threading.Thread | None = None  # a restart in progress

    @property
    def id(self) -> str:
        return f"node{self.index}"


class AppPool:
    """N app nodes; the NodePool interface plus pause/resume, graceful restart and deploy."""

    def __init__(self, spec: AppSpec, cluster: Any, services: tuple[str, ...], log_dir: Path, workload: str,
                 params: dict[str, Any], n: int, op_timeout: float,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.spec = spec
        self.cluster = cluster
        self.log_dir = log_dir
        self.on_event = on_event
        self.crashes = [0] * n
        self.events: list[dict[str, Any]] = []
        self.boot_errors: list[str] = []  # restarts that failed (the node stayed down)
        self._closing = threading.Event()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = [self._make(i, services, workload, params, op_timeout) for i in range(n)]
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="app-supervisor", daemon=True)
        self._supervisor.start()

    # -- the NodePool interface -------------------------------------------------------------------
    @property
    def instances(self) -> list[AppNodeClient]:
        return [n.client for n in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, i: int) -> AppNodeClient:
        if self.nodes[i].down:
            raise NodeDown(f"node{i} is down")
        return self.nodes[i].client

    def is_down(self, i: int) -> bool:
        return self.nodes[i].down

    def crash(self, i: int) -> None:
        """SIGKILL the node's process group: the real process dies with its in-process state."""
        node = self.nodes[i]
        with node.lock:  # one node's lock: a slow start of one never blocks a fault on another
            if node.down:
                return
            node.down = node.expected_exit = True
            self.crashes[i] += 1
            if node.proc is not None:
                kill_group(node.proc.pid, signal.SIGCONT)
                kill_group(node.proc.pid, signal.SIGKILL)
                _wait(node.proc, 2.0)
            node.paused = False

    def restart(self, i: int) -> None:
        """Start a downed node again, in the background: a real process takes its time to boot, and
        the nemesis must not wait for it (the next fault is due). Calls fail fast (NodeDown) until
        it answers /health; ``restart_all`` waits for every boot."""
        node = self.nodes[i]
        with node.lock:
            if not node.down or (node.booting is not None and node.booting.is_alive()):
                return
            node.booting = threading.Thread(target=self._boot, args=(node,), name=f"boot-{node.id}", daemon=True)
            node.booting.start()

    def _boot(self, node: _Node) -> None:
        with node.lock:  # one node's lock: a slow start of one never blocks a fault on another
            if not node.down:
                return
            try:
                self._start(node, node.command)
                node.down = False
            except AppError as e:
                log.error("%s: restart failed: %s", node.id, e)
                self.boot_errors.append(f"{node.id}: {e}")

    def restart_all(self) -> None:
        """Heal: resume paused nodes, start downed ones, and wait until every boot is over."""
        for i, node in enumerate(self.nodes):
            if node.paused:
                self.resume(i)
            self.restart(i)
        for node in self.nodes:
            if node.booting is not None:
                node.booting.join(self.spec.start_timeout_s + STOP_GRACE_S)

    def close(self) -> None:
        """Stop every node (SIGCONT, SIGTERM, then SIGKILL after the grace) and close the clients."""
        self._closing.set()
        # no node locks: a node stuck starting must not hold up the clean-up
        procs = [n.proc for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for n in self.nodes:
            n.expected_exit = True
        for p in procs:
            kill_group(p.pid, signal.SIGCONT)
            kill_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            _wait(p, max(0.0, deadline - time.monotonic()))
        for p in procs:
            kill_group(p.pid, signal.SIGKILL)
            _wait(p, 1.0)
        for n in self.nodes:
            n.client.close()

    # -- what only real processes have ------------------------------------------------------------
    def pid(self, i: int) -> int | None:
        p = self.nodes[i].proc
        return p.pid if p is not None and p.poll() is None else None

    def pause(self, i: int) -> None:
        node = self.nodes[i]
        with node.lock:  # one node's lock: a slow start of one never blocks a fault on another
            if node.proc is not None and not node.down:
                kill_group(node.proc.pid, signal.SIGSTOP)
                node.paused = True

    def resume(self, i: int) -> None:
        node = self.nodes[i]
        with node.lock:  # one node's lock: a slow start of one never blocks a fault on another
            if node.proc is not None and node.paused:
                kill_group(node.proc.pid, signal.SIGCONT)
            node.paused = False

    def is_paused(self, i: int) -> bool:
        return self.nodes[i].paused

    def stop_gracefully(self, i: int) -> int | None:
        """SIGTERM and wait (then SIGKILL): a graceful shutdown; the node is down until restarted.
        Returns the exit status (None if it had to be killed)."""
        node = self.nodes[i]
        with node.lock:  # one node's lock: a slow start of one never blocks a fault on another
            if node.down or node.proc is None:
                return None
            node.down = node.expected_exit = True
            kill_group(node.proc.pid, signal.SIGCONT)
            kill_group(node.proc.pid, signal.SIGTERM)
            if _wait(node.proc, STOP_GRACE_S):
                return node.proc.returncode
            kill_group(node.proc.pid, signal.SIGKILL)
            _wait(node.proc, 1.0)
            return None

    def deploy(self, i: int, command: str) -> None:
        """Replace node i's build: stop it gracefully, start ``command`` in its place, wait until ready."""
        node = self.nodes[i]
        with node.lock:  # one node's lock: a slow start of one never blocks a fault on another
            self.stop_gracefully(i)
            node.command = command
            self._start(node, command)
            node.down = False

    # -- starting -------------------------------------------------------------------------------
    def _make(self, i: int, services: tuple[str, ...], workload: str, params: dict[str, Any],
              op_timeout: float) -> _Node:
        port = free_port()
        env = {**os.environ, **self.spec.env, "PORT": str(port), "CACHECERT_NODE_ID": f"node{i}",
               "CACHECERT_NODE": str(i), "CACHECERT_PROTOCOL": str(PROTOCOL), "CACHECERT_WORKLOAD": workload,
               # the node's own calls give up first, so its answer (often a definite fail) beats our timeout
               "CACHECERT_OP_TIMEOUT": f"{op_timeout * 0.8:g}", "PYTHONUNBUFFERED": "1"}
        cluster_dir = getattr(self.cluster, "dir", None)
        if cluster_dir is not None:
            env[CLUSTER_MARK] = str(cluster_dir)
        for k, v in params.items():
            env[f"CACHECERT_PARAM_{k.upper().replace('-', '_')}"] = v if isinstance(v, str) else _json(v)
        for svc in services:
            ep = self.cluster.endpoints[svc] if svc == "kafka" else self.cluster.add_proxy(f"{svc}.node{i}", svc)
            env.update(endpoint_env(svc, ep))
        client = AppNodeClient(port, timeout=op_timeout, mapping=self.spec.ops, node_id=f"node{i}")
        return _Node(i, port, client, env, self.spec.command)

    def _start_all(self) -> None:
        errors: list[BaseException] = []

        def one(node: _Node) -> None:
            try:
                self._start(node, node.command)
            except BaseException as e:  # noqa: BLE001 - collected, the first one raised
                errors.append(e)

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise sorted(errors, key=lambda e: getattr(e, "exit_code", 255))[0]

    def _start(self, node: _Node, command: str) -> None:
        """Spawn ``command`` for ``node`` and wait for its readiness check (AppError if it never is).

        A node that exits before it is ready because its port was taken (its log says so) is started
        again on a fresh port, up to PORT_RETRIES times: on a machine busy with a thousand nodes and
        their connections, a port free when handed out is sometimes some connection's by the bind."""
        for attempt in range(PORT_RETRIES + 1):
            since = self._spawn(node, command)
            try:
                self._wait_ready(node)
                return
            except AppError as e:
                if node.proc is None or node.proc.poll() is None or not PORT_TAKEN.search(self._log_since(node, since)):
                    raise
                if attempt == PORT_RETRIES:
                    raise AppError(f"{e} (its port was taken on {attempt + 1} ports in a row: does the command "
                                   f"listen on $PORT?)", e.exit_code) from None
            old = node.port
            self._move(node, free_port())
            log.warning("%s: port %d was taken before the node could bind it; starting it on %d", node.id, old,
                        node.port)

    def _move(self, node: _Node, port: int) -> None:
        """Give ``node`` a new port: its environment for the next start, and a client that calls it there."""
        node.port = port
        node.env["PORT"] = str(port)
        old = node.client
        node.client = AppNodeClient(port, timeout=old.timeout, mapping=old.mapping, node_id=old.node_id,
                                    protocol_errors=old.protocol_errors)
        old.close()

    def _log_since(self, node: _Node, offset: int) -> str:
        try:
            with (self.log_dir / f"{node.id}.log").open("rb") as f:
                f.seek(offset)
                return f.read(65536).decode(errors="replace")
        except OSError:
            return ""

    def _spawn(self, node: _Node, command: str) -> int:
        """Start the node's process; returns the offset of this start's first log line."""
        if self._closing.is_set():
            raise AppError(f"{node.id}: not started: the run is over")
        logf = (self.log_dir / f"{node.id}.log").open("ab")
        since = logf.tell()
        logf.write(f"--- cachecert: starting {node.id}: {command}\n".encode())
        logf.flush()
        try:
            node.proc = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=self.spec.workdir, env=node.env,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as e:
            raise AppError(f"{node.id}: cannot start {command!r}: {e.strerror}", Exit.USAGE) from None
        finally:
            logf.close()
        node.expected_exit = False
        node.starts += 1
        return since

    def _wait_ready(self, node: _Node) -> None:
        assert node.proc is not None
        deadline = time.monotonic() + self.spec.start_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            rc = node.proc.poll()
            if rc is not None:
                bad = rc in (126, 127)  # the shell could not find or run the command
                raise AppError(f"app node {node.id} exited with status {rc} before it was ready"
                               f"{' (command not found or not executable)' if bad else ''}: "
                               f"{self.spec.command!r}; last log lines: {self.log_tail(node.index)}",
                               Exit.USAGE if bad else Exit.HARNESS)
            try:
                status, body = node.client.request("GET", self.spec.health)
            except (Indeterminate, DefiniteFailure) as e:  # not listening yet, or not answering yet
                last = str(e)
                time.sleep(0.05)
                continue
            if 200 <= status < 300:
                _check_protocol(node.id, body, self.spec.ops is not None)
                return
            last = f"HTTP {status}"
            time.sleep(0.05)
        self._kill(node)
        raise AppError(f"app node {node.id} not ready after {self.spec.start_timeout_s:g} s "
                       f"(GET {self.spec.health} on 127.0.0.1:{node.port}: {last}); "
                       f"last log lines: {self.log_tail(node.index)}")

    def _kill(self, node: _Node) -> None:
        node.expected_exit = True
        if node.proc is not None and node.proc.poll() is None:
            kill_group(node.proc.pid, signal.SIGKILL)
            _wait(node.proc, 2.0)

    def log_tail(self, i: int, lines: int = 3) -> str:
        try:
            text = (self.log_dir / f"node{i}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        tail = [t for t in text if not t.startswith("--- cachecert:")][-lines:]
        return " | ".join(t.strip() for t in tail) or "(empty log)"

    # -- a node that dies on its own -------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._closing.wait(SUPERVISE_S):
            for node in self.nodes:
                if not node.lock.acquire(blocking=False):  # a fault or a boot is acting on it: look next time
                    continue
                try:
                    proc = node.proc
                    if proc is None or node.expected_exit or node.down or proc.poll() is None:
                        continue
                    self._restart_after_exit(node, proc.returncode)
                finally:
                    node.lock.release()

    def _restart_after_exit(self, node: _Node, status: int) -> None:
        event = {"node": node.index, "status": status, "log_tail": self.log_tail(node.index)}
        log.warning("%s exited by itself (status %s); restarting it", node.id, status)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        node.down = True
        try:
            self._start(node, node.command)
            node.down = False
        except AppError as e:
            log.error("%s: restart after its exit failed: %s", node.id, e)
            node.expected_exit = True


def app_strategy(spec: AppSpec) -> type:
    """A stand-in class for what the harness asks a strategy class: it takes any ``-p`` parameter
    (they reach the app as ``CACHECERT_PARAM_*``) and states the app's convergence promise — the app
    file's ``ttl_s`` or ``-p ttl=S`` — for the final reads' re-read window."""

    class AppStrategy:
        name = spec.label
        converge_bound_s = spec.ttl_s

        def __init__(self, **params: Any) -> None:
            ttl = params.get("ttl")
            if self.converge_bound_s is None and isinstance(ttl, (int, float)) and ttl > 0:
                self.converge_bound_s = float(ttl)

    return AppStrategy


def endpoint_env(service: str, endpoint: str) -> dict[str, str]:
    """The environment a node reads ``service``'s endpoint from (docs/node-protocol.md)."""
    host, _, port = endpoint.rpartition(":")
    if service == "redis":
        return {"REDIS_URL": f"redis://{host}:{port}/0", "REDIS_HOST": host, "REDIS_PORT": port}
    if service == "postgres":
        return {"DATABASE_URL": f"postgresql://postgres@{host}:{port}/postgres?sslmode=disable",
                "PGHOST": host, "PGPORT": port, "PGUSER": "postgres", "PGDATABASE": "postgres"}
    if service == "kafka":
        return {"KAFKA_BOOTSTRAP_SERVERS": endpoint}
    return {f"{service.upper()}_ENDPOINT": endpoint}


def _check_protocol(node_id: str, body: bytes, mapping: bool) -> None:
    """A protocol node must say which protocol it speaks; a mapped service only has to answer 2xx."""
    import json

    if mapping:
        return
    try:
        got = json.loads(body).get("protocol")
    except (ValueError, AttributeError):
        raise AppError(f"app node {node_id}: GET /health must answer JSON like "
                       f'{{"protocol": {PROTOCOL}, "ready": true}} (docs/node-protocol.md)') from None
    if got != PROTOCOL:
        raise AppError(f"app node {node_id} speaks node protocol {got!r}; cachecert speaks {PROTOCOL} "
                       "(docs/node-protocol.md)", Exit.USAGE)


def _json(v: Any) -> str:
    import json

    return json.dumps(v)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False
