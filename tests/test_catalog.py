"""The catalog (issue 13, part 6): `cachecert ls workloads | strategies | faults | plans` list what can
be run, one line each with its description and parameters, read from the live registries; `ls`
alone still lists stored runs; `reproduce` is an alias of `rerun`; reports default to the working
directory. No service is started here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import strategies
import workloads
from harness import catalog, paths, store
from harness.cli import build_parser
from harness.cli import main as cli_main
from harness.faults import KINDS
from harness.faults.proxy import DEFAULTS, TOXIC_ATTRS


def _ls(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = cli_main(["ls", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _names(lines: list[str], col: int = 0) -> list[str]:
    return [ln.split()[col] for ln in lines if ln.strip()]


def test_ls_workloads_lists_every_workload_with_description_and_parameters(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = _ls(capsys, "workloads")
    assert code == 0 and not err
    assert _names(lines) == sorted(workloads.REGISTRY)
    for line in lines:
        wl = workloads.load(line.split()[0])
        assert catalog.first_sentence(wl.description, 160) in line
        assert f"keys={wl.keys} " in line and f"concurrency={wl.concurrency} " in line
        assert f"default {wl.default_strategy}" in line and ", ".join(wl.plans) in line


def test_ls_strategies_all_and_filtered_by_workload(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _ls(capsys, "strategies")
    assert code == 0 and _names(lines) == sorted(strategies.REGISTRY)
    ca = next(ln for ln in lines if ln.startswith("cache-aside "))
    assert "Cache-aside with TTL over Redis + PostgreSQL" in ca  # the module's docstring
    assert "params: ttl=5.0 prefix=ca:" in ca and "workloads: register" in ca

    for wname in ("register", "write-through-db-failure", "thundering-herd"):
        wl = workloads.load(wname)
        code, lines, _ = _ls(capsys, "strategies", "--workload", wname)
        assert code == 0 and _names(lines) == list(wl.strategies)
        assert [ln for ln in lines if ln.endswith("(default)")][0].startswith(wl.default_strategy + " ")
    # the class's own docstring wins over the module's
    code, lines, _ = _ls(capsys, "strategy", "-w", "write-through-db-failure")  # singular works too
    assert any(ln.startswith("cache-then-db ") and "Naive write-through: cache first, then the DB" in ln
               for ln in lines)

    assert cli_main(["ls", "strategies", "--workload", "register", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["no-cache", "cache-aside"]
    assert rows[1]["params"] == "ttl=5.0 prefix=ca:" and rows[1]["default"] is True


def test_ls_plans_of_a_workload_and_of_all(capsys: pytest.CaptureFixture[str]) -> None:
    wl = workloads.load("write-through-db-failure")
    code, lines, _ = _ls(capsys, "plans", "--workload", wl.name)
    assert code == 0 and all(ln.startswith(wl.name + " ") for ln in lines)
    assert _names(lines, 1) == [*wl.plans, "random"]
    db_down = next(ln for ln in lines if ln.split()[1] == "db-down")
    assert db_down.rstrip().endswith(wl.plans["db-down"])
    assert next(ln for ln in lines if ln.split()[1] == wl.default_plan).endswith("(default)")
    assert all(item in lines[-1] for item in wl.fault_menu)

    code, lines, _ = _ls(capsys, "plans")
    assert code == 0
    assert sorted(set(_names(lines))) == sorted(workloads.REGISTRY)
    assert sum(len(workloads.load(w).plans) for w in workloads.REGISTRY) <= len(lines)


def test_ls_faults_lists_every_kind_with_its_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _ls(capsys, "faults")
    assert code == 0 and _names(lines) == list(KINDS)
    by_kind = {ln.split()[0]: ln for ln in lines}
    for kind, attrs in TOXIC_ATTRS.items():
        line = by_kind[kind]
        for p in attrs:
            shown = f"{p}={DEFAULTS[kind][p]}" if p in DEFAULTS.get(kind, {}) else p
            assert shown in line, (kind, shown)
        assert "stream=downstream|upstream|both" in line
    assert "params: ms=200 jitter" in by_kind["latency"]
    assert "params: (none)" in by_kind["partition"] and "target: SERVICE (its process)" in by_kind["kill"]
    assert "e.g. crash-node:1@2+3" in by_kind["crash-node"]
    assert all("(no description)" not in ln for ln in lines)


@pytest.mark.parametrize("args", [["strategies", "--workload", "nope"], ["plans", "-w", "nope"]])
def test_bad_workload_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, lines, err = _ls(capsys, *args)
    assert code == 3 and not lines
    assert err.count("\n") == 1 and err.startswith("cachecert: error: unknown workload 'nope' (valid: ")
    assert "register" in err


def test_ls_filters_that_do_not_apply_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _ls(capsys, "faults", "--workload", "register")
    assert code == 3 and "--workload filters strategies, plans and runs, not faults" in err
    code, _, err = _ls(capsys, "workloads", "--strategy", "no-cache")
    assert code == 3 and "ls runs --strategy" in err


def test_ls_alone_and_ls_runs_list_stored_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["runs"]):
        code, lines, _ = _ls(capsys, *args, "--reports", str(tmp_path))
        assert code == 0 and lines == [f"no stored runs under {tmp_path}"]


def test_reproduce_is_an_alias_of_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, handlers = build_parser()
    a, b = parser.parse_args(["rerun", "x"]), parser.parse_args(["reproduce", "x", "--json"])
    assert handlers[a.cmd] is handlers[b.cmd] and b.run_dir == "x" and b.json
    help_text = parser.format_help()
    assert "rerun (reproduce)" in help_text  # one entry, two names
    assert not re.search(r"^\s+reproduce\s", help_text, re.M)
    for name in ("rerun", "reproduce"):
        assert cli_main([name, str(tmp_path)]) == 3
        assert f"{tmp_path / 'config.json'}: not a stored run" in capsys.readouterr().err


def test_reports_default_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CACHECERT_REPORTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.reports_dir() == tmp_path / "reports" == paths.REPORTS
    run_dir = store.new_run_dir("register", "no-cache")
    assert run_dir.parent == tmp_path / "reports" / "register" / "no-cache"
    assert paths.REPO / "reports" not in run_dir.parents
    assert cli_main(["ls"]) == 0
    assert capsys.readouterr().out.strip() == f"no stored runs under {tmp_path / 'reports'}"
    monkeypatch.setenv("CACHECERT_REPORTS", "elsewhere")  # relative: to the working directory
    assert paths.reports_dir() == tmp_path / "elsewhere"
