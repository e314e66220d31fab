"""Workers in several processes (``--procs N``): load beyond what one Python process can generate.

One interpreter drives at most about one core of load (the GIL): against Redis through a proxy the
harness reached 0.35x of ``redis-benchmark`` at concurrency 8. Races — herds, invalidation races,
torn reads — need real concurrency to show. So the workers can run in N child processes
(``python -m harness.procs``), each with its own strategy instances for the nodes it owns, its own
history part (``history.pK.jsonl``), on the parent's clock: CLOCK_MONOTONIC is one clock for the
whole machine, so every part's ``time_ns`` is comparable, and ``merge`` folds the parts and the
parent's own records (phases, faults, final reads) into one ``history.jsonl`` in real-time order.

Reproducible: worker w draws its ops from ``for_worker(seed, w)`` wherever it runs, and the fault
schedule is the parent's. Node w % nodes is owned by the process that runs worker w, so a worker
never crosses processes; the parent crashes and restarts a node, and reads through it for the final
reads, by a line on the owner's stdin (``ChildNodes``). A child that dies loses nothing recorded:
its part is flushed every 50 ms, and an op it invoked but never completed stays open, which the
checkers read as indeterminate (info).

What needs the strategy instances in the parent's memory cannot run this way, and is refused before
anything starts: ``step`` faults (they act on in-process state) and faults on a node's extra link
proxy (``redis.sub1``: a child cannot register the proxies it would open). App nodes have none of
these limits: their processes are the parent's; children only send HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from core.history import HistoryWriter, load_history_tail
from harness.nodes import NodeDown
from strategies.base import DefiniteFailure

PART = "history.p{}.jsonl"


def owner(node: int, procs: int) -> int:
    return node % procs


def workers_of(k: int, procs: int, concurrency: int, nodes: int) -> list[int]:
    """The workers child ``k`` runs: those whose node it owns."""
    return [w for w in range(concurrency) if owner(w % nodes, procs) == k]


class Child:
    """One worker process, driven by JSON lines: a command on its stdin, one answer on its stdout."""

    def __init__(self, k: int, config: dict[str, Any], log_path: Path) -> None:
        self.k = k
        self._lock = threading.Lock()
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.procs"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.ask(config)

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker process {self.k} has exited (status {self.proc.returncode})")
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker process {self.k} exited (status {self.proc.wait(5)}); see its log")
        ans = json.loads(line)
        if ans.get("error"):
            raise RuntimeError(f"worker process {self.k}: {ans['error']}")
        return ans

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class ChildNode:
    """A node that lives in a worker process: ``perform`` runs one op there (the final reads)."""

    def __init__(self, child: Child, i: int) -> None:
        self.child, self.i = child, i

    def perform(self, op: dict[str, Any]) -> dict[str, Any]:
        ans = self.child.ask({"cmd": "op", "node": self.i, "op": op})
        if ans.get("fail"):
            raise DefiniteFailure(ans["fail"])
        if ans.get("info"):
            raise RuntimeError(ans["info"])
        return ans["result"]


class ChildNodes:
    """The NodePool interface over nodes that live in worker processes (FaultContext.nodes)."""

    def __init__(self, children: list[Child], n: int) -> None:
        self.children = children
        self.down = [False] * n
        self.crashes = [0] * n

    def __len__(self) -> int:
        return len(self.down)

    def _owner(self, i: int) -> Child:
        return self.children[owner(i, len(self.children))]

    def get(self, i: int) -> ChildNode:
        if self.down[i]:
            raise NodeDown(f"node {i} is down")
        return ChildNode(self._owner(i), i)

    def is_down(self, i: int) -> bool:
        return self.down[i]

    def reachable(self, i: int) -> bool:
        """False when the process owning node ``i`` is dead: nothing can be read through the node."""
        return self._owner(i).proc.poll() is None

    def crash(self, i: int) -> None:
        if not self.down[i]:
            self._owner(i).ask({"cmd": "crash", "node": i})
            self.down[i] = True
            self.crashes[i] += 1

    def restart(self, i: int) -> None:
        if self.down[i]:
            self._owner(i).ask({"cmd": "restart", "node": i})
            self.down[i] = False

    def restart_all(self) -> None:
        for i in range(len(self)):
            try:
                self.restart(i)
            except Exception:  # noqa: BLE001 - heal the others; the run records the state
                pass

    def close(self) -> None:
        pass  # the children close their nodes when they exit


def merge(run_dir: Path, procs: int) -> int:
    """Fold the parts into history.jsonl, in real-time order, indexes renumbered; returns the
    number of records. Each part and the parent's file is already in its own time order."""
    main = run_dir / "history.jsonl"
    records, _ = load_history_tail(main)
    for k in range(procs):
        part = run_dir / PART.format(k)
        if part.exists():
            recs, _ = load_history_tail(part)
            records += recs
    records.sort(key=lambda r: r["time_ns"])
    tmp = run_dir / "history.jsonl.merging"
    with HistoryWriter(tmp, t0_ns=0) as out:
        for r in records:
            r.pop("index", None)
            out.append(r)
    tmp.replace(main)
    for k in range(procs):
        (run_dir / PART.format(k)).unlink(missing_ok=True)
    return len(records)


