"""Certification and comparison: a strategy's fitness on one page, with the evidence one click away.

Why: a team adopting a caching strategy wants to know which guarantees it keeps under which
faults, not to read eight reports. ``certify`` runs the strategy through every workload that
serves it, under each fault plan, on one shared embedded cluster, and writes
``reports/certify/<strategy>/<timestamp>/index.html`` (a matrix guarantees x fault plans, each cell
linking to its run's report.html) and ``certificate.json``. ``compare`` runs several strategies on
one workload and puts them side by side (guarantees and key figures).

Sharding (``--shard I/N``, ``merge_certificates``): a full certification outgrows one CI machine, so
the CI system's own parallelism runs it, not a scheduler of ours. The matrix is the ordered list of
cells (strategy, workload, plan) the unsharded run would run; shard I of N runs the cells whose index
% N == I-1 (a fair mix of slow and fast workloads in every shard, the same slice on every machine)
and writes a *partial* certificate carrying the matrix fingerprint (the cell list and every option
that changes results), so ``certify merge`` can refuse shards of different matrices, a shard twice
or a missing shard, and otherwise write exactly the certificate the unsharded run writes. Run links
are stored relative to the certificate too, so shard artifacts can be downloaded anywhere.

Checker results map onto guarantees in ``guarantees_of``: by checker name, by sub-results when a
checker reports them (the session checker's read-your-writes / monotonic-reads), else by anomaly
types. A guarantee whose checker did not run is "n/a", never "pass"; a checker that judged nothing
is "unknown" with its reason; and no guarantee passes in a run whose faults were not all confirmed,
whose history was cut short or which was interrupted (``run_blockers``): the run did not test what
its plan says. The run-verdict row follows results.json's ``valid`` and says why it is unknown.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.verdict import Exit, UsageError, Verdict, merge, word
from harness import store
from harness.report import converge_s, status_notes
from harness.report import html as H
from harness.report.html import esc

# (id, title, checker, sub-result field names, anomaly types that break it)
GUARANTEES: list[tuple[str, str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("linearizable", "linearizable", "linearizable", (), ()),
    ("bounded-staleness", "bounded staleness", "staleness", (), ()),
    ("read-your-writes", "read-your-writes", "session",
     ("read_your_writes", "read-your-writes", "ryw"), ("read-your-writes", "ryw", "stale-own-write")),
    ("monotonic-reads", "monotonic reads", "session",
     ("monotonic_reads", "monotonic-reads", "monotonic"), ("non-monotonic-read", "monotonic-reads")),
    ("committed-reads", "only committed values read", "versions", (), ("aborted-read", "garbage-read")),
    ("no-lost-writes", "no lost writes", "durability", (), ()),
    ("no-torn-reads", "no torn reads", "integrity", (), ()),
    ("herd-bound", "herd bound", "herd", (), ()),
    ("convergence", "convergence", "convergence", (), ()),
]
# a guarantee cell's status per verdict, and its text (n/a: the workload does not check it)
STATUS_OF = {Verdict.VALID: "pass", Verdict.INVALID: "fail", Verdict.UNKNOWN: "unknown"}
CELL_TEXT = {"pass": "pass", "fail": "FAIL", "unknown": "?", "n/a": "–"}


def guarantees_of(results: dict[str, Any], bound_ms: float | None = None) -> dict[str, dict[str, str]]:
    """Map a run's checker results onto the guarantees; each {status: pass|fail|unknown|n/a, detail}."""
    checkers = results.get("checkers") or {}
    out: dict[str, dict[str, str]] = {}
    for gid, _title, checker, subs, types in GUARANTEES:
        r = checkers.get(checker)
        if not isinstance(r, dict):
            out[gid] = {"status": "n/a", "detail": f"checker {checker} did not run"}
            continue
        valid = r.get("valid")
        anomalies = [a for a in r.get("anomalies") or [] if isinstance(a, dict)]
        status = STATUS_OF[Verdict.of(valid)]
        mine = anomalies
        if subs or types:
            sub = next((r[s] for s in subs if s in r), None)
            if isinstance(sub, dict) and "valid" in sub:
                status = STATUS_OF[Verdict.of(sub["valid"])]
            elif isinstance(sub, bool):
                status = STATUS_OF[Verdict.of(sub)]
            else:
                mine = [a for a in anomalies if str(a.get("type", "")).lower() in types]
                if mine:
                    status = "fail"
                elif valid is False:
                    status = "pass" if anomalies else "unknown"
            if sub is not None:
                mine = [a for a in anomalies if str(a.get("type", "")).lower() in types] or (
                    anomalies if status == "fail" else [])
        detail = _detail(gid, r, mine, bound_ms)
        out[gid] = {"status": status, "detail": detail}
    blockers = run_blockers(results)
    if blockers:
        for g in out.values():
            if g["status"] == "pass":
                g["status"] = "unknown"
                g["detail"] = "; ".join(["not confirmed: " + "; ".join(blockers), *filter(None, [g["detail"]])])
    return out


