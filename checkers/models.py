"""Linearizability models: what an object's operations do, for the search in ``linearizable``.

Why this module exists: the search (Wing & Gong / Lowe) is the same for every kind of object; only
the object's sequential behaviour differs. As in Porcupine, a model is a small interface and the
search is generic over it; the built-in models (register, cas-register, multi-register, mutex, kv,
kv-single) are instances, and a user's own model is loaded by import path
(``--model mypkg.models:Counter``).

A model (the ``Model`` protocol):

* ``name``: what verdicts and explanations call it.
* ``init(initial, ops)``: the state before any op. ``initial`` is the user's initial value (nil by
  default); ``ops`` are the partition's ops, for a model whose state's shape depends on them (the
  multi-register's registers). States must be hashable: the search remembers (linearized ops,
  state) pairs it has explored.
* ``step(state, op)``: ``(ok, new_state)``: could ``op`` take effect in ``state``, and what state
  follows. It may look at ``op.f``, ``op.key`` and ``op.value`` only (ops with equal ones are
  interchangeable to the search). An op that never completed has ``type`` ``info`` and the
  invoked value. Raise ValueError for an op the model does not know: that is bad input.
* ``partition(ops)``: independent objects, ``{key: ops}``, each checked on its own
  (P-compositionality); by key for every built-in model.
* ``describe_op(op, key)``, ``describe_state(state)``: words for the explanation of an anomaly.

``BaseModel`` implements the protocol's defaults (partition by key, generic words) and the optional
hooks the search uses when a model has them: ``prepare`` (which ops constrain nothing and can be
dropped), ``roles`` (does an op observe / change the state: "was anything judged?"), ``ignores``
(ops the model does not judge, counted apart), ``inline`` (an op as one of the search's inlined
register steps, for speed; it must agree with ``step``) and ``context`` (extra evidence for an
anomaly). A user model may subclass it and define ``name``, ``init`` and ``step``; an object that
has only the protocol's methods is wrapped in one.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable
from typing import Any, Protocol, runtime_checkable

from core.ops import Op, Who, hashable, vtext

# the search's inlined steps (``BaseModel.inline``): a register read of a, a write of a, a
# compare-and-set from a to b
READ, WRITE, CAS = 0, 1, 2
NOT_A_WRITE = object()
_COMPOUND = (list, dict)  # values ``hashable`` changes; any other is its own hashable form


@runtime_checkable
class Model(Protocol):
    """What the linearizability search needs of an object (see the module docstring)."""

    name: str

    def init(self, initial: Any, ops: list[Op]) -> Hashable: ...

    def step(self, state: Any, op: Op) -> tuple[bool, Any]: ...

    def partition(self, ops: list[Op]) -> dict[Any, list[Op]]: ...

    def describe_op(self, op: Op, key: Any) -> str: ...

    def describe_state(self, state: Any) -> str: ...


def op_text(op: Op, key: Any) -> str:
    """An op in words: "Process 3 wrote x = 5", "The final read (after heal) returned 4"."""
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


class BaseModel:
    """Defaults for a model: subclass and define ``name``, ``init`` and ``step``."""

    name = "model"
    object_name = "the object"      # what the explanation calls an unkeyed partition
    state_verb = "hold"             # "... the object could only hold 3"
    anomaly_type = "nonlinearizable"

    def __init__(self, nil_reads_any: bool = False) -> None:
        # an ok read of nil means "value unknown" (Knossos's convention for Jepsen histories), for
        # the models that read
        self.nil_reads_any = nil_reads_any

    def init(self, initial: Any, ops: list[Op]) -> Hashable:
        return hashable(initial)

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        raise NotImplementedError

    def partition(self, ops: list[Op]) -> dict[Any, list[Op]]:
        """By key (invoke order kept)."""
        out: dict[Any, list[Op]] = {}
        for op in ops:
            lst = out.get(op.key)
            if lst is None:
                out[op.key] = [op]
            else:
                lst.append(op)
        return out

    def describe_op(self, op: Op, key: Any) -> str:
        return op_text(op, key)

    def describe_state(self, state: Any) -> str:
        return vtext(state)

    # -- optional hooks ------------------------------------------------------------------------------

    def ignores(self, op: Op) -> bool:
        """An op this model does not judge (e.g. ``read-db`` under a register): counted in the
        result's ``ignored_ops``, not searched."""
        return False

    def prepare(self, ops: list[Op]) -> tuple[list[Op], int]:
        """The ops the search needs, and how many were dropped as constraining nothing: ``fail``
        ops never happened; an op that did not complete ok and cannot change the state need never
        be linearized."""
        kept = [op for op in ops if op.type == "ok" or (op.type != "fail" and self.roles(op)[1])]
        return kept, len(ops) - len(kept)

    def roles(self, op: Op) -> tuple[bool, bool]:
        """(observes, changes): does ``op`` constrain the state, can it change it?"""
        return True, True

    def inline(self, op: Op) -> tuple[int, Any, Any] | None:
        """``op`` as (READ, value, None), (WRITE, value, None) or (CAS, old, new) on a register
        state, which the search runs without calling ``step``; None: call ``step``."""
        return None

    def context(self, ops: list[Op], culprit: Op, prefix: list[int], states: list[Any],
                by_time: bool) -> dict[str, Any]:
        """Extra fields for the anomaly of ``culprit`` (ops: the partition's searched ops; prefix:
        history indexes of the longest linearizable prefix; states: where it could leave the object)."""
        return {}


