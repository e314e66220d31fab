"""The faster linearizability search (issue 17) gives exactly the results of the search it replaced:
the same verdict, anomaly, explanation, prefix, states — and the same step count, since it takes
the same steps in the same order.

Why: the search was rewritten for speed only. ``benchmarks/linearizable_bench.py`` keeps a copy of
the old search (nowhere else); every history here runs through ``linearizable.check`` with both,
and the results must be equal but for the wall time. Histories: the whole Knossos corpus, a set of
generated etcd-shaped cas-register histories, generated cache histories (our own shape, ordered by
time, with timeouts and failures), kv histories (inlined get/put plus ``step`` for append, and the
unpartitioned kv-single), and every built-in model with its inlined steps turned off. Every test
runs twice: with the search's Python loop and with its compiled loop (``checkers/_wgl.c``), so
each is compared with the old search, and so with each other.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kv_model import kv_history

from checkers import corpus, models, synth, wgl
from core.ops import Op

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    name = "cc_linearizable_bench"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "linearizable_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


B = _bench()


@pytest.fixture(autouse=True, params=["python", "compiled"])
def loop(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: with the search's Python loop, and with its compiled loop (``checkers/_wgl.c``,
    built by ``make``). A machine with a C compiler must have built it: a missing or stale build fails
    here rather than quietly testing the Python loop twice."""
    if request.param == "compiled" and not wgl.available():
        if shutil.which("cc") is None:
            pytest.skip("no C compiler here: only the Python loop runs")
        pytest.fail(f"the compiled search is not available: {wgl.why_not()}")
    with wgl.python_only(request.param == "python"):
        yield request.param


def test_the_compiled_loop_is_what_runs(loop: str) -> None:
    """The compiled loop is really used when available (not the Python one under another name): a
    search over inlined register ops through the C library, and not for a model with its own step."""
    calls: list[int] = []
    real = wgl.search

    def spy(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*a, **kw)

    name, h, opts = B.generated_cases([0], count=1)[0]
    wgl.search = spy  # type: ignore[assignment]
    try:
        B.run(B.NEW, (name, h, opts), 60)
        assert len(calls) == (1 if loop == "compiled" else 0)
        calls.clear()
        B.run(B.NEW, (name, h, dict(opts, model=_NoInline("cas-register").m)), 60)
        assert calls == []
    finally:
        wgl.search = real  # type: ignore[assignment]


def assert_same(cases: list[tuple[str, list[dict[str, Any]], dict[str, Any]]]) -> None:
    diff, unknown = B.compare(cases, time_limit_s=60)
    assert not diff, f"old and new search disagree on: {diff}"
    assert not unknown, f"the old search did not decide: {unknown}"


def test_the_old_search_is_the_old_one() -> None:
    assert B.OLD is not B.NEW and B.OLD.__name__ == "legacy_search"


@pytest.mark.skipif(corpus.locate() is None, reason="conformance corpus not found")
def test_the_knossos_corpus() -> None:
    cases = B.corpus_cases()
    assert len(cases) >= 122
    assert_same(cases)


def test_generated_etcd_histories() -> None:
    """40 histories of 100-1,000 ops (seed 0: the benchmark's first set), valid and not."""
    cases = B.generated_cases([0])
    verdicts = [B.run(B.NEW, c, 60)["valid"] for c in cases]
    assert True in verdicts and False in verdicts
    assert_same(cases)


@pytest.mark.parametrize("model", ["register", "cas-register"])
def test_generated_cache_histories(model: str) -> None:
    """Our own shape: keys, time order, timed-out and failed writes, wide overlapping intervals; one
    planted stale read in half of them; and a copy with values colliding (mod 3), so that the
    search has to try orders."""
    cases = []
    for seed in range(30):
        rng = random.Random(seed)
        h = synth.generate(rng.randint(20, 120), keys=rng.randint(1, 3), processes=rng.randint(2, 8), write_p=0.4,
                           info_p=rng.choice([0, 0.1, 0.3]), fail_p=0.03, widen_ns=20_000_000, seed=seed)
        if seed % 2:
            h = (synth.inject_stale_read(h, rng) or (h, 0))[0]
        cases.append((f"synth-{seed}", h, {"model": model}))
        mod3 = [dict(o) for o in h]
        for o in mod3:
            if isinstance(o.get("value"), int) and o.get("process") != "nemesis":
                o["value"] %= 3
        cases.append((f"synth-{seed}-mod3", mod3, {"model": model, "initial": 0}))
    verdicts = [B.run(B.NEW, c, 60)["valid"] for c in cases]
    assert verdicts.count(True) >= 10 and verdicts.count(False) >= 10, verdicts
    assert_same(cases)


