"""How many out-of-process app nodes one machine holds (issue 17, part 4), and what each costs.

    python -m benchmarks.app_node_scale [--go 10,50,100] [--python 5,20]

For each count: start that many app nodes with the harness's own AppPool (own proxies per node,
readiness on /health), then report the time until all answered /health, each node's resident
memory (VmRSS of its process group), and one round of /health through every node. Side by side:
the Go reference service (examples/go-cache) and the Python serve-node (cache-aside). The
in-process reference (1,000 in-process nodes: 11.5 s, 124 MB) is the feature-flags figure in the
run-engine benchmark; here each node is a real process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from harness.appnodes import AppPool, AppSpec
from harness.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
GO = ROOT / "examples" / "go-cache" / "bin" / "go-cache"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (one process group), in MB."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def measure(cluster: Cluster, label: str, command: str, n: int, timeout: float) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="app-scale-"))
    spec = AppSpec(command=command, start_timeout_s=timeout)
    t0 = time.monotonic()
    try:
        pool = AppPool(spec, cluster, ("redis", "postgres"), tmp, "register", {}, n, 2.0)
    except Exception as e:  # noqa: BLE001 - how far it got is the figure
        return f"{label:14} {n:5d} nodes: did not start ({type(e).__name__}: {str(e)[-300:]})"
    up = time.monotonic() - t0
    try:
        mems = [rss_mb(pid) for i in range(n) if (pid := pool.pid(i))]
        t1 = time.monotonic()
        for c in pool.instances:
            c.request("GET", "/health")
        sweep = (time.monotonic() - t1) * 1000
    finally:
        pool.close()
    return (f"{label:14} {n:5d} nodes: all ready in {up:6.1f} s, {sum(mems):7.0f} MB in all, "
            f"{sum(mems) / max(len(mems), 1):5.1f} MB per node, /health through every node {sweep:6.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--go", default="10,50,100")
    ap.add_argument("--python", default="5,20")
    args = ap.parse_args()
    cluster = Cluster(services=("redis", "postgres"), name="bench-app-scale")
    cluster.up()
    try:
        if GO.exists():
            for n in [int(x) for x in args.go.split(",") if x]:
                print(measure(cluster, "go-cache", f"env CACHE_MODE=cache-aside {GO}", n, 120), flush=True)
        for n in [int(x) for x in args.python.split(",") if x]:
            print(measure(cluster, "serve-node", f"{sys.executable} -m harness.cli serve-node cache-aside", n, 180),
                  flush=True)
    finally:
        cluster.down()
        cluster.remove()


if __name__ == "__main__":
    main()
