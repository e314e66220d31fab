"""The run report: one self-contained ``report.html`` per run directory, understood in a minute.

Why: people would rather look than read. From a stored run (config.json, results.json,
history.jsonl) this renders the verdict banner, the command to re-run, each checker's verdict and
evidence (generic: key figures and anomalies with their explanations, whatever the checker), and
Jepsen-style plots with the fault windows shaded and labelled: latency over time, throughput and
hit rate, the staleness picture, and a small timeline of the ops behind each of the first
anomalies. Plots are inlined as base64 PNG (opens offline, no CDN) and also written beside the
report. Huge histories are sampled or binned, and the report says so.

``render(run_dir)`` is called by the run engine at the end of every run and by ``cachecert report``.
"""

from __future__ import annotations

import json
import shlex
import time
from collections import Counter
from pathlib import Path
from typing import Any

from core.verdict import Verdict, word
from harness.report import html as H
from harness.report.data import HistoryData, load
from harness.report.html import esc
from harness.report.primary import section as primary_section

MAX_ANOMALY_PLOTS = 5
MAX_ANOMALY_ROWS = 20
REPORT_MARKER = "cachecert-report"


def render(run_dir: str | Path, out: str | Path | None = None, *, write_png: bool = True,
           max_anomalies: int = MAX_ANOMALY_PLOTS) -> Path:
    """Render ``run_dir``'s report to ``out`` (default ``run_dir/report.html``); return its path."""
    from harness.report import figures as F

    t_start = time.monotonic()
    run_dir = Path(run_dir)
    results = _read_json(run_dir / "results.json") or {}
    config = _read_json(run_dir / "config.json") or {}
    out = Path(out) if out else run_dir / "report.html"
    picked = pick_anomalies(results, max_anomalies)
    wanted = {i for _, a in picked for i in _op_indexes(a) + context_indexes(a)}
    hist_path = run_dir / "history.jsonl"
    data = load(hist_path, wanted) if hist_path.exists() else None

    plots: list[F.Plot] = []
    anomaly_plots: dict[int, F.Plot] = {}
    stal_info = ""
    if data is not None and data.n:
        plots, stal_info = _plots(data, results, config)
        for n, (_, a) in enumerate(picked, 1):
            rows = op_rows(data, _op_indexes(a) + context_indexes(a))
            if rows:
                anomaly_plots[n] = F.guarded(f"anomaly-{n}", f"Anomaly {n}", F.anomaly_plot, data, n, a,
                                             mark_context(rows, a))
    if write_png:
        for p in [*plots, *anomaly_plots.values()]:
            (out.parent / f"{p.name}.png").write_bytes(p.png)
    body = _body(run_dir, results, config, data, plots, picked, anomaly_plots, stal_info)
    elapsed = time.monotonic() - t_start
    body += (f'<p class="note">Rendered by cachecert in {elapsed:.2f} s from {esc(run_dir)} '
             f'at {time.strftime("%Y-%m-%d %H:%M:%S")}.</p></main>')
    title = f"{word(results.get('valid'))} {results.get('workload', '?')}/{results.get('strategy', '?')}"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(H.page(title, body), encoding="utf-8")
    tmp.replace(out)
    return out


def _plots(data: HistoryData, results: dict[str, Any], config: dict[str, Any]) -> tuple[list[Any], str]:
    """The run's plots (each drawn or, if it cannot be, replaced by a figure saying why) and the
    staleness figures in words."""
    from harness.report import figures as F

    plots = [F.guarded("latency", "Latency", F.latency_plot, data),
             F.guarded("rates", "Throughput and hit rate", F.rates_plot, data)]
    st_result = (results.get("checkers") or {}).get("staleness")
    curve, intervals = F.staleness_from_checker(st_result)
    st = F.compute_staleness(data)
    if curve:
        st.curve, st.source = curve, "checker"
    if intervals is not None:
        st.ages_ms, st.source = intervals, "checker"
    bound = staleness_bound(results, config)
    plots.append(F.guarded("staleness", "Staleness", F.staleness_plot, data, st, bound))
    if st.source == "history" or not isinstance(st_result, dict) or "stale_reads" not in st_result:
        stal_info = (f"{st.stale:,} stale of {st.reads:,} versioned reads that followed a committed write"
                     " (computed from the history)")
    else:
        stal_info = (f"{st_result['stale_reads']:,} stale of {st_result.get('reads', 0):,} reads "
                     "(figures from the staleness checker)")
    return plots, stal_info


