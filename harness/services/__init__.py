"""Services: the real servers a run talks to, and the one small interface every backend implements.

A backend (``local`` processes, ``docker`` containers, ``external`` endpoints) hands the cluster a set
of objects with this interface; faults and the run engine only ever use the interface, so a
workload runs unchanged on any backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from harness.services.base import ServiceError


@runtime_checkable
class Service(Protocol):
    name: str
    log_path: Path | None

    @property
    def endpoint(self) -> str: ...  # "127.0.0.1:port" the proxy forwards to

    def start(self, wait: bool = True) -> None: ...
    def stop(self) -> None: ...  # graceful
    def kill(self) -> None: ...  # SIGKILL: a crash
    def pause(self) -> None: ...  # SIGSTOP: alive but silent
    def resume(self) -> None: ...
    def restart(self, kill: bool = False) -> None: ...
    def healthy(self) -> bool: ...
    def running(self) -> bool: ...
    def wait_healthy(self, timeout: float | None = None) -> None: ...


__all__ = ["Service", "ServiceError"]