class _Wrapped(BaseModel):
    """A user object with the protocol's methods, given ``BaseModel``'s optional hooks."""

    def __init__(self, model: Any, name: str) -> None:
        super().__init__()
        self.name = str(getattr(model, "name", None) or name)
        self.init = model.init
        self.step = model.step
        for hook in ("partition", "describe_op", "describe_state", "ignores", "prepare", "roles", "inline",
                     "context", "object_name", "state_verb", "anomaly_type"):
            if hasattr(model, hook):
                setattr(self, hook, getattr(model, hook))


# -- the built-in models -------------------------------------------------------------------------------


class Register(BaseModel):
    """A read/write register."""

    name = "register"
    object_name = "the register"
    FS: tuple[str, ...] = ("read", "write")

    def ignores(self, op: Op) -> bool:
        return op.f not in ("read", "write", "cas")  # a cas under the register model is an error, not ignored

    def prepare(self, ops: list[Op]) -> tuple[list[Op], int]:
        """Drop ``fail`` ops, reads whose outcome is unknown, and indeterminate writes/cas whose new
        value no read or cas ever observes: had one taken effect, no op could consume its value, so
        some write must overwrite it before anything else succeeds, and removing it from a
        linearization keeps every other op legal ("it never happened" is always allowed)."""
        observed = set()  # values some op could observe: read results and cas preconditions
        for op in ops:
            f = op.f
            if f == "read":
                if op.type == "ok":
                    v = op.value
                    observed.add(hashable(v) if isinstance(v, _COMPOUND) else v)
            elif f == "cas" and op.type != "fail" and isinstance(op.value, (list, tuple)) and op.value:
                observed.add(hashable(op.value[0]))
        kept: list[Op] = []
        for op in ops:
            if op.type == "fail":
                continue
            if op.type != "ok":
                new = _installs(op)
                if new is not NOT_A_WRITE and hashable(new) not in observed:
                    continue
            if op.f == "read":
                if op.type != "ok" or (op.value is None and self.nil_reads_any):
                    continue  # an unknown outcome constrains nothing
            elif op.f == "cas" and op.f in self.FS:
                v = op.value
                if not isinstance(v, (list, tuple)) or len(v) != 2:
                    raise ValueError(f"cas op {op.index}: value must be [old, new], got {v!r}")
            elif op.f not in self.FS:
                raise ValueError(f"{self.name} model: unknown f {op.f!r} (op {op.index})")
            kept.append(op)
        return kept, len(ops) - len(kept)

    def inline(self, op: Op) -> tuple[int, Any, Any]:
        v = op.value
        if op.f == "read":
            return READ, hashable(v) if isinstance(v, _COMPOUND) else v, None
        if op.f == "write":
            return WRITE, hashable(v) if isinstance(v, _COMPOUND) else v, None
        return CAS, hashable(v[0]), hashable(v[1])

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.f == "read":
            return (op.value is None and self.nil_reads_any) or state == hashable(op.value), state
        if op.f == "write":
            return True, hashable(op.value)
        if op.f == "cas" and "cas" in self.FS:
            return state == hashable(op.value[0]), hashable(op.value[1])
        raise ValueError(f"{self.name} model: unknown f {op.f!r} (op {op.index})")

    def roles(self, op: Op) -> tuple[bool, bool]:
        return op.f != "write", op.f != "read"

    def context(self, ops: list[Op], culprit: Op, prefix: list[int], states: list[Any],
                by_time: bool) -> dict[str, Any]:
        """The writes that make ``culprit`` an anomaly, for a picture to show (as Porcupine does):
        for each state the register could hold, the last write of the longest linearizable prefix
        that put it there; for a read, the latest writes of the value it returned. History indexes
        (invoke and completion), and a role in words per invoke index."""
        texts = [self.describe_state(x) for x in states]
        by_index = {o.index: o for o in ops}
        roles: dict[str, str] = {}
        idx: list[int] = []

        def written(o: Op) -> Any:
            return hashable(_installs(o)) if o.f in ("write", "cas") else NOT_A_WRITE

        def add(o: Op, role: str) -> None:
            if str(o.index) not in roles:
                roles[str(o.index)] = role
                idx.extend(o.ops)

        for state in states[:4]:
            for p in reversed(prefix):
                o = by_index.get(p)
                if o is not None and o is not culprit and written(o) == state:
                    add(o, f"the last linearizable state ({vtext(state)})")
                    break
        if culprit.f == "read":
            want = hashable(culprit.value)
            before = (lambda o: o.t0 <= culprit.t1) if by_time else (
                lambda o: culprit.cindex is None or o.index < culprit.cindex)
            writers = [o for o in ops if o is not culprit and written(o) == want and before(o)]
            for o in writers[-2:]:
                add(o, f"the value read ({vtext(culprit.value)})")
        return {"last_state": " or ".join(texts) if texts else None,
                "context_ops": sorted(set(idx)), "context_roles": roles}


