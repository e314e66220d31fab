"""offline-sync (seed scenario 8): client replicas with a local SQLite cache go offline, edit, come back.

Why this workload exists: a mobile app's local cache must end up equal to the server's table after
its flaky link heals, and an edit made offline must not silently vanish when the server changed the
same row meanwhile. Each application node is one client replica (strategies/offline.py): a local
SQLite copy of the server table ``items`` (PostgreSQL), pushes over Redis pub/sub, and its own link
proxies ``postgres.syncN`` + ``redis.syncN``; the default plan takes replica 0 offline (both links
``down``) from 20% to 80% of the run, then the run heals and quiesces and every replica is read.

Ops: ``read`` (the replica's local row), ``write`` (a local edit: acknowledged once in SQLite and the
outbox, online or not) and ``server-write`` (an edit on the server: another device or the web app;
committed on the server side, then pushed). Values are unique per run, so an edit is its value.

Checkers:

* ``convergence`` (shared): after heal + quiesce, each replica's final local row equals the server's.
* ``lost-edits``: the server's commit log (``item_log``: every version with the version its editor
  had seen, ``base``) and the conflicts strategies recorded (``sync_conflicts``) are read at the end
  with the final DB reads, into the history. An acknowledged edit is *lost* when it vanished without
  a recorded conflict: (a) it committed as version ``u`` and version ``u+1`` was made by an editor
  that had not seen ``u`` (``base < u``: an upload based on an older row overwrote it), or (b) it is
  a local edit that never reached the server, was not overwritten by a later local edit on the same
  replica that saw it, and no conflict names it. An edit named as the loser of a recorded conflict
  is *resolved* (detected, and resolved by the strategy's stated rule). Reports lost and resolved
  edits, with one plain-words explanation per lost edit, and the sync figures the replicas report.

Follow-up (a concurrent offline edit and server edit): plan ``conflict`` keeps replica 0 offline for
most of the run on a few keys, so most of its edits collide with server edits; the ``lost-edits``
result says, per strategy, which side won and whether anything recorded it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from core.ops import nothing_to_judge
from workloads.base import Direct, Workload

OFFLINE_STRATEGIES = ("offline-push-only", "offline-delta-sync", "offline-periodic", "offline-vv")
KEYS = 100

SCHEMA = """
drop table if exists items, item_log, sync_conflicts;
create table items (key text primary key, value jsonb, version bigint not null, vv jsonb not null default '{}',
                    updated_at timestamptz not null default clock_timestamp());
create index on items (updated_at);
create table item_log (key text not null, version bigint not null, value jsonb, base bigint not null,
                       origin text not null, at timestamptz not null default clock_timestamp(),
                       primary key (key, version));
create table sync_conflicts (id bigserial primary key, key text not null, winner jsonb, loser jsonb,
                             loser_origin text, rule text, node int, server_version bigint,
                             at timestamptz not null default clock_timestamp());
"""


def setup(d: Direct) -> None:
    d.redis.flushall()
    d.pg.execute(SCHEMA)
    d.pg.execute("insert into items (key, value, version, vv) select 'k' || i, '0'::jsonb, 1, '{\"server\": 1}' "
                 "from generate_series(0, %s) i", (KEYS - 1,))
    d.pg.execute("insert into item_log (key, version, value, base, origin) select key, 1, value, 0, 'seed' from items")


def invoke(strategy: Any, op: dict[str, Any]) -> dict[str, Any]:
    f = op["f"]
    if f == "read":
        return strategy.read(op["key"])
    if f == "write":
        return strategy.write(op["key"], op["value"])
    if f == "server-write":
        return strategy.server_write(op["key"], op["value"])
    raise ValueError(f"offline-sync has no op {f!r} (valid: read, write, server-write)")


def final_read(d: Direct, key: str) -> dict[str, Any]:
    """The server's row, plus its whole commit log and recorded conflicts (evidence for lost-edits)."""
    rows = d.pg.execute("select value, version from items where key = %s", (key,))
    log = d.pg.execute("select version, value, base, origin from item_log where key = %s order by version", (key,))
    conflicts = d.pg.execute("select winner, loser, loser_origin, rule, node, server_version from sync_conflicts "
                             "where key = %s order by id", (key,))
    out: dict[str, Any] = {"value": rows[0][0], "version": rows[0][1]} if rows else {"value": None, "version": 0}
    out["log"] = [list(r) for r in log]
    out["conflicts"] = [{"winner": r[0], "loser": r[1], "loser_origin": r[2], "rule": r[3], "node": r[4],
                         "server_version": r[5]} for r in conflicts]
    return out


