"""`cachecert search`: find, shrink and save a minimal failing fault schedule (see harness.search).

    cachecert search register --strategy cache-aside --budget 20 --out min.faults.json

starts one cluster for the whole search, prints each candidate as it is judged, and writes the
smallest failing schedule in the fault-schedule file format (harness.faults.save_file), replayable
with ``cachecert run ... --faults-file F`` (the exact command is printed and stored in the sidecar
``F.search.json``) or, for the very run that failed, ``cachecert rerun RUN_DIR``.
Exit codes: 1 a failing schedule was found, 0 none within the budget, 3 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.verdict import Exit


def cmd_search(args: argparse.Namespace) -> int:
    from core.verdict import UsageError
    from harness.cluster import Cluster
    from harness.lifecycle import graceful_signals
    from harness.search import Search, SearchError, SearchOptions, Trial, replay_command, save_schedule

    rates = None
    if args.rates:
        try:
            rates = tuple(None if r.strip() in ("max", "none") else float(r) for r in args.rates.split(","))
        except ValueError:
            raise UsageError(f"--rates: expected numbers or 'max', got {args.rates!r}") from None
    opts = SearchOptions(
        workload=args.workload, strategy=args.strategy, params=dict(args.param), budget=args.budget,
        time_limit=args.time_limit, repeats=args.repeats, confirm=args.confirm,
        confirm_candidates=args.confirm_candidates, shrink_budget=args.shrink_budget, steps=args.steps,
        max_seconds=args.max_seconds, seed=args.seed, max_faults=args.max_faults, menu=args.menu or None,
        rates=rates, checkers=args.checkers, max_keys=args.max_keys, max_concurrency=args.max_concurrency, reports=args.reports,
        keep_passing=args.keep_passing, app=args.app, app_file=args.app_file, nodes=args.nodes)

    def show(t: Trial) -> None:
        verdict = "FAILS " if t.failing else "passes"
        print(f"  #{t.order:<3} {verdict} {t.candidate.describe()}", file=sys.stderr)
        for line in (t.failing_run or {}).get("anomalies", [])[:1]:
            print(f"         {line[:200]}", file=sys.stderr)

    with graceful_signals():
        try:
            # validate before starting anything; the cluster is created for this search's services
            probe = Search(opts, cluster=None)
        except SearchError as e:
            raise UsageError(str(e)) from None
        cluster = Cluster(services=probe.services, name=f"search-{probe.dir.name}")
        try:
            cluster.up()
            probe.cluster = cluster
            probe.on_trial = show
            print(f"search {probe.workload.name}/{probe.strategy_name}: budget {opts.budget} examples x "
                  f"{opts.repeats} run(s) of {opts.time_limit:g} s, menu: {', '.join(probe.space.menu)}",
                  file=sys.stderr)
            try:
                result = probe.run()
            except SearchError as e:
                print(f"cachecert: {e}", file=sys.stderr)
                return Exit.HARNESS
        finally:
            cluster.down()
            cluster.remove()
    print(f"{result.examples} example(s), {result.runs} run(s), {result.wall_s:.0f} s"
          + (f"; {result.flaky}" if result.flaky else "")
          + ("; shrink budget exhausted" if result.budget_exhausted else ""), file=sys.stderr)
    if not result.found or result.minimal is None:
        print(f"no failing schedule found within {opts.budget} examples ({result.search_dir})", file=sys.stderr)
        if args.json:
            print(json.dumps(result.to_dict(), indent=2, default=str))
        return Exit.VALID
    out = Path(args.out or Path(result.search_dir) / "minimal.faults.json")
    save_schedule(out, result)
    first, minimal = result.first, result.minimal
    assert first is not None
    print(f"first failing:   {first.candidate.describe()}", file=sys.stderr)
    print(f"minimal failing: {minimal.candidate.describe()}", file=sys.stderr)
    for line in (minimal.failing_run or {}).get("anomalies", []):
        print(f"  {line}", file=sys.stderr)
    print(f"  failed again on {result.confirm_fails}/{result.confirm_of} replays with fresh seeds", file=sys.stderr)
    if result.confirm_of and not result.confirm_fails:
        print("  WARNING: it did not fail again: a rare interleaving, not a reliable reproducer "
              "(raise --repeats and --confirm, or narrow --menu/--rates)", file=sys.stderr)
    for c in result.unconfirmed:
        print(f"  (smaller, failed once but not on replay: {c.describe()})", file=sys.stderr)
    print(f"  schedule file: {out}", file=sys.stderr)
    print(f"  replay:    {replay_command(result, out)}", file=sys.stderr)
    run_dir = (minimal.failing_run or {}).get("run_dir")
    if run_dir:
        print(f"  rerun:     cachecert rerun {run_dir}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    return Exit.INVALID


def register(sub: argparse._SubParsersAction, handlers: dict[str, Any]) -> None:
    from harness.run_cli import _param
    from workloads import REGISTRY

    p = sub.add_parser("search", help="search for a minimal failing fault schedule (Hypothesis) and save it")
    p.add_argument("workload", help=f"one of: {', '.join(sorted(REGISTRY))}")
    p.add_argument("--strategy", "-s", help="strategy name or module.path:Class (default: the workload's)")
    p.add_argument("--param", "-p", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="strategy parameter (repeatable)")
    p.add_argument("--budget", "-n", type=int, default=20, help="examples Hypothesis may generate (default 20)")
    p.add_argument("--out", "-o", help="schedule file to write (default: SEARCH_DIR/minimal.faults.json)")
    p.add_argument("--time-limit", "-t", type=float, default=2.0, help="seconds of load per run (default 2)")
    p.add_argument("--repeats", "-k", type=int, default=2,
                   help="runs per candidate; any invalid run makes it failing (default 2)")
    p.add_argument("--confirm", type=int, default=3, help="replays of the answer with fresh seeds (default 3)")
    p.add_argument("--confirm-candidates", type=int, default=3,
                   help="failing candidates replayed, smallest first, until one fails again (default 3)")
    p.add_argument("--steps", type=int, default=20, help="fault start/duration grid slots over the run (default 20)")
    p.add_argument("--shrink-budget", type=int, default=30, help="new candidates judged while shrinking")
    p.add_argument("--max-seconds", type=float, help="stop judging new candidates after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed and base run seed (default 0)")
    p.add_argument("--max-faults", type=int, default=3)
    p.add_argument("--menu", action="append", metavar="KIND:TARGET[:P=V]",
                   help="fault menu item (repeatable; default: the workload's fault menu)")
    p.add_argument("--rates", help="ops/s levels to try, smallest first, 'max' = unthrottled (e.g. 50,200,max)")
    p.add_argument("--checker", action="append", dest="checkers",
                   help="checkers that judge each run (repeatable; default: the workload's)")
    p.add_argument("--max-keys", type=int)
    p.add_argument("--max-concurrency", type=int)
    p.add_argument("--reports", help="reports root (default: ./reports)")
    p.add_argument("--keep-passing", action="store_true", help="keep run directories of passing runs")
    p.add_argument("--app", metavar="CMD", help="search your own service (app nodes) instead of a strategy")
    p.add_argument("--app-file", metavar="APP.toml", help="the same from an app file")
    p.add_argument("--nodes", type=int, help="app nodes / strategy instances (default: the workload's)")
    p.add_argument("--json", action="store_true", help="print the search result as JSON on stdout")
    handlers["search"] = cmd_search