# -- content -----------------------------------------------------------------------------------
def _body(run_dir: Path, results: dict[str, Any], config: dict[str, Any], data: HistoryData | None,
          plots: list[Any], picked: list[tuple[str, dict[str, Any]]], anomaly_plots: dict[int, Any],
          stal_info: str) -> str:
    valid = results.get("valid", "unknown" if results else None)
    cls = H.verdict_class(valid)
    wl, strat = results.get("workload") or config.get("config", {}).get("workload", "?"), \
        results.get("strategy") or config.get("strategy_name", "?")
    cfg = config.get("config", {})
    sched = config.get("schedule_text") or "no faults"
    failing = [n for n, r in (results.get("checkers") or {}).items() if r.get("valid") is False]
    sub = f"{wl} / {strat} · faults: {sched} · seed {results.get('seed', cfg.get('seed', '?'))}"
    if failing:
        sub += " · failed: " + ", ".join(failing)
    if not results:
        sub += " · no results.json (the run did not finish)"
    why = status_notes(results)
    why_html = f'<small class="why" id="verdict-why">{esc(" · ".join(why))}</small>' if why else ""
    out = [f'<!-- {REPORT_MARKER} -->',
           f'<div class="banner v-{cls}" id="verdict" data-verdict="{cls}">{word(valid)}'
           f'<small>{esc(sub)}</small>{why_html}</div><main>']
    out.append(f"<h1>{esc(wl)} / {esc(strat)}</h1>")
    out.append(f'<p>exit code <b>{esc(results.get("exit_code", "?"))}</b> · '
               f'{esc(results.get("wall_s", "?"))} s wall · run directory <code>{esc(run_dir)}</code></p>')
    if why:
        out.append('<ul class="explanation" id="run-status">'
                   + "".join(f"<li>{esc(w)}</li>" for w in status_details(results)) + "</ul>")
    if results.get("error"):
        out.append(f'<p class="explanation"><b>Run error:</b> {esc(results["error"])}</p>')
    for e in results.get("fault_errors") or []:
        out.append(f'<p class="explanation"><b>Fault error:</b> {esc(e)}</p>')
    if results.get("note"):
        out.append(f'<p class="note">{esc(results["note"])}</p>')

    out.append("<h2>Re-run</h2>")
    out.append(f"<pre>cachecert rerun {esc(shlex.quote(str(run_dir)))}</pre>")
    cmd = config.get("command") or cfg.get("command")
    if cmd:
        out.append(f'<p class="note">original command:</p><pre>{esc(shlex.join(str(c) for c in cmd))}</pre>')

    out.append("<h2>Summary</h2>")
    out.append(_summary(results, cfg, data))
    out.append(_faults_section(data, results))
    out.append(primary_section(run_dir, data.t_end if data is not None else None))  # redis=sentinel runs
    out.append(_app_section(results, config))

    out.append("<h2>Checkers</h2>")
    out.append(_checkers(results))

    if plots:
        out.append("<h2>Plots</h2>")
        notes = [n for p in plots for n in p.notes]
        if data is not None and data.n > 40_000:
            notes.insert(0, f"huge history ({data.n_ops:,} records): scatter plots are sampled and rates "
                            "binned; every number in the tables uses every op")
        for n in notes:
            out.append(f'<p class="note sampling">{esc(n)}</p>')
        for p in plots:
            out.append(f'<h3 id="plot-{p.name}">{esc(p.title)}</h3>')
            if p.name == "staleness" and stal_info:
                out.append(f'<p class="note">{esc(stal_info)}</p>')
            out.append(H.img(p.png, p.title))
    elif data is None:
        out.append('<p class="note">No history.jsonl in this run directory: nothing to plot.</p>')
    else:
        out.append('<h2>Plots</h2><p class="note" id="no-data">No data to plot: the history has no client '
                   'operation with a completion.</p>')

    if picked:
        out.append("<h2>Anomalies</h2>")
        total = sum(len(r.get("anomalies") or []) for r in (results.get("checkers") or {}).values())
        out.append(f'<p class="note">{total:,} anomalies in all; the first {len(picked)} '
                   f'(one per kind first) with the ops that make them:</p>')
        for n, (checker, a) in enumerate(picked, 1):
            out.append(f'<h3 id="anomaly-{n}">{n}. {esc(a.get("type", "anomaly"))} · key '
                       f'{esc(a.get("key", "?"))} <span class="note">({esc(checker)})</span></h3>')
            out.append(f'<p class="explanation">{esc(a.get("explanation") or "(no explanation given)")}</p>')
            if a.get("last_state") is not None:
                out.append(f'<p class="note last-state">last linearizable state: {esc(a.get("key", ""))} could '
                           f'only hold {esc(a["last_state"])} (after {esc(a.get("prefix_length", "?"))} ops)</p>')
            if n in anomaly_plots:
                p = anomaly_plots[n]
                out.append(H.img(p.png, f"anomaly {n} timeline", ops=p.drawn))
            if data is not None:
                out.append(_ops_table(data, a))
    return "".join(out)


