"""Linearizability by search (Wing & Gong / Lowe, as in Knossos and Porcupine).

Why this module exists: it is the general checker — it needs no version numbers and no unique
values, so it judges any register history, including Jepsen's own EDN files. It is exponential in
the worst case, so it works hard to stay fast:

* P-compositionality: each key is an independent object, checked on its own; keys are checked
  *interleaved* (a slice of search steps each, round robin) and the check stops at the first key
  that cannot be linearized, so one hard key cannot hide a quick failure elsewhere.
* A cache of (linearized-set bitset, model state) pairs already explored (Lowe's memoisation),
  kept as one set of bitsets per state.
* Sound pruning only: ``fail`` ops never happened and are dropped; reads whose outcome is unknown
  (``info``/pending reads, and for Jepsen histories ok reads of nil) constrain nothing and are
  dropped; indeterminate writes/cas whose new value no read or cas ever observes are dropped (had
  one taken effect, its value would have to be overwritten unseen); among *identical*
  indeterminate ops (same f and value, completion unknown), only the order of invocation is
  tried — the earlier-invoked one can take the place of any later one.
* A cheap loop (issue 17): the same steps in the same order as the textbook formulation, so the
  same verdicts, explanations and step counts, at less cost per step (see ``_search``; measured
  against a copy of the previous loop by ``benchmarks/linearizable_bench.py``, and compared with
  it result for result by ``tests/checkers/test_search_equivalence.py``).
* Not done: skipping a configuration because a *finished* one with the same state and the same ok
  ops applied fewer timed-out ops. That is sound, and it keeps every explanation (the extra ops
  have no return, so they change neither where the walk stops nor the states there); but tried in
  issue 17, its bookkeeping on every backtrack cost more than the steps it saved on etcd-shaped
  histories. (Skipping against a configuration still on the stack would change the order in which
  states are found, hence the explanation.)

Indeterminate ops (``info``, or never completed) have no return event: they may be linearized at any
point after their invocation, or never; the search succeeds once every ``ok`` op is linearized.

Models (``checkers.models``): the search is generic over a model — init, step(state, op) -> (ok,
new state), partition, describe — as in Porcupine. Built in: ``register`` (read/write),
``cas-register`` (+ cas [old, new]), ``multi-register`` (``txn`` of [f, register, value]
micro-ops), ``mutex`` (acquire/release), ``kv`` (get/put/append of strings, per key) and
``kv-single`` (the same, one object over every key); a user's own by import path
(``mypkg.models:Counter``). Register reads, writes and cas (and kv get/put) run inlined in the
search loop; other ops call the model's step. On
failure the result names the op that cannot be linearized, the longest linearizable prefix found,
and the states the object could be in at that point, in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import compress
from operator import attrgetter
from typing import Any

from checkers import models, wgl
from checkers.models import BaseModel
from core.ops import INF, NOTHING_TO_JUDGE, Op, hashable, nothing_to_judge, pair, secs, vtext

SUBCAP = 8
MODELS = tuple(models.BUILTIN)

# op kinds in the search loop: the model's inlined register steps, or a call of its step
K_READ, K_WRITE, K_CAS, K_GEN = models.READ, models.WRITE, models.CAS, 3
ILLEGAL = object()  # the state after an op that cannot take effect


class _Spec:
    """A partition's ops compiled for the search."""

    __slots__ = ("ops", "kind", "a", "b", "step", "init", "dropped")

    def __init__(self, step: Callable[[Any, Op], tuple[bool, Any]], init: Any) -> None:
        self.ops: list[Op] = []
        self.kind: list[int] = []
        self.a: list[Any] = []
        self.b: list[Any] = []
        self.step = step
        self.init = init
        self.dropped = 0


def _compile(ops: list[Op], model: BaseModel, initial: Any) -> _Spec:
    """The ops the search needs (the model drops those that constrain nothing), each as an inlined
    register step when the model offers one, else as a call of its ``step``."""
    s = _Spec(model.step, model.init(initial, ops))
    kept, s.dropped = model.prepare(ops)
    steps = [x if x is not None else (K_GEN, None, None) for x in map(model.inline, kept)]
    s.ops = kept
    if steps:
        s.kind, s.a, s.b = (list(x) for x in zip(*steps, strict=True))
    return s


