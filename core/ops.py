"""Pairing invokes with completions: the one view of a history every checker shares.

Why this module exists: a history is a flat stream of events (invoke, then ok/fail/info), but every
checker reasons about *operations* with an interval [invoke, complete]. Doing the pairing once, in
one place, keeps the checkers consistent with each other (the same op has the same interval, value,
version and flags everywhere) and fast: ``pair`` is one pass over the history, and its result is
memoised so ``run_checkers`` pays for it once even with nine checkers.

Conventions (from core/history.py): a process has one outstanding op; ``info`` and a missing
completion both mean "indeterminate" (complete time = +inf); ``fail`` means "did not happen".
The op's value is the completion's for reads (what was read) and the invoke's for writes (what was
written). Nemesis ops (``process: "nemesis"``) are kept aside as fault windows.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.history import TYPES, HistoryError

INF = math.inf
READ_FS = frozenset({"read"})
WRITE_FS = frozenset({"write"})
EXTRA_FIELDS = ("version", "source", "hit", "db_load", "phase", "node")


class Op:
    """One operation: an invoke and its completion (or none)."""

    __slots__ = ("index", "cindex", "process", "f", "key", "value", "type", "t0", "t1", "version",
                 "source", "hit", "db_load", "phase", "node", "error", "inv", "comp", "final_db")

    index: int          # history index of the invoke
    cindex: int | None  # history index of the completion (None: never completed)
    process: Any
    f: Any
    key: Any
    value: Any
    type: str           # "ok" | "fail" | "info" (a missing completion is "info")
    t0: int             # invoke time, ns
    t1: float           # completion time, ns; +inf for info / no completion
    version: Any
    source: Any
    hit: Any
    db_load: Any
    phase: Any
    node: Any
    error: Any
    inv: dict[str, Any]
    comp: dict[str, Any] | None
    final_db: bool      # a final read of the DB itself (the truth), not through a cache

    def __repr__(self) -> str:
        return (f"Op(#{self.index} p={self.process} {self.type} {self.f} {self.key!r}={self.value!r}"
                f" v={self.version} [{self.t0}, {self.t1}])")

    @property
    def ops(self) -> list[int]:
        """The history indices of this op (invoke, completion)."""
        return [self.index] if self.cindex is None else [self.index, self.cindex]

    @property
    def is_final(self) -> bool:
        return self.phase == "final"


@dataclass
class Fault:
    name: str
    start_ns: int
    stop_ns: float  # +inf if never stopped
    value: Any = None


@dataclass
class Paired:
    ops: list[Op]                                  # in invoke order
    nemesis: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    end_ns: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def by_key(self) -> dict[Any, list[Op]]:
        """Ops grouped by key (invoke order kept). Memoised."""
        got = self._cache.get("by_key")
        if got is None:
            got = {}
            for op in self.ops:
                lst = got.get(op.key)
                if lst is None:
                    got[op.key] = [op]
                else:
                    lst.append(op)
            self._cache["by_key"] = got
        return got

    @property
    def last_fault_stop_ns(self) -> float | None:
        stops = [f.stop_ns for f in self.faults]
        return max(stops) if stops else None


def _where(op: dict[str, Any], pos: int) -> str:
    return f"history op {op.get('index', pos)} (position {pos})"


def pair(history: list[dict[str, Any]] | Iterable[dict[str, Any]], *, strict: bool = True) -> Paired:
    """Pair invokes with completions in one pass.

    ``strict``: a completion without an outstanding invoke, a second invoke on a busy process, or an
    unknown op type raises HistoryError naming the op. Memoised on the list object (one entry).
    """
    if isinstance(history, list):
        hit = _MEMO.get("h")
        if hit is not None and hit[0] is history and hit[1] == len(history) and hit[2] == strict:
            return hit[3]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of new objects, no cycles: spare the collector's rescans
    try:
        return _pair(history, strict)
    finally:
        if gc_was_enabled:
            gc.enable()


def _pair(history: list[dict[str, Any]] | Iterable[dict[str, Any]], strict: bool) -> Paired:
    """The one pass: nemesis records become fault windows, an invoke opens an op on its process, a
    completion closes it; then the final reads of the DB itself are marked."""
    ops: list[Op] = []
    nemesis: list[dict[str, Any]] = []
    outstanding: dict[Any, Op] = {}
    open_faults: dict[str, Fault] = {}
    faults: list[Fault] = []
    end_ns = 0
    valid_types = TYPES
    invoked, complete = _invoked, _complete  # local names: the cheapest lookup in the hot loop
    for pos, h in enumerate(history):
        try:
            t = h["type"]
            proc = h["process"]
            tns = h["time_ns"]
        except (KeyError, TypeError):
            raise HistoryError(f"{_where(h if isinstance(h, dict) else {}, pos)}: not an op record "
                               "(needs type, process, time_ns)") from None
        if tns > end_ns:
            end_ns = tns
        if proc == "nemesis":
            nemesis.append(h)
            _fault_event(h, tns, open_faults, faults)
        elif t == "invoke":
            if proc in outstanding and strict:
                raise HistoryError(f"{_where(h, pos)}: process {proc} invokes while op "
                                   f"{outstanding[proc].index} is still outstanding")
            op = invoked(h, pos, proc, tns)
            outstanding[proc] = op
            ops.append(op)
        elif t in valid_types:
            op = outstanding.pop(proc, None)
            if op is not None:
                complete(op, h, pos, t, tns)
            elif strict:
                raise HistoryError(f"{_where(h, pos)}: {t} completion without an invoke on process {proc}")
        else:
            raise HistoryError(f"{_where(h, pos)}: unknown op type {t!r} "
                               f"(expected one of {', '.join(valid_types)})")
    _mark_final_db(ops)
    out = Paired(ops, nemesis, faults, end_ns)
    if isinstance(history, list):
        _MEMO["h"] = (history, len(history), strict, out)
    return out


def _fault_event(h: dict[str, Any], tns: int, open_faults: dict[str, Fault], faults: list[Fault]) -> None:
    """A nemesis ``start`` opens a fault window, its ``stop`` closes it (matched by the fault's name;
    a nameless stop closes the oldest open window). Other nemesis records are no windows."""
    f = h.get("f")
    if f not in ("start", "stop"):
        return
    v = h.get("value")
    name = (v.get("name") or v.get("fault")) if isinstance(v, dict) else v
    fk = repr(name)
    if f == "start":
        flt = Fault(str(name), tns, INF, v)
        open_faults[fk] = flt
        faults.append(flt)
        return
    flt2 = open_faults.pop(fk, None)
    if flt2 is None and open_faults and name is None:
        flt2 = open_faults.pop(next(iter(open_faults)))
    if flt2 is not None:
        flt2.stop_ns = tns


def _invoked(h: dict[str, Any], pos: int, proc: Any, tns: int) -> Op:
    """The op an invoke opens: indeterminate ("info", complete time +inf) until its completion."""
    op = Op()
    op.index = h.get("index", pos)
    op.cindex = None
    op.process = proc
    op.f = h.get("f")
    op.key = h.get("key")
    op.value = h.get("value")
    op.type = "info"
    op.t0 = tns
    op.t1 = INF
    op.version = h.get("version")
    op.source = h.get("source")
    op.hit = None
    op.db_load = None
    op.phase = h.get("phase")
    op.node = h.get("node")
    op.error = None
    op.inv = h
    op.comp = None
    op.final_db = False
    return op


def _complete(op: Op, h: dict[str, Any], pos: int, t: str, tns: int) -> None:
    """Close ``op`` with its completion ``h`` of type ``t``: the completion's time (unless info), the
    value read (a read's value is the completion's, a write's the invoke's), and what the completion
    reports; version, source, phase and node only when it reports them (else the invoke's stay)."""
    op.cindex = h.get("index", pos)
    op.type = t
    op.comp = h
    if t != "info":
        op.t1 = tns
    if t == "ok" and "value" in h and (op.f in READ_FS or h["value"] is not None or op.f not in WRITE_FS):
        op.value = h["value"]
    g = h.get
    op.hit = g("hit")
    op.db_load = g("db_load")
    op.error = g("error")
    # unrolled on purpose: one loop over the four names with setattr makes pair() ~15% slower
    v = g("version")
    if v is not None:
        op.version = v
    s = g("source")
    if s is not None:
        op.source = s
    ph = g("phase")
    if ph is not None:
        op.phase = ph
    nd = g("node")
    if nd is not None:
        op.node = nd


def _mark_final_db(ops: list[Op]) -> None:
    """A final read of the DB itself (the truth), not through a cache: its invoke says ``source: "db"``,
    or it reports the DB as its source and nothing a cache read reports (hit, db_load, node)."""
    for op in ops:
        if op.phase == "final" and op.f in READ_FS:
            inv_src = op.inv.get("source")
            c = op.comp or {}
            op.final_db = inv_src == "db" or (op.source == "db" and "hit" not in c and "db_load" not in c
                                              and op.node is None)


_MEMO: dict[str, Any] = {}


def clear_memo() -> None:
    _MEMO.clear()


# -- versions ----------------------------------------------------------------------------------------


@dataclass
class KeyVersions:
    """What the history tells about one key's versions.

    ``vof``: value -> version (from write completions and from reads that carry both).
    ``writer``: value -> the write op that wrote it (unique values).
    ``failed``: values whose write certainly failed. ``initial``: the key's initial value (version 0).
    """

    key: Any
    vof: dict[Any, int] = field(default_factory=dict)
    writer: dict[Any, Op] = field(default_factory=dict)
    failed: dict[Any, Op] = field(default_factory=dict)
    writes: list[Op] = field(default_factory=list)   # ok + info writes
    reads: list[Op] = field(default_factory=list)    # ok reads (not final DB truth reads)
    final_db: list[Op] = field(default_factory=list)
    final_cache: list[Op] = field(default_factory=list)


def hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), hashable(x)) for k, x in v.items()))
    return v


