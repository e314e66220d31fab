"""The report's numbers and plots, computed from HistoryData columns (numpy, no per-op Python).

Why separate from the HTML: the same figures feed the run report, the PNG files beside it and the
benchmark; every function here is vectorised so a million-op history costs a fraction of a second
per plot. Plots follow Jepsen's perf graphs: time on x, fault windows shaded in the fault's own
colour and labelled with its name, phases marked. Huge histories are sampled (scatter) or binned
(rates), and every figure returns a note saying so.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.report.data import FAIL, INFO, OK, HistoryData


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the plotting stack's own deprecation warnings while it imports and draws.

    matplotlib 3.9 calls pyparsing by names pyparsing 3.3 deprecated (``parseString``,
    ``setParseAction``, ...): a user's pytest run printed 216 of them. They are about matplotlib's
    code, not the user's, so they are filtered here, where they start, and nowhere else (a
    process-wide filter would not survive pytest, which re-enables DeprecationWarning per test)."""
    with warnings.catch_warnings():
        for cat in (DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=cat, module=r"(matplotlib|pyparsing)(\.|$)")
        warnings.filterwarnings("ignore", message=r".*deprecated.*", module=r"(matplotlib|pyparsing)(\.|$)")
        yield


with quiet():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

TYPE_COLORS = {OK: "#2e86de", FAIL: "#e84393", INFO: "#f39c12"}
TYPE_LABEL = {OK: "ok", FAIL: "fail", INFO: "info"}
MARKERS = ["o", "^", "s", "D", "v", "P", "X", "*"]
MAX_POINTS = 40_000
DPI = 96


@dataclass
class Plot:
    name: str  # file stem: latency, rates, staleness, anomaly-1
    title: str
    png: bytes
    notes: list[str] = field(default_factory=list)
    drawn: list[int] = field(default_factory=list)  # history indexes (invokes) of the ops drawn, if any


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def message_plot(name: str, title: str, message: str, notes: list[str] | None = None) -> Plot:
    """A small figure that says, in words, why there is nothing (or nothing more) to draw."""
    fig, ax = plt.subplots(figsize=(11, 1.4))
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#555", fontsize=11,
            wrap=True)
    return Plot(name, title, to_png(fig), notes or [])


def guarded(name: str, title: str, draw: Callable[..., Plot], *args: Any) -> Plot:
    """``draw(*args)``, or, if the drawing fails on data it did not foresee, a figure saying so:
    a run the CLI accepted always gets its report."""
    try:
        with quiet():
            return draw(*args)
    except Exception as e:  # noqa: BLE001 - one plot must never cost the whole report
        plt.close("all")
        with quiet():
            return message_plot(name, title, f"this plot could not be drawn: {type(e).__name__}: {e}",
                                [f"{title}: not drawn ({type(e).__name__}: {e})"])


def shade_faults(ax: Any, d: HistoryData, label: bool = True, lo: float | None = None,
                 hi: float | None = None) -> None:
    """Shade every fault window (its own colour) and write its name at the top of ``ax``."""
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for i, w in enumerate(d.faults):
        stop = w.stop if w.stop is not None else d.t_end
        if (lo is not None and stop < lo) or (hi is not None and w.start > hi):
            continue
        a = w.start if lo is None else max(w.start, lo)
        b = stop if hi is None else min(stop, hi)
        ax.axvspan(a, b, color=w.color, alpha=0.22, lw=0, zorder=0)
        if label:
            mark = "" if w.verified is not False else " (unverified)"
            ax.text(a, 1.0 - 0.09 * (i % 3), " " + w.name + mark, transform=trans, va="top", ha="left",
                    fontsize=7, color="#333", clip_on=True,
                    bbox={"boxstyle": "square,pad=0.1", "fc": w.color, "alpha": 0.45, "lw": 0})


def mark_phases(ax: Any, d: HistoryData) -> None:
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for name in ("heal", "final"):
        t = d.phases.get(name)
        if t is not None:
            ax.axvline(t, color="#777", lw=0.8, ls=":", zorder=1)
            ax.text(t, 0.01, f" {name}", transform=trans, fontsize=7, color="#555", va="bottom")


