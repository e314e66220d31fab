"""schema-migration (seed scenario 1): a warm cache, then ALTER TABLE and a code switch mid-run.

Users {id, name, email} (300 keys read, uniform) are read through the cache by 8 workers (5% writes). Two
scheduled steps, played by the nemesis as ``step`` faults so they sit on the run's timeline:

* ``ttl-cut`` (default 20% -> 70%): the operator cuts cache TTLs ahead of the migration (only
  ``schema-ttl-cut`` honours it), and restores them at the step's end.
* ``migrate`` (default at 50%): ``ALTER TABLE users ADD phone, address, updated_at`` with a
  backfill (phone is set for every user), then the ``schema_version_change`` event on Redis
  pub/sub (and ``schema:version`` = 2 for nodes that boot later), then — ``deploy_delay`` (0.2 s)
  later, as a deploy follows a migration — the application code switches to schema 2
  (strategies.schema.APP), which needs the new fields.

Checker ``schema``: an old-schema read is a read whose object lacks a field the code that served
it requires (``schema`` on the completion), or has a null critical field (phone); it is returned
as valid, so it is an anomaly (``old-schema-read``). The figures: old-schema reads (and those
missing the critical phone), first/last of them relative to the deploy, and the hit-rate timeline
(``bucket_ms`` buckets) with the baseline before the first step, the rate just before the
migration, the dip (minimum after the deploy), its depth, and the recovery time (from the deploy
to the first of two buckets in a row back within ``tolerance`` of the baseline; buckets with fewer
than ``min_bucket_reads`` reads are ignored). ``python -m
workloads.schema_migration OUT.png RUN_DIR...`` draws the timelines of several runs in one figure.

Plan ``event-lost`` also takes node 0's subscriber link down across the migration
(``schema-event-bump`` only: the naive subscriber misses the event).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from core.clients import Pg, redis_client
from core.ops import nothing_to_judge
from strategies import schema as S
from workloads.base import Direct, Workload, invoke_register, requires

N_USERS = 1000
DEPLOY_DELAY = 0.2
MIGRATE = "step:ttl-cut@20%+50%;step:migrate@50%+5%"


def setup_schema(d: Direct) -> None:
    S.APP.reset()
    d.redis.flushall()
    d.pg.execute("drop table if exists users")
    d.pg.execute("create table users (id text primary key, name text not null, email text not null, "
                 "version bigint not null default 1)")
    d.pg.execute("insert into users (id, name, email) select 'k' || i, 'user-k' || i, 'k' || i || '@example.com' "
                 f"from generate_series(0, {N_USERS - 1}) i")


def final_user(d: Direct, key: str) -> dict[str, Any]:
    cols = [r[0] for r in d.pg.execute("select column_name from information_schema.columns "
                                       "where table_name = 'users' order by ordinal_position")]
    rows = d.pg.execute(f"select {', '.join(cols)} from users where id = %s", (key,))
    if not rows:
        return {"value": None, "version": 0}
    obj = {c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in zip(cols, rows[0], strict=True)}
    version = obj.pop("version")
    return {"value": obj, "version": version}


# -- steps ------------------------------------------------------------------------------------
TTL_CUT_KEY = "schema:ttl-cut"  # the operator's switch as app nodes see it (1 while the cut is on)


def step_ttl_cut(ctx: Any, phase: str) -> str | None:
    """The operator's switch; whether the running strategy reads it is the strategy's business. App
    nodes (other processes) see it as the Redis key ``schema:ttl-cut``."""
    S.APP.ttl_cut = phase == "start"
    r = redis_client(ctx.cluster.direct["redis"], timeout=5)
    try:
        r.set(TTL_CUT_KEY, 1) if phase == "start" else r.delete(TTL_CUT_KEY)
    finally:
        r.close()
    if phase != "start":
        return None
    if getattr(ctx.nodes, "spec", None) is not None:
        return f"the operator's TTL cut is on: {TTL_CUT_KEY} = 1 in Redis (app nodes that honour it read it there)"
    honoured = any(hasattr(i, "cut_ttl_ms") for i in getattr(ctx.nodes, "instances", None) or [])
    return "the application's TTL cut is on" + (": the nodes shorten fills and live entries" if honoured else
                                                 " (only schema-ttl-cut reads it; this strategy ignores it)")


def _app_has_next(cfg: Any, _cls: type) -> str | None:
    """An app-node run's code switch is a rolling deploy: its app file must name the v2 build."""
    if not (getattr(cfg, "app", None) or getattr(cfg, "app_file", None)):
        return None
    import tomllib

    nxt = None
    if cfg.app_file:
        try:
            nxt = tomllib.loads(Path(cfg.app_file).read_text()).get("next")
        except (OSError, tomllib.TOMLDecodeError):
            return None  # the app file's own check says what is wrong with it
    return None if nxt else ("an app file (--app-file) whose 'next' command is the schema-2 build: the migration's "
                             "code switch is a rolling deploy to it")


