"""Linearizability models as an interface: the built-ins are instances of it, a user's own model is
loaded by import path and judged through the Python API and through ``cachecert check``, and a bad
model name or import path is one line of bad input (exit 2).

Why: the search is generic over ``checkers.models.Model``; the built-in register models also run
inlined in the search loop, so the generic path (every op through ``step``) must give exactly the
same results as the inlined one.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hist_builder import H

from checkers import corpus, linearizable, models, synth
from checkers.cli import check_main
from core.ops import clear_memo

USER_MODELS = '''
from checkers.models import BaseModel


class Counter(BaseModel):
    """A counter: add N, read its value."""

    name = "counter"
    object_name = "the counter"

    def init(self, initial, ops):
        return initial or 0

    def step(self, state, op):
        if op.f == "add":
            return True, state + op.value
        if op.f == "read":
            return state == op.value, state
        raise ValueError(f"counter: unknown f {op.f!r}")

    def roles(self, op):
        return op.f == "read", op.f == "add"


class GrowSet:
    """A set with add and contains, written against the protocol alone (no BaseModel)."""

    name = "grow-set"

    def init(self, initial, ops):
        return frozenset(initial or ())

    def step(self, state, op):
        x, present = op.value
        if op.f == "add":
            return True, state | {x}
        return (x in state) == present, state

    def partition(self, ops):
        return {None: list(ops)}

    def describe_op(self, op, key):
        return f"process {op.process} {op.f} {op.value[0]}"

    def describe_state(self, state):
        return "{" + ", ".join(str(x) for x in sorted(state)) + "}"


NOT_A_MODEL = 3
'''


@pytest.fixture
def usermod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a throwaway module holding the models above, importable for this test."""
    name = f"cc_user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def counter_history(read: int) -> list[dict[str, Any]]:
    """add 1 and add 2 overlap; a read concurrent with add 2 sees 1; a later read sees ``read``."""
    return (H().op(0, "add", "c", 1, 0, 10).op(1, "add", "c", 2, 5, 30)
            .op(2, "read", "c", 1, 12, 14).op(2, "read", "c", read, 40, 50).build())


def set_history(second: bool) -> list[dict[str, Any]]:
    """add 7; then contains 7 -> True; then contains 7 -> ``second``."""
    return (H().op(0, "add", None, [7, True], 0, 10).op(1, "contains", None, [7, True], 12, 14)
            .op(1, "contains", None, [7, second], 20, 22).build())


def check(h: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    clear_memo()
    return linearizable.check(h, **kw)


def test_builtins_are_instances_of_the_interface() -> None:
    assert set(linearizable.MODELS) == {"register", "cas-register", "multi-register", "mutex", "kv", "kv-single"}
    for name in linearizable.MODELS:
        m = models.resolve(name)
        assert isinstance(m, models.Model) and isinstance(m, models.BaseModel)
        assert m.name == name
        assert hash(m.init(None, [])) is not None  # states are hashable (the search's cache)


def test_a_user_model_by_import_path(usermod: str) -> None:
    good = check(counter_history(3), model=f"{usermod}:Counter")
    assert good["valid"] is True and good["model"] == f"{usermod}:Counter", good
    bad = check(counter_history(4), model=f"{usermod}:Counter")
    assert bad["valid"] is False, bad
    a = bad["anomalies"][0]
    assert a["type"] == "nonlinearizable" and a["key"] == "c"
    assert a["explanation"].startswith("Process 2 read c = 4 (op 6"), a["explanation"]
    assert "c could only hold 3" in a["explanation"] and a["states"] == ["3"]
    # an initial value reaches the model's init
    h = H().op(0, "add", "c", 1, 0, 10).op(1, "read", "c", 11, 20, 30).build()
    assert check(h, model=f"{usermod}:Counter", initial=10)["valid"] is True
    assert check(h, model=f"{usermod}:Counter")["valid"] is False
    # timed-out adds (identical, so tried in invocation order only) may or may not have happened
    for read, ok in ((0, True), (1, True), (2, True), (3, False)):
        h = (H().op(0, "add", "c", 1, 0, None).op(1, "add", "c", 1, 1, None).op(2, "add", "c", 0, 2, 3)
             .op(2, "read", "c", read, 10, 11).build())
        assert check(h, model=f"{usermod}:Counter")["valid"] is ok, read


def test_a_protocol_only_model_and_a_model_object(usermod: str) -> None:
    m = models.resolve(f"{usermod}:GrowSet")
    assert isinstance(m, models.Model) and m.name == "grow-set"
    assert check(set_history(True), model=f"{usermod}:GrowSet")["valid"] is True
    bad = check(set_history(False), model=f"{usermod}:GrowSet")
    assert bad["valid"] is False
    a = bad["anomalies"][0]
    assert a["explanation"].startswith("process 1 contains 7 (op 4"), a["explanation"]
    assert a["states"] == ["{7}"]
    # a model object, not a name
    mod = sys.modules[usermod]
    assert check(counter_history(3), model=mod.Counter())["valid"] is True
    assert check(counter_history(4), model=mod.Counter())["model"] == "counter"
    assert check(set_history(False), model=mod.GrowSet)["valid"] is False  # a class is instantiated


def write_jsonl(path: Path, h: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in h))
    return path


