"""`make bench`: run every benchmark module in turn and print its figures.

Benchmarks print figures and ratios against a reference run side by side; none of them asserts a
timing. Each runs in its own interpreter so one's memory and threads don't skew the next.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULES = ["cluster_bench", "topology_bench", "run_engine_bench", "checkers_bench", "linearizable_bench", "porcupine_bench",
           "report_bench", "app_node_bench", "app_node_scale"]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in MODULES:
        if not (here / f"{name}.py").exists():
            continue
        print(f"\n=== benchmarks.{name} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=here.parent)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
