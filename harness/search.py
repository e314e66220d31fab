"""Fault search: let Hypothesis find a fault schedule that breaks a strategy, then shrink it.

Why: a failing certification run says *that* a strategy broke, under a schedule chosen by hand or
by a seed. An engineer reproducing an incident wants the *smallest* schedule that still breaks it:
fewer faults, shorter faults, fewer ops, fewer keys. Hypothesis is good at exactly that search and
shrink; here each example is one short real run on a shared cluster, judged by the checkers.

What Hypothesis draws (``candidates``): a list of faults, each a (menu item, start, duration) on a
grid of ``steps`` slots over the run's time limit (so no fault can outlast the run), plus an op
mix, a rate (ops/s), a key count and a worker count. Every dimension shrinks toward "smaller":
fewer faults, earlier and shorter ones, the first menu item, the workload's own mix, the lowest
rate, one key, two workers.

Nondeterminism is real (thread timing, fault timing): the same schedule may pass once and fail
the next time. So:

- a candidate *fails* if any of ``repeats`` runs (seeds ``seed``, ``seed+1``, ...) is invalid
  (``valid: false``; "unknown" is never a failure);
- each distinct candidate is judged once and its verdict memoised, so Hypothesis sees a
  deterministic function (its final replay of the shrunk example cannot turn out flaky because a
  race went the other way); if Hypothesis still reports ``Flaky``/``FlakyFailure`` we catch it and
  keep the best failing candidate seen;
- the answer is the smallest failing candidate *observed* (by ``Candidate.size``, never larger
  than the first failing one) that fails again when replayed ``confirm`` times with fresh seeds
  (a failure seen once may have been a lucky race: smaller candidates that never failed again
  are listed as unconfirmed); the replay failure rate is reported, so a user knows how
  reproducible it is;
- shrinking is bounded (``shrink_budget`` new candidates); after that, unseen candidates are
  answered "passes" without running, which ends the shrink quickly without lying about the result.

``target()`` steers generation toward worse staleness (the staleness checker's worst figure, or
the anomaly count). Settings: ``database=None``, ``deadline=None``, ``max_examples = budget``,
too_slow suppressed, a fixed Hypothesis seed (``seed``) so a search is repeatable as far as the
services allow.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import faults as faults_mod
from harness.faults import FaultError, Scheduled

log = logging.getLogger("cachecert.search")
RATES: tuple[float | None, ...] = (25.0, 50.0, 100.0, 200.0, 400.0, None)  # None = unthrottled; shrinks left


class SearchError(ValueError):
    """A search that cannot start (bad workload, strategy, menu, ...): one clear line."""


# -- the search space -------------------------------------------------------------------------
@dataclass
class Space:
    """What Hypothesis may vary, for one workload and time limit."""

    menu: list[str]
    time_limit: float
    services: tuple[str, ...]
    steps: int = 20
    max_faults: int = 3
    max_keys: int = 5
    mixes: list[str] = field(default_factory=list)  # first = the workload's own mix
    rates: tuple[float | None, ...] = RATES
    min_concurrency: int = 2
    max_concurrency: int = 8

    @property
    def step(self) -> float:
        return self.time_limit / self.steps


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a fault schedule plus the op parameters of the run."""

    faults: tuple[str, ...]  # schedule items, KIND:TARGET[:P]@AT+DUR in seconds
    mix: str
    rate: float | None
    keys: int
    concurrency: int
    time_limit: float

    @property
    def schedule_text(self) -> str:
        return ";".join(self.faults)

    def schedule(self, services: tuple[str, ...] | None = None) -> list[Scheduled]:
        return faults_mod.parse(self.schedule_text, self.time_limit, services) if self.faults else []

    def fault_seconds(self) -> float:
        return round(sum(s.duration for s in self.schedule()), 3)

    def planned_ops(self) -> float:
        return (self.rate or 10_000.0) * self.time_limit

    def size(self) -> tuple[float, ...]:
        """Smaller is simpler: fewer faults, shorter faults, fewer ops, fewer keys, fewer workers, then
        earlier faults (the order Hypothesis shrinks in)."""
        starts = round(sum(s.at for s in self.schedule()), 3)
        return (len(self.faults), self.fault_seconds(), self.planned_ops(), self.keys, self.concurrency, starts)

    def describe(self) -> str:
        rate = f"{self.rate:g} ops/s" if self.rate else "unthrottled"
        return (f"[{self.schedule_text or 'no faults'}] mix {self.mix}, {rate}, {self.keys} key(s), "
                f"{self.concurrency} workers, {self.time_limit:g} s")

    def to_dict(self) -> dict[str, Any]:
        return {"faults": list(self.faults), "schedule_text": self.schedule_text, "mix": self.mix,
                "rate": self.rate, "keys": self.keys, "concurrency": self.concurrency,
                "time_limit": self.time_limit, "size": list(self.size())}