@requires(_app_has_next)
def step_migrate(ctx: Any, phase: str) -> str | None:
    if phase != "start":
        return None
    t0 = time.monotonic()
    pg = Pg(ctx.cluster.direct["postgres"], timeout=30)
    try:
        pg.execute("alter table users add column if not exists phone text, add column if not exists address text, "
                   "add column if not exists updated_at timestamptz")
        pg.execute("update users set phone = '+1-555-' || lpad(substr(id, 2), 4, '0'), "
                   "address = id || ' Main St', updated_at = now()")
    finally:
        pg.close()
    t_alter = time.monotonic() - t0
    r = redis_client(ctx.cluster.direct["redis"], timeout=5)
    try:
        r.set(S.VERSION_KEY, 2)
        receivers = r.publish(S.CHANNEL, "2")
    finally:
        r.close()
    time.sleep(DEPLOY_DELAY)
    spec = getattr(ctx.nodes, "spec", None)
    if spec is not None and spec.next:  # app nodes: the v2 build replaces v1, node by node
        t0 = time.monotonic()
        for i in range(len(ctx.nodes)):
            ctx.nodes.deploy(i, spec.next)
        switch = (f"{DEPLOY_DELAY:g} s later a rolling deploy of {len(ctx.nodes)} node(s) to the next build "
                  f"({time.monotonic() - t0:.1f} s)")
    else:
        S.APP.schema = 2
        switch = f"code switched to schema 2 {DEPLOY_DELAY:g} s later"
    return (f"ALTER TABLE + backfill in {t_alter * 1000:.0f} ms; schema_version_change published to {receivers} "
            f"subscriber(s); {switch}")


# -- checker ----------------------------------------------------------------------------------
def _step_time(history: list[dict[str, Any]], name: str) -> int | None:
    for o in history:
        v = o.get("value")
        if o["process"] == "nemesis" and o["f"] == "start" and isinstance(v, dict) and v.get("target") == name \
                and v.get("fault") == "step":
            return int(o["time_ns"])
    return None


def hit_timeline(reads: list[dict[str, Any]], t0: int, t1: int, bucket_ns: int) -> list[tuple[float, float, int]]:
    n = max(1, math.ceil((t1 - t0) / bucket_ns))
    hits, tot = [0] * n, [0] * n
    for o in reads:
        b = (o["time_ns"] - t0) // bucket_ns
        if 0 <= b < n:
            tot[b] += 1
            hits[b] += bool(o.get("hit"))
    return [(round((t0 + i * bucket_ns) / 1e9, 3), round(hits[i] / tot[i], 4) if tot[i] else math.nan, tot[i])
            for i in range(n)]


