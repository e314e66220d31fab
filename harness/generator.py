"""Operation generators: what each worker does next, reproducible from the seed.

Each worker owns a ``random.Random`` seeded from (run seed, worker index), so the op sequence of
every worker is the same on every run with that seed, whatever the timing. A generator is an op
mix (weights per ``f``), a key distribution (uniform or Zipfian) and an optional rate limit.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any


class GeneratorError(ValueError):
    pass


@dataclass
class KeyDist:
    """``uniform`` or ``zipf:S`` (S > 0; key 0 is the hottest) over ``n`` keys named k0..k{n-1}."""

    n: int
    kind: str = "uniform"
    s: float = 1.0
    _cdf: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def parse(cls, spec: str, n: int) -> KeyDist:
        if n < 1:
            raise GeneratorError(f"need at least one key, got {n}")
        kind, _, arg = spec.partition(":")
        if kind == "uniform":
            return cls(n)
        if kind == "zipf":
            try:
                s = float(arg or 1.0)
            except ValueError:
                raise GeneratorError(f"bad zipf exponent {arg!r}") from None
            if s <= 0:
                raise GeneratorError(f"zipf exponent must be > 0, got {s:g}")
            d = cls(n, "zipf", s)
            d._cdf = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))
            return d
        raise GeneratorError(f"unknown key distribution {spec!r} (valid: uniform, zipf:S)")

    def key(self, i: int) -> str:
        return f"k{i}"

    def keys(self) -> list[str]:
        return [self.key(i) for i in range(self.n)]

    def sample(self, rng: random.Random) -> str:
        if self.kind == "uniform":
            return self.key(rng.randrange(self.n))
        return self.key(min(self.n - 1, bisect.bisect_left(self._cdf, rng.random() * self._cdf[-1])))


def parse_mix(spec: str | dict[str, float]) -> dict[str, float]:
    """``read=0.8,write=0.2`` or a dict -> normalised weights."""
    if isinstance(spec, dict):
        mix = dict(spec)
    else:
        mix = {}
        for item in spec.split(","):
            f, eq, w = item.partition("=")
            try:
                mix[f.strip()] = float(w) if eq else 1.0
            except ValueError:
                raise GeneratorError(f"bad weight in op mix item {item!r}") from None
    if not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise GeneratorError(f"op mix needs non-negative weights with a positive sum, got {mix}")
    total = sum(mix.values())
    return {f: w / total for f, w in mix.items()}


@dataclass
class Generator:
    mix: dict[str, float]
    keys: KeyDist
    rate: float | None = None  # total ops/s over all workers; None = as fast as possible
    concurrency: int = 1

    def __post_init__(self) -> None:
        self._fs = list(self.mix)
        self._cum = list(itertools.accumulate(self.mix.values()))
        if self.rate is not None and self.rate <= 0:
            raise GeneratorError(f"rate must be > 0 ops/s, got {self.rate:g}")

    def for_worker(self, seed: int, worker: int) -> WorkerGen:
        return WorkerGen(self, random.Random(f"{seed}-{worker}"), worker)


class WorkerGen:
    """One worker's stream of ops. Write values are unique across the run: n*C + worker + 1."""

    def __init__(self, gen: Generator, rng: random.Random, worker: int) -> None:
        self.gen = gen
        self.rng = rng
        self.worker = worker
        self.n = 0
        self.interval = gen.concurrency / gen.rate if gen.rate else 0.0
        self.next_at = time.monotonic() + (rng.random() * self.interval)

    def next(self) -> dict[str, Any]:
        g = self.gen
        f = g._fs[min(len(g._fs) - 1, bisect.bisect_left(g._cum, self.rng.random() * g._cum[-1]))]
        op: dict[str, Any] = {"f": f, "key": g.keys.sample(self.rng)}
        if not f.startswith("read"):  # read-like ops (read, read-db, ...) carry no value
            op["value"] = self.n * g.concurrency + self.worker + 1
        self.n += 1
        return op

    def pace(self, stop: Any) -> bool:
        """Sleep until this worker's next slot; False if ``stop`` was set meanwhile."""
        if not self.interval:
            return not stop.is_set()
        delay = self.next_at - time.monotonic()
        self.next_at = max(self.next_at, time.monotonic() - self.interval) + self.interval
        return not stop.wait(delay) if delay > 0 else not stop.is_set()