def mixes_for(default: dict[str, float]) -> list[str]:
    """The workload's mix first (the shrink target), then each op's weight doubled in turn."""
    def text(m: dict[str, float]) -> str:
        total = sum(m.values())
        return ",".join(f"{f}={w / total:.3g}" for f, w in m.items())

    out = [text(default)]
    for f in default:
        if default[f] > 0:
            out.append(text({g: w * (2 if g == f else 1) for g, w in default.items()}))
    return list(dict.fromkeys(out))


def candidates(space: Space) -> Any:
    """The Hypothesis strategy of candidates over ``space``."""
    from hypothesis import strategies as st

    fault = st.tuples(st.integers(0, len(space.menu) - 1), st.integers(0, space.steps - 1),
                      st.integers(1, space.steps))

    @st.composite
    def build(draw: Callable[[Any], Any]) -> Candidate:
        raw = draw(st.lists(fault, max_size=space.max_faults))
        items: list[str] = []
        spans: list[tuple[str, int, int]] = []
        for menu_i, at, dur in raw:
            dur = min(dur, space.steps - at)  # never past the end of the run
            item = space.menu[menu_i]
            target = item.split(":")[1] if ":" in item else item
            if any(t == target and a < at + dur and at < e for t, a, e in spans):
                continue  # one fault per target at a time (two toxics of one kind would collide)
            spans.append((target, at, at + dur))
            items.append(f"{item}@{at * space.step:.3g}+{dur * space.step:.3g}")
        mix = draw(st.sampled_from(space.mixes))
        rate = draw(st.sampled_from(space.rates))
        keys = draw(st.integers(1, space.max_keys))
        conc = draw(st.integers(space.min_concurrency, max(space.min_concurrency, space.max_concurrency)))
        return Candidate(tuple(items), mix, rate, keys, conc, space.time_limit)

    return build()


# -- judging one candidate -------------------------------------------------------------------
@dataclass
class Trial:
    candidate: Candidate
    failing: bool
    runs: list[dict[str, Any]]  # compact per-run records: seed, valid, run_dir, anomalies, staleness
    order: int  # evaluation order (0 = first candidate judged)

    @property
    def failing_run(self) -> dict[str, Any] | None:
        return next((r for r in self.runs if r["valid"] is False), None)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "describe": self.candidate.describe(),
                "failing": self.failing, "runs": self.runs}


def staleness_score(results: dict[str, Any]) -> float:
    """How bad it got, for ``target()``: the staleness checker's worst figure in ms if it reports one,
    plus the number of anomalies found by all checkers (so any anomaly beats none)."""
    checkers = results.get("checkers") or {}
    worst = 0.0
    st = checkers.get("staleness") or {}
    for key in ("max_stale_ms", "max_staleness_ms", "worst_ms", "max_ms"):
        v = st.get(key)
        if isinstance(v, int | float):
            worst = max(worst, float(v))
    n = sum(len(r.get("anomalies") or []) for r in checkers.values() if isinstance(r, dict))
    return worst + n


