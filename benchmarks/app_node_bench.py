"""App nodes (issue 15): what driving a strategy over the node protocol costs, side by side.

    python -m benchmarks.app_node_bench [--seconds 5] [--concurrency 8]

The same workload (register, 90% reads, 8 keys, no faults), the same cache-aside design, on one
cluster, one after the other, with 1 and with 2 worker processes (``--procs``; 2 nodes each way):

    in-process   the Python strategy inside the harness, 2 nodes (the reference)
    serve-node   the same Python strategy as 2 app nodes (`cachecert serve-node cache-aside`)
    go-cache     the Go reference service as 2 app nodes (CACHE_MODE=cache-aside)
    go-lock/...  nothing else: one design, three ways to run it

For each: ok ops/s, read p50/p99 latency, and the ratio against in-process. The protocol's own
per-op cost is measured apart: `/health` round trips on one keep-alive connection to a serve-node
(HTTP + JSON, no Redis, no DB). Goal (issue 15): the Go app node is not slower than in-process Python.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.history import load_history
from harness.cluster import Cluster
from harness.runner import Run, RunConfig, prepare

ROOT = Path(__file__).resolve().parents[1]
GO = ROOT / "examples" / "go-cache" / "bin" / "go-cache"


def measure(cluster: Cluster, label: str, seconds: float, concurrency: int, tmp: Path, **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload="register", mix="read=0.9,write=0.1", keys=8, faults="none", time_limit=seconds,
                    concurrency=concurrency, seed=1, quiesce=0.1, reports=str(tmp), params={"ttl": 5},
                    checkers=["perf"], **kw)
    res = Run(prepare(cfg), cluster=cluster, progress=False, render=False).execute()
    h = load_history(Path(res["run_dir"]) / "history.jsonl")
    inv: dict[Any, int] = {}
    lat: list[float] = []
    ok = 0
    for o in h:
        if o.get("phase") == "final" or o["process"] == "nemesis":
            continue
        if o["type"] == "invoke":
            inv[o["process"]] = o["time_ns"]
        elif o["type"] == "ok":
            ok += 1
            if o["f"] == "read":
                lat.append((o["time_ns"] - inv[o["process"]]) / 1e6)
    lat.sort()
    return {"label": label, "ops_s": ok / seconds, "p50_ms": statistics.median(lat),
            "p99_ms": lat[int(0.99 * (len(lat) - 1))], "errors": res["counts"]["fail"] + res["counts"]["info"]}


def protocol_overhead(cluster: Cluster, n: int = 2000) -> float:
    """µs per /health round trip to a serve-node on one keep-alive connection (HTTP + JSON only)."""
    from harness.appnodes import endpoint_env
    from harness.services.base import free_port
    from strategies.remote import AppNodeClient

    port = free_port()
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for svc, ep in cluster.endpoints.items():
        env.update(endpoint_env(svc, ep))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve-node", "no-cache"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = AppNodeClient(port)
        for _ in range(100):
            try:
                c.request("GET", "/health")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        t0 = time.perf_counter()
        for _ in range(n):
            c.request("GET", "/health")
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        proc.terminate()
        proc.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--procs", default="1,2", help="worker processes to compare at (each a table)")
    args = ap.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="app-bench-"))
    cluster = Cluster(services=("redis", "postgres"), name="bench-app")
    cluster.up()
    procs_list = [int(x) for x in args.procs.split(",") if x.strip()]
    tables: list[tuple[int, list[dict[str, Any]]]] = []
    try:
        for procs in procs_list:
            nodes = max(2, procs)
            rows = [measure(cluster, f"in-process (Python, {nodes} nodes)", args.seconds, args.concurrency, tmp,
                            strategy="cache-aside", nodes=nodes, procs=procs),
                    measure(cluster, f"serve-node (Python, {nodes} nodes)", args.seconds, args.concurrency, tmp,
                            nodes=nodes, procs=procs, app=f"{sys.executable} -m harness.cli serve-node cache-aside")]
            if GO.exists():
                rows.append(measure(cluster, f"go-cache (Go, {nodes} nodes)", args.seconds, args.concurrency, tmp,
                                    nodes=nodes, procs=procs, app=f"env CACHE_MODE=cache-aside {GO}"))
            else:
                print(f"(go-cache not built: {GO}; run examples/go-cache/build.sh)")
            tables.append((procs, rows))
        overhead = protocol_overhead(cluster)
    finally:
        cluster.down()
        cluster.remove()
    print(f"register, cache-aside, 90% reads, concurrency {args.concurrency}, {args.seconds:g} s each, no faults")
    for procs, rows in tables:
        ref = rows[0]["ops_s"]
        print(f"\nworker processes: {procs}")
        print(f"{'':32} {'ok ops/s':>10} {'vs in-process':>14} {'read p50 ms':>12} {'read p99 ms':>12} "
              f"{'fail+info':>10}")
        for r in rows:
            print(f"{r['label']:32} {r['ops_s']:10.0f} {r['ops_s'] / ref:13.2f}x {r['p50_ms']:12.3f} "
                  f"{r['p99_ms']:12.3f} {r['errors']:10d}")
    print(f"protocol round trip (GET /health, keep-alive, serve-node): {overhead:.0f} us")


if __name__ == "__main__":
    main()