def _installs(op: Op) -> Any:
    """The value a write or a well-formed cas would install, else NOT_A_WRITE."""
    if op.f == "write":
        return op.value
    if op.f == "cas" and isinstance(op.value, (list, tuple)) and len(op.value) == 2:
        return op.value[1]
    return NOT_A_WRITE


class CasRegister(Register):
    """A register with compare-and-set: ``cas`` of [old, new]."""

    name = "cas-register"
    FS = ("read", "write", "cas")


class Mutex(BaseModel):
    """A lock: ``acquire`` when free, ``release`` when held. The state is held (True) or free."""

    name = "mutex"
    object_name = "the lock"
    state_verb = "be"
    anomaly_type = "mutex-violation"

    def init(self, initial: Any, ops: list[Op]) -> bool:
        return False if initial is None else bool(initial)

    def prepare(self, ops: list[Op]) -> tuple[list[Op], int]:
        kept = [op for op in ops if op.type != "fail"]
        for op in kept:
            if op.f not in ("acquire", "release"):
                raise ValueError(f"mutex model: unknown f {op.f!r} (op {op.index})")
        return kept, len(ops) - len(kept)

    def inline(self, op: Op) -> tuple[int, Any, Any]:
        return (CAS, False, True) if op.f == "acquire" else (CAS, True, False)

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.f == "acquire":
            return not state, True
        if op.f == "release":
            return bool(state), False
        raise ValueError(f"mutex model: unknown f {op.f!r} (op {op.index})")

    def describe_state(self, state: Any) -> str:
        return "held" if state else "free"


