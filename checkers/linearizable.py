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

Models: ``register`` (read/write), ``cas-register`` (+ cas [old, new]), ``multi-register``
(``txn`` of [f, register, value] micro-ops), ``mutex`` (acquire/release). On failure the result
names the op that cannot be linearized, the longest linearizable prefix found, and the states the
object could be in at that point, in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from core.ops import INF, NOTHING_TO_JUDGE, Op, Who, hashable, nothing_to_judge, pair, secs, vtext

MODELS = ("register", "cas-register", "multi-register", "mutex")
ILLEGAL = object()

# op kinds for the inlined model step
K_READ, K_WRITE, K_CAS, K_GEN = 0, 1, 2, 3


class _Spec:
    """A partition's ops compiled for the search."""

    __slots__ = ("ops", "kind", "a", "b", "gen", "init", "dropped", "regs")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.kind: list[int] = []
        self.a: list[Any] = []
        self.b: list[Any] = []
        self.gen: Callable[[Any, Op], Any] | None = None
        self.init: Any = None
        self.dropped = 0
        self.regs: list[str] = []


def _compile(ops: list[Op], model: str, initial: Any, nil_reads_any: bool) -> _Spec:
    s = _Spec()
    s.init = hashable(initial)
    if model == "multi-register":
        regs = sorted({str(m[1]) for op in ops if isinstance(op.value, (list, tuple))
                       for m in op.value if isinstance(m, (list, tuple)) and len(m) >= 2}
                      | ({str(k) for k in initial} if isinstance(initial, dict) else set()))
        pos = {r: i for i, r in enumerate(regs)}
        s.regs = regs
        init = initial if isinstance(initial, dict) else {}
        s.init = tuple(hashable(init.get(r, init.get(r.lstrip(":"), None))) for r in regs)

        def gen(state: Any, op: Op) -> Any:
            st = list(state)
            for m in op.value:
                f, r, v = m[0], pos[str(m[1])], hashable(m[2])
                if f == "read":
                    if v is None and nil_reads_any:
                        continue
                    if st[r] != v:
                        return ILLEGAL
                elif f == "write":
                    st[r] = v
                else:
                    raise ValueError(f"multi-register: unknown micro-op {f!r}")
            return tuple(st)

        s.gen = gen
    if model == "mutex":
        s.init = False if initial is None else bool(initial)
    # Values some op could observe: read results and cas preconditions. An indeterminate write (or
    # cas) whose new value nobody observes can be dropped ("it never happened" is always allowed):
    # had it taken effect, no op could consume its value, so some write must overwrite it before
    # anything else succeeds, and removing it from a linearization keeps every other op legal.
    observed: set[Any] | None = None
    if model in ("register", "cas-register"):
        observed = set()
        for op in ops:
            if op.f == "read" and op.type == "ok":
                observed.add(hashable(op.value))
            elif op.f == "cas" and op.type != "fail" and isinstance(op.value, (list, tuple)) and op.value:
                observed.add(hashable(op.value[0]))
    for op in ops:
        if op.type == "fail":
            s.dropped += 1
            continue
        f = op.f
        if observed is not None and op.type != "ok":
            new = op.value if f == "write" else op.value[1] if (
                f == "cas" and isinstance(op.value, (list, tuple)) and len(op.value) == 2) else observed
            if new is not observed and hashable(new) not in observed:
                s.dropped += 1
                continue
        if model == "mutex":
            if f == "acquire":
                k, a, b = K_CAS, False, True
            elif f == "release":
                k, a, b = K_CAS, True, False
            else:
                raise ValueError(f"mutex model: unknown f {f!r} (op {op.index})")
        elif model == "multi-register":
            if f != "txn" or not isinstance(op.value, (list, tuple)):
                raise ValueError(f"multi-register model: expected f txn with micro-ops (op {op.index})")
            if op.type != "ok" and all(m[0] == "read" for m in op.value):
                s.dropped += 1
                continue
            k, a, b = K_GEN, None, None
        elif f == "read":
            if op.type != "ok" or (op.value is None and nil_reads_any):
                s.dropped += 1  # an unknown outcome constrains nothing
                continue
            k, a, b = K_READ, hashable(op.value), None
        elif f == "write":
            k, a, b = K_WRITE, hashable(op.value), None
        elif f == "cas" and model == "cas-register":
            v = op.value
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise ValueError(f"cas op {op.index}: value must be [old, new], got {v!r}")
            k, a, b = K_CAS, hashable(v[0]), hashable(v[1])
        else:
            raise ValueError(f"{model} model: unknown f {f!r} (op {op.index})")
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