def status_notes(results: dict[str, Any]) -> list[str]:
    """Why a verdict is weaker than it looks, in a few words each (banner, certificate tooltips):
    the run was interrupted, its history cut short, a fault not confirmed, or the runner's reasons
    for "unknown". Every field is optional (older results.json files have none of them)."""
    notes: list[str] = []
    if results.get("interrupted"):
        at = results.get("interrupted_at_s")
        notes.append(f"interrupted at {at:.1f} s" if isinstance(at, (int, float)) else "interrupted")
    cut = results.get("history_truncated")
    if cut:
        n = cut.get("complete_records") if isinstance(cut, dict) else None
        notes.append(f"history truncated after {n:,} complete records" if isinstance(n, int)
                     else "history truncated")
    faults = [str(f) for f in results.get("unverified_faults") or []]
    if faults:
        notes.append(f"fault{'s' if len(faults) > 1 else ''} not verified: {', '.join(faults)}")
    said = " ".join(notes).lower()
    for r in results.get("unknown_reasons") or []:
        r = str(r)
        if r and r.lower() not in said:
            notes.append(r)
            said += " " + r.lower()
    return notes


def status_details(results: dict[str, Any]) -> list[str]:
    """``status_notes`` with the longer words results.json gives (the truncation message)."""
    out = status_notes(results)
    cut = results.get("history_truncated")
    msg = cut.get("message") if isinstance(cut, dict) else None
    if msg:
        out = [f"{n}: {msg}" if n.startswith("history truncated") else n for n in out]
    faults = results.get("unverified_faults") or []
    if faults:
        out = [f"{n} (its probe did not confirm it took effect: the run cannot claim to have tested it)"
               if n.startswith("fault") and "not verified" in n else n for n in out]
    return out


def converge_s(results: dict[str, Any]) -> float | None:
    """Seconds after heal until cache and DB agreed (the convergence checker's ``converge_s``)."""
    v = ((results.get("checkers") or {}).get("convergence") or {}).get("converge_s")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _summary(results: dict[str, Any], cfg: dict[str, Any], data: HistoryData | None) -> str:
    import numpy as np

    counts = results.get("counts") or {}
    rows: list[tuple[str, Any]] = [
        ("ok / fail / info", f"{counts.get('ok', 0):,} / {counts.get('fail', 0):,} / {counts.get('info', 0):,}"),
        ("time limit (s)", cfg.get("time_limit")), ("concurrency", cfg.get("concurrency")),
        ("nodes", cfg.get("nodes")), ("params", cfg.get("params") or {}),
    ]
    if data is not None and data.n:
        load_t = data.phases.get("load", 0.0)
        heal_t = data.phases.get("heal", data.t_end)
        in_load = ~data.final
        rows.append(("history records", data.n_ops))
        rows.append(("throughput (ok ops/s, load phase)",
                     float(((data.type == 0) & in_load).sum() / max(heal_t - load_t, 1e-9))))
        rep = (data.hit >= 0) & (data.type == 0)
        if rep.any():
            rows.append(("cache hit rate", f"{100 * float((data.hit[rep] == 1).mean()):.1f} %"))
        lat = data.latency() * 1e3
        for fi, f in enumerate(data.f_names):
            sel = (data.f == fi) & (data.type == 0)
            if sel.any():
                p50, p99, mx = np.percentile(lat[sel], [50, 99, 100])
                rows.append((f"{f} latency ok (ms) p50 / p99 / max", f"{p50:.3g} / {p99:.3g} / {mx:.4g}"))
    conv = converge_s(results)
    if conv is not None:
        rows.append(("converged after heal (s)", conv))
    phases = results.get("phases") or {}
    if phases:
        rows.append(("phases (s)", ", ".join(f"{k} {v[0]:.2f}" for k, v in phases.items() if v)))
    return H.kv_table(rows)


