"""Cluster start-up: cold and warm start to all-healthy, per service and in total, against the
issue-2 targets (all four healthy < 15 s; Redis, PostgreSQL, Toxiproxy each < 2 s), plus the
effect of the cached Kafka storage template (before/after, alternated so machine load hits both).

    python -m benchmarks.cluster_bench [--reps 3] [--ab-reps 3]

"Cold" = an empty cache for the one-time steps (PostgreSQL initdb template, Kafka KRaft storage
template, Kafka CDS archive: written when the first broker stops, hence the cold teardown): a private CACHECERT cache whose binaries and jars are symlinks to the real ones, so the
real templates other clusters use are never touched. "Warm" = later starts with those templates in
place. The OS page cache is not dropped (that needs root-wide side effects), so "cold" here is the
first start on a fresh checkout, not after a reboot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from harness import paths
from harness.cluster import Cluster
from harness.services.local import KafkaService, PostgresService

SERVICES = ("toxiproxy", "redis", "postgres", "kafka")
TARGETS = {"toxiproxy": 2.0, "redis": 2.0, "postgres": 2.0, "kafka": None, "total": 15.0}


def private_cache() -> Path:
    """An empty template cache that reuses the real binaries and jars (symlinks)."""
    real = paths.CACHE
    d = Path(tempfile.mkdtemp(prefix="cachecert-bench-cache-", dir="/tmp"))
    d.chmod(0o755)  # the postgres user must traverse to the initdb template
    for sub in ("bin", "kafka"):
        (d / sub).symlink_to(real / sub)
    return d


def start_once(state: Path) -> dict[str, float]:
    c = Cluster(state=state)
    try:
        c.up()
        t = dict(c.timings)
        t0 = time.monotonic()
    finally:
        c.down()
    t["teardown"] = time.monotonic() - t0
    c.remove()
    return t


def pg_copy_time(state: Path) -> float:
    """PostgreSQL's per-cluster set-up alone: copy + chown of the initdb template."""
    d = state / "pgcopy"
    d.mkdir()
    t = time.monotonic()
    PostgresService(d, 1).prepare()
    took = time.monotonic() - t
    shutil.rmtree(d)
    return took


def pg_copy_time_old(state: Path) -> float:
    """The previous way, for comparison: shutil.copytree + a Python chown walk of the template."""
    svc = PostgresService(state / "pgold", 1)
    tpl, d = svc._template(), state / "pgold" / "data-old"
    t = time.monotonic()
    shutil.copytree(tpl, d, symlinks=True)
    if svc.run_as:
        for p in [d, *d.rglob("*")]:
            shutil.chown(p, svc.run_as, svc.run_as)
    took = time.monotonic() - t
    shutil.rmtree(state / "pgold")
    return took


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:6.2f}"


def table(rows: list[tuple[str, dict[str, float]]]) -> None:
    cols = [*SERVICES, "total", "teardown"]
    print(f"  {'':<28}" + "".join(f"{c:>10}" for c in cols))
    for label, t in rows:
        print(f"  {label:<28}" + "".join(f"{fmt(t.get(c)):>10}" for c in cols))


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="warm starts (default 3)")
    ap.add_argument("--ab-reps", type=int, default=3, help="Kafka template off/on pairs (default 3)")
    args = ap.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="cachecert-bench-", dir="/tmp"))
    state.chmod(0o755)
    cache = private_cache()
    real_cache = paths.CACHE
    print(f"cluster start-up, all four services (Toxiproxy, Redis, PostgreSQL, Kafka {_kafka_version()}); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    try:
        paths.CACHE = cache  # the local backend reads paths.CACHE at call time
        cold = start_once(state)
        warm = [start_once(state) for _ in range(args.reps)]
        pg_pairs = [(pg_copy_time_old(state), pg_copy_time(state)) for _ in range(3)]
        paths.CACHE = real_cache

        # Kafka: StorageTool format per cluster (before) vs the cached formatted template, then
        # + the class-data-sharing archive (after); alternated so load drifts hit all three
        variants = {"before: format, no CDS": (False, False), "template, no CDS": (True, False),
                    "after: template + CDS": (True, True)}
        ab: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        for _ in range(args.ab_reps):
            for label, (tpl, cds) in variants.items():
                KafkaService.storage_template, KafkaService.cds = tpl, cds
                ab[label].append(start_once(state))
    finally:
        paths.CACHE = real_cache
        KafkaService.storage_template = KafkaService.cds = True
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)

    wm = median_of(warm)
    print("\nseconds to healthy (services start in parallel; total = up() call, proxies included)")
    table([("cold (empty template cache)", cold), *[(f"warm #{i + 1}", w) for i, w in enumerate(warm)],
           (f"warm median of {len(warm)}", wm)])
    pg_old, pg_new = (statistics.median(p[i] for p in pg_pairs) for i in (0, 1))
    print(f"  PostgreSQL per-cluster template copy + chown alone, median of 3 alternated: "
          f"copytree + Python chown {pg_old:.2f} s -> cp -a + chown -R {pg_new:.2f} s (x{pg_old / pg_new:.2f})")

    print("\nKafka: StorageTool format per cluster vs cached storage template vs template + CDS archive, "
          f"alternated, median of {args.ab_reps}")
    meds = {k: median_of(v) for k, v in ab.items()}
    table(list(meds.items()))
    before, after = meds["before: format, no CDS"], meds["after: template + CDS"]
    gain = before["kafka"] - after["kafka"]
    print(f"  kafka start {before['kafka']:.2f} s -> {after['kafka']:.2f} s "
          f"({gain:+.2f} s, x{before['kafka'] / after['kafka']:.2f}); "
          f"total {before['total']:.2f} s -> {after['total']:.2f} s")

    print("\ntargets (warm median; cold in brackets)")
    ok = True
    for k, limit in TARGETS.items():
        if limit is None:
            continue
        hit = wm[k] < limit
        ok &= hit
        print(f"  {k:<10} < {limit:4.1f} s   {wm[k]:6.2f} s  [{cold[k]:6.2f} s]   {'ok' if hit else 'MISSED'}"
              + ("" if cold[k] < limit else "  (cold missed)"))
    print(f"\nload average {os.getloadavg()[0]:.1f} at end (other work on this machine inflates every figure)")
    return 0 if ok else 1


def _kafka_version() -> str:
    jar = next(paths.kafka_libs().glob("kafka_2.13-*.jar"))
    return jar.stem.removeprefix("kafka_2.13-")


if __name__ == "__main__":
    raise SystemExit(main())
