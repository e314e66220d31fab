"""The Knossos conformance corpus: its expected verdicts and how to check one file.

Why this module exists: the conformance tests and the benchmark both walk
``conformance/knossos/expected.csv`` (file, model, initial value, expected verdict) and must
interpret the model and initial columns the same way; this is that one interpretation.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkers import linearizable
from checkers.edn import parse_edn, plain, read_edn_history
from core.ops import clear_memo


@dataclass
class Case:
    file: str
    path: Path
    model: str
    initial: Any
    expected: bool


def locate(start: Path | None = None) -> Path | None:
    """The corpus folder: $CACHECERT_CONFORMANCE, else ../shared/conformance beside the repo, else the
    workplace's /work/shared/conformance (a CI clone may live elsewhere)."""
    env = os.environ.get("CACHECERT_CONFORMANCE")
    cands = [Path(env)] if env else []
    repo = (start or Path(__file__)).resolve().parents[1]
    cands.append((repo / "../shared/conformance").resolve())
    cands.append(Path("/work/shared/conformance"))
    for c in cands:
        for d in (c, c / "knossos"):
            if (d / "expected.csv").is_file():
                return d
    return None


def parse_initial(text: str) -> Any:
    """An EDN initial value (``0``, ``nil``, ``{:x 0 :y 0}``) as a Python value."""
    text = text.strip()
    if not text:
        return None
    forms = parse_edn(text, "<initial>")
    if len(forms) != 1:
        raise ValueError(f"expected one EDN value, got {text!r}")
    return plain(forms[0][0])


def cases(corpus: Path) -> list[Case]:
    out = []
    with open(corpus / "expected.csv", newline="") as f:
        for row in csv.DictReader(f):
            model_col = row["model"].strip()
            model, _, rest = model_col.partition(" ")
            initial: Any = parse_initial(row.get("initial") or "")
            if model == "multi-register":
                initial = parse_initial(rest) if rest.strip() else {}
            elif model == "mutex":
                initial = False
            out.append(Case(row["file"], corpus / row["file"], model, initial, row["expected"].strip() == "valid"))
    return out


def check_case(case: Case, **opts: Any) -> dict[str, Any]:
    history = read_edn_history(case.path)
    try:
        opts.setdefault("empty_ok", True)  # Knossos: a history with nothing to judge is valid
        return linearizable.check(history, model=case.model, initial=case.initial, nil_reads_any=True,
                                  order="index", **opts)
    finally:
        clear_memo()
