"""The faster linearizability search (issue 17) gives exactly the results of the search it replaced:
the same verdict, anomaly, explanation, prefix, states — and the same step count, since it takes
the same steps in the same order.

Why: the search was rewritten for speed only. ``benchmarks/linearizable_bench.py`` keeps a copy of
the old search (nowhere else); every history here runs through ``linearizable.check`` with both,
and the results must be equal but for the wall time. Histories: the whole Knossos corpus, a set of
generated etcd-shaped cas-register histories, generated cache histories (our own shape, ordered by
time, with timeouts and failures), kv histories (inlined get/put plus ``step`` for append, and the
unpartitioned kv-single), and every built-in model with its inlined steps turned off.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_kv_model import kv_history

from checkers import corpus, models, synth
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
