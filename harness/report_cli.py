"""`cachecert report | ls | certify | compare | demo`: the commands that present results (and, in
``ls``, the catalog of what can be run: harness.catalog).

Why a module of its own: harness.cli loads it as an extension (``register``), so the presentation
layer grows without touching the core CLI. Exit codes follow core.verdict: certify and compare
exit with the merged verdict of their runs (0 valid, 1 anomaly, 2 unknown, 255 harness failure).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.verdict import Exit, UsageError, word
from harness import paths, store


def _reports_root(args: argparse.Namespace) -> Path:
    return Path(args.reports) if getattr(args, "reports", None) else paths.reports_dir()


# -- report / ls -------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import render

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").exists() and not (run_dir / "history.jsonl").exists():
        raise UsageError(f"{run_dir}: not a run directory (no config.json or history.jsonl)")
    t = time.monotonic()
    out = render(run_dir.resolve(), args.out)
    results = _read(run_dir / "results.json") or {}
    print(f"{word(results.get('valid'))}  {out}  ({time.monotonic() - t:.1f} s)")
    return 0


def stored_runs(root: Path) -> list[dict[str, Any]]:
    rows = []
    for res in root.glob("*/*/*/results.json"):
        d = res.parent
        if d.is_symlink() or d.parts[-3] in ("certify", "compare"):
            continue
        r = _read(res) or {}
        cfg = _read(d / "config.json") or {}
        counts = r.get("counts") or {}
        rows.append({"run_dir": str(d), "workload": r.get("workload", d.parts[-3]),
                     "strategy": r.get("strategy", d.parts[-2]), "timestamp": d.name, "valid": r.get("valid"),
                     "exit_code": r.get("exit_code"), "faults": cfg.get("schedule_text") or "none",
                     "seed": r.get("seed"), "ops": sum(counts.values()) if counts else None,
                     "failed": [n for n, c in (r.get("checkers") or {}).items() if c.get("valid") is False],
                     "report": (d / "report.html").exists()})
    rows.sort(key=lambda x: (x["timestamp"], x["workload"], x["strategy"]))
    return rows


def cmd_ls(args: argparse.Namespace) -> int:
    from harness import catalog

    what = catalog.KINDS_ALIASES.get(args.what, args.what)
    if what == "runs":
        return _ls_runs(args)
    if args.strategy:
        raise UsageError(f"--strategy filters stored runs, not {what} (try `cachecert ls runs --strategy S`)")
    if args.workload and what not in ("strategies", "plans"):
        raise UsageError(f"--workload filters strategies, plans and runs, not {what}")
    items = catalog.entries(what, args.workload)
    if args.json:
        print(json.dumps([e.to_dict() for e in items], indent=2))
    else:
        print("\n".join(catalog.lines(what, items)) or f"no {what}")
    return 0


def _ls_runs(args: argparse.Namespace) -> int:
    rows = stored_runs(_reports_root(args))
    if args.workload:
        rows = [r for r in rows if r["workload"] == args.workload]
    if args.strategy:
        rows = [r for r in rows if r["strategy"] == args.strategy]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no stored runs under {_reports_root(args)}")
        return 0
    print(f"{'verdict':<8} {'workload':<18} {'strategy':<20} {'timestamp':<18} {'ops':>8}  faults / failed checkers")
    for r in rows:
        extra = r["faults"] if len(r["faults"]) < 60 else r["faults"][:57] + "..."
        if r["failed"]:
            extra += "  FAILED: " + ",".join(r["failed"])
        print(f"{word(r['valid']):<8} {r['workload']:<18} {r['strategy']:<20} {r['timestamp']:<18} "
              f"{r['ops'] if r['ops'] is not None else '-':>8}  {extra}")
        print(f"{'':8} {r['run_dir']}")
    return 0


# -- certify / compare / demo --------------------------------------------------------------------
def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for x in values for v in (x.split(",") if "@" not in x else [x]) if v.strip()]


def _plan_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"time_limit": args.time_limit, "concurrency": args.concurrency, "nodes": args.nodes,
            "seed": args.seed, "params": dict(args.param), "reports": args.reports, "quiesce": args.quiesce}


def _out_dir(args: argparse.Namespace, kind: str, name: str) -> Path:
    return store.new_run_dir(kind, name, _reports_root(args))


def cmd_certify(args: argparse.Namespace) -> int:
    from core.verdict import UsageError
    from harness import certify as C

    if args.strategy == "merge":
        return cmd_certify_merge(args)
    if getattr(args, "dirs", None):
        raise UsageError(f"certify takes one strategy; unexpected {' '.join(args.dirs)} "
                         f"(merging shards is `cachecert certify merge DIR...`)")
    shard = C.parse_shard(args.shard) if getattr(args, "shard", None) else None
    apps = C.app_entry(getattr(args, "app", None), getattr(args, "app_file", None))
    if bool(args.strategy) == bool(apps):
        raise UsageError("certify one strategy, or your service with --app/--app-file")
    plan = C.resolve([args.strategy] if args.strategy else [], _split(args.workloads), _split(args.faults),
                     apps=apps, **_plan_opts(args))
    plan.shard = shard
    plan.cluster_file = getattr(args, "cluster", None)  # --backend external: one namespace per certification
    strategy = plan.strategies[0]
    mine = [plan.cells()[k] for k in plan.selected()]
    head = f"certify {strategy}" + (f" shard {shard[0]}/{shard[1]}: {len(mine)} of {len(plan.cells())} runs"
                                    if shard else f": {len(mine)} runs")
    print(f"{head}: " + (", ".join(f"{w}/{p}" for _, w, p in mine) or "none"), file=sys.stderr)
    cells = C.execute(plan, log=lambda m: print(m, file=sys.stderr))
    out_dir = _certificate_dir(args, strategy)
    idx = C.write_certificate(strategy, cells, out_dir, plan)
    _junit(args, cells)
    _print_summary(C.guarantee_summary(cells))
    print(f"{'partial certificate' if shard else 'certificate'}: {idx}")
    # an empty shard (more shards than cells) ran nothing and found nothing: it is no failure
    return C.merged_exit(cells) if cells else Exit.VALID


def cmd_certify_merge(args: argparse.Namespace) -> int:
    """`certify merge DIR... [--out DIR]`: the unsharded run's certificate from every shard's partial one."""
    from core.verdict import UsageError
    from harness import certify as C

    given = [k for k in ("workloads", "faults", "time_limit", "concurrency", "nodes", "seed", "quiesce", "app",
                         "app_file", "shard") if getattr(args, k, None) is not None] + (["param"] if args.param
                                                                                      else [])
    if given:
        raise UsageError(f"certify merge takes the shards' directories (and --out, --reports, --junit), "
                         f"not --{given[0].replace('_', '-')}: the shards recorded their options")
    strategy, cells, plan, matrix = C.merge_certificates([Path(d) for d in args.dirs or []])
    out_dir = _certificate_dir(args, strategy)
    idx = C.write_certificate(strategy, cells, out_dir, plan, matrix=matrix)
    _junit(args, cells)
    _print_summary(C.guarantee_summary(cells))
    print(f"certificate: {idx}  (merged {len(args.dirs)} shards, matrix {matrix['fingerprint']})")
    return C.merged_exit(cells)


def _certificate_dir(args: argparse.Namespace, strategy: str) -> Path:
    """--out DIR (a CI job's fixed place), else a new reports/certify/<strategy>/<timestamp> + latest."""
    if getattr(args, "out", None):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    out = _out_dir(args, "certify", strategy)
    store.link_latest(out)
    return out


def _print_summary(summary: dict[str, dict[str, Any]]) -> None:
    for gid, s in summary.items():
        under = f" under {', '.join(s['violated_under'])}" if s["violated_under"] else ""
        print(f"  {gid:<18} {s['verdict']}{under}", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    from core.verdict import UsageError
    from harness import certify as C

    apps = C.app_entry(getattr(args, "app", None), getattr(args, "app_file", None))
    if not args.strategies and not apps:
        raise UsageError("compare needs strategies, or your service with --app/--app-file")
    plan = C.resolve(args.strategies, [args.workload], _split(args.faults), apps=apps, **_plan_opts(args))
    if not args.faults:  # one plan by default: the workload's default (compare is about strategies)
        import workloads

        default = workloads.load(args.workload).default_plan
        plan.pairs = [(args.workload, default)]
    cells = C.execute(plan, log=lambda m: print(m, file=sys.stderr))
    out_dir = _out_dir(args, "compare", args.workload)
    idx = C.write_compare(args.workload, cells, out_dir)
    store.link_latest(out_dir)
    _junit(args, cells)
    print(f"comparison: {idx}")
    return C.merged_exit(cells)


def _junit(args: argparse.Namespace, cells: list[Any]) -> None:
    if not getattr(args, "junit", None):
        return
    from harness.junit import write_junit

    runs, labels = [], []
    for c in cells:
        r = (_read(Path(c.run_dir) / "results.json") if c.run_dir else None) or {
            "workload": c.workload, "strategy": c.strategy, "valid": "unknown", "checkers": {},
            "error": c.error or "the run did not start"}
        runs.append(r)
        labels.append(f"{c.workload}/{c.strategy} [{c.plan}]")
    print(f"junit: {write_junit(args.junit, runs, labels)}", file=sys.stderr)


DEMO_PLANS = ["none", "redis-latency", "db-down", "redis-pause"]


def cmd_demo(args: argparse.Namespace) -> int:
    """A small real certification of cache-aside on the register workload (about a minute)."""
    args.strategy = None if (args.app or args.app_file) else "cache-aside"  # or the user's own service
    args.workloads = ["register"]
    args.faults = args.faults or DEMO_PLANS
    code = cmd_certify(args)
    print("open the certificate above in a browser; each cell links to a run report", file=sys.stderr)
    # the demo succeeded if it produced a certificate: finding anomalies is what it is for
    return 0 if code in (Exit.VALID, Exit.INVALID, Exit.UNKNOWN) else code


def _read(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _add_matrix_options(p: argparse.ArgumentParser, time_limit: float | None = None) -> None:
    from harness.run_cli import _param

    p.add_argument("--faults", "-f", nargs="+", metavar="PLAN",
                   help="fault plans (names, or specs like latency:redis:ms=200@2+3); default: the workload's")
    p.add_argument("--time-limit", "-t", type=float, default=time_limit, help="seconds of load per run")
    p.add_argument("--concurrency", "-c", type=int)
    p.add_argument("--nodes", type=int, help="default: each workload's own")
    p.add_argument("--seed", type=int, help="seed for every run (default: random per run, recorded)")
    p.add_argument("--quiesce", type=float)
    p.add_argument("--param", "-p", action="append", type=_param, default=[], metavar="NAME=VALUE")
    p.add_argument("--reports", help="reports root (default: ./reports)")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML (a suite per run, a case per checker)")
    p.add_argument("--app", metavar="CMD", help="your service as app nodes (docs/node-protocol.md)")
    p.add_argument("--app-file", metavar="APP.toml", help="your service from an app file")


def register(sub: argparse._SubParsersAction, handlers: dict[str, Any]) -> None:
    rp = sub.add_parser("report", help="(re-)render report.html for a stored run")
    rp.add_argument("run_dir")
    rp.add_argument("--out", help="output file (default: RUN_DIR/report.html)")
    handlers["report"] = cmd_report

    from harness.catalog import KINDS_ALIASES, WHAT

    ls = sub.add_parser("ls", help="list workloads, strategies, faults, plans, or stored runs (default)",
                        description="cachecert ls [runs|workloads|strategies|faults|plans]: one line each "
                                    "with its description and parameters; runs by default")
    ls.add_argument("what", nargs="?", default="runs", choices=(*WHAT, *KINDS_ALIASES), metavar="WHAT",
                    help=f"one of {', '.join(WHAT)} (default: runs)")
    ls.add_argument("--reports", help="reports root for runs (default: ./reports)")
    ls.add_argument("--workload", "-w", help="only this workload's strategies, plans or runs")
    ls.add_argument("--strategy", "-s", help="only this strategy's runs")
    ls.add_argument("--json", action="store_true")
    handlers["ls"] = cmd_ls

    ce = sub.add_parser("certify", help="run a strategy through its workloads x fault plans; write a certificate",
                        description="cachecert certify STRATEGY [--shard I/N] ... | cachecert certify merge "
                                    "DIR... [--out DIR]: merge shards' partial certificates into the full one")
    ce.add_argument("strategy", nargs="?", help="a strategy name, or none with --app/--app-file; "
                                                "or `merge` followed by the shards' certificate directories")
    ce.add_argument("dirs", nargs="*", metavar="DIR", help=argparse.SUPPRESS)
    ce.add_argument("--workloads", "-w", nargs="+", metavar="WORKLOAD",
                    help="workloads to run (default: every workload that serves the strategy)")
    _add_matrix_options(ce)
    ce.add_argument("--shard", metavar="I/N",
                    help="run only the I-th of N deterministic slices of the matrix (cells with index %% N "
                         "== I-1) and write a partial certificate for `certify merge`")
    ce.add_argument("--cluster", metavar="FILE",
                    help="certify on your own servers (the external backend): the cluster file")
    ce.add_argument("--out", metavar="DIR",
                    help="write the certificate here (default: reports/certify/<strategy>/<timestamp>)")
    handlers["certify"] = cmd_certify

    co = sub.add_parser("compare", help="run several strategies on one workload, side by side")
    co.add_argument("strategies", nargs="*", help="strategies to compare (and your service with --app)")
    co.add_argument("--workload", "-w", required=True)
    _add_matrix_options(co)
    handlers["compare"] = cmd_compare

    de = sub.add_parser("demo", help="a small real certification (cache-aside on register, ~1 minute)")
    _add_matrix_options(de, time_limit=5.0)
    handlers["demo"] = cmd_demo
