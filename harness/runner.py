"""The run engine: one workload, one strategy, one fault schedule, from set-up to verdict.

    prepare (validate everything; no service started yet)
    -> cluster up -> workload set-up -> nodes (strategy instances)
    -> load: workers + nemesis for the time limit -> heal -> quiesce
    -> final reads (every key, through every node, and the DB directly)
    -> checkers -> results.json -> exit code

Whatever happens (exception, Ctrl-C, SIGTERM), the ``finally`` path heals every fault, closes the
history (so what was recorded stays readable) and stops the services this run started.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import strategies
import workloads
from checkers import CheckerLookupError, CheckPlan, judge, plan_for
from core.clients import close_quietly
from core.history import HistoryWriter, load_history_tail
from core.verdict import Exit, Verdict
from harness import faults, store
from harness.appnodes import AppError, AppPool, AppSpec, app_strategy
from harness.cluster import ALL_SERVICES, BACKENDS, Cluster
from harness.dbreads import StatementLog
from harness.faults import FaultContext, FaultError, RunContext, Scheduled
from harness.generator import Generator, GeneratorError, KeyDist, parse_mix
from harness.lifecycle import Interrupts
from harness.nemesis import Nemesis
from harness.nodes import NodeDown, NodePool
from harness.procs import PART, Child, ChildNodes, merge
from harness.topology import Topology, TopologyError
from harness.topology import resolve as resolve_topology
from strategies.base import DefiniteFailure, Env, ParamError
from workloads.base import Direct, Workload

log = logging.getLogger("cachecert")
FINAL_PROCESS = 1_000_000  # final reads use process ids from here, far from the workers'
CONVERGE_POLL_S = 0.2  # between rounds of final reads while the caches disagree with the DB
DEFAULT_CONVERGE_LIMIT_S = 10.0
MAX_PROTOCOL_ERRORS = 0.01  # malformed app answers beyond this share of ops: the verdict is unknown  # the longest a run re-reads for a strategy with a TTL bound


class ConfigError(ValueError):
    """A run configuration that cannot run; reported before any service starts."""


@dataclass
class RunConfig:
    workload: str = "register"
    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    faults: str | None = None
    faults_file: str | None = None
    time_limit: float | None = None
    concurrency: int | None = None
    nodes: int | None = None  # None: the workload's default
    rate: float | None = None
    seed: int | None = None
    keys: int | None = None
    key_dist: str | None = None
    mix: str | None = None
    op_timeout: float = 1.0
    quiesce: float | None = None
    converge_limit: float | None = None  # s after heal to re-read until caches agree (None: from the strategy's TTL)
    backend: str = "local"
    images: dict[str, str] = field(default_factory=dict)  # docker backend: SERVICE -> image
    checkers: list[str] | None = None
    checker_opts: dict[str, Any] = field(default_factory=dict)
    reports: str | None = None
    command: list[str] | None = None
    app: str | None = None  # the user's service as app nodes: its start command (--app)
    app_file: str | None = None  # ... or its app file (--app-file): command, env, next build, op mapping
    procs: int = 1  # worker processes (harness/procs.py); 1: the workers are threads of this process
    topology: str | None = None  # --topology words on top of the workload's (harness/topology.py)
    cluster_file: str | None = None  # --backend external: the user's servers (harness/clusterfile.py)


@dataclass
class Prepared:
    config: RunConfig
    workload: Workload
    strategy_cls: type
    strategy_name: str
    schedule: list[Scheduled]
    generator: Generator
    services: tuple[str, ...]
    app: AppSpec | None = None  # app nodes instead of in-process strategy instances
    topology: Topology = field(default_factory=Topology)


def prepare(cfg: RunConfig) -> Prepared:
    """Resolve and validate the configuration. Raises ConfigError with one clear line."""
    try:
        wl = workloads.load(cfg.workload)
    except LookupError as e:
        raise ConfigError(str(e)) from None
    ops = parse_mix(cfg.mix or wl.mix) if _mix_ok(cfg.mix or wl.mix) else {}
    app = _app_spec(cfg, wl, ops)
    if app is not None:
        cls, name = app_strategy(app), app.label
        cfg.strategy = name
    else:
        cls, name = _strategy(cfg, wl, ops)
    if cfg.seed is None:
        cfg.seed = random.randrange(1 << 31)
    cfg.time_limit = wl.time_limit if cfg.time_limit is None else cfg.time_limit
    cfg.concurrency = wl.concurrency if cfg.concurrency is None else cfg.concurrency
    cfg.quiesce = wl.quiesce if cfg.quiesce is None else cfg.quiesce
    cfg.nodes = wl.nodes if cfg.nodes is None else cfg.nodes
    cfg.rate = getattr(wl, "rate", None) if cfg.rate is None else cfg.rate
    for what, v, lo in (("time limit", cfg.time_limit, 0), ("op timeout", cfg.op_timeout, 0)):
        if v <= lo:
            raise ConfigError(f"{what} must be > 0, got {v:g}")
    if cfg.concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {cfg.concurrency}")
    if cfg.nodes < 1:
        raise ConfigError(f"nodes must be >= 1, got {cfg.nodes}")
    if cfg.quiesce < 0:
        raise ConfigError(f"quiesce must be >= 0, got {cfg.quiesce:g}")
    _check_procs(cfg, app is not None)
    if cfg.converge_limit is not None and cfg.converge_limit < 0:
        raise ConfigError(f"converge limit must be >= 0, got {cfg.converge_limit:g}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {cfg.backend!r} (valid: {', '.join(BACKENDS)})")
    try:
        keys = KeyDist.parse(cfg.key_dist or wl.key_dist, cfg.keys or wl.keys)
        gen = Generator(parse_mix(cfg.mix or wl.mix), keys, cfg.rate, cfg.concurrency)
    except GeneratorError as e:
        raise ConfigError(str(e)) from None
    services = tuple(s for s in ALL_SERVICES if s in wl.services)
    try:
        topo = resolve_topology(wl.topology, cfg.topology, services)
    except TopologyError as e:
        raise ConfigError(str(e)) from None
    cfg.topology = topo.text()
    lacking = [s for s in getattr(cls, "needs_servers", ()) if s not in topo.names(services)]
    if lacking and app is None:  # e.g. a strategy that reads a replica, run with --topology postgres=single
        raise ConfigError(f"strategy {name} needs the server {lacking[0]}, which topology {topo.text()} does not "
                          "have (see --topology)")
    try:
        schedule = resolve_faults(cfg, wl, topo.names(services))
    except FaultError as e:
        raise ConfigError(str(e)) from None
    try:
        check_plan(wl, cfg)
    except CheckerLookupError as e:
        raise ConfigError(str(e)) from None
    _refuse_toothless_plan(cfg, wl, cls, name, schedule)
    _refuse_in_parent_faults(cfg, schedule, app is not None)
    _refuse_external(cfg, wl, schedule)
    return Prepared(cfg, wl, cls, name, schedule, gen, services, app, topo)


def _refuse_external(cfg: RunConfig, wl: Workload, schedule: list[Scheduled]) -> None:
    """--backend external: the cluster file must be usable, the workload confined to its namespace,
    and every process fault backed by a command of the file (harness/services/external.py)."""
    if (cfg.backend == "external") != bool(cfg.cluster_file):
        raise ConfigError("--backend external needs --cluster FILE" if cfg.cluster_file is None
                          else "--cluster FILE is for --backend external")
    if cfg.backend != "external":
        return
    from harness.clusterfile import ClusterFileError, load
    from harness.services.external import refusal

    try:
        why = refusal(load(cfg.cluster_file), wl, schedule, cfg)  # type: ignore[arg-type]
    except ClusterFileError as e:
        raise ConfigError(str(e)) from None
    if why:
        raise ConfigError(why)


def external_access(endpoints: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What a worker process must register (core/access.py) to reach an external cluster's endpoints
    in the run's namespace: the Access of each, credentials still as ``${VAR}`` references."""
    from core.access import lookup

    return {ep: asdict(acc) for ep in endpoints.values() if (acc := lookup(ep)) is not None}


