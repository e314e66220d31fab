"""The Knossos conformance corpus (its expected verdicts and how to check one file), and generated
etcd-shaped Jepsen histories.

Why this module exists: the conformance tests and the benchmark both walk
``conformance/knossos/expected.csv`` (file, model, initial value, expected verdict) and must
interpret the model and initial columns the same way; this is that one interpretation. The corpus
is small and mostly easy, so the linearizability benchmark and the old-vs-new search comparison
also need histories of the shape that makes the search work — Jepsen's etcd test: 5 clients on
one cas-register over a few values, timeouts recorded as ``info`` (the client then gets a new
process id), bursts of them during a fault. ``etcd_history`` generates those, seeded, from a real
sequential execution (so without ``corrupt_p`` they are linearizable by construction).
"""

from __future__ import annotations

import csv
import os
import random
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


# -- generated etcd-shaped histories ---------------------------------------------------------------

# how a generated history is checked: as Knossos checks Jepsen's own (see check_case)
ETCD_CHECK: dict[str, Any] = {"model": "cas-register", "initial": 0, "nil_reads_any": True, "order": "index",
                              "empty_ok": True}


def etcd_history(n_ops: int, *, seed: int = 0, clients: int = 5, values: int = 5, info_p: float = 0.1,
                 fault: tuple[float, float] = (0.4, 0.6), fault_info_p: float = 0.3, latency: int = 100,
                 corrupt_p: float = 0.0) -> list[dict[str, Any]]:
    """A Jepsen etcd-style history of ``n_ops`` operations (an invoke and a completion each).

    ``clients`` workers each run one op at a time: read, write of 0..``values``-1, or cas [old, new],
    a third each, on one register starting at 0. Every op takes effect at a point inside its
    interval (up to ``latency`` ticks long; ops of different clients overlap), in that order; a cas
    whose old value does not match fails (``fail``). An op times out (``info``, and half of those
    took effect anyway; a read's value is then unknown, nil) with probability ``info_p``, or
    ``fault_info_p`` while the fault is on (``fault``: start and end as fractions of the run); the
    client then continues as a new process (id + ``clients``), as in Jepsen. ``corrupt_p``: a share
    of ok reads return a random value instead (most such histories are not linearizable).
    """
    rng = random.Random(seed)
    state = 0
    free = [0] * clients          # when each client is next free
    proc = list(range(clients))
    events: list[tuple[int, int, dict[str, Any]]] = []
    point = 0
    f_start, f_end = int(fault[0] * n_ops), int(fault[1] * n_ops)
    for n in range(n_ops):
        point += rng.randint(1, max(1, latency // clients))
        c = min(range(clients), key=lambda x: (free[x] >= point, free[x]))
        point = max(point, free[c] + 1)
        t0 = max(free[c] + 1, point - rng.randint(0, latency // 2))
        t1 = point + rng.randint(0, latency // 2)
        r = rng.random()
        f = "read" if r < 1 / 3 else "write" if r < 2 / 3 else "cas"
        v: Any = None if f == "read" else rng.randrange(values) if f == "write" else [rng.randrange(values),
                                                                                        rng.randrange(values)]
        timed_out = rng.random() < (fault_info_p if f_start <= n < f_end else info_p)
        applied = not timed_out or rng.random() < 0.5
        out: Any = v
        if f == "read":
            out, typ = state, "ok"
            if timed_out:
                out, typ = None, "info"
            elif corrupt_p and rng.random() < corrupt_p:
                out = rng.randrange(values)
        elif f == "write":
            if applied:
                state = v
            typ = "info" if timed_out else "ok"
        else:
            matched = state == v[0]
            if matched and applied:
                state = v[1]
            typ = "info" if timed_out else "ok" if matched else "fail"
        p = proc[c]
        events.append((t0, 0, {"process": p, "type": "invoke", "f": f, "value": v}))
        events.append((t1, 1, {"process": p, "type": typ, "f": f, "value": out}))
        free[c] = t1
        if timed_out:
            proc[c] += clients
    events.sort(key=lambda e: (e[0], e[1]))
    return [dict(rec, index=i, time_ns=t * 1_000_000) for i, (t, _, rec) in enumerate(events)]


def etcd_set(count: int = 40, *, seed: int = 0, min_ops: int = 100, max_ops: int = 1000,
             **kw: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """``count`` generated histories, named, sizes spread over [min_ops, max_ops], a third of them with
    corrupted reads: the benchmark's and the comparison test's generated set."""
    out = []
    for j in range(count):
        n = min_ops + (j * (max_ops - min_ops)) // max(1, count - 1)
        corrupt = 0.03 if j % 3 == 2 else 0.0
        out.append((f"etcd-{seed}-{j}-{n}ops{'-corrupt' if corrupt else ''}",
                    etcd_history(n, seed=seed * 100_003 + j, corrupt_p=corrupt, **kw)))
    return out
