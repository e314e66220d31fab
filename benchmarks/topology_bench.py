"""Cold and warm start of each topology, side by side with today's one-of-each cluster, and the memory
of its servers (issue 16: sentinel + PostgreSQL replica + 3 Kafka brokers up in < 30 s on 2 cores), and
how long ``down`` takes (every server stopped at once).

    python -m benchmarks.topology_bench [--reps 2] [--only WORDS]

Every repetition starts the topologies in turn (alternated, so a change in machine load hits all of
them alike) and reports the median seconds to all-healthy, the ratio against the single cluster of
the same repetitions, the slowest server, and the resident memory (RSS, summed over each server's
process group) once everything is healthy. Templates (initdb, Kafka storage, CDS) are warm: the
first start on a fresh checkout pays for them once (see cluster_bench for the cold figures).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.app_node_scale import rss_mb
from harness.cluster import ALL_SERVICES, Cluster
from harness.topology import resolve

TOPOLOGIES = ["single", "redis=replica", "redis=sentinel", "postgres=replica", "kafka=3,min_isr=2",
              "redis=sentinel,postgres=replica,kafka=3,min_isr=2"]
GOAL_S = 30.0  # the full topology, on 2 cores


def start_once(words: str, state: Path) -> dict[str, float]:
    c = Cluster(services=ALL_SERVICES, state=state, topology=resolve(None, words, ALL_SERVICES))
    try:
        c.up()
        t = dict(c.timings)
        for name, svc in c.svc.items():
            proc = getattr(svc, "proc", None)
            if proc is not None:
                t[f"rss:{name}"] = rss_mb(proc.pid)
    finally:
        t0 = time.monotonic()
        c.down()
        t["down"] = time.monotonic() - t0
        c.remove()
    return t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", action="append", help="topology words (repeatable; default: the standard set)")
    args = ap.parse_args()
    tops = args.only or TOPOLOGIES
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in tops}
    state = Path(tempfile.mkdtemp(prefix="cachecert-topo-bench-", dir="/tmp"))
    state.chmod(0o755)
    failed: dict[str, str] = {}
    for _ in range(args.reps):
        for t in tops:
            if t in failed:
                continue
            try:
                runs[t].append(start_once(t, state))
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                failed[t] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    base = statistics.median(r["total"] for r in runs.get("single", [])) if runs.get("single") else None
    print(f"{'topology':52} {'up (s)':>7} {'x single':>8} {'slowest server':>24} {'RSS MB':>8} {'down (s)':>8}")
    for t in tops:
        if t in failed:
            print(f"{t:52} failed: {failed[t]}")
            continue
        rs = runs[t]
        total = statistics.median(r["total"] for r in rs)
        servers = {k for r in rs for k in r if k not in ("total", "down") and not k.startswith("rss:")}
        slow = max(servers, key=lambda k: statistics.median(r.get(k, 0) for r in rs))
        rss = statistics.median(sum(v for k, v in r.items() if k.startswith("rss:")) for r in rs)
        ratio = f"{total / base:.2f}x" if base else "-"
        print(f"{t:52} {total:7.2f} {ratio:>8} {slow + f' {statistics.median(r.get(slow, 0) for r in rs):.2f} s':>24}"
              f" {rss:8.0f} {statistics.median(r['down'] for r in rs):8.2f}")
        kafka = [statistics.median(r.get(k, 0) for r in rs) for k in sorted({k for r in rs for k in r})
                 if k.startswith("rss:kafka")]
        if len(kafka) > 1:
            print(f"{'':52} Kafka brokers: {len(kafka)} x ~{statistics.median(kafka):.0f} MB = {sum(kafka):.0f} MB")
    full = TOPOLOGIES[-1]
    if full in runs and runs[full]:
        print(f"goal: {full} up in < {GOAL_S:g} s: {statistics.median(r['total'] for r in runs[full]):.2f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