class _Result:
    __slots__ = ("valid", "steps", "culprit", "prefix", "states", "cache_size", "error")

    def __init__(self) -> None:
        self.valid: bool | str = "unknown"
        self.steps = 0
        self.culprit: int | None = None
        self.prefix: list[int] = []
        self.states: list[Any] = []
        self.cache_size = 0
        self.error: str | None = None


def _event_order(ops: list[Op], ok_ids: list[int], by_time: bool) -> list[int]:
    """The ops' call and return events in real-time order, each as ``op id * 2 + is_return`` (only
    the ``ok_ids`` ops have a return: an indeterminate op has a call and no return): by time
    (``time_ns``) or by history position. At equal times a call sorts before a return (ops that
    touch are concurrent, never ordered on a guess), then the lower op id first. Distinct times sort
    as they are; with ties, integer times are packed with the tie-breakers into one int per event,
    so the sort compares ints, not tuples."""
    n = len(ops)
    if by_time:
        t0 = list(map(_T0, ops))
        t1 = [ops[i].t1 for i in ok_ids]
    else:
        t0 = list(map(_INDEX, ops))
        t1 = [ops[i].cindex if ops[i].cindex is not None else ops[i].t1 for i in ok_ids]
    events = [*range(0, 2 * n, 2), *[2 * i + 1 for i in ok_ids]]
    at = dict(zip(t0 + t1, events, strict=True))
    if len(at) == len(events):  # all times distinct (always so for history positions): no ties
        return list(map(at.__getitem__, sorted(at)))
    if set(map(type, t0)) | set(map(type, t1)) <= {int}:
        n2 = 2 * n
        packed = [t * n2 + i for i, t in enumerate(t0)]
        packed += [(t * 2 + 1) * n + i for t, i in zip(t1, ok_ids, strict=True)]
    else:
        packed = [(t, 0, i) for i, t in enumerate(t0)] + [(t, 1, i) for t, i in zip(t1, ok_ids, strict=True)]
    return list(map(events.__getitem__, sorted(range(len(packed)), key=packed.__getitem__)))


_T0, _INDEX, _TYPE = attrgetter("t0"), attrgetter("index"), attrgetter("type")


# node codes in the search loop. In a state's own code list: a return (or the list's tail), a call
# that cannot take effect in this state, a read that can, a write or cas that can, a call of the
# model's step. In the generic list (any state): a read or a cas whose compared value must be
# checked. BLOCKED is added to an indeterminate op's code when an identical op was invoked before
# it: identical ops are linearized in invocation order only, so it waits for that one.
_RET, _SKIP, _READ_OK, _SET, _GEN, _READ, _CAS, _BLOCKED = 0, 1, 2, 3, 4, 5, 6, 8
_CODE = {K_READ: _READ, K_WRITE: _SET, K_CAS: _CAS, K_GEN: _GEN}  # by op kind
_PER_STATE_CELLS = 4_000_000  # per-state code lists while states x nodes stays below this
_CONVERT_COST = 2  # ... built after this many steps per list entry to build (see _search)


