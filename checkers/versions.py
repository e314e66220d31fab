"""Linearizability by version graph (Elle's way), for histories with unique values and DB versions.

Why this module exists: our own runs write unique values and the DB assigns each write a version
(increasing per key in commit order). With the version order known, linearizability of a register
is no longer a search: it is the absence of cycles in the graph of real-time (rt), process, write-
read (wr), write-write (ww) and read-write anti-dependency (rw) edges. That is polynomial, scales to
millions of ops, and each cycle is a story one can tell in the cache's terms.

Method. Give each op a position in version order: the write of version v at 2v, every read of v at
2v+1. ww, wr and rw edges all go strictly forward in position, so any cycle must contain a real-time
edge a -> b (a completed before b began) that goes *backward* (pos(a) > pos(b)); conversely such an
edge closes a cycle through the version chain. So the default ``method="fast"`` sweeps ops in time
order and, for each op b, compares it with the highest-positioned op completed before b began —
O(n log n) — and names the anomaly from the pair:

* ``stale-read``: b read an older version after a newer write completed (or after another process
  had already read a newer version);
* ``non-monotonic-read``: the same process read a newer version and then an older one;
* ``future-read``: b read a value before its write began;
* ``version-order-violation``: the DB ordered a write before one that completed before it began.

Plus value anomalies that need no graph: ``garbage-read`` (a value nobody wrote) and
``aborted-read`` (a value whose write failed). Each anomaly carries the cycle, found with networkx
on the small graph of the ops involved. ``method="graph"`` builds the whole graph (realtime edges
transitively reduced, Elle-style) and finds cycles with networkx: slower, used to cross-check.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

import networkx as nx

from core.ops import (
    INF,
    READ_FS,
    WRITE_FS,
    KeyVersions,
    Op,
    Who,
    anomaly,
    hashable,
    key_versions,
    ms,
    pair,
    read_version,
    reader,
    secs,
    source_words,
    stale_read_words,
    tally,
    verdict,
    vtext,
    who,
)


def _positioned(kv: KeyVersions) -> tuple[list[tuple[int, Op, int]], list[Op]]:
    """(position, op, version) for every op whose version is known; and ok writes whose isn't."""
    out: list[tuple[int, Op, int]] = []
    unknown: list[Op] = []
    vof = kv.vof
    for w in kv.writes:
        v = w.version if w.version is not None else vof.get(hashable(w.value))
        if v is None:
            if w.type == "ok":
                unknown.append(w)
            continue
        out.append((2 * v, w, v))
    for r in kv.reads + kv.final_db:
        v = read_version(kv, r)
        if v is None:
            continue
        out.append((2 * v + 1, r, v))
    return out, unknown


def value_anomalies(kv: KeyVersions, initial: Any) -> list[dict[str, Any]]:
    """Garbage and aborted reads of one key."""
    out = []
    init_h = hashable(initial)
    for r in kv.reads + kv.final_db:
        h = hashable(r.value)
        if h in kv.writer or h == init_h:
            continue
        if h in kv.failed:
            w = kv.failed[h]
            err = f" ({w.error})" if w.error else ""
            out.append(anomaly(
                "aborted-read", kv.key, [r, w],
                f"{reader(r)} {kv.key} = {vtext(r.value, r.version)}{source_words(r)} at {secs(r.t0)}, "
                f"but {who(w)}'s write of {vtext(r.value)} failed at {secs(w.t1)}{err}: it never "
                f"committed, so the read returned a value that does not exist in the DB (an aborted read)."))
        else:
            out.append(anomaly(
                "garbage-read", kv.key, [r],
                f"{reader(r)} {kv.key} = {vtext(r.value, r.version)}{source_words(r)} at {secs(r.t0)}, "
                f"but no operation ever wrote {vtext(r.value)} to {kv.key}: a garbage read."))
    return out


def _what(op: Op, v: int) -> str:
    if op.f in WRITE_FS:
        return f"{who(op)}'s write of {vtext(op.value, v)}"
    if op.is_final:
        return f"{who(op)} of {vtext(op.value, v)}"
    return f"{who(op)}'s read of {vtext(op.value, v)}"