def _sample(mask: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if len(idx) > cap:
        idx = np.sort(rng.choice(idx, cap, replace=False))
    return idx


def bin_width(span: float, target_bins: int = 120) -> float:
    """A round bin width giving about ``target_bins`` bins over ``span`` seconds."""
    raw = max(span, 1e-3) / target_bins
    for w in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if w >= raw:
            return float(w)
    return float(np.ceil(raw / 600) * 600)


# -- latency ---------------------------------------------------------------------------------
def latency_plot(d: HistoryData, max_points: int = MAX_POINTS) -> Plot:
    fig, ax = plt.subplots(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.12)
    notes: list[str] = []
    lat_ms = np.maximum(d.latency() * 1e3, 1e-3)
    rng = np.random.default_rng(0)
    shown = 0
    # fail/info ops are the interesting ones: up to 2,000 of them are always drawn
    bad = d.type != OK
    rate = min(1.0, max_points / max(d.n, 1))
    keep_bad = _sample(bad, max(int(bad.sum() * rate), min(2_000, max_points // 4)), rng)
    keep_ok = _sample(~bad, max_points - len(keep_bad), rng)
    for fi, fname in enumerate(d.f_names):
        marker = MARKERS[fi % len(MARKERS)]
        for code in (OK, INFO, FAIL):
            pool = keep_ok if code == OK else keep_bad
            sel = pool[(d.f[pool] == fi) & (d.type[pool] == code)]
            if len(sel) == 0:
                continue
            shown += len(sel)
            ax.plot(d.t0[sel], lat_ms[sel], ls="none", marker=marker, ms=2.2 if code == OK else 3.2,
                    alpha=0.45 if code == OK else 0.8, color=TYPE_COLORS[code], mec="none",
                    label=f"{fname} {TYPE_LABEL[code]}", rasterized=True)
    if shown < d.n:
        notes.append(f"latency: {shown:,} of {d.n:,} ops drawn (uniform sample; failed and indeterminate ops "
                     f"over-sampled, up to 2,000); the p50/p99 lines use every ok op")
    _quantile_lines(ax, d, lat_ms)
    ax.set_yscale("log")
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("Latency of every operation (by completion type and operation)")
    shade_faults(ax, d)
    mark_phases(ax, d)
    ax.set_xlim(0, max(d.t_end, 1e-3) * 1.01)
    ax.grid(True, which="major", alpha=0.3)
    if d.n:
        ax.legend(loc="upper right", fontsize=7, ncol=4, markerscale=2.5, framealpha=0.8)
    return Plot("latency", "Latency", to_png(fig), notes)


def _quantile_lines(ax: Any, d: HistoryData, lat_ms: np.ndarray) -> None:
    ok = d.type == OK
    if ok.sum() < 200:
        return
    w = bin_width(d.t_end, 60)
    b = (d.t0[ok] // w).astype(np.int64)
    lat = lat_ms[ok]
    order = np.lexsort((lat, b))
    b, lat = b[order], lat[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(b)]
    counts = ends - starts
    good = counts >= 10
    starts, counts, bins = starts[good], counts[good], b[starts[good]]
    x = (bins + 0.5) * w
    for q, style in ((0.5, "-"), (0.99, "--")):
        y = lat[starts + np.minimum((counts * q).astype(np.int64), counts - 1)]
        ax.plot(x, y, color="#1b2631", lw=1.0, ls=style, label=f"ok p{int(q * 100)}")


# -- throughput and hit rate -----------------------------------------------------------------
def rates_plot(d: HistoryData) -> Plot:
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True, height_ratios=(3, 2))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.1, hspace=0.12)
    w = bin_width(d.t_end)
    nb = int(np.ceil(max(d.t_end, w) / w)) + 1
    x = (np.arange(nb) + 0.5) * w
    b = np.minimum((d.t1 // w).astype(np.int64), nb - 1) if d.n else np.zeros(0, dtype=np.int64)
    for fi, fname in enumerate(d.f_names):
        sel = (d.f == fi) & (d.type == OK)
        ax.plot(x, np.bincount(b[sel], minlength=nb) / w, lw=1.2, label=f"{fname} ok")
    bad = d.type != OK
    if bad.any():
        ax.plot(x, np.bincount(b[bad], minlength=nb) / w, lw=1.0, color=TYPE_COLORS[FAIL],
                label="fail + info")
    ax.set_ylabel("completions / s")
    ax.set_title(f"Throughput (bins of {w:g} s) and cache hit rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=7, ncol=4)
    shade_faults(ax, d)
    mark_phases(ax, d)
    reported = (d.hit >= 0) & (d.type == OK)
    if reported.any():
        hits = np.bincount(b[reported], weights=(d.hit[reported] == 1), minlength=nb)
        tot = np.bincount(b[reported], minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(tot > 0, hits / np.maximum(tot, 1), np.nan)
        ax2.plot(x, rate * 100, color="#27ae60", lw=1.2, label="hit rate")
        ax2.set_ylim(-2, 102)
    else:
        ax2.text(0.5, 0.5, "no op reported cache hits or misses", transform=ax2.transAxes, ha="center",
                 color="#777")
    ax2.set_ylabel("cache hit rate (%)")
    ax2.set_xlabel("time since run start (s)")
    ax2.grid(True, alpha=0.3)
    shade_faults(ax2, d, label=False)
    ax2.set_xlim(0, max(d.t_end, 1e-3) * 1.01)
    return Plot("rates", "Throughput and hit rate", to_png(fig), [f"rates binned in {w:g} s windows"])


# -- staleness -------------------------------------------------------------------------------
@dataclass
class Staleness:
    reads: int  # versioned ok reads that had a committed write before them
    stale: int
    ages_ms: np.ndarray  # per stale read: time since the value it returned was overwritten
    delta_ms: np.ndarray  # per read: time since the newest committed write completed
    fresh: np.ndarray  # per read: it saw that write (or newer)
    source: str  # "history" or "checker"
    curve: list[tuple[float, float]] | None = None  # checker-provided t-visibility (ms, p)


def compute_staleness(d: HistoryData) -> Staleness:
    """Per key: which reads saw the newest write committed before they began, and, for those that
    did not, how long ago the value they returned had been overwritten. Vectorised over all keys
    (keys become offsets on the time axis, so one searchsorted serves every key)."""
    empty = np.zeros(0)
    fi_read = d.f_names.index("read") if "read" in d.f_names else -1
    fi_write = d.f_names.index("write") if "write" in d.f_names else -1
    has_v = ~np.isnan(d.version)
    wm = (d.f == fi_write) & (d.type == OK) & has_v
    rm = (d.f == fi_read) & (d.type == OK) & has_v
    if fi_read < 0 or fi_write < 0 or not wm.any() or not rm.any():
        return Staleness(0, 0, empty, empty, np.zeros(0, dtype=bool), "history")
    span = float(max(d.t_end, d.t1.max(initial=0.0))) + 1.0
    wk, wt, wv = d.key[wm].astype(np.float64), d.t1[wm], d.version[wm]
    rk, rt, rv = d.key[rm].astype(np.float64), d.t0[rm], d.version[rm]
    # newest committed version per key as of each read: writes sorted by (key, completion time)
    o = np.lexsort((wt, wk))
    wk_o, wt_o, wv_o = wk[o], wt[o], wv[o]
    vmax = float(np.nanmax(wv)) + 1.0
    cum = np.maximum.accumulate(wk_o * vmax + wv_o) - wk_o * vmax  # running max within each key
    first = np.r_[True, (cum[1:] != cum[:-1]) | (wk_o[1:] != wk_o[:-1])]
    since = np.maximum.accumulate(np.where(first, np.arange(len(cum)), 0))
    t_latest = wt_o[since]  # when the newest version (so far) completed
    pos = np.searchsorted(wk_o * span + wt_o, rk * span + rt, side="right") - 1
    valid = pos >= 0
    valid[valid] = wk_o[pos[valid]] == rk[valid]
    pos_v = pos[valid]
    latest = cum[pos_v]
    fresh = rv[valid] >= latest
    delta_ms = (rt[valid] - t_latest[pos_v]) * 1e3
    # age of each stale read: earliest completion among writes with a newer version than it saw
    o2 = np.lexsort((wv, wk))
    wk2, wv2, wt2 = wk[o2], wv[o2], wt[o2]
    rev_group = (wk2.max() - wk2)[::-1] * span
    sufmin = (rev_group - np.maximum.accumulate(rev_group - wt2[::-1]))[::-1]
    st = ~fresh
    srk, srv, srt = rk[valid][st], rv[valid][st], rt[valid][st]
    j = np.searchsorted(wk2 * vmax + wv2, srk * vmax + srv, side="right")
    ok = (j < len(wk2))
    ok[ok] = wk2[j[ok]] == srk[ok]
    ages = np.maximum((srt[ok] - sufmin[j[ok]]) * 1e3, 0.0)
    return Staleness(int(valid.sum()), int(st.sum()), ages, delta_ms, fresh, "history")


def staleness_from_checker(result: dict[str, Any] | None) -> tuple[list[tuple[float, float]] | None,
                                                                    np.ndarray | None]:
    """A t-visibility curve and stale intervals from the staleness checker's result, if it has them
    (field names tried generically: t_visibility / visibility, stale_intervals_ms / intervals_ms)."""
    if not isinstance(result, dict):
        return None, None
    curve = None
    for name in ("t_visibility", "visibility", "t_visibility_ms"):
        raw = result.get(name)
        pts: list[tuple[float, float]] = []
        if isinstance(raw, dict):
            raw = raw.get("points") or raw.get("curve") or [
                [k, v] for k, v in raw.items() if _num(k) is not None and _num(v) is not None]
        if isinstance(raw, list):
            for p in raw:
                if isinstance(p, (list, tuple)) and len(p) >= 2:
                    t, q = _num(p[0]), _num(p[1])
                elif isinstance(p, dict):
                    t = _num(p.get("t_ms", p.get("ms", p.get("t"))))
                    q = _num(p.get("p", p.get("fraction", p.get("prob"))))
                else:
                    continue
                if t is not None and q is not None:
                    pts.append((t, q))
        if pts:
            curve = sorted(pts)
            break
    intervals = None
    for name in ("stale_intervals_ms", "intervals_ms", "stale_intervals", "staleness_ms"):
        raw = result.get(name)
        if isinstance(raw, list) and raw:
            vals = [_num(x.get("ms", x.get("duration_ms")) if isinstance(x, dict) else x) for x in raw]
            arr = np.array([v for v in vals if v is not None], dtype=np.float64)
            if len(arr):
                intervals = arr
                break
    return curve, intervals


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def staleness_plot(d: HistoryData, st: Staleness, bound_ms: float | None = None) -> Plot:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.15, wspace=0.22)
    notes = []
    if st.curve:
        xs, ps = zip(*st.curve, strict=False)
        ax.plot(xs, np.array(ps) * (100 if max(ps) <= 1.0 else 1), marker="o", ms=3, color="#2e86de")
        if min(xs) > 0:
            ax.set_xscale("log")
        notes.append("t-visibility curve from the staleness checker")
    elif len(st.delta_ms):
        dm = np.maximum(st.delta_ms, 1e-3)
        edges = np.logspace(np.log10(max(dm.min(), 1e-2)), np.log10(max(dm.max(), 1e-1)) + 1e-9, 40)
        idx = np.clip(np.searchsorted(edges, dm, side="right") - 1, 0, len(edges) - 2)
        n = np.bincount(idx, minlength=len(edges) - 1)
        f = np.bincount(idx, weights=st.fresh, minlength=len(edges) - 1)
        good = n >= 5
        mids = np.sqrt(edges[:-1] * edges[1:])
        if good.any():
            ax.plot(mids[good], 100 * f[good] / n[good], marker="o", ms=3, color="#2e86de")
            ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, f"no data to draw: {len(dm):,} versioned read(s) after a write,\n"
                    "too few for a point (5 per bin)", transform=ax.transAxes, ha="center", va="center",
                    color="#777")
            notes.append(f"t-visibility: no data to draw ({len(dm):,} versioned read(s) after a write; "
                         "a point needs 5 in its bin)")
        ax.set_ylim(-2, 102)
    else:
        ax.text(0.5, 0.5, "no data: no versioned reads and writes", transform=ax.transAxes, ha="center",
                color="#777")
        notes.append("t-visibility: no data to draw (no versioned reads after a committed write)")
    ax.set_xlabel("time since the newest write committed (ms" + (", log)" if ax.get_xscale() == "log" else ")"))
    ax.set_ylabel("reads that saw it (%)")
    ax.set_title("t-visibility")
    ax.grid(True, alpha=0.3)
    ages = st.ages_ms
    if len(ages):
        a = np.maximum(ages, 1e-2)
        lo, hi = float(a.min()), float(a.max())
        if hi < lo * 1.5:  # one value, or all alike: bins wide enough to be seen
            lo, hi = lo / 1.5, hi * 1.5
        bins = np.logspace(np.log10(lo), np.log10(hi) + 1e-6, 30)
        ax2.hist(a, bins=bins, color="#e67e22", alpha=0.85)
        ax2.set_xscale("log")
        p50, p99, mx = np.percentile(a, [50, 99, 100])
        ax2.set_title(f"Stale reads: {len(ages):,} (p50 {p50:.3g} ms, p99 {p99:.3g} ms, max {mx:.3g} ms)",
                      fontsize=10)
        if bound_ms:
            ax2.axvline(bound_ms, color="#c0392b", ls="--", lw=1)
            ax2.text(bound_ms, 0.95, f"bound {bound_ms:g} ms ", color="#c0392b", fontsize=7, ha="right",
                     transform=blended_transform_factory(ax2.transData, ax2.transAxes), va="top")
    else:
        ax2.text(0.5, 0.5, "no stale reads", transform=ax2.transAxes, ha="center", color="#27ae60",
                 fontsize=12)
        ax2.set_title("Stale reads")
    ax2.set_xlabel("staleness: time since the value read was overwritten (ms, log)")
    ax2.set_ylabel("reads")
    ax2.grid(True, alpha=0.3)
    return Plot("staleness", "Staleness", to_png(fig), notes)


# -- anomaly timelines -----------------------------------------------------------------------
ROLE_STYLE = {"culprit": ("#c0392b", "bold"), "context": ("#6c3483", "bold"), "op": ("#333", "normal")}
MAX_TIMELINE_ROWS = 14


def timeline_rows(rows: list[dict[str, Any]], limit: int = MAX_TIMELINE_ROWS) -> list[dict[str, Any]]:
    """At most ``limit`` rows, in time order, never dropping the culprit or the context ops."""
    if len(rows) <= limit:
        return rows
    keep = [r for r in rows if r.get("role") in ("culprit", "context")][:limit]
    rest = [r for r in rows if r.get("role") not in ("culprit", "context")]
    chosen = {id(r) for r in keep + rest[: limit - len(keep)]}
    return [r for r in rows if id(r) in chosen]


def anomaly_plot(d: HistoryData, n: int, anomaly: dict[str, Any], rows: list[dict[str, Any]]) -> Plot:
    """A small timeline of the ops behind one anomaly: one bar per op, invoke to completion.

    Like Porcupine's picture, it shows what makes the op an anomaly: the op that cannot be explained
    (red label), the writes that rule it out (``context`` rows, purple label, with the checker's
    words for their role) and the last linearizable state."""
    rows = timeline_rows(rows)
    height = 0.45 * len(rows) + 1.5
    fig, ax = plt.subplots(figsize=(11, height))
    fig.subplots_adjust(left=0.16, right=0.98, top=1 - 0.6 / height, bottom=0.65 / height)
    tmin = min(r["t0"] for r in rows)
    tmax = max(r["t1"] for r in rows)
    span = max(tmax - tmin, 0.0005)
    pad = max(span * 0.08, 0.0005)
    for y, r in enumerate(rows):
        color = TYPE_COLORS.get({"ok": OK, "fail": FAIL}.get(r["type"], INFO), "#999")
        t1 = max(r["t1"], r["t0"] + span * 0.004)  # a 50 µs op next to one 2 s earlier stays visible
        ax.plot([r["t0"], t1], [y, y], color=color, lw=6, solid_capstyle="butt")
        ax.plot([r["t0"]], [y], marker="|", color="#333", ms=10)
        role = r.get("role", "op")
        text = "  " + r["summary"] + (f"  ← {r['role_text']}" if r.get("role_text") else "")
        ax.text(t1, y, text, va="center", fontsize=8, color=ROLE_STYLE.get(role, ROLE_STYLE["op"])[0])
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows, strict=False):
        color, weight = ROLE_STYLE.get(r.get("role", "op"), ROLE_STYLE["op"])
        tick.set_color(color)
        tick.set_fontweight(weight)
    ax.invert_yaxis()
    ax.set_xlim(tmin - pad, tmax + pad + (tmax - tmin + pad) * 0.6)
    ax.set_ylim(len(rows) - 0.4, -0.9)
    shade_faults(ax, d, lo=tmin - pad, hi=tmax + pad)
    ax.set_xlabel("time since run start (s)")
    ax.set_title(f"Anomaly {n}: {anomaly.get('type', '?')} on key {anomaly.get('key', '?')}", fontsize=10)
    if anomaly.get("last_state") is not None:
        ax.text(0.005, 0.965, f"last linearizable state: {anomaly.get('key', '?')} = {anomaly['last_state']}"
                f" (after {anomaly.get('prefix_length', '?')} ops)", transform=ax.transAxes, ha="left",
                va="top", fontsize=8, color=ROLE_STYLE["context"][0],
                bbox={"boxstyle": "round,pad=0.25", "fc": "#f4ecf7", "ec": "#c39bd3", "lw": 0.8})
    ax.grid(True, axis="x", alpha=0.3)
    drawn = [int(r["inv"].get("index")) for r in rows if isinstance(r["inv"].get("index"), int)]
    return Plot(f"anomaly-{n}", f"Anomaly {n}", to_png(fig), drawn=drawn)
