"""Bad input: a clear error naming file and line, exit code 2, never a verdict. Readers fuzzed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkers import synth
from checkers.cli import check_main
from checkers.edn import edn_to_history, parse_edn, read_edn_history
from core.history import HistoryError
from core.ops import clear_memo, pair

GOOD_EDN = """; a comment
[{:process 0, :type :invoke, :f :write, :value 1}
 {:process 0, :type :ok, :f :write, :value 1}
 {:process 1, :type :invoke, :f :read, :value nil}
 {:process 1, :type :ok, :f :read, :value 1}]
"""
BAD_EDN = GOOD_EDN.replace(":read, :value 1}", ":read, :value 2}")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,line,what", [
    ("[{:process 0, :type :invoke, :f :read}\n {:process 0, :type :ok", 2, "unterminated"),
    ("[{:process 0, :type :invoke, :f :read}\n 1 2]", 2, "expected a map"),
    ("[{:process 0, :type :invoke, :f :read}\n {:process 0, :type :bogus, :f :read}]", 2, "unknown :type"),
    ("[{:process 0, :type :invoke, :f :read}\n\n {:type :ok, :f :read}]", 3, "no :process"),
    ("{:a 1 :b}", 1, "odd number"),
    ("[:a :b]", 1, "expected a map"),
    ("{:name \"not a history\"}", 1, "no :process"),
    ("", 1, "empty"),
    ("[{:process 0 :type :invoke :f :read}]]", 1, "unmatched"),
    ("[{:process 0 :type :invoke :f :read)]", 1, "closes"),
])
def test_edn_errors_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = write(tmp_path, "h.edn", text)
    with pytest.raises(HistoryError) as ei:
        read_edn_history(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}:"), msg
    assert what in msg


def test_edn_reader_conversions() -> None:
    h = edn_to_history('({:process :nemesis :type :info :f :start :value "x \\"y\\""}\n'
                       ' {:process 3 :type :invoke :f :txn :value [[:read :x nil] [:write :y 2]] :time 17}\n'
                       ' {:process 3 :type :ok :f :txn :value [[:read :x 0] [:write :y 2]] '
                       ':error #{:a} :ts #inst "2020-01-01" #_ :dropped :m {:k [1 2.5 true]}})')
    assert h[0]["process"] == "nemesis" and h[0]["value"] == 'x "y"'
    assert h[1]["value"] == [["read", "x", None], ["write", "y", 2]] and h[1]["time_ns"] == 17
    assert h[2]["error"] == ["a"] and h[2]["ts"] == "2020-01-01" and h[2]["m"] == {"k": [1, 2.5, True]}
    assert [o["index"] for o in h] == [0, 1, 2]


def test_cli_exit_codes_edn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([str(write(tmp_path, "good.edn", GOOD_EDN)), "--initial", "0"]) == 0
    out = tmp_path / "r.json"
    assert check_main([str(write(tmp_path, "bad.edn", BAD_EDN)), "--model", "register", "--out", str(out)]) == 1
    res = json.loads(out.read_text())
    assert res["valid"] is False and res["checkers"]["linearizable"]["anomalies"][0]["type"] == "nonlinearizable"
    assert "INVALID" in capsys.readouterr().out
    assert check_main([str(write(tmp_path, "x.edn", "{:not :a-history}"))]) == 2
    assert "not a Jepsen history" in capsys.readouterr().err


def _jsonl(tmp_path: Path, name: str, recs: list[Any], tail: str = "") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)
    return p


def test_cli_exit_codes_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = synth.generate(60, keys=2, processes=3, seed=3)
    assert check_main([str(_jsonl(tmp_path, "ok.jsonl", h))]) == 0
    import random

    bad, _ = synth.inject_garbage_read(h, random.Random(1))
    assert check_main([str(_jsonl(tmp_path, "bad.jsonl", bad))]) == 1
    out = capsys.readouterr().out
    assert "garbage-read" in out
    # a run killed mid-write: the torn last line is dropped, the prefix is judged, and it says so:
    # unknown at best (the final phase may be missing), never a silent VALID
    torn = _jsonl(tmp_path, "torn.jsonl", h, tail='{"process": 1, "ty')
    assert check_main([str(torn), "-o", str(tmp_path / "torn.json")]) == 2
    out = capsys.readouterr().out
    assert f"history ends mid-record after line {len(h)} (the run was killed); checked the {len(h)} complete records" in out
    res = json.loads((tmp_path / "torn.json").read_text())
    assert res["history_truncated"]["complete_records"] == len(h) and res["valid"] == "unknown"
    # the prefix is still judged: an anomaly in it is INVALID whatever the tail
    assert check_main([str(_jsonl(tmp_path, "torn-bad.jsonl", bad, tail='{"process": 1, "ty'))]) == 1
    # --opt and a bound
    assert check_main([str(_jsonl(tmp_path, "ok2.jsonl", h)), "-c", "staleness", "--opt",
                       "staleness.bound_ms=0"]) == 0


@pytest.mark.parametrize("recs,tail,what", [
    ([{"index": 0, "time_ns": 1, "process": 1, "type": "invoke", "f": "read"}], "{not json}\n", "not valid JSON"),
    ([{"index": 0, "time_ns": 1, "process": 1, "type": "weird", "f": "read"}], "", "unknown op type"),
    ([{"index": 0, "time_ns": 1, "process": 1, "type": "ok", "f": "read"}], "", "without an invoke"),
    ([{"index": 0, "time_ns": 1, "process": 1, "type": "invoke"}], "", "missing field 'f'"),
    ([], "", "no operations"),
])
def test_cli_bad_jsonl_is_exit_2_with_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           recs: list[Any], tail: str, what: str) -> None:
    p = _jsonl(tmp_path, "h.jsonl", recs, tail)
    assert check_main([str(p)]) == 2
    err = capsys.readouterr().err
    assert what in err and str(p) in err
    if recs:
        assert re.search(re.escape(str(p)) + r":\d+:", err), err


def test_cli_missing_file_and_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot open" in capsys.readouterr().err
    p = _jsonl(tmp_path, "h.jsonl", synth.generate(5, seed=1))
    assert check_main([str(p), "--opt", "nonsense"]) == 2


def test_pairing_errors_in_memory() -> None:
    clear_memo()
    with pytest.raises(HistoryError, match="without an invoke"):
        pair([{"index": 0, "time_ns": 0, "process": 1, "type": "ok", "f": "read"}])
    with pytest.raises(HistoryError, match="unknown op type"):
        pair([{"index": 0, "time_ns": 0, "process": 1, "type": "invoke", "f": "read"},
              {"index": 1, "time_ns": 1, "process": 1, "type": "maybe", "f": "read"}])
    with pytest.raises(HistoryError, match="still outstanding"):
        pair([{"index": 0, "time_ns": 0, "process": 1, "type": "invoke", "f": "read"},
              {"index": 1, "time_ns": 1, "process": 1, "type": "invoke", "f": "read"}])


# -- fuzz -------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
edn_alphabet = st.sampled_from(list("[]{}()#_:;\"\\ ,\n-+.0123456789abenilpfrtuvx") +
                               [":process", ":type", ":invoke", ":ok", ":f", ":read", ":value", "nil", "#{", "#inst"])


@FUZZ
@given(st.lists(edn_alphabet, max_size=60).map("".join))
def test_fuzz_edn_reader_only_raises_history_error(text: str) -> None:
    try:
        h = edn_to_history(text, "fuzz.edn")
    except HistoryError as e:
        assert str(e).startswith("fuzz.edn:")
        return
    assert all(isinstance(op, dict) and op["type"] in ("invoke", "ok", "fail", "info") for op in h)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.data())
def test_fuzz_truncated_or_corrupted_edn(seed: int, data: st.DataObject) -> None:
    text = to_edn(synth.generate(8, keys=1, processes=2, seed=seed, final=False))
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.sampled_from(["", "}", "{", "]", ":", '"', "#", "1 2", ";"]))
    mutated = text[:cut] + junk + text[cut + (1 if junk else 0):]
    try:
        h = edn_to_history(mutated, "m.edn")
    except HistoryError as e:
        assert re.match(r"m\.edn:\d+: ", str(e))
        return
    assert isinstance(h, list)


def to_edn(history: list[dict[str, Any]]) -> str:
    def v(x: Any) -> str:
        if x is None:
            return "nil"
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, (int, float)):
            return str(x)
        if isinstance(x, str):
            return ":" + x if re.fullmatch(r"[a-z][a-z0-9-]*", x) else json.dumps(x)
        if isinstance(x, list):
            return "[" + " ".join(v(y) for y in x) + "]"
        if isinstance(x, dict):
            return "{" + ", ".join(f":{k} {v(y)}" for k, y in x.items()) + "}"
        raise TypeError(x)

    return "[" + "\n ".join(v({k: x for k, x in op.items()}) for op in history) + "]\n"


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_edn_round_trip(seed: int) -> None:
    h = synth.generate(20, keys=2, processes=3, seed=seed, final=False)
    back = edn_to_history(to_edn(h))
    for a, b in zip(h, back, strict=True):
        for k in ("process", "type", "f", "value", "index"):
            assert a.get(k) == b.get(k), (k, a, b)


def test_parse_edn_numbers_and_strings() -> None:
    forms = [f for f, _ in parse_edn('-3 +4 1.5e3 12N "a\\nb" true false nil :k sym')]
    assert forms[:8] == [-3, 4, 1500.0, 12, "a\nb", True, False, None]
    assert forms[8] == "k" and forms[9] == "sym"