def _check_procs(cfg: RunConfig, app: bool) -> None:
    """--procs N: every process owns whole nodes; what needs the instances in this process is refused."""
    assert cfg.nodes is not None
    if cfg.procs < 1:
        raise ConfigError(f"procs must be >= 1, got {cfg.procs}")
    if cfg.procs > 1 and cfg.nodes < cfg.procs:
        raise ConfigError(f"--procs {cfg.procs} needs --nodes {cfg.procs} or more: each worker process owns "
                          f"whole nodes (the run has {cfg.nodes})")


def _refuse_in_parent_faults(cfg: RunConfig, schedule: list[Scheduled], app: bool) -> None:
    """With in-process strategies in worker processes, a step (it acts on the instances' memory) or a
    fault on an extra link proxy (a child cannot register the proxies it opens) would not bite."""
    if cfg.procs <= 1 or app:
        return
    for sc in schedule:
        f = sc.fault
        if f.kind == "step" or (getattr(f, "targets", "") == "proxy" and "." in f.target):
            raise ConfigError(f"{f.name} needs the strategy instances in the harness's process: run it with "
                              f"--procs 1 (or certify an app, whose nodes are processes anyway)")


def _strategy(cfg: RunConfig, wl: Workload, ops: dict[str, float]) -> tuple[type, str]:
    """The in-process strategy class and its name, refused if it cannot serve the workload."""
    cfg.strategy = cfg.strategy or wl.default_strategy
    try:
        cls = strategies.load(cfg.strategy)
        strategies.build(cls, cfg.params)
    except (LookupError, ParamError) as e:
        raise ConfigError(str(e)) from None
    name = strategies.name_of(cls, cfg.strategy)
    supported = workloads.homes(name) if name in strategies.REGISTRY else None
    if supported is not None and wl.name not in supported:
        raise ConfigError(f"strategy {name} cannot serve workload {wl.name} (it serves: {', '.join(supported)})")
    missing = [f for f in ops if f not in ("read", "write") and not callable(getattr(cls, f.replace("-", "_"), None))]
    if missing:
        raise ConfigError(f"strategy {name} cannot serve workload {wl.name}: it has no {missing[0].replace('-', '_')}() "
                          f"for the workload's {missing[0]!r} ops (strategies for it: {', '.join(wl.strategies)})")
    return cls, name


