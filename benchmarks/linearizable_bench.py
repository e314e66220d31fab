"""The linearizability search, old vs new, side by side: the same verdicts, and how much faster.

    python -m benchmarks.linearizable_bench [--repeats 3] [--seeds 0,5] [--count 40] [--quick]

Why this exists: issue 17 made the search in ``checkers/linearizable.py`` faster (flat per-node
lists, a per-state cache of bitsets instead of (bitset, state) tuples, per-state code lists that
say which reads and cas ops cannot take effect; fewer passes compiling the partitions). The claim
is "the same steps in the same order, cheaper": so this module keeps a verbatim copy of the search
and of the compiling of partitions as they were before (``legacy_search``,
``legacy_compile_partitions``, used nowhere else), runs every history through
``linearizable.check`` with the old ones and with the new ones, and

* compares the results — everything but ``time_s`` must be equal (verdict, anomaly, explanation,
  prefix, states, even the step count); ``compare`` is also what
  ``tests/checkers/test_search_equivalence.py`` runs;
* times both in the same process, interleaved (old, new, old, new...), ``--repeats`` times, and
  prints the median per set: CPU seconds in the search itself (its generator, set-up included),
  and in the whole ``check`` (pairing, compiling, search, explanation), with the ratio old/new.

Sets: the Knossos corpus (``checkers.corpus``; every file, all models), and generated etcd-shaped
cas-register histories (``corpus.etcd_set``: 5 clients, 100-1,000 ops, timeouts as info, seeded).
A history the old search cannot decide within ``--time-limit`` is listed and left out of the
ratio. The machine is shared: CPU time, not wall time; figures, never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from checkers import corpus, linearizable, wgl
from checkers.edn import read_edn_history
from checkers.linearizable import K_CAS, K_GEN, K_READ, K_WRITE, _Result, _Spec
from checkers.models import BaseModel
from core.ops import Op, clear_memo, hashable

_ILLEGAL = object()

# -- the search (and the compiling of partitions) before issue 17, verbatim but for names, for
# comparison only -------------------------------------------------------------------------------


class _LegacyEvents:
    """The ops' call and return events, in real-time order, as a doubly linked list (node 0 the
    head, ``tail`` the end; an indeterminate op has a call and no return)."""

    __slots__ = ("nxt", "prv", "is_ret", "opid", "match", "tail")

    def __init__(self, ops: list[Op], by_time: bool) -> None:
        # (time or history position, is_return, op id). At equal times a call sorts before a
        # return: ops that touch are concurrent, never ordered on a guess.
        ev: list[tuple[float, int, int]] = []
        for i, op in enumerate(ops):
            if by_time:
                ev.append((op.t0, 0, i))
                if op.type == "ok":
                    ev.append((op.t1, 1, i))
            else:
                ev.append((op.index, 0, i))
                if op.type == "ok":
                    ev.append((op.cindex if op.cindex is not None else op.t1, 1, i))
        ev.sort()
        m = len(ev)
        self.tail = m + 1
        self.nxt = list(range(1, m + 2)) + [0]
        self.prv = [0] + list(range(0, m + 1))
        self.is_ret = [False] * (m + 2)
        self.is_ret[self.tail] = True
        self.opid = [0] * (m + 2)
        self.match = [0] * (m + 2)  # a call's return node (0: none)
        callnode = [0] * len(ops)
        for node, (_, r, i) in enumerate(ev, start=1):
            self.opid[node] = i
            if r:
                self.is_ret[node] = True
                self.match[callnode[i]] = node
            else:
                callnode[i] = node


def _legacy_identical_predecessors(s: _Spec, ev: _LegacyEvents, is_ok: list[bool]) -> list[int]:
    """For each indeterminate op, the last one invoked before it that is identical (same key, f and
    value), or -1: identical ops are linearized in invocation order only."""
    pred = [-1] * len(s.ops)
    last_of: dict[Any, int] = {}
    for node in range(1, ev.tail):
        i = ev.opid[node]
        if ev.is_ret[node] or is_ok[i]:
            continue
        op = s.ops[i]
        ek = (op.f, op.key, s.kind[i], s.a[i], s.b[i], hashable(op.value) if s.kind[i] == K_GEN else None)
        if ek in last_of:
            pred[i] = last_of[ek]
        last_of[ek] = i
    return pred


def legacy_search(s: _Spec, res: _Result, slice_steps: int = 2000, by_time: bool = True) -> Iterator[None]:
    """Porcupine-style WGL search over a doubly linked list of call/return events.

    A generator: yields every ``slice_steps`` steps so the caller can interleave partitions and
    enforce time limits. Sets ``res.valid`` when done.

    From the head of the list: a call whose op can take effect in the current state (and leads to
    an unexplored (linearized set, state)) is linearized — its call and return are lifted out of
    the list and the search starts again from the head; a return reached first means the op it
    ends must have taken effect before now: backtrack, undoing the last linearized op.
    """
    ops = s.ops
    ev = _LegacyEvents(ops, by_time)
    nxt, prv, is_ret, opid, match, tail = ev.nxt, ev.prv, ev.is_ret, ev.opid, ev.match, ev.tail
    bit = [1 << i for i in range(len(ops))]
    is_ok = [op.type == "ok" for op in ops]
    remaining = sum(is_ok)
    pred = _legacy_identical_predecessors(s, ev, is_ok)
    kind, A, B, step = s.kind, s.a, s.b, s.step
    state = s.init
    lin = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    best_node = -1
    best_states: list[Any] = []
    steps = 0
    budget = slice_steps
    entry = nxt[0]
    while True:
        if remaining == 0:
            res.valid = True
            break
        budget -= 1
        if budget <= 0:
            steps += slice_steps
            res.steps = steps
            budget = slice_steps
            yield
        if not is_ret[entry]:
            i = opid[entry]
            p = pred[i]
            if p >= 0 and not (lin >> p) & 1:
                entry = nxt[entry]
                continue
            k = kind[i]
            if k == K_READ:
                ns = state if state == A[i] else _ILLEGAL
            elif k == K_WRITE:
                ns = A[i]
            elif k == K_CAS:
                ns = B[i] if state == A[i] else _ILLEGAL
            else:
                ok, ns = step(state, ops[i])
                if not ok:
                    ns = _ILLEGAL
            if ns is not _ILLEGAL:
                nl = lin | bit[i]
                ck = (nl, ns)
                if ck not in cache:
                    cache.add(ck)
                    stack.append((entry, state))
                    state = ns
                    lin = nl
                    if is_ok[i]:
                        remaining -= 1
                    # lift the call and its return out of the list
                    pe, ne = prv[entry], nxt[entry]
                    nxt[pe] = ne
                    prv[ne] = pe
                    r = match[entry]
                    if r:
                        pe, ne = prv[r], nxt[r]
                        nxt[pe] = ne
                        prv[ne] = pe
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            if entry != tail:  # the furthest any linearization got, and the states it left
                if entry > best_node:
                    best_node = entry
                    best_states = [state]
                    res.prefix = [ops[opid[e]].index for e, _ in stack]
                elif entry == best_node and len(best_states) < 16 and state not in best_states:
                    best_states.append(state)
            if not stack:
                res.valid = False
                break
            # undo the last linearized op: put its call and return back
            entry, state = stack.pop()
            i = opid[entry]
            lin ^= bit[i]
            if is_ok[i]:
                remaining += 1
            r = match[entry]
            if r:
                nxt[prv[r]] = r
                prv[nxt[r]] = r
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            entry = nxt[entry]
    res.steps = steps + (slice_steps - budget)
    res.cache_size = len(cache)
    if res.valid is False and best_node > 0:
        res.culprit = opid[best_node]
        res.states = best_states


def legacy_compile(ops: list[Op], model: BaseModel, initial: Any) -> _Spec:
    """The ops the search needs (the model drops those that constrain nothing), each as an inlined
    register step when the model offers one, else as a call of its ``step``."""
    s = _Spec(model.step, model.init(initial, ops))
    kept, s.dropped = model.prepare(ops)
    for op in kept:
        inlined = model.inline(op)
        k, a, b = inlined if inlined is not None else (K_GEN, None, None)
        s.ops.append(op)
        s.kind.append(k)
        s.a.append(a)
        s.b.append(b)
    return s


def legacy_compile_partitions(ops: list[Op], model: BaseModel,
                        initial: Any) -> tuple[dict[Any, _Spec], dict[str, int]]:
    """Each partition (key) compiled for the search; and the ops the model ignores, counted by f."""
    specs: dict[Any, _Spec] = {}
    ignored: dict[str, int] = {}
    for key, kops in model.partition(ops).items():
        kept = []
        for o in kops:
            if model.ignores(o):
                ignored[str(o.f)] = ignored.get(str(o.f), 0) + 1
            else:
                kept.append(o)
        specs[key] = legacy_compile(kept, model, initial)
    return specs, ignored


# -- running old and new ---------------------------------------------------------------------------

SearchFn = Callable[..., Iterator[None]]
NEW: SearchFn = linearizable._search
OLD: SearchFn = legacy_search
_spent = [0.0]


def _timed(fn: SearchFn) -> SearchFn:
    """``fn`` with the CPU time spent inside its generator added to ``_spent``."""
    def run(*a: Any, **kw: Any) -> Iterator[None]:
        g = fn(*a, **kw)
        while True:
            t = time.process_time()
            try:
                next(g)
            except StopIteration:
                _spent[0] += time.process_time() - t
                return
            _spent[0] += time.process_time() - t
            yield
    return run


@contextlib.contextmanager
def using(fn: SearchFn, timed: bool = False) -> Iterator[None]:
    """``linearizable.check`` runs ``fn`` as its search inside this block (the old search with the
    old compiling of partitions too)."""
    saved = linearizable._search, linearizable._compile_partitions
    linearizable._search = _timed(fn) if timed else fn
    if fn is OLD:
        linearizable._compile_partitions = legacy_compile_partitions
    try:
        yield
    finally:
        linearizable._search, linearizable._compile_partitions = saved


Case = tuple[str, list[dict[str, Any]], dict[str, Any]]  # name, history, check() options


def corpus_cases() -> list[Case]:
    where = corpus.locate()
    if where is None:
        return []
    out = []
    for c in corpus.cases(where):
        out.append((c.file, read_edn_history(c.path), {"model": c.model, "initial": c.initial, "nil_reads_any": True,
                                                       "order": "index", "empty_ok": True}))
    return out


def generated_cases(seeds: list[int], count: int = 40) -> list[Case]:
    return [(name, h, dict(corpus.ETCD_CHECK)) for sd in seeds for name, h in corpus.etcd_set(count, seed=sd)]


def run(fn: SearchFn, case: Case, time_limit_s: float, timed: bool = False) -> dict[str, Any]:
    _, h, opts = case
    clear_memo()
    with using(fn, timed):
        return linearizable.check(h, **opts, time_limit_s=time_limit_s, key_time_limit_s=time_limit_s)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal results but for the wall time."""
    return {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}