def _search(s: _Spec, res: _Result, slice_steps: int = 2000, by_time: bool = True) -> Iterator[None]:
    """Porcupine-style WGL search over a doubly linked list of call/return events.

    A generator: yields every ``slice_steps`` steps so the caller can interleave partitions and
    enforce time limits. Sets ``res.valid`` when done.
    """
    ops = s.ops
    n = len(ops)
    # events: (time or history position, is_return, op id). At equal times a call sorts before a
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
    tail = m + 1
    nxt = list(range(1, m + 2)) + [0]
    prv = [0] + list(range(0, m + 1))
    is_ret = [False] * (m + 2)
    is_ret[tail] = True
    opid = [0] * (m + 2)
    match = [0] * (m + 2)
    callnode = [0] * n
    for node, (_, r, i) in enumerate(ev, start=1):
        opid[node] = i
        if r:
            is_ret[node] = True
            match[callnode[i]] = node
        else:
            callnode[i] = node
    bit = [1 << i for i in range(n)]
    is_ok = [op.type == "ok" for op in ops]
    remaining = sum(is_ok)
    # identical indeterminate ops: linearize them in invocation order only
    pred = [-1] * n
    last_of: dict[Any, int] = {}
    for node in range(1, m + 1):
        i = opid[node]
        if is_ret[node] or is_ok[i]:
            continue
        ek = (ops[i].f, s.kind[i], s.a[i], s.b[i], hashable(ops[i].value) if s.kind[i] == K_GEN else None)
        if ek in last_of:
            pred[i] = last_of[ek]
        last_of[ek] = i
    kind, A, B, gen = s.kind, s.a, s.b, s.gen
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
                ns = gen(state, ops[i])  # type: ignore[misc]
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
            if entry != tail:
                if entry > best_node:
                    best_node = entry
                    best_states = [state]
                    res.prefix = [ops[opid[e]].index for e, _ in stack]
                elif entry == best_node and len(best_states) < 16 and state not in best_states:
                    best_states.append(state)
            if not stack:
                res.valid = False
                break
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


def _state_text(state: Any, model: str, regs: list[str] | None = None) -> str:
    if model == "mutex":
        return "held" if state else "free"
    if model == "multi-register" and isinstance(state, tuple):
        names = regs or [str(i) for i in range(len(state))]
        return "{" + ", ".join(f"{r}: {vtext(v)}" for r, v in zip(names, state, strict=False)) + "}"
    return vtext(state)


def _op_text(op: Op, key: Any) -> str:
    k = "" if key is None else f" {key} ="
    if op.f == "read":
        what = f"read{k} {vtext(op.value)}"
    elif op.f == "write":
        what = f"wrote{k} {vtext(op.value)}"
    elif op.f == "cas" and isinstance(op.value, (list, tuple)) and len(op.value) == 2:
        what = f"compare-and-set{'' if key is None else ' ' + str(key)} from {vtext(op.value[0])} to {vtext(op.value[1])}"
    elif op.f in ("acquire", "release"):
        what = f"{op.f}d the lock" if op.f == "release" else "acquired the lock"
    elif op.f == "txn" and isinstance(op.value, (list, tuple)):
        what = "ran [" + ", ".join(f"{m[0]} {m[1]} {vtext(m[2])}" if len(m) == 3 else str(m) for m in op.value) + "]"
    else:
        what = f"did {op.f}{'' if key is None else ' ' + str(key)} {vtext(op.value)}"
    if op.is_final and op.f == "read":
        what = "returned" + what[len("read"):]
    return f"{Who(op)} {what}"


def _roles(s: _Spec, i: int, nil_reads_any: bool) -> tuple[bool, bool]:
    """(observes, writes) for compiled op ``i``: does it constrain the state, does it change it?"""
    k = s.kind[i]
    if k == K_READ:
        return True, False
    if k == K_WRITE:
        return False, True
    if k == K_CAS:
        return True, True
    micro = [m for m in s.ops[i].value if isinstance(m, (list, tuple)) and len(m) >= 3]
    reads = any(m[0] == "read" and not (m[2] is None and nil_reads_any) for m in micro)
    return reads, any(m[0] == "write" for m in micro)