def test_kv_histories_both_ways() -> None:
    cases = []
    for seed in range(16):
        for corrupt in (False, True):
            h = kv_history(40, seed=seed, info_p=0.15, corrupt=corrupt)
            for model in ("kv", "kv-single"):
                cases.append((f"kv-{seed}-{corrupt}-{model}", h, {"model": model}))
    assert_same(cases)


class _NoInline:
    """A built-in model with every op through ``step`` (the search's generic path)."""

    def __init__(self, name: str) -> None:
        self.m = models.resolve(name, nil_reads_any=True)
        self.m.inline = self.inline  # type: ignore[method-assign]

    @staticmethod
    def inline(op: Op) -> None:
        return None


def test_every_model_through_step_only() -> None:
    cases = []
    for case in B.corpus_cases():
        _, h, opts = case
        cases.append((case[0] + " (step)", h, dict(opts, model=_NoInline(opts["model"]).m)))
    for name, h, opts in B.generated_cases([1], count=12):
        cases.append((name + " (step)", h, dict(opts, model=_NoInline("cas-register").m)))
    assert_same(cases)


@pytest.mark.parametrize("slice_steps", [1, 2, 7, 499, 501, 5000])
def test_keys_interleave_as_before(slice_steps: int) -> None:
    """Keys are searched a slice of steps each in turn; the new loop yields at the same steps as the
    old one (its own chunks, cut where it builds per-state code lists, never yield), so which key is
    found bad first, the steps counted and the keys left unchecked are the same for any slice
    length."""
    cases = []
    for seed in range(12):
        rng = random.Random(seed)
        h = synth.generate(rng.randint(40, 150), keys=4, processes=6, write_p=0.4, info_p=0.1, fail_p=0.03,
                           widen_ns=20_000_000, seed=seed)
        for o in h:
            if isinstance(o.get("value"), int) and o.get("process") != "nemesis":
                o["value"] %= 4
        cases.append((f"synth-{seed}-slice{slice_steps}", h, {"model": "cas-register", "initial": 0,
                                                              "slice_steps": slice_steps}))
    for name, h, opts in B.generated_cases([0], count=6):
        cases.append((name, h, dict(opts, slice_steps=slice_steps)))
    assert_same(cases)


def test_a_compiled_search_out_of_memory_is_unknown_not_valid(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search whose explored set passes its memory limit ends undecided: the key is unknown, with
    the reason, never a VALID that judged nothing (the real C loop, with the limit set low)."""
    if loop != "compiled":
        pytest.skip("the compiled loop's memory limit")
    name, h, opts = B.generated_cases([0], count=1)[0]
    assert B.run(B.NEW, (name, h, opts), 60)["valid"] is not None
    monkeypatch.setattr(wgl, "memory_limit", lambda: 20_000)
    out = B.run(B.NEW, (name, h, opts), 60)
    assert out["valid"] == "unknown", out
    assert "ran out of memory after" in str(out["unknown_keys"]), out["unknown_keys"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 90), keys=st.integers(1, 3), procs=st.integers(1, 7),
       info_p=st.sampled_from([0.0, 0.1, 0.4, 0.7]), mod=st.sampled_from([2, 3, 5, None]),
       model=st.sampled_from(["register", "cas-register"]), slice_steps=st.sampled_from([3, 50, 5000]))
def test_both_loops_agree_on_random_histories(loop: str, seed: int, n: int, keys: int, procs: int, info_p: float,
                                              mod: int | None, model: str, slice_steps: int) -> None:
    """Random histories, few values (so the search must try orders and backtrack), timeouts and
    failures, stale reads planted: the compiled loop's result equals the Python loop's, field for
    field (the step count too)."""
    if loop != "compiled":
        pytest.skip("compares the two loops itself: run once, under the compiled parameter")
    rng = random.Random(seed)
    h = synth.generate(n, keys=keys, processes=procs, write_p=0.45, info_p=info_p, fail_p=0.05,
                       widen_ns=rng.choice([0, 2_000_000, 20_000_000]), seed=seed)
    if seed % 2:
        h = (synth.inject_stale_read(h, rng) or (h, 0))[0]
    if mod is not None:
        for o in h:
            if isinstance(o.get("value"), int) and o.get("process") != "nemesis":
                o["value"] %= mod
    opts = {"model": model, "initial": 0 if mod else None, "slice_steps": slice_steps}
    case = ("random", h, opts)
    compiled = B.run(B.NEW, case, 60)
    with wgl.python_only():
        python = B.run(B.NEW, case, 60)
    assert B.same(compiled, python), (compiled, python)