def run_blockers(results: dict[str, Any]) -> list[str]:
    """Why no guarantee of this run can pass, whatever its checkers say: a fault of its plan not
    confirmed by its probe, a history cut short, an interrupted run."""
    keep = ("interrupted", "interrupted_at_s", "history_truncated", "unverified_faults")
    return status_notes({k: results[k] for k in keep if k in results})


def _detail(gid: str, r: dict[str, Any], anomalies: list[dict[str, Any]], bound_ms: float | None) -> str:
    parts = []
    if gid == "bounded-staleness":
        b = r.get("bound_ms", bound_ms)
        if b is not None:
            parts.append(f"bound {b:g} ms" if isinstance(b, (int, float)) else f"bound {b}")
        for k in ("max_staleness_ms", "max_ms", "max_stale_ms", "worst_ms"):
            if isinstance(r.get(k), (int, float)):
                parts.append(f"worst {r[k]:.4g} ms")
                break
    if gid == "convergence" and isinstance(r.get("converge_s"), (int, float)):
        parts.append(f"converged {r['converge_s']:.3g} s after heal")
    if anomalies:
        parts.append(f"{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}: "
                     f"{anomalies[0].get('explanation') or anomalies[0].get('type')}")
    if r.get("error"):
        parts.append(f"error: {r['error']}")
    if r.get("reason") and r.get("valid") is not True:
        parts.append(str(r["reason"]))
    return "; ".join(parts)[:400]


@dataclass
class Cell:
    workload: str
    plan: str
    strategy: str
    run_dir: str | None = None
    valid: Any = "unknown"
    exit_code: int = Exit.UNKNOWN
    error: str | None = None
    guarantees: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why the verdict is weaker (harness.report.status_notes)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        """A cell back from a certificate's ``runs`` entry (unknown keys, like ``run_dir_rel``, dropped)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Plan:
    """What to run: (workload, plan) pairs for one or several strategies, with shared options."""

    strategies: list[str]
    pairs: list[tuple[str, str]]
    time_limit: float | None = None
    concurrency: int | None = None
    nodes: int | None = None  # None: each workload's default
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    reports: str | None = None
    quiesce: float | None = None
    # app nodes among the strategies: name -> {"app": CMD} or {"app_file": PATH} (run with --app/--app-file)
    apps: dict[str, dict[str, str]] = field(default_factory=dict)
    shard: tuple[int, int] | None = None  # (I, N): run only the I-th of N slices of the matrix
    cluster_file: str | None = None  # --cluster FILE: on the user's own servers (--backend external)

    def cells(self) -> list[tuple[str, str, str]]:
        """The matrix: every (strategy, workload, plan) an unsharded run runs, in its order."""
        return [(s, w, p) for s in self.strategies for w, p in self.pairs]

    def selected(self) -> list[int]:
        """Indices into ``cells()`` this run executes: all of them, or its shard's slice."""
        return shard_indices(len(self.cells()), self.shard)


