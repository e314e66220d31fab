"""Application nodes: the strategy instances workers call, which the nemesis can crash.

A node is one strategy instance (its connections, in-process cache, subscriber). Workers are
spread over nodes round-robin. Crashing a node closes its instance abruptly (in the background, so
a dead link cannot block the nemesis) and makes calls on it fail fast with ``NodeDown``; restarting
builds a fresh instance with the same parameters, as a redeployed process would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from core.clients import close_quietly
from strategies.base import DefiniteFailure, Env


class NodeDown(DefiniteFailure):
    """The node is crashed: the request never reached the strategy."""


class NodePool:
    def __init__(self, factory: Callable[[], Any], make_env: Callable[[int], Env], n: int,
                 only: list[int] | None = None) -> None:
        """``only``: the nodes this process builds (a worker process owns some of them; harness/procs.py)."""
        self.factory = factory
        self.make_env = make_env
        self.instances: list[Any] = [None] * n
        self.envs: list[Env | None] = [None] * n
        self.down = [False] * n
        self.crashes = [0] * n
        self._lock = threading.Lock()
        self._booting: dict[int, threading.Thread] = {}
        self.boot_errors: list[str] = []  # restarts that failed (the node stayed down)
        for i in range(n) if only is None else only:
            self._boot(i)

    def __len__(self) -> int:
        return len(self.instances)

    def _boot(self, i: int) -> None:
        env = self.make_env(i)
        inst = self.factory()
        inst.setup(env)
        self.instances[i], self.envs[i] = inst, env

    def get(self, i: int) -> Any:
        if self.down[i]:
            raise NodeDown(f"node {i} is down")
        return self.instances[i]

    def is_down(self, i: int) -> bool:
        return self.down[i]

    def crash(self, i: int) -> None:
        with self._lock:
            if self.down[i]:
                return
            self.down[i] = True
            self.crashes[i] += 1
            inst, env = self.instances[i], self.envs[i]
        threading.Thread(target=close_quietly, args=(inst, env), daemon=True).start()

    def restart(self, i: int) -> None:
        """Rebuild a crashed node in the background: a redeployed process takes its time (a Kafka
        consumer joins its group), and the nemesis must not wait for it — the next fault is due.
        Calls fail fast (NodeDown) until it is up; ``restart_all`` waits for every boot."""
        with self._lock:
            if not self.down[i] or (i in self._booting and self._booting[i].is_alive()):
                return
            t = self._booting[i] = threading.Thread(target=self._reboot, args=(i,), name=f"boot-node{i}", daemon=True)
            t.start()

    def _reboot(self, i: int) -> None:
        try:
            self._boot(i)
        except Exception as e:  # noqa: BLE001 - the node stays down; the run says so
            self.boot_errors.append(f"node {i}: {type(e).__name__}: {e}")
            return
        with self._lock:
            self.down[i] = False

    def restart_all(self) -> None:
        """Heal: start every downed node and wait until each boot is over (30 s at most each)."""
        for i in range(len(self)):
            self.restart(i)
        for t in list(self._booting.values()):
            t.join(30)

    def close(self) -> None:
        for inst, env in zip(self.instances, self.envs, strict=True):
            if inst is not None:
                close_quietly(inst, env)
