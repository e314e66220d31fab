"""Run-engine throughput and recording overhead (issue 3), side by side with redis-benchmark.

    python -m benchmarks.run_engine_bench [--seconds 3]

1. Recording cost: HistoryWriter.append of a typical op, per op (an op = invoke + completion).
2. Harness floor: the whole worker loop (generator, history, bookkeeping) against a strategy that
   does nothing, at concurrency 1: what the harness itself costs per op.
3. Through the Redis proxy at concurrency 1, 8 and 32: the harness driving a Redis-only strategy
   (GET/SET, one client per node... one shared pool) vs `redis-benchmark` (GET+SET, same proxy,
   same concurrency), and the ratio. Target: ratio >= 0.5 at concurrency 8; recording < 20 us/op.
4. Worker processes (``--procs``) at concurrency 1-128, with the client strategies get (redis-py
   through ``Env.redis()``) and with a lean client (``LeanRedis``: a socket per thread, hiredis):
   the gap between the two is the client library's cost per op, not the engine's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import hiredis

from core.clients import host_port
from core.history import HistoryWriter
from harness.cluster import Cluster
from harness.runner import Run, RunConfig, prepare
from workloads.base import Direct, Workload


class RedisOnly:
    """Cache-as-database: GET/SET straight to Redis through the proxy (benchmark strategy), with the
    Redis client strategies get from ``Env.redis()``."""

    name: ClassVar[str] = "bench-redis-only"

    def setup(self, env: Any) -> None:
        self.r = env.redis()  # the client every strategy gets (core.clients.redis_client)

    def read(self, key: str) -> dict[str, Any]:
        v = self.r.get(key)
        return {"value": int(v) if v is not None else None, "source": "cache", "hit": v is not None}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        self.r.set(key, value)
        return {}

    def close(self) -> None:
        self.r.close()


class LeanRedis:
    """The same GET/SET with a lean client: one socket per worker thread, a command packed by hand,
    the reply parsed by hiredis (redis-py's own parser) — no pool, no connection objects. What the
    engine drives when the strategy's client costs little: redis-py's per-command Python (the pool,
    packing, response callbacks) is most of the harness's cost per op here."""

    name: ClassVar[str] = "bench-redis-lean"

    def setup(self, env: Any) -> None:
        self.addr = host_port(env.endpoints["redis"])
        self.local = threading.local()
        self.socks: list[Any] = []

    def _call(self, cmd: bytes) -> Any:
        loc = self.local
        sock = getattr(loc, "sock", None)
        if sock is None:
            sock = loc.sock = socket.create_connection(self.addr, timeout=2)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loc.reader = hiredis.Reader()
            self.socks.append(sock)
        sock.sendall(cmd)
        reader = loc.reader
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            reader.feed(data)

    def read(self, key: str) -> dict[str, Any]:
        k = key.encode()
        v = self._call(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        return {"value": int(v) if v is not None else None, "source": "cache", "hit": v is not None}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        k, v = key.encode(), str(value).encode()
        self._call(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
        return {}

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class Noop:
    name: ClassVar[str] = "bench-noop"

    def setup(self, env: Any) -> None:
        pass

    def read(self, key: str) -> dict[str, Any]:
        return {"value": None}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def _setup(d: Direct) -> None:
    d.redis.flushall()


WORKLOAD = Workload(
    name="bench-redis", description="benchmark only: Redis GET/SET", strategies=(), default_strategy="",
    services=("redis",), keys=100, mix={"read": 0.5, "write": 0.5}, checkers=(), quiesce=0.0,
    setup=_setup, final_read=lambda d, k: {"value": None},
)


def bench_recording(n: int = 200_000, invokes_through: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        w = HistoryWriter(Path(tmp) / "h.jsonl", invokes_through=invokes_through)
        t0 = time.perf_counter()
        for i in range(n // 2):
            w.append({"process": i % 8, "type": "invoke", "f": "read", "key": "k1", "value": None, "node": 0,
                      "time_ns": w.now()})
            w.append({"process": i % 8, "type": "ok", "f": "read", "key": "k1", "value": 123, "version": 7,
                      "source": "cache", "hit": True, "node": 0, "time_ns": w.now()})
        w.close()
        return (time.perf_counter() - t0) / (n // 2) * 1e6  # us per op (two records)


def harness_rate(cluster: Cluster, strategy: str, conc: int, seconds: float, reports: str, procs: int = 1) -> float:
    cfg = RunConfig(workload="benchmarks.run_engine_bench", strategy=strategy, time_limit=seconds,
                    concurrency=conc, seed=1, reports=reports, quiesce=0.0, checkers=[], procs=procs,
                    nodes=max(1, procs))
    res = Run(prepare(cfg), cluster=cluster, progress=False).execute()
    load = res["phases"]["load"]
    return (res["counts"]["ok"] + res["counts"]["fail"] + res["counts"]["info"]) / (load[1] - load[0])


def raw_client_rate(port: int, conc: int, seconds: float) -> float:
    """The same GET/SET mix from plain redis-py threads, no harness: the Python client's ceiling."""
    import random

    import redis

    pool = redis.ConnectionPool(host="127.0.0.1", port=port, max_connections=256)
    done = [0] * conc
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        r, rng, n = redis.Redis(connection_pool=pool), random.Random(i), 0
        while time.monotonic() < stop:
            key = f"k{rng.randrange(100)}"
            r.get(key) if rng.random() < 0.5 else r.set(key, n)
            n += 1
        done[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.disconnect()
    return sum(done) / seconds


def redis_benchmark_rate(port: int, conc: int, n: int) -> float | None:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return None
    out = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-c", str(conc), "-n", str(n), "-t", "get,set",
                          "-r", "100", "--csv"], capture_output=True, text=True, timeout=300).stdout
    rates = [float(line.split(",")[1].strip('"')) for line in out.splitlines()[1:] if line.count(",") >= 1]
    return sum(rates) / len(rates) if rates else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; each harness point runs {args.seconds:g} s of load\n")
    rec = bench_recording()
    rec_through = bench_recording(invokes_through=True)
    print(f"recording: {rec:.1f} us per op (invoke + completion appended); {rec_through:.1f} us with each invoke "
          "written through (worker processes)   target < 20 us\n")
    with tempfile.TemporaryDirectory() as reports, Cluster(services=("redis",)) as cluster:
        floor = harness_rate(cluster, "benchmarks.run_engine_bench:Noop", 1, args.seconds, reports)
        print(f"harness floor (no-op strategy, c=1): {floor:,.0f} ops/s = {1e6 / floor:.1f} us per op\n")
        port = cluster.proxies["redis"]
        print(f"{'concurrency':>11} {'harness ops/s':>14} {'raw redis-py ops/s':>19} {'redis-benchmark ops/s':>22}"
              f" {'harness/raw':>12} {'harness/redis-benchmark':>24}")
        for conc in (1, 8, 32):
            h = harness_rate(cluster, "benchmarks.run_engine_bench:RedisOnly", conc, args.seconds, reports)
            raw = raw_client_rate(port, conc, args.seconds)
            rb = redis_benchmark_rate(port, conc, n=max(20_000, int(h * args.seconds)))
            ratio = f"{h / rb:.2f}" if rb else "n/a"
            print(f"{conc:>11} {h:>14,.0f} {raw:>19,.0f} {rb or float('nan'):>22,.0f} {h / raw:>12.2f} {ratio:>24}")
        print("\n(both through the same Toxiproxy proxy; redis-benchmark: mean of its GET and SET rates)")
        cores = os.cpu_count() or 1
        procs_list = sorted({1, 2, cores})
        print("\nworker processes (--procs; nodes = procs): harness ops/s and / redis-benchmark at each concurrency,")
        print("with the Redis client strategies get (Env.redis(), redis-py) and with a lean one (LeanRedis)")
        cols = [(p, c) for p in procs_list for c in ("redis-py", "lean")]
        print(f"{'concurrency':>11} " + " ".join(f"{f'procs={p} {c}':>22}" for p, c in cols) + f" {'redis-benchmark':>16}")
        for conc in (1, 8, 32, 128):
            rb = redis_benchmark_rate(port, conc, n=100_000)
            cells = []
            for p, client in cols:
                if conc < p:
                    cells.append(f"{'-':>22}")
                    continue
                strategy = "RedisOnly" if client == "redis-py" else "LeanRedis"
                h = harness_rate(cluster, f"benchmarks.run_engine_bench:{strategy}", conc, args.seconds, reports, p)
                cells.append(f"{h:>12,.0f} ({h / rb:.2f}x)" if rb else f"{h:>22,.0f}")
            print(f"{conc:>11} " + " ".join(f"{c:>22}" for c in cells) + f" {rb or float('nan'):>16,.0f}")


if __name__ == "__main__":
    main()
