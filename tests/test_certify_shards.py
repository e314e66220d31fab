"""Sharded certification (issue 17): `certify --shard I/N` runs a deterministic slice of the matrix and
writes a partial certificate; `certify merge` turns every shard's partial certificate into the one an
unsharded run writes, and refuses shards that do not make one matrix.

Why both kinds of test: the equivalence is only worth something against real runs (the embedded
cluster, a small matrix), while the refusals and the fingerprint are pure bookkeeping, tested on
certificates written from made-up cells so that they cost nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.verdict import Exit, UsageError
from harness import certify as C
from harness.cli import main as cli_main
from harness.cluster import Cluster

PLANS = ["none", "redis-latency", "db-latency"]


def _plan(tmp_path: Path, shard: tuple[int, int] | None = None, **kw: Any) -> C.Plan:
    opts: dict[str, Any] = {"time_limit": 1, "concurrency": 3, "seed": 11, "reports": str(tmp_path / "reports"),
                            "quiesce": 0.2}
    opts.update(kw)
    plan = C.resolve(["no-cache"], ["register"], PLANS, **opts)
    plan.shard = shard
    return plan


def _cert(d: Path) -> dict[str, Any]:
    return json.loads((d / "certificate.json").read_text())


def _essence(cert: dict[str, Any]) -> dict[str, Any]:
    """What must not differ between an unsharded certificate and a merged one made of other runs."""
    return {
        "strategy": cert["strategy"], "valid": cert["valid"], "exit_code": cert["exit_code"],
        "params": cert["params"], "time_limit": cert["time_limit"], "guarantees": cert["guarantees"],
        "matrix": cert["matrix"], "partial": cert.get("partial"),
        "runs": [(r["strategy"], r["workload"], r["plan"], r["valid"],
                  {g: v["status"] for g, v in r["guarantees"].items()}) for r in cert["runs"]],
    }


# -- the real thing: three shards of a small matrix, merged, against the unsharded run ----------------
def test_merged_shards_equal_the_unsharded_certificate(cluster: Cluster, tmp_path: Path) -> None:
    full = _plan(tmp_path)
    assert full.cells() == [("no-cache", "register", p) for p in PLANS]
    whole = tmp_path / "whole"
    whole.mkdir()
    cells = C.execute(full, log=lambda m: None, cluster=cluster)
    C.write_certificate("no-cache", cells, whole, full)

    shard_dirs = []
    for i in (3, 1, 2):  # shards finish in any order; the merge restores the matrix's
        plan = _plan(tmp_path, shard=(i, 3))
        d = tmp_path / f"shard-{i}"
        d.mkdir()
        part = C.execute(plan, log=lambda m: None, cluster=cluster)
        assert [(c.workload, c.plan) for c in part] == [("register", PLANS[i - 1])]
        C.write_certificate("no-cache", part, d, plan)
        cert = _cert(d)
        assert cert["partial"] == {"shard": i, "of": 3, "cells": [i - 1]}
        assert cert["matrix"]["fingerprint"] == _cert(whole)["matrix"]["fingerprint"]
        assert "Partial certificate" in (d / "index.html").read_text()
        shard_dirs.append(d)

    # CI downloads the artifacts elsewhere: move the whole tree, links are found relative to it
    moved = tmp_path / "downloaded"
    shutil.copytree(tmp_path / "reports", moved / "reports", symlinks=True)
    for d in shard_dirs:
        shutil.copytree(d, moved / d.name)
    out = moved / "merged"
    code = cli_main(["certify", "merge", *(str(moved / d.name) for d in shard_dirs), "--out", str(out)])

    whole_cert, merged = _cert(whole), _cert(out)
    assert "partial" not in merged
    assert _essence(merged) == _essence(whole_cert)
    assert code == whole_cert["exit_code"] == C.merged_exit(cells)
    assert [r["plan"] for r in merged["runs"]] == PLANS
    for r in merged["runs"]:  # every run linked, inside the downloaded tree
        assert Path(r["run_dir"]).resolve().is_relative_to(moved.resolve())
        assert (out / r["run_dir_rel"] / "report.html").exists()
    html = (out / "index.html").read_text()
    assert "<h1>Certificate: no-cache</h1>" in html and "Partial" not in html
    assert html.count('<a href="../reports/register/no-cache/') >= len(PLANS)


# -- bookkeeping without running anything --------------------------------------------------------------
def _fake_cells(plan: C.Plan, verdicts: dict[str, Any] | None = None) -> list[C.Cell]:
    verdicts = verdicts or {}
    out = []
    for k in plan.selected():
        s, w, p = plan.cells()[k]
        valid = verdicts.get(p, True)
        res = {"valid": valid, "checkers": {"linearizable": {"valid": valid}, "staleness": {"valid": True}}}
        out.append(C.Cell(w, p, s, valid=valid, exit_code=C.Verdict.of(valid).exit_code,
                          guarantees=C.guarantees_of(res), seed=plan.seed, figures={"ok ops/s": 10.0}))
    return out


def _write_shards(tmp_path: Path, n: int, name: str = "s", **kw: Any) -> list[Path]:
    dirs = []
    for i in range(1, n + 1):
        plan = _plan(tmp_path, shard=(i, n), **kw)
        d = tmp_path / f"{name}{i}"
        d.mkdir()
        C.write_certificate("no-cache", _fake_cells(plan, {"redis-latency": False}), d, plan)
        dirs.append(d)
    return dirs


def test_shard_slices_partition_the_matrix() -> None:
    for total in (0, 1, 5, 9):
        for n in (1, 2, 3, 4, 7):
            slices = [C.shard_indices(total, (i, n)) for i in range(1, n + 1)]
            assert sorted(k for s in slices for k in s) == list(range(total))
            assert max(map(len, slices)) - min(map(len, slices)) <= 1  # fair
    assert C.shard_indices(7, (2, 3)) == [1, 4]
    assert C.parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", ""):
        with pytest.raises(UsageError, match="--shard wants I/N"):
            C.parse_shard(bad)


def test_fingerprint_covers_cells_and_result_options(tmp_path: Path) -> None:
    fp = C.matrix_of(_plan(tmp_path))["fingerprint"]
    assert C.matrix_of(_plan(tmp_path, shard=(2, 3)))["fingerprint"] == fp  # the shard is not the matrix
    assert C.matrix_of(_plan(tmp_path, reports="elsewhere"))["fingerprint"] == fp
    assert C.matrix_of(_plan(tmp_path, time_limit=1.0))["fingerprint"] == fp  # 1 and 1.0 are one limit
    for change in ({"time_limit": 2}, {"seed": 12}, {"params": {"ttl": 5}}, {"nodes": 2},
                   {"concurrency": 4}, {"quiesce": 1.0}):
        assert C.matrix_of(_plan(tmp_path, **change))["fingerprint"] != fp, change
    reordered = _plan(tmp_path)
    reordered.pairs = list(reversed(reordered.pairs))
    assert C.matrix_of(reordered)["fingerprint"] != fp


def test_fingerprint_includes_the_app(tmp_path: Path) -> None:
    """`certify --app/--app-file` keeps working with shards: the service is part of the matrix."""
    def app_plan(**app: str) -> C.Plan:
        return C.resolve([], ["register"], ["none", "redis-latency"],
                         apps=C.app_entry(app.get("app"), app.get("app_file")), time_limit=1, seed=3)

    a, b = app_plan(app="my-service --port 1"), app_plan(app="my-service --port 2")
    assert a.cells() == [("app:my-service", "register", "none"), ("app:my-service", "register", "redis-latency")]
    assert a.cells() == b.cells() and C.matrix_of(a)["fingerprint"] != C.matrix_of(b)["fingerprint"]
    f = tmp_path / "app.toml"
    f.write_text('command = "my-service"\nname = "mine"\n')
    before = C.matrix_of(app_plan(app_file=str(f)))
    f.write_text('command = "my-service --v2"\nname = "mine"\n')  # same path, another service
    after = C.matrix_of(app_plan(app_file=str(f)))
    assert before["cells"] == after["cells"] and before["fingerprint"] != after["fingerprint"]
    assert before["options"]["apps"]["mine"]["app_file"] == str(f)


def test_merge_rebuilds_the_unsharded_certificate_exactly(tmp_path: Path) -> None:
    full = _plan(tmp_path)
    whole = tmp_path / "whole"
    whole.mkdir()
    C.write_certificate("no-cache", _fake_cells(full, {"redis-latency": False}), whole, full)
    strategy, cells, plan, matrix = C.merge_certificates(list(reversed(_write_shards(tmp_path, 2))))
    out = tmp_path / "merged"
    out.mkdir()
    C.write_certificate(strategy, cells, out, plan, matrix=matrix)
    a, b = _cert(whole), _cert(out)
    a.pop("created"), b.pop("created")
    assert a == b
    assert C.merged_exit(cells) == Exit.INVALID and b["guarantees"]["linearizable"]["violated_under"] == [
        "register/redis-latency"]


def test_merge_cli_exit_code_is_the_merged_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = _write_shards(tmp_path, 3)
    assert cli_main(["certify", "merge", *map(str, dirs), "--out", str(tmp_path / "m")]) == Exit.INVALID
    assert "certificate:" in capsys.readouterr().out
    assert [r["plan"] for r in _cert(tmp_path / "m")["runs"]] == PLANS


def test_empty_shard_is_a_valid_partial_certificate(tmp_path: Path) -> None:
    """More shards than cells (a CI matrix wider than a small certification): the extra ones run
    nothing, and the merge still needs them all."""
    dirs = _write_shards(tmp_path, 4)
    assert _cert(dirs[3])["runs"] == [] and _cert(dirs[3])["partial"]["cells"] == []
    _, cells, _, _ = C.merge_certificates(dirs)
    assert [c.plan for c in cells] == PLANS
    with pytest.raises(UsageError, match=r"^missing shard 4/4$"):
        C.merge_certificates(dirs[:3])


def _refusal(capsys: pytest.CaptureFixture[str], *dirs: Path) -> str:
    assert cli_main(["certify", "merge", *map(str, dirs)]) == Exit.USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_merge_refuses_a_missing_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s1, s2, s3 = _write_shards(tmp_path, 3)
    assert _refusal(capsys, s1, s3).endswith("missing shard 2/3")
    assert _refusal(capsys, s2).endswith("missing shards 1/3, 3/3")


def test_merge_refuses_a_duplicate_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s1, s2, s3 = _write_shards(tmp_path, 3)
    again = tmp_path / "again"
    shutil.copytree(s2, again)
    err = _refusal(capsys, s1, s2, again, s3)
    assert "duplicate shard 2/3" in err and str(again) in err


def test_merge_refuses_shards_of_different_matrices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_shards(tmp_path, 2, name="a", seed=1)
    b = _write_shards(tmp_path, 2, name="b", seed=2)
    assert "shards of different matrices" in _refusal(capsys, a[0], b[1])
    c = _write_shards(tmp_path, 3, name="c", seed=1)  # same matrix, another split
    assert "different splits" in _refusal(capsys, a[0], c[1])


def test_merge_refuses_what_is_not_a_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = _plan(tmp_path)
    whole = tmp_path / "whole"
    whole.mkdir()
    C.write_certificate("no-cache", _fake_cells(full), whole, full)
    assert "not a partial certificate" in _refusal(capsys, whole)
    assert "no certificate.json" in _refusal(capsys, tmp_path / "nowhere")
    (s1,) = _write_shards(tmp_path, 1)
    cert = _cert(s1)
    cert["runs"][0]["plan"] = "db-down"  # a run that is not its cell: an edited or mixed-up shard
    (s1 / "certificate.json").write_text(json.dumps(cert))
    assert "is not cell 0" in _refusal(capsys, s1)
    assert "certify merge takes" in _refusal(capsys, s1, Path("-t"), Path("3"))
