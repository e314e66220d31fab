"""The report in a real browser: Debian's headless Chromium loads it from file://, with no console
message, shows the verdict in the DOM, and paints the verdict banner in the screenshot.

The report has no script at all, so *any* console message (Chromium logs them as ``CONSOLE`` lines
with --enable-logging=stderr) counts as an error; a control page with a console.error proves the
detector works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import render
from harness.report.synthetic import write_synthetic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and could not be "
                                "(scripts/bootstrap.sh installs Debian's chromium when CACHECERT_WITH_CHROMIUM=1)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0"]


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("browser")
    write_synthetic(d / "history.jsonl", 20_000, seed=2)
    (d / "results.json").write_text(json.dumps({
        "workload": "register", "strategy": "cache-aside", "valid": False, "exit_code": 1, "counts": {"ok": 1},
        "checkers": {"staleness": {"valid": False, "anomalies": [
            {"type": "stale-read", "key": "k1", "ops": [2, 3], "explanation": "browser-test anomaly"}]}}}))
    (d / "config.json").write_text(json.dumps({"config": {"workload": "register"}, "command": ["cachecert"]}))
    return render(d)


def test_console_detector_sees_errors(tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text('<html><body>x<script>console.error("control-error")</script></body></html>')
    p = chromium(page, tmp_path, "--dump-dom")
    assert any("control-error" in line for line in console_lines(p.stderr)), p.stderr[-2000:]


def test_report_loads_clean_and_shows_verdict(report: Path, tmp_path: Path) -> None:
    p = chromium(report, tmp_path, "--dump-dom")
    assert p.returncode == 0, p.stderr[-2000:]
    assert console_lines(p.stderr) == []
    dom = p.stdout
    assert 'id="verdict" data-verdict="invalid">INVALID' in dom
    assert "browser-test anomaly" in dom and 'class="fault-band"' in dom
    assert dom.count("<img") >= 4  # latency, rates, staleness, anomaly timeline


def test_report_screenshot_paints_the_banner(report: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    shot = tmp_path / "shot.png"
    p = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    assert console_lines(p.stderr) == []
    img = mpimg.imread(str(shot))[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1200
    assert float(img.std()) > 0.05  # not blank
    banner = np.median(img[5:40, 5:300].reshape(-1, 3), axis=0)  # the INVALID banner is #c0392b
    assert np.allclose(banner, [0xC0 / 255, 0x39 / 255, 0x2B / 255], atol=0.08), banner
    # plots painted below the banner: many distinct colours
    assert len(np.unique((img[300:1600:4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
