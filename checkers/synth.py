"""Synthetic cache histories from a real sequential execution, and anomaly injection.

Why this module exists: the checkers need histories whose verdict is known by construction — for
property tests (Hypothesis) and for the benchmarks (a 1M-op history over 10k keys). ``generate``
runs a sequential register execution (each op takes effect at a linearization point), then widens
every op's interval randomly around its point while keeping each process sequential: the result is
linearizable, has unique write values and DB versions, cache/DB flags, final reads, and optional
indeterminate (``info``) and failed writes. The ``inject_*`` functions then plant one known anomaly.
"""

from __future__ import annotations

import copy
import random
from typing import Any

FINAL_PROCESS = 1_000_000


def generate(n_ops: int = 200, *, keys: int = 3, processes: int = 4, write_p: float = 0.3,
             widen_ns: int = 5_000_000, step_ns: int = 1_000_000, info_p: float = 0.0, fail_p: float = 0.0,
             hit_p: float = 0.7, serial_writes: bool = False, fields: tuple[str, ...] | None = None,
             fault: tuple[float, float] | None = None, seed: int = 0, final: bool = True) -> list[dict[str, Any]]:
    """A linearizable history of ``n_ops`` operations (2 records each, plus final reads).

    ``serial_writes``: writes to one key never overlap in real time (their version order is then
    forced by real time). ``fields``: write multi-field objects {field: w} (integrity workloads).
    ``fault``: (start, stop) as fractions of the run: one nemesis fault window.
    """
    rng = random.Random(seed)
    rand = rng.random
    randint = rng.randint
    keynames = [f"k{i}" for i in range(keys)]
    value: dict[str, Any] = dict.fromkeys(keynames)
    version: dict[str, int] = dict.fromkeys(keynames, 0)
    last_write_t1: dict[str, tuple[list[Any], int]] = {}
    slots = list(range(processes))
    last_t1 = [0] * processes
    next_pid = processes
    recs: list[list[Any]] = []  # [time, order, record]
    L = 0
    counter = 0
    for _ in range(n_ops):
        L += randint(1, step_ns)
        free = [s for s in range(processes) if last_t1[s] < L]
        if not free:
            s = min(range(processes), key=lambda x: last_t1[x])
            L = last_t1[s] + 1
        else:
            s = free[int(rand() * len(free))]
        pid = slots[s]
        key = keynames[int(rand() * keys)]
        t0 = max(last_t1[s] + 1, L - randint(0, widen_ns))
        t1 = L + randint(0, widen_ns)
        is_write = rand() < write_p
        inv: dict[str, Any] = {"process": pid, "type": "invoke", "f": "write" if is_write else "read", "key": key}
        comp: dict[str, Any] = {"process": pid, "f": inv["f"], "key": key}
        if is_write:
            if serial_writes:
                prev = last_write_t1.get(key)
                if prev is not None:
                    prev_rec, prev_l = prev
                    if prev_rec[0] >= L:  # pull the previous write's completion back before this point
                        prev_rec[0] = (prev_l + L) // 2
                    t0 = max(t0, prev_rec[0] + 1)
            counter += 1
            w = counter
            v: Any = {f: w for f in fields} if fields else w
            inv["value"] = v
            comp["value"] = v
            r = rand()
            if r < fail_p:
                comp["type"] = "fail"
                comp["error"] = "synthetic failure"
            elif r < fail_p + info_p:
                comp["type"] = "info"
                comp["error"] = "timeout"
                if rand() < 0.5:
                    version[key] += 1
                    value[key] = v
            else:
                version[key] += 1
                value[key] = v
                comp["type"] = "ok"
                comp["version"] = version[key]
        else:
            inv["value"] = None
            if rand() < info_p:
                comp["type"] = "info"
                comp["value"] = None
                comp["error"] = "timeout"
            else:
                hit = rand() < hit_p
                comp.update(type="ok", value=copy.copy(value[key]) if fields else value[key], version=version[key],
                            source="cache" if hit else "db", hit=hit)
                if not hit:
                    comp["db_load"] = True
        inv_rec = [t0, 0, inv]
        comp_rec = [t1, 1, comp]
        recs.append(inv_rec)
        recs.append(comp_rec)
        if is_write and serial_writes:
            last_write_t1[key] = (comp_rec, L)
        last_t1[s] = t1
        if comp["type"] == "info":
            slots[s] = next_pid
            next_pid += 1
    recs.sort(key=lambda r: (r[0], r[1]))
    out: list[dict[str, Any]] = []
    t_prev = -1
    if fault is not None and recs:
        end = recs[-1][0]
        fs, fe = int(end * fault[0]), int(end * fault[1])
        recs.append([fs, 2, {"process": "nemesis", "type": "info", "f": "start",
                             "value": {"fault": "latency", "name": "latency(redis)"}}])
        recs.append([fe, 2, {"process": "nemesis", "type": "info", "f": "stop",
                             "value": {"fault": "latency", "name": "latency(redis)"}}])
        recs.sort(key=lambda r: (r[0], r[1]))
    for t, _, rec in recs:
        t = max(int(t), t_prev + 1)
        t_prev = t
        rec["time_ns"] = t
        rec["index"] = len(out)
        out.append(rec)
    if final:
        t = t_prev + 1_000_000
        out.append({"process": "nemesis", "type": "info", "f": "phase", "value": "final",
                    "time_ns": t, "index": len(out)})
        for key in keynames:
            for proc, extra in ((FINAL_PROCESS, {"node": 0}), (FINAL_PROCESS + 999, {"source": "db"})):
                t += 1000
                out.append({"process": proc, "type": "invoke", "f": "read", "key": key, "value": None,
                            "phase": "final", "time_ns": t, "index": len(out), **extra})
                t += 1000
                c = {"process": proc, "type": "ok", "f": "read", "key": key, "value": value[key],
                     "version": version[key], "phase": "final", "time_ns": t, "index": len(out), **extra}
                if proc == FINAL_PROCESS:
                    c.update(source="cache", hit=True)
                out.append(c)
        out.append({"process": "nemesis", "type": "info", "f": "phase", "value": "done",
                    "time_ns": t + 1000, "index": len(out)})
    return out


