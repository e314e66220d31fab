"""Topologies: how many of each server a run starts, and what they are called.

Why: cache incidents often need more than one of each server (a cache filled from a lagging read
replica, a Redis failover that drops acknowledged writes, a broker loss that drops an
invalidation). A ``Topology`` is plain data, parsed from ``--topology redis=replica,postgres=replica,
kafka=3`` on top of the workload's own default, and it fixes the *names* of the servers, which are
what fault targets, endpoints and reports use:

    redis=single     redis
    redis=replica    redis (primary), redis-replica (async replica)
    redis=sentinel   redis, redis-2, redis-3 (one primary, two replicas), sentinel-1..3;
                     redis-primary names whichever of them is the primary when a fault starts;
                     links redis.cluster, redis-2.cluster, redis-3.cluster: each node's cluster
                     side, carrying every Sentinel and replica connection to it (a partition there
                     is a split brain; harness/services/redis_ha.py)
    postgres=replica postgres (primary), postgres-replica (hot standby, streaming replication)
    kafka=N          kafka, kafka-2 .. kafka-N (KRaft, every broker also a controller)
                     links kafka.repl, kafka-2.repl ...: followers fetch from a broker through it
    min_isr=M        min.insync.replicas of the topics (kafka=N only; default 1)

Every replication link goes through its own proxy, named ``PRIMARY.LINK`` (``postgres.replica``,
``redis.replica``), so a partition or latency between primary and replica is a proxy fault like any
other. The cluster builds each family in its own module (harness/services/pg_replica.py,
redis_ha.py, kafka_brokers.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

REDIS_MODES = ("single", "replica", "sentinel")
POSTGRES_MODES = ("single", "replica")
MAX_BROKERS = 5
KEYS = ("redis", "postgres", "kafka", "min_isr")
SERVICE_OF = {"redis": "redis", "postgres": "postgres", "kafka": "kafka", "min_isr": "kafka"}


class TopologyError(ValueError):
    """A topology text that names an unknown word, or one the run's services cannot have."""


@dataclass(frozen=True)
class Topology:
    redis: str = "single"
    postgres: str = "single"
    kafka: int = 1  # brokers
    min_isr: int = 1  # min.insync.replicas (kafka >= 2)

    def __post_init__(self) -> None:
        if self.redis not in REDIS_MODES:
            raise TopologyError(f"unknown redis topology {self.redis!r} (valid: {', '.join(REDIS_MODES)})")
        if self.postgres not in POSTGRES_MODES:
            raise TopologyError(f"unknown postgres topology {self.postgres!r} (valid: {', '.join(POSTGRES_MODES)})")
        if not 1 <= self.kafka <= MAX_BROKERS:
            raise TopologyError(f"kafka takes 1 to {MAX_BROKERS} brokers, got {self.kafka}")
        if not 1 <= self.min_isr <= self.kafka:
            raise TopologyError(f"min_isr must be between 1 and the {self.kafka} broker(s), got {self.min_isr}")

    @property
    def single(self) -> bool:
        return self == Topology()

    def text(self) -> str:
        """The canonical text: only what differs from one of each (``single`` for that)."""
        default = Topology()
        items = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) != getattr(default, f.name)]
        return ",".join(items) or "single"

    def servers(self, service: str) -> tuple[str, ...]:
        """The server names one service family has in this topology (primary first)."""
        if service == "redis":
            return {"single": ("redis",), "replica": ("redis", "redis-replica"),
                    "sentinel": ("redis", "redis-2", "redis-3", "sentinel-1", "sentinel-2", "sentinel-3")}[self.redis]
        if service == "postgres":
            return ("postgres", "postgres-replica") if self.postgres == "replica" else ("postgres",)
        if service == "kafka":
            return ("kafka", *(f"kafka-{i}" for i in range(2, self.kafka + 1)))
        return (service,)

    def names(self, services: tuple[str, ...]) -> tuple[str, ...]:
        """Every name a fault may target in a run of ``services``: servers, then aliases."""
        out = [n for s in services for n in self.servers(s)]
        if "redis" in services and self.redis == "sentinel":
            out.append("redis-primary")
        return tuple(out)


def parse(text: str | None) -> dict[str, str | int]:
    """``redis=replica,kafka=3`` -> the keys it sets, checked (``single`` or empty: nothing set)."""
    out: dict[str, str | int] = {}
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item or item == "single":
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in KEYS:
            raise TopologyError(f"unknown topology word {item!r} (valid: redis=..., postgres=..., kafka=N, min_isr=N)")
        if not eq or not value:
            raise TopologyError(f"topology {key} needs a value, e.g. {key}={ {'redis': 'sentinel', 'postgres': 'replica'}.get(key, 3) }")
        if key in ("kafka", "min_isr"):
            try:
                out[key] = int(value)
            except ValueError:
                raise TopologyError(f"topology {key} must be a whole number, got {value!r}") from None
        else:
            out[key] = value
    Topology(**out)  # type: ignore[arg-type]  # each word valid on its own
    return out


def resolve(default: str | None, given: str | None, services: tuple[str, ...]) -> Topology:
    """The run's topology: the workload's ``default`` with the user's ``given`` words on top, refused
    when a word is about a service the run does not start."""
    words = {**parse(default), **parse(given)}
    for key in parse(given):
        if SERVICE_OF[key] not in services:
            raise TopologyError(f"topology {key}=... is about {SERVICE_OF[key]}, which this workload does not use "
                                f"(it uses: {', '.join(services)})")
    return Topology(**words)  # type: ignore[arg-type]


def protocol(name: str) -> str:
    """The protocol a server or proxy speaks: ``redis-2`` and ``sentinel-1`` speak redis,
    ``postgres.replica`` postgres, ``kafka-3.node1`` kafka."""
    base = name.partition(".")[0]
    if base.startswith("sentinel"):
        return "redis"
    for family in ("redis", "postgres", "kafka"):
        if base.startswith(family):
            return family
    return base


__all__ = ["Topology", "TopologyError", "parse", "resolve", "protocol"]