def test_a_user_model_through_cachecert_check(usermod: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for read, code in ((3, 0), (4, 1)):
        hist = write_jsonl(tmp_path / f"h{read}.jsonl", counter_history(read))
        out = tmp_path / f"r{read}.json"
        argv = [str(hist), "-c", "linearizable", "--model", f"{usermod}:Counter", "--out", str(out)]
        assert check_main(argv) == code, capsys.readouterr()
        r = json.loads(out.read_text())["checkers"]["linearizable"]
        assert r["model"] == f"{usermod}:Counter" and r["valid"] is (code == 0)


@pytest.mark.parametrize("spec,words", [
    ("registr", "unknown model 'registr'"),
    ("no_such_module_cc:Counter", "cannot import 'no_such_module_cc'"),
    ("{mod}:Nope", "has no attribute 'Nope'"),
    ("{mod}:NOT_A_MODEL", "not a linearizability model"),
    ("{mod}:", "unknown model"),
])
def test_a_bad_model_is_one_line_of_bad_input(spec: str, words: str, usermod: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec.format(mod=usermod)
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        check(counter_history(3), model=spec)
    hist = write_jsonl(tmp_path / "h.jsonl", counter_history(3))
    capsys.readouterr()
    assert check_main([str(hist), "-c", "linearizable", "--model", spec]) == 2
    cap = capsys.readouterr()
    assert words in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err
    assert cap.out == ""


def _without_inline(name: str, nil_reads_any: bool = False) -> models.BaseModel:
    m = models.resolve(name, nil_reads_any=nil_reads_any)
    m.inline = lambda op: None  # type: ignore[method-assign]
    return m


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    a, b = dict(a), dict(b)
    for r in (a, b):
        r.pop("time_s", None)
        r.pop("model", None)
    assert a == b


def test_step_agrees_with_the_inlined_steps_on_generated_histories() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        h = synth.generate(rng.randint(10, 60), keys=2, processes=rng.randint(2, 6), write_p=0.4,
                           info_p=rng.choice([0, 0.1]), fail_p=0.03, seed=seed)
        for o in h:
            if isinstance(o.get("value"), int) and o.get("process") != "nemesis":
                o["value"] %= 3
        for name in ("register", "cas-register"):
            _same(check(h, model=name, initial=0), check(h, model=_without_inline(name), initial=0))


CORPUS = corpus.locate(Path(__file__).resolve().parents[2] / "checkers" / "x")


@pytest.mark.skipif(CORPUS is None, reason="conformance corpus not found")
def test_step_agrees_with_the_inlined_steps_on_the_knossos_corpus() -> None:
    from checkers.edn import read_edn_history

    for case in corpus.cases(CORPUS):
        if case.model not in ("register", "cas-register", "mutex"):
            continue
        h = read_edn_history(case.path)
        kw = dict(initial=case.initial, order="index", empty_ok=True)
        fast = check(h, model=models.resolve(case.model, nil_reads_any=True), **kw)
        generic = check(h, model=_without_inline(case.model, nil_reads_any=True), **kw)
        _same(fast, generic)
        assert fast["valid"] == case.expected, case.file
