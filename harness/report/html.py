"""Small HTML building blocks shared by the run report, the certification matrix and compare pages.

Why: every page must be one self-contained file that opens offline (no CDN, no script): inline
CSS, images as base64 data URIs. Everything user-controlled goes through ``esc``.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from core.verdict import Verdict

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1c2833;background:#fafbfc}
main{max-width:1180px;margin:0 auto;padding:0 18px 40px}
h1{font-size:20px;margin:18px 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:16px 0 6px}
.banner{padding:14px 18px;color:#fff;font-size:22px;font-weight:700;letter-spacing:.02em}
.banner small{display:block;font-size:13px;font-weight:400;opacity:.95}
.banner small.why{font-weight:600;margin-top:2px}
.v-valid{background:#1e8449}.v-invalid{background:#c0392b}.v-unknown{background:#b9770e}
.tag{display:inline-block;padding:1px 7px;border-radius:3px;color:#fff;font-weight:600;font-size:12px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
td,th{border:1px solid #d5d8dc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef1f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f2f4;border-radius:3px}
pre{padding:8px 10px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
img{max-width:100%;border:1px solid #e5e8ea;background:#fff}
.note{color:#566573;font-size:12px}
.explanation{background:#fdf2e9;border-left:4px solid #e67e22;padding:6px 10px;margin:6px 0}
.fault-band{display:inline-block;padding:1px 6px;border-radius:3px;margin:1px 3px 1px 0;font-size:12px}
.matrix td{text-align:center;min-width:78px}
.matrix td a{color:inherit;text-decoration:none;display:block}
.c-pass{background:#d5f5e3}.c-fail{background:#fadbd8;font-weight:700}.c-unknown{background:#fdebd0}
.c-na{background:#f4f6f7;color:#aab7b8}
details summary{cursor:pointer;color:#2471a3}
"""

# the colour class of each verdict (.v-valid / .v-invalid / .v-unknown in CSS); the words are Verdict's
VERDICT_CLASS = {Verdict.VALID: "valid", Verdict.INVALID: "invalid", Verdict.UNKNOWN: "unknown"}


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def verdict_class(valid: Any) -> str:
    """The CSS class of a verdict (any JSON verdict value or Verdict)."""
    return VERDICT_CLASS[Verdict.of(valid)]


def tag(valid: Any, text: str | None = None) -> str:
    """A coloured label; its text is the verdict's short word unless ``text`` is given."""
    cls = verdict_class(valid)
    word = text or Verdict.of(valid).short
    return f'<span class="tag v-{cls}" data-verdict="{cls}">{esc(word)}</span>'


def img(png: bytes, alt: str, ops: list[int] | None = None) -> str:
    """An inline PNG; ``ops``: the history indexes it draws (``data-ops``, for readers and tests)."""
    drawn = f' data-ops="{" ".join(str(i) for i in ops)}"' if ops else ""
    return f'<img alt="{esc(alt)}"{drawn} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{CSS}</style></head>'
            f'<body>{body}</body></html>\n')


def short(x: Any, limit: int = 160) -> str:
    s = x if isinstance(x, str) else json.dumps(x, default=str, separators=(",", ":"))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def kv_table(rows: list[tuple[str, Any]]) -> str:
    if not rows:
        return ""
    out = ["<table>"]
    for k, v in rows:
        cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        out.append(f"<tr><th>{esc(k)}</th><td{cls}>{esc(fmt(v))}</td></tr>")
    out.append("</table>")
    return "".join(out)


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "–"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return short(v)
