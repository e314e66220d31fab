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
from dataclasses import dataclass, field
from typing import Any

from core.ops import INF, Op, Paired, nothing_to_judge
from core.stats import percentile
from workloads.base import Direct, Workload, invoke_register, paired, setup_kv

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


def _commit_log(view: Paired) -> dict[str, dict[str, int]] | None:
    """key -> {value-json: first committed version}, from the final DB reads; None if absent."""
    found: dict[str, dict[str, int]] = {}
    for op in view.ops:
        if op.is_final and op.source == "db" and op.type == "ok" and "committed" in op.comp:
            d = found.setdefault(op.key, {})
            for value, version in op.comp["committed"]:
                d.setdefault(_key(value), version)
    return found or None


def _fault_windows(view: Paired, target: str | None = None) -> list[tuple[float, float, str]]:
    """(start s, stop s, name) of the faults on ``target``; one never stopped lasts to the history's end."""
    out = []
    for flt in view.faults:
        v = flt.value if isinstance(flt.value, dict) else {}
        if target is not None and v.get("target") != target:
            continue
        stop = view.end_ns if flt.stop_ns == INF else flt.stop_ns
        out.append((flt.start_ns / 1e9, stop / 1e9, v.get("name") or f"{v.get('fault')}({v.get('target')})"))
    return sorted(out)


def _s(ns: float) -> float:
    return ns / 1e9


# -- db-truth -----------------------------------------------------------------------------
def check_db_truth(history: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
    """Aborted reads and lost writes judged against the DB's own commit log."""
    view = paired(history)
    log = _commit_log(view)
    if log is None:
        return nothing_to_judge("no commit log in the final DB reads (workload set-up missing?)")
    writes: dict[tuple[str, str], Op] = {}
    reads: list[Op] = []
    for op in view.ops:
        if op.f == "write":
            writes[(op.key, _key(op.value))] = op
        elif op.f == "read" and op.type == "ok" and op.value is not None:
            reads.append(op)
    outcome = {k: w.type for k, w in writes.items()}  # a write never completed is "info"
    committed = {(k, v) for k, d in log.items() for v in d}
    by_outcome = defaultdict(lambda: {"total": 0, "committed": 0})
    for k, t in outcome.items():
        by_outcome[t]["total"] += 1
        by_outcome[t]["committed"] += k in committed
    anomalies: list[dict[str, Any]] = []
    exposure: dict[tuple[str, str], list[float]] = {}
    aborted_reads = garbage_reads = reads_of_lost = 0
    for r in reads:
        k = (r.key, _key(r.value))
        if k in committed:
            continue
        t = _s(r.t1)
        w = writes.get(k)
        span = exposure.setdefault(k, [t, t, 0])
        span[0], span[1], span[2] = min(span[0], _s(r.t0)), max(span[1], t), span[2] + 1
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
                   f"{_s((w.comp or w.inv)['time_ns']):.3f} s and the DB never committed it")
        if span[2] == 1 and len(anomalies) < 50:
            anomalies.append({"type": kind, "key": r.key, "ops": [r.cindex] + ([w.index] if w else []),
                              "explanation": f"read of {r.key} at {t:.3f} s returned {r.value!r} from "
                                             f"the {r.comp.get('source', '?')}, but {how}"})
    lost = [(k, w) for k, w in writes.items() if outcome[k] == "ok" and k not in committed]
    for (key, _), w in lost[:50]:
        anomalies.append({"type": "lost-write", "key": key, "ops": [w.index, w.cindex],
                          "explanation": f"write of {w.value!r} to {key} was acknowledged at "
                                         f"{_s(w.t1):.3f} s, but the DB never committed it"})
    spans = {k: s for k, s in exposure.items() if outcome.get(k) in ("fail", "info")}
    judged_reads = sum(1 for r in reads if r.phase != "final" or r.node is not None)
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


