"""Fault targets that name a role, not a server: ``redis-primary`` (topology ``redis=sentinel``).

Why: which node is the Redis primary changes during a run (that is the point of a failover), so a
schedule cannot name it in advance. A fault on ``redis-primary`` resolves it once, when the fault
starts (the Sentinels' quorum answer), and keeps acting on that node until it stops, even if
another node is promoted meanwhile; ``describe()`` records which node it was.

What the alias means per target type: a *service* fault (kill, pause, restart) acts on the primary's
process; a *proxy* fault (partition, latency, down...) acts on the primary's cluster-side proxy
``NODE.cluster`` — the one every Sentinel and replica uses — so it cuts the primary off from the
Sentinels and the replicas while the clients that reach it through its client proxy keep writing to
it (split brain). See harness/services/redis_ha.py for the proxies.
"""

from __future__ import annotations

from typing import Any

ALIAS = "redis-primary"


def resolve(fault: Any, ctx: Any, side: str) -> str:
    """The server (``side="service"``) or proxy (``"proxy"``) ``fault.target`` names in this run:
    the target itself, or for the alias the primary at the fault's first call (cached per cluster)."""
    if fault.target != ALIAS:
        return fault.target
    cluster = ctx.cluster
    cached = fault.__dict__.get("_alias")
    if cached is not None and cached[0] == id(cluster):
        return cached[2]
    from harness.services.redis_ha import CLUSTER_SIDE, current_primary

    primary = current_primary(cluster)
    fault.__dict__["_alias"] = (id(cluster), primary, primary if side == "service" else f"{primary}.{CLUSTER_SIDE}")
    return fault.__dict__["_alias"][2]


def note(fault: Any) -> dict[str, Any]:
    """What a fault on the alias adds to its description once resolved: ``{"primary": NODE, "resolved": NAME}``."""
    cached = fault.__dict__.get("_alias")
    return {} if cached is None else {"primary": cached[1], "resolved": cached[2]}