# -- shards ------------------------------------------------------------------------------------
MATRIX_FORMAT = "cachecert-matrix/1"


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1 <= I <= N) as a pair; UsageError otherwise."""
    i_s, sep, n_s = text.partition("/")
    try:
        i, n = int(i_s), int(n_s)
    except ValueError:
        i = n = 0
    if not sep or not 1 <= i <= n:
        raise UsageError(f"--shard wants I/N with 1 <= I <= N, like 2/3 (got {text!r})")
    return i, n


def shard_indices(total: int, shard: tuple[int, int] | None) -> list[int]:
    """Shard I of N takes every N-th cell from the (I-1)-th: deterministic, and every shard gets a mix."""
    if shard is None:
        return list(range(total))
    i, n = shard
    return [k for k in range(total) if k % n == i - 1]


def _num(x: Any) -> Any:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def matrix_options(plan: Plan) -> dict[str, Any]:
    """The options that change a run's results (reports root, JUnit and the like do not). An app
    file counts by path and content: the same path on two machines may hold two services."""
    apps: dict[str, dict[str, str]] = {}
    for name, entry in sorted(plan.apps.items()):
        a = dict(entry)
        if "app_file" in a:
            try:
                a["app_file_sha256"] = hashlib.sha256(Path(a["app_file"]).read_bytes()).hexdigest()
            except OSError:
                a["app_file_sha256"] = "unreadable"
        apps[name] = a
    return {"time_limit": _num(plan.time_limit), "seed": plan.seed, "params": plan.params,
            "nodes": plan.nodes, "concurrency": plan.concurrency, "quiesce": _num(plan.quiesce), "apps": apps}


def fingerprint(cells: list[list[str]] | list[tuple[str, str, str]], options: dict[str, Any]) -> str:
    """A hash of the full ordered cell list and the result-changing options: equal for every shard
    of one matrix, different as soon as a cell, their order or an option differs."""
    doc = {"format": MATRIX_FORMAT, "cells": [list(c) for c in cells], "options": options}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def matrix_of(plan: Plan) -> dict[str, Any]:
    """What a certificate records about its matrix: fingerprint, ordered cells, options."""
    cells, options = plan.cells(), matrix_options(plan)
    return {"fingerprint": fingerprint(cells, options), "cells": [list(c) for c in cells], "options": options}


def app_entry(app: str | None, app_file: str | None) -> dict[str, dict[str, str]]:
    """The user's service as one more column of a certificate or comparison, named as its runs are."""
    from harness.appnodes import AppError, AppSpec

    if not (app or app_file):
        return {}
    try:
        spec = AppSpec.from_file(app_file) if app_file else AppSpec.from_command(app or "")
    except AppError as e:
        raise UsageError(str(e)) from None
    return {spec.label: {"app_file": app_file} if app_file else {"app": app or ""}}


def resolve(strategy_names: list[str], workload_names: list[str] | None, faults: list[str] | None,
            apps: dict[str, dict[str, str]] | None = None, **opts: Any) -> Plan:
    """Which workloads and fault plans apply. Raises UsageError for what cannot be run. ``apps``:
    app nodes to run as strategies (``app_entry``); alone, they run every black-box workload."""
    import strategies as S
    import workloads as W

    apps = apps or {}
    names: list[str] = []
    for s in strategy_names:
        try:
            cls = S.load(s)
        except LookupError as e:
            raise UsageError(str(e)) from None
        names.append(S.name_of(cls, s))
    if workload_names:
        wls = []
        for w in workload_names:
            try:
                wls.append(W.load(w))
            except LookupError as e:
                raise UsageError(str(e)) from None
    else:
        wls = []
        for n in sorted(W.REGISTRY):
            try:
                wl = W.load(n)
            except LookupError:
                continue
            if any(s in wl.strategies for s in names) or (apps and wl.app_ops):
                wls.append(wl)
        if not wls:
            raise UsageError(f"no workload serves {', '.join(names + list(apps))}; name one with --workloads")
    pairs = []
    for wl in wls:
        plans = list(wl.plans) if not faults else [p for p in faults if p in wl.plans or "@" in p or p == "random"]
        pairs += [(wl.name, p) for p in plans]
    if not pairs:
        raise UsageError(f"none of the fault plans {faults} exists in workloads {[w.name for w in wls]}")
    return Plan(names + list(apps), pairs, apps=dict(apps), **opts)


