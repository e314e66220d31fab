"""``failover:redis``: make Sentinel fail the Redis primary over, then bring the old primary back.

Why: a strategy that treats Redis as the source of truth for a while (write-behind, cache-first)
loses what the old primary had acknowledged and not yet handed on; the fault that shows it must
really fail over, not just hurt the primary. ``how``:

    kill       SIGKILL the primary; Sentinel promotes a replica. When the fault ends the old primary
               is restarted (empty: no persistence) as a replica of the promoted node, as an
               orchestrator restarting it with the current primary in its config would (Sentinel
               alone converts a restarted master only after its 10 s INFO period plus 8 s). The stop
               first waits (up to ``PROMOTION_WAIT_S``) for the promotion if it has not happened
               yet; without one the node restarts as an empty primary and wipes its replicas (the
               incident ``kill:redis-primary`` shows).
    partition  black-hole the primary's cluster-side proxy (``NODE.cluster``: every Sentinel and
               replica connection to it) both ways. Clients that reach it through its client proxy
               keep writing to it while Sentinel promotes a replica: a split brain. When the fault
               ends the toxics go and the proxy is bounced (its stale connections closed, so the
               Sentinels reconnect at once instead of after their 15 s link timeout); Sentinel then
               demotes the old primary, which drops what it took meanwhile.

The primary is the Sentinels' quorum answer when the fault starts (``describe()`` records it as
``primary``). Probe: a quorum of Sentinels names another node and that node answers ROLE as master
(both read directly), waited for while the fault is on. The stop waits (up to ``REJOIN_WAIT_S``) for
the old primary to report a live replication link to the node the Sentinels name then (a second,
competing failover can follow the first), and records the outcome (``rejoined``, ``rejoin_s``) in
the stop record. Needs ``--topology redis=sentinel``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, Param
from harness.services import redis_ha

PROMOTION_WAIT_S = 10.0
REJOIN_WAIT_S = 25.0  # Sentinel demotes a reconnected old primary ~8-12 s after it sees it


@dataclass
class Failover(BaseFault):
    kinds: ClassVar[dict[str, Kind]] = {
        "failover": Kind("kills (how=kill) or cuts off from Sentinel and replicas (how=partition) the Redis primary "
                         "until Sentinel promotes a replica; the old one rejoins as a replica (redis=sentinel)",
                         "#922b21", {"how": Param("kill", choices=("kill", "partition"))}, example="redis")}
    targets: ClassVar[str] = "service"
    min_on_s: ClassVar[float] = 5.0  # Sentinel's down-after (2 s) + election: promotions took 3.9-4.2 s
    primary: str | None = field(default=None, repr=False, compare=False)
    promoted: str | None = field(default=None, repr=False, compare=False)
    promoted_after_s: float | None = field(default=None, repr=False, compare=False)
    rejoined: bool | None = field(default=None, repr=False, compare=False)
    rejoin_s: float | None = field(default=None, repr=False, compare=False)
    _t0: float = field(default=0.0, repr=False, compare=False)

    @classmethod
    def check_target(cls, kind: str, target: str, services: tuple[str, ...] | None) -> None:
        if target not in ("redis", "redis-primary"):
            raise FaultError(f"{kind}: target must be redis (its primary), got {target!r}")
        if services is not None and "redis-primary" not in services:
            raise FaultError(f"{kind}:{target} needs Sentinel: run with --topology redis=sentinel")

    # -- the fault ----------------------------------------------------------------------------
    def _link(self) -> str:
        return f"{self.primary}.{redis_ha.CLUSTER_SIDE}"

    def start(self, ctx: FaultContext) -> None:
        self.promoted = self.promoted_after_s = self.rejoined = self.rejoin_s = None
        self.primary = redis_ha.current_primary(ctx.cluster)
        self._t0 = time.monotonic()
        if self.params["how"] == "kill":
            ctx.cluster.service(self.primary).kill()
        else:
            for stream in ("downstream", "upstream"):
                ctx.cluster.toxiproxy.add_toxic(self._link(), "timeout", name=f"cc_failover_{stream}",
                                                stream=stream, timeout=0)

    def _promotion(self, ctx: FaultContext) -> str | None:
        """The node a Sentinel quorum names instead of the old primary, if it also answers as master."""
        p = redis_ha.agreed_primary(redis_ha.sentinel_votes(ctx.cluster))
        if p is not None and p != self.primary and redis_ha.role(ctx.cluster, p) == "master":
            if self.promoted != p:
                self.promoted, self.promoted_after_s = p, round(time.monotonic() - self._t0, 3)
            return p
        return None

    def stop(self, ctx: FaultContext) -> None:
        cluster = ctx.cluster
        if self.primary is None:
            return
        if self.params["how"] == "kill":
            redis_ha.wait_for(lambda: self._promotion(ctx) is not None, PROMOTION_WAIT_S, 0.2)
            svc = cluster.service(self.primary)
            if not svc.running():
                if self.promoted is not None and hasattr(svc, "replicaof"):
                    svc.replicaof = cluster.proxies[f"{self.promoted}.{redis_ha.CLUSTER_SIDE}"]
                svc.start()
        else:
            tp = cluster.toxiproxy
            for stream in ("downstream", "upstream"):
                try:
                    tp.remove_toxic(self._link(), f"cc_failover_{stream}")
                except Exception:  # noqa: BLE001 - already gone (a reset healed it)
                    pass
            tp.set_enabled(self._link(), False)  # closes the black-holed connections
            tp.set_enabled(self._link(), True)
        t = time.monotonic()

        def rejoined() -> bool:  # a replica of whichever node the Sentinels name now (there may be a later failover)
            up, of = redis_ha.replica_link_up(cluster, self.primary)  # type: ignore[arg-type]
            return up and of is not None and of == redis_ha.agreed_primary(redis_ha.sentinel_votes(cluster))

        self.rejoined = redis_ha.wait_for(rejoined, REJOIN_WAIT_S, 0.2)
        self.rejoin_s = round(time.monotonic() - t, 3)

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        while True:
            p = self._promotion(ctx)
            if p is not None:
                old = redis_ha.role(ctx.cluster, self.primary or "redis")
                split = " (the old primary still answers as master: split brain)" if old == "master" else \
                    " (the old primary does not answer)" if old is None else f" (the old primary answers {old})"
                votes = redis_ha.sentinel_votes(ctx.cluster)
                named = ", ".join(s for s, v in votes.items() if v == p)
                return True, (f"{named} name {p} as primary, {self.promoted_after_s:g} s after {self.primary} was "
                              f"{'killed' if self.params['how'] == 'kill' else 'cut off'}; {p} answers ROLE "
                              f"master{split}")
            if ctx.window is None or ctx.window.over():
                votes = redis_ha.sentinel_votes(ctx.cluster)
                return False, (f"no promotion while the fault was on ({time.monotonic() - self._t0:.1f} s): the "
                               f"Sentinels name {votes} (was {self.primary})")
            ctx.window.wait(0.2)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        for k in ("primary", "promoted", "promoted_after_s", "rejoined", "rejoin_s"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out
