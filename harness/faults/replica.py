"""Replication faults: ``lag`` — latency on a replica's replication link, verified by replay lag.

Why its own fault: a latency toxic on a client proxy is verified by a round trip that comes back
late, but what a replica lag promises is different — the replica *replays* the primary's writes
late. So ``lag:postgres-replica:ms=400`` adds a latency toxic on the replica's link proxy
(``postgres.replica``, see harness/services/pg_replica.py) in the *downstream* direction: the
replica's WAL receiver is the proxy's client and the primary its upstream, so the WAL (primary ->
replica) is what downstream carries. The replica's acknowledgements (upstream) are left alone.

Probe: a marker written on the primary over a harness-only direct connection (an upsert into
``cachecert_lag_probe``), its WAL position taken right after the commit (``pg_current_wal_lsn()``),
then the replica's ``pg_last_wal_replay_lsn()`` polled until it reaches that position. Verified when
the replica needed at least the toxic's latency to replay it (a delay timer never fires early, and
without the fault the same marker replays in a few ms: ``start`` measures that baseline first), or
when it still had not replayed it when the fault ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, Param, RunContext
from harness.faults.probe import HOLD_MIN_MS

LINKS = {"postgres-replica": "postgres.replica"}  # replica server -> its replication-link proxy
PRIMARY = {"postgres-replica": "postgres"}
TOXIC = "cc_lag_downstream"
PROBE_TABLE = "cachecert_lag_probe"
POLL_S = 0.005


def _connect(endpoint: str) -> Any:
    import psycopg

    host, _, port = endpoint.rpartition(":")
    return psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres", autocommit=True,
                           connect_timeout=2)


def write_marker(primary: Any) -> str:
    """Commit a tiny write on the primary; the WAL position right after its commit."""
    primary.execute(f"create table if not exists {PROBE_TABLE} (id int primary key, n bigint not null)")
    primary.execute(f"insert into {PROBE_TABLE} values (1, 1) on conflict (id) do update set n = {PROBE_TABLE}.n + 1")
    return str(primary.execute("select pg_current_wal_lsn()").fetchone()[0])


def replay_wait(replica: Any, lsn: str, timeout: float, window: Any = None,
                t0: float | None = None) -> tuple[float, str]:
    """(seconds from ``t0`` (default: now) until the replica replayed ``lsn``, outcome): "replayed",
    "timeout" or "ended" (the fault ended first)."""
    t0 = time.monotonic() if t0 is None else t0
    while True:
        ok = replica.execute("select coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", (lsn,)).fetchone()[0]
        now = time.monotonic()
        if ok:
            return now - t0, "replayed"
        if window is not None and window.over():
            return (window.ended_at or now) - t0, "ended"
        if now - t0 > timeout:
            return now - t0, "timeout"
        time.sleep(POLL_S)


def measure(ctx: FaultContext, replica_name: str, timeout: float, window: Any = None) -> tuple[float, str]:
    """One marker: how long the replica took to replay it (s) and the outcome (see ``replay_wait``)."""
    direct = ctx.cluster.direct
    with _connect(direct[PRIMARY[replica_name]]) as p, _connect(direct[replica_name]) as r:
        t0 = time.monotonic()  # before the write: its WAL cannot reach the replica sooner than the lag after this
        lsn = write_marker(p)
        return replay_wait(r, lsn, timeout, window, t0)


@dataclass
class ReplicaLag(BaseFault):
    """Latency on the replication link of a replica (the WAL stream, primary -> replica)."""

    kinds: ClassVar[dict[str, Kind]] = {
        "lag": Kind("delays the WAL stream to a read replica (latency on its replication link): the replica "
                    "replays the primary's writes ms late", "#e67e22",
                    {"ms": Param(400), "jitter": Param(0)}, example="postgres-replica")}
    targets: ClassVar[str] = "proxy"
    baseline_ms: float | None = field(default=None, repr=False, compare=False)

    @classmethod
    def check_target(cls, kind: str, target: str, services: tuple[str, ...] | None) -> None:
        if target not in LINKS:
            raise FaultError(f"{kind}: target must be a read replica ({', '.join(LINKS)}), got {target!r}")
        if services is not None and target not in services:
            raise FaultError(f"{kind}:{target} needs a replica: run with --topology postgres=replica "
                             f"(this run's servers: {', '.join(services)})")

    def validate(self, run: RunContext) -> None:
        backend = getattr(run.config, "backend", "local")
        if backend not in ("local", None):
            raise FaultError(f"{self.kind}:{self.target} delays the replication link cachecert builds on the local "
                             f"backend; the {backend} backend's replication does not go through its proxies")
        topo = str(getattr(run.config, "topology", "") or "")
        if "postgres=replica" not in topo:
            raise FaultError(f"{self.kind}:{self.target} needs a replica: {run.label} runs without one "
                             "(use --topology postgres=replica)")

    @property
    def link(self) -> str:
        return LINKS[self.target]

    def start(self, ctx: FaultContext) -> None:
        try:  # what replay takes without the fault, for the probe's report (a few ms)
            took, outcome = measure(ctx, self.target, timeout=1.0)
            self.baseline_ms = took * 1000 if outcome == "replayed" else None
        except Exception:  # noqa: BLE001 - the fault goes on; the probe judges it
            self.baseline_ms = None
        ctx.cluster.toxiproxy.add_toxic(self.link, "latency", name=TOXIC, stream="downstream",
                                        latency=int(self.params["ms"]), jitter=int(self.params.get("jitter", 0)))

    def stop(self, ctx: FaultContext) -> None:
        try:
            ctx.cluster.toxiproxy.remove_toxic(self.link, TOXIC)
        except Exception:  # noqa: BLE001 - already gone (a reset healed it)
            pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        ms, jitter = float(self.params["ms"]), float(self.params.get("jitter", 0))
        need = max(ms - jitter, 0.0)
        need -= max(1.0, 0.05 * need)  # a delay never fires early; 5% for clock granularity
        base = f"; {self.baseline_ms:.1f} ms without the fault" if self.baseline_ms is not None else ""
        if need <= 0:
            return False, f"a {ms:g}±{jitter:g} ms lag may delay nothing: nothing to observe"
        try:
            took, outcome = measure(ctx, self.target, timeout=(ms + jitter) / 1000 * 3 + 2, window=ctx.window)
        except Exception as e:  # noqa: BLE001
            return False, f"could not write a marker and watch the replica replay it: {str(e).strip()[:200]}"
        took_ms = took * 1000
        if outcome == "replayed":
            verdict = took_ms >= need
            return verdict, (f"the replica replayed a marker written on the primary {took_ms:.0f} ms after the write "
                             f"(expected >= {need:.0f} ms with a {ms:g} ms lag{base})")
        if outcome == "ended":
            if took_ms < HOLD_MIN_MS:
                return False, f"the fault ended {took_ms:.0f} ms into the probe, too soon to observe its lag"
            return True, (f"the replica had not replayed a marker written on the primary {took_ms:.0f} ms before "
                          f"the fault ended (a {ms:g} ms lag{base})")
        return False, (f"the replica had not replayed a marker after {took_ms:.0f} ms (more than 3x the {ms:g} ms "
                       f"lag: is replication broken?{base})")


__all__ = ["LINKS", "ReplicaLag", "measure", "replay_wait", "write_marker"]
