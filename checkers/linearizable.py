"""Linearizability by search (Wing & Gong / Lowe, as in Knossos and Porcupine).

Why this module exists: it is the general checker — it needs no version numbers and no unique
values, so it judges any register history, including Jepsen's own EDN files. It is exponential in
the worst case, so it works hard to stay fast:

* P-compositionality: each key is an independent object, checked on its own; keys are checked
  *interleaved* (a slice of search steps each, round robin) and the check stops at the first key
  that cannot be linearized, so one hard key cannot hide a quick failure elsewhere.
* A cache of (linearized-set bitset, model state) pairs already explored (Lowe's memoisation).
* Sound pruning only: ``fail`` ops never happened and are dropped; reads whose outcome is unknown
  (``info``/pending reads, and for Jepsen histories ok reads of nil) constrain nothing and are
  dropped; indeterminate writes/cas whose new value no read or cas ever observes are dropped (had
  one taken effect, its value would have to be overwritten unseen); among *identical* indeterminate ops (same f and value, completion unknown), only the
  order of invocation is tried — the earlier-invoked one can take the place of any later one.
  (Not done, because it is unsound: skipping a state because a seen one applied fewer timed-out ops.)

Indeterminate ops (``info``, or never completed) have no return event: they may be linearized at any
point after their invocation, or never; the search succeeds once every ``ok`` op is linearized.

Models (``checkers.models``): the search is generic over a model — init, step(state, op) -> (ok,
new state), partition, describe — as in Porcupine. Built in: ``register`` (read/write),
``cas-register`` (+ cas [old, new]), ``multi-register`` (``txn`` of [f, register, value]
micro-ops), ``mutex`` (acquire/release); a user's own by import path (``mypkg.models:Counter``).
Register reads, writes and cas run inlined in the search loop; other ops call the model's step. On
failure the result names the op that cannot be linearized, the longest linearizable prefix found,
and the states the object could be in at that point, in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from checkers import models
from checkers.models import BaseModel
from core.ops import INF, NOTHING_TO_JUDGE, Op, hashable, nothing_to_judge, pair, secs, vtext

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
    for op in kept:
        inlined = model.inline(op)
        k, a, b = inlined if inlined is not None else (K_GEN, None, None)
        s.ops.append(op)
        s.kind.append(k)
        s.a.append(a)
        s.b.append(b)
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


class _Events:
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


def _identical_predecessors(s: _Spec, ev: _Events, is_ok: list[bool]) -> list[int]:
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


def _search(s: _Spec, res: _Result, slice_steps: int = 2000, by_time: bool = True) -> Iterator[None]:
    """Porcupine-style WGL search over a doubly linked list of call/return events.

    A generator: yields every ``slice_steps`` steps so the caller can interleave partitions and
    enforce time limits. Sets ``res.valid`` when done.

    From the head of the list: a call whose op can take effect in the current state (and leads to
    an unexplored (linearized set, state)) is linearized — its call and return are lifted out of
    the list and the search starts again from the head; a return reached first means the op it
    ends must have taken effect before now: backtrack, undoing the last linearized op.
    """
    ops = s.ops
    ev = _Events(ops, by_time)
    nxt, prv, is_ret, opid, match, tail = ev.nxt, ev.prv, ev.is_ret, ev.opid, ev.match, ev.tail
    bit = [1 << i for i in range(len(ops))]
    is_ok = [op.type == "ok" for op in ops]
    remaining = sum(is_ok)
    pred = _identical_predecessors(s, ev, is_ok)
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
                ns = state if state == A[i] else ILLEGAL
            elif k == K_WRITE:
                ns = A[i]
            elif k == K_CAS:
                ns = B[i] if state == A[i] else ILLEGAL
            else:
                ok, ns = step(state, ops[i])
                if not ok:
                    ns = ILLEGAL
            if ns is not ILLEGAL:
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
    for key, kops in model.partition(ops).items():
        kept = []
        for o in kops:
            if model.ignores(o):
                ignored[str(o.f)] = ignored.get(str(o.f), 0) + 1
            else:
                kept.append(o)
        specs[key] = _compile(kept, model, initial)
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