def _faults_section(data: HistoryData | None, results: dict[str, Any]) -> str:
    windows = data.faults if data is not None else []
    if not windows:
        probes = results.get("faults") or []
        if not probes:
            return '<p class="note">No faults were injected in this run.</p>'
        return "<h3>Faults</h3>" + H.kv_table([(p.get("fault", "?"), p) for p in probes])
    out = ['<h3>Fault windows</h3><table id="faults"><tr><th>fault</th><th>start (s)</th><th>stop (s)</th>'
           '<th>verified</th><th>observed</th></tr>']
    for w in windows:
        ver = {True: "yes", False: "NOT VERIFIED", None: "no probe"}[w.verified]
        out.append(f'<tr><td><span class="fault-band" data-fault="{esc(w.name)}" '
                   f'style="background:{esc(w.color)}55;border-left:4px solid {esc(w.color)}">{esc(w.name)}</span>'
                   f'</td><td class="num">{w.start:.3f}</td><td class="num">{(w.stop or 0):.3f}</td>'
                   f'<td>{ver}</td><td>{esc(H.short(w.observed, 200))}</td></tr>')
    out.append("</table>")
    out.append('<p class="note">Plots shade each fault window in its colour and write its name on top.</p>')
    return "".join(out)


def _app_section(results: dict[str, Any], config: dict[str, Any]) -> str:
    """App-node runs: what was started, nodes that died by themselves (events of the run, each
    restarted), malformed answers, restarts that failed; logs under RUN_DIR/logs/nodeI.log."""
    app = results.get("app")
    if not app:
        return ""
    spec = config.get("app") or {}
    rows = [("command", spec.get("command")), ("mode", spec.get("mode")), ("nodes", app.get("nodes")),
            ("crashes injected (per node)", app.get("crashes")), ("malformed answers", app.get("protocol_errors"))]
    if spec.get("next"):
        rows.append(("next build", spec["next"]))
    out = ['<h3>App nodes</h3>', H.kv_table(rows)]
    exits = app.get("exits") or []
    if exits:
        out.append('<table id="app-exits"><tr><th>node</th><th>exit status</th><th>last log lines</th></tr>')
        out += [f'<tr><td>node{esc(str(e.get("node")))}</td><td class="num">{esc(str(e.get("status")))}</td>'
                f'<td>{esc(H.short(str(e.get("log_tail", "")), 300))}</td></tr>' for e in exits]
        out.append('</table><p class="note">Each of these nodes exited on its own during the run; its in-flight '
                   'operations are indeterminate (info) and it was started again.</p>')
    for err in app.get("boot_errors") or []:
        out.append(f'<p class="explanation"><b>Restart failed:</b> {esc(err)}</p>')
    out.append('<p class="note">Each node\'s output: logs/node<i>I</i>.log in the run directory.</p>')
    return "".join(out)


def _checkers(results: dict[str, Any]) -> str:
    checkers = results.get("checkers") or {}
    if not checkers:
        return '<p class="note">No checker results in this run (verdict unknown).</p>'
    out = ['<table id="checkers"><tr><th>checker</th><th>verdict</th><th>anomalies</th><th>first</th></tr>']
    for name, r in checkers.items():
        an = r.get("anomalies") or []
        first = an[0].get("explanation", an[0].get("type", "")) if an else _checker_note(r)
        out.append(f'<tr><td><a href="#checker-{esc(name)}">{esc(name)}</a></td><td>{H.tag(r.get("valid"))}</td>'
                   f'<td class="num">{len(an):,}</td><td>{esc(H.short(first, 220))}</td></tr>')
    out.append("</table>")
    for name, r in checkers.items():
        out.append(f'<h3 id="checker-{esc(name)}">{esc(name)} {H.tag(r.get("valid"))}</h3>')
        if r.get("error"):
            out.append(f'<p class="explanation">checker error: {esc(r["error"])}</p>')
        if r.get("reason"):
            label = "why unknown" if Verdict.of(r.get("valid")) is Verdict.UNKNOWN else "note"
            out.append(f'<p class="explanation checker-reason">{label}: {esc(r["reason"])}</p>')
        out.append(H.kv_table(key_figures(r)))
        an = r.get("anomalies") or []
        if an:
            by_type = Counter(str(a.get("type", "?")) for a in an)
            out.append('<p>' + ", ".join(f"{esc(t)}: <b>{c:,}</b>" for t, c in by_type.most_common()) + "</p>")
            out.append(_anomaly_table(an[:MAX_ANOMALY_ROWS]))
            if len(an) > MAX_ANOMALY_ROWS:
                more = an[MAX_ANOMALY_ROWS:200]
                out.append(f"<details><summary>{len(more):,} more"
                           f"{' (of ' + format(len(an) - MAX_ANOMALY_ROWS, ',') + ')' if len(an) > 200 else ''}"
                           f"</summary>{_anomaly_table(more)}</details>")
    return "".join(out)