def _search(s: _Spec, res: _Result, slice_steps: int = 2000, by_time: bool = True) -> Iterator[None]:
    """Porcupine-style WGL search over a doubly linked list of call/return events.

    A generator: yields every ``slice_steps`` steps so the caller can interleave partitions and
    enforce time limits. Sets ``res.valid`` when done.

    From the head of the list: a call whose op can take effect in the current state (and leads to
    an unexplored (linearized set, state)) is linearized — its call and return are lifted out of
    the list and the search starts again from the head; a return reached first means the op it
    ends must have taken effect before now: backtrack, undoing the last linearized op.

    The loop takes the same steps in the same order as the plain formulation (the same verdicts,
    explanations and step counts) with less work per step: every per-op fact it reads is a flat
    list indexed by list node; the cache of explored configurations is one set of linearized-op
    bitsets per state (no (bitset, state) tuple built per step, and ints are not tracked by the
    garbage collector); and a search that outlives its first slice gives each state of the model
    (when they are few: a cas-register over a handful of values) its own code list that already
    says which reads and cas ops cannot take effect in it, so passing one is a single list read.
    """
    ops = s.ops
    n = len(ops)
    is_ok = [t == "ok" for t in map(_TYPE, ops)]
    ok_ids = list(compress(range(n), is_ok))
    remaining = len(ok_ids)
    if remaining == 0:
        res.valid = True
        return
    order = _event_order(ops, ok_ids, by_time)
    m = len(order)
    tail = m + 1
    size = m + 2
    kind, A, B, step = s.kind, s.a, s.b, s.step
    # per op, with one more slot (n) for a return node: the op's code in the generic list, its bit in
    # the linearized set, the value a read or cas compares the state with, the state a write or cas
    # leaves and that state's entry in ``per`` (per state: [its code list, the bitsets of the
    # configurations explored in it]; every state starts with the generic code list)
    state = s.init
    generic: list[int] = []               # the code list for a state without one of its own
    per: dict[Any, list[Any]] = {state: [generic, set()]}
    code_op = [*map(_CODE.__getitem__, kind), _RET]
    cmp_op = [None if k == K_WRITE else a for k, a in zip(kind, A, strict=True)]
    cmp_op.append(None)
    after_op = [a if k == K_WRITE else b for k, a, b in zip(kind, A, B, strict=True)]
    after_op.append(None)
    for k, v in zip(kind, after_op, strict=False):
        if (k == K_WRITE or k == K_CAS) and v not in per:
            per[v] = [generic, set()]
    # per node (node 0 the head, ``tail`` the end): the same, read by the hot loop without going
    # through the op id
    opid = [0, *[e >> 1 for e in order], 0]
    slot = [n, *[n if e & 1 else e >> 1 for e in order], n]    # a call's op id, n for a return or an end
    generic += map(code_op.__getitem__, slot)
    cmpn = list(map(cmp_op.__getitem__, slot))
    aftn = list(map(after_op.__getitem__, slot))
    node_of = [0] * (2 * n)               # event (op id * 2 + is_return) -> node
    for node, e in enumerate(order, start=1):
        node_of[e] = node
    match = [0] * size                    # a call's return node (0: none, indeterminate)
    for i in ok_ids:
        match[node_of[2 * i]] = node_of[2 * i + 1]
    blk = [0] * size                      # a blocked op's identical predecessor's call node
    last_of: dict[Any, int] = {}          # the last indeterminate op of each kind, by call node
    if remaining < len(ops):
        for node in sorted([node_of[2 * i] for i, ok in enumerate(is_ok) if not ok]):
            i = opid[node]
            op = ops[i]
            k = kind[i]
            ek = (op.f, op.key, k, A[i], B[i], hashable(op.value) if k == K_GEN else None)
            p = last_of.get(ek)
            if p is not None:
                generic[node] += _BLOCKED
                blk[node] = p
            last_of[ek] = node
    if _compiled_ok(kind, per):
        yield from _search_compiled(s, res, slice_steps, generic, slot, cmpn, aftn, match, blk, per, opid,
                                    remaining)
        return
    # what only the Python loop reads: per node, the op's bit, its target state's entry in ``per``,
    # and the list's links
    bits = [1 << i for i in range(n + 1)]
    bits[n] = 0
    tgt_op = [per[v] if k == K_WRITE or k == K_CAS else None for k, v in zip(kind, after_op, strict=False)]
    tgt_op.append(None)
    bitn = list(map(bits.__getitem__, slot))
    tgtn = list(map(tgt_op.__getitem__, slot))
    nxt = [*range(1, m + 2), 0]
    prv = [0, *range(0, m + 1)]
    done = bytearray(size)                # call nodes linearized now (node 0, no predecessor: always)
    done[0] = 1
    codes, cur = per[state]
    lin = 0
    stack: list[Any] = []                 # call node, state before it; flat
    push, pop = stack.append, stack.pop
    best_node = -1
    best_states: list[Any] = []
    best_path: list[int] = []             # the stack's call nodes when best_node was first reached
    # Steps and yields as the plain loop counted them: it yields before its step k * slice_steps
    # (after k * slice_steps - 1 steps), so keys interleave, and end with the same step counts,
    # exactly as before. The loop runs in chunks between those points, cut short once at
    # ``convert_at`` steps to give each state its own code list: when building them (states x nodes
    # entries) costs about what they will save if the search goes on as long again.
    taken = 0
    next_yield = slice_steps - 1
    convert_at = _CONVERT_COST * len(per) * size if len(per) * size <= _PER_STATE_CELLS else -1
    own_codes = convert_at >= 0
    chunk_end = min(next_yield, convert_at) if own_codes else next_yield
    entry = nxt[0]
    RET, SKIP, READ_OK, SET, READ, CAS, BLOCKED = _RET, _SKIP, _READ_OK, _SET, _READ, _CAS, _BLOCKED
    while True:
        for taken in range(taken + 1, chunk_end + 1):  # noqa: B007, B020 - the steps taken, read after
            k = codes[entry]
            if k == SKIP:
                entry = nxt[entry]
                continue
            if k >= BLOCKED:
                if not done[blk[entry]]:
                    entry = nxt[entry]
                    continue
                k -= BLOCKED
            if k == SET:  # a write, or a cas that can take effect in this state
                t = tgtn[entry]
                c = t[1]
                nl = lin | bitn[entry]
                if nl in c:
                    entry = nxt[entry]
                    continue
                c.add(nl)
                push(entry)
                push(state)
                state = aftn[entry]
                codes, cur = t
            elif k == RET:
                if entry != tail:  # the furthest any linearization got, and the states it left
                    if entry > best_node:
                        best_node = entry
                        best_states = [state]
                        best_path = stack[::2]
                    elif entry == best_node and len(best_states) < 16 and state not in best_states:
                        best_states.append(state)
                if not stack:
                    res.valid = False
                    break
                # undo the last linearized op: put its call and return back
                state = pop()
                entry = pop()
                codes, cur = per[state]
                done[entry] = 0
                lin ^= bitn[entry]
                r = match[entry]
                if r:
                    remaining += 1
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                entry = nxt[entry]
                continue
            elif k == READ_OK:  # a read that can take effect in this state: the state stays
                nl = lin | bitn[entry]
                if nl in cur:
                    entry = nxt[entry]
                    continue
                cur.add(nl)
                push(entry)
                push(state)
            else:  # the generic list's read and cas, and the model's step
                if k == READ:
                    if state != cmpn[entry]:
                        entry = nxt[entry]
                        continue
                    t = None
                elif k == CAS:
                    if state != cmpn[entry]:
                        entry = nxt[entry]
                        continue
                    t = tgtn[entry]
                    ns = aftn[entry]
                else:
                    ok, ns = step(state, ops[opid[entry]])
                    if not ok:
                        entry = nxt[entry]
                        continue
                    t = per.get(ns)
                    if t is None:
                        t = per[ns] = [generic, set()]
                c = cur if t is None else t[1]
                nl = lin | bitn[entry]
                if nl in c:
                    entry = nxt[entry]
                    continue
                c.add(nl)
                push(entry)
                push(state)
                if t is not None:
                    state = ns
                    codes, cur = t
            lin = nl
            done[entry] = 1
            # lift the call and its return out of the list
            pe, ne = prv[entry], nxt[entry]
            nxt[pe] = ne
            prv[ne] = pe
            r = match[entry]
            if r:
                pe, ne = prv[r], nxt[r]
                nxt[pe] = ne
                prv[ne] = pe
                remaining -= 1
                if remaining == 0:
                    res.valid = True
                    break
            entry = nxt[0]
        else:
            taken = chunk_end
            if own_codes and taken >= convert_at:  # a long search: each state its own code list, once
                own_codes = False
                if len(per) * size <= _PER_STATE_CELLS:
                    for v, rec in per.items():
                        rec[0] = _state_codes(generic, cmpn, v)
                    codes = per[state][0]
            if taken == next_yield:
                res.steps = taken + 1
                yield
                next_yield += slice_steps
            chunk_end = min(next_yield, convert_at) if own_codes else next_yield
            continue
        break
    res.steps = taken
    res.cache_size = sum(len(c) for _, c in per.values())
    res.prefix = [ops[opid[e]].index for e in best_path]
    if res.valid is False and best_node > 0:
        res.culprit = opid[best_node]
        res.states = best_states


