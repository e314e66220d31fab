"""The compiled inner loop of the linearizability search, when it is built (issue 17).

Why this module exists: ``linearizable._search`` spends its time in one Python loop. For the common
case — every op of a partition is a register read, write or compare-and-set (the model's inlined
steps) — ``_wgl.c`` runs the same loop in C: the same steps in the same order, so the same verdict,
explanation, prefix, states and step count (``tests/checkers/test_search_equivalence.py`` compares
the two, result for result, on every history it has). ``make`` builds ``checkers/_wgl.so`` with the
machine's C compiler (``scripts/bootstrap.sh``); where it is missing, or ``CACHECERT_PURE_PYTHON=1``,
``available()`` is False and the Python loop runs. A plain shared library loaded with ctypes: no
Python headers or ABI tag needed, and the loop takes flat int arrays only (the caller numbers the
model's states).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LIB_PATH = Path(__file__).with_name("_wgl.so")
SOURCE = Path(__file__).with_name("_wgl.c")
RUNNING, VALID, INVALID, NOMEM = 0, 1, 2, 3
_SEED = 0x5EED_C0DE_CAFE_F00D
_lib: Any = None
_why_not: str | None = None
_off = False  # turned off for a block (``python_only``): the equivalence tests and the benchmark


def memory_limit() -> int:
    """Bytes the explored set of one search may take: half the machine's memory (a search that
    needs more ends unknown, where the Python loop would run the machine out of memory)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 4 << 30


def _load() -> Any:
    global _lib, _why_not
    if _lib is not None or _why_not is not None:
        return _lib
    if os.environ.get("CACHECERT_PURE_PYTHON") == "1":
        _why_not = "CACHECERT_PURE_PYTHON=1"
        return None
    if not LIB_PATH.exists():
        _why_not = f"{LIB_PATH.name} not built (make builds it with cc)"
        return None
    if SOURCE.exists() and SOURCE.stat().st_mtime > LIB_PATH.stat().st_mtime:
        _why_not = f"{LIB_PATH.name} is older than {SOURCE.name} (make rebuilds it)"
        return None
    try:
        lib = ctypes.CDLL(str(LIB_PATH))
    except OSError as e:
        _why_not = f"{LIB_PATH.name} does not load: {e}"
        return None
    p32, vp = ctypes.POINTER(ctypes.c_int32), ctypes.c_void_p
    lib.wgl_new.restype = vp
    lib.wgl_new.argtypes = [ctypes.c_int32, p32, p32, p32, p32, p32, p32, ctypes.c_int32, ctypes.c_int32,
                            ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint64]
    lib.wgl_run.restype = ctypes.c_int
    lib.wgl_run.argtypes = [vp, ctypes.c_int64]
    for name in ("wgl_taken", "wgl_cache_size"):
        getattr(lib, name).restype = ctypes.c_int64
        getattr(lib, name).argtypes = [vp]
    lib.wgl_best_node.restype = ctypes.c_int32
    lib.wgl_best_node.argtypes = [vp]
    for name in ("wgl_best_states", "wgl_best_path"):
        getattr(lib, name).restype = ctypes.c_int32
        getattr(lib, name).argtypes = [vp, p32]
    lib.wgl_free.restype = None
    lib.wgl_free.argtypes = [vp]
    _lib = lib
    return lib


def available() -> bool:
    """Is the compiled loop here (built, current, loadable, not turned off)?"""
    return not _off and _load() is not None


@contextlib.contextmanager
def python_only(on: bool = True) -> Iterator[None]:
    """Inside this block the search runs its Python loop (``on=False``: as usual)."""
    global _off
    saved, _off = _off, on
    try:
        yield
    finally:
        _off = saved


def why_not() -> str | None:
    """Why the compiled loop is not used, in words (None when it is)."""
    _load()
    return _why_not


def _ints(xs: list[int]) -> tuple[array, Any]:
    a = array("i", xs)
    return a, (ctypes.c_int32 * len(a)).from_buffer(a) if len(a) else None


class Outcome:
    """What the C loop found, in list nodes and state numbers (the caller maps them back)."""

    __slots__ = ("status", "steps", "cache_size", "best_node", "best_states", "best_path")

    def __init__(self) -> None:
        self.status = RUNNING
        self.steps = 0
        self.cache_size = 0
        self.best_node = -1
        self.best_states: list[int] = []
        self.best_path: list[int] = []


def search(code: list[int], bit: list[int], cmp: list[int], aft: list[int], match: list[int],
           blk: list[int], n: int, init_state: int, remaining: int, slice_steps: int,
           out: Outcome) -> Iterator[int]:
    """Run the loop over the given per-node arrays (see ``_wgl.c``), yielding the step count at the
    points the Python loop yields (after step ``slice_steps - 1``, then every ``slice_steps``);
    fills ``out`` when decided, or out of memory (the allocator's, or ``memory_limit()`` for the
    explored set)."""
    lib = _load()
    assert lib is not None, "the compiled search is not available"
    keep = [_ints(x) for x in (code, bit, cmp, aft, match, blk)]
    w = lib.wgl_new(len(code), *(p for _, p in keep), n, init_state, remaining, _SEED, memory_limit())
    del keep  # copied by wgl_new
    if not w:
        out.status = NOMEM
        return
    try:
        until = slice_steps - 1
        while True:
            status = lib.wgl_run(w, until)
            if status != RUNNING:
                break
            yield until + 1
            until += slice_steps
        out.status = status
        out.steps = lib.wgl_taken(w)
        out.cache_size = lib.wgl_cache_size(w)
        out.best_node = lib.wgl_best_node(w)
        buf = (ctypes.c_int32 * max(n + 1, 16))()
        out.best_states = list(buf[:lib.wgl_best_states(w, buf)])
        out.best_path = list(buf[:lib.wgl_best_path(w, buf)])
    finally:
        lib.wgl_free(w)