def _checker_note(r: dict[str, Any]) -> str:
    """What to say in the checkers table about a checker without anomalies."""
    if r.get("error"):
        return str(r["error"])
    if r.get("reason"):
        return str(r["reason"])
    if isinstance(r.get("converge_s"), (int, float)):
        return f"converged {r['converge_s']:.3g} s after heal"
    return str(r.get("note") or "")


def _anomaly_table(an: list[dict[str, Any]]) -> str:
    out = ['<table class="anomalies"><tr><th>type</th><th>key</th><th>ops</th><th>explanation</th></tr>']
    for a in an:
        out.append(f'<tr><td>{esc(a.get("type"))}</td><td>{esc(a.get("key"))}</td>'
                   f'<td>{esc(H.short(a.get("ops", ""), 60))}</td><td>{esc(a.get("explanation", ""))}</td></tr>')
    out.append("</table>")
    return "".join(out)


def key_figures(r: dict[str, Any], limit: int = 40) -> list[tuple[str, Any]]:
    """The scalar evidence of a checker result, flattened one level (generic: any checker)."""
    rows: list[tuple[str, Any]] = []
    for k, v in r.items():
        if k in ("valid", "anomalies", "error", "reason"):
            continue
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if not isinstance(v2, (dict, list)) or len(json.dumps(v2, default=str)) <= 120:
                    rows.append((f"{k}.{k2}", v2))
        elif isinstance(v, list):
            rows.append((k, v if len(json.dumps(v, default=str)) <= 160 else f"list of {len(v):,}"))
        else:
            rows.append((k, v))
    return rows[:limit]