def _compiled_ok(kind: list[int], per: dict[Any, list[Any]]) -> bool:
    """Can the compiled loop (``checkers.wgl``) run this partition: is it built, is every op an
    inlined register step, and is every state equal to itself (states become ints there)?"""
    return wgl.available() and K_GEN not in kind and all(v == v for v in per)  # noqa: PLR0124


def _search_compiled(s: _Spec, res: _Result, slice_steps: int, generic: list[int], slot: list[int],
                     cmpn: list[Any], aftn: list[Any], match: list[int], blk: list[int],
                     per: dict[Any, list[Any]], opid: list[int], remaining: int) -> Iterator[None]:
    """``_search``'s loop in C, over the lists ``_search`` built: the model's states numbered, a read's
    or cas's compared value by its state's number (-1: a value no state has, so it never matches).
    The same steps in the same order, so the same result."""
    ids = {v: i for i, v in enumerate(per)}
    states = list(per)
    n = len(s.ops)
    cmp = [ids.get(c, -1) if g & 7 == _READ or g & 7 == _CAS else -1 for g, c in zip(generic, cmpn, strict=True)]
    aft = [ids[a] if g & 7 == _SET or g & 7 == _CAS else -1 for g, a in zip(generic, aftn, strict=True)]
    bit = [-1 if i == n else i for i in slot]
    out = wgl.Outcome()
    for taken in wgl.search(generic, bit, cmp, aft, match, blk, n, ids[s.init], remaining, slice_steps, out):
        res.steps = taken
        yield
    res.steps = max(res.steps, out.steps)
    if out.status == wgl.NOMEM:
        res.valid, res.error = "unknown", (f"the search ran out of memory after {res.steps} steps (its explored "
                                           f"set may take {wgl.memory_limit() / 2**30:.1f} GiB)")
        return
    res.valid = out.status == wgl.VALID
    res.steps = out.steps
    res.cache_size = out.cache_size
    res.prefix = [s.ops[opid[e]].index for e in out.best_path]
    if res.valid is False and out.best_node > 0:
        res.culprit = opid[out.best_node]
        res.states = [states[i] for i in out.best_states]