def _app_spec(cfg: RunConfig, wl: Workload, ops: dict[str, float]) -> AppSpec | None:
    """The app to start as nodes (--app / --app-file), refused when the workload cannot drive a black
    box or the app file maps too few of its ops."""
    if not (cfg.app or cfg.app_file):
        return None
    if cfg.app and cfg.app_file:
        raise ConfigError("give --app or --app-file, not both")
    if cfg.strategy:
        raise ConfigError("--strategy and --app exclude each other: the app is the strategy under test")
    if not wl.app_ops:
        raise ConfigError(f"workload {wl.name} cannot be driven as a black box: {wl.app_note}")
    try:
        spec = AppSpec.from_file(cfg.app_file) if cfg.app_file else AppSpec.from_command(cfg.app or "")
    except AppError as e:
        raise ConfigError(str(e)) from None
    extra = [f for f in ops if f not in wl.app_ops]
    if extra:
        raise ConfigError(f"workload {wl.name} as a black box answers only {', '.join(wl.app_ops)} ops, "
                          f"not {extra[0]!r}")
    unmapped = [f for f in ops if spec.ops is not None and f not in spec.ops]
    if unmapped:
        raise ConfigError(f"{cfg.app_file}: no [ops.{unmapped[0]}] mapping, and workload {wl.name} sends "
                          f"{unmapped[0]!r} ops (it needs: {', '.join(f for f in wl.app_ops if f in ops)})")
    return spec


def _refuse_toothless_plan(cfg: RunConfig, wl: Workload, cls: type, name: str, schedule: list[Scheduled]) -> None:
    """A plan that cannot take effect in this configuration is refused, naming what it needs: a plan
    meant for other strategies (it faults a link this one never opens), or a fault whose own
    ``validate`` refuses this run (a node it does not have, a step the workload lacks or whose
    ``@requires`` check fails: too few nodes, no lock holder...)."""
    plan = None if cfg.faults_file else (cfg.faults or wl.default_plan)
    label = f"plan {plan}" if plan in wl.plans else "the fault schedule"
    meant = wl.plan_strategies.get(plan or "", ()) if plan in wl.plans else ()
    if meant and name not in meant:
        raise ConfigError(f"{label} of {wl.name} only takes effect with {', '.join(meant)}: {name} does not use "
                          f"what it faults (use -s {meant[0]}, or another plan)")
    run = RunContext(cfg, wl, cls, name, label)
    for s in schedule:
        floor = type(s.fault).min_on_s
        if s.duration < floor:
            raise ConfigError(f"{label}: {s.fault.name} is on for {s.duration:g} s, and it needs at least {floor:g} s "
                              f"to take effect (raise --time-limit or lengthen the fault)")
        try:
            s.fault.validate(run)
        except FaultError as e:
            raise ConfigError(str(e)) from None


def _mix_ok(mix: Any) -> bool:
    try:
        parse_mix(mix)
        return True
    except GeneratorError:
        return False  # reported with its reason below


def resolve_faults(cfg: RunConfig, wl: Workload, services: tuple[str, ...]) -> list[Scheduled]:
    assert cfg.time_limit is not None and cfg.seed is not None
    if cfg.faults_file:
        return faults.load_file(cfg.faults_file, cfg.time_limit, services)
    plan = cfg.faults or wl.default_plan
    if plan in wl.plans:
        return faults.parse(wl.plans[plan], cfg.time_limit, services)
    if plan == "random":
        return faults.random_schedule(wl.fault_menu, cfg.time_limit, cfg.seed, services=services)
    if "@" in plan:
        return faults.parse(plan, cfg.time_limit, services)
    raise FaultError(f"unknown fault plan {plan!r} for workload {wl.name} "
                     f"(valid: {', '.join(wl.plans)}, random, or specs like latency:redis:ms=200@2+3)")


