"""Synthetic histories of any size, shaped like a real register run, for the report benchmark and
the huge-history test.

Why: a real run of a million ops takes minutes and a cluster; the report must be measured (and
tested) on histories far larger than a test can afford to record. The shape follows the run
engine's contract (core.history): invoke/completion pairs per process, nemesis start/stop/probe
ops with the fault's ``name`` and ``color``, phase markers, versions per key, cache hits, a few
fail/info completions, and some stale reads inside the fault window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FAULT = {"fault": "latency", "target": "redis", "name": "latency(redis, ms=150)", "color": "#f2b134", "ms": 150}


def write_synthetic(path: str | Path, n_ops: int, *, seed: int = 0, keys: int = 10, processes: int = 16,
                    duration_s: float = 60.0) -> dict[str, Any]:
    """Write a history of about ``n_ops`` ops (invokes + completions); return facts about it."""
    rng = np.random.default_rng(seed)
    pairs = max(1, n_ops // 2)
    t_inv = np.sort(rng.uniform(0.01, duration_s, pairs))
    fault_start, fault_stop = 0.3 * duration_s, 0.6 * duration_s
    in_fault = (t_inv > fault_start) & (t_inv < fault_stop)
    lat = rng.lognormal(np.log(0.0008), 0.6, pairs) + in_fault * 0.15 * rng.random(pairs)
    is_write = rng.random(pairs) < 0.25
    key = rng.integers(0, keys, pairs)
    r = rng.random(pairs)
    typ = np.where(r < 0.004, "info", np.where(r < 0.01, "fail", "ok"))
    hit = rng.random(pairs) < np.where(in_fault, 0.5, 0.85)
    version = np.zeros(keys, dtype=np.int64)
    lines: list[str] = []
    add = lines.append
    idx = 0
    dumps = json.dumps

    def nem(t: float, f: str, value: Any) -> None:
        nonlocal idx
        add(dumps({"process": "nemesis", "type": "info", "f": f, "value": value, "index": idx,
                   "time_ns": int(t * 1e9)}, separators=(",", ":")))
        idx += 1

    nem(0.0, "phase", "setup")
    nem(0.001, "phase", "load")
    events = [(fault_start, "start", FAULT), (fault_start + 0.05, "probe",
                                              FAULT | {"verified": True, "observed": "150 ms added"}),
              (fault_stop, "stop", FAULT)]
    ev = 0
    stale = 0
    # Pairs are written back to back (each process has one op outstanding at a time).
    for i in range(pairs):
        t0 = float(t_inv[i])
        while ev < len(events) and events[ev][0] <= t0:
            nem(events[ev][0], events[ev][1], events[ev][2])
            ev += 1
        p = i % processes
        k = f"k{key[i]}"
        t1 = t0 + float(lat[i])
        ty = str(typ[i])
        if is_write[i]:
            v = i
            add(f'{{"process":{p},"type":"invoke","f":"write","key":"{k}","value":{v},"node":0,'
                f'"index":{idx},"time_ns":{int(t0 * 1e9)}}}')
            if ty == "ok":
                version[key[i]] += 1
                add(f'{{"process":{p},"type":"ok","f":"write","key":"{k}","value":{v},'
                    f'"version":{version[key[i]]},"node":0,"index":{idx + 1},"time_ns":{int(t1 * 1e9)}}}')
            else:
                add(f'{{"process":{p},"type":"{ty}","f":"write","key":"{k}","value":{v},'
                    f'"error":"TimeoutError: synthetic","node":0,"index":{idx + 1},"time_ns":{int(t1 * 1e9)}}}')
        else:
            add(f'{{"process":{p},"type":"invoke","f":"read","key":"{k}","value":null,"node":0,'
                f'"index":{idx},"time_ns":{int(t0 * 1e9)}}}')
            if ty == "ok":
                ver = int(version[key[i]])
                if in_fault[i] and hit[i] and ver > 1 and rng.random() < 0.05:
                    ver -= 1
                    stale += 1
                src = "cache" if hit[i] else "db"
                add(f'{{"process":{p},"type":"ok","f":"read","key":"{k}","value":{ver},"version":{ver},'
                    f'"source":"{src}","hit":{"true" if hit[i] else "false"},"node":0,"index":{idx + 1},'
                    f'"time_ns":{int(t1 * 1e9)}}}')
            else:
                add(f'{{"process":{p},"type":"{ty}","f":"read","key":"{k}","value":null,'
                    f'"error":"ConnectionError: synthetic","node":0,"index":{idx + 1},"time_ns":{int(t1 * 1e9)}}}')
        idx += 2
    while ev < len(events):
        nem(events[ev][0], events[ev][1], events[ev][2])
        ev += 1
    end = float(t_inv[-1]) + 1
    nem(end, "phase", "heal")
    nem(end + 0.01, "phase", "final")
    nem(end + 0.02, "phase", "done")
    Path(path).write_text("\n".join(lines) + "\n")
    return {"ops": idx, "pairs": pairs, "stale_candidates": stale, "fault": FAULT["name"],
            "fault_window": (fault_start, fault_stop), "duration_s": end}
