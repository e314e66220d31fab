"""Hypothesis properties: histories from a real sequential execution with randomly widened intervals.

They must pass both linearizability checkers and staleness at the bound they satisfy (0 ms); with
one injected stale read, lost write, garbage read or torn read they must fail with that anomaly
named; and the search and the version-graph checker agree on every history both can judge.
"""

from __future__ import annotations

import os
import random
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from checkers import durability, integrity, linearizable, session, staleness, synth, versions
from core.ops import clear_memo

# CACHECERT_EXAMPLES=1000 for a longer hunt (the default keeps the suite quick)
SETTINGS = settings(max_examples=int(os.environ.get("CACHECERT_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

gen_args = st.fixed_dictionaries({
    "n_ops": st.integers(5, 120),
    "keys": st.integers(1, 4),
    "processes": st.integers(1, 6),
    "write_p": st.floats(0.1, 0.7),
    "widen_ns": st.sampled_from([0, 500_000, 2_000_000, 10_000_000]),
    "step_ns": st.sampled_from([100_000, 1_000_000]),
    "info_p": st.sampled_from([0.0, 0.0, 0.05, 0.2]),
    "fail_p": st.sampled_from([0.0, 0.05]),
    "seed": st.integers(0, 2**32 - 1),
})


def run(fn: Any, h: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    clear_memo()
    return fn(h, **kw)


def types(r: dict[str, Any]) -> set[str]:
    return {a["type"] for a in r.get("anomalies") or []}


def nothing(r: dict[str, Any]) -> bool:
    """The checker saw nothing it judges (unknown, with that reason)."""
    return r["valid"] == "unknown" and str(r.get("reason", "")).startswith("nothing to judge")


def passes(r: dict[str, Any]) -> bool:
    return r["valid"] is True or nothing(r)


def read_and_written_key(h: list[dict[str, Any]]) -> bool:
    """Some key has an ok read and a write that took effect for sure (ok) or was seen (an info write
    whose value a read returned): the linearizability checkers have something to judge."""
    seen = {(o["key"], str(o.get("value"))) for o in h if o.get("f") == "read" and o["type"] == "ok"}
    w = {o["key"] for o in h if o.get("f") == "write" and (
        o["type"] == "ok" or (o["type"] == "info" and (o["key"], str(o.get("value"))) in seen))}
    return any(k in w for k, _ in seen)


@SETTINGS
@given(gen_args)
def test_real_executions_pass(kw: dict[str, Any]) -> None:
    h = synth.generate(**kw)
    judged = read_and_written_key(h)
    for fn in (linearizable.check, versions.check):
        r = run(fn, h)
        assert r["valid"] is True if judged else nothing(r), r
    st_r = run(staleness.check, h, bound_ms=0)
    assert passes(st_r) and st_r["stale_reads"] == 0
    assert passes(run(session.check, h))
    assert passes(run(durability.check, h))


@SETTINGS
@given(gen_args, st.integers(0, 2**32 - 1), st.booleans())
def test_injected_stale_read_is_named(kw: dict[str, Any], seed: int, serial: bool) -> None:
    """The version checkers always see it. The search, which knows no versions, must see it when
    the DB's version order is forced by real time (writes to a key do not overlap); otherwise it
    may legitimately find another write order that explains the read."""
    got = synth.inject_stale_read(synth.generate(**kw, serial_writes=serial), random.Random(seed))
    assume(got is not None)
    h, idx = got
    if serial:
        assert run(linearizable.check, h)["valid"] is False
    ver = run(versions.check, h)
    assert ver["valid"] is False
    assert types(ver) & {"stale-read", "non-monotonic-read"}, ver
    assert any(idx in a["ops"] for a in ver["anomalies"])
    stl = run(staleness.check, h, bound_ms=0)
    assert stl["valid"] is False and types(stl) == {"stale-read"}
    assert any(idx in a["ops"] for a in stl["anomalies"])


@SETTINGS
@given(gen_args, st.integers(0, 2**32 - 1))
def test_injected_garbage_read_is_named(kw: dict[str, Any], seed: int) -> None:
    got = synth.inject_garbage_read(synth.generate(**kw), random.Random(seed))
    assume(got is not None)
    h, idx = got
    assert run(linearizable.check, h)["valid"] is False
    ver = run(versions.check, h)
    assert ver["valid"] is False and "garbage-read" in types(ver)
    assert any(a["type"] == "garbage-read" and idx in a["ops"] for a in ver["anomalies"])


@SETTINGS
@given(gen_args, st.integers(0, 2**32 - 1), st.booleans())
def test_injected_lost_write_is_named(kw: dict[str, Any], seed: int, serial: bool) -> None:
    got = synth.inject_lost_write(synth.generate(**kw, serial_writes=serial), random.Random(seed))
    assume(got is not None)
    h, key = got
    d = run(durability.check, h)
    assert d["valid"] is False and types(d) == {"lost-write"}
    assert all(a["key"] == key for a in d["anomalies"])
    # the final DB read is part of the history: the linearizability checkers see it too
    assert run(versions.check, h)["valid"] is False
    if serial:
        assert run(linearizable.check, h)["valid"] is False


@SETTINGS
@given(gen_args, st.integers(0, 2**32 - 1))
def test_injected_torn_read_is_named(kw: dict[str, Any], seed: int) -> None:
    base = synth.generate(**kw, fields=("a", "b", "c"))
    assert passes(run(integrity.check, base))
    got = synth.inject_torn_read(base, random.Random(seed))
    assume(got is not None)
    h, idx = got
    r = run(integrity.check, h)
    assert r["valid"] is False and types(r) == {"torn-read"}
    assert r["anomalies"][0]["ops"][0] == idx


def _mutate_reads(h: list[dict[str, Any]], rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Make ``n`` reads return another version of their key (value and version kept consistent)."""
    import copy

    h = copy.deepcopy(h)
    by_key: dict[str, list[tuple[Any, int]]] = {}
    for r in h:
        if r.get("f") == "write" and r["type"] == "ok":
            by_key.setdefault(r["key"], []).append((r["value"], r["version"]))
    reads = [r for r in h if r.get("f") == "read" and r["type"] == "ok"]
    for r in rng.sample(reads, min(n, len(reads))):
        opts = [(None, 0)] + by_key.get(r["key"], [])
        r["value"], r["version"] = opts[int(rng.random() * len(opts))]
    return h


@SETTINGS
@given(gen_args, st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_search_and_version_graph_agree(kw: dict[str, Any], seed: int, n_mut: int) -> None:
    """With writes to a key serialised in real time (so the version order is forced by real time)
    and no indeterminate writes, both checkers judge the same thing and must agree."""
    kw = dict(kw, info_p=0.0, fail_p=0.0)
    h = synth.generate(**kw, serial_writes=True)
    h = _mutate_reads(h, random.Random(seed), n_mut)
    lin = run(linearizable.check, h)
    ver = run(versions.check, h)
    graph = run(versions.check, h, method="graph")
    if nothing(lin):  # no key both written and read: neither has anything to judge
        assert nothing(ver) and nothing(graph), (lin, ver, graph)
        return
    assert lin["valid"] in (True, False)
    assert lin["valid"] == ver["valid"], (lin, ver)
    assert graph["valid"] == ver["valid"], (graph, ver)
