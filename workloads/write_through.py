"""write-through-db-failure: seed scenario 3 — profile updates while the DB link times out
(ambiguous commits) and goes down, and while Redis dies holding a write-behind buffer.

Why this workload exists: the question "did the cache serve a value the DB never committed?" cannot
be answered from the client's view alone, because a timed-out write may or may not have committed.
So the DB keeps its own record: a trigger on ``kv`` logs every committed (key, value, version) into
``kv_log``, and the final DB read of each key carries that list (``committed``). The workload's own
checkers judge against it:

``db-truth``  aborted reads — a read returned a value the DB never committed (its write failed or
              timed out without committing; how long each such value stayed visible) — and lost
              writes — an acknowledged write the DB never committed. Also: how many ``info`` writes
              did commit (the ambiguity was real).
``replay``    the write-behind follow-up: DB readers (``read-db`` ops: a service reading the DB
              directly) that miss an acknowledged write, per phase (during the outage, during the
              replay after the DB came back, after), how long after the heal the last one was, and
              the buffer backlog timeline reported by write-behind reads. Informational unless
              ``bound_s`` is given.

Op mix: profile reads through the cache, profile updates (unique values), and DB-direct reads.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from typing import Any

from core.history import Op
from core.ops import nothing_to_judge
from workloads.base import Direct, Workload, invoke_register, setup_kv

STRATEGIES = ("cache-then-db", "rollback-on-failure", "db-first-invalidate", "versioned-cas", "write-behind")

LOG_SCHEMA = """
create table if not exists kv_log (
    seq     bigserial primary key,
    key     text not null,
    value   jsonb,
    version bigint not null,
    at      timestamptz not null default clock_timestamp()
);
create or replace function cc_kv_log() returns trigger language plpgsql as $$
begin
    insert into kv_log (key, value, version) values (new.key, new.value, new.version);
    return null;
end $$;
drop trigger if exists cc_kv_log on kv;
create trigger cc_kv_log after insert or update on kv for each row execute function cc_kv_log();
"""


def setup(d: Direct) -> None:
    setup_kv(d)
    d.pg.execute(LOG_SCHEMA)
    d.pg.execute("truncate kv_log")


def final_read(d: Direct, key: str) -> dict[str, Any]:
    rows = d.pg.execute("select value, version from kv where key = %s", (key,))
    log = d.pg.execute("select value, version from kv_log where key = %s order by seq", (key,))
    value, version = (rows[0][0], rows[0][1]) if rows else (None, 0)
    return {"value": value, "version": version, "committed": [[v, n] for v, n in log]}


def invoke(strategy: Any, op: dict[str, Any]) -> dict[str, Any]:
    if op["f"] == "read-db":
        read_db = getattr(strategy, "read_db", None)
        if read_db is None:
            raise ValueError(f"strategy {type(strategy).__name__} has no read_db(key) for the read-db op")
        return read_db(op["key"])
    return invoke_register(strategy, op)


# -- history helpers ----------------------------------------------------------------------
def _key(v: Any) -> str:
    """Values as dict keys (jsonb values come back as Python values; compare by JSON text)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _pairs(history: list[Op]) -> list[tuple[Op, Op | None]]:
    """(invoke, completion or None) for every client op, in invoke order."""
    open_: dict[Any, Op] = {}
    out: list[list[Any]] = []
    where: dict[int, int] = {}
    for o in history:
        if o.get("process") == "nemesis":
            continue
        if o["type"] == "invoke":
            open_[o["process"]] = o
            where[id(o)] = len(out)
            out.append([o, None])
        else:
            inv = open_.pop(o["process"], None)
            if inv is not None:
                out[where[id(inv)]][1] = o
    return [(a, b) for a, b in out]


def _commit_log(history: list[Op]) -> dict[str, dict[str, int]] | None:
    """key -> {value-json: first committed version}, from the final DB reads; None if absent."""
    found: dict[str, dict[str, int]] = {}
    for o in history:
        if o.get("phase") == "final" and o.get("source") == "db" and o["type"] == "ok" and "committed" in o:
            d = found.setdefault(o["key"], {})
            for value, version in o["committed"]:
                d.setdefault(_key(value), version)
    return found or None