def key_versions(paired: Paired, *, initial: Any = None, initial_version: int = 0,
                 read_fs: frozenset[str] = READ_FS, write_fs: frozenset[str] = WRITE_FS) -> dict[Any, KeyVersions]:
    """Per key: value->version map, writers, reads. Memoised per options on ``paired``."""
    ck = f"kv:{initial!r}:{initial_version}:{sorted(read_fs)}:{sorted(write_fs)}"
    got = paired._cache.get(ck)
    if got is not None:
        return got
    out: dict[Any, KeyVersions] = {}
    init_h = hashable(initial)
    for key, kops in paired.by_key().items():
        kv = KeyVersions(key)
        kv.vof[init_h] = initial_version
        for op in kops:
            f = op.f
            if f in write_fs:
                v = hashable(op.value)
                if op.type == "fail":
                    kv.failed[v] = op
                    continue
                kv.writer[v] = op
                kv.writes.append(op)
                if op.version is not None:
                    kv.vof[v] = op.version
            elif f in read_fs and op.type == "ok":
                if op.final_db:
                    kv.final_db.append(op)
                else:
                    kv.reads.append(op)
                    if op.is_final:
                        kv.final_cache.append(op)
        for op in kv.reads + kv.final_db:
            if op.version is not None:
                v = hashable(op.value)
                if v not in kv.vof and v in kv.writer:
                    kv.vof[v] = op.version
        out[key] = kv
    paired._cache[ck] = out
    return out


