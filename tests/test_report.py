"""Reports, JUnit, certification (issue 7): rendered from real runs on the embedded cluster and from
a huge synthetic history; assertions read the content (verdict, explanations, fault bands)."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from core.history import load_history
from harness import certify as C
from harness.cli import main as cli_main
from harness.cluster import Cluster
from harness.junit import to_xml, write_junit
from harness.report import render
from harness.report.synthetic import write_synthetic
from harness.runner import Run, RunConfig, prepare

pytest_plugins = ["pytester"]  # a user's project, run by the pytest plugin (issue 13)

try:
    import checkers  # noqa: F401

    HAVE_CHECKERS = hasattr(checkers, "run_checkers")
except ImportError:
    HAVE_CHECKERS = False


def _run(cluster: Cluster, tmp_path: Path, **kw) -> dict:
    cfg = RunConfig(reports=str(tmp_path), quiesce=kw.pop("quiesce", 0.2), **kw)
    return Run(prepare(cfg), cluster=cluster, progress=False).execute()


def _self_contained(html: str) -> None:
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not load anything remote"
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert imgs and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)


def _inject_anomaly(run_dir: Path) -> dict:
    """A failing verdict with a known anomaly on real ops of the run: a read of a key and the write
    of that key that completed before it (used when the shared checkers are not installed or find
    nothing in this short run)."""
    res = json.loads((run_dir / "results.json").read_text())
    if res.get("valid") is False:
        return res
    hist = load_history(run_dir / "history.jsonl")
    writes = {}
    for o in hist:
        if o["process"] != "nemesis" and o["type"] == "ok" and o["f"] == "write":
            writes.setdefault(o["key"], o)
    read = next(o for o in hist if o["process"] != "nemesis" and o["type"] == "ok" and o["f"] == "read"
                and o["key"] in writes and o["index"] > writes[o["key"]]["index"])
    w = writes[read["key"]]
    anomaly = {"type": "stale-read", "key": read["key"], "ops": [w["index"], read["index"]],
               "explanation": f"INJECTED: read of {read['key']} (op {read['index']}) returned an older "
                              f"value than the write at op {w['index']} that completed before it began"}
    res.setdefault("checkers", {})["injected"] = {"valid": False, "anomalies": [anomaly], "stale_reads": 1}
    res["valid"], res["exit_code"] = False, 1
    (run_dir / "results.json").write_text(json.dumps(res))
    return res


# -- real runs -------------------------------------------------------------------------------------
def test_passing_run_renders_report(cluster: Cluster, tmp_path: Path) -> None:
    res = _run(cluster, tmp_path, workload="register", strategy="no-cache", time_limit=1.5, concurrency=4,
               seed=3, faults="none")
    run_dir = Path(res["run_dir"])
    html = (run_dir / "report.html").read_text()  # rendered by the run engine itself
    if HAVE_CHECKERS:
        assert res["valid"] is True, res["checkers"]
    word = {True: "VALID", False: "INVALID"}.get(res["valid"], "UNKNOWN")
    cls = {True: "valid", False: "invalid"}.get(res["valid"], "unknown")
    assert f'id="verdict" data-verdict="{cls}">{word}<small>' in html
    assert f"cachecert rerun {run_dir}" in html
    assert "No faults were injected" in html
    for name in res.get("checkers", {}):
        assert f'id="checker-{name}"' in html
    _self_contained(html)
    for png in ("latency.png", "rates.png", "staleness.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert "0 stale of" in html  # no-cache never reads a stale value
    # results.json carries every field docs/results-schema.md documents as always present
    stored = json.loads((run_dir / "results.json").read_text())
    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    top = doc.split("## Top level")[1].split("##")[0]
    required = re.findall(r"^\| `(\w+)` \| (?!.*optional)", top, re.M)
    assert len(required) >= 10 and set(required) <= set(stored), set(required) - set(stored)
    assert stored["exit_code"] in (0, 1, 2) and stored["valid"] in (True, False, "unknown")


@pytest.fixture(scope="module")
def failing_run(session_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("failing")
    session_cluster.toxiproxy.reset()
    res = _run(session_cluster, tmp, workload="register", strategy="cache-aside", time_limit=3.0,
               concurrency=6, seed=11, faults="latency:redis:ms=120@0.8+1.2")
    run_dir = Path(res["run_dir"])
    _inject_anomaly(run_dir)
    render(run_dir)
    return run_dir


def test_failing_run_report_shows_anomaly_and_fault(failing_run: Path) -> None:
    html = (failing_run / "report.html").read_text()
    res = json.loads((failing_run / "results.json").read_text())
    assert 'data-verdict="invalid">INVALID' in html
    failed = [n for n, r in res["checkers"].items() if r.get("valid") is False]
    first = next(a for n in failed for a in res["checkers"][n].get("anomalies", []))
    assert first["explanation"].replace("'", "&#x27;").replace('"', "&quot;") in html
    assert 'id="anomaly-1"' in html and 'alt="anomaly 1 timeline"' in html
    assert (failing_run / "anomaly-1.png").exists()
    for i in first["ops"]:  # the ops table lists the ops of the anomaly
        assert re.search(rf'<td class="num">(\d+/)?{i}(/\d+)?</td>', html), i
    # the fault window: its label (the nemesis op's name) in a band marker, and the probe verdict
    nem = [o for o in load_history(failing_run / "history.jsonl") if o["f"] == "start"]
    name = nem[0]["value"]["name"]
    assert f'class="fault-band" data-fault="{name}"' in html
    assert nem[0]["value"]["color"] in html
    _self_contained(html)


def test_cli_report_and_ls(failing_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (failing_run / "report.html").unlink()
    assert cli_main(["report", str(failing_run)]) == 0
    assert "INVALID" in capsys.readouterr().out
    assert "INVALID" in (failing_run / "report.html").read_text()
    root = failing_run.parents[2]
    assert cli_main(["ls", "--reports", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["run_dir"] == str(failing_run))
    assert row["valid"] is False and row["report"] and "latency:redis" in row["faults"]
    assert cli_main(["ls", "--reports", str(root)]) == 0
    assert "INVALID" in capsys.readouterr().out
    assert cli_main(["report", str(root / "nope")]) == 3


def test_junit_parses_back(failing_run: Path, tmp_path: Path) -> None:
    res = json.loads((failing_run / "results.json").read_text())
    unknown = {"workload": "register", "strategy": "x", "valid": "unknown", "wall_s": 1.0,
               "checkers": {"linearizable": {"valid": "unknown", "error": "timed out"},
                            "durability": {"valid": True}}}
    crashed = {"workload": "register", "strategy": "y", "valid": "unknown", "error": "ServiceError: boom",
               "checkers": {}}
    path = write_junit(tmp_path / "out" / "junit.xml", [res, unknown, crashed], ["a", None, None])
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["a", "register/x", "register/y"]
    s0 = suites[0]
    cases = s0.findall("testcase")
    assert {c.get("name") for c in cases} == set(res["checkers"])
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(s0.get("failures")) == len(failures) >= 1
    assert int(s0.get("tests")) == len(cases)
    f = failures[0].find("failure")
    assert f.get("message") and f.text and "anomal" in f.get("message")
    assert all(c.get("classname") == f"cachecert.register.{res['strategy']}" for c in cases)
    props = {p.get("name"): p.get("value") for p in s0.find("properties")}
    assert props["run_dir"] == str(failing_run) and props["report"].endswith("report.html")
    s1 = suites[1]
    assert s1.get("errors") == "1" and s1.get("failures") == "0" and s1.get("tests") == "2"
    assert s1.find("testcase[@name='linearizable']/error").get("type") == "unknown"
    assert suites[2].find("testcase[@name='harness']/error") is not None
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)
    assert int(root.get("failures")) == len(failures)
    ET.fromstring(to_xml([{"workload": "w", "strategy": "s", "valid": False, "checkers": {
        "c": {"valid": False, "anomalies": [{"type": "t", "explanation": "bad \x01 char <&>"}]}}}]))


# -- huge history ------------------------------------------------------------------------------------
def test_huge_synthetic_history_renders(tmp_path: Path) -> None:
    facts = write_synthetic(tmp_path / "history.jsonl", 200_000, seed=1)
    (tmp_path / "results.json").write_text(json.dumps({
        "workload": "register", "strategy": "cache-aside", "valid": False, "exit_code": 1,
        "counts": {"ok": 1}, "checkers": {"staleness": {"valid": False, "bound_ms": 1000, "anomalies": [
            {"type": "stale-read", "key": "k3", "ops": [2, 3, 1000, 1001], "explanation": "SYNTHETIC explanation"}]}}}))
    (tmp_path / "config.json").write_text(json.dumps({"config": {"workload": "register"},
                                                      "command": ["cachecert", "run", "register"]}))
    out = render(tmp_path)
    html = out.read_text()
    assert "huge history (200,008 records)" in html
    assert re.search(r"latency: [\d,]+ of 100,000 ops drawn", html)
    assert f'data-fault="{facts["fault"]}"' in html
    assert "SYNTHETIC explanation" in html and 'data-verdict="invalid"' in html
    m = re.search(r"([\d,]+) stale of ([\d,]+) versioned reads", html)
    assert m and int(m.group(2).replace(",", "")) > 50_000
    assert len(html) < 3_000_000  # sampled: the page stays small


# -- guarantees and certification --------------------------------------------------------------------
def test_guarantee_mapping() -> None:
    res = {"checkers": {
        "linearizable": {"valid": False, "anomalies": [{"type": "stale-read", "explanation": "x"}]},
        "staleness": {"valid": True, "bound_ms": 500, "max_staleness_ms": 12.0},
        "session": {"valid": False, "anomalies": [{"type": "non-monotonic-read", "explanation": "went back"}]},
        "durability": {"valid": "unknown", "error": "timeout"}}}
    g = C.guarantees_of(res)
    assert g["linearizable"]["status"] == "fail" and "1 anomaly" in g["linearizable"]["detail"]
    assert g["bounded-staleness"]["status"] == "pass" and "bound 500 ms" in g["bounded-staleness"]["detail"]
    assert g["monotonic-reads"]["status"] == "fail" and "went back" in g["monotonic-reads"]["detail"]
    assert g["read-your-writes"]["status"] == "pass"
    assert g["no-lost-writes"]["status"] == "unknown"
    assert g["no-torn-reads"]["status"] == "n/a" and g["herd-bound"]["status"] == "n/a"
    # sub-results, when the session checker reports them, win over anomaly types
    res2 = {"checkers": {"session": {"valid": False, "read_your_writes": {"valid": False},
                                     "monotonic_reads": {"valid": True}, "anomalies": [{"type": "x"}]}}}
    g2 = C.guarantees_of(res2)
    assert g2["read-your-writes"]["status"] == "fail" and g2["monotonic-reads"]["status"] == "pass"


def test_certify_matrix_links_every_run(cluster: Cluster, tmp_path: Path) -> None:
    plan = C.resolve(["cache-aside"], ["register"], ["none", "redis-latency"], time_limit=1.5,
                     concurrency=4, seed=5, reports=str(tmp_path), quiesce=0.2)
    assert plan.pairs == [("register", "none"), ("register", "redis-latency")]
    cells = C.execute(plan, log=lambda m: None, cluster=cluster)
    out = tmp_path / "certify" / "cache-aside" / "t"
    out.mkdir(parents=True)
    idx = C.write_certificate("cache-aside", cells, out, plan)
    html = idx.read_text()
    links = re.findall(r'<a href="([^"]+)">', html)
    assert len(links) >= 2
    for link in set(links):
        assert (out / link).resolve().exists(), link
    for c in cells:
        assert c.run_dir and (Path(c.run_dir) / "report.html").exists()
        assert c.figures["ok ops/s"] > 0
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["strategy"] == "cache-aside" and len(cert["runs"]) == 2
    assert set(cert["guarantees"]) == {g[0] for g in C.GUARANTEES}
    assert cert["exit_code"] == C.merged_exit(cells)
    assert [r["plan"] for r in cert["runs"]] == ["none", "redis-latency"]
    assert 'class="matrix"' in html and "redis-latency" in html
    _self_contained_page(html)
    if HAVE_CHECKERS:
        assert any(cell["guarantees"]["linearizable"]["status"] != "n/a" for cell in cert["runs"])


def _self_contained_page(html: str) -> None:
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)


def test_certify_cli_rejects_unknown_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["certify", "no-such-strategy", "--time-limit", "1"]) == 3
    assert "unknown strategy" in capsys.readouterr().err


def test_render_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from harness.runner import render_report

    (tmp_path / "results.json").write_text(json.dumps({"valid": True, "exit_code": 0}))
    (tmp_path / "history.jsonl").mkdir()  # unreadable as a file: rendering fails
    render_report(tmp_path)
    assert "report rendering failed" in caplog.text
    assert json.loads((tmp_path / "results.json").read_text())["exit_code"] == 0


# -- issue 13: small things a user trips on ------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def _store(run_dir: Path, history: list[dict], results: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.jsonl").write_text("".join(json.dumps(o) + "\n" for o in history))
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _op(i: int, p: int, t: float, f: str, typ: str, value=None, key: str = "k0", **kw) -> dict:
    return {"index": i, "process": p, "type": typ, "f": f, "key": key, "value": value, "time_ns": int(t * 1e9), **kw}


def _tiny_history() -> list[dict]:
    """Ops that complete at the instant they are invoked (zero latency) and one stale read: the
    shapes that made a tiny run's report fail on a log-scaled axis with nothing positive on it."""
    return [_op(0, 0, 0.1, "read", "invoke"), _op(1, 0, 0.1, "read", "ok", 1, version=1),
            _op(2, 0, 0.2, "write", "invoke", 2), _op(3, 0, 0.2, "write", "ok", 2, version=2),
            _op(4, 0, 0.3, "read", "invoke"), _op(5, 0, 0.3, "read", "ok", 1, version=1)]