def _judged(s: _Spec, nil_reads_any: bool) -> tuple[bool, int, int]:
    """Did the search judge anything on this key: an ok op that observes the state and another op
    that could have changed it? Also the counts of (ok observers, possible writers)."""
    obs: list[int] = []
    wrs: list[int] = []
    for i, op in enumerate(s.ops):
        o, w = _roles(s, i, nil_reads_any)
        if o and op.type == "ok":
            obs.append(i)
        if w:
            wrs.append(i)
    judged = bool(obs and wrs) and (len(obs) > 1 or len(wrs) > 1 or obs[0] != wrs[0])
    return judged, len(obs), len(wrs)


def _nothing_reason(specs: dict[Any, _Spec], nil_reads_any: bool) -> str | None:
    """None if some key had something to judge, else what was missing, in words."""
    observers = writers = 0
    for s in specs.values():
        judged, o, w = _judged(s, nil_reads_any)
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


def _explain(key: Any, s: _Spec, res: _Result, model: str, by_time: bool) -> dict[str, Any]:
    culprit = s.ops[res.culprit] if res.culprit is not None else None
    states = [_state_text(x, model, s.regs) for x in res.states]
    obj = ("the lock" if model == "mutex" else "the registers" if model == "multi-register"
           else "the register") if key is None else f"{key}"
    if culprit is None:
        expl = f"No order of the operations on {obj} is consistent with the {model} model."
        ops_idx: list[int] = []
    else:
        if by_time:
            c0, c1 = culprit.t0, culprit.t1
            concurrent = [o for o in s.ops if o is not culprit and o.t0 <= c1 and o.t1 >= c0]
            when = f"op {culprit.index}, from {secs(c0)} to {secs(c1)}"
        else:
            c0, c1 = culprit.index, culprit.cindex if culprit.cindex is not None else INF
            concurrent = [o for o in s.ops if o is not culprit and o.index < c1
                          and (o.cindex is None or o.type != "ok" or o.cindex > c0)]
            when = f"op {culprit.index}"
        could = " or ".join(states) if states else "nothing"
        if not concurrent:
            rest = "and no operation was concurrent with it to change that"
        else:
            goal = f"return {vtext(culprit.value)}" if culprit.f == "read" else "take effect"
            rest = (f"and no order of the {len(concurrent)} operation{'s' if len(concurrent) != 1 else ''} "
                    f"concurrent with it lets it {goal}")
        last = f", ending with op {res.prefix[-1]}" if res.prefix else ""
        hold = "be" if model == "mutex" else "hold"
        expl = (f"{_op_text(culprit, key)} ({when}), but that cannot be linearized: after the longest "
                f"linearizable prefix ({len(res.prefix)} ops{last}), {obj} could only {hold} {could}, {rest}.")
        ops_idx = culprit.ops + [o.index for o in concurrent[:20]]
    out = {"type": "nonlinearizable" if model != "mutex" else "mutex-violation", "key": key,
           "ops": sorted(set(ops_idx)), "explanation": expl,
           "op": culprit.index if culprit else None, "prefix": res.prefix[-50:],
           "prefix_length": len(res.prefix), "states": states}
    if culprit is not None and model in ("register", "cas-register"):
        out["last_state"] = " or ".join(states) if states else None
        out["context_ops"], out["context_roles"] = _context(s, res, culprit, by_time)
    return out


def _context(s: _Spec, res: _Result, culprit: Op, by_time: bool) -> tuple[list[int], dict[str, str]]:
    """The writes that make ``culprit`` an anomaly, for a picture to show (as Porcupine does): for
    each state the register could hold, the last write of the longest linearizable prefix that put
    it there; for a read, the latest writes of the value it returned. History indexes (invoke and
    completion), and a role in words per invoke index."""
    by_index = {o.index: i for i, o in enumerate(s.ops)}
    roles: dict[str, str] = {}
    idx: list[int] = []

    def written(i: int) -> Any:
        return s.a[i] if s.kind[i] == K_WRITE else s.b[i] if s.kind[i] == K_CAS else ILLEGAL

    def add(o: Op, role: str) -> None:
        if str(o.index) not in roles:
            roles[str(o.index)] = role
            idx.extend(o.ops)

    for state in res.states[:4]:
        for p in reversed(res.prefix):
            i = by_index.get(p)
            if i is not None and s.ops[i] is not culprit and written(i) == state:
                add(s.ops[i], f"the last linearizable state ({vtext(state)})")
                break
    if culprit.f == "read":
        want = hashable(culprit.value)
        before = (lambda o: o.t0 <= culprit.t1) if by_time else (
            lambda o: culprit.cindex is None or o.index < culprit.cindex)
        writers = [o for i, o in enumerate(s.ops) if o is not culprit and written(i) == want and before(o)]
        for o in writers[-2:]:
            add(o, f"the value read ({vtext(culprit.value)})")
    return sorted(set(idx)), roles


