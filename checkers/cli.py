"""``cachecert check``: re-run checkers on a stored history (ours or Jepsen's EDN).

Why this module exists: a verdict must be reproducible from the history alone — after a checker
fix, on a history from another machine, or on a Jepsen/Knossos history to compare verdicts. It
prints one line per checker and the merged verdict, writes the full results as JSON, and exits
0 valid / 1 anomaly found / 2 unknown or bad input (a history that cannot be read is never judged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from checkers import CHECKERS, CheckerLookupError, CheckPlan, judge, models, plan_for, run_checkers
from core.history import HistoryError, load_history_tail
from core.ops import pair
from core.verdict import Exit, Verdict

EXIT_BAD_INPUT = Exit.UNKNOWN  # a history that cannot be read is never judged: "we could not tell"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="history.jsonl, a run directory, or a Jepsen .edn history")
    p.add_argument("--checker", "-c", action="append", dest="checkers", metavar="NAME",
                   help="checker to run (repeatable; default: the run's own checkers, else those that fit "
                        "the history)")
    p.add_argument("--workload", "-w", help="judge as a run of this workload (its checkers and options)")
    p.add_argument("--format", choices=("jsonl", "jepsen-edn"), help="history format (default: by extension)")
    p.add_argument("--model", metavar="MODEL",
                   help=f"linearizability model: {', '.join(models.BUILTIN)}, or a model "
                        "of your own as module.path:Name (default: register for ours, guessed from the ops "
                        "for EDN; with -c linearizable for a history of another workload)")
    p.add_argument("--initial", help="initial value, JSON or EDN (e.g. 0, nil, '{:x 0 :y 0}'); default nil")
    p.add_argument("--opt", action="append", default=[], metavar="CHECKER.KEY=VALUE",
                   help="a checker option, value as JSON (e.g. staleness.bound_ms=100); repeatable")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per checker (default 60)")
    p.add_argument("--out", "-o", help="write results JSON here")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    from checkers.corpus import parse_initial

    return parse_initial(text)


def _guess_model(history: list[dict[str, Any]]) -> str:
    fs = {op.get("f") for op in history if op.get("process") != "nemesis"}
    if "txn" in fs:
        return "multi-register"
    if fs & {"acquire", "release"}:
        return "mutex"
    return "cas-register"


def _auto_checkers(history: list[dict[str, Any]]) -> list[str]:
    """Checkers whose inputs the history has (final reads, object values, DB loads)."""
    names = ["linearizable", "versions", "staleness", "session"]
    has_final_db = any(op.get("phase") == "final" and op.get("source") == "db" for op in history)
    if has_final_db:
        names += ["durability", "convergence"]
    if any(isinstance(op.get("value"), dict) and op.get("f") == "read" for op in history):
        names.append("integrity")
    if any(op.get("db_load") for op in history):
        names.append("herd")
    names.append("perf")
    return names


def _run_record(path: Path) -> dict[str, Any] | None:
    """The config.json of the run a path belongs to (a run dir, or its history.jsonl), if any."""
    d = path if path.is_dir() else path.parent
    try:
        rec = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _load_workload(name: str) -> Any:
    import workloads

    try:
        return workloads.load(name)
    except LookupError as e:
        raise HistoryError(str(e)) from None


def _owner_of(names: list[str]) -> Any:
    """For a bare history: the one workload whose own checkers include a requested name."""
    import workloads

    owners = {}
    for n in names:
        if n in CHECKERS:
            continue
        found = [w for w in (workloads.load(x) for x in workloads.REGISTRY) if n in w.extra_checkers]
        if not found:
            return None  # plan_for names the unknown checker
        if len(found) > 1:
            raise HistoryError(f"checker {n!r} belongs to several workloads ({', '.join(w.name for w in found)}): "
                               f"pass --workload")
        owners[found[0].name] = found[0]
    if len(owners) > 1:
        raise HistoryError(f"checkers of different workloads ({', '.join(owners)}) cannot judge one history")
    return next(iter(owners.values()), None)


def _jsonl_plan(path: Path, history: list[dict[str, Any]], args: argparse.Namespace,
                opts: dict[str, dict[str, Any]]) -> tuple[CheckPlan, int | None]:
    """The run's own plan (names and options recorded in its config.json) when the history belongs to
    a stored run, else one for the history's shape; ``-c``/``--opt``/``--workload`` override."""
    rec = _run_record(path)
    if rec is not None and args.workload is None:
        cfg = rec.get("config") or {}
        checks = rec.get("checks") or {}
        wl = _load_workload(checks.get("workload") or cfg.get("workload"))
        names = args.checkers or checks.get("names") or cfg.get("checkers")
        base = checks.get("opts") if "opts" in checks else cfg.get("checker_opts") or {}
        scheduled = len(rec["schedule"]) if isinstance(rec.get("schedule"), list) else None
        plan = plan_for(wl, names, base)
        plan.opts = _overlay(plan.opts, opts)
        return plan, scheduled
    if args.workload is not None:
        wl = _load_workload(args.workload)
    else:
        wl = _owner_of(args.checkers or [])
    names = args.checkers or (None if wl is not None else _auto_checkers(history))
    plan = plan_for(wl, names, {})
    plan.opts = _overlay(plan.opts, opts)
    plan.opts.setdefault("linearizable", {}).setdefault("model", args.model or "register")
    return plan, None