def test_tiny_history_renders_and_says_no_data(tmp_path: Path) -> None:
    run_dir = _store(tmp_path / "tiny", _tiny_history(), {
        "workload": "register", "strategy": "cache-aside", "valid": True, "exit_code": 0, "checkers": {}})
    html = render(run_dir).read_text()
    assert "t-visibility: no data to draw (1 versioned read(s) after a write" in html
    assert "could not be drawn" not in html
    for png in ("latency.png", "rates.png", "staleness.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"
    _self_contained(html)
    # no client op at all: the page says there is nothing to plot
    empty = _store(tmp_path / "empty", [{"process": "nemesis", "type": "info", "f": "phase", "value": "load",
                                         "index": 0, "time_ns": 0}], {"valid": "unknown", "checkers": {}})
    assert 'id="no-data">No data to plot' in render(empty).read_text()


def test_failing_plot_becomes_a_figure_saying_why(tmp_path: Path) -> None:
    from harness.report import figures as F

    def broken(_: object) -> F.Plot:
        raise ValueError("Data has no positive values, and therefore cannot be log-scaled.")

    p = F.guarded("latency", "Latency", broken, None)
    assert p.png[:4] == b"\x89PNG" and p.notes == [
        "Latency: not drawn (ValueError: Data has no positive values, and therefore cannot be log-scaled.)"]


RENDER_FRESH = """
import json, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from harness.report import render   # matplotlib is imported here, fresh
    render(sys.argv[1])
print(json.dumps([f"{w.category.__name__}: {w.message} ({w.filename})" for w in caught]))
"""


def test_rendering_emits_no_deprecation_warning(tmp_path: Path) -> None:
    import subprocess
    import sys
    import warnings

    write_synthetic(tmp_path / "history.jsonl", 4_000, seed=2)
    (tmp_path / "results.json").write_text(json.dumps({"workload": "register", "valid": True, "checkers": {}}))
    # a fresh interpreter: the plotting stack's import-time warnings count too (216 in a user's run)
    proc = subprocess.run([sys.executable, "-c", RENDER_FRESH, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=True)
    assert json.loads(proc.stdout) == []
    assert "deprecated" not in proc.stderr, proc.stderr[:2000]
    with warnings.catch_warnings(record=True) as caught:  # and in this process, drawing again
        warnings.simplefilter("always")
        render(tmp_path)
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []


def test_anomaly_picture_draws_the_writes_that_rule_the_read_out(tmp_path: Path) -> None:
    from checkers.linearizable import check

    # 41 is written, then 45; a later read returns 41: after the prefix k0 could only hold 45
    hist = [_op(0, 0, 0.0, "write", "invoke", 41), _op(1, 0, 0.1, "write", "ok", 41),
            _op(2, 1, 0.2, "write", "invoke", 45), _op(3, 1, 0.3, "write", "ok", 45),
            _op(4, 2, 0.4, "read", "invoke"), _op(5, 2, 0.5, "read", "ok", 41),
            _op(6, 3, 0.41, "read", "invoke"), _op(7, 3, 0.45, "read", "ok", 45)]
    lin = check(hist)
    anomaly = lin["anomalies"][0]
    assert anomaly["op"] == 4 and anomaly["last_state"] == "45"
    assert {0, 2} <= set(anomaly["context_ops"]) and not {0, 2} & set(anomaly["ops"])  # not concurrent: context
    run_dir = _store(tmp_path, hist, {"workload": "register", "strategy": "x", "valid": False, "exit_code": 1,
                                      "checkers": {"linearizable": lin}})
    html = render(run_dir).read_text()
    drawn = re.search(r'alt="anomaly 1 timeline" data-ops="([\d ]+)"', html)
    assert drawn and {0, 2, 4} <= {int(i) for i in drawn.group(1).split()}
    assert re.findall(r'<tr data-role="(\w+)"><td class="num">(\d+)/', html) == [
        ("context", "0"), ("context", "2"), ("culprit", "4"), ("op", "6")]
    assert "the last linearizable state (45)" in html and "the value read (41)" in html
    assert "last linearizable state: k0 could only hold 45 (after 3 ops)" in html
    assert (run_dir / "anomaly-1.png").read_bytes()[:4] == b"\x89PNG"


NEW_FIELDS = {
    "workload": "register", "strategy": "cache-aside", "valid": "unknown", "exit_code": 2,
    "interrupted": True, "interrupted_at_s": 3.25,
    "history_truncated": {"complete_records": 1234, "message": "history.jsonl ends in a torn line"},
    "unverified_faults": ["latency(redis, ms=150)"],
    "unknown_reasons": ["fault not verified: latency(redis, ms=150)", "durability: nothing to judge: no writes"],
    "checkers": {"linearizable": {"valid": True},
                 "durability": {"valid": "unknown", "reason": "nothing to judge: no writes"},
                 "convergence": {"valid": True, "converge_s": 0.42}}}


def test_banner_shows_why_a_verdict_is_unknown(tmp_path: Path) -> None:
    run_dir = _store(tmp_path, _tiny_history(), NEW_FIELDS)
    html = render(run_dir).read_text()
    why = re.search(r'<small class="why" id="verdict-why">([^<]+)</small>', html)
    assert why and why.group(1) == ("interrupted at 3.2 s · history truncated after 1,234 complete records · "
                                    "fault not verified: latency(redis, ms=150) · "
                                    "durability: nothing to judge: no writes")
    assert "history truncated after 1,234 complete records: history.jsonl ends in a torn line" in html
    assert "why unknown: nothing to judge: no writes" in html
    assert "converged 0.42 s after heal" in html and "converged after heal (s)" in html
    # an old results.json without any of these fields: no status line
    old = _store(tmp_path / "old", _tiny_history(), {"workload": "register", "valid": True, "checkers": {}})
    assert 'id="verdict-why"' not in render(old).read_text()


def test_certificate_cell_follows_the_run_verdict_and_says_why(tmp_path: Path) -> None:
    g = C.guarantees_of(NEW_FIELDS)
    # the checker passed, but the fault was not confirmed: the guarantee was not tested
    assert g["linearizable"]["status"] == "unknown" and "fault not verified" in g["linearizable"]["detail"]
    assert g["no-lost-writes"] == {"status": "unknown", "detail": "nothing to judge: no writes"}
    assert "converged 0.42 s after heal" in g["convergence"]["detail"]
    confirmed = {k: v for k, v in NEW_FIELDS.items()
                 if k not in ("interrupted", "history_truncated", "unverified_faults")}
    assert C.guarantees_of(confirmed)["linearizable"]["status"] == "pass"
    from harness.report import status_notes

    cell = C.Cell("register", "redis-latency", "cache-aside", valid="unknown", notes=status_notes(NEW_FIELDS),
                  guarantees=g)
    plan = C.Plan(["cache-aside"], [("register", "redis-latency")])
    html = C.write_certificate("cache-aside", [cell], tmp_path, plan).read_text()
    verdict_cell = re.search(r'<tr><th>run verdict</th><td class="c-unknown" data-status="unknown" title="([^"]+)"',
                             html)
    assert verdict_cell and "fault not verified: latency(redis, ms=150)" in verdict_cell.group(1)
    assert "interrupted at 3.2 s" in verdict_cell.group(1)
    assert 'data-status="pass"' not in html
    cert = json.loads((tmp_path / "certificate.json").read_text())
    assert cert["guarantees"]["linearizable"]["verdict"] == "unknown"


def test_tiny_real_run_from_another_directory_gets_its_report_there(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `cachecert search write-through-db-failure -s cache-then-db` runs: 1 key at 25 ops/s. No
    reports root given: the run lands in ./reports of the working directory, with its report."""
    monkeypatch.delenv("CACHECERT_REPORTS", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(workload="write-through-db-failure", strategy="cache-then-db", keys=1, rate=25,
                    concurrency=2, time_limit=1.5, seed=4, quiesce=0.2, faults="down:postgres@0.5+0.5")
    res = Run(prepare(cfg), cluster=cluster, progress=False).execute()
    run_dir = Path(res["run_dir"])
    assert run_dir.parents[2] == tmp_path / "reports"
    assert "report rendering failed" not in (run_dir / "harness.log").read_text()
    html = (run_dir / "report.html").read_text()
    assert "could not be drawn" not in html
    _self_contained(html)


USER_STRATEGY = '''
from typing import Any, ClassVar

from strategies.base import Env, KvTable


class MyCache:
    """A user's own strategy, in a folder of its own (no cache: always linearizable)."""

    name: ClassVar[str] = "my-cache"

    def setup(self, env: Env) -> None:
        self.db = KvTable(env.pg())

    def read(self, key: str) -> dict[str, Any]:
        value, version = self.db.read(key)
        return {"value": value, "version": version, "source": "db", "hit": False}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        return {"version": self.db.write(key, value)}

    def close(self) -> None:
        pass
'''

USER_TEST = '''
import pytest

pytest_plugins = ["pytester"]

@pytest.mark.cachecert(workload="register", strategy="mycache.strategy:MyCache", time_limit=1.5, rate=100,
                       concurrency=2, seed=5)
def test_my_cache(cachecert_result):
    assert cachecert_result["counts"]["ok"] > 0
'''


def test_plugin_run_in_a_users_project_reports_into_its_rootdir_quietly(
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's project: a strategy package of its own, tests in tests/, pytest started from there.
    The report lands in <rootdir>/reports (not the cachecert checkout, not tests/reports), and the
    plotting stack prints no deprecation warnings into the user's output."""
    import os
    import shutil

    pytester.makeini("[pytest]\npythonpath = .\n")
    (pytester.path / "mycache").mkdir()
    (pytester.path / "mycache" / "__init__.py").write_text("")
    (pytester.path / "mycache" / "strategy.py").write_text(USER_STRATEGY)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_mine.py").write_text(USER_TEST)
    state = Path(f"/tmp/ccr-{os.getpid()}-{tmp_path.name[-10:]}")  # short: sockets live below it
    state.mkdir(mode=0o755, exist_ok=True)
    state.chmod(0o755)
    monkeypatch.setenv("CACHECERT_STATE_DIR", str(state))
    monkeypatch.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR") or str(Path.home() / ".cache" / "matplotlib"))
    monkeypatch.delenv("CACHECERT_REPORTS", raising=False)
    monkeypatch.chdir(pytester.path / "tests")
    try:
        res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", timeout=240)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    out = res.stdout.str() + res.stderr.str()
    res.assert_outcomes(passed=1)
    reports = [p for p in (pytester.path / "reports" / "register" / "my-cache").glob("*/report.html")
               if not p.parent.is_symlink()]  # not `latest`
    assert len(reports) == 1, out[-3000:]
    assert str(reports[0]) in out  # the terminal summary points at it
    assert not (pytester.path / "tests" / "reports").exists()
    assert not (REPO / "reports" / "register" / "my-cache").exists()
    assert "pyparsing" not in out and "matplotlib" not in out, out[-3000:]
