"""Report render time on synthetic histories of 10k, 100k and 1M ops (issue 7; target: 1M < 10 s).

    python -m benchmarks.report_bench [--sizes 10000,100000,1000000] [--repeat 1]

Each size: a synthetic register history (harness.report.synthetic: one fault window, stale reads,
a few fail/info ops) with a results.json holding one anomaly; then ``render`` in a fresh Python
process (so matplotlib's import, ~1 s, is counted as a user of `cachecert report` pays it), timed
end to end, plus the in-process split: reading the history, the plots, the page. Prints a table and
the ratio to the 10 s target. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.report.synthetic import write_synthetic

TARGET_S = 10.0


def make_run(d: Path, n: int) -> dict:
    facts = write_synthetic(d / "history.jsonl", n, seed=0)
    (d / "results.json").write_text(json.dumps({
        "workload": "register", "strategy": "cache-aside", "valid": False, "exit_code": 1, "seed": 0,
        "counts": {"ok": facts["pairs"]}, "checkers": {"staleness": {"valid": False, "bound_ms": 1000, "anomalies": [
            {"type": "stale-read", "key": "k1", "ops": [2, 3, 100, 101], "explanation": "benchmark anomaly"}]}}}))
    (d / "config.json").write_text(json.dumps({"config": {"workload": "register"},
                                               "command": ["cachecert", "run", "register"]}))
    return facts


def split(d: Path) -> dict[str, float]:
    """Where the time goes, in this process (matplotlib already imported)."""
    from harness.report import figures as F
    from harness.report.data import load

    out = {}
    t = time.perf_counter()
    data = load(d / "history.jsonl", [2, 3, 100, 101])
    out["read"] = time.perf_counter() - t
    t = time.perf_counter()
    F.latency_plot(data)
    F.rates_plot(data)
    F.staleness_plot(data, F.compute_staleness(data), 1000)
    out["plots"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    import harness.report.figures  # noqa: F401 - warm the import for the split

    rows = []
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            d = Path(tmp) / str(n)
            d.mkdir()
            make_run(d, n)
            size_mb = (d / "history.jsonl").stat().st_size / 1e6
            best = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "harness.cli", "report", str(d)], check=True,
                               capture_output=True)
                best = min(best, time.perf_counter() - t)
            parts = split(d)
            html_kb = (d / "report.html").stat().st_size / 1e3
            rows.append((n, size_mb, best, parts["read"], parts["plots"], html_kb))
            print(f"  {n:>9,} ops done: {best:.2f} s", file=sys.stderr)
    print(f"{'ops':>10} {'history MB':>10} {'cachecert report (s)':>21} {'read (s)':>9} {'plots (s)':>9} "
          f"{'report.html kB':>14} {'vs 10 s target':>15}")
    for n, mb, total, rd, pl, kb in rows:
        print(f"{n:>10,} {mb:>10.1f} {total:>21.2f} {rd:>9.2f} {pl:>9.2f} {kb:>14.0f} {total / TARGET_S:>14.2f}x")


if __name__ == "__main__":
    main()
