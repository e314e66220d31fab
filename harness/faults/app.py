"""Faults only real app-node processes have (``--app``; docs/node-protocol.md): a pause (SIGSTOP /
SIGCONT, a GC pause or a frozen VM seen from outside), a graceful restart (SIGTERM, wait, start
again), and a rolling deploy from the app file's ``command`` to its ``next`` build, node by node.
A crash (SIGKILL, then a restart) is ``crash-node``, shared with in-process nodes (node.py).

Each is probed on the process, not on the harness's bookkeeping: a paused node's state in
/proc is ``T`` and its /health does not answer; a gracefully stopped node's process has exited; a
deployed node runs the next build and answers /health."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, RunContext


def _needs_app(kind: str, run: RunContext) -> None:
    if not (getattr(run.config, "app", None) or getattr(run.config, "app_file", None)):
        raise FaultError(f"{kind} acts on an app node's process: it needs --app or --app-file")


@dataclass
class AppNodeFault(BaseFault):
    """The node-targeted app faults: ``pause-node:1``, ``restart-node:1``."""

    kinds: ClassVar[dict[str, Kind]] = {
        "pause-node": Kind("SIGSTOP an app node's process group, SIGCONT at the end (a long GC pause)", "#8e44ad",
                           example="1"),
        "restart-node": Kind("graceful restart of an app node: SIGTERM, wait for its exit, start it again at the "
                             "end", "#16a085", example="1"),
    }
    targets: ClassVar[str] = "node"

    def validate(self, run: RunContext) -> None:
        _needs_app(self.kind, run)
        if not self.target.isdigit() or int(self.target) >= (run.config.nodes or 1):
            raise FaultError(f"{self.kind}: no app node {self.target!r} (the run has {run.config.nodes}: "
                             f"0..{(run.config.nodes or 1) - 1})")

    def start(self, ctx: FaultContext) -> None:
        i = int(self.target)
        if self.kind == "pause-node":
            ctx.nodes.pause(i)
        else:
            self.params_seen: dict[str, Any] = {"exit": ctx.nodes.stop_gracefully(i)}

    def stop(self, ctx: FaultContext) -> None:
        i = int(self.target)
        if self.kind == "pause-node":
            ctx.nodes.resume(i)
        else:
            ctx.nodes.restart(i)

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        i = int(self.target)
        if self.kind == "pause-node":
            pid = ctx.nodes.pid(i)
            state = _proc_state(pid) if pid else None
            deadline = time.monotonic() + 2.0  # a stop signal is delivered when the kernel next runs the process
            while pid and state != "T" and time.monotonic() < deadline and not (ctx.window and ctx.window.over()):
                time.sleep(0.01)
                state = _proc_state(pid)
            if state != "T":
                return False, f"node{i}'s process state is {state or 'gone'}, not stopped (T)"
            t0 = time.monotonic()
            try:
                ctx.nodes.instances[i].request("GET", ctx.nodes.spec.health)
            except Exception as e:  # noqa: BLE001 - any failure to answer is the observation
                return True, f"node{i} (pid {pid}) is stopped (state T) and /health does not answer ({type(e).__name__})"
            held = (time.monotonic() - t0) * 1000
            if ctx.window is not None and ctx.window.over():  # the kernel's word stands; SIGCONT came first
                return True, f"node{i} (pid {pid}) was stopped (state T); /health answered after SIGCONT ({held:.0f} ms)"
            return False, f"node{i} is in state T but answered /health in {held:.0f} ms"
        if not ctx.nodes.is_down(i) or ctx.nodes.pid(i) is not None:
            return False, f"node{i} still runs after SIGTERM"
        status = getattr(self, "params_seen", {}).get("exit")
        how = f"exited with status {status}" if status is not None else "did not exit in time and was killed"
        return True, f"node{i} stopped on SIGTERM ({how})"


@dataclass
class Deploy(BaseFault):
    """``deploy:all@50%+0``: a rolling deploy to the app file's ``next`` build, one node at a time,
    each waited for on /health before the next goes."""

    kinds: ClassVar[dict[str, Kind]] = {
        "deploy": Kind("rolling deploy of every app node to the app file's next build, node by node", "#2980b9",
                       example="all")}
    targets: ClassVar[str] = "node"
    instant: ClassVar[bool] = True

    def validate(self, run: RunContext) -> None:
        _needs_app(self.kind, run)
        if self.target != "all" and not self.target.isdigit():
            raise FaultError(f"deploy: target is 'all' or a node number, got {self.target!r}")
        app_file = getattr(run.config, "app_file", None)
        if not app_file:
            raise FaultError("deploy needs an app file (--app-file) with a 'next' command: the build to roll out")
        import tomllib

        try:
            nxt = tomllib.loads(Path(app_file).read_text()).get("next")
        except (OSError, tomllib.TOMLDecodeError):
            return  # the app file's own check reports it
        if not nxt:
            raise FaultError(f"deploy: {app_file} has no 'next' command (the build to roll out)")

    def _targets(self, ctx: FaultContext) -> list[int]:
        return list(range(len(ctx.nodes))) if self.target == "all" else [int(self.target)]

    def start(self, ctx: FaultContext) -> None:
        for i in self._targets(ctx):
            ctx.nodes.deploy(i, ctx.nodes.spec.next)

    def stop(self, ctx: FaultContext) -> None:
        pass  # a deploy is not rolled back when its window ends

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        nodes = self._targets(ctx)
        on_next = [i for i in nodes if ctx.nodes.nodes[i].command == ctx.nodes.spec.next and ctx.nodes.pid(i)]
        ok = len(on_next) == len(nodes)
        return ok, (f"{len(on_next)} of {len(nodes)} node(s) run the next build ({ctx.nodes.spec.next!r}) "
                    "and answered /health")


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]