# -- replay -------------------------------------------------------------------------------
class _Acks:
    """The acknowledged, committed writes of each key, by committed version: ``lag(key, version, t)``
    is how long before ``t`` the oldest write above ``version`` was acknowledged."""

    def __init__(self, view: Paired, log: dict[str, dict[str, int]]) -> None:
        acked: dict[str, list[tuple[int, float]]] = defaultdict(list)  # key -> [(committed version, ack s)]
        for op in view.ops:
            if op.f == "write" and op.type == "ok" and op.phase != "final":
                cv = log.get(op.key, {}).get(_key(op.value))
                if cv is not None:
                    acked[op.key].append((cv, _s(op.t1)))
        # per key: the versions sorted, and the earliest ack among the writes at each version or above
        self.index: dict[str, tuple[list[int], list[float]]] = {}
        for key, ws in acked.items():
            ws.sort()
            suffix_min, m = [0.0] * len(ws), float("inf")
            for i in range(len(ws) - 1, -1, -1):
                m = min(m, ws[i][1])
                suffix_min[i] = m
            self.index[key] = ([v for v, _ in ws], suffix_min)

    def lag(self, key: str, version: int, t: float) -> tuple[float, float | None]:
        """(lag s, ack time of the oldest missed write or None): 0 when the read missed nothing."""
        versions, suffix_min = self.index[key]
        i = bisect.bisect_right(versions, version)
        if i < len(versions) and suffix_min[i] < t:
            return t - suffix_min[i], suffix_min[i]
        return 0.0, None


class _Phases:
    """before / outage / after-heal, from the DB fault windows (before = no DB fault at all)."""

    def __init__(self, windows: list[tuple[float, float, str]]) -> None:
        self.heal = max((e for _, e, _ in windows), default=None)
        self.first = min((s for s, _, _ in windows), default=None)

    def of(self, t: float) -> str:
        if self.heal is None or self.first is None or t < self.first:
            return "before"
        return "outage" if t < self.heal else "after-heal"


@dataclass
class _Backlog:
    """The write-behind buffer backlog reported by reads: its pre-fault peak, its first value after
    the heal, and how long after the heal it was back to that peak."""

    before: int = 0
    at_heal: int | None = None
    back_after: float | None = None

    def see(self, n: int, phase: str, since_heal: float | None) -> None:
        if phase == "before":
            self.before = max(self.before, n)
        elif phase == "after-heal":
            self.at_heal = n if self.at_heal is None else self.at_heal
            if self.back_after is None and n <= self.before:
                self.back_after = since_heal


def _new_bucket() -> dict[str, Any]:
    return {"db_reads": 0, "db_lagging": 0, "db_max_lag_s": 0.0, "cache_reads": 0, "cache_lagging": 0, "backlog": 0}


@dataclass
class _ReplayScan:
    """What the reads of the load phase showed: lags per op kind and phase, a timeline, the replay window."""

    lags: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {"read-db": defaultdict(list), "read": defaultdict(list)})
    timeline: dict[int, dict[str, Any]] = field(default_factory=lambda: defaultdict(_new_bucket))
    backlog: _Backlog = field(default_factory=_Backlog)
    last_bad: float = 0.0  # the last DB read after the heal that missed a write acknowledged before it
    examples: list[dict[str, Any]] = field(default_factory=list)
    judged: int = 0  # reads of a written key
    judged_replay: int = 0  # DB reads of a written key after the heal


