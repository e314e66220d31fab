"""cachecert as a pytest plugin: certify a caching strategy inside a team's own test suite.

Why: teams already run pytest in CI. With this plugin (entry point ``pytest11: cachecert``) a test
can say "this strategy keeps its promises on this workload under these faults" in one marker, and a
failure reads like a cachecert run: the anomalies, in words, and the path of the HTML report::

    @pytest.mark.cachecert(workload="register", strategy="no-cache", faults="down:redis@1+1",
                           time_limit=3, seed=7)
    def test_no_cache_is_linearizable(cachecert_result):
        assert cachecert_result["counts"]["ok"] > 0      # optional extra assertions

Fixtures (named ``cachecert_*`` so they never clash with a suite's own ``cluster`` fixtures):

- ``cachecert_cluster`` (session): the embedded services behind their Toxiproxy proxies, started on
  first use only (``--cachecert-backend``, ``local`` by default); the services are those the
  collected markers' workloads need (``--cachecert-services`` overrides).
- ``cachecert_reset`` (function): heals every fault, restarts killed / resumes paused services,
  flushes Redis and truncates the ``kv`` table, before and after the test.
- ``cachecert_run`` (function): ``cachecert_run(workload, strategy=..., faults=..., ...)`` runs a
  workload on the shared cluster and returns results.json as a dict; its report path is attached to
  the test's result (``user_properties``, JUnit properties, the terminal summary).
- ``cachecert_result``: the results of the marker's run.

Options: ``--cachecert-time-limit`` (seconds of load when a marker gives none),
``--cachecert-report-dir`` (run directories; default $CACHECERT_REPORTS, else ``reports/`` in pytest's
rootdir),
``--cachecert-backend``, ``--cachecert-services``. The report header lists the service versions.

Import cost is pytest + stdlib: the harness is imported only when a marker or fixture is used, so
loading the plugin into a suite that never uses it starts nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# marker keyword -> RunConfig field (the rest of RunConfig's fields are accepted under their own name)
MARKER_KEYS = ("workload", "strategy", "params", "faults", "faults_file", "time_limit", "seed", "concurrency",
               "nodes", "rate", "keys", "key_dist", "mix", "op_timeout", "quiesce", "checkers", "checker_opts",
               "app", "app_file")  # app / app_file: your own service as app nodes (docs/node-protocol.md)
_PREPARED = pytest.StashKey[Any]()  # the validated Prepared of a marked item (or a ConfigError text)
_RESULTS = pytest.StashKey[dict[str, Any]]()
_RUNS = pytest.StashKey[list[dict[str, Any]]]()  # every run of the session, for the summary
_SERVICES = pytest.StashKey[set[str]]()  # services the collected markers need


class CachecertConfigError(Exception):
    """A marker that cannot run: the message names the test."""


# -- options, marker, header -----------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cachecert", "cachecert: consistency certification of caching strategies")
    g.addoption("--cachecert-backend", default="local", metavar="NAME",
                help="how services are started: local processes (default) or another harness backend (docker)")
    g.addoption("--cachecert-time-limit", type=float, default=None, metavar="SECONDS",
                help="seconds of load per cachecert run when the marker gives none (default: the workload's)")
    g.addoption("--cachecert-report-dir", default=None, metavar="DIR",
                help="where run directories and report.html go (default: $CACHECERT_REPORTS, else reports/ in "
                     "pytest's rootdir)")
    g.addoption("--cachecert-services", default=None, metavar="LIST",
                help="services of the session cluster, e.g. redis,postgres (default: what the markers need)")


def backends() -> tuple[str, ...]:
    from harness import cluster

    return tuple(getattr(cluster, "BACKENDS", ("local",)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cachecert(workload, strategy=None, faults=None, time_limit=None, seed=None, params=None, ...): "
        "run the cachecert workload for this test; the test fails unless the verdict is valid")
    backend = config.getoption("--cachecert-backend", default="local")
    if backend != "local":  # importing the cluster module only when a non-default backend is asked for
        valid = backends()
        if backend not in valid:
            raise pytest.UsageError(f"--cachecert-backend {backend!r} is not available (valid: {', '.join(valid)})")
    t = config.getoption("--cachecert-time-limit", default=None)
    if t is not None and t <= 0:
        raise pytest.UsageError(f"--cachecert-time-limit must be > 0, got {t:g}")
    config.stash[_RUNS] = []
    config.stash[_SERVICES] = set()


def pytest_report_header(config: pytest.Config) -> list[str]:
    versions = service_versions()
    return ["cachecert: backend " + config.getoption("--cachecert-backend") + "; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())]


def service_versions() -> dict[str, str]:
    """Versions of the service binaries the local backend would run (no service is started)."""
    out: dict[str, str] = {}

    def first_line(cmd: list[str]) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]

    def redis() -> str:
        from harness import paths

        m = re.search(r"v=(\S+)", first_line([paths.redis_server(), "--version"]))
        return m.group(1) if m else "?"

    def postgres() -> str:
        from harness import paths

        line = first_line([paths.pg_bin("postgres"), "--version"])
        m = re.search(r"\(PostgreSQL\)\s+(\S+)", line)
        return m.group(1) if m else line

    def kafka() -> str:
        from harness import paths

        jars = sorted(paths.kafka_libs().glob("kafka_2.13-*.jar"))
        return jars[-1].name.removeprefix("kafka_2.13-").removesuffix(".jar")

    def toxiproxy() -> str:
        from harness import paths

        binary = paths.toxiproxy_server()
        # `-version` says "git" for a `go install` build; the Go build info records the module version
        m = re.search(rb"mod\tgithub.com/Shopify/toxiproxy/v2\t(v[0-9][\w.\-+]*)", Path(binary).read_bytes())
        return m.group(1).decode() if m else first_line([binary, "-version"]).split()[-1]

    for name, fn in (("redis", redis), ("postgres", postgres), ("kafka", kafka), ("toxiproxy", toxiproxy)):
        try:
            out[name] = fn()
        except Exception as e:  # noqa: BLE001 - a header must never break a test session
            out[name] = f"unavailable ({type(e).__name__})"
    return out


# -- collection: validate markers before anything starts ------------------------------------
def _marker_config(item: pytest.Item, mark: pytest.Mark) -> Any:
    from harness.runner import RunConfig

    kw = dict(mark.kwargs)
    if mark.args:
        if len(mark.args) > 1 or "workload" in kw:
            raise CachecertConfigError("takes the workload as its only positional argument")
        kw["workload"] = mark.args[0]
    if "workload" not in kw:
        raise CachecertConfigError("needs workload=NAME")
    unknown = sorted(set(kw) - set(MARKER_KEYS))
    if unknown:
        raise CachecertConfigError(f"unknown argument {unknown[0]!r} (valid: {', '.join(MARKER_KEYS)})")
    cfg = RunConfig(**kw)
    cfg.params = dict(cfg.params or {})
    if cfg.time_limit is None:
        cfg.time_limit = item.config.getoption("--cachecert-time-limit")
    if cfg.app_file and not Path(cfg.app_file).is_absolute():
        cfg.app_file = str(Path(str(item.path)).parent / cfg.app_file)  # relative to the test file
    if cfg.faults_file and not Path(cfg.faults_file).is_absolute():
        cfg.faults_file = str(Path(str(item.path)).parent / cfg.faults_file)  # relative to the test file
    cfg.backend = item.config.getoption("--cachecert-backend")
    cfg.reports = str(report_dir(item.config))
    cfg.command = ["pytest", item.nodeid]
    return cfg


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needed: set[str] = set()
    for item in items:
        mark = item.get_closest_marker("cachecert")
        if mark is None:
            continue
        from harness.runner import ConfigError, prepare

        try:
            prepared = prepare(_marker_config(item, mark))
        except (CachecertConfigError, ConfigError, TypeError) as e:
            item.stash[_PREPARED] = f"{item.nodeid}: @pytest.mark.cachecert: {e}"
            continue
        item.stash[_PREPARED] = prepared
        needed.update(prepared.services)
    config.stash[_SERVICES] = needed


def report_dir(config: pytest.Config) -> Path:
    """``--cachecert-report-dir``, else ``$CACHECERT_REPORTS``, else ``reports/`` in pytest's rootdir:
    the user's project, wherever pytest was started from inside it (never the cachecert checkout)."""
    opt = config.getoption("--cachecert-report-dir")
    if opt:
        return Path(opt).resolve()
    if os.environ.get("CACHECERT_REPORTS"):
        from harness import paths

        return paths.reports_dir()
    return Path(config.rootpath) / "reports"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cachecert_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's embedded cluster (Redis, PostgreSQL[, Kafka] behind Toxiproxy), started on first use."""
    from harness.cluster import ALL_SERVICES, Cluster, ClusterError
    from harness.paths import MissingBinary
    from harness.services import ServiceError

    config = request.config
    opt = config.getoption("--cachecert-services")
    if opt:
        services = tuple(s.strip() for s in opt.split(",") if s.strip())
    else:
        needed = config.stash.get(_SERVICES, set()) or {"redis", "postgres"}
        services = tuple(s for s in ALL_SERVICES if s in needed)
    try:
        backend = config.getoption("--cachecert-backend")
        extra = {"backend": backend} if backend != "local" else {}
        # short: PostgreSQL's socket path under the cluster dir must stay below 108 bytes
        cluster = Cluster(services=services, name=f"pytest-{os.getpid()}", **extra)
    except ClusterError as e:
        raise pytest.UsageError(f"--cachecert-services: {e}") from None
    try:
        cluster.up()
    except (ClusterError, ServiceError, MissingBinary) as e:
        pytest.fail(f"cachecert: the {','.join(services)} cluster did not start: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.down()
        cluster.remove()


def reset_cluster(cluster: Any) -> None:
    """Heal faults, bring services back, and empty the data the workloads use."""
    from core.clients import Pg, redis_client

    cluster.toxiproxy.reset()
    for svc in cluster.svc.values():
        if not svc.running():  # a kill fault or a test killed it
            svc.start()
        svc.resume()
    if "redis" in cluster.direct:
        r = redis_client(cluster.direct["redis"], timeout=10)
        try:
            r.flushall()
        finally:
            r.close()
    if "postgres" in cluster.direct:
        pg = Pg(cluster.direct["postgres"], timeout=30)
        try:
            pg.execute("do $$ begin if to_regclass('kv') is not null then truncate kv; end if; end $$")
        finally:
            pg.close()


@pytest.fixture
def cachecert_reset(cachecert_cluster: Any) -> Iterator[Any]:
    """The session cluster, healed and emptied before and after the test."""
    reset_cluster(cachecert_cluster)
    yield cachecert_cluster
    reset_cluster(cachecert_cluster)


def _record(item: pytest.Item, results: dict[str, Any]) -> None:
    from core.verdict import Verdict

    run_dir = results.get("run_dir")
    report = Path(run_dir) / "report.html" if run_dir else None
    path = str(report if report is not None and report.exists() else run_dir)
    item.user_properties.append(("cachecert_report", path))
    verdict = Verdict.of(results.get("valid")).short
    item.user_properties.append(("cachecert_verdict", verdict))
    item.config.stash[_RUNS].append({"nodeid": item.nodeid, "verdict": verdict,
                                     "report": path, "results": results})


def _execute(item: pytest.Item, cluster: Any, prepared: Any) -> dict[str, Any]:
    from harness.runner import Run

    missing = [s for s in prepared.services if s not in cluster.endpoints]
    if missing:
        raise CachecertConfigError(f"{item.nodeid}: workload {prepared.workload.name} needs "
                                   f"{', '.join(missing)}, which the session cluster does not run "
                                   f"(--cachecert-services={','.join(cluster.services)})")
    results = Run(prepared, cluster=cluster, progress=False).execute()
    _record(item, results)
    return results


@pytest.fixture
def cachecert_run(request: pytest.FixtureRequest, cachecert_reset: Any) -> Callable[..., dict[str, Any]]:
    """``cachecert_run(workload, strategy=None, faults=None, time_limit=None, seed=None, ...)`` → results."""
    from harness.runner import ConfigError, prepare

    item = request.node

    def run(workload: str, **kw: Any) -> dict[str, Any]:
        mark = pytest.mark.cachecert(workload, **kw).mark
        try:
            prepared = prepare(_marker_config(item, mark))
        except (CachecertConfigError, ConfigError, TypeError) as e:
            raise CachecertConfigError(f"{item.nodeid}: cachecert_run: {e}") from None
        reset_cluster(cachecert_reset)
        return _execute(item, cachecert_reset, prepared)

    return run


@pytest.fixture(autouse=True)
def _cachecert_marker(request: pytest.FixtureRequest) -> None:
    """Runs the workload of a ``@pytest.mark.cachecert`` test at set-up; unmarked tests cost nothing."""
    item = request.node
    if not isinstance(item, pytest.Item) or item.get_closest_marker("cachecert") is None:
        return
    prepared = item.stash.get(_PREPARED, None)
    if prepared is None or isinstance(prepared, str):
        pytest.fail(prepared or f"{item.nodeid}: @pytest.mark.cachecert was not validated", pytrace=False)
    cluster = request.getfixturevalue("cachecert_reset")
    try:
        item.stash[_RESULTS] = _execute(item, cluster, prepared)
    except CachecertConfigError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def cachecert_result(request: pytest.FixtureRequest, _cachecert_marker: None) -> dict[str, Any]:
    """results.json of this test's ``@pytest.mark.cachecert`` run."""
    res = request.node.stash.get(_RESULTS, None)
    if res is None:
        pytest.fail(f"{request.node.nodeid}: cachecert_result needs @pytest.mark.cachecert(workload=...)",
                    pytrace=False)
    return res


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """The marker's verdict decides the test before its body runs: not valid → a readable failure."""
    results = item.stash.get(_RESULTS, None)
    if results is not None and results.get("valid") is not True:
        pytest.fail(failure_message(results, item.nodeid), pytrace=False)


# -- messages ---------------------------------------------------------------------------------
def failure_message(results: dict[str, Any], nodeid: str = "", max_anomalies: int = 3) -> str:
    """The anomalies in words, the faults, and where the evidence is."""
    from core.verdict import Verdict

    run_dir = results.get("run_dir")
    head = (f"cachecert: {results.get('workload')}/{results.get('strategy')} (seed {results.get('seed')}) "
            f"is {Verdict.of(results.get('valid')).short}" + (f" in {nodeid}" if nodeid else ""))
    lines = [head]
    from harness.report import status_notes

    notes = status_notes(results)
    if notes:
        lines.append("  why: " + "; ".join(notes))
    for name, r in (results.get("checkers") or {}).items():
        verdict = Verdict.of(r.get("valid"))
        if verdict is Verdict.VALID:
            continue
        anomalies = r.get("anomalies") or []
        what = f"{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}" if anomalies else \
            (r.get("error") or r.get("note") or r.get("reason") or "no verdict")
        lines.append(f"  {name}: {verdict.short}: {what}")
        for a in anomalies[:max_anomalies]:
            text = a.get("explanation") or a.get("type")
            lines.append(f"    - {a.get('type', 'anomaly')} on key {a.get('key')}: {text}"[:600])
        if len(anomalies) > max_anomalies:
            lines.append(f"    ... and {len(anomalies) - max_anomalies} more")
    if not results.get("checkers") and results.get("note"):
        lines.append(f"  {results['note']}")
    if results.get("error"):
        lines.append(f"  error: {results['error']}")
    for f in results.get("faults") or []:
        lines.append(f"  fault {f.get('fault')}: {'verified' if f.get('verified') else 'NOT VERIFIED'}")
    if run_dir:
        report = Path(run_dir) / "report.html"
        lines.append(f"  report: {report if report.exists() else run_dir}")
        lines.append(f"  reproduce: cachecert reproduce {run_dir}")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    runs = config.stash.get(_RUNS, [])
    if not runs:
        return
    terminalreporter.section("cachecert reports")
    for r in runs:
        terminalreporter.write_line(f"{r['verdict']:<8} {r['nodeid']}  {r['report']}")


__all__ = ["CachecertConfigError", "failure_message", "reset_cluster", "service_versions"]
