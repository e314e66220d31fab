"""Conformance: every Knossos history gets its expected verdict (read from ../shared at test time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkers import corpus

CORPUS = corpus.locate(Path(__file__).resolve().parents[2] / "checkers" / "x")
CASES = corpus.cases(CORPUS) if CORPUS else []


@pytest.mark.skipif(CORPUS is None, reason="conformance corpus not found (../shared/conformance or "
                                           "$CACHECERT_CONFORMANCE)")
@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_knossos_verdict(case: corpus.Case) -> None:
    r = corpus.check_case(case, time_limit_s=120, key_time_limit_s=120)
    assert r["valid"] == case.expected, (case.file, r)
    if not case.expected:
        a = r["anomalies"][0]
        assert a["explanation"] and a["op"] is not None and "cannot be linearized" in a["explanation"]


def test_corpus_is_complete() -> None:
    if CORPUS is None:
        pytest.skip("conformance corpus not found")
    files = {c.file for c in CASES}
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.edn")}
    assert files == on_disk
    assert len(CASES) >= 122


def test_rethink_minimal_blames_the_read() -> None:
    """Knossos once blamed the op *after* the nonlinearizable one; we must blame the read of 3."""
    if CORPUS is None:
        pytest.skip("conformance corpus not found")
    case = next(c for c in CASES if c.file.endswith("rethink-fail-minimal.edn"))
    r = corpus.check_case(case)
    a = r["anomalies"][0]
    assert a["explanation"].startswith("Process 1 read 3 (op 2)"), a["explanation"]
    assert set(a["states"]) == {"0", "4"}


@pytest.mark.skipif(CORPUS is None, reason="conformance corpus not found (../shared/conformance or "
                                           "$CACHECERT_CONFORMANCE)")
@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_knossos_verdict_through_the_cli(case: corpus.Case, capsys: pytest.CaptureFixture[str]) -> None:
    """The same verdicts through ``cachecert check`` (what a user types), exit code included: a history
    of nemesis ops only is valid, as Knossos says, not 'no operations'."""
    import json

    from checkers.cli import check_main

    argv = [str(case.path), "--model", case.model, "--initial", json.dumps(case.initial), "--time-limit", "120"]
    assert check_main(argv) == (0 if case.expected else 1), capsys.readouterr()
    assert ("VALID:" if case.expected else "INVALID:") in capsys.readouterr().out