def _fault_windows(history: list[Op], target: str | None = None) -> list[tuple[float, float, str]]:
    starts: dict[str, float] = {}
    out = []
    for o in history:
        if o.get("process") != "nemesis" or o["f"] not in ("start", "stop"):
            continue
        v = o.get("value") or {}
        if target is not None and v.get("target") != target:
            continue
        name = v.get("name") or f"{v.get('fault')}({v.get('target')})"
        if o["f"] == "start":
            starts[name] = o["time_ns"] / 1e9
        elif name in starts:
            out.append((starts.pop(name), o["time_ns"] / 1e9, name))
    end = max((o["time_ns"] for o in history), default=0) / 1e9
    out += [(t, end, n) for n, t in starts.items()]
    return sorted(out)


def check_db_truth(history: list[Op], **_: Any) -> dict[str, Any]:
    """Aborted reads and lost writes judged against the DB's own commit log."""
    log = _commit_log(history)
    if log is None:
        return nothing_to_judge("no commit log in the final DB reads (workload set-up missing?)")
    writes: dict[tuple[str, str], tuple[Op, Op | None]] = {}
    reads: list[tuple[Op, Op]] = []
    for inv, comp in _pairs(history):
        if inv["f"] == "write":
            writes[(inv["key"], _key(inv["value"]))] = (inv, comp)
        elif inv["f"] == "read" and comp is not None and comp["type"] == "ok" and comp.get("value") is not None:
            reads.append((inv, comp))
    outcome = {k: (c["type"] if c is not None else "info") for k, (_, c) in writes.items()}
    committed = {(k, v) for k, d in log.items() for v in d}
    by_outcome = defaultdict(lambda: {"total": 0, "committed": 0})
    for k, t in outcome.items():
        by_outcome[t]["total"] += 1
        by_outcome[t]["committed"] += k in committed
    anomalies: list[dict[str, Any]] = []
    exposure: dict[tuple[str, str], list[float]] = {}
    aborted_reads = garbage_reads = reads_of_lost = 0
    for inv, comp in reads:
        k = (inv["key"], _key(comp["value"]))
        if k in committed:
            continue
        t = comp["time_ns"] / 1e9
        w = writes.get(k)
        span = exposure.setdefault(k, [t, t, 0])
        span[0], span[1], span[2] = min(span[0], inv["time_ns"] / 1e9), max(span[1], t), span[2] + 1
        if w is None:
            garbage_reads += 1
            kind, how = "garbage-read", "no client ever wrote it"
        elif outcome[k] == "ok":
            reads_of_lost += 1
            continue  # reported once, as the lost write below
        else:
            aborted_reads += 1
            kind = "aborted-read"
            how = (f"its write {'failed' if outcome[k] == 'fail' else 'timed out (info)'} at "
                   f"{(w[1] or w[0])['time_ns'] / 1e9:.3f} s and the DB never committed it")
        if span[2] == 1 and len(anomalies) < 50:
            anomalies.append({"type": kind, "key": inv["key"], "ops": [comp["index"]] + ([w[0]["index"]] if w else []),
                              "explanation": f"read of {inv['key']} at {t:.3f} s returned {comp['value']!r} from "
                                             f"the {comp.get('source', '?')}, but {how}"})
    lost = [(k, w) for k, w in writes.items() if outcome[k] == "ok" and k not in committed]
    for (key, _), (inv, comp) in lost[:50]:
        assert comp is not None
        anomalies.append({"type": "lost-write", "key": key, "ops": [inv["index"], comp["index"]],
                          "explanation": f"write of {inv['value']!r} to {key} was acknowledged at "
                                         f"{comp['time_ns'] / 1e9:.3f} s, but the DB never committed it"})
    spans = {k: s for k, s in exposure.items() if outcome.get(k) in ("fail", "info")}
    judged_reads = sum(1 for _, c in reads if c.get("phase") != "final" or c.get("node") is not None)
    out = {
        "valid": not (aborted_reads or garbage_reads or lost), "reads_checked": judged_reads,
        "aborted_reads": aborted_reads, "aborted_values": len(spans), "garbage_reads": garbage_reads,
        "lost_writes": len(lost), "reads_of_lost_writes": reads_of_lost,
        "max_aborted_exposure_s": round(max((s[1] - s[0] for s in spans.values()), default=0.0), 3),
        "writes": {t: dict(v) for t, v in sorted(by_outcome.items())},
        "commits": sum(len(d) for d in log.values()),
        "anomalies": anomalies,
        "explanation": (f"{aborted_reads} reads returned one of {len(spans)} values the DB never committed; "
                        f"{len(lost)} acknowledged writes never reached the DB; "
                        f"{by_outcome['info']['committed']} of {by_outcome['info']['total']} timed-out writes "
                        "did commit"),
    }
    if out["valid"] and not judged_reads and not by_outcome["ok"]["total"]:
        return nothing_to_judge("no ok reads of a value (besides the final DB reads) and no acknowledged writes",
                                **out)
    return out


