"""redis-failover: acknowledged writes across a Redis Sentinel failover (topology ``redis=sentinel``).

Why this workload exists: a strategy that acknowledges writes once Redis has them (write-behind,
cache-first) makes Redis the source of truth until a flusher copies them to PostgreSQL, and Redis
replication is asynchronous. When Sentinel fails the primary over, what the old primary had
acknowledged and not handed on is gone; when the old primary is only cut off from the Sentinels
(the split brain of ``failover:redis:how=partition``), clients that still reach it keep writing to
it until they hear of the new primary, and it drops all of that when it rejoins as a replica.

The truth is PostgreSQL: set-up adds the commit log of write-through-db-failure (a trigger logs
every committed (key, value, version) in ``kv_log``), and each final DB read carries it. Checkers:

``failover-loss``  acknowledged writes the DB never committed, each placed in the epoch it was
                   acknowledged in (the nemesis's ``primary`` records: which node the Sentinels named,
                   and which nodes answered as master — two is a split brain; the history does not say
                   which node acknowledged a write, the epoch says which could have; a strategy that
                   reports ``acked_by``, the server's own address, says which did) and against the
                   fault windows; invalid when any was lost.
``db-truth``       the same lost writes, plus reads of values the DB never committed.
``durability``     the final DB state alone: keys whose last acknowledged write is not there.

Strategies (strategies/redis_failover.py): cache-first (positive control: loses writes),
cache-first-wait (``WAIT 1``: how many it still loses), write-through-pg-first (holds).
"""

from __future__ import annotations

import bisect
from typing import Any

from core.clients import redis_client
from core.ops import INF, nothing_to_judge
from workloads.base import Direct, Workload, invoke_register, paired
from workloads.write_through import _commit_log, _key, check_db_truth, final_read
from workloads.write_through import setup as setup_with_log

STRATEGIES = ("cache-first", "cache-first-wait", "write-through-pg-first")


def _flush_primary(d: Direct) -> None:
    """FLUSHALL on whichever node is primary now (after an earlier run's failover, ``redis`` may be a
    replica, which refuses it), then the kv table and its commit log."""
    for name, ep in d.endpoints.items():
        if name == "redis" or name.startswith("redis-"):
            c = redis_client(ep, timeout=5)
            try:
                if str(c.execute_command("ROLE")[0]) == "master":
                    c.flushall()
            except Exception:  # noqa: BLE001 - a node that is down holds nothing to flush
                pass
            finally:
                c.close()


def setup(d: Direct) -> None:
    _flush_primary(d)
    primary_first = Direct(_NoFlush(), d.pg, d.endpoints)
    setup_with_log(primary_first)


class _NoFlush:
    """Stands in for ``Direct.redis`` in the shared set-up: the primary was flushed already."""

    def flushall(self) -> None:
        pass