# -- anomalies ---------------------------------------------------------------------------------
def pick_anomalies(results: dict[str, Any], n: int) -> list[tuple[str, dict[str, Any]]]:
    """The first ``n`` anomalies, one of each (checker, type) first, failing checkers first."""
    checkers = results.get("checkers") or {}
    order = sorted(checkers, key=lambda c: checkers[c].get("valid") is not False)
    firsts: list[tuple[str, dict[str, Any]]] = []
    rest: list[tuple[str, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for c in order:
        for a in checkers[c].get("anomalies") or []:
            if not isinstance(a, dict):
                continue
            kind = (c, str(a.get("type")))
            (rest if kind in seen else firsts).append((c, a))
            seen.add(kind)
            if len(firsts) >= n:
                break
    return (firsts + rest)[:n]


def _op_indexes(a: dict[str, Any]) -> list[int]:
    out = []
    for o in a.get("ops") or []:
        if isinstance(o, dict):
            o = o.get("index")
        if isinstance(o, int) and not isinstance(o, bool):
            out.append(o)
    return out


def context_indexes(a: dict[str, Any]) -> list[int]:
    """History indexes of the ops that make an anomaly understandable without being part of it
    (``context_ops``: e.g. the writes that rule a nonlinearizable read out)."""
    return _op_indexes({"ops": a.get("context_ops")})


def mark_context(rows: list[dict[str, Any]], a: dict[str, Any]) -> list[dict[str, Any]]:
    """Give each op row its role in the anomaly: ``culprit`` (the op that cannot be explained),
    ``context`` (with the checker's words for it), or ``concurrent``/``op``."""
    roles = a.get("context_roles") if isinstance(a.get("context_roles"), dict) else {}
    context = set(context_indexes(a))
    culprit = a.get("op")
    for r in rows:
        inv, comp = r["inv"], r["comp"] or {}
        mine = {inv.get("index"), comp.get("index")}
        if culprit is not None and culprit in mine:
            r["role"], r["role_text"] = "culprit", "cannot be linearized" if a.get("last_state") is not None else ""
        elif mine & context:
            r["role"] = "context"
            r["role_text"] = next((str(roles[str(i)]) for i in mine if str(i) in roles), "context")
        else:
            r["role"], r["role_text"] = "op", ""
    return rows


def op_rows(data: HistoryData, indexes: list[int]) -> list[dict[str, Any]]:
    """One row per op (invoke + completion) named by ``indexes``, in time order."""
    rows: dict[int, dict[str, Any]] = {}
    for i in indexes:
        op = data.ops.get(i)
        if op is None:
            continue
        j = data.pair.get(i)
        other = data.ops.get(j) if j is not None else None
        inv, comp = (op, other) if op.get("type") == "invoke" else (other, op)
        if inv is None:
            inv = comp
        assert inv is not None
        key = inv.get("index", i)
        if key in rows:
            continue
        t0 = inv.get("time_ns", 0) / 1e9
        t1 = comp.get("time_ns", 0) / 1e9 if comp else data.t_end
        rows[key] = {"t0": t0, "t1": max(t1, t0), "type": comp.get("type") if comp else "info",
                     "label": f"p{inv.get('process')} {inv.get('f')} {inv.get('key')}",
                     "summary": _summary_of(inv, comp), "inv": inv, "comp": comp}
    return sorted(rows.values(), key=lambda r: r["t0"])


def _summary_of(inv: dict[str, Any], comp: dict[str, Any] | None) -> str:
    if comp is None:
        return "never completed"
    t = comp.get("type")
    if t != "ok":
        return f"{t}: {comp.get('error', '')}"[:80]
    f = comp.get("f")
    extra = []
    if comp.get("version") is not None:
        extra.append(f"v{comp['version']}")
    if comp.get("source"):
        extra.append(str(comp["source"]))
    if comp.get("phase") == "final":
        extra.append("final")
    if f == "write":
        return f"wrote {H.short(inv.get('value'), 40)}" + (" → " + " ".join(extra) if extra else "")
    return f"→ {H.short(comp.get('value'), 40)}" + (f" ({', '.join(extra)})" if extra else "")


def _ops_table(data: HistoryData, a: dict[str, Any]) -> str:
    rows = mark_context(op_rows(data, _op_indexes(a) + context_indexes(a)), a)
    if not rows:
        return '<p class="note">(the ops of this anomaly are not in the history)</p>'
    out = ['<table class="ops"><tr><th>index</th><th>process</th><th>node</th><th>op</th><th>key</th>'
           '<th>invoke (s)</th><th>complete (s)</th><th>outcome</th><th>role</th></tr>']
    for r in rows:
        inv, comp = r["inv"], r["comp"] or {}
        out.append(f'<tr data-role="{esc(r["role"])}"><td class="num">{esc(inv.get("index"))}/'
                   f'{esc(comp.get("index", "–"))}</td>'
                   f'<td>{esc(inv.get("process"))}</td><td>{esc(inv.get("node", "–"))}</td>'
                   f'<td>{esc(inv.get("f"))}</td><td>{esc(inv.get("key"))}</td>'
                   f'<td class="num">{r["t0"]:.6f}</td><td class="num">{r["t1"]:.6f}</td>'
                   f'<td>{esc(r["type"])} {esc(r["summary"])}</td><td>{esc(r["role_text"])}</td></tr>')
    out.append("</table>")
    return "".join(out)


def staleness_bound(results: dict[str, Any], config: dict[str, Any]) -> float | None:
    r = (results.get("checkers") or {}).get("staleness") or {}
    for k in ("bound_ms", "bound"):
        if isinstance(r.get(k), (int, float)):
            return float(r[k])
    opts = (config.get("config") or {}).get("checker_opts", {}).get("staleness", {})
    if isinstance(opts.get("bound_ms"), (int, float)):
        return float(opts["bound_ms"])
    try:
        import workloads

        wl = workloads.load(results.get("workload") or config["config"]["workload"])
        b = wl.checker_opts.get("staleness", {}).get("bound_ms")
        return float(b) if b is not None else None
    except Exception:  # noqa: BLE001 - the bound is decoration; the report must render without it
        return None


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