def check_schema(history: list[dict[str, Any]], bucket_ms: float = 250, tolerance: float = 0.05,
                 warmup_s: float = 1.0, min_bucket_reads: int = 20, **_: Any) -> dict[str, Any]:
    reads = [o for o in history if o["process"] != "nemesis" and o["type"] == "ok" and o["f"] == "read"
             and o.get("node") is not None]
    load = [o for o in reads if o.get("phase") != "final"]
    if not load:
        return nothing_to_judge("no ok reads through a node", reads=0)
    old = []
    judged = 0
    for o in reads:
        schema = o.get("schema")
        if schema not in S.FIELDS:
            continue
        if o.get("value") is None:
            continue  # no such user: nothing was served as valid
        judged += 1
        missing = S.missing_fields(o.get("value"), schema)
        if missing:
            old.append((o, missing))
    t_migrate = _step_time(history, "migrate")
    deploy = next((o["time_ns"] for o in load if (o.get("schema") or 1) >= 2), None)
    anomalies = [{"type": "old-schema-read", "key": o["key"], "ops": [o["index"]],
                  "explanation": f"a read served by schema-{o['schema']} code returned {o['key']} "
                  f"{'from the cache' if o.get('hit') else 'from ' + str(o.get('source'))} without "
                  f"{', '.join(m)} (an object cached in the old format), as a valid object"
                  + (f", {(o['time_ns'] - deploy) / 1e6:.0f} ms after the code switch" if deploy else "")}
                 for o, m in old[:10]]
    critical = [o for o, m in old if set(m) & set(S.CRITICAL)]
    bucket_ns = int(bucket_ms * 1e6)
    t_start = min(o["time_ns"] for o in load)
    t_end = max(o["time_ns"] for o in load)
    timeline = hit_timeline(load, t_start, t_end + 1, bucket_ns)
    first_step = min([t for t in (_step_time(history, "ttl-cut"), t_migrate) if t is not None], default=None)

    def rate(a: int, b: int) -> float | None:
        sel = [o for o in load if a <= o["time_ns"] < b]
        return round(sum(bool(o.get("hit")) for o in sel) / len(sel), 4) if sel else None

    # baseline: the warm steady state before the first step (or, in short runs where the first step
    # comes less than a second after the warm-up, the one before the migration)
    warm = t_start + int(warmup_s * 1e9)
    base_end = first_step if first_step is not None else t_end
    if base_end - warm < 1e9 and t_migrate is not None:
        base_end = t_migrate
    baseline = rate(warm, base_end) or rate(t_start, base_end)
    out: dict[str, Any] = {
        "valid": not old, "old_schema_reads": len(old), "critical_missing": len(critical),
        "reads": len(load), "hit_rate_overall": rate(t_start, t_end + 1), "hit_rate_baseline": baseline,
        "migration_s": round(t_migrate / 1e9, 3) if t_migrate else None,
        "deploy_s": round(deploy / 1e9, 3) if deploy else None,
        "bucket_ms": bucket_ms, "timeline": timeline, "anomalies": anomalies,
    }
    if old and deploy:
        out["old_schema_window_ms"] = [round((min(o["time_ns"] for o, _ in old) - deploy) / 1e6, 1),
                                       round((max(o["time_ns"] for o, _ in old) - deploy) / 1e6, 1)]
    if t_migrate is not None:
        out["hit_rate_pre_migration"] = rate(t_migrate - int(1e9), t_migrate)
    if deploy is not None and baseline is not None:
        # buckets with too few reads (a stalled machine, the run's last partial bucket) say nothing
        after = [(t, r, n) for t, r, n in timeline[:-1]
                 if t * 1e9 >= deploy - bucket_ns and not math.isnan(r) and n >= min_bucket_reads]
        if after:
            i_min = min(range(len(after)), key=lambda i: after[i][1])
            out["hit_rate_dip_min"] = after[i_min][1]
            out["dip_depth"] = round(baseline - after[i_min][1], 4)
            rec = None
            for i in range(i_min, len(after) - 1):
                if after[i][1] >= baseline - tolerance and after[i + 1][1] >= baseline - tolerance:
                    rec = after[i][0]
                    break
            out["recovery_ms"] = round(max(0.0, rec * 1e9 - deploy) / 1e6, 0) if rec is not None else "not recovered"
            out["hit_rate_after_recovery"] = rate(int(rec * 1e9), t_end + 1) if rec is not None else None
    if not judged:
        return nothing_to_judge("no ok read of a user by code that says its schema", **out)
    return out


WORKLOAD = Workload(
    name="schema-migration",
    description="ALTER TABLE + code switch under a warm cache: old-schema reads and the hit-rate dip",
    strategies=("schema-plain", "schema-versioned", "schema-ttl-cut", "schema-event-bump", "schema-dual-read"),
    default_strategy="schema-versioned",
    keys=300,
    mix={"read": 0.95, "write": 0.05},
    time_limit=10.0,
    concurrency=8,
    quiesce=0.5,
    checkers=("schema", "perf"),
    extra_checkers={"schema": check_schema},
    plans={"migrate": MIGRATE, "event-lost": f"{MIGRATE};down:redis.sub0@45%+20%", "none": ""},
    plan_strategies={"event-lost": ("schema-event-bump",)},  # the only one subscribed over redis.sub0
    default_plan="migrate",
    # as a black box: v1 and v2 are two builds (the app file's command and next); the migrate step's code
    # switch is a rolling deploy; reads report which schema the serving code reads (``schema``)
    app_ops=("read", "write"),
    fault_menu=["latency:postgres:ms=50", "latency:redis:ms=20"],
    steps={"ttl-cut": step_ttl_cut, "migrate": step_migrate},
    setup=setup_schema,
    invoke=invoke_register,
    final_read=final_user,
)


def plot_timelines(out: str, run_dirs: list[str]) -> None:
    """One figure: the hit-rate timeline of each run (label = strategy), migration marked."""
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    mig = None
    for d in run_dirs:
        res = json.loads((Path(d) / "results.json").read_text())
        r = res["checkers"]["schema"]
        ts = [t for t, _, _ in r["timeline"]]
        hs = [h * 100 if h == h else math.nan for _, h, _ in r["timeline"]]
        ax.plot(ts, hs, lw=1.4, label=f"{res['strategy']} (old-schema reads: {r['old_schema_reads']})")
        mig = mig or r.get("migration_s")
    if mig:
        ax.axvline(mig, color="#2980b9", ls="--", lw=1)
        ax.text(mig, 2, " ALTER TABLE + code switch", color="#2980b9", fontsize=8)
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("cache hit rate (%)")
    ax.set_ylim(0, 102)
    ax.set_title("schema-migration: hit rate around the migration (TTL cut from 20% to 70% of the run)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    import sys

    plot_timelines(sys.argv[1], sys.argv[2:])