def _anomaly_lines(results: dict[str, Any], limit: int = 3) -> list[str]:
    out = []
    for name, r in (results.get("checkers") or {}).items():
        for a in (r.get("anomalies") or [])[:limit]:
            out.append(f"{name}: {a.get('type')} on {a.get('key')}: {a.get('explanation', '')}"[:400])
    return out[:limit]


@dataclass
class SearchOptions:
    workload: str
    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    budget: int = 20  # Hypothesis max_examples
    time_limit: float = 2.0
    repeats: int = 2  # runs per candidate; any invalid run makes it failing
    confirm: int = 3  # replays of the answer with fresh seeds
    confirm_candidates: int = 3  # failing candidates tried, smallest first, until one fails again
    shrink_budget: int = 30  # new candidates judged while shrinking
    max_seconds: float | None = None  # wall-clock cap on the whole search (then: stop judging)
    seed: int = 0
    max_faults: int = 3
    steps: int = 20
    menu: list[str] | None = None  # default: the workload's fault_menu
    rates: tuple[float | None, ...] | None = None
    max_keys: int | None = None
    max_concurrency: int | None = None
    quiesce: float = 0.3
    op_timeout: float = 0.5
    checkers: list[str] | None = None  # default: the workload's
    checker_opts: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"convergence": {"bound_s": 1}}
    reports: str | None = None
    keep_passing: bool = False  # keep the run directories of passing runs (default: delete them)
    app: str | None = None  # search your own service (app nodes) instead of a strategy
    app_file: str | None = None
    nodes: int | None = None


@dataclass
class SearchResult:
    workload: str
    strategy: str
    params: dict[str, Any]
    op_timeout: float
    quiesce: float
    checkers: list[str] | None
    found: bool
    first: Trial | None
    minimal: Trial | None
    hypothesis_shrunk: Candidate | None
    examples: int
    runs: int
    shrink_candidates: int
    budget_exhausted: bool
    flaky: str | None
    confirm_fails: int
    confirm_of: int
    confirm_runs: list[dict[str, Any]]
    unconfirmed: list[Candidate]
    wall_s: float
    search_dir: str
    app: str | None = None
    app_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "strategy": self.strategy, "params": self.params, "found": self.found,
            "app": self.app, "app_file": self.app_file,
            "first": self.first.to_dict() if self.first else None,
            "minimal": self.minimal.to_dict() if self.minimal else None,
            "hypothesis_shrunk": self.hypothesis_shrunk.to_dict() if self.hypothesis_shrunk else None,
            "examples": self.examples, "runs": self.runs, "shrink_candidates": self.shrink_candidates,
            "budget_exhausted": self.budget_exhausted, "flaky": self.flaky,
            "confirm": {"fails": self.confirm_fails, "of": self.confirm_of, "runs": self.confirm_runs},
            "unconfirmed": [c.to_dict() for c in self.unconfirmed],
            "wall_s": round(self.wall_s, 2), "search_dir": self.search_dir}


class _Found(Exception):
    """Raised inside the Hypothesis test to mark a failing candidate."""

    def __init__(self, trial: Trial) -> None:
        super().__init__(trial.candidate.describe())
        self.trial = trial


