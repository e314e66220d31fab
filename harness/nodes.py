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
        with self._lock:
            if not self.down[i]:
                return
            self._boot(i)
            self.down[i] = False

    def restart_all(self) -> None:
        for i in range(len(self)):
            try:
                self.restart(i)
            except Exception:  # noqa: BLE001 - heal the others; the caller logs the state
                pass

    def close(self) -> None:
        for inst, env in zip(self.instances, self.envs, strict=True):
            if inst is not None:
                close_quietly(inst, env)