# -- failover-loss --------------------------------------------------------------------------
def _epochs(nemesis: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(time ns, {primary, masters}) of every ``primary`` record, in time order."""
    out = [(int(r.get("time_ns", 0)), r["value"]) for r in nemesis
           if r.get("f") == "primary" and isinstance(r.get("value"), dict)]
    return sorted(out, key=lambda e: e[0])


def _split_brain_s(epochs: list[tuple[int, dict[str, Any]]], end_ns: int) -> float:
    total = 0
    for i, (t, v) in enumerate(epochs):
        nxt = epochs[i + 1][0] if i + 1 < len(epochs) else end_ns
        if len(v.get("masters") or []) >= 2:
            total += max(0, nxt - t)
    return round(total / 1e9, 3)


def check_failover_loss(history: list[dict[str, Any]], max_anomalies: int = 50, **_: Any) -> dict[str, Any]:
    """Acknowledged writes the DB never committed, by the primary that acknowledged them."""
    view = paired(history)
    log = _commit_log(view)
    if log is None:
        return nothing_to_judge("no commit log in the final DB reads (workload set-up missing?)")
    acked = [op for op in view.ops if op.f == "write" and op.type == "ok" and op.phase != "final"]
    if not acked:
        return nothing_to_judge("no acknowledged writes")
    epochs = _epochs(view.nemesis)
    times = [t for t, _ in epochs]
    names = {addr: n for _, v in epochs for n, addr in (v.get("nodes") or {}).items()}
    windows = [(f.start_ns, view.end_ns if f.stop_ns == INF else f.stop_ns,
                (f.value or {}).get("name") if isinstance(f.value, dict) else None) for f in view.faults]
    lost, per_epoch, in_fault, anomalies = [], [0] * (len(epochs) + 1), 0, []
    by_node: dict[str, int] = {}  # the node that acknowledged it, when the strategy reports ``acked_by``
    for w in acked:
        if _key(w.value) in log.get(w.key, {}):
            continue
        lost.append(w)
        acker = (w.comp or {}).get("acked_by")
        if acker:
            node = names.get(acker, acker)
            by_node[node] = by_node.get(node, 0) + 1
        i = bisect.bisect_right(times, w.t1) - 1
        per_epoch[i] += 1  # i = -1: before the first record (the last slot)
        epoch = epochs[i][1] if i >= 0 else {}
        primary = epoch.get("primary") or "no quorum"
        fault = next((n for s, e, n in windows if s <= w.t1 <= e), None)
        in_fault += fault is not None
        if len(anomalies) < max_anomalies:
            masters = epoch.get("masters") or []
            where = (f"while the Sentinels named {primary} and {', '.join(masters)} answered as master"
                     + (" (split brain)" if len(masters) >= 2 else "") if epoch else "(no primary records)")
            by = f" by {names.get(acker, acker)}" if acker else ""
            anomalies.append({
                "type": "lost-write", "key": w.key, "ops": [w.index, w.cindex],
                "explanation": f"write of {w.value!r} to {w.key} was acknowledged{by} at {w.t1 / 1e9:.3f} s "
                               f"{where}{f', during {fault}' if fault else ''}, but PostgreSQL never committed it"})
    changes = [{"t": round(t / 1e9, 3), "primary": v.get("primary"), "masters": v.get("masters") or []}
               for t, v in epochs]
    # which node acknowledged a write is not recorded; its epoch says who could have: the Sentinels'
    # primary and every node answering as master then (the old one too, in a split brain)
    by_epoch = [{**c, "lost": n} for c, n in zip(changes, per_epoch, strict=False) if n]
    if per_epoch[-1]:
        by_epoch.insert(0, {"t": None, "primary": None, "masters": [], "lost": per_epoch[-1]})
    out: dict[str, Any] = {
        "valid": not lost, "acknowledged": len(acked), "lost": len(lost),
        "lost_share": round(len(lost) / len(acked), 4), "lost_by_epoch": by_epoch, "lost_by_node": by_node,
        "lost_during_faults": in_fault,
        "first_lost_s": round(min(w.t1 for w in lost) / 1e9, 3) if lost else None,
        "last_lost_s": round(max(w.t1 for w in lost) / 1e9, 3) if lost else None,
        "primary_changes": changes, "failovers": sum(1 for a, b in zip(changes, changes[1:], strict=False)
                                                     if b["primary"] and a["primary"] and a["primary"] != b["primary"]),
        "split_brain_s": _split_brain_s(epochs, view.end_ns),
        "anomalies": anomalies,
    }
    out["explanation"] = (f"{len(lost)} of {len(acked)} acknowledged writes never reached PostgreSQL"
                          + (f", acknowledged by {', '.join(f'{n}: {c}' for n, c in sorted(by_node.items()))}"
                             if by_node else "")
                          + (" (" + "; ".join(f"{e['lost']} while {' + '.join(e['masters']) or 'no node'} answered "
                                              f"as master, Sentinels naming {e['primary'] or 'none'}" for e in by_epoch)
                             + f"; {in_fault} acknowledged during a fault)" if lost else "")
                          + f"; {out['failovers']} failover(s), split brain for {out['split_brain_s']:g} s")
    return out


WORKLOAD = Workload(
    name="redis-failover",
    description="Writes acknowledged by Redis across a Sentinel failover: what a cache-first strategy loses, "
                "how much WAIT 1 saves, and PostgreSQL-first holding",
    strategies=STRATEGIES,
    default_strategy="cache-first",
    topology="redis=sentinel",
    app_note="an app node is given one Redis address (REDIS_URL), not the Sentinels it would need to follow a failover",
    keys=8,
    mix={"read": 0.5, "write": 0.5},
    time_limit=10.0,  # the failover window (60%) leaves room for a 3-5 s promotion
    concurrency=8,
    quiesce=2.5,  # the flusher runs every second: what survived reaches the DB before the final reads
    checkers=("failover-loss", "db-truth", "durability", "perf"),
    checker_opts={},
    extra_checkers={"failover-loss": check_failover_loss, "db-truth": check_db_truth},
    plans={
        "none": "",
        # the primary cut off from Sentinels and replicas: clients keep writing to it until they hear of
        # the new primary (split brain), then it rejoins as a replica and drops what it took
        "failover": "failover:redis:how=partition@10%+60%",
        # the primary dies: what it acknowledged and had not replicated is gone. On loopback the stream
        # is microseconds behind (and bytes a proxy holds are still delivered): runs lose next to nothing
        "failover-kill": "failover:redis:how=kill@10%+60%",
        # the primary dies and its supervisor restarts it before the Sentinels' down-after (2 s): an
        # empty primary (no persistence), and its replicas resync from it (Redis's documented hazard)
        "restart-empty": "kill:redis-primary@20%+5%",
        # the same cut as a plain proxy fault on the alias: no wait for the promotion, no rejoin wait
        "split-brain": "partition:redis-primary@10%+60%",
    },
    default_plan="failover",
    fault_menu=["failover:redis:how=partition", "failover:redis:how=kill", "partition:redis-primary",
                "kill:redis-2", "latency:redis-primary:ms=50"],
    setup=setup,
    invoke=invoke_register,
    final_read=final_read,
)