# -- the run -------------------------------------------------------------------------------
class Run:
    """State of one execution; ``execute`` drives it through every phase."""

    def __init__(self, p: Prepared, cluster: Cluster | None = None, progress: bool | None = None,
                 render: bool = True) -> None:
        self.p = p
        self.render = render  # False: no report.html (searches run many short runs; render the ones kept)
        self.cfg = p.config
        if cluster is not None and getattr(cluster, "topology", Topology()) != p.topology:
            cluster = None  # a shared cluster of another topology (certify): this run starts its own
        if cluster is not None and getattr(cluster, "backend", "") == "external" and p.config.backend != "external":
            raise ConfigError("a run on an external cluster needs --backend external (its refusals apply)")
        self.own_cluster = cluster is None
        self.cluster = cluster
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.dir = store.new_run_dir(p.workload.name, p.strategy_name,
                                     Path(self.cfg.reports) if self.cfg.reports else None)
        self.history: HistoryWriter | None = None
        self.nodes: NodePool | AppPool | None = None
        self._invoke: Callable[[Any, dict[str, Any]], dict[str, Any]] = p.workload.invoke
        self.db_reads: StatementLog | None = None
        self.children: list[Child] = []  # worker processes (--procs N > 1)
        self.child_deaths: list[str] = []
        self.nemesis: Nemesis | None = None
        self.stop = threading.Event()
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.phases: dict[str, list[float]] = {}
        self.error: str | None = None
        self.interrupted_at_s: float | None = None  # on the history's clock, once Ctrl-C / SIGTERM stopped it
        self.results: dict[str, Any] = {}  # what execute wrote, also when it raises

    # -- set-up -----------------------------------------------------------------------------
    def _log_to_file(self) -> logging.Handler:
        h = logging.FileHandler(self.dir / "harness.log")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("cachecert").addHandler(h)
        logging.getLogger("cachecert").setLevel(logging.INFO)
        return h

    def _phase(self, name: str) -> None:
        assert self.history is not None
        t = self.history.now() / 1e9
        if self.phases:
            self.phases[list(self.phases)[-1]].append(t)
        self.phases[name] = [t]
        self.history.append({"process": "nemesis", "type": "info", "f": "phase", "value": name})
        log.info("phase %s at %.3f s", name, t)

    def _env(self, node: int) -> Env:
        assert self.cluster is not None
        return Env(self.cluster.endpoints, self.cfg.params, node, self.cfg.op_timeout, self.p.workload.name,
                   add_proxy=getattr(self.cluster, "add_proxy", None))

    def _start_nodes(self) -> NodePool | AppPool | ChildNodes:
        """In-process strategy instances, or the user's service as app-node processes; with --procs N,
        worker processes that own the in-process nodes (or drive the app nodes) between them."""
        cfg = self.cfg
        assert cfg.nodes is not None and self.cluster is not None
        if self.p.app is None and cfg.procs <= 1:
            self._invoke = self.p.workload.invoke
            return NodePool(lambda: strategies.build(self.p.strategy_cls, cfg.params), self._env, cfg.nodes)
        self._invoke = _perform
        pool: AppPool | None = None
        if self.p.app is not None:
            pool = AppPool(self.p.app, self.cluster, self.p.services, self.dir / "logs", self.p.workload.name,
                           cfg.params, cfg.nodes, cfg.op_timeout, on_event=self._app_exited)
            if cfg.procs <= 1:
                return pool
        self.children = self._start_children(pool)
        return pool if pool is not None else ChildNodes(self.children, cfg.nodes)

    def _start_children(self, pool: AppPool | None) -> list[Child]:
        cfg, wl = self.cfg, self.p.workload
        assert self.history is not None and self.cluster is not None
        base = {"workload": cfg.workload, "strategy": cfg.strategy, "params": cfg.params,
                "endpoints": self.cluster.endpoints, "op_timeout": cfg.op_timeout, "nodes": cfg.nodes,
                "procs": cfg.procs, "t0_ns": self.history.t0_ns, "mix": cfg.mix or wl.mix,
                "key_dist": cfg.key_dist or wl.key_dist, "keys": cfg.keys or wl.keys, "rate": cfg.rate,
                "concurrency": cfg.concurrency, "seed": cfg.seed,
                "access": external_access(self.cluster.endpoints)}  # external backend: namespace, ${VAR} refs
        if pool is not None:
            base["app_ports"] = [n.port for n in pool.nodes]
            base["app_ops"] = {f: _mapping_dict(m) for f, m in (pool.spec.ops or {}).items()} or None
        (self.dir / "logs").mkdir(exist_ok=True)
        children: list[Child] = []
        try:
            for k in range(cfg.procs):
                children.append(Child(k, {**base, "k": k, "part": str(self.dir / PART.format(k))},
                                      self.dir / "logs" / f"worker-process-{k}.log"))
        except BaseException:
            for c in children:
                c.close()
            raise
        return children

    def _stop_children(self) -> None:
        """End the load in every worker process and add up what they did; a dead one is logged (its
        part holds what it recorded, its open ops are indeterminate)."""
        for c in self.children:
            try:
                counts = c.ask({"cmd": "stop"})["counts"]
            except Exception as e:  # noqa: BLE001
                log.error("worker process %d: %s", c.k, e)
                self.child_deaths.append(f"worker process {c.k} died during the run ({e}); what it recorded is "
                                         "kept, its open ops are indeterminate")
                continue
            for k, v in counts.items():
                self.counts[k] += v

    def _record_db_reads(self) -> None:
        """The DB's own log of reads during the load phase, into the history (black-box runs)."""
        if self.db_reads is None or self.history is None:
            return
        self.db_reads.stop()
        wall_t0 = time.time() - self.history.now() / 1e9  # the history's clock in epoch seconds
        rec = self.db_reads.reads(wall_t0)
        self.history.append({"process": "nemesis", "type": "info", "f": "db-reads", "value": rec})

    def _app_exited(self, event: dict[str, Any]) -> None:
        """A node that died on its own is an event of the run (history, report); it is restarted."""
        if self.history is not None:
            try:
                self.history.append({"process": "nemesis", "type": "info", "f": "app-exit", "value": event})
            except RuntimeError:  # the history is closed: the run is over
                pass

    def _direct(self) -> Direct:
        from core.clients import Pg, redis_client

        assert self.cluster is not None
        d = self.cluster.direct
        return Direct(redis_client(d["redis"], timeout=10) if "redis" in d else None,
                      Pg(d["postgres"], timeout=30) if "postgres" in d else None,  # type: ignore[arg-type]
                      d)

    # -- workers ----------------------------------------------------------------------------
    def _worker(self, w: int) -> None:
        assert self.history is not None and self.nodes is not None and self.cfg.concurrency
        work(w, self.p.generator.for_worker(self.cfg.seed or 0, w), self.history, self._invoke, self.nodes,
             self.stop, self.counts, self.cfg.concurrency)

    def _worker_until_closed(self, w: int) -> None:
        """A worker still in an op when an interrupted run closed the history has nothing left to record."""
        try:
            self._worker(w)
        except RuntimeError:
            if not self.stop.is_set():
                raise

    def _final_reads(self, direct: Direct, t_heal: float) -> None:
        """Final reads in rounds: every key through every node and straight from the DB, all recorded
        (phase "final"). A round where some node disagrees with the DB is repeated every
        ``CONVERGE_POLL_S`` until all agree or the convergence limit (counted from the heal) passes;
        the convergence checker judges the last round and measures from the others how long the
        caches took to agree. The limit and the strategy's own bound (its TTL) are recorded first."""
        assert self.history is not None
        bound, limit = self._converge_window()
        self.history.append({"process": "nemesis", "type": "info", "f": "converge",
                             "value": {"bound_s": bound, "limit_s": limit}})
        while True:
            agreed = self._final_round(direct)
            if agreed or time.monotonic() - t_heal >= limit:
                return
            time.sleep(CONVERGE_POLL_S)

    def _converge_window(self) -> tuple[float | None, float]:
        """(the strategy's declared convergence bound, how long after heal to keep re-reading)."""
        bound = strategies.convergence_bound(strategies.build(self.p.strategy_cls, self.cfg.params))
        demanded = (self.cfg.checker_opts.get("convergence") or {}).get("bound_s")
        if isinstance(demanded, (int, float)):  # the user's own requirement (an SLO) replaces the strategy's
            bound = float(demanded)
        if self.cfg.converge_limit is not None:
            return bound, self.cfg.converge_limit
        return bound, (min(bound + 0.5, DEFAULT_CONVERGE_LIMIT_S) if bound is not None else 0.0)

    def _final_round(self, direct: Direct) -> bool:
        """One round of final reads; True if every node's read equals the DB's (value and version)."""
        assert self.history is not None and self.nodes is not None
        hist = self.history
        agreed = True
        reachable = getattr(self.nodes, "reachable", lambda i: True)  # a dead worker process's nodes: none
        for key in self.p.generator.keys.keys():
            seen = []
            for node in range(len(self.nodes)):
                if not reachable(node):
                    continue
                proc = FINAL_PROCESS + node
                hist.append({"process": proc, "type": "invoke", "f": "read", "key": key, "value": None,
                             "node": node, "phase": "final", "time_ns": hist.now()})
                try:
                    res = self._invoke(self.nodes.get(node), {"f": "read", "key": key})
                    comp = {"type": "ok", "value": None, **res}
                except Exception as e:  # noqa: BLE001
                    comp = {"type": "fail", "value": None, "error": _err(e)}
                hist.append({"process": proc, "f": "read", "key": key, "node": node, "phase": "final",
                             "time_ns": hist.now(), **comp})
                seen.append(comp)
            proc = FINAL_PROCESS + 999
            hist.append({"process": proc, "type": "invoke", "f": "read", "key": key, "value": None,
                         "source": "db", "phase": "final", "time_ns": hist.now()})
            res = self.p.workload.final_read(direct, key)
            hist.append({"process": proc, "type": "ok", "f": "read", "key": key, "source": "db",
                         "phase": "final", "time_ns": hist.now(), **res})
            agreed = agreed and all(_agrees(c, res) for c in seen)
        return agreed

    # -- the whole thing --------------------------------------------------------------------
    interrupted_judge_s = 5.0  # judging after a Ctrl-C: this long in all, split between checkers
    on_interrupt: Callable[[float, bool], None] | None = None  # (at s, judging?): the CLI's line

    def execute(self) -> dict[str, Any]:
        """Every phase, then the verdict. Whatever stops the run, the clean-up (heal, stop the
        services, close the history) and writing results.json are shielded from further signals.
        After a Ctrl-C or SIGTERM the prefix is judged within ``interrupted_judge_s`` (unknown for
        what is left); a second one skips judging and the report (the history stays), then the
        interrupt is raised again."""
        handler = self._log_to_file()
        store.write_json(self.dir / "config.json", self.config_record())
        t_start = time.monotonic()
        self._t0_ns = time.monotonic_ns()
        results: dict[str, Any] = {}
        stopped: BaseException | None = None
        gate = Interrupts()
        with gate.installed():
            try:
                try:
                    self._run_phases()
                except BaseException as e:  # raised again once judged
                    stopped = e
                    self._stopped_by(e, gate)
                finally:
                    gate.shield()
                    self._teardown()
                results = self._verdict(stopped, gate)
            finally:
                gate.shield()
                results.setdefault("wall_s", round(time.monotonic() - t_start, 3))
                store.write_json(self.dir / "results.json", results)
                store.link_latest(self.dir)
                self._render(results, gate)
                logging.getLogger("cachecert").removeHandler(handler)
                handler.close()
                self.results = results
        if stopped is not None:
            raise stopped
        if results.get("interrupted"):
            raise KeyboardInterrupt("interrupted after the load phase")
        return results

    def _clock_s(self, at_ns: int | None) -> float:
        """A moment on the history's clock (the phases' and the report's), in seconds."""
        t0 = self.history.t0_ns if self.history is not None else self._t0_ns
        return ((at_ns if at_ns is not None else time.monotonic_ns()) - t0) / 1e9

    def _stopped_by(self, e: BaseException, gate: Interrupts) -> None:
        if not isinstance(e, KeyboardInterrupt):
            self.error = f"{type(e).__name__}: {e}"
            log.exception("run aborted")
            return
        self.interrupted_at_s = self._clock_s(gate.first_ns)
        self.error = f"interrupted at {self.interrupted_at_s:.1f} s" + (f" ({e})" if str(e) else "")
        log.warning("run %s; healing", self.error)

    def _verdict(self, stopped: BaseException | None, gate: Interrupts) -> dict[str, Any]:
        """Judge; bounded after one interrupt, skipped after two (or on one while judging)."""
        interrupts = int(isinstance(stopped, KeyboardInterrupt)) + gate.count
        if interrupts and not isinstance(stopped, KeyboardInterrupt):  # it came during the clean-up
            self.interrupted_at_s = self._clock_s(gate.first_ns)
            self.error = self.error or f"interrupted at {self.interrupted_at_s:.1f} s"
        if interrupts >= 2:
            self._announce(judging=False)
            return self._not_judged("interrupted twice: not judged")
        self._announce(judging=bool(interrupts))
        try:
            with gate.skippable():
                res = (self._judge(interrupted=True, time_limit_s=self._interrupted_limit()) if interrupts
                       else self._judge())
        except KeyboardInterrupt:
            if self.interrupted_at_s is None:
                self.interrupted_at_s = self._clock_s(gate.first_ns)
            self._announce(judging=False)
            return self._not_judged("interrupted twice: not judged" if interrupts
                                    else "interrupted while judging: not judged")
        res["interrupted"] = bool(interrupts)
        if self.interrupted_at_s is not None:
            res["interrupted_at_s"] = round(self.interrupted_at_s, 3)
        return res

    def _interrupted_limit(self) -> float:
        """Each checker's time limit after an interrupt: the budget split between them."""
        try:
            n = len(check_plan(self.p.workload, self.cfg).names)
        except Exception:  # noqa: BLE001 - judging will say what is wrong with the plan
            n = 1
        return max(0.5, self.interrupted_judge_s / max(n, 1))

    def _announce(self, judging: bool) -> None:
        if self.on_interrupt is None or self.interrupted_at_s is None:
            return
        try:
            self.on_interrupt(self.interrupted_at_s, judging)
        except Exception as e:  # noqa: BLE001 - a closed terminal must not cost the results
            log.warning("interrupt notice failed: %s", e)

    def _not_judged(self, why: str) -> dict[str, Any]:
        """Results without a verdict; the history is kept for `cachecert check`."""
        log.warning("%s", why)
        return {"workload": self.p.workload.name, "strategy": self.p.strategy_name, "seed": self.cfg.seed,
                "run_dir": str(self.dir), "phases": self.phases, "counts": dict(self.counts),
                "faults": self.nemesis.probes if self.nemesis else [],
                "fault_errors": self.nemesis.errors if self.nemesis else [],
                "valid": "unknown", "checkers": {}, "error": f"{self.error}; {why}" if self.error else why,
                "unknown_reasons": [why], "not_judged": True, "interrupted": True,
                "interrupted_at_s": round(self.interrupted_at_s or 0.0, 3),
                "exit_code": Exit.UNKNOWN}

    def _render(self, results: dict[str, Any], gate: Interrupts) -> None:
        """report.html, unless judging was skipped; a signal while rendering skips the rest of it."""
        if not self.render or results.get("not_judged"):
            return
        try:
            with gate.skippable():
                render_report(self.dir)
        except KeyboardInterrupt:
            log.warning("report rendering skipped: interrupted")

    def _run_phases(self) -> None:
        cfg = self.cfg
        assert cfg.time_limit is not None and cfg.concurrency is not None and cfg.quiesce is not None
        if self.cluster is None:
            self.cluster = Cluster(services=self.p.services, name=f"run-{self.dir.name}-{id(self) % 10000}",
                                   backend=cfg.backend, images=dict(cfg.images), topology=self.p.topology,
                                   cluster_file=cfg.cluster_file)
            self.cluster.up()
            log.info("cluster up in %.2f s: %s", self.cluster.timings.get("total", 0), self.cluster.endpoints)
        else:
            self.cluster.toxiproxy.reset()
        direct = self._direct()
        self.p.workload.setup(direct)
        self.history = HistoryWriter(self.dir / "history.jsonl")
        self._phase("setup")
        if self.p.app is not None and self.p.workload.app_db_reads:
            self.db_reads = StatementLog(self.cluster)
            self.db_reads.start()
        self.nodes = self._start_nodes()
        ctx = FaultContext(self.cluster, self.nodes, self.p.workload)
        self.nemesis = Nemesis(self.p.schedule, ctx, self.history)
        self._phase("load")
        t0 = time.monotonic()
        if self.children:
            for c in self.children:
                c.ask({"cmd": "go"})
        workers = [threading.Thread(target=self._worker_until_closed, args=(w,), name=f"worker-{w}", daemon=True)
                   for w in range(cfg.concurrency) if not self.children]
        for t in workers:
            t.start()
        self.nemesis.start(t0)
        self._wait_load(t0, cfg.time_limit)
        self.stop.set()
        for t in workers:
            t.join(timeout=cfg.op_timeout * 3 + 2)
        stuck = [t.name for t in workers if t.is_alive()]
        if stuck:
            log.warning("workers still blocked after the load phase: %s", ", ".join(stuck))
        self._stop_children()
        self._record_db_reads()
        self._phase("heal")
        self.nemesis.heal()
        t_heal = time.monotonic()
        self._phase("quiesce")
        time.sleep(cfg.quiesce)
        self._phase("final")
        close_quietly(direct.redis, direct.pg)
        direct = self._direct()  # fresh: a fault may have restarted the services since set-up
        try:
            self._final_reads(direct, t_heal)
        finally:
            close_quietly(direct.redis, direct.pg)
        self._phase("done")

    def _wait_load(self, t0: float, limit: float) -> None:
        if not self.progress or limit < 3:
            time.sleep(max(0.0, t0 + limit - time.monotonic()))
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while (left := t0 + limit - time.monotonic()) > 0:
                el = time.monotonic() - t0
                done = sum(self.counts.values())
                active = ", ".join(s.fault.name for s in self.nemesis.active) if self.nemesis else ""
                live.update(f"[bold]{self.p.workload.name}/{self.p.strategy_name}[/] {el:5.1f}/{limit:g} s  "
                            f"{done / max(el, 1e-3):7.0f} ops/s  ok {self.counts['ok']}  "
                            f"fail {self.counts['fail']}  info {self.counts['info']}  "
                            f"faults: {active or '-'}")
                time.sleep(min(0.25, left))

    def _teardown(self) -> None:
        self.stop.set()
        if self.nemesis is not None:
            try:
                self.nemesis.heal()
            except Exception as e:  # noqa: BLE001
                log.error("heal failed: %s", e)
        if self.nodes is not None:
            self.nodes.close()
        if self.db_reads is not None:
            self.db_reads.stop()
        for c in self.children:
            c.close()
        if self.history is not None:
            self.history.close()
            if self.cfg.procs > 1:
                merge(self.dir, self.cfg.procs)
        if self.cluster is not None:
            try:
                self.cluster.collect_logs(self.dir / "logs")
            except OSError:
                pass
            if self.own_cluster:
                self.cluster.down()
                self.cluster.remove()

    # -- verdict ----------------------------------------------------------------------------
    def _judge(self, interrupted: bool = False, time_limit_s: float | None = None) -> dict[str, Any]:
        hist_path = self.dir / "history.jsonl"
        base = {"workload": self.p.workload.name, "strategy": self.p.strategy_name, "seed": self.cfg.seed,
                "run_dir": str(self.dir), "phases": self.phases, "counts": dict(self.counts),
                "faults": self.nemesis.probes if self.nemesis else [],
                "fault_errors": self.nemesis.errors if self.nemesis else []}
        if self.error or interrupted:
            base["error"] = self.error or "interrupted"
        if not hist_path.exists():
            return base | {"valid": "unknown", "checkers": {}, "exit_code": Exit.HARNESS}
        results = check_history(hist_path, self.p.workload, self.cfg, time_limit_s=time_limit_s,
                                scheduled=len(self.p.schedule))
        out = base | results
        if base["fault_errors"]:
            out["unknown_reasons"].insert(0, f"fault failed: {base['fault_errors'][0]}")
        if self.error or interrupted:
            out["unknown_reasons"].insert(0, "interrupted" if interrupted else f"run aborted: {self.error}")
        self._judge_app(out)
        boot_errors = [] if isinstance(self.nodes, AppPool) else getattr(self.nodes, "boot_errors", [])
        if boot_errors:  # a node that never came back: its final reads judge the harness, not the strategy
            out["unknown_reasons"].insert(0, f"node did not restart: {boot_errors[0]}")
            if out["valid"] is not False:
                out["valid"] = "unknown"
        if self.child_deaths:  # its nodes' final reads are missing: no convergence verdict can stand
            out["unknown_reasons"].insert(0, self.child_deaths[0])
            if out["valid"] is not False:
                out["valid"] = "unknown"
        if self.error or interrupted or base["fault_errors"]:
            out["valid"] = False if results["valid"] is False else "unknown"
        out["exit_code"] = Verdict.of(out["valid"]).exit_code
        if self.error and not interrupted and out["valid"] is not False:
            out["exit_code"] = Exit.HARNESS
        return out

    def _judge_app(self, out: dict[str, Any]) -> None:
        """App nodes: the exits they made on their own, and their malformed answers; more than
        ``MAX_PROTOCOL_ERRORS`` of the ops malformed and the run did not measure the service."""
        if not isinstance(self.nodes, AppPool):
            return
        errors = sum(c.protocol_errors for c in self.nodes.instances)
        ops = sum(self.counts.values())
        out["app"] = {"nodes": len(self.nodes), "exits": self.nodes.events, "protocol_errors": errors,
                      "crashes": list(self.nodes.crashes), "boot_errors": list(self.nodes.boot_errors)}
        if self.nodes.boot_errors:  # a node that never came back cannot be judged on what it serves
            out["unknown_reasons"].insert(0, f"app node did not restart: {self.nodes.boot_errors[0]}")
            if out["valid"] is not False:
                out["valid"] = "unknown"
        if ops and errors / ops > MAX_PROTOCOL_ERRORS:
            out["unknown_reasons"].insert(0, f"app answered {errors} of {ops} ops malformed "
                                             f"({errors / ops:.1%} > {MAX_PROTOCOL_ERRORS:.0%}; see docs/node-protocol.md)")
            out["valid"] = "unknown"  # even an anomaly may be the garbage's: the run did not measure the service

    def config_record(self) -> dict[str, Any]:
        return {"config": asdict(self.cfg), "strategy_name": self.p.strategy_name,
                "workload": self.p.workload.describe(),
                "schedule": [s.to_dict() for s in self.p.schedule],
                "schedule_text": ";".join(s.to_text() for s in self.p.schedule),
                "checks": check_plan(self.p.workload, self.cfg).to_record(),
                "command": self.cfg.command, "python": sys.version.split()[0],
                **({"app": self.p.app.describe()} if self.p.app else {})}