# -- the child ---------------------------------------------------------------------------------
def _child() -> int:
    import strategies
    import workloads
    from harness.generator import Generator, KeyDist, parse_mix
    from harness.nodes import NodePool
    from harness.runner import work
    from strategies.base import Env
    from strategies.remote import AppNodeClient, OpMapping

    cfg = json.loads(sys.stdin.readline())
    from core.access import Access, register

    for endpoint, acc in (cfg.get("access") or {}).items():  # an external cluster: the run's namespace
        register(endpoint, Access(**acc))
    wl = workloads.load(cfg["workload"])
    n = cfg["nodes"]
    mine = [i for i in range(n) if owner(i, cfg["procs"]) == cfg["k"]]
    nodes: Any
    if cfg.get("app_ports"):
        mapping = {f: OpMapping.parse(f, dict(m)) for f, m in cfg["app_ops"].items()} if cfg.get("app_ops") else None
        clients = [AppNodeClient(port, timeout=cfg["op_timeout"], mapping=mapping, node_id=f"node{i}")
                   for i, port in enumerate(cfg["app_ports"])]
        nodes = _Clients(clients)
        invoke = _perform
    else:
        cls = strategies.load(cfg["strategy"])

        def env(i: int) -> Env:
            return Env(cfg["endpoints"], cfg["params"], i, cfg["op_timeout"], wl.name)

        nodes = NodePool(lambda: strategies.build(cls, cfg["params"]), env, n, only=mine)
        invoke = wl.invoke
    hist = HistoryWriter(cfg["part"], t0_ns=cfg["t0_ns"], invokes_through=True)
    gen = Generator(parse_mix(cfg["mix"]), KeyDist.parse(cfg["key_dist"], cfg["keys"]), cfg["rate"],
                    cfg["concurrency"])
    stop = threading.Event()
    counts = {"ok": 0, "fail": 0, "info": 0}
    workers = [threading.Thread(target=work, args=(w, gen.for_worker(cfg["seed"], w), hist, invoke, nodes, stop,
                                                   counts, cfg["concurrency"]), daemon=True)
               for w in workers_of(cfg["k"], cfg["procs"], cfg["concurrency"], n)]
    _answer({"ready": True, "workers": len(workers)})
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        try:
            if cmd == "go":
                for t in workers:
                    t.start()
                _answer({"ok": True})
            elif cmd == "stop":
                stop.set()
                for t in workers:
                    t.join(cfg["op_timeout"] * 3 + 2)
                hist.close()
                _answer({"counts": counts})
            elif cmd == "crash":
                nodes.crash(msg["node"])
                _answer({"ok": True})
            elif cmd == "restart":
                nodes.restart(msg["node"])
                _answer({"ok": True})
            elif cmd == "op":
                _answer(_one(invoke, nodes, msg["node"], msg["op"]))
            else:
                _answer({"error": f"unknown command {cmd!r}"})
        except Exception as e:  # noqa: BLE001 - the parent decides what a failed command means
            _answer({"error": f"{type(e).__name__}: {e}"})
    stop.set()
    nodes.close()
    return 0


class _Clients:
    """App-node clients in a worker process: the parent owns the processes (crash, restart)."""

    def __init__(self, clients: list[Any]) -> None:
        self.clients = clients

    def __len__(self) -> int:
        return len(self.clients)

    def get(self, i: int) -> Any:
        return self.clients[i]

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _perform(node: Any, op: dict[str, Any]) -> dict[str, Any]:
    return node.perform(op)


def _one(invoke: Any, nodes: Any, i: int, op: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"result": invoke(nodes.get(i), op)}
    except DefiniteFailure as e:
        return {"fail": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001
        return {"info": f"{type(e).__name__}: {e}"}


def _answer(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(_child())
