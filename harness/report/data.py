"""One pass over a stored history into numpy columns: what every plot of the report is drawn from.

Why a reader of its own: the report must render a million-op history in seconds, so it cannot keep
a million dicts around (a gigabyte) nor re-walk them per plot. This reader streams the file once
(orjson per line), pairs each completion with its invoke by process, and keeps only flat columns
(times, type, f, key, version, hit) plus the few full op records that anomalies point at. Nemesis
ops become fault windows (``start``/``stop`` pairs with the fault's ``name`` and ``color``) and
phase marks. A torn last line (a killed run) is ignored, like the checkers do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

OK, FAIL, INFO = 0, 1, 2
TYPE_CODE = {"ok": OK, "fail": FAIL, "info": INFO}
TYPE_NAMES = ("ok", "fail", "info")


@dataclass
class FaultWindow:
    name: str
    color: str
    start: float  # seconds since run start
    stop: float | None  # None: never stopped in the history (run killed)
    kind: str = ""
    verified: bool | None = None
    observed: str = ""


@dataclass
class HistoryData:
    """Client ops as completed pairs (one row per completion; open invokes become ``info``)."""

    t0: np.ndarray  # invoke time, s
    t1: np.ndarray  # completion time, s
    type: np.ndarray  # int8: OK/FAIL/INFO
    f: np.ndarray  # int16 index into f_names
    key: np.ndarray  # int32 index into key_names
    version: np.ndarray  # float64, nan when absent
    hit: np.ndarray  # int8: 1 hit, 0 miss, -1 not reported
    final: np.ndarray  # bool: a final read (after heal)
    process: np.ndarray  # int64 (-1 when not an int)
    f_names: list[str]
    key_names: list[str]
    faults: list[FaultWindow]
    phases: dict[str, float]  # phase name -> start time, s
    n_ops: int  # records in the file, nemesis included
    t_end: float
    ops: dict[int, dict[str, Any]] = field(default_factory=dict)  # wanted index -> record
    pair: dict[int, int] = field(default_factory=dict)  # wanted index -> its invoke/completion index

    @property
    def n(self) -> int:
        return len(self.t0)

    def latency(self) -> np.ndarray:
        return self.t1 - self.t0


def load(path: str | Path, wanted: Iterable[int] = ()) -> HistoryData:
    """Read ``path`` once. ``wanted``: history indexes whose full records (and pairs) to keep."""
    want = set(int(i) for i in wanted)
    cols = _Columns()
    faults: list[FaultWindow] = []
    phases: dict[str, float] = {}
    kept: dict[int, dict[str, Any]] = {}
    pair: dict[int, int] = {}
    n_ops, t_last, pending = _read_pairs(path, want, cols, faults, phases, kept, pair)
    _add_unfinished(pending.values(), t_last, want, cols, kept)
    t_end = _close_windows(faults, phases, t_last)
    return HistoryData(**cols.arrays(), f_names=[str(f) for f in cols.f_codes],
                       key_names=[str(k) for k in cols.k_codes], faults=faults, phases=phases, n_ops=n_ops,
                       t_end=t_end, ops=kept, pair=pair)


class _Columns:
    """The growing columns of ``HistoryData`` (one row per op), and the codes given to f and key names."""

    def __init__(self) -> None:
        self.t0: list[float] = []
        self.t1: list[float] = []
        self.ty: list[int] = []
        self.fl: list[int] = []
        self.kl: list[int] = []
        self.ver: list[float] = []
        self.hit: list[int] = []
        self.fin: list[bool] = []
        self.proc: list[int] = []
        self.f_codes: dict[Any, int] = {}
        self.k_codes: dict[Any, int] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"t0": np.asarray(self.t0, dtype=np.float64), "t1": np.asarray(self.t1, dtype=np.float64),
                "type": np.asarray(self.ty, dtype=np.int8), "f": np.asarray(self.fl, dtype=np.int16),
                "key": np.asarray(self.kl, dtype=np.int32), "version": np.asarray(self.ver, dtype=np.float64),
                "hit": np.asarray(self.hit, dtype=np.int8), "final": np.asarray(self.fin, dtype=bool),
                "process": np.asarray(self.proc, dtype=np.int64)}


def _records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of the history file, one per line; a blank line or the torn last line of a killed
    run is skipped, any other line that is not JSON is an error naming it."""
    loads = orjson.loads
    n = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                op = loads(raw)
            except orjson.JSONDecodeError:
                if raw.strip() and raw.endswith(b"\n"):
                    raise ValueError(f"{path}: line {n + 1} is not valid JSON") from None
                continue  # a blank line, or the torn tail of a killed run
            n += 1
            yield op