def _state_codes(generic: list[int], cmpv: list[Any], state: Any) -> list[int]:
    """One state's code list: its reads and cas ops resolved against it (one that cannot take effect
    is a plain skip, blocked or not; one that can is READ -> READ_OK, CAS -> SET, blocked or not)."""
    return [k if k & 7 < _READ else _SKIP if state != c else k - (_READ - _READ_OK)
            for k, c in zip(generic, cmpv, strict=True)]


# -- was anything judged? --------------------------------------------------------------------------


def _judged(s: _Spec, model: BaseModel) -> tuple[bool, int, int]:
    """Did the search judge anything on this key: an ok op that observes the state and another op
    that could have changed it? Also the counts of (ok observers, possible writers)."""
    obs: list[int] = []
    wrs: list[int] = []
    for i, op in enumerate(s.ops):
        o, w = model.roles(op)
        if o and op.type == "ok":
            obs.append(i)
        if w:
            wrs.append(i)
    judged = bool(obs and wrs) and (len(obs) > 1 or len(wrs) > 1 or obs[0] != wrs[0])
    return judged, len(obs), len(wrs)


def _nothing_reason(specs: dict[Any, _Spec], model: BaseModel) -> str | None:
    """None if some key had something to judge, else what was missing, in words."""
    observers = writers = 0
    for s in specs.values():
        judged, o, w = _judged(s, model)
        if judged:
            return None
        observers += o
        writers += w
    if not specs:
        return "no client operations"
    if not writers:
        return "no writes that could have taken effect (none, all failed, or indeterminate and never read)"
    if not observers:
        return "no ok reads"
    return "no key with both a write and an ok read of it"