def _completions(h: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """invoke index -> completion record."""
    out: dict[int, dict[str, Any]] = {}
    open_: dict[Any, int] = {}
    for i, r in enumerate(h):
        if r["process"] == "nemesis":
            continue
        if r["type"] == "invoke":
            open_[r["process"]] = i
        else:
            out[open_.pop(r["process"])] = r
    return out


def _write_info(h: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[Any, int]]:
    """(key, version) -> (value, ack time) for acked writes."""
    out = {}
    for r in h:
        if r.get("f") == "write" and r["type"] == "ok" and r.get("version") is not None:
            out[(r["key"], r["version"])] = (r["value"], r["time_ns"])
    return out


def inject_stale_read(h: list[dict[str, Any]], rng: random.Random) -> tuple[list[dict[str, Any]], int] | None:
    """Make one read return the previous version although the newer write was acked before it began.
    Returns (history, index of the read's invoke) or None if no read qualifies."""
    h = copy.deepcopy(h)
    comps = _completions(h)
    writes = _write_info(h)
    cands = []
    for i, c in comps.items():
        inv = h[i]
        if c["f"] != "read" or c["type"] != "ok" or c.get("phase") == "final":
            continue
        v = c.get("version") or 0
        w = writes.get((c["key"], v))
        if v >= 1 and w is not None and w[1] < inv["time_ns"]:
            cands.append((i, c, v))
    if not cands:
        return None
    i, c, v = cands[int(rng.random() * len(cands))]
    prev = writes.get((c["key"], v - 1))
    if v - 1 == 0:
        c["value"], c["version"] = None, 0
    elif prev is not None:
        c["value"], c["version"] = prev[0], v - 1
    else:
        return None
    return h, i


def inject_garbage_read(h: list[dict[str, Any]], rng: random.Random) -> tuple[list[dict[str, Any]], int] | None:
    h = copy.deepcopy(h)
    comps = _completions(h)
    cands = [(i, c) for i, c in comps.items() if c["f"] == "read" and c["type"] == "ok" and c.get("phase") != "final"]
    if not cands:
        return None
    i, c = cands[int(rng.random() * len(cands))]
    c["value"] = -7_777_777
    c.pop("version", None)
    return h, i


def inject_lost_write(h: list[dict[str, Any]], rng: random.Random) -> tuple[list[dict[str, Any]], str] | None:
    """Make the final DB read of one key return the version before its last acked write."""
    h = copy.deepcopy(h)
    writes = _write_info(h)
    finals = [r for r in h if r.get("phase") == "final" and r["type"] == "ok" and r.get("source") == "db"
              and "node" not in r and (r.get("version") or 0) >= 1 and (r["key"], r["version"]) in writes]
    if not finals:
        return None
    r = finals[int(rng.random() * len(finals))]
    v = r["version"]
    prev = writes.get((r["key"], v - 1))
    if v - 1 == 0:
        r["value"], r["version"] = None, 0
    elif prev is not None:
        r["value"], r["version"] = prev[0], v - 1
    else:
        return None
    return h, r["key"]


def inject_torn_read(h: list[dict[str, Any]], rng: random.Random) -> tuple[list[dict[str, Any]], int] | None:
    """In an object history, make one read mix fields of two different writes."""
    h = copy.deepcopy(h)
    comps = _completions(h)
    cands = [(i, c) for i, c in comps.items() if c["f"] == "read" and c["type"] == "ok"
             and isinstance(c.get("value"), dict) and len(c["value"]) >= 2 and c.get("phase") != "final"]
    if not cands:
        return None
    i, c = cands[int(rng.random() * len(cands))]
    f = sorted(c["value"])[0]
    old = c["value"][f]
    c["value"] = dict(c["value"])
    c["value"][f] = (old or 0) + 1_000_000
    return h, i
