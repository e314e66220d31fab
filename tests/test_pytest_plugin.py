"""The pytest plugin (issue 9), tested the way a team would use it: a test file run by pytester.

The inner sessions run in a subprocess (their own cluster of Redis + PostgreSQL + Toxiproxy, started
by ``cachecert_cluster`` on first use), with the plugin loaded from its ``pytest11`` entry point.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

GOOD_AND_BAD = '''
import pytest

@pytest.mark.cachecert(workload="register", strategy="no-cache", faults="down:redis@50%+50%",
                       time_limit=2, rate=100, seed=11, concurrency=4)
def test_no_cache_survives_redis_down(cachecert_result):
    assert cachecert_result["valid"] is True

# cache-aside: the DEL after a commit fails while Redis is down, so the old value stays cached
# (5/5 seeds fail: reads after the heal return cached values older than the DB's)
@pytest.mark.cachecert(workload="register", strategy="cache-aside", faults="down:redis@50%+50%",
                       time_limit=2, rate=100, seed=11, concurrency=4)
def test_cache_aside_survives_redis_down():
    pass

def test_fixtures(cachecert_reset, cachecert_run):
    import redis
    from core.clients import Pg

    # the cache-aside test above left cache entries and rows: the reset fixture emptied both
    host, port = cachecert_reset.direct["redis"].split(":")
    assert redis.Redis(host=host, port=int(port)).dbsize() == 0
    assert Pg(cachecert_reset.direct["postgres"]).execute("select count(*) from kv") == [(0,)]
    res = cachecert_run("register", strategy="no-cache", time_limit=1, rate=100, seed=3, concurrency=2)
    assert res["valid"] is True and res["counts"]["ok"] > 0
    # the same through the user's own service as app nodes
    import sys
    res = cachecert_run("register", app=f"{sys.executable} -m harness.cli serve-node no-cache", nodes=2,
                        time_limit=1, rate=100, seed=3, concurrency=2)
    assert res["valid"] is True and res["strategy"] == "app:no-cache" and res["app"]["nodes"] == 2
'''

BAD_INPUT = '''
import pytest

@pytest.mark.cachecert(workload="no-such-workload")
def test_unknown_workload():
    pass

@pytest.mark.cachecert(workload="register", faults="down:redis@1+5", time_limit=2)
def test_fault_longer_than_run():
    pass

@pytest.mark.cachecert(workload="register", faults_file="bad.faults", time_limit=2)
def test_malformed_schedule_file():
    pass

@pytest.mark.cachecert(workload="register", colour="red")
def test_unknown_argument():
    pass

@pytest.mark.cachecert(workload="register", faults="down:redis@2+2")  # time limit from the command line
def test_fault_longer_than_option_time_limit():
    pass

def test_unmarked_test_starts_nothing():
    pass
'''


def _env(tmp_path: Path) -> dict[str, str]:
    state = Path(f"/tmp/ccp-{os.getpid()}-{tmp_path.name[-12:]}")  # short: sockets live below it
    state.mkdir(mode=0o755, exist_ok=True)
    state.chmod(0o755)  # postgres (another user) must reach its data directory
    # pytester moves HOME; keep matplotlib's font cache where it is (rebuilding it costs seconds)
    mpl = os.environ.get("MPLCONFIGDIR") or str(Path.home() / ".cache" / "matplotlib")
    return {"CACHECERT_STATE_DIR": str(state), "CACHECERT_REPORTS": str(tmp_path / "reports"), "MPLCONFIGDIR": mpl}


def _run(pytester: pytest.Pytester, tmp_path: Path, *args: str) -> pytest.RunResult:
    """Run pytest on the test files in a subprocess (``--setup-show``: the output shows each fixture set up)."""
    mp = pytest.MonkeyPatch()
    env = _env(tmp_path)
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore", "--setup-show", *args,
                                             timeout=240)
    finally:
        mp.undo()
        shutil.rmtree(env["CACHECERT_STATE_DIR"], ignore_errors=True)  # its clusters are down by now


def test_good_strategy_passes_bad_strategy_fails_readably(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_certify=GOOD_AND_BAD)
    reports = tmp_path / "out"
    junit = tmp_path / "junit.xml"
    res = _run(pytester, tmp_path, "--cachecert-report-dir", str(reports), f"--junitxml={junit}", "-rA")
    out = res.stdout.str()
    res.assert_outcomes(passed=2, failed=1)
    assert len(re.findall(r"SETUP    S cachecert_cluster", out)) == 1  # one session cluster for all tests
    # the failure names the anomaly in words and where the report is
    failure = out[out.index("_ test_cache_aside_survives_redis_down _"):]
    assert "cachecert: register/cache-aside (seed 11) is INVALID" in failure
    # (the stale entry outlives the heal; convergence is given the 5 s TTL, so the stale reads are what fail)
    assert re.search(r"(linearizable|versions|staleness|session): INVALID: \d+ anomal(y|ies)\n    - [\w-]+ on key "
                     r"k\d: \w", failure), failure
    report = re.search(r"report: (\S+report\.html)", failure)
    assert report and Path(report.group(1)).exists() and str(reports) in report.group(1)
    assert f"reproduce: cachecert reproduce {reports}" in failure
    assert "Traceback" not in failure.split("= cachecert reports =")[0]
    # the header lists the service versions; the summary lists every run's report
    assert re.search(r"cachecert: backend local; redis \d+\.\d+\S*, postgres \d+\S*, kafka \d\S*, toxiproxy v",
                     out), out[:2000]
    summary = out[out.index("cachecert reports"):]
    assert re.search(r"valid\s+test_certify.py::test_no_cache_survives_redis_down\s+\S+report\.html", summary)
    assert re.search(r"INVALID\s+test_certify.py::test_cache_aside_survives_redis_down", summary)
    # the report path is a JUnit property of each test
    xml = junit.read_text()
    assert xml.count('name="cachecert_report"') == 4, xml  # one per run: test_fixtures runs two


def test_bad_input_names_the_test_or_file_and_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_bad=BAD_INPUT)
    (pytester.path / "bad.faults").write_text("# a schedule\nlatency:redis:ms=100@0.5+0.5\ndown:redis@oops+1\n")
    res = _run(pytester, tmp_path, "-rA", "--cachecert-time-limit", "3")
    out = res.stdout.str()
    res.assert_outcomes(passed=1, errors=5)
    assert ("test_bad.py::test_unknown_workload: @pytest.mark.cachecert: unknown workload 'no-such-workload' "
            "(valid: ") in out
    assert "test_bad.py::test_fault_longer_than_run: @pytest.mark.cachecert: down:redis@1+5: ends at 6 s, " \
           "after the run's 2 s time limit" in out
    assert re.search(r"test_malformed_schedule_file: @pytest.mark.cachecert: \S*bad\.faults:3: .*bad start 'oops'",
                     out), out
    assert "test_unknown_argument: @pytest.mark.cachecert: unknown argument 'colour'" in out
    assert "test_fault_longer_than_option_time_limit: @pytest.mark.cachecert: down:redis@2+2: ends at 4 s, " \
           "after the run's 3 s time limit" in out
    assert "cachecert reports" not in out  # nothing ran
    assert "cachecert_cluster" not in out  # the cluster fixture was never set up: nothing started


def test_unknown_backend_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = _run(pytester, tmp_path, "--cachecert-backend", "nosuch")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cachecert-backend 'nosuch' is not available (valid: local" in res.stderr.str()


def test_plugin_is_loaded_and_import_cheap(request: pytest.FixtureRequest) -> None:
    import subprocess
    import sys

    assert request.config.pluginmanager.has_plugin("cachecert")
    code = "import sys, harness.pytest_plugin; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('harness', 'strategies', 'workloads', 'checkers', 'hypothesis', 'redis', 'psycopg')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['harness', 'harness.pytest_plugin']"