# -- the anomaly, in words -------------------------------------------------------------------------


def _concurrent(culprit: Op, ops: list[Op], by_time: bool) -> tuple[list[Op], str]:
    """The ops concurrent with ``culprit``, and when it ran, in words."""
    if by_time:
        c0, c1 = culprit.t0, culprit.t1
        concurrent = [o for o in ops if o is not culprit and o.t0 <= c1 and o.t1 >= c0]
        return concurrent, f"op {culprit.index}, from {secs(c0)} to {secs(c1)}"
    c0, c1 = culprit.index, culprit.cindex if culprit.cindex is not None else INF
    concurrent = [o for o in ops if o is not culprit and o.index < c1
                  and (o.cindex is None or o.type != "ok" or o.cindex > c0)]
    return concurrent, f"op {culprit.index}"


def _explain(key: Any, s: _Spec, res: _Result, model: BaseModel, model_name: str,
             by_time: bool) -> dict[str, Any]:
    culprit = s.ops[res.culprit] if res.culprit is not None else None
    states = [model.describe_state(x) for x in res.states]
    obj = model.object_name if key is None else f"{key}"
    if culprit is None:
        expl = f"No order of the operations on {obj} is consistent with the {model_name} model."
        ops_idx: list[int] = []
    else:
        concurrent, when = _concurrent(culprit, s.ops, by_time)
        could = " or ".join(states) if states else "nothing"
        if not concurrent:
            rest = "and no operation was concurrent with it to change that"
        else:
            goal = f"return {vtext(culprit.value)}" if culprit.f == "read" else "take effect"
            rest = (f"and no order of the {len(concurrent)} operation{'s' if len(concurrent) != 1 else ''} "
                    f"concurrent with it lets it {goal}")
        last = f", ending with op {res.prefix[-1]}" if res.prefix else ""
        expl = (f"{model.describe_op(culprit, key)} ({when}), but that cannot be linearized: after the longest "
                f"linearizable prefix ({len(res.prefix)} ops{last}), {obj} could only {model.state_verb} "
                f"{could}, {rest}.")
        ops_idx = culprit.ops + [o.index for o in concurrent[:20]]
    out = {"type": model.anomaly_type, "key": key,
           "ops": sorted(set(ops_idx)), "explanation": expl,
           "op": culprit.index if culprit else None, "prefix": res.prefix[-50:],
           "prefix_length": len(res.prefix), "states": states}
    if culprit is not None:
        out.update(model.context(s.ops, culprit, res.prefix, res.states, by_time))
    return out


# -- the check -------------------------------------------------------------------------------------


def _compile_partitions(ops: list[Op], model: BaseModel,
                        initial: Any) -> tuple[dict[Any, _Spec], dict[str, int]]:
    """Each partition (key) compiled for the search; and the ops the model ignores, counted by f."""
    specs: dict[Any, _Spec] = {}
    ignored: dict[str, int] = {}
    ignores = model.ignores
    for key, kops in model.partition(ops).items():
        flags = list(map(ignores, kops))
        if any(flags):
            for o, ign in zip(kops, flags, strict=True):
                if ign:
                    ignored[str(o.f)] = ignored.get(str(o.f), 0) + 1
            kops = [o for o, ign in zip(kops, flags, strict=True) if not ign]
        specs[key] = _compile(kops, model, initial)
    return specs, ignored


