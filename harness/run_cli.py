"""`cachecert run` and `rerun` (alias `reproduce`): command-line front ends of the run engine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.verdict import Verdict


def _param(text: str) -> tuple[str, Any]:
    k, eq, v = text.partition("=")
    if not eq or not k:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return k, json.loads(v)
    except ValueError:
        return k, v


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", "-s", help="strategy name or module.path:Class (default: the workload's)")
    p.add_argument("--param", "-p", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="strategy parameter (repeatable), e.g. -p ttl=5")
    p.add_argument("--faults", "-f", help="fault plan name, 'random', or specs like latency:redis:ms=200@2+3")
    p.add_argument("--faults-file", help="fault schedule file (one spec per line, or a JSON list)")
    p.add_argument("--time-limit", "-t", type=float, help="seconds of load (default: the workload's)")
    p.add_argument("--concurrency", "-c", type=int, help="worker count")
    p.add_argument("--nodes", type=int, help="application nodes (strategy instances; default: the workload's)")
    p.add_argument("--app", metavar="CMD", help="certify your own service: start CMD as --nodes app nodes and drive "
                                                "it over the node protocol (docs/node-protocol.md)")
    p.add_argument("--app-file", metavar="APP.toml", help="the same from an app file: command, workdir, env, "
                                                          "start timeout, next build, op mapping")
    p.add_argument("--rate", "-r", type=float, help="total ops/s limit")
    p.add_argument("--procs", type=int, default=1, help="worker processes (default 1: threads of this process); "
                                                         "each owns whole nodes, so --nodes >= --procs")
    p.add_argument("--seed", type=int, help="seed for ops and random faults (default: random, recorded)")
    p.add_argument("--keys", type=int, help="number of keys")
    p.add_argument("--key-dist", help="uniform or zipf:S")
    p.add_argument("--mix", help="op mix, e.g. read=0.8,write=0.2")
    p.add_argument("--op-timeout", type=float, default=1.0, help="client timeout per op, seconds")
    p.add_argument("--quiesce", type=float, help="seconds between heal and final reads")
    p.add_argument("--converge-limit", type=float, metavar="S",
                   help="re-read every key for up to S s after heal until the caches agree with the DB "
                        "(default: the strategy's TTL + 0.5 s, at most 10 s)")
    p.add_argument("--backend", default="local", help="local (default), docker, or external (with --cluster)")
    p.add_argument("--cluster", metavar="FILE", help="external backend: the cluster file (endpoints, fault commands)")
    p.add_argument("--topology", metavar="WORDS",
                   help="servers beyond one of each, e.g. redis=sentinel,postgres=replica,kafka=3,min_isr=2 "
                        "(default: the workload's)")
    p.add_argument("--docker-image", action="append", type=_param, default=[], metavar="SERVICE=IMAGE",
                   help="docker backend: image for a service (default: the local stand-in image)")
    p.add_argument("--checker", action="append", dest="checkers", help="checkers to run (repeatable)")
    p.add_argument("--reports", help="reports root (default: ./reports)")
    p.add_argument("--json", action="store_true", help="print results.json to stdout")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML (one test case per checker)")
    p.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace, workload: str) -> Any:
    from harness.runner import RunConfig

    return RunConfig(
        workload=workload, strategy=args.strategy, params=dict(args.param), faults=args.faults,
        faults_file=args.faults_file, time_limit=args.time_limit, concurrency=args.concurrency,
        nodes=args.nodes, rate=args.rate, seed=args.seed, keys=args.keys, key_dist=args.key_dist, mix=args.mix,
        op_timeout=args.op_timeout, quiesce=args.quiesce, converge_limit=args.converge_limit, backend=args.backend, images=dict(args.docker_image),
        checkers=args.checkers,
        reports=args.reports, command=["cachecert", *sys.argv[1:]], app=getattr(args, "app", None),
        app_file=getattr(args, "app_file", None), procs=getattr(args, "procs", 1),
        topology=getattr(args, "topology", None), cluster_file=getattr(args, "cluster", None),
    )


def execute(cfg: Any, args: argparse.Namespace) -> int:
    from core.verdict import UsageError
    from harness.runner import ConfigError, Run, prepare

    try:
        prepared = prepare(cfg)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    run = Run(prepared, progress=False if args.no_progress else None)
    run.on_interrupt = lambda at, judging: _interrupt_line(at, judging, run.dir)
    print(f"run {prepared.workload.name}/{prepared.strategy_name} seed={cfg.seed} -> {run.dir}", file=sys.stderr)
    try:
        results = run.execute()
    except KeyboardInterrupt:
        if run.results:  # what the prefix showed, or why it was not judged; main() says the rest
            summarize(run.results)
            _report_line(run.results)
        raise
    summarize(results)
    _report_line(results)
    if getattr(args, "junit", None):
        from harness.junit import write_junit

        print(f"  junit: {write_junit(args.junit, [results])}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return int(results.get("exit_code", Verdict.of(results.get("valid")).exit_code))


def _report_line(results: dict[str, Any]) -> None:
    if results.get("run_dir") and (Path(results["run_dir"]) / "report.html").exists():
        print(f"  report: {Path(results['run_dir']) / 'report.html'}", file=sys.stderr)


def _interrupt_line(at: float, judging: bool, run_dir: Path) -> None:
    if judging:
        print(f"interrupted at {at:.1f} s; healed; judging the prefix (Ctrl-C again to skip)", file=sys.stderr)
    else:
        print(f"interrupted again: not judged; history kept in {run_dir / 'history.jsonl'}", file=sys.stderr)
    sys.stderr.flush()


def summarize(results: dict[str, Any]) -> None:
    verdict = Verdict.of(results.get("valid"))
    counts = results.get("counts", {})
    reasons = results.get("unknown_reasons") or []
    why = f"  ({reasons[0]})" if verdict is Verdict.UNKNOWN and reasons else ""
    print(f"{verdict.word}  {results['workload']}/{results['strategy']}  ok={counts.get('ok', 0)} "
          f"fail={counts.get('fail', 0)} info={counts.get('info', 0)}  ({results.get('wall_s', 0):.1f} s){why}",
          file=sys.stderr)
    for name, r in (results.get("checkers") or {}).items():
        line = f"  {name:<13} {Verdict.of(r.get('valid')).short}"
        anomalies = r.get("anomalies") or []
        if anomalies:
            line += f"  {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}; first: " \
                    f"{anomalies[0].get('explanation', anomalies[0].get('type'))}"
        elif r.get("reason") or r.get("error"):
            line += f"  ({r.get('reason') or r['error']})"
        print(line[:400], file=sys.stderr)
    for f in results.get("faults", []):
        mark = "verified" if f.get("verified") else "NOT VERIFIED"
        print(f"  fault {f['fault']}: {mark} ({f['observed']})", file=sys.stderr)
    if results.get("error"):
        print(f"  error: {results['error']}", file=sys.stderr)
    print(f"  run dir: {results.get('run_dir')}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    return execute(config_from_args(args, args.workload), args)


def cmd_rerun(args: argparse.Namespace) -> int:
    """Re-run a stored run with its exact configuration (seed and fault schedule included)."""
    from core.verdict import UsageError
    from harness.runner import RunConfig

    cfg_path = Path(args.run_dir) / "config.json"
    try:
        stored = json.loads(cfg_path.read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"{cfg_path}: not a stored run ({e})") from None
    cfg = RunConfig(**{k: v for k, v in stored.items() if k in RunConfig.__dataclass_fields__})
    record = json.loads(cfg_path.read_text())
    if "schedule_text" in record:  # the exact schedule the run played, whatever plan or file it came from
        cfg.faults_file = None
        cfg.faults = record["schedule_text"] or "none"
    cfg.command = ["cachecert", *sys.argv[1:]]
    args.no_progress = getattr(args, "no_progress", False)
    return execute(cfg, args)


def register(sub: argparse._SubParsersAction, handlers: dict[str, Any]) -> None:
    from workloads import REGISTRY

    run = sub.add_parser("run", help="run a workload against a strategy under a fault plan")
    run.add_argument("workload", help=f"one of: {', '.join(sorted(REGISTRY))}")
    add_run_options(run)
    handlers["run"] = cmd_run
    # one command, two names: `reproduce` is an alias of `rerun` (argparse reports the name typed)
    rr = sub.add_parser("rerun", aliases=["reproduce"], help="re-run a stored run with its seed and fault schedule")
    rr.add_argument("run_dir")
    rr.add_argument("--json", action="store_true")
    rr.add_argument("--junit", metavar="PATH", help="write JUnit XML (one test case per checker)")
    rr.add_argument("--no-progress", action="store_true")
    handlers["rerun"] = handlers["reproduce"] = cmd_rerun