def _explain_pair(key: Any, a: Op, pa: int, va: int, b: Op, pb: int, vb: int) -> tuple[str, str]:
    gap = ms(b.t0 - a.t1)
    a_is_w = pa % 2 == 0
    b_is_w = pb % 2 == 0
    if not b_is_w:
        if a_is_w:
            return "stale-read", stale_read_words(key, b, vb, a, va) + "."
        if a.process == b.process:
            return "non-monotonic-read", (
                f"{Who(b)} read {key} = {vtext(a.value, va)}{source_words(a)} (done at {secs(a.t1)}), "
                f"then read {key} = {vtext(b.value, vb)}{source_words(b)} at {secs(b.t0)}: its reads went back "
                f"from version {va} to version {vb} (a non-monotonic read).")
        return "stale-read", (
            f"{reader(b)} {key} = {vtext(b.value, vb)}{source_words(b)} at {secs(b.t0)}, but "
            f"{who(a)} had already {'returned' if a.is_final else 'read'} the newer {vtext(a.value, va)}{source_words(a)}, done at {secs(a.t1)}, "
            f"{gap} before that read began: a stale read (a newer version was visible, then was not).")
    if not a_is_w and va == vb:
        return "future-read", (
            f"{reader(a)} {key} = {vtext(a.value, va)}{source_words(a)}, done at {secs(a.t1)}, "
            f"{gap} before {who(b)} even began writing {vtext(b.value)} at {secs(b.t0)}: "
            f"a read from the future.")
    return "version-order-violation", (
        f"The DB gave {_what(b, vb)} (begun at {secs(b.t0)}) a lower version than {_what(a, va)}, "
        f"which had completed at {secs(a.t1)}, {gap} before that write began: the version order "
        f"contradicts real time.")


def _cycle(key: Any, a: Op, pa: int, b: Op, pb: int, chain: dict[int, Op]) -> list[str]:
    """The cycle b ->(ww/wr/rw)* a ->rt b, found by networkx on the few ops involved."""
    g = nx.DiGraph()

    def lab(o: Op, p: int) -> str:
        return f"{'W' if p % 2 == 0 else 'R'}{p // 2}#{o.index}"

    na, nb = lab(a, pa), lab(b, pb)
    g.add_edge(na, nb, rel="rt")
    # walk the version chain from b's position up to a's
    cur, cp = nb, pb
    wpos = sorted(p for p in chain if pb < p <= pa)
    for p in wpos:
        w = chain[p]
        nw = lab(w, p)
        if nw == cur:
            continue
        g.add_edge(cur, nw, rel="rw" if cp % 2 else "ww")
        cur, cp = nw, p
    if cur != na:
        g.add_edge(cur, na, rel="wr" if cp % 2 == 0 else "rt")
    try:
        cyc = nx.find_cycle(g, na)
    except nx.NetworkXNoCycle:
        return []
    return [f"{u} -{g.edges[u, v]['rel']}-> {v}" for u, v in cyc]


def _check_key_fast(kv: KeyVersions, max_anomalies: int) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    pos, unknown = _positioned(kv)
    counts: dict[str, int] = {}
    found: list[dict[str, Any]] = []
    if len(pos) < 2:
        return found, counts, len(unknown)
    by_t1 = sorted((x for x in pos if x[1].t1 != INF), key=lambda x: x[1].t1)
    t1s = [x[1].t1 for x in by_t1]
    # prefix max of position over completion order
    best: list[tuple[int, Op, int]] = []
    cur: tuple[int, Op, int] | None = None
    for x in by_t1:
        if cur is None or x[0] > cur[0]:
            cur = x
        best.append(cur)
    chain = {p: o for p, o, _ in pos if p % 2 == 0}
    for pb, b, vb in pos:
        i = bisect_left(t1s, b.t0)  # ops completed strictly before b began
        if i == 0:
            continue
        pa, a, va = best[i - 1]
        if pa <= pb or a is b:
            continue
        typ, expl = _explain_pair(kv.key, a, pa, va, b, pb, vb)
        if tally(counts, typ, found, max_anomalies):
            found.append(anomaly(typ, kv.key, [a, b], expl, cycle=_cycle(kv.key, a, pa, b, pb, chain),
                                 versions=[va, vb], lag_ms=round((b.t0 - a.t1) / 1e6, 3)))
    return found, counts, len(unknown)


def graph_of_key(kv: KeyVersions) -> nx.DiGraph:
    """The full dependency graph of one key (rt edges transitively reduced), nodes = op index."""
    pos, _ = _positioned(kv)
    g = nx.DiGraph()
    by_v: dict[int, list[tuple[int, Op]]] = {}
    for p, o, v in pos:
        g.add_node(o.index, pos=p, op=o)
        by_v.setdefault(v, []).append((p, o))
    vs = sorted(by_v)
    for j, v in enumerate(vs):
        writes = [o for p, o in by_v[v] if p % 2 == 0]
        reads = [o for p, o in by_v[v] if p % 2 == 1]
        for w in writes:
            for r in reads:
                g.add_edge(w.index, r.index, rel="wr")
        if j + 1 < len(vs):
            nxt_writes = [o for p, o in by_v[vs[j + 1]] if p % 2 == 0]
            for w2 in nxt_writes:
                for w in writes:
                    g.add_edge(w.index, w2.index, rel="ww")
                for r in reads:
                    g.add_edge(r.index, w2.index, rel="rw")
            if not writes and not nxt_writes:
                pass
    # Elle-style realtime reduction: a frontier of recently completed ops
    events: list[tuple[float, int, Op]] = []
    for _, o, _ in pos:
        events.append((o.t0, 1, o))
        if o.t1 != INF:
            events.append((o.t1, 0, o))
    # at equal times: completions first would make equal-time ops ordered; treat them as concurrent
    events.sort(key=lambda e: (e[0], -e[1]))
    frontier: list[Op] = []
    for _, kind, o in events:
        if kind == 1:
            for a in frontier:
                if a.t1 < o.t0 and not g.has_edge(a.index, o.index):
                    g.add_edge(a.index, o.index, rel="process" if a.process == o.process else "rt")
        else:
            frontier = [a for a in frontier if not a.t1 < o.t0]
            frontier.append(o)
    return g