def _interleave(specs: dict[Any, _Spec], results: dict[Any, _Result], slice_steps: int, by_time: bool,
                time_limit_s: float, key_time_limit_s: float, t_start: float) -> tuple[Any, bool, dict[Any, str]]:
    """Search every key, a slice of steps each in turn, small keys first (a quick failure surfaces
    before a hard key eats the budget), until one cannot be linearized or all are decided or out
    of time. Returns (the illegal key, whether one was found, {undecided key: why})."""
    active = [(k, _search(specs[k], results[k], slice_steps, by_time)) for k in
              sorted(specs, key=lambda k: len(specs[k].ops))]
    spent: dict[Any, float] = {k: 0.0 for k in specs}
    unknown: dict[Any, str] = {}
    while active:
        nxt_round = []
        for k, g in active:
            t0 = time.monotonic()
            try:
                next(g)
                alive = True
            except StopIteration:
                alive = False
            now = time.monotonic()
            spent[k] += now - t0
            if not alive:
                if results[k].valid is False:
                    return k, True, unknown
                if results[k].valid is not True:  # ended undecided (out of memory)
                    unknown[k] = results[k].error or "the search ended undecided"
                continue
            if spent[k] > key_time_limit_s:
                unknown[k] = f"key time limit ({key_time_limit_s} s) reached after {results[k].steps} steps"
                continue
            if now - t_start > time_limit_s:
                unknown[k] = f"time limit ({time_limit_s} s) reached"
                continue
            nxt_round.append((k, g))
        active = nxt_round
    return None, False, unknown


def check(history: list[dict[str, Any]], *, model: str | Any = "register", initial: Any = None,
          time_limit_s: float = 60.0, key_time_limit_s: float = 20.0, nil_reads_any: bool = False,
          slice_steps: int = 5000, order: str = "time", empty_ok: bool = False, **_: Any) -> dict[str, Any]:
    """Check linearizability of every key (partition) against ``model``.

    ``model``: a built-in model's name (``MODELS``), an import path ``module.path:Name`` (a class
    is instantiated without arguments), or a model object (``checkers.models``). ``initial``: the
    initial value (multi-register: a dict). ``nil_reads_any``: an ok read of nil means "value
    unknown" (Knossos's convention for Jepsen histories; for the built-in models named by name — a
    model object or a user's model applies its own rules). ``order``: real-time order
    from ``time_ns`` ("time", our histories: the history index can put a completion before an invoke
    whose clock was read earlier) or from the position in the history ("index", Jepsen's convention:
    EDN histories). ``empty_ok``: a history with nothing to judge (no key with both a write that
    could have taken effect and an ok read) is valid, with a note (Knossos's answer for Jepsen
    histories, e.g. one with only nemesis ops); otherwise it is unknown with the reason. Returns ``valid``,
    ``keys`` (checked), ``unknown_keys`` (timed out), ``anomalies`` (the first illegal key's
    explanation), ``steps``, ``dropped`` (ops removed as constraining nothing).
    """
    m = models.resolve(model, nil_reads_any=nil_reads_any)
    model_name = model if isinstance(model, str) else m.name
    paired = pair(history)
    t_start = time.monotonic()
    specs, ignored = _compile_partitions(paired.ops, m, initial)
    results = {k: _Result() for k in specs}
    if order not in ("time", "index"):
        raise ValueError(f"order must be 'time' or 'index', got {order!r}")
    by_time = order == "time"
    bad_key, found_bad, unknown = _interleave(specs, results, slice_steps, by_time, time_limit_s,
                                              key_time_limit_s, t_start)
    out: dict[str, Any] = {
        "model": model_name, "order": order, "keys": len(specs), "steps": sum(r.steps for r in results.values()),
        "dropped": sum(s.dropped for s in specs.values()),
        "ignored_ops": ignored,  # ops the model does not know (e.g. read-db): not judged here
        "time_s": round(time.monotonic() - t_start, 4),
    }
    if found_bad:
        out["valid"] = False
        out["anomalies"] = [_explain(bad_key, specs[bad_key], results[bad_key], m, model_name, by_time)]
        out["anomaly_count"] = 1  # the search stops at the first key it cannot linearize
        out["unchecked_keys"] = sum(1 for r in results.values() if r.valid == "unknown")
    elif unknown:
        out["valid"] = "unknown"
        out["unknown_keys"] = {str(k): v for k, v in list(unknown.items())[:50]}
        out["error"] = f"{len(unknown)} key(s) not decided within the time limit"
    elif (why := _nothing_reason(specs, m)) is not None:
        if not empty_ok:
            return nothing_to_judge(why, **out)
        out["valid"] = True
        out["note"] = f"{NOTHING_TO_JUDGE}: {why} (valid by Knossos's convention)"
    else:
        out["valid"] = True
    return out