def _overlay(base: dict[str, dict[str, Any]], top: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in base.items()}
    for k, v in top.items():
        out.setdefault(k, {}).update(v)
    return out


def _summary(r: dict[str, Any]) -> str:
    verdict = Verdict.of(r.get("valid"))
    if verdict is Verdict.INVALID:
        an = r.get("anomalies") or []
        types: dict[str, int] = {}
        for a in an:
            types[a.get("type", "?")] = types.get(a.get("type", "?"), 0) + 1
        counts = r.get("counts") if isinstance(r.get("counts"), dict) else None
        t = ", ".join(f"{n} {k}" for k, n in (counts or types).items() if n)
        first = an[0].get("explanation", "") if an else ""
        return f"{t}. {first}".strip()
    if verdict is Verdict.UNKNOWN:
        return str(r.get("reason") or r.get("error") or r.get("note") or "")
    return ""


def check_main(argv: list[str] | None = None) -> int:
    """Entry point: ``cachecert check PATH [...]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="cachecert check", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args)


def _parse_opts(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    opts: dict[str, dict[str, Any]] = {}
    for o in args.opt:
        name, _, rest = o.partition(".")
        k, eq, v = rest.partition("=")
        if not name or not k or not eq:
            raise ValueError(f"--opt {o!r}: expected CHECKER.KEY=VALUE")
        opts.setdefault(name, {})[k] = _parse_value(v)
    return opts


def _judge_edn(path: Path, args: argparse.Namespace, opts: dict[str, dict[str, Any]],
               initial: Any) -> dict[str, Any]:
    """Jepsen/Knossos semantics: the history's order is real time, nil reads match anything, and a
    history with nothing to judge (only nemesis ops) is trivially linearizable."""
    from checkers.edn import read_edn_history

    history = read_edn_history(path)
    model = args.model or _guess_model(history)
    names = args.checkers or ["linearizable"]
    lin = opts.setdefault("linearizable", {})
    lin.setdefault("model", model)
    lin.setdefault("nil_reads_any", True)
    lin.setdefault("order", "index")
    lin.setdefault("empty_ok", True)
    if initial is None and model == "multi-register":
        initial = {}
    _set_initial(names, opts, initial)
    if args.time_limit is not None:
        for n in names:
            opts.setdefault(n, {}).setdefault("time_limit_s", args.time_limit)
    if any(op.get("process") != "nemesis" for op in history):
        pair(history)  # a bad history is bad input, not an unknown verdict
    out = run_checkers(history, names, opts)
    out["ops"] = len(history)
    return out


def _judge_jsonl(path: Path, args: argparse.Namespace, opts: dict[str, dict[str, Any]],
                 initial: Any) -> dict[str, Any]:
    history, truncated = load_history_tail(path)
    if not any(op.get("process") != "nemesis" for op in history):
        raise HistoryError(f"{path}: no operations in this history")
    pair(history)  # a bad history is bad input, not an unknown verdict
    try:
        plan, scheduled = _jsonl_plan(path, history, args, opts)
    except CheckerLookupError as e:
        raise HistoryError(str(e)) from None
    _set_initial(plan.names, plan.opts, initial)
    out = judge(history, plan, truncated=truncated, scheduled=scheduled, time_limit_s=args.time_limit)
    out["ops"] = len(history)
    return out


def _set_initial(names: list[str], opts: dict[str, dict[str, Any]], initial: Any) -> None:
    if initial is not None:
        for n in names:
            opts.setdefault(n, {}).setdefault("initial", initial)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        path = path / "history.jsonl"
    fmt = args.format or ("jepsen-edn" if path.suffix == ".edn" else "jsonl")
    try:
        opts = _parse_opts(args)
        if args.model is not None:
            models.resolve(args.model)  # an unknown name or a bad import path is bad input, in one line
        initial = _parse_value(args.initial) if args.initial is not None else None
        judge_fn = _judge_edn if fmt == "jepsen-edn" else _judge_jsonl
        results = judge_fn(path, args, opts, initial)
    except (ValueError, HistoryError) as e:
        print(f"cachecert check: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    results["history"] = str(path)
    results["format"] = fmt
    verdict = Verdict.of(results["valid"])
    if not args.quiet:
        for name, r in results["checkers"].items():
            print(f"  {name:<13} {Verdict.of(r.get('valid')).short:<8} {_summary(r)[:300]}")
        if results.get("history_truncated"):
            print(f"  {results['history_truncated']['message']}")
    n = len(results["checkers"])
    why = ""
    if verdict is Verdict.UNKNOWN and results.get("unknown_reasons"):
        why = f" ({results['unknown_reasons'][0]})"
    print(f"{verdict.word}: {path} ({results['ops']} ops, {n} checker{'s' if n != 1 else ''}){why}")
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        except OSError as e:
            print(f"cachecert check: cannot write {args.out}: {e.strerror}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not args.quiet:
            print(f"results: {args.out}")
    return verdict.exit_code


def register(sub: argparse._SubParsersAction, handlers: dict[str, Any]) -> None:
    """Add ``check`` to the main ``cachecert`` CLI (harness/cli.py picks this up)."""
    cp = sub.add_parser("check", help="run checkers on a stored history (ours or Jepsen EDN)")
    add_arguments(cp)
    handlers["check"] = run


if __name__ == "__main__":
    sys.exit(check_main())