class MultiRegister(BaseModel):
    """Registers read and written together: ``txn`` of [f, register, value] micro-ops. The state
    is ((register, value), ...) in register order, over every register the partition names."""

    name = "multi-register"
    object_name = "the registers"

    def init(self, initial: Any, ops: list[Op]) -> tuple[tuple[str, Any], ...]:
        regs = sorted({str(m[1]) for op in ops if isinstance(op.value, (list, tuple))
                       for m in op.value if isinstance(m, (list, tuple)) and len(m) >= 2}
                      | ({str(k) for k in initial} if isinstance(initial, dict) else set()))
        init = initial if isinstance(initial, dict) else {}
        return tuple((r, hashable(init.get(r, init.get(r.lstrip(":"), None)))) for r in regs)

    def prepare(self, ops: list[Op]) -> tuple[list[Op], int]:
        kept: list[Op] = []
        for op in ops:
            if op.type == "fail":
                continue
            if op.f != "txn" or not isinstance(op.value, (list, tuple)):
                raise ValueError(f"multi-register model: expected f txn with micro-ops (op {op.index})")
            if op.type != "ok" and all(m[0] == "read" for m in op.value):
                continue
            kept.append(op)
        return kept, len(ops) - len(kept)

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        regs = dict(state)
        for m in op.value:
            f, r, v = m[0], str(m[1]), hashable(m[2])
            if f == "read":
                if v is None and self.nil_reads_any:
                    continue
                if regs[r] != v:
                    return False, state
            elif f == "write":
                regs[r] = v
            else:
                raise ValueError(f"multi-register: unknown micro-op {f!r}")
        return True, tuple(regs.items())

    def roles(self, op: Op) -> tuple[bool, bool]:
        micro = [m for m in op.value if isinstance(m, (list, tuple)) and len(m) >= 3]
        reads = any(m[0] == "read" and not (m[2] is None and self.nil_reads_any) for m in micro)
        return reads, any(m[0] == "write" for m in micro)

    def describe_state(self, state: Any) -> str:
        return "{" + ", ".join(f"{r}: {vtext(v)}" for r, v in state) + "}"


class Kv(BaseModel):
    """A key-value store of strings, Porcupine's kv shape: ``get`` (returns the key's string),
    ``put`` (sets it), ``append`` (concatenates to it); a missing key holds "" (a get of nil reads
    as ""). Partitioned by key: each key is its own object, checked on its own. ``initial``: one
    string for every key, or a dict {key: string}.

    ``get`` and ``put`` run as the search's inlined register read and write; ``append`` calls
    ``step`` (its result depends on the state)."""

    name = "kv"
    object_name = "the store"
    FS = ("get", "put", "append")

    def init(self, initial: Any, ops: list[Op]) -> Hashable:
        key = ops[0].key if ops else None
        return self._initial(initial, key)

    @staticmethod
    def _initial(initial: Any, key: Any) -> str:
        if isinstance(initial, dict):
            v = initial.get(key, initial.get(str(key), ""))
        else:
            v = initial
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ValueError(f"kv model: initial values are strings, got {v!r}")
        return v

    def prepare(self, ops: list[Op]) -> tuple[list[Op], int]:
        """Drop ``fail`` ops and gets that did not complete ok (they constrain nothing); a put or an
        append that may have taken effect is kept."""
        kept: list[Op] = []
        for op in ops:
            if op.f not in self.FS:
                raise ValueError(f"{self.name} model: unknown f {op.f!r} (op {op.index}); expected get, put "
                                 "or append")
            if op.type == "fail" or (op.f == "get" and op.type != "ok"):
                continue
            if op.value is not None and not isinstance(op.value, str):
                raise ValueError(f"{self.name} model: values are strings, got {op.value!r} (op {op.index})")
            if op.f != "get" and op.value is None:
                raise ValueError(f"{self.name} model: {op.f} needs a string value (op {op.index})")
            kept.append(op)
        return kept, len(ops) - len(kept)

    def inline(self, op: Op) -> tuple[int, Any, Any] | None:
        if op.f == "get":
            return READ, op.value or "", None
        if op.f == "put":
            return WRITE, op.value, None
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.f == "get":
            return state == (op.value or ""), state
        if op.f == "put":
            return True, op.value
        if op.f == "append":
            return True, state + op.value
        raise ValueError(f"{self.name} model: unknown f {op.f!r} (op {op.index})")

    def roles(self, op: Op) -> tuple[bool, bool]:
        return op.f == "get", op.f != "get"

    def describe_op(self, op: Op, key: Any) -> str:
        k = "" if key is None else f" {key}"
        if op.f == "get":
            what = f"got{k} = {vtext(op.value or '')}"
        elif op.f == "put":
            what = f"put{k} = {vtext(op.value)}"
        else:
            what = f"appended {vtext(op.value)} to{k or ' the key'}"
        return f"{Who(op)} {what}"