def _read_pairs(path: str | Path, want: set[int], cols: _Columns, faults: list[FaultWindow],
                phases: dict[str, float], kept: dict[int, dict[str, Any]],
                pair: dict[int, int]) -> tuple[int, float, dict[Any, dict[str, Any]]]:
    """The one pass: a row in ``cols`` per completion paired with its process's invoke, nemesis
    records into ``faults`` and ``phases``, the ``want``ed records into ``kept`` and ``pair``.
    Returns the number of records, the last completion time and the invokes left open."""
    t0, t1, ty, fl, kl = cols.t0, cols.t1, cols.ty, cols.fl, cols.kl
    ver, hit, fin, proc = cols.ver, cols.hit, cols.fin, cols.proc
    f_codes, k_codes = cols.f_codes, cols.k_codes
    pending: dict[Any, dict[str, Any]] = {}
    open_faults: dict[str, list[FaultWindow]] = {}
    n_ops = 0
    t_last = 0.0
    nan = float("nan")
    tcode = TYPE_CODE
    for op in _records(path):
        n_ops += 1
        p = op.get("process")
        if p == "nemesis":
            _nemesis(op, faults, open_faults, phases)
            continue
        typ = op.get("type")
        if typ == "invoke":
            pending[p] = op
            continue
        inv = pending.pop(p, None)
        if inv is None:
            continue  # a completion without its invoke: nothing to draw it from
        t_done = op.get("time_ns", 0) / 1e9
        t0.append(inv.get("time_ns", 0) / 1e9)
        t1.append(t_done)
        if t_done > t_last:
            t_last = t_done
        ty.append(tcode.get(typ, INFO))
        f = op.get("f")
        c = f_codes.get(f)
        if c is None:
            c = f_codes[f] = len(f_codes)
        fl.append(c)
        k = op.get("key")
        if k.__class__ is not str and k is not None:
            k = str(k)
        c = k_codes.get(k)
        if c is None:
            c = k_codes[k] = len(k_codes)
        kl.append(c)
        v = op.get("version")
        ver.append(v if v.__class__ is int or v.__class__ is float else nan)
        h = op.get("hit")
        hit.append(-1 if h is None else (1 if h else 0))
        fin.append(op.get("phase") == "final")
        proc.append(p if p.__class__ is int else -1)
        if want:
            ii, ci = inv.get("index"), op.get("index")
            if ii in want or ci in want:
                kept[ii] = inv
                kept[ci] = op
                pair[ii] = ci
                pair[ci] = ii
    return n_ops, t_last, pending


def _add_unfinished(invokes: Iterable[dict[str, Any]], t_last: float, want: set[int], cols: _Columns,
                    kept: dict[int, dict[str, Any]]) -> None:
    """Invokes that never completed (killed run): indeterminate rows, open until the end."""
    for inv in invokes:
        t = inv.get("time_ns", 0) / 1e9
        cols.t0.append(t)
        cols.t1.append(max(t, t_last))
        cols.ty.append(INFO)
        cols.fl.append(cols.f_codes.setdefault(inv.get("f"), len(cols.f_codes)))
        cols.kl.append(cols.k_codes.setdefault(str(inv.get("key")), len(cols.k_codes)))
        cols.ver.append(float("nan"))
        cols.hit.append(-1)
        cols.fin.append(inv.get("phase") == "final")
        p = inv.get("process")
        cols.proc.append(p if isinstance(p, int) else -1)
        if inv.get("index") in want:
            kept[inv["index"]] = inv


def _close_windows(faults: list[FaultWindow], phases: dict[str, float], t_last: float) -> float:
    """The end of the history (its last time of any kind); a fault window never stopped in it closes
    at heal, or at that end."""
    t_end = max([t_last, *phases.values(), *(w.stop or w.start for w in faults)] or [0.0])
    for w in faults:
        if w.stop is None:
            w.stop = phases.get("heal", t_end)
    return t_end


def _nemesis(op: dict[str, Any], faults: list[FaultWindow], open_faults: dict[str, list[FaultWindow]],
             phases: dict[str, float]) -> None:
    t = op.get("time_ns", 0) / 1e9
    f = op.get("f")
    v = op.get("value")
    if f == "phase":
        phases.setdefault(str(v), t)
        return
    if not isinstance(v, dict):
        v = {"name": str(v)}
    name = str(v.get("name") or v.get("fault") or "fault")
    if f == "start":
        w = FaultWindow(name=name, color=str(v.get("color") or "#95a5a6"), start=t, stop=None,
                        kind=str(v.get("fault", "")))
        faults.append(w)
        open_faults.setdefault(name, []).append(w)
    elif f == "stop":
        stack = open_faults.get(name)
        if stack:
            stack.pop(0).stop = t
    elif f == "probe":
        for w in reversed(faults):
            if w.name == name and w.verified is None:
                w.verified = bool(v.get("verified"))
                w.observed = str(v.get("observed", ""))
                break
