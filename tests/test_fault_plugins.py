"""Faults are plugins (issue 14, item 4): adding a fault is adding one file.

A throwaway module, written to a temporary directory and named nowhere else, declares a
``noop-latency`` fault (its kind, parameter, colour, target type, probe and a ``validate`` hook).
Loaded as a plugin — ``harness.faults.load_plugins(DIR)`` in-process, ``$CACHECERT_FAULTS=DIR`` for
the command line — it parses from a schedule string, lists in ``cachecert ls faults``, has its
colour, refuses a run it cannot serve before anything starts, and is played and probed by the
nemesis, with no other file touched. A plugin that claims a built-in kind is refused. No service
is started here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.history import HistoryWriter, load_history
from harness import catalog, faults
from harness.cli import main as cli_main
from harness.faults import FaultContext, FaultError
from harness.nemesis import Nemesis
from harness.runner import ConfigError, RunConfig, prepare

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A latency that adds nothing: records when it starts and stops, and its probe reports it."""

from dataclasses import dataclass
from typing import ClassVar

from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, Param, RunContext

EVENTS: list[tuple[str, str]] = []


@dataclass
class NoopLatency(BaseFault):
    kinds: ClassVar[dict[str, Kind]] = {
        "noop-latency": Kind("pretends to add latency: records start and stop, delays nothing", "#123456",
                             {"ms": Param(100)}, example="postgres")}
    targets: ClassVar[str] = "proxy"

    def start(self, ctx: FaultContext) -> None:
        EVENTS.append(("start", self.target))

    def stop(self, ctx: FaultContext) -> None:
        EVENTS.append(("stop", self.target))

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        on = bool(EVENTS) and EVENTS[-1] == ("start", self.target)
        return on, f"flag up on {self.target}" if on else "flag not up"

    def validate(self, run: RunContext) -> None:
        if self.params["ms"] > run.config.op_timeout * 1000:
            raise FaultError(f"noop-latency: ms={self.params['ms']} is longer than the op timeout "
                             f"({run.config.op_timeout * 1000:g} ms)")
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin file in its own directory, registered for this test only."""
    d = tmp_path / "my_faults"
    d.mkdir()
    (d / "noop_latency.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.setattr(faults, "REGISTRY", dict(faults.REGISTRY))
    monkeypatch.setattr(faults, "BROKEN", dict(faults.BROKEN))
    assert faults.load_plugins(d) == ["noop-latency"], faults.BROKEN
    return d


def _events() -> list[tuple[str, str]]:
    return sys.modules[faults.REGISTRY["noop-latency"].__module__].EVENTS  # type: ignore[attr-defined]


def test_a_plugin_fault_parses_from_a_schedule_string(plugin_dir: Path) -> None:
    assert "noop-latency" in faults.KINDS and faults.KINDS.index("noop-latency") < faults.KINDS.index("kill")
    (s,) = faults.parse("noop-latency:redis:ms=50@1+2", 10, services=("redis", "postgres"))
    assert s.fault.kind == "noop-latency" and s.fault.params == {"ms": 50} and (s.at, s.duration) == (1, 2)
    assert s.to_text() == "noop-latency:redis:ms=50@1+2"
    assert faults.parse("noop-latency:postgres@10%+20%", 10)[0].fault.params == {"ms": 100}  # the default
    with pytest.raises(FaultError, match=r"noop-latency: unknown parameter 'jitter' \(valid: ms\)"):
        faults.parse("noop-latency:redis:jitter=1@1+1", 10)
    with pytest.raises(FaultError, match="noop-latency: ms must be a number >= 0"):
        faults.parse("noop-latency:redis:ms=-5@1+1", 10)
    with pytest.raises(FaultError, match="noop-latency: unknown target 'mysql'"):
        faults.parse("noop-latency:mysql@1+1", 10, services=("redis",))


def test_a_plugin_fault_is_listed_and_coloured(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (entry,) = [e for e in catalog.entries("faults") if e.name == "noop-latency"]
    assert entry.description.startswith("pretends to add latency") and entry.params == "ms=100"
    assert entry.extra == {"target": "SERVICE or SERVICE.LINK (its proxy)", "example": "noop-latency:postgres@2+3"}
    assert cli_main(["ls", "faults"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("noop-latency "))
    assert "params: ms=100" in line and "e.g. noop-latency:postgres@2+3" in line

    fault = faults.make_fault("noop-latency", "redis")
    assert faults.PALETTE["noop-latency"] == fault.color == fault.describe()["color"] == "#123456"
    assert faults.PALETTE["latency"] == "#f2b134"  # the built-ins keep theirs


def test_a_plugin_fault_is_validated_before_the_run(plugin_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"noop-latency: ms=5000 is longer than the op timeout \(1000 ms\)"):
        prepare(RunConfig(workload="register", strategy="no-cache", faults="noop-latency:redis:ms=5000@1+1",
                          time_limit=5))
    p = prepare(RunConfig(workload="register", strategy="no-cache", faults="noop-latency:redis:ms=50@1+1",
                          time_limit=5))
    assert [s.to_text() for s in p.schedule] == ["noop-latency:redis:ms=50@1+1"]


def test_a_plugin_fault_is_played_and_probed_by_the_nemesis(plugin_dir: Path, tmp_path: Path) -> None:
    cluster = SimpleNamespace(toxiproxy=SimpleNamespace(reset=lambda: None), svc={})  # heal's belt and braces
    schedule = faults.parse("noop-latency:redis@0+0.3", 1)
    history = HistoryWriter(tmp_path / "history.jsonl")
    nemesis = Nemesis(schedule, FaultContext(cluster), history)
    nemesis.start(time.monotonic())
    deadline = time.monotonic() + 30
    while ("stop", "redis") not in _events() and time.monotonic() < deadline:
        time.sleep(0.05)
    nemesis.heal()
    history.close()
    assert _events() == [("start", "redis"), ("stop", "redis")]
    assert nemesis.probes == [{"fault": "noop-latency(redis, ms=100)", "at": 0.0, "verified": True,
                               "observed": "flag up on redis"}]
    ops: list[dict[str, Any]] = [op for op in load_history(tmp_path / "history.jsonl") if op["process"] == "nemesis"]
    assert sorted(op["f"] for op in ops) == ["probe", "start", "stop"]
    assert all(op["value"]["fault"] == "noop-latency" and op["value"]["color"] == "#123456" for op in ops)


def test_a_plugin_cannot_take_a_built_in_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "REGISTRY", dict(faults.REGISTRY))
    monkeypatch.setattr(faults, "BROKEN", dict(faults.BROKEN))
    bad = tmp_path / "shadow.py"
    bad.write_text(textwrap.dedent(PLUGIN).replace('"noop-latency": Kind', '"latency": Kind'))
    assert faults.load_plugins(bad) == []
    assert "'latency'" in faults.BROKEN[str(bad)] and "ToxicFault" in faults.BROKEN[str(bad)]
    assert faults.REGISTRY["latency"].__name__ == "ToxicFault"


def test_cachecert_faults_names_plugins_for_every_command(plugin_dir: Path) -> None:
    env = {**os.environ, faults.PLUGINS_ENV: str(plugin_dir)}
    p = subprocess.run([sys.executable, "-m", "harness.cli", "ls", "faults"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert any(ln.startswith("noop-latency ") for ln in p.stdout.splitlines()), p.stdout