def execute(plan: Plan, log: Callable[[str], None] = print, cluster: Any = None) -> list[Cell]:
    """Run every (strategy, workload, plan) on one shared cluster; never raises for a single run."""
    import workloads as W
    from harness.cluster import ALL_SERVICES, Cluster
    from harness.runner import ConfigError, Run, RunConfig, prepare

    matrix = plan.cells()
    todo = [matrix[k] for k in plan.selected()]
    services: set[str] = set()
    for wname in dict.fromkeys(w for _, w, _ in todo):
        services |= set(W.load(wname).services)
    own = cluster is None and bool(todo)
    cells: list[Cell] = []
    if own:
        cluster = Cluster(services=tuple(s for s in ALL_SERVICES if s in services),
                          name=f"certify-{os.getpid()}", backend="external" if plan.cluster_file else "local",
                          cluster_file=plan.cluster_file)
        log(f"starting services: {', '.join(sorted(services))}")
        cluster.up()
    try:
        total = len(todo)
        for n, (strategy, wname, pname) in enumerate(todo, 1):
            cell = Cell(wname, pname, strategy)
            cells.append(cell)
            app = plan.apps.get(strategy, {})
            how = ["--app-file", app["app_file"]] if "app_file" in app else \
                ["--app", app["app"]] if app else ["-s", strategy]
            cfg = RunConfig(workload=wname, strategy=None if app else strategy, params=dict(plan.params),
                            faults=pname, time_limit=plan.time_limit, concurrency=plan.concurrency,
                            nodes=plan.nodes, seed=plan.seed, reports=plan.reports, quiesce=plan.quiesce,
                            command=["cachecert", "run", wname, *how, "-f", pname], app=app.get("app"),
                            app_file=app.get("app_file"), cluster_file=plan.cluster_file,
                            backend="external" if plan.cluster_file else "local")
            try:
                prepared = prepare(cfg)
            except ConfigError as e:
                cell.error, cell.valid, cell.exit_code = str(e), "unknown", Exit.USAGE
                log(f"[{n}/{total}] {wname}/{strategy} [{pname}]: cannot run: {e}")
                continue
            cell.seed = cfg.seed
            run = Run(prepared, cluster=cluster, progress=False)
            cell.run_dir = str(run.dir)
            t0 = time.monotonic()
            try:
                results = run.execute()
            except Exception as e:  # noqa: BLE001 - one broken run must not stop the certification
                cell.error = f"{type(e).__name__}: {e}"
                results = store.read_json(run.dir / "results.json") if (run.dir / "results.json").exists() \
                    else {}
                cell.exit_code = Exit.HARNESS
            else:
                cell.exit_code = int(results.get("exit_code", Verdict.of(results.get("valid")).exit_code))
            cell.valid = results.get("valid", "unknown")
            cell.notes = status_notes(results)
            cell.guarantees = guarantees_of(results, _bound(prepared.workload, cfg))
            cell.figures = run_figures(run.dir, results)
            log(f"[{n}/{total}] {wname}/{strategy} [{pname}]: {word(cell.valid)} "
                f"({time.monotonic() - t0:.1f} s) {run.dir}")
    finally:
        if own:
            cluster.down()
            cluster.remove()
    return cells