def _quantile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


def check_replay(history: list[Op], bucket_s: float = 0.5, bound_s: float | None = None,
                 target: str = "postgres", **_: Any) -> dict[str, Any]:
    """How far DB readers (``read-db``) and cache readers lag the acknowledged writes, around a DB outage.

    A read *lags* when some write acknowledged before the read began was committed (eventually) at
    a version above the one the read returned; its lag is the time since the oldest such ack.
    Writes the DB never committed are left to ``db-truth`` (lost writes), not counted as lag. The
    replay window is how long after the last DB fault ended a DB read still missed a write that was
    acknowledged *before* that moment (the backlog of the outage; the normal lag of fresh writes
    does not count).
    """
    log = _commit_log(history)
    if log is None:
        return nothing_to_judge("no commit log in the final DB reads")
    pairs = _pairs(history)
    acked: dict[str, list[tuple[int, float]]] = defaultdict(list)  # key -> [(committed version, ack time)]
    for inv, comp in pairs:
        if inv["f"] == "write" and comp is not None and comp["type"] == "ok" and comp.get("phase") != "final":
            cv = log.get(inv["key"], {}).get(_key(inv["value"]))
            if cv is not None:
                acked[inv["key"]].append((cv, comp["time_ns"] / 1e9))
    index: dict[str, tuple[list[int], list[float]]] = {}
    for key, ws in acked.items():
        ws.sort()
        suffix_min, m = [0.0] * len(ws), float("inf")
        for i in range(len(ws) - 1, -1, -1):
            m = min(m, ws[i][1])
            suffix_min[i] = m
        index[key] = ([v for v, _ in ws], suffix_min)
    windows = _fault_windows(history, target)
    heal = max((e for _, e, _ in windows), default=None)
    first = min((s for s, _, _ in windows), default=None)

    def phase_of(t: float) -> str:
        if heal is None or first is None or t < first:
            return "before"
        return "outage" if t < heal else "after-heal"

    lags: dict[str, dict[str, list[float]]] = {"read-db": defaultdict(list), "read": defaultdict(list)}
    timeline: dict[int, dict[str, Any]] = defaultdict(lambda: {"db_reads": 0, "db_lagging": 0, "db_max_lag_s": 0.0,
                                                              "cache_reads": 0, "cache_lagging": 0, "backlog": 0})
    last_bad = 0.0
    examples: list[dict[str, Any]] = []
    judged = judged_replay = 0  # reads of a written key; DB reads of one after the heal
    backlog_before, backlog_heal, backlog_back = 0, None, None
    for inv, comp in pairs:
        if inv["f"] not in ("read", "read-db") or comp is None or comp["type"] != "ok" or comp.get("phase") == "final":
            continue
        t0 = inv["time_ns"] / 1e9
        ph = phase_of(t0)
        b = timeline[int(t0 // bucket_s)]
        if "backlog" in comp:
            bl = int(comp["backlog"])
            b["backlog"] = max(b["backlog"], bl)
            if ph == "before":
                backlog_before = max(backlog_before, bl)
            elif ph == "after-heal":
                backlog_heal = bl if backlog_heal is None else backlog_heal
                if backlog_back is None and bl <= backlog_before:
                    backlog_back = t0 - heal  # type: ignore[operator]
        version = comp.get("version")
        if version is None:
            version = log.get(inv["key"], {}).get(_key(comp.get("value")))
        if version is None:
            continue  # a value the DB never committed: db-truth's business
        lag, misses_outage = 0.0, False
        if inv["key"] in index:
            judged += 1
            judged_replay += inv["f"] == "read-db" and ph == "after-heal"
            versions, suffix_min = index[inv["key"]]
            i = bisect.bisect_right(versions, version)
            if i < len(versions) and suffix_min[i] < t0:
                lag = t0 - suffix_min[i]
                misses_outage = heal is not None and suffix_min[i] < heal
        lags[inv["f"]][ph].append(lag)
        pre = "db" if inv["f"] == "read-db" else "cache"
        b[f"{pre}_reads"] += 1
        if lag > 0:
            b[f"{pre}_lagging"] += 1
        if inv["f"] == "read-db":
            b["db_max_lag_s"] = round(max(b["db_max_lag_s"], lag), 3)
            if ph == "after-heal" and misses_outage:
                last_bad = max(last_bad, t0 - heal)  # type: ignore[operator]
                if len(examples) < 10:
                    examples.append({"type": "stale-read", "key": inv["key"], "ops": [comp["index"]],
                                     "explanation": f"DB read of {inv['key']} at {t0:.3f} s ({t0 - heal:.3f} s after "
                                                    f"the DB came back) returned version {version}, missing a write "
                                                    f"acknowledged {lag:.3f} s earlier, before the heal"})

    def summary(xs: list[float]) -> dict[str, Any]:
        bad = [x for x in xs if x > 0]
        return {"reads": len(xs), "lagging": len(bad), "p50_lag_s": _quantile(bad, 0.5),
                "p99_lag_s": _quantile(bad, 0.99), "max_lag_s": round(max(bad, default=0.0), 3)}

    window = round(last_bad, 3)
    out: dict[str, Any] = {
        "valid": True if bound_s is None else window <= bound_s,
        "db_fault_windows": [[round(s, 3), round(e, 3), n] for s, e, n in windows],
        "db_reads": {ph: summary(v) for ph, v in lags["read-db"].items()},
        "cache_reads": {ph: summary(v) for ph, v in lags["read"].items()},
        "replay_window_s": window,
        "backlog_before_max": backlog_before, "backlog_at_heal": backlog_heal,
        "backlog_drained_after_s": None if backlog_back is None else round(backlog_back, 3),
        "timeline": [{"t": round(k * bucket_s, 3), **v} for k, v in sorted(timeline.items())],
        "anomalies": examples if bound_s is not None and window > bound_s else [],
        "examples": examples,
    }
    ah = out["db_reads"].get("after-heal", {"reads": 0, "lagging": 0, "max_lag_s": 0.0})
    ch = out["cache_reads"].get("after-heal", {"reads": 0, "lagging": 0})
    out["explanation"] = (
        f"after the DB came back: {ah['lagging']} of {ah['reads']} DB reads missed an acknowledged write (worst lag "
        f"{ah['max_lag_s']:.3f} s); DB reads missed writes acknowledged before the heal until {window:.3f} s after it; "
        f"{ch['lagging']} of {ch['reads']} cache reads lagged"
        + ("" if bound_s is None else f" (bound {bound_s:g} s)")
        + (f"; buffer backlog {backlog_heal} at heal, back to its pre-fault level ({backlog_before}) after "
           f"{backlog_back:.3f} s" if backlog_heal is not None and backlog_back is not None else ""))
    if not judged:
        return nothing_to_judge("no ok read of a key with an acknowledged, committed write", **out)
    if bound_s is not None and not judged_replay:
        return nothing_to_judge("no DB fault: no replay" if heal is None else
                                "no DB read (read-db) of a written key after the DB fault healed", **out)
    return out


WORKLOAD = Workload(
    name="write-through-db-failure",
    description="Profile updates through a write-through cache while the DB times out (ambiguous commits), "
                "goes down, or Redis dies holding a write-behind buffer",
    strategies=STRATEGIES,
    default_strategy="cache-then-db",
    keys=6,
    mix={"read": 0.6, "write": 0.3, "read-db": 0.1},
    time_limit=10.0,
    concurrency=8,
    quiesce=1.0,
    checkers=("db-truth", "replay", "versions", "durability", "convergence", "perf"),
    checker_opts={},
    extra_checkers={"db-truth": check_db_truth, "replay": check_replay},
    plans={
        "none": "",
        # ambiguous commits (the DB commits, the ack is lost), then writes that never reach the DB,
        # then a fast-failing outage
        "db-failures": "timeout:postgres:stream=downstream@10%+20%;timeout:postgres:stream=upstream@40%+15%;"
                       "down:postgres@65%+20%",
        "db-timeout": "timeout:postgres:stream=downstream@20%+50%",
        "db-timeout-upstream": "timeout:postgres:stream=upstream@20%+50%",
        "db-down": "down:postgres@20%+50%",
        # write-behind: Redis dies while the DB is down, so the buffer holds acknowledged writes
        "redis-kill-buffered": "down:postgres@15%+50%;kill:redis@45%+10%",
        # ... and stays dead to the end, so the lost writes are the last ones to their keys: the
        # final DB state alone (the shared durability checker) shows them too
        "redis-kill-buffered-end": "down:postgres@20%+80%;kill:redis@60%+40%",
        # write-behind follow-up: a DB outage, then the buffered writes replay
        "db-outage-replay": "down:postgres@20%+40%",
    },
    default_plan="db-failures",
    fault_menu=["timeout:postgres:stream=downstream", "timeout:postgres:stream=upstream", "down:postgres",
                "kill:redis", "latency:postgres:ms=200"],
    setup=setup,
    invoke=invoke,
    final_read=final_read,
)