class Search:
    """One search: owns the memo of judged candidates and the counters."""

    def __init__(self, opts: SearchOptions, cluster: Any, on_trial: Callable[[Trial], None] | None = None) -> None:
        from harness.runner import ConfigError, RunConfig, prepare

        self.opts = opts
        self.cluster = cluster
        self.on_trial = on_trial
        if opts.budget < 1 or opts.repeats < 1 or opts.confirm < 0 or opts.shrink_budget < 0:
            raise SearchError("budget and repeats must be >= 1; confirm and shrink budget >= 0")
        if opts.time_limit <= 0:
            raise SearchError(f"time limit must be > 0, got {opts.time_limit:g}")
        try:  # validates workload, strategy and parameters before anything runs
            base = prepare(RunConfig(workload=opts.workload, strategy=opts.strategy, params=dict(opts.params),
                                     time_limit=opts.time_limit, faults=None, seed=opts.seed,
                                     reports=opts.reports, app=opts.app, app_file=opts.app_file, nodes=opts.nodes))
        except ConfigError as e:
            raise SearchError(str(e)) from None
        wl = base.workload
        self.workload = wl
        self.strategy_name = base.strategy_name
        self.strategy_spec = None if (opts.app or opts.app_file) else base.config.strategy
        self.services = base.services
        menu = list(opts.menu if opts.menu is not None else wl.fault_menu)
        if not menu:
            raise SearchError(f"workload {wl.name} has no fault menu; pass menu items (e.g. down:redis)")
        for item in menu:  # every menu item must parse into a fault of this run's services
            try:
                faults_mod.parse_item(f"{item}@0+1", opts.time_limit, self.services)
            except FaultError as e:
                raise SearchError(f"fault menu item {item!r}: {e}") from None
        conc = opts.max_concurrency or base.config.concurrency or 2
        self.space = Space(
            menu=menu, time_limit=opts.time_limit, services=self.services, steps=opts.steps,
            max_faults=opts.max_faults, max_keys=opts.max_keys or wl.keys, mixes=mixes_for(wl.mix),
            rates=opts.rates or RATES, min_concurrency=min(2, conc), max_concurrency=conc)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        root = Path(opts.reports) if opts.reports else None
        from harness import paths

        self.dir = (root or paths.REPORTS) / "search" / wl.name / self.strategy_name / stamp
        n = 0
        while self.dir.exists():
            n += 1
            self.dir = self.dir.with_name(f"{stamp}-{n}")
        self.dir.mkdir(parents=True)
        self.memo: dict[Candidate, Trial] = {}
        self.order: list[Trial] = []
        self.runs = 0
        self.examples = 0
        self.first_fail: Trial | None = None
        self.shrink_candidates = 0
        self.budget_exhausted = False
        self.harness_errors = 0  # consecutive runs the harness itself failed
        self.aborted: str | None = None
        self.unconfirmed: list[Candidate] = []  # smaller failing candidates that did not fail again
        self.t0 = time.monotonic()

    # -- one real run -------------------------------------------------------------------------
    def run_once(self, c: Candidate, seed: int, render: bool = False) -> dict[str, Any]:
        from harness.runner import ConfigError, Run, RunConfig, prepare

        cfg = RunConfig(workload=self.workload.name, strategy=self.strategy_spec, params=dict(self.opts.params),
                        faults=c.schedule_text or None, time_limit=c.time_limit, concurrency=c.concurrency,
                        rate=c.rate, seed=seed, keys=c.keys, mix=c.mix, op_timeout=self.opts.op_timeout,
                        quiesce=self.opts.quiesce, checkers=self.opts.checkers, reports=str(self.dir / "runs"),
                        checker_opts={k: dict(v) for k, v in self.opts.checker_opts.items()},
                        command=["cachecert", "search", self.workload.name, "(candidate)"], app=self.opts.app,
                        app_file=self.opts.app_file, nodes=self.opts.nodes)
        try:
            p = prepare(cfg)
        except ConfigError as e:
            raise SearchError(f"candidate {c.describe()}: {e}") from None
        if not c.faults:
            p.schedule = []  # an explicit empty schedule, not the workload's default plan
        self.runs += 1
        res = Run(p, cluster=self.cluster, progress=False, render=render).execute()
        return res

    def _record(self, res: dict[str, Any], seed: int) -> dict[str, Any]:
        return {"seed": seed, "valid": res.get("valid"), "run_dir": res.get("run_dir"),
                "counts": res.get("counts"), "score": staleness_score(res), "anomalies": _anomaly_lines(res),
                "faults_verified": all(f.get("verified") for f in res.get("faults") or []),
                "error": res.get("error")}

    def judge(self, c: Candidate) -> Trial:
        """Run ``c`` up to ``repeats`` times (stop at the first invalid run); memoised."""
        if c in self.memo:
            return self.memo[c]
        records = []
        for i in range(self.opts.repeats):
            seed = self.opts.seed + i
            try:
                res = self.run_once(c, seed)
            except SearchError:
                raise
            except Exception as e:  # noqa: BLE001 - the harness failed, not the strategy: never a "failure"
                self.harness_errors += 1
                log.error("candidate %s seed %d: harness error: %s: %s", c.describe(), seed, type(e).__name__, e)
                res = {"valid": "unknown", "error": f"{type(e).__name__}: {e}"}
                if self.harness_errors >= 3:
                    self.aborted = f"the harness failed 3 times, last: {res['error']}"
            else:
                self.harness_errors = 0
            rec = self._record(res, seed)
            records.append(rec)
            if self.aborted:
                break
            if rec["valid"] is False:
                break
            if not self.opts.keep_passing and rec["run_dir"]:
                shutil.rmtree(rec["run_dir"], ignore_errors=True)
        trial = Trial(c, any(r["valid"] is False for r in records), records, len(self.order))
        self.memo[c] = trial
        self.order.append(trial)
        if trial.failing and self.first_fail is None:
            self.first_fail = trial
        log.info("candidate %d: %s -> %s", trial.order, c.describe(), "FAILS" if trial.failing else "passes")
        if self.on_trial:
            self.on_trial(trial)
        return trial

    def _out_of_budget(self) -> bool:
        if self.first_fail is not None and self.shrink_candidates >= self.opts.shrink_budget:
            return True
        return self.opts.max_seconds is not None and time.monotonic() - self.t0 > self.opts.max_seconds

    # -- the Hypothesis search ----------------------------------------------------------------
    def run(self) -> SearchResult:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
        from hypothesis import seed as hseed
        from hypothesis.errors import Flaky, FlakyFailure

        shrunk: Candidate | None = None
        flaky: str | None = None

        @settings(database=None, deadline=None, max_examples=self.opts.budget, derandomize=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large, HealthCheck.large_base_example],
                  report_multiple_bugs=False, phases=[Phase.generate, Phase.target, Phase.shrink],
                  verbosity=Verbosity.quiet, print_blob=False)
        @hseed(self.opts.seed)
        @given(candidates(self.space))
        def prop(c: Candidate) -> None:
            self.examples += 1
            if self.aborted:
                return  # let Hypothesis wind down; the error is raised after it returns
            if c not in self.memo:
                if self._out_of_budget():
                    self.budget_exhausted = True
                    return  # not judged: "passes", which ends shrinking; the answer is what was seen
                if self.first_fail is not None:
                    self.shrink_candidates += 1
            trial = self.judge(c)
            target(max(r["score"] for r in trial.runs), label="staleness")
            if trial.failing:
                raise _Found(trial)

        try:
            prop()
        except _Found as e:
            shrunk = e.trial.candidate
        except (FlakyFailure, Flaky) as e:  # FlakyFailure first: it is an ExceptionGroup and a Flaky
            flaky = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("hypothesis reported flakiness (%s); keeping the smallest failing candidate seen", flaky)
        if self.aborted:
            raise SearchError(f"search aborted after {self.runs} run(s): {self.aborted} (runs: {self.dir})")
        failing = sorted((t for t in self.order if t.failing), key=lambda t: (t.candidate.size(), t.order))
        minimal, confirm_runs = self._confirm(failing)
        result = SearchResult(
            workload=self.workload.name, strategy=self.strategy_spec or self.strategy_name,
            params=dict(self.opts.params), op_timeout=self.opts.op_timeout, quiesce=self.opts.quiesce,
            checkers=self.opts.checkers, found=minimal is not None,
            first=self.first_fail, minimal=minimal, hypothesis_shrunk=shrunk, examples=self.examples,
            runs=self.runs, shrink_candidates=self.shrink_candidates, budget_exhausted=self.budget_exhausted,
            flaky=flaky, confirm_fails=sum(r["valid"] is False for r in confirm_runs),
            confirm_of=len(confirm_runs), confirm_runs=confirm_runs, unconfirmed=self.unconfirmed,
            wall_s=time.monotonic() - self.t0,
            search_dir=str(self.dir), app=self.opts.app, app_file=self.opts.app_file)
        from harness import store

        store.write_json(self.dir / "search.json", result.to_dict() | {
            "trials": [t.to_dict() for t in self.order], "options": _opts_dict(self.opts)})
        return result

    def _confirm(self, failing: list[Trial]) -> tuple[Trial | None, list[dict[str, Any]]]:
        """The smallest failing candidate that fails again when replayed with fresh seeds.

        A failure seen once may have been a lucky race; walking the failing candidates from the
        smallest, each is replayed ``confirm`` times and the first that fails again is the answer
        (at most ``confirm_candidates``, then the first failure itself; if none fails again, the
        smallest is reported with 0 confirmations, so the user sees it did not reproduce)."""
        if not failing:
            return None, []
        if self.first_fail is not None:
            self._keep(self.first_fail)
        if self.opts.confirm == 0:
            self._keep(failing[0])
            return failing[0], []
        tried: list[tuple[Trial, list[dict[str, Any]]]] = []
        limit = self.first_fail.candidate.size() if self.first_fail else failing[-1].candidate.size()
        pool = [t for t in failing if t.candidate.size() <= limit]  # never larger than the first failure
        walk = pool[: max(1, self.opts.confirm_candidates)]
        if self.first_fail is not None and self.first_fail not in walk:
            walk.append(self.first_fail)  # last resort: the first failure, unshrunk, is still a reproducer
        for trial in walk:
            runs = []
            for i in range(self.opts.confirm):
                seed = self.opts.seed + 1000 + i
                rec = self._record(self.run_once(trial.candidate, seed), seed)
                runs.append(rec)
                if rec["valid"] is not False and not self.opts.keep_passing and rec["run_dir"]:
                    shutil.rmtree(rec["run_dir"], ignore_errors=True)
            tried.append((trial, runs))
            log.info("confirm %s: failed %d/%d", trial.candidate.describe(),
                     sum(r["valid"] is False for r in runs), len(runs))
            if any(r["valid"] is False for r in runs):
                break
        chosen, runs = next(((t, r) for t, r in tried if any(x["valid"] is False for x in r)), tried[0])
        self.unconfirmed = [t.candidate for t, r in tried if t is not chosen and not any(x["valid"] is False for x in r)]
        self._keep(chosen)
        return chosen, runs

    def _keep(self, trial: Trial) -> None:
        """A kept failing run gets its report.html (searches skip rendering while they run)."""
        from harness.runner import render_report

        run = trial.failing_run
        if run and run.get("run_dir") and Path(run["run_dir"]).exists():
            render_report(Path(run["run_dir"]))