def read_version(kv: KeyVersions, op: Op) -> int | None:
    """The version a read observed: its own, else its value's (None if unknown)."""
    if op.version is not None:
        return op.version
    return kv.vof.get(hashable(op.value))


# -- words ---------------------------------------------------------------------------------------------


def secs(ns: float) -> str:
    if ns == INF:
        return "never"
    return f"{ns / 1e9:.3f} s"


def ms(ns: float) -> str:
    x = ns / 1e6
    return f"{x:.0f} ms" if abs(x) >= 10 else f"{x:.1f} ms"


def proc_name(p: Any) -> str:
    return f"process {p}"


FINAL_READER = "the final read (after heal)"


def _field(op: Op | dict[str, Any], name: str) -> Any:
    return op.get(name) if isinstance(op, dict) else getattr(op, name, None)


def is_final(op: Op | dict[str, Any]) -> bool:
    """A final-phase op (the reads after heal and quiescence; their process ids start at 1_000_000)."""
    return _field(op, "phase") == "final"


def who(op: Op | dict[str, Any]) -> str:
    """Who did ``op``, in words: "the final read (after heal)" or "process N"."""
    return FINAL_READER if is_final(op) else f"process {_field(op, 'process')}"


def Who(op: Op | dict[str, Any]) -> str:
    """``who`` capitalised, for the start of a sentence."""
    w = who(op)
    return w[0].upper() + w[1:]


