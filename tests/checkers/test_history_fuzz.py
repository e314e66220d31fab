"""Fuzzing the history reader: whatever the bytes, ``read_history`` yields ops or raises HistoryError
naming the file and line — never another exception, never a silent partial history in the middle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.history import HistoryError, load_history, read_history

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid(n: int = 6) -> list[dict]:
    ops: list[dict] = []
    t = 0
    for i in range(n):
        p = i % 2
        ops.append({"index": len(ops), "time_ns": t, "process": p, "type": "invoke", "f": "write", "key": "k",
                    "value": i})
        t += 10
        ops.append({"index": len(ops), "time_ns": t, "process": p, "type": "ok", "f": "write", "key": "k",
                    "value": i, "version": i + 1})
        t += 10
    return ops


def _lines(ops: list[dict]) -> list[bytes]:
    return [json.dumps(o).encode() for o in ops]


def _read_all(path: Path) -> list[dict]:
    return list(read_history(path))


def _write(path: Path, lines: list[bytes], trailing_newline: bool = True) -> None:
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                             st.dictionaries(st.text(max_size=4), c, max_size=3)),
                           max_leaves=6)


@SETTINGS
@given(data=st.lists(st.binary(max_size=60), max_size=8))
def test_arbitrary_bytes_give_ops_or_history_error(tmp_path: Path, data: list[bytes]) -> None:
    p = tmp_path / "h.jsonl"
    p.write_bytes(b"\n".join(data))
    try:
        _read_all(p)
    except HistoryError as e:
        assert str(p) in str(e)


@SETTINGS
@given(pos=st.integers(0, 11), field=st.sampled_from(["index", "time_ns", "process", "type", "f"]),
       bad=json_values)
def test_a_field_replaced_by_any_json_value(tmp_path: Path, pos: int, field: str, bad: object) -> None:
    """Any value in any required field: either still a valid history, or a HistoryError at that line."""
    ops = _valid()
    ops[pos][field] = bad
    p = tmp_path / "h.jsonl"
    _write(p, _lines(ops))
    try:
        _read_all(p)
    except HistoryError as e:
        m = re.search(rf"{re.escape(str(p))}:(\d+): ", str(e))
        assert m, str(e)
        assert int(m.group(1)) <= pos + 2  # the bad line, or the next one (pairing noticed there)


@SETTINGS
@given(pos=st.integers(0, 11), cut=st.integers(1, 40))
def test_a_torn_line_in_the_middle_is_an_error_with_its_line(tmp_path: Path, pos: int, cut: int) -> None:
    lines = _lines(_valid())
    lines[pos] = lines[pos][: min(cut, len(lines[pos]) - 1)]
    p = tmp_path / "h.jsonl"
    _write(p, lines)
    with pytest.raises(HistoryError, match=rf"{re.escape(str(p))}:{pos + 1}: "):
        _read_all(p)


@SETTINGS
@given(cut=st.integers(1, 40))
def test_a_torn_last_line_is_dropped(tmp_path: Path, cut: int) -> None:
    ops = _valid()
    lines = _lines(ops)
    lines[-1] = lines[-1][: min(cut, len(lines[-1]) - 1)]
    p = tmp_path / "h.jsonl"
    _write(p, lines, trailing_newline=False)
    assert _read_all(p) == ops[:-1]
    with pytest.raises(HistoryError, match=rf":{len(lines)}: not valid JSON"):
        list(read_history(p, allow_truncated_tail=False))


@SETTINGS
@given(ops=st.lists(st.fixed_dictionaries({
    "index": st.integers(0, 5), "time_ns": st.integers(0, 100), "process": st.sampled_from([0, 1, "nemesis"]),
    "type": st.sampled_from(["invoke", "ok", "fail", "info"]), "f": st.sampled_from(["read", "write"])}),
    max_size=12))
def test_random_pairings_are_checked(tmp_path: Path, ops: list[dict]) -> None:
    """Pairing errors (completion without invoke, double invoke) name their line; good pairings load."""
    p = tmp_path / "h.jsonl"
    _write(p, _lines(ops))
    outstanding: dict = {}
    bad_line = None
    for i, o in enumerate(ops, 1):
        if o["process"] == "nemesis":
            continue
        if o["type"] == "invoke":
            if o["process"] in outstanding:
                bad_line = i
                break
            outstanding[o["process"]] = i
        elif outstanding.pop(o["process"], None) is None:
            bad_line = i
            break
    if bad_line is None:
        assert _read_all(p) == ops
    else:
        with pytest.raises(HistoryError, match=rf":{bad_line}: "):
            _read_all(p)


@pytest.mark.parametrize("line, msg", [
    (b"[1, 2]", "expected a JSON object"),
    (b'{"index": 0, "time_ns": 0, "process": 0, "type": "invoke"}', "missing field 'f'"),
    (b'{"index": 0, "time_ns": 0, "process": 0, "type": "begin", "f": "read"}', "unknown op type 'begin'"),
    (b'{"index": 0, "time_ns": 1.5, "process": 0, "type": "invoke", "f": "read"}', "time_ns must be an integer"),
    (b'{"index": 0, "time_ns": 0, "process": 0, "type": "ok", "f": "read"}', "completion without an invoke"),
    (b'{"index": 0, "time_ns": 0, "process": [0], "type": "invoke", "f": "read"}', "process"),
    (b"{not json", "not valid JSON"),
])
def test_bad_lines_have_clear_messages(tmp_path: Path, line: bytes, msg: str) -> None:
    p = tmp_path / "h.jsonl"
    _write(p, [*_lines(_valid(1)), line])
    with pytest.raises(HistoryError) as e:
        load_history(p)
    assert f"{p}:3: " in str(e.value) and msg in str(e.value)


def test_missing_file_is_a_history_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="cannot open history"):
        load_history(tmp_path / "nope.jsonl")


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    ops = _valid(2)
    p = tmp_path / "h.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in ops[:2]) + "\n\n  \n" + json.dumps(ops[2]) + "\n"
                 + json.dumps(ops[3]) + "\n")
    assert load_history(p) == ops