def _opts_dict(o: SearchOptions) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(o)


def save_schedule(path: str | Path, result: SearchResult) -> Path:
    """The answer as a fault-schedule file (harness.faults format) + a sidecar with the run parameters."""
    if result.minimal is None:
        raise SearchError("no failing schedule to save")
    c = result.minimal.candidate
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    faults_mod.save_file(out, c.schedule())
    from harness import store

    store.write_json(sidecar(out), {"replay": replay_command(result, out), **result.to_dict()})
    return out


def sidecar(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".json") + ".search.json")


def replay_command(result: SearchResult, path: Path) -> str:
    assert result.minimal is not None
    c = result.minimal.candidate
    seed = (result.minimal.failing_run or {}).get("seed", 0)
    import json
    import shlex

    rate = f" --rate {c.rate:g}" if c.rate else ""
    params = "".join(f" -p {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in result.params.items())
    who = (f"--app {shlex.quote(result.app)}" if result.app else f"--app-file {shlex.quote(result.app_file)}"
           if result.app_file else f"-s {shlex.quote(result.strategy)}")
    return (f"cachecert run {result.workload} {who}{params} -t {c.time_limit:g}"
            f" --faults-file {shlex.quote(str(path))} --seed {seed} --keys {c.keys} --mix {c.mix}"
            f" -c {c.concurrency}{rate} --op-timeout {result.op_timeout:g} --quiesce {result.quiesce:g}"
            + "".join(f" --checker {name}" for name in result.checkers or []))