def check_plan(wl: Workload, cfg: RunConfig) -> CheckPlan:
    """The checkers that judge this run, with their options: the one plan the run records in its
    config.json and ``cachecert check RUN_DIR`` replays."""
    names = cfg.checkers
    if not names and (cfg.app or cfg.app_file) and wl.app_checkers:  # a black box: what it can be judged on
        names = list(wl.app_checkers)
    return plan_for(wl, names, cfg.checker_opts, strategy=cfg.strategy)


def check_history(path: Path, wl: Workload, cfg: RunConfig, time_limit_s: float | None = None,
                  scheduled: int | None = None) -> dict[str, Any]:
    """Judge a stored history with the run's check plan (``checkers.judge``: the same rules as
    ``cachecert check``); ``time_limit_s`` bounds every checker (an interrupted run judges fast);
    ``scheduled``: how many faults the schedule had (one that never started is not a fault)."""
    history, truncated = load_history_tail(path)
    return judge(history, check_plan(wl, cfg), truncated=truncated, time_limit_s=time_limit_s,
                 scheduled=scheduled)


def render_report(run_dir: Path) -> None:
    """report.html beside results.json; a rendering failure is logged and never changes the verdict."""
    try:
        from harness.report import render

        render(run_dir)
    except Exception as e:  # noqa: BLE001
        log.error("report rendering failed: %s: %s", type(e).__name__, e)