def _scan_reads(view: Paired, log: dict[str, dict[str, int]], acks: _Acks, phases: _Phases,
                bucket_s: float) -> _ReplayScan:
    scan = _ReplayScan()
    heal = phases.heal
    for op in view.ops:
        if op.f not in ("read", "read-db") or op.type != "ok" or op.phase == "final":
            continue
        t0 = _s(op.t0)
        ph = phases.of(t0)
        b = scan.timeline[int(t0 // bucket_s)]
        if "backlog" in op.comp:
            bl = int(op.comp["backlog"])
            b["backlog"] = max(b["backlog"], bl)
            scan.backlog.see(bl, ph, None if heal is None else t0 - heal)
        version = op.version
        if version is None:
            version = log.get(op.key, {}).get(_key(op.value))
        if version is None:
            continue  # a value the DB never committed: db-truth's business
        lag, misses_outage = 0.0, False
        if op.key in acks.index:
            scan.judged += 1
            scan.judged_replay += op.f == "read-db" and ph == "after-heal"
            lag, acked_at = acks.lag(op.key, version, t0)
            misses_outage = heal is not None and acked_at is not None and acked_at < heal
        scan.lags[op.f][ph].append(lag)
        pre = "db" if op.f == "read-db" else "cache"
        b[f"{pre}_reads"] += 1
        if lag > 0:
            b[f"{pre}_lagging"] += 1
        if op.f == "read-db":
            b["db_max_lag_s"] = round(max(b["db_max_lag_s"], lag), 3)
            if ph == "after-heal" and misses_outage:
                assert heal is not None
                scan.last_bad = max(scan.last_bad, t0 - heal)
                if len(scan.examples) < 10:
                    scan.examples.append({
                        "type": "stale-read", "key": op.key, "ops": [op.cindex],
                        "explanation": f"DB read of {op.key} at {t0:.3f} s ({t0 - heal:.3f} s after the DB came "
                                       f"back) returned version {version}, missing a write acknowledged "
                                       f"{lag:.3f} s earlier, before the heal"})
    return scan


def _lag_summary(xs: list[float]) -> dict[str, Any]:
    bad = [x for x in xs if x > 0]

    def pct(q: float) -> float:
        return round(percentile(bad, q), 3) if bad else 0.0

    return {"reads": len(xs), "lagging": len(bad), "p50_lag_s": pct(50), "p99_lag_s": pct(99),
            "max_lag_s": round(max(bad, default=0.0), 3)}


def _replay_explanation(out: dict[str, Any], bound_s: float | None, backlog: _Backlog) -> str:
    ah = out["db_reads"].get("after-heal", {"reads": 0, "lagging": 0, "max_lag_s": 0.0})
    ch = out["cache_reads"].get("after-heal", {"reads": 0, "lagging": 0})
    window = out["replay_window_s"]
    return (
        f"after the DB came back: {ah['lagging']} of {ah['reads']} DB reads missed an acknowledged write (worst lag "
        f"{ah['max_lag_s']:.3f} s); DB reads missed writes acknowledged before the heal until {window:.3f} s after it; "
        f"{ch['lagging']} of {ch['reads']} cache reads lagged"
        + ("" if bound_s is None else f" (bound {bound_s:g} s)")
        + (f"; buffer backlog {backlog.at_heal} at heal, back to its pre-fault level ({backlog.before}) after "
           f"{backlog.back_after:.3f} s" if backlog.at_heal is not None and backlog.back_after is not None else ""))


def check_replay(history: list[dict[str, Any]], bucket_s: float = 0.5, bound_s: float | None = None,
                 target: str = "postgres", **_: Any) -> dict[str, Any]:
    """How far DB readers (``read-db``) and cache readers lag the acknowledged writes, around a DB outage.

    A read *lags* when some write acknowledged before the read began was committed (eventually) at
    a version above the one the read returned; its lag is the time since the oldest such ack.
    Writes the DB never committed are left to ``db-truth`` (lost writes), not counted as lag. The
    replay window is how long after the last DB fault ended a DB read still missed a write that was
    acknowledged *before* that moment (the backlog of the outage; the normal lag of fresh writes
    does not count).
    """
    view = paired(history)
    log = _commit_log(view)
    if log is None:
        return nothing_to_judge("no commit log in the final DB reads")
    windows = _fault_windows(view, target)
    phases = _Phases(windows)
    scan = _scan_reads(view, log, _Acks(view, log), phases, bucket_s)
    window = round(scan.last_bad, 3)
    bl = scan.backlog
    out: dict[str, Any] = {
        "valid": True if bound_s is None else window <= bound_s,
        "db_fault_windows": [[round(s, 3), round(e, 3), n] for s, e, n in windows],
        "db_reads": {ph: _lag_summary(v) for ph, v in scan.lags["read-db"].items()},
        "cache_reads": {ph: _lag_summary(v) for ph, v in scan.lags["read"].items()},
        "replay_window_s": window,
        "backlog_before_max": bl.before, "backlog_at_heal": bl.at_heal,
        "backlog_drained_after_s": None if bl.back_after is None else round(bl.back_after, 3),
        "timeline": [{"t": round(k * bucket_s, 3), **v} for k, v in sorted(scan.timeline.items())],
        "anomalies": scan.examples if bound_s is not None and window > bound_s else [],
        "examples": scan.examples,
    }
    out["explanation"] = _replay_explanation(out, bound_s, bl)
    if not scan.judged:
        return nothing_to_judge("no ok read of a key with an acknowledged, committed write", **out)
    if bound_s is not None and not scan.judged_replay:
        return nothing_to_judge("no DB fault: no replay" if phases.heal is None else
                                "no DB read (read-db) of a written key after the DB fault healed", **out)
    return out


WORKLOAD = Workload(
    name="write-through-db-failure",
    description="Profile updates through a write-through cache while the DB times out (ambiguous commits), "
                "goes down, or Redis dies holding a write-behind buffer",
    strategies=STRATEGIES,
    default_strategy="cache-then-db",
    app_ops=("read", "write", "read-db"),
    isolated=True,  # setup_kv + kv_log (table, function, trigger by unqualified names): namespaced on an external cluster
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