class KvSingle(Kv):
    """The kv model as one object over every key (no partitioning): the state is the whole store,
    ((key, string), ...) in key order, keys at "" left out. For a history whose keys are not
    independent, or to compare with the partitioned check: every op can be ordered against every
    other, so the search is much larger (exponential in the concurrency over all keys, not per key),
    and a big history ends unknown at the time limit rather than hanging."""

    name = "kv-single"

    def init(self, initial: Any, ops: list[Op]) -> Hashable:
        keys = {op.key for op in ops} | (set(initial) if isinstance(initial, dict) else set())
        store = {k: self._initial(initial, k) for k in keys}
        return tuple(sorted(((k, v) for k, v in store.items() if v), key=lambda kv: str(kv[0])))

    def partition(self, ops: list[Op]) -> dict[Any, list[Op]]:
        return {None: list(ops)} if ops else {}

    def inline(self, op: Op) -> None:
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        store = dict(state)
        cur = store.get(op.key, "")
        if op.f == "get":
            return cur == (op.value or ""), state
        if op.f == "put":
            new = op.value
        elif op.f == "append":
            new = cur + op.value
        else:
            raise ValueError(f"{self.name} model: unknown f {op.f!r} (op {op.index})")
        if new:
            store[op.key] = new
        else:
            store.pop(op.key, None)
        return True, tuple(sorted(store.items(), key=lambda kv: str(kv[0])))

    def describe_op(self, op: Op, key: Any) -> str:
        return super().describe_op(op, op.key)

    def describe_state(self, state: Any) -> str:
        return "{" + ", ".join(f"{k}: {vtext(v)}" for k, v in state) + "}"


BUILTIN: dict[str, type[BaseModel]] = {m.name: m for m in (Register, CasRegister, MultiRegister, Mutex,
                                                          Kv, KvSingle)}


def resolve(spec: str | Any, *, nil_reads_any: bool = False) -> BaseModel:
    """A model from a built-in name, an import path ``module.path:Name`` (a class, instantiated
    without arguments, or an instance), or a model object. Raises ValueError in one line."""
    if not isinstance(spec, str):
        obj = spec() if isinstance(spec, type) else spec
        return _as_base(obj, type(obj).__name__, repr(spec))
    if spec in BUILTIN:
        return BUILTIN[spec](nil_reads_any=nil_reads_any)
    mod_name, colon, attr = spec.partition(":")
    if not colon or not mod_name or not attr:
        raise ValueError(f"unknown model {spec!r} (expected one of {', '.join(BUILTIN)}, "
                         f"or module.path:Name)")
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to see, in one line
        raise ValueError(f"model {spec!r}: cannot import {mod_name!r}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - a model that cannot be built is bad input
            raise ValueError(f"model {spec!r}: cannot instantiate it: {type(e).__name__}: {e}") from None
    return _as_base(obj, attr.rpartition(".")[2], spec)


def _as_base(obj: Any, name: str, what: str) -> BaseModel:
    missing = [m for m in ("init", "step") if not callable(getattr(obj, m, None))]
    if missing:
        raise ValueError(f"model {what}: not a linearizability model (missing {', '.join(missing)})")
    if isinstance(obj, BaseModel):
        return obj
    return _Wrapped(obj, name)