def work(w: int, gen: Any, hist: HistoryWriter, invoke: Callable[[Any, dict[str, Any]], dict[str, Any]],
         nodes: Any, stop: threading.Event, counts: dict[str, int], concurrency: int) -> None:
    """One worker: ops from its generator, one at a time, against node ``w % len(nodes)``, every
    invoke and completion recorded; an indeterminate op retires the process id (Jepsen's rule: a
    process with an op in doubt never invokes again), so the next op gets ``process + concurrency``.
    The same loop runs in the harness and in worker processes (harness/procs.py)."""
    node = w % len(nodes)
    process = w
    while gen.pace(stop):
        op = gen.next()
        inv = {"process": process, "type": "invoke", **op}
        if "value" not in inv:
            inv["value"] = None
        inv["node"] = node
        inv["time_ns"] = hist.now()
        hist.append(inv)
        try:
            res = invoke(nodes.get(node), op)
            t = hist.now()
            comp = {"process": process, "type": "ok", "f": op["f"], "key": op["key"], "value": op.get("value"), **res}
        except DefiniteFailure as e:
            t = hist.now()
            comp = {"process": process, "type": "fail", "f": op["f"], "key": op["key"], "value": op.get("value"),
                    "error": _err(e)}
            if isinstance(e, NodeDown):
                stop.wait(0.01)  # don't spin on a crashed node
        except Exception as e:  # noqa: BLE001 - indeterminate: the op may or may not have happened
            t = hist.now()
            comp = {"process": process, "type": "info", "f": op["f"], "key": op["key"], "value": op.get("value"),
                    "error": _err(e)}
            process += concurrency
        comp["node"] = node
        comp["time_ns"] = t
        hist.append(comp)
        counts[comp["type"]] += 1


def _perform(node: Any, op: dict[str, Any]) -> dict[str, Any]:
    return node.perform(op)


def _mapping_dict(m: Any) -> dict[str, Any]:
    """An OpMapping as the app file wrote it (for a worker process to parse again)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(m).items()}


def _agrees(node_read: dict[str, Any], db: dict[str, Any]) -> bool:
    """A node's final read shows what the DB holds (the same version, when both carry one)."""
    if node_read.get("type") != "ok" or node_read.get("value") != db.get("value"):
        return False
    v, dv = node_read.get("version"), db.get("version")
    return v is None or dv is None or v == dv


def _err(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:300] if msg else type(e).__name__


def run(cfg: RunConfig, cluster: Cluster | None = None, progress: bool | None = None) -> dict[str, Any]:
    return Run(prepare(cfg), cluster, progress).execute()
