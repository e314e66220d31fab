"""Checkers on recorded real runs (tests/data): the verdicts a correct harness must reach."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from checkers import run_checkers
from core.history import load_history

DATA = Path(__file__).resolve().parents[1] / "data"


def load(name: str, tmp_path: Path) -> list[dict[str, Any]]:
    p = tmp_path / name.removesuffix(".gz")
    p.write_bytes(gzip.decompress((DATA / name).read_bytes()))
    return load_history(p)


def types(r: dict[str, Any]) -> set[str]:
    return {a["type"] for a in r.get("anomalies") or []}


def test_cache_aside_register_run(tmp_path: Path) -> None:
    h = load("register-cache-aside-mixed.history.jsonl.gz", tmp_path)
    out = run_checkers(h, ["linearizable", "versions", "staleness", "session", "durability", "convergence",
                           "perf"], {"staleness": {"bound_ms": 1000}})
    c = out["checkers"]
    assert out["valid"] is False
    assert c["linearizable"]["valid"] is False
    assert c["versions"]["valid"] is False and "stale-read" in types(c["versions"])
    assert c["session"]["valid"] is False and c["session"]["read_your_writes"] is False
    assert c["staleness"]["valid"] is True and c["staleness"]["stale_reads"] > 0
    assert c["durability"]["valid"] is True and c["durability"]["acknowledged"] > 100
    assert c["convergence"]["valid"] is True
    assert c["perf"]["valid"] is True and 0 < c["perf"]["hit_rate"] < 1
    # the same run against a tight bound: stale reads over 10 ms are named and explained
    st = run_checkers(h, ["staleness"], {"staleness": {"bound_ms": 10}})["checkers"]["staleness"]
    assert st["valid"] is False and types(st) == {"stale-read"}
    assert all(a["staleness_ms"] > 10 for a in st["anomalies"])


def test_pubsub_flags_run_does_not_converge(tmp_path: Path) -> None:
    h = load("flags-pubsub.history.jsonl.gz", tmp_path)
    out = run_checkers(h, ["convergence", "durability"], {})
    conv = out["checkers"]["convergence"]
    assert conv["valid"] is False and types(conv) == {"divergent"}
    assert all("did not converge" in a["explanation"] for a in conv["anomalies"])
    assert out["checkers"]["durability"]["valid"] is True


@pytest.mark.parametrize("name", ["register-cache-aside-mixed.history.jsonl.gz", "flags-pubsub.history.jsonl.gz"])
def test_cli_on_real_runs(tmp_path: Path, name: str) -> None:
    from checkers.cli import check_main

    load(name, tmp_path)
    assert check_main([str(tmp_path / name.removesuffix(".gz")), "-q", "-o", str(tmp_path / "r.json")]) == 1
