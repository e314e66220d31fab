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

from harness.history import HistoryError, load_history

EXIT = {True: 0, False: 1, "unknown": 2}
EXIT_BAD_INPUT = 2
ALL_OURS = ("linearizable", "versions", "staleness", "session", "durability", "convergence", "integrity",
            "herd", "perf")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="history.jsonl, a run directory, or a Jepsen .edn history")
    p.add_argument("--checker", "-c", action="append", dest="checkers", metavar="NAME",
                   help="checker to run (repeatable; default: those that fit the history)")
    p.add_argument("--format", choices=("jsonl", "jepsen-edn"), help="history format (default: by extension)")
    p.add_argument("--model", choices=("register", "cas-register", "multi-register", "mutex"),
                   help="linearizability model (default: register for ours, guessed from the ops for EDN)")
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


def _run_dir_options(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Checker options a stored run was judged with: its workload's, then its config's."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    c = cfg.get("config") or {}
    out: dict[str, dict[str, Any]] = {}
    try:
        import workloads

        wl = workloads.load(c.get("workload"))
        out = {k: dict(v) for k, v in wl.checker_opts.items()}
    except Exception:  # noqa: BLE001 - options are a convenience; the history alone still checks
        pass
    for k, v in (c.get("checker_opts") or {}).items():
        if isinstance(v, dict):
            out.setdefault(k, {}).update(v)
    return out


def _summary(r: dict[str, Any]) -> str:
    if r.get("valid") is False:
        an = r.get("anomalies") or []
        types: dict[str, int] = {}
        for a in an:
            types[a.get("type", "?")] = types.get(a.get("type", "?"), 0) + 1
        counts = r.get("counts") if isinstance(r.get("counts"), dict) else None
        t = ", ".join(f"{n} {k}" for k, n in (counts or types).items() if n)
        first = an[0].get("explanation", "") if an else ""
        return f"{t}. {first}".strip()
    if r.get("valid") == "unknown":
        return str(r.get("error") or r.get("note") or "")
    return ""


def check_main(argv: list[str] | None = None) -> int:
    """Entry point: ``cachecert check PATH [...]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="cachecert check", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    from checkers import run_checkers

    path = Path(args.path)
    run_opts: dict[str, dict[str, Any]] = {}
    if path.is_dir():
        run_opts = _run_dir_options(path)
        path = path / "history.jsonl"
    fmt = args.format or ("jepsen-edn" if path.suffix == ".edn" else "jsonl")
    opts: dict[str, dict[str, Any]] = {}
    try:
        for o in args.opt:
            name, _, rest = o.partition(".")
            k, eq, v = rest.partition("=")
            if not name or not k or not eq:
                raise ValueError(f"--opt {o!r}: expected CHECKER.KEY=VALUE")
            opts.setdefault(name, {})[k] = _parse_value(v)
        initial = _parse_value(args.initial) if args.initial is not None else None
    except (ValueError, HistoryError) as e:
        print(f"cachecert check: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if fmt == "jepsen-edn":
            from checkers.edn import read_edn_history

            history = read_edn_history(path)
            model = args.model or _guess_model(history)
            names = args.checkers or ["linearizable"]
            lin = opts.setdefault("linearizable", {})
            lin.setdefault("model", model)
            lin.setdefault("nil_reads_any", True)
            lin.setdefault("order", "index")  # Jepsen: the history's order is the real-time order
            if initial is None and model == "multi-register":
                initial = {}
        else:
            history = load_history(path)
            names = args.checkers or _auto_checkers(history)
            for n, o in run_opts.items():  # the run's own checker options, under the command line's
                for k, v in o.items():
                    opts.setdefault(n, {}).setdefault(k, v)
            opts.setdefault("linearizable", {}).setdefault("model", args.model or "register")
        if initial is not None:
            for n in names:
                opts.setdefault(n, {}).setdefault("initial", initial)
        if args.time_limit is not None:
            for n in names:
                opts.setdefault(n, {}).setdefault("time_limit_s", args.time_limit)
        if not any(op.get("process") != "nemesis" for op in history):
            raise HistoryError(f"{path}: no operations in this history")
        # validate pairing up front: a bad history is bad input, not an unknown verdict
        from checkers.ops import pair

        pair(history)
    except HistoryError as e:
        print(f"cachecert check: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    results = run_checkers(history, names, opts)
    results["history"] = str(path)
    results["format"] = fmt
    results["ops"] = len(history)
    verdict = results["valid"]
    if not args.quiet:
        for name, r in results["checkers"].items():
            v = r.get("valid")
            word = {True: "valid", False: "INVALID"}.get(v, "unknown")
            s = _summary(r)
            print(f"  {name:<13} {word:<8} {s[:300]}")
    word = {True: "VALID", False: "INVALID"}.get(verdict, "UNKNOWN")
    print(f"{word}: {path} ({len(history)} ops, {len(names)} checker{'s' if len(names) != 1 else ''})")
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        except OSError as e:
            print(f"cachecert check: cannot write {args.out}: {e.strerror}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not args.quiet:
            print(f"results: {args.out}")
    return EXIT.get(verdict, 2)


def register(sub: argparse._SubParsersAction, handlers: dict[str, Any]) -> None:
    """Add ``check`` to the main ``cachecert`` CLI (harness/cli.py picks this up)."""
    cp = sub.add_parser("check", help="run checkers on a stored history (ours or Jepsen EDN)")
    add_arguments(cp)
    handlers["check"] = run


if __name__ == "__main__":
    sys.exit(check_main())