def check(history: list[dict[str, Any]], *, model: str = "register", initial: Any = None,
          time_limit_s: float = 60.0, key_time_limit_s: float = 20.0, nil_reads_any: bool = False,
          slice_steps: int = 5000, order: str = "time", empty_ok: bool = False, **_: Any) -> dict[str, Any]:
    """Check linearizability of every key (partition) against ``model``.

    ``initial``: the initial value (multi-register: a dict). ``nil_reads_any``: an ok read of nil
    means "value unknown" (Knossos's convention for Jepsen histories). ``order``: real-time order
    from ``time_ns`` ("time", our histories: the history index can put a completion before an invoke
    whose clock was read earlier) or from the position in the history ("index", Jepsen's convention:
    EDN histories). ``empty_ok``: a history with nothing to judge (no key with both a write that
    could have taken effect and an ok read) is valid, with a note (Knossos's answer for Jepsen
    histories, e.g. one with only nemesis ops); otherwise it is unknown with the reason. Returns ``valid``,
    ``keys`` (checked), ``unknown_keys`` (timed out), ``anomalies`` (the first illegal key's
    explanation), ``steps``, ``dropped`` (ops removed as constraining nothing).
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (expected one of {', '.join(MODELS)})")
    paired = pair(history)
    t_start = time.monotonic()
    specs: dict[Any, _Spec] = {}
    ignored: dict[str, int] = {}
    for key, kops in paired.by_key().items():
        if model in ("register", "cas-register"):
            fs = ("read", "write", "cas")  # a cas under the register model is an error, not ignored
            for o in kops:
                if o.f not in fs:
                    ignored[str(o.f)] = ignored.get(str(o.f), 0) + 1
            kops = [o for o in kops if o.f in fs]
        specs[key] = _compile(kops, model, initial, nil_reads_any)
    results = {k: _Result() for k in specs}
    # small keys first: a quick failure surfaces before a hard key eats the budget
    if order not in ("time", "index"):
        raise ValueError(f"order must be 'time' or 'index', got {order!r}")
    active = [(k, _search(specs[k], results[k], slice_steps, order == "time")) for k in
              sorted(specs, key=lambda k: len(specs[k].ops))]
    spent: dict[Any, float] = {k: 0.0 for k in specs}
    unknown: dict[Any, str] = {}
    bad_key: Any = None
    found_bad = False
    while active and not found_bad:
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
                    bad_key, found_bad = k, True
                    break
                continue
            if spent[k] > key_time_limit_s:
                unknown[k] = f"key time limit ({key_time_limit_s} s) reached after {results[k].steps} steps"
                continue
            if now - t_start > time_limit_s:
                unknown[k] = f"time limit ({time_limit_s} s) reached"
                continue
            nxt_round.append((k, g))
        active = nxt_round
    out: dict[str, Any] = {
        "model": model, "order": order, "keys": len(specs), "steps": sum(r.steps for r in results.values()),
        "dropped": sum(s.dropped for s in specs.values()),
        "ignored_ops": ignored,  # ops the model does not know (e.g. read-db): not judged here
        "time_s": round(time.monotonic() - t_start, 4),
    }
    if found_bad:
        out["valid"] = False
        out["anomalies"] = [_explain(bad_key, specs[bad_key], results[bad_key], model, order == "time")]
        out["anomaly_count"] = 1  # the search stops at the first key it cannot linearize
        out["unchecked_keys"] = sum(1 for r in results.values() if r.valid == "unknown")
    elif unknown:
        out["valid"] = "unknown"
        out["unknown_keys"] = {str(k): v for k, v in list(unknown.items())[:50]}
        out["error"] = f"{len(unknown)} key(s) not decided within the time limit"
    elif (why := _nothing_reason(specs, nil_reads_any)) is not None:
        if not empty_ok:
            return nothing_to_judge(why, **out)
        out["valid"] = True
        out["note"] = f"{NOTHING_TO_JUDGE}: {why} (valid by Knossos's convention)"
    else:
        out["valid"] = True
    return out