def compare(cases: list[Case], time_limit_s: float = 60.0) -> tuple[list[str], list[str]]:
    """Run each case with the old and the new search: (names whose results differ, names the old
    search left unknown — not compared)."""
    diff, unknown = [], []
    for case in cases:
        old = run(OLD, case, time_limit_s)
        if old["valid"] == "unknown":
            unknown.append(case[0])
            continue
        if not same(old, run(NEW, case, time_limit_s)):
            diff.append(case[0])
    return diff, unknown


LOOPS = ("old", "python", "compiled")  # the old search; the new one with its Python loop; with its C loop


def run_as(which: str, case: Case, time_limit_s: float, timed: bool = False) -> dict[str, Any]:
    """``case`` through the old search, or the new one with its Python or its compiled loop."""
    if which == "old":
        return run(OLD, case, time_limit_s, timed)
    with wgl.python_only(which == "python"):
        return run(NEW, case, time_limit_s, timed)


def bench(name: str, cases: list[Case], repeats: int, time_limit_s: float) -> None:
    """The old search and the new one's two loops, interleaved per history (the order rotating each
    round), ``repeats`` rounds; the median round per set, and each ratio against the old search."""
    loops = [w for w in LOOPS if w != "compiled" or wgl.available()]
    rounds: dict[str, list[list[float]]] = {w: [] for w in loops}  # [search s, check s] per round
    per_case: dict[str, list[float]] = {}
    skipped: list[str] = []
    differ: list[str] = []
    keep = list(cases)
    for rep in range(repeats):
        tot = {w: [0.0, 0.0] for w in loops}
        kept = []
        for case in keep:
            results = {}
            for which in loops[rep % len(loops):] + loops[:rep % len(loops)]:
                _spent[0] = 0.0
                t = time.process_time()
                results[which] = run_as(which, case, time_limit_s, timed=True)
                dt = time.process_time() - t
                tot[which][0] += _spent[0]
                tot[which][1] += dt
                per_case.setdefault(f"{case[0]}|{which}", []).append(_spent[0])
            if results["old"]["valid"] == "unknown":
                skipped.append(case[0])
                for which in loops:
                    tot[which][0] -= per_case[f"{case[0]}|{which}"][-1]
                continue
            if any(not same(results["old"], results[w]) for w in loops):
                differ.append(case[0])
            kept.append(case)
        keep = kept
        for which in loops:
            rounds[which].append(tot[which])
    med = {w: [statistics.median(r[i] for r in rounds[w]) for i in (0, 1)] for w in rounds}
    print(f"\n{name}: {len(keep)} histories, median of {repeats} interleaved rounds (CPU s)")
    print(f"  {'':<8}" + "".join(f"{w:>10}" for w in loops) + "".join(f"{'old/' + w:>14}" for w in loops[1:]))
    for i, what in enumerate(("search", "check")):
        o = med["old"][i]
        ratios = "".join(f"{(o / med[w][i] if med[w][i] else float('nan')):>13.2f}x" for w in loops[1:])
        print(f"  {what:<8}" + "".join(f"{med[w][i]:>10.3f}" for w in loops) + ratios)
    if "compiled" not in loops:
        print(f"  compiled loop not measured: {wgl.why_not()}")
    slow = sorted(keep, key=lambda c: -statistics.median(per_case[f"{c[0]}|old"]))[:5]
    if slow:
        print(f"  slowest (search CPU s, {' -> '.join(loops)}):")
        for c in slow:
            t = [statistics.median(per_case[f"{c[0]}|{w}"]) for w in loops]
            print("    " + " -> ".join(f"{x:.3f}" for x in t) + f"  {c[0]}")
    if skipped:
        print(f"  left out (the old search did not decide within {time_limit_s} s): {', '.join(sorted(set(skipped)))}")
    print(f"  results identical (verdict, anomaly, explanation, steps): "
          f"{'yes' if not differ else 'NO: ' + ', '.join(sorted(set(differ)))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", default="0,5", help="etcd_set seeds (default 0,5: 80 histories)")
    ap.add_argument("--count", type=int, default=40, help="histories per seed")
    ap.add_argument("--time-limit", type=float, default=60.0, help="per history (s)")
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--no-gc", action="store_true", help="garbage collector off, as run_checkers does")
    ap.add_argument("--quick", action="store_true", help="seed 0 only, 1 round")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.repeats = "0", 1
    if a.no_gc:
        gc.disable()
    print("gc off (as run_checkers runs checkers)" if a.no_gc else "gc on (check() called directly, as corpus.check_case does)")
    if not a.no_corpus:
        cases = corpus_cases()
        if cases:
            bench("Knossos corpus", cases, a.repeats, a.time_limit)
        else:
            print("Knossos corpus not found (../shared/conformance or $CACHECERT_CONFORMANCE): skipped")
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    if seeds:
        bench(f"generated etcd-shaped (seeds {a.seeds}, {a.count} each)", generated_cases(seeds, a.count),
              a.repeats, a.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