def _check_key_graph(kv: KeyVersions, max_anomalies: int) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    g = graph_of_key(kv)
    found: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for scc in nx.strongly_connected_components(g):
        if len(scc) < 2:
            continue
        sub = g.subgraph(scc)
        cyc = nx.find_cycle(sub)
        rels = [sub.edges[u, v]["rel"] for u, v in cyc]
        counts["cycle"] = counts.get("cycle", 0) + 1
        if len(found) < max_anomalies:
            steps = [f"op {u} -{r}-> op {v}" for (u, v), r in zip(cyc, rels, strict=True)]
            found.append({"type": "cycle", "key": kv.key, "ops": sorted({u for u, _ in cyc}),
                          "explanation": f"The ops on {kv.key} form a dependency cycle ({', '.join(steps)}): "
                                         "no order of them agrees with both real time and the DB's version order.",
                          "cycle": steps})
    return found, counts, len(_positioned(kv)[1])


def _judged_writes(kv: KeyVersions) -> list[Op]:
    """Writes the version order can place: acknowledged ones, and indeterminate ones of known version."""
    return [w for w in kv.writes if w.type == "ok" or w.version is not None or hashable(w.value) in kv.vof]


def nothing_judged(kvs: dict[Any, KeyVersions]) -> str | None:
    """None if some key has both an ok read and a write that could have taken effect (acknowledged,
    or indeterminate and of known version), else what was missing, in words."""
    if any((kv.reads or kv.final_db) and _judged_writes(kv) for kv in kvs.values()):
        return None
    if not any(_judged_writes(kv) for kv in kvs.values()):
        return "no writes that could have taken effect (none, all failed, or indeterminate and never read)"
    if not any(kv.reads or kv.final_db for kv in kvs.values()):
        return "no ok reads"
    return "no key with both a write and an ok read of it"


def check(history: list[dict[str, Any]], *, initial: Any = None, initial_version: int = 0,
          method: str = "fast", max_anomalies: int = 100, read_fs: Any = None, write_fs: Any = None,
          **_: Any) -> dict[str, Any]:
    """Version-graph linearizability. Result: ``valid``, ``anomalies``, ``counts`` (per type),
    ``keys``, ``ops_positioned``, ``unversioned_writes`` (ok writes with no known version; if any
    and nothing else is wrong, the verdict is unknown: the order cannot be fully judged). With no key
    that has both an ok read and a write, there is nothing to judge: unknown, with the reason."""
    t0 = time.monotonic()
    paired = pair(history)
    rf = frozenset(read_fs) if read_fs else READ_FS
    wf = frozenset(write_fs) if write_fs else WRITE_FS
    kvs = key_versions(paired, initial=initial, initial_version=initial_version, read_fs=rf, write_fs=wf)
    anomalies: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    unversioned = 0
    fn = _check_key_graph if method == "graph" else _check_key_fast
    for kv in kvs.values():
        va = value_anomalies(kv, initial)
        for a in va:
            counts[a["type"]] = counts.get(a["type"], 0) + 1
        anomalies.extend(va[: max(0, max_anomalies - len(anomalies))])
        found, c, unk = fn(kv, max(0, max_anomalies - len(anomalies)))
        anomalies.extend(found)
        for k, n in c.items():
            counts[k] = counts.get(k, 0) + n
        unversioned += unk
    out: dict[str, Any] = {"keys": len(kvs), "counts": counts, "unversioned_writes": unversioned,
                           "method": method, "time_s": round(time.monotonic() - t0, 4)}
    out["anomaly_count"] = sum(counts.values())
    return verdict(out, anomalies, invalid=bool(counts), nothing=None if counts else nothing_judged(kvs),
                   partial=(f"{unversioned} acknowledged write(s) have no known version: the version order "
                            "cannot be fully judged") if unversioned else None)
