"""Session guarantees: read-your-writes and monotonic reads, per process.

Why this module exists: a cache can be far from linearizable and still give each client a sane
view — its own writes visible to it, and never going back in time. Those are the guarantees most
applications actually lean on (a user edits a profile and reloads the page), so they get their own
verdicts (``read_your_writes``, ``monotonic_reads``), judged per process on versions.
"""

from __future__ import annotations

from typing import Any

from core.ops import (
    READ_FS,
    WRITE_FS,
    Op,
    Who,
    anomaly,
    hashable,
    key_versions,
    nothing_to_judge,
    pair,
    read_version,
    secs,
    source_words,
    tally,
    vtext,
)


def check(history: list[dict[str, Any]], *, initial: Any = None, initial_version: int = 0,
          max_anomalies: int = 100, **_: Any) -> dict[str, Any]:
    """Result: ``read_your_writes`` and ``monotonic_reads`` (booleans) with ``*_violations`` counts,
    ``processes``, ``judged_reads`` (per guarantee, the reads it had a say on),
    ``anomalies`` of types ``read-your-writes`` and ``non-monotonic-read``. Nothing to judge (unknown,
    with the reason) when no process read a key after its own acknowledged write of it, and none read
    a key that anyone wrote twice."""
    paired = pair(history)
    kvs = key_versions(paired, initial=initial, initial_version=initial_version)
    # per (process, key): (version, op) of the last acked own write and of the newest read
    own: dict[tuple[Any, Any], tuple[int, Op]] = {}
    seen: dict[tuple[Any, Any], tuple[int, Op]] = {}
    counts = {"read-your-writes": 0, "non-monotonic-read": 0}
    anomalies: list[dict[str, Any]] = []
    procs = set()
    judged = {"read-your-writes": 0, "monotonic-reads": 0}  # reads each guarantee had a say on
    for op in paired.ops:  # invoke order; a process is sequential
        if op.type != "ok" or op.final_db:
            continue
        kv = kvs.get(op.key)
        if kv is None:
            continue
        pk = (op.process, op.key)
        procs.add(op.process)
        if op.f in WRITE_FS:
            v = op.version if op.version is not None else kv.vof.get(hashable(op.value))
            if v is not None and (pk not in own or v > own[pk][0]):
                own[pk] = (v, op)
        elif op.f in READ_FS:
            vr = read_version(kv, op)
            if vr is None:
                continue
            ow = own.get(pk)
            judged["read-your-writes"] += ow is not None
            if ow is not None and vr < ow[0] and tally(counts, "read-your-writes", anomalies, max_anomalies):
                anomalies.append(_missed_own_write(op, vr, *ow))
            sw = seen.get(pk)
            judged["monotonic-reads"] += sw is not None and bool(kv.writes)
            if sw is not None and vr < sw[0] and tally(counts, "non-monotonic-read", anomalies, max_anomalies):
                anomalies.append(_went_back(op, vr, *sw))
            if sw is None or vr > sw[0]:
                seen[pk] = (vr, op)
    return _result(counts, anomalies, len(procs), judged)


def _missed_own_write(r: Op, vr: int, vw: int, w: Op) -> dict[str, Any]:
    """Read ``r`` (of version ``vr``) by the process whose write ``w`` (of version ``vw``) it missed."""
    return anomaly(
        "read-your-writes", r.key, [w, r],
        f"{Who(r)} wrote {r.key} = {vtext(w.value, vw)}, acknowledged at "
        f"{secs(w.t1)}, then read {r.key} = {vtext(r.value, vr)}{source_words(r)} at {secs(r.t0)}: "
        f"it did not see its own write (read-your-writes violated).")


def _went_back(r: Op, vr: int, vp: int, p: Op) -> dict[str, Any]:
    """Read ``r`` (of version ``vr``) by the process whose earlier read ``p`` saw the newer ``vp``."""
    return anomaly(
        "non-monotonic-read", r.key, [p, r],
        f"{Who(r)} read {r.key} = {vtext(p.value, vp)}{source_words(p)} at {secs(p.t0)}, "
        f"then {r.key} = {vtext(r.value, vr)}{source_words(r)} at {secs(r.t0)}: its reads went back "
        f"from version {vp} to version {vr} (monotonic reads violated).")


def _result(counts: dict[str, int], anomalies: list[dict[str, Any]], processes: int,
            judged: dict[str, int]) -> dict[str, Any]:
    ryw = counts["read-your-writes"]
    mono = counts["non-monotonic-read"]
    out: dict[str, Any] = {
        "processes": processes,
        "read_your_writes": ryw == 0,
        "monotonic_reads": mono == 0,
        "read_your_writes_violations": ryw,
        "monotonic_reads_violations": mono,
        "counts": counts,
        "anomaly_count": ryw + mono,
        "judged_reads": judged,
        "valid": ryw == 0 and mono == 0,
    }
    if out["valid"] and not any(judged.values()):
        return nothing_to_judge("no process read a key after writing it, nor read a written key twice", **out)
    if not out["valid"]:
        out["anomalies"] = anomalies
    return out