def reader(op: Op | dict[str, Any], start: bool = True) -> str:
    """Subject and verb of a read: "Process N read" or "The final read (after heal) returned"."""
    w = Who(op) if start else who(op)
    return f"{w} returned" if is_final(op) else f"{w} read"


def source_words(op: Op) -> str:
    """Where a read's value came from, as a phrase to append: " from the cache", " from the DB" (a
    final read of the DB itself, or an op reporting ``source: "db"``), or "" when not reported."""
    if op.final_db:
        return " from the DB"
    return {"cache": " from the cache", "db": " from the DB"}.get(op.source, "")


def stale_read_words(key: Any, r: Op, vr: Any, w: Op, wv: Any) -> str:
    """The story of read ``r`` (of version ``vr``) that began after write ``w`` (of version ``wv``)
    had completed, up to "a stale read" (the caller ends the sentence)."""
    return (f"{reader(r)} {key} = {vtext(r.value, vr)}{source_words(r)} at {secs(r.t0)}, but the "
            f"write of {vtext(w.value, wv)} by {who(w)} had completed at {secs(w.t1)}, "
            f"{ms(r.t0 - w.t1)} before that read began: a stale read")


# -- nothing to judge -----------------------------------------------------------------------------------

NOTHING_TO_JUDGE = "nothing to judge"


def nothing_to_judge(reason: str, **evidence: Any) -> dict[str, Any]:
    """The verdict of a checker that saw nothing it judges: unknown, never valid. ``reason`` says what
    was missing, in words ("no acknowledged writes"); ``evidence`` carries the usual counts."""
    return {**evidence, "valid": "unknown", "reason": f"{NOTHING_TO_JUDGE}: {reason}"}


def verdict(out: dict[str, Any], anomalies: list[dict[str, Any]], *, invalid: bool, nothing: str | None = None,
            partial: str | None = None) -> dict[str, Any]:
    """Give ``out`` its verdict, in the order every checker follows: ``invalid`` (an anomaly was found
    in what was judged) makes it False with ``anomalies``, whatever else; then ``nothing`` (what was
    missing) makes it unknown, nothing judged; then ``partial`` (what could not be judged) makes it
    unknown with that ``error``; else it is valid."""
    if invalid:
        out["valid"] = False
        out["anomalies"] = anomalies
        return out
    if nothing is not None:
        return nothing_to_judge(nothing, **out)
    if partial is not None:
        out["valid"] = "unknown"
        out["error"] = partial
    else:
        out["valid"] = True
    return out


def tally(counts: dict[str, int], type_: str, kept: list[Any], limit: int) -> bool:
    """Count one anomaly of ``type_``; True while ``kept`` has room (under ``limit``) for its evidence."""
    counts[type_] = counts.get(type_, 0) + 1
    return len(kept) < limit


def vtext(value: Any, version: Any = None) -> str:
    s = "nil" if value is None else repr(value) if isinstance(value, str) else str(value)
    return f"{s} (version {version})" if version is not None else s


def anomaly(type_: str, key: Any, ops: Iterable[Op | int], explanation: str, **extra: Any) -> dict[str, Any]:
    idx: list[int] = []
    for o in ops:
        if isinstance(o, Op):
            idx.extend(o.ops)
        else:
            idx.append(o)
    return {"type": type_, "key": key, "ops": sorted(set(idx)), "explanation": explanation, **extra}


# -- cooperative deadlines (run_checkers sets one per checker thread) ----------------------------------

import threading as _threading  # noqa: E402
import time as _time  # noqa: E402


class CheckerTimeout(Exception):
    """Raised by ``check_deadline`` when the running checker passed its time limit."""


_DEADLINE = _threading.local()


def set_deadline(t_monotonic: float) -> None:
    _DEADLINE.t = t_monotonic


def clear_deadline() -> None:
    _DEADLINE.t = None


def check_deadline() -> None:
    """Call in long loops: raises CheckerTimeout once this thread's deadline has passed."""
    t = getattr(_DEADLINE, "t", None)
    if t is not None and _time.monotonic() > t:
        raise CheckerTimeout()
