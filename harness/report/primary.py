"""Which Redis node was primary when: a band and a table in the report (topology ``redis=sentinel``).

Why: a failover changes the node that holds the truth mid-run; lost writes and stale reads only make
sense next to when that happened, and a split brain (two nodes answering as master at once) must be
visible as such. The nemesis records a ``primary`` op at the start and at each change (the Sentinels'
quorum answer and the nodes that answer ROLE as master, harness/services/redis_ha.py PrimaryWatch);
this module reads only those lines (a byte filter first: no full parse of a large history).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from harness.report.html import esc

NODE_COLORS = ("#2e86c1", "#28b463", "#d68910", "#8e44ad", "#c0392b")
SPLIT = "#e74c3c"
NONE = "#bdc3c7"


def changes(history: Path) -> list[tuple[float, dict[str, Any]]]:
    """(seconds since run start, {primary, masters, votes}) of every ``primary`` record."""
    out: list[tuple[float, dict[str, Any]]] = []
    if not history.exists():
        return out
    with open(history, "rb") as f:
        for line in f:
            if b'"primary"' not in line:
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if rec.get("process") == "nemesis" and rec.get("f") == "primary" and isinstance(rec.get("value"), dict):
                out.append((rec.get("time_ns", 0) / 1e9, rec["value"]))
    return sorted(out, key=lambda c: c[0])


def _label(v: dict[str, Any]) -> tuple[str, str]:
    """(text, colour) of one epoch: the primary, a split brain, or none agreed."""
    masters = v.get("masters") or []
    if len(masters) >= 2:
        return f"split brain: {' + '.join(masters)} (Sentinels: {v.get('primary') or 'no quorum'})", SPLIT
    if v.get("primary"):
        return str(v["primary"]), ""
    return f"no quorum ({', '.join(masters) or 'no master'})", NONE


def section(run_dir: Path, t_end: float | None = None) -> str:
    """The HTML section, or "" when the run recorded no primary."""
    ch = changes(run_dir / "history.jsonl")
    if not ch:
        return ""
    end = max(t_end or 0.0, ch[-1][0] + 0.001)
    colors: dict[str, str] = {}
    band, rows = [], []
    for i, (t, v) in enumerate(ch):
        nxt = ch[i + 1][0] if i + 1 < len(ch) else end
        text, color = _label(v)
        if not color:
            color = colors.setdefault(text, NODE_COLORS[len(colors) % len(NODE_COLORS)])
        width = max(0.0, (nxt - t) / end * 100)
        band.append(f'<div title="{esc(text)} from {t:.3f} s" style="position:absolute;left:{t / end * 100:.3f}%;'
                    f'width:{width:.3f}%;top:0;bottom:0;background:{color}"></div>')
        rows.append(f'<tr><td class="num">{t:.3f}</td><td><span style="border-left:8px solid {color};'
                    f'padding-left:4px">{esc(text)}</span></td><td>{esc(", ".join(v.get("masters") or []))}</td>'
                    f'<td>{esc(", ".join(f"{s}: {n}" for s, n in (v.get("votes") or {}).items()))}</td></tr>')
    return ('<h3>Primary</h3><p class="note">Which Redis node the Sentinels named as primary, and which nodes '
            'answered ROLE as master, from the run\'s start to its end (two masters: split brain).</p>'
            f'<div id="primary-band" style="position:relative;height:18px;margin:6px 0;background:#eee">'
            f'{"".join(band)}</div><table id="primary"><tr><th>from (s)</th><th>primary</th>'
            f'<th>answering as master</th><th>Sentinels</th></tr>{"".join(rows)}</table>')