def check_lost_edits(history: list[dict[str, Any]], max_anomalies: int = 20, **_: Any) -> dict[str, Any]:
    pending: dict[Any, dict[str, Any]] = {}
    local: dict[Any, dict[str, Any]] = {}  # value -> local edit {key, node, prev, t, index}
    server: dict[Any, dict[str, Any]] = {}  # value -> server edit
    finals: dict[str, dict[str, Any]] = {}
    sync: dict[Any, dict[str, Any]] = {}
    unknown = 0
    for op in history:
        p = op["process"]
        if p == "nemesis":
            continue
        if op["type"] == "invoke":
            pending[p] = op
            continue
        inv = pending.pop(p, None)
        if op["f"] == "read" and op["type"] == "ok":
            if op.get("phase") == "final" and op.get("node") is None and "log" in op:
                finals[op["key"]] = op
            elif isinstance(op.get("sync"), dict):
                sync[op.get("node")] = op["sync"]
            continue
        if op["f"] in ("write", "server-write"):
            if op["type"] == "info":
                unknown += 1
            if op["type"] != "ok":
                continue
            e = {"key": op["key"], "value": op["value"], "node": op.get("node"), "index": op["index"],
                 "t": (inv or op)["time_ns"], "prev": op.get("prev"), "f": op["f"]}
            (local if op["f"] == "write" else server)[op["value"]] = e
    if not finals:
        return nothing_to_judge("no final server read with a commit log (is this the offline-sync workload?)",
                                local_edits=len(local), server_edits=len(server))
    lost: list[dict[str, Any]] = []
    resolved = conflicts = 0
    winners: dict[str, int] = defaultdict(int)
    in_log: set[Any] = set()
    losers: dict[str, set[Any]] = defaultdict(set)
    for key, fin in finals.items():
        for c in fin.get("conflicts", []):
            conflicts += 1
            losers[key].add(c["loser"])
            winners[f"{c['rule']}: {'server' if c['loser_origin'] != 'server' else 'client'} value kept"] += 1
        log = sorted(fin["log"], key=lambda r: r[0])
        for _version, value, _base, _origin in log:
            in_log.add((key, value))
        # consecutive versions with the same value are one edit applied twice (a retried upload):
        # the edit first appeared at the run's first version, and the next *different* value decides
        runs: list[tuple[int, Any, str, tuple[int, Any, int, str] | None]] = []
        for i, (u, value, _b, origin) in enumerate(log):
            if runs and runs[-1][1] == value:
                continue
            nxt = next((r for r in log[i + 1:] if r[1] != value), None)
            runs.append((u, value, origin, nxt))
        for u, value, origin, nxt in runs:
            e = local.get(value) or server.get(value)
            if e is None or e["key"] != key or nxt is None:
                continue
            nversion, nvalue, nbase, norigin = nxt
            if nbase >= u:
                continue  # the next version's editor had seen this one: a deliberate overwrite
            if value in losers[key]:
                resolved += 1
                continue
            lost.append({"edit": e, "kind": "overwritten", "explanation":
                         f"{key}: the {'server' if origin == 'server' else 'replica ' + origin[1:]} edit {value} "
                         f"(acknowledged at {e['t'] / 1e9:.3f} s) committed as version {u}, then version {nversion} = "
                         f"{nvalue} from {'the server' if norigin == 'server' else 'replica ' + str(norigin)[1:]} "
                         f"overwrote it based on version {nbase}: that editor never saw {value}, and no conflict was "
                         f"recorded — the edit vanished silently"})
    seen_by_local: set[tuple[str, Any, Any]] = {(e["key"], e["node"], e["prev"]) for e in local.values()}
    for value, e in local.items():
        if (e["key"], value) in in_log or e["key"] not in finals:
            continue
        if (e["key"], e["node"], value) in seen_by_local:
            continue  # a later local edit on the same replica was made on top of it
        if value in losers[e["key"]]:
            resolved += 1
            continue
        lost.append({"edit": e, "kind": "never-uploaded", "explanation":
                     f"{e['key']}: replica {e['node']}'s local edit {value} (acknowledged at {e['t'] / 1e9:.3f} s) never "
                     f"reached the server, no later edit on that replica built on it, and no conflict names it"})
    lost.sort(key=lambda x: x["edit"]["t"])
    anomalies = [{"type": "lost-edit", "key": x["edit"]["key"], "ops": [x["edit"]["index"]],
                  "explanation": x["explanation"]} for x in lost[:max_anomalies]]
    kinds: dict[str, int] = defaultdict(int)
    for x in lost:
        kinds[f"{x['kind']}:{x['edit']['f']}"] += 1
    out = {"valid": not lost, "lost_edits": len(lost), "lost_by_kind": dict(kinds), "resolved_edits": resolved,
           "conflicts_recorded": conflicts, "conflict_resolutions": dict(winners),
           "local_edits": len(local), "server_edits": len(server), "indeterminate_edits": unknown,
           "replicas": {str(k): v for k, v in sorted(sync.items(), key=lambda kv: str(kv[0]))},
           "anomalies": anomalies}
    if not lost and not any(e["key"] in finals for e in (*local.values(), *server.values())):
        return nothing_to_judge("no acknowledged edit of a key with a final server read", **out)
    return out


OFFLINE = "down:redis.sync0@20%+60%;down:postgres.sync0@20%+60%"
WORKLOAD = Workload(
    name="offline-sync",
    description="Client replicas with a local SQLite cache go offline, edit, and come back",
    strategies=OFFLINE_STRATEGIES,
    default_strategy="offline-vv",
    services=("redis", "postgres"),
    keys=KEYS,
    mix={"read": 0.7, "write": 0.1, "server-write": 0.2},
    time_limit=6.0,
    concurrency=4,
    rate=100.0,
    quiesce=1.5,
    checkers=("convergence", "lost-edits"),
    extra_checkers={"lost-edits": check_lost_edits},
    plans={
        "none": "",
        "offline": OFFLINE,
        "flaky": "reset_peer:redis.sync0:ms=200@20%+30%;reset_peer:postgres.sync0:ms=200@20%+30%;"
                 "down:redis.sync0@60%+20%;down:postgres.sync0@60%+20%",
        "push-lost": "down:redis.sync0@20%+60%",
        "conflict": "down:redis.sync0@10%+75%;down:postgres.sync0@10%+75%",
    },
    default_plan="offline",
    fault_menu=["down:redis.sync0", "down:postgres.sync0", "reset_peer:redis.sync0:ms=200",
                "reset_peer:postgres.sync0:ms=200", "partition:redis.sync0", "latency:redis.sync0:ms=200"],
    setup=setup,
    invoke=invoke,
    final_read=final_read,
)
