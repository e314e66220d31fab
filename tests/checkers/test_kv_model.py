"""The kv model (Porcupine's kv shape: get / put / append over strings, a missing key is ""), judged
both ways: per key (``--model kv``, the model's partition) and as one object over every key
(``kv-single``), through the API and through ``cachecert check``.

Why: a key-value store is the commonest object a cache fronts, and its append makes the state a
function of the order of writes, not only of the last one. Partitioned by key, each key is a small
search; unpartitioned, every op may be ordered against every other, and the search can blow up:
it must then end unknown at the time limit, never hang.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hist_builder import H

from checkers import linearizable, models
from checkers.cli import check_main
from core.ops import clear_memo


def check(h: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    clear_memo()
    return linearizable.check(h, **kw)


def kv_history(n_ops: int, *, seed: int, keys: int = 3, clients: int = 4, info_p: float = 0.0,
               corrupt: bool = False, spread_ms: float = 3.0) -> list[dict[str, Any]]:
    """A kv history from a real sequential execution: every op takes effect at a point inside its
    interval (so it is linearizable), clients overlap. ``corrupt``: one ok get returns a string the
    key never held at any time (not linearizable under either model)."""
    rng = random.Random(seed)
    store: dict[str, str] = {}
    free = [0.0] * clients
    proc = list(range(clients))
    point = 0.0
    h = H()
    gets = []
    for _ in range(n_ops):
        point += rng.uniform(0.1, spread_ms / clients)
        c = min(range(clients), key=lambda x: free[x])
        point = max(point, free[c] + 0.01)
        t0 = max(free[c] + 0.01, point - rng.uniform(0, spread_ms / 2))
        t1 = point + rng.uniform(0, spread_ms / 2)
        key = f"k{rng.randrange(keys)}"
        r = rng.random()
        timed_out = rng.random() < info_p
        if r < 0.4:
            if not timed_out:
                h.op(proc[c], "get", key, store.get(key, ""), t0, t1)
                gets.append(len(h.events) - 1)
        elif r < 0.6:
            v = rng.choice("xyz")
            if not timed_out or rng.random() < 0.5:
                store[key] = v
            h.op(proc[c], "put", key, v, t0, None if timed_out else t1)
        else:
            v = rng.choice("abc")
            if not timed_out or rng.random() < 0.5:
                store[key] = store.get(key, "") + v
            h.op(proc[c], "append", key, v, t0, None if timed_out else t1)
        free[c] = t1
        if timed_out:
            proc[c] += clients
    out = h.build()
    if corrupt:
        comp = [o for o in out if o["f"] == "get" and o["type"] == "ok"]
        comp[len(comp) // 2]["value"] = "never-held"
    return out


def test_kv_is_a_builtin_model_partitioned_by_key() -> None:
    for name in ("kv", "kv-single"):
        m = models.resolve(name)
        assert isinstance(m, models.Model) and m.name == name and name in linearizable.MODELS
    h = (H().op(0, "put", "x", "a", 0, 10).op(1, "append", "x", "b", 5, 20).op(2, "get", "x", "ab", 21, 25)
         .op(2, "append", "y", "z", 0, 3).op(3, "get", "y", "z", 4, 6).op(3, "get", "w", "", 7, 8).build())
    assert set(models.resolve("kv").partition(linearizable.pair(h).ops)) == {"x", "y", "w"}
    r = check(h, model="kv")
    assert r["valid"] is True and r["keys"] == 3, r
    single = check(h, model="kv-single")
    assert single["valid"] is True and single["keys"] == 1, single


def test_kv_semantics_both_ways() -> None:
    """get returns the current string, put sets, append concatenates; a missing key (or a get of nil)
    reads as ""; concurrent appends may land in either order, sequential ones may not."""
    concurrent = (H().op(0, "append", "k", "a", 0, 10).op(1, "append", "k", "b", 0, 10)
                  .op(2, "get", "k", "ba", 11, 12).build())
    sequential = (H().op(0, "append", "k", "a", 0, 10).op(1, "append", "k", "b", 11, 20)
                  .op(2, "get", "k", "ba", 21, 22).build())
    missing = H().op(0, "get", "k", None, 0, 1).op(1, "put", "k", "v", 2, 3).op(2, "get", "k", "v", 4, 5).build()
    put_resets = (H().op(0, "append", "k", "a", 0, 1).op(1, "put", "k", "z", 2, 3).op(1, "append", "k", "q", 4, 5)
                  .op(2, "get", "k", "zq", 6, 7).build())
    for model in ("kv", "kv-single"):
        assert check(concurrent, model=model)["valid"] is True
        assert check(missing, model=model)["valid"] is True
        assert check(put_resets, model=model)["valid"] is True
        bad = check(sequential, model=model)
        assert bad["valid"] is False, (model, bad)
        a = bad["anomalies"][0]
        assert a["explanation"].startswith("Process 2 got k = 'ba' (op 4"), a["explanation"]
        assert a["states"] == (["'ab'"] if model == "kv" else ["{k: 'ab'}"]), a["states"]


def test_kv_initial_value() -> None:
    h = H().op(0, "append", "k", "b", 0, 1).op(1, "get", "k", "ab", 2, 3).op(1, "get", "j", "", 4, 5).build()
    for model in ("kv", "kv-single"):
        assert check(h, model=model, initial={"k": "a"})["valid"] is True
        assert check(h, model=model)["valid"] is False


def test_an_indeterminate_append_may_or_may_not_have_happened() -> None:
    maybe = H().op(0, "append", "k", "a", 0, None).op(1, "append", "k", "b", 5, 6)
    for seen, ok in (("b", True), ("ab", True), ("ba", True), ("a", False), ("bb", False)):
        h = H()
        h.events = list(maybe.events)
        h.op(2, "get", "k", seen, 10, 11)
        for model in ("kv", "kv-single"):
            assert check(h.build(), model=model)["valid"] is ok, (seen, model)


@pytest.mark.parametrize("seed", range(12))
def test_kv_and_kv_single_agree_on_generated_histories(seed: int) -> None:
    """A real execution is linearizable under both models; one get of a string the key never held is
    not, under either, and both blame that get."""
    good = kv_history(40, seed=seed, info_p=0.1 if seed % 2 else 0.0)
    bad = kv_history(40, seed=seed, info_p=0.1 if seed % 2 else 0.0, corrupt=True)
    for model in ("kv", "kv-single"):
        assert check(good, model=model)["valid"] is True, model
        r = check(bad, model=model)
        assert r["valid"] is False, model
        assert "'never-held'" in r["anomalies"][0]["explanation"]


def test_step_agrees_with_the_inlined_get_and_put() -> None:
    m = models.resolve("kv")
    generic = models.resolve("kv")
    generic.inline = lambda op: None  # type: ignore[method-assign]
    for seed in range(20):
        for corrupt in (False, True):
            h = kv_history(30, seed=seed, info_p=0.15, corrupt=corrupt)
            a, b = check(h, model=m), check(h, model=generic)
            for r in (a, b):
                r.pop("time_s")
                r.pop("model")
            assert a == b


def test_kv_single_ends_unknown_at_the_time_limit() -> None:
    """Many keys, much concurrency, timed-out appends: per key it is quick; as one object the search
    is far too big. It must stop at the time limit (unknown, with the reason), not hang."""
    h = kv_history(400, seed=7, keys=12, clients=10, info_p=0.3, spread_ms=40.0)
    per_key = check(h, model="kv", time_limit_s=30)
    assert per_key["valid"] is True and per_key["keys"] == 12, per_key
    limit = 1.0
    t = time.monotonic()
    single = check(h, model="kv-single", time_limit_s=limit, key_time_limit_s=limit)
    took = time.monotonic() - t
    assert took < limit + 2.0, took
    assert single["valid"] == "unknown", single  # still undecided after 20 s when this was written
    assert "time limit (1.0 s) reached" in single["unknown_keys"]["None"], single


def _write(path: Path, h: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in h))
    return path


def test_kv_through_cachecert_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cachecert check history.jsonl -c linearizable --model kv`` (and kv-single): exit 0 valid, 1
    not linearizable, with the kv words in the results; a non-string value is bad input (exit 2, the
    checker's error named). Without ``-c`` the cache checkers that fit a register history are chosen too and have
    nothing to judge in a kv one, so the linearizable checker is named."""
    for corrupt, code in ((False, 0), (True, 1)):
        hist = _write(tmp_path / f"h{corrupt}.jsonl", kv_history(40, seed=3, info_p=0.1, corrupt=corrupt))
        for model in ("kv", "kv-single"):
            out = tmp_path / f"r{corrupt}{model}.json"
            argv = [str(hist), "-c", "linearizable", "--model", model, "--out", str(out)]
            assert check_main(argv) == code, capsys.readouterr()
            r = json.loads(out.read_text())["checkers"]["linearizable"]
            assert r["model"] == model and r["valid"] is (code == 0)
            if code:
                assert "got" in r["anomalies"][0]["explanation"] and "'never-held'" in capsys.readouterr().out
    h = H().op(0, "put", "k", 5, 0, 1).op(1, "get", "k", 5, 2, 3).build()
    capsys.readouterr()
    assert check_main([str(_write(tmp_path / "int.jsonl", h)), "-c", "linearizable", "--model", "kv"]) == 2
    out = capsys.readouterr().out
    assert "UNKNOWN" in out and "kv model: values are strings, got 5 (op 0)" in out, out