def _bound(wl: Any, cfg: Any) -> float | None:
    b = (cfg.checker_opts.get("staleness") or {}).get("bound_ms")
    return b if b is not None else (wl.checker_opts.get("staleness") or {}).get("bound_ms")


def run_figures(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """A few comparable numbers per run, from its history (throughput, hit rate, latency, staleness)."""
    import numpy as np

    from harness.report import figures as F
    from harness.report.data import load

    out: dict[str, Any] = {}
    try:
        d = load(Path(run_dir) / "history.jsonl")
    except (OSError, ValueError):
        return out
    if not d.n:
        return out
    span = d.phases.get("heal", d.t_end) - d.phases.get("load", 0.0)
    ok = d.type == 0
    out["ok ops/s"] = round(float((ok & ~d.final).sum() / max(span, 1e-9)), 1)
    out["fail+info"] = int((~ok).sum())
    rep = (d.hit >= 0) & ok
    if rep.any():
        out["hit rate %"] = round(100 * float((d.hit[rep] == 1).mean()), 1)
    lat = d.latency() * 1e3
    if "read" in d.f_names:
        sel = ok & (d.f == d.f_names.index("read"))
        if sel.any():
            out["read p50 ms"], out["read p99 ms"] = (round(float(x), 3) for x in np.percentile(lat[sel], [50, 99]))
    st = F.compute_staleness(d)
    out["stale reads"] = st.stale
    if len(st.ages_ms):
        out["max staleness ms"] = round(float(st.ages_ms.max()), 1)
    conv = converge_s(results)
    if conv is not None:
        out["converged after heal s"] = round(conv, 3)
    return out


def merged_exit(cells: list[Cell]) -> int:
    """The merged verdict's exit code; a harness failure outranks unknown (not an anomaly found)."""
    verdict = Verdict.merge(c.valid for c in cells)
    if verdict is not Verdict.INVALID and any(c.exit_code == Exit.HARNESS for c in cells):
        return Exit.HARNESS
    return verdict.exit_code


def merged_valid(cells: list[Cell]) -> Any:
    return merge(c.valid for c in cells)


# -- pages -------------------------------------------------------------------------------------
def _cell_html(c: Cell, gid: str | None, index_dir: Path) -> str:
    if gid is None:  # the run's own verdict: results.json's valid, never recomputed from checkers
        status = STATUS_OF[Verdict.of(c.valid)]
        why = [w for w in (c.error, *c.notes) if w]
        text, detail = word(c.valid), "; ".join(why) or f"exit code {c.exit_code}"
    else:
        g = c.guarantees.get(gid) or {"status": "n/a", "detail": c.error or "not run"}
        status, detail = g["status"], g["detail"]
        text = CELL_TEXT[status]
    cls = {"pass": "c-pass", "fail": "c-fail", "unknown": "c-unknown", "n/a": "c-na"}[status]
    inner = esc(text)
    if c.run_dir and (Path(c.run_dir) / "report.html").exists():
        href = os.path.relpath(Path(c.run_dir) / "report.html", index_dir)
        inner = f'<a href="{esc(href)}">{inner}</a>'
    return f'<td class="{cls}" data-status="{status}" title="{esc(detail)}">{inner}</td>'


def guarantee_summary(cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """Per guarantee: holds (every run that checked it passed), violated (under which), or unknown."""
    out: dict[str, dict[str, Any]] = {}
    for gid, *_ in GUARANTEES:
        st = [(c, (c.guarantees.get(gid) or {}).get("status", "n/a")) for c in cells]
        checked = [(c, s) for c, s in st if s != "n/a"]
        fails = [f"{c.workload}/{c.plan}" for c, s in checked if s == "fail"]
        unknown = [f"{c.workload}/{c.plan}" for c, s in checked if s == "unknown"]
        verdict = "not checked" if not checked else "violated" if fails else "unknown" if unknown else "holds"
        out[gid] = {"verdict": verdict, "violated_under": fails, "unknown_under": unknown,
                    "checked_runs": len(checked)}
    return out


def write_certificate(strategy: str, cells: list[Cell], out_dir: Path, plan: Plan,
                      matrix: dict[str, Any] | None = None) -> Path:
    """certificate.json and index.html. A sharded plan (``plan.shard``) writes a partial certificate:
    its own cells only, marked with the shard and the matrix fingerprint, for ``merge_certificates``.
    ``matrix``: the recorded matrix (a merge passes the shards'), else computed from ``plan``."""
    matrix = matrix or matrix_of(plan)
    summary = guarantee_summary(cells)
    valid = merged_valid(cells)
    runs = []
    for c in cells:
        d = c.to_dict()
        # the link that survives moving the whole reports tree (a CI artifact downloaded elsewhere)
        d["run_dir_rel"] = os.path.relpath(c.run_dir, out_dir) if c.run_dir else None
        runs.append(d)
    cert: dict[str, Any] = {
        "strategy": strategy, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "valid": valid,
        "exit_code": merged_exit(cells), "params": plan.params, "time_limit": plan.time_limit,
        "guarantees": summary, "runs": runs, "matrix": matrix}
    partial = plan.shard is not None
    if plan.shard is not None:
        i, n = plan.shard
        cert["partial"] = {"shard": i, "of": n, "cells": plan.selected()}
    store.write_json(out_dir / "certificate.json", cert)
    titles = {g[0]: g[1] for g in GUARANTEES}
    what = f"partial certificate, shard {plan.shard[0]}/{plan.shard[1]}: {len(cells)} of " \
        f"{len(matrix['cells'])} runs" if plan.shard else f"certification over {len(cells)} runs"
    body = [f'<!-- cachecert-certificate{"-partial" if partial else ""} -->'
            f'<div class="banner v-{H.verdict_class(valid)}" id="verdict" '
            f'data-verdict="{H.verdict_class(valid)}">{esc(strategy)}: {word(valid)}'
            f'<small>{esc(what)} · {esc(cert["created"])}</small></div><main>',
            f"<h1>{'Partial certificate' if partial else 'Certificate'}: {esc(strategy)}</h1>"]
    if plan.shard:
        body.append(f'<p class="note" id="partial">Shard {plan.shard[0]} of {plan.shard[1]} of matrix '
                    f'<code>{esc(matrix["fingerprint"])}</code>: the verdicts below cover this shard\'s '
                    f'runs only. <code>cachecert certify merge</code> with every shard\'s directory writes '
                    f'the full certificate.</p>')
    if plan.params:
        body.append(f"<p>parameters: <code>{esc(json.dumps(plan.params))}</code></p>")
    body.append('<h2>Guarantees</h2><table id="summary"><tr><th>guarantee</th><th>verdict</th>'
                '<th>violated under</th></tr>')
    for gid, s in summary.items():
        cls = {"holds": "c-pass", "violated": "c-fail", "unknown": "c-unknown"}.get(s["verdict"], "c-na")
        title = titles[gid]
        if gid == "bounded-staleness":
            bounds = {c.guarantees.get(gid, {}).get("detail", "").split(";")[0] for c in cells} - {""}
            if bounds:
                title += f" ({', '.join(sorted(bounds))})"
        body.append(f'<tr><td>{esc(title)}</td><td class="{cls}">{esc(s["verdict"])}</td>'
                    f'<td>{esc(", ".join(s["violated_under"]) or "–")}</td></tr>')
    body.append("</table>")
    body.append(_matrix(cells, out_dir, key=lambda c: c.workload, col=lambda c: c.plan, col_title="fault plan"))
    body.append(_runs_table(cells))
    body.append('<p class="note">Each cell links to its run\'s report; hover for the evidence. '
                '– = the guarantee is not checked by that workload.</p></main>')
    idx = out_dir / "index.html"
    idx.write_text(H.page(f"{'partial ' if partial else ''}certificate {strategy}", "".join(body)),
                   encoding="utf-8")
    return idx


def _read_partial(where: Path) -> tuple[Path, dict[str, Any]]:
    """A shard's directory (or its certificate.json) and its certificate; UsageError if it is not one."""
    f = where / "certificate.json" if where.is_dir() else where
    try:
        cert = store.read_json(f)
    except FileNotFoundError:
        raise UsageError(f"{where}: no certificate.json (not a certificate directory)") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{f}: unreadable certificate ({e})") from None
    if not isinstance(cert, dict) or not isinstance(cert.get("partial"), dict) \
            or not isinstance(cert.get("matrix"), dict):
        raise UsageError(f"{f}: not a partial certificate (written by `certify --shard I/N`)")
    p = cert["partial"]
    if not all(isinstance(p.get(k), int) for k in ("shard", "of")) or not 1 <= p["shard"] <= p["of"]:
        raise UsageError(f"{f}: bad shard {p.get('shard')!r}/{p.get('of')!r}")
    return f.parent, cert


def merge_certificates(dirs: list[Path]) -> tuple[str, list[Cell], Plan, dict[str, Any]]:
    """The full certificate's content from every shard's partial one: (strategy, cells in the
    unsharded order, a plan carrying the recorded options, the matrix). Refuses (UsageError, one
    line) shards of different matrices, a shard given twice, a missing shard, or a shard whose runs
    are not its slice. Run directories are found relative to each shard's certificate."""
    if not dirs:
        raise UsageError("certify merge needs the shards' certificate directories")
    parts = [_read_partial(Path(d)) for d in dirs]
    first_dir, first = parts[0]
    fp, n = first["matrix"].get("fingerprint"), first["partial"].get("of")
    seen: dict[int, Path] = {}
    for d, cert in parts:
        m, p = cert["matrix"], cert["partial"]
        if m.get("fingerprint") != fp or cert.get("strategy") != first.get("strategy"):
            raise UsageError(f"shards of different matrices: {first_dir} (matrix {fp}) and {d} "
                             f"(matrix {m.get('fingerprint')}); certify every shard with the same options")
        if p.get("of") != n:
            raise UsageError(f"shards of different splits: {first_dir} is of {n}, {d} of {p.get('of')}")
        if fingerprint(m.get("cells") or [], m.get("options") or {}) != fp:
            raise UsageError(f"{d}: its matrix does not match its fingerprint {fp} (edited certificate?)")
        i = p.get("shard")
        if i in seen:
            raise UsageError(f"duplicate shard {i}/{n}: {seen[i]} and {d}")
        seen[i] = d
    missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in seen]
    if missing:
        raise UsageError(f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    matrix = first["matrix"]
    order = [tuple(c) for c in matrix["cells"]]
    placed: dict[int, Cell] = {}
    for d, cert in parts:
        i = cert["partial"]["shard"]
        want = shard_indices(len(order), (i, n))
        runs = cert.get("runs") or []
        if cert["partial"].get("cells") != want or len(runs) != len(want):
            raise UsageError(f"{d}: shard {i}/{n} should hold cells {want} of the matrix, "
                             f"holds {cert['partial'].get('cells')} with {len(runs)} runs")
        for k, r in zip(want, runs, strict=True):
            cell = Cell.from_dict(r)
            if (cell.strategy, cell.workload, cell.plan) != order[k]:
                raise UsageError(f"{d}: run {cell.strategy}/{cell.workload}/{cell.plan} is not cell {k} "
                                 f"of the matrix ({'/'.join(order[k])})")
            rel = r.get("run_dir_rel")
            if rel and (d / rel).exists():
                cell.run_dir = os.path.normpath(d / rel)
            placed[k] = cell
    opts = matrix.get("options") or {}
    strategies = list(dict.fromkeys(s for s, _, _ in order))
    pairs = list(dict.fromkeys((w, p) for _, w, p in order))
    plan = Plan(strategies, pairs, time_limit=opts.get("time_limit"), concurrency=opts.get("concurrency"),
                nodes=opts.get("nodes"), seed=opts.get("seed"), params=opts.get("params") or {},
                quiesce=opts.get("quiesce"),
                apps={k: {f: v for f, v in a.items() if f in ("app", "app_file")}
                      for k, a in (opts.get("apps") or {}).items()})
    return str(first.get("strategy")), [placed[k] for k in range(len(order))], plan, matrix


def _matrix(cells: list[Cell], out_dir: Path, key: Callable[[Cell], str], col: Callable[[Cell], str],
            col_title: str) -> str:
    out = []
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(key(c), []).append(c)
    for g, cs in groups.items():
        out.append(f'<h2>{esc(g)}</h2><table class="matrix" data-group="{esc(g)}"><tr><th>guarantee \\ '
                   f'{esc(col_title)}</th>' + "".join(f"<th>{esc(col(c))}</th>" for c in cs) + "</tr>")
        out.append("<tr><th>run verdict</th>" + "".join(_cell_html(c, None, out_dir) for c in cs) + "</tr>")
        for gid, title, *_ in GUARANTEES:
            if all((c.guarantees.get(gid) or {}).get("status", "n/a") == "n/a" for c in cs):
                continue
            out.append(f"<tr><th>{esc(title)}</th>" + "".join(_cell_html(c, gid, out_dir) for c in cs) + "</tr>")
        fig_names = list(dict.fromkeys(k for c in cs for k in c.figures))
        for k in fig_names:
            out.append(f'<tr><th class="note">{esc(k)}</th>' + "".join(
                f'<td class="num">{esc(H.fmt(c.figures.get(k)))}</td>' for c in cs) + "</tr>")
        out.append("</table>")
    return "".join(out)


def _runs_table(cells: list[Cell]) -> str:
    out = ['<h2>Runs</h2><table id="runs"><tr><th>workload</th><th>strategy</th><th>fault plan</th>'
           '<th>verdict</th><th>re-run</th></tr>']
    for c in cells:
        rerun = f"cachecert rerun {c.run_dir}" if c.run_dir else (c.error or "")
        why = f' <span class="note">{esc("; ".join(c.notes))}</span>' if c.notes else ""
        out.append(f"<tr><td>{esc(c.workload)}</td><td>{esc(c.strategy)}</td><td>{esc(c.plan)}</td>"
                   f"<td>{H.tag(c.valid, word(c.valid))}{why}</td><td><code>{esc(rerun)}</code></td></tr>")
    out.append("</table>")
    return "".join(out)


def write_compare(workload: str, cells: list[Cell], out_dir: Path) -> Path:
    valid = merged_valid(cells)
    store.write_json(out_dir / "compare.json", {"workload": workload, "runs": [c.to_dict() for c in cells]})
    body = [f'<!-- cachecert-compare --><div class="banner v-{H.verdict_class(valid)}" id="verdict" '
            f'data-verdict="{H.verdict_class(valid)}">{esc(workload)}: '
            f'{esc(", ".join(dict.fromkeys(c.strategy for c in cells)))}'
            f'<small>side by side over {len(cells)} runs</small></div><main>',
            f"<h1>Compare strategies on {esc(workload)}</h1>",
            _matrix(cells, out_dir, key=lambda c: f"fault plan: {c.plan}", col=lambda c: c.strategy,
                    col_title="strategy"),
            _runs_table(cells), "</main>"]
    idx = out_dir / "index.html"
    idx.write_text(H.page(f"compare {workload}", "".join(body)), encoding="utf-8")
    return idx
