"""The reaper: no service outlives the run that started it, however that run dies.

Why: a run that is SIGKILLed (or OOM-killed, or loses its machine's patience) runs no ``finally``
block, so its Redis (possibly still SIGSTOPped by a pause fault), PostgreSQL, Kafka and Toxiproxy
would keep running, each in its own session, until someone typed `cachecert down`. Testcontainers
solves the same problem with a sidecar (Ryuk); this is ours.

How it fits: ``Cluster.up`` calls ``spawn`` just before the first service starts. That starts
``python -m harness.reaper`` in its own session (a terminal's Ctrl-C or a kill of the run's process
group does not reach it) with the read end of a pipe as its stdin; the run keeps the write end, its
*lifeline*, which no other process holds (close-on-exec, and every service is spawned with
``close_fds``). When the run dies, by any signal, the kernel closes the lifeline and the reaper
reads EOF at once. As a fallback (a forked child could hold a copy of the write end) it also polls
the owner's pid every second, guarded against pid reuse by the kernel start time.

On the owner's death the reaper, holding the state dir's cluster lock (the one ``Cluster.up``
claims a directory under), checks that the cluster record still names its owner (a new cluster of
the same name is someone else's), terminates every process group the cluster's pidfiles name
(``reap_pidfiles``: start-time checked, SIGCONT first so paused servers die too, SIGKILL after a
short grace), removes the cluster's containers by label for the docker backend, and deletes the
cluster directory. One line per reap goes to ``STATE/reaper.log``.

A normal teardown (``Cluster.down``) *releases* the reaper: one byte on the lifeline, after which
it exits without touching anything. A detached cluster (`cachecert up`) releases it as soon as its
services are up, so the cluster is kept until `cachecert down`; a `cachecert up` killed while
starting is still reaped. ``CACHECERT_REAPER=0`` disables the reaper (a killed run's services are
then left for inspection, and `cachecert down` reaps them).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.services.base import alive, kill_marked, proc_start_time, reap_pidfiles

ENV = "CACHECERT_REAPER"
RELEASE = b"R"  # the owner's "stand down": the cluster was torn down normally (or is detached)
POLL_S = 1.0  # fallback check of the owner's pid, should the lifeline be held by a forked child
GRACE_S = 2.0  # SIGTERM -> SIGKILL: enough for PostgreSQL to remove its shared memory, short enough
#                to keep the whole reap well inside the 10 s promise
RELEASE_WAIT_S = 5.0


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "no", "false")


# -- the owner's side ------------------------------------------------------------------------
@dataclass
class Handle:
    """What the owning process keeps: the reaper process and the write end of the lifeline."""

    proc: subprocess.Popen[bytes]
    lifeline: int | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        """Tell the reaper to exit without reaping, and wait for it (no process left behind).
        Safe to call twice."""
        if self.lifeline is not None:
            try:
                os.write(self.lifeline, RELEASE)
            except OSError:  # the reaper is already gone
                pass
            os.close(self.lifeline)
            self.lifeline = None
        try:
            self.proc.wait(RELEASE_WAIT_S)
        except subprocess.TimeoutExpired:  # wedged: it must not reap a cluster we stopped anyway
            self.proc.kill()
            self.proc.wait()


def spawn(cluster_dir: Path, cluster_id: str, backend: str) -> Handle | None:
    """Start the reaper of the cluster in ``cluster_dir``, owned by this process; None if disabled."""
    if not enabled():
        return None
    owner = os.getpid()
    cmd = [sys.executable, "-m", "harness.reaper", "--owner-pid", str(owner),
           "--owner-start", str(proc_start_time(owner)), "--cluster-dir", str(cluster_dir),
           "--cluster-id", cluster_id, "--backend", backend]
    read_end, lifeline = os.pipe()  # both close-on-exec: no other child inherits the lifeline
    try:
        with open(log_path(cluster_dir), "ab") as log:
            proc = subprocess.Popen(cmd, stdin=read_end, stdout=subprocess.DEVNULL, stderr=log,
                                    cwd="/", env=_env(), start_new_session=True)
    except BaseException:
        os.close(lifeline)
        raise
    finally:
        os.close(read_end)
    return Handle(proc, lifeline)


def _env() -> dict[str, str]:
    """The owner's environment, with this checkout importable from anywhere (cwd is /)."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def log_path(cluster_dir: Path) -> Path:
    """``STATE/reaper.log`` (cluster dirs are ``STATE/clusters/<id>``): it outlives the clusters."""
    return cluster_dir.parents[1] / "reaper.log"


# -- the reaper's side -----------------------------------------------------------------------
def owner_alive(pid: int, start: int | None) -> bool:
    return alive(pid) and proc_start_time(pid) == start


def watch(lifeline: int, pid: int, start: int | None, poll: float = POLL_S) -> str | None:
    """Block until the owner releases us (None) or dies (the reason, in words)."""
    while True:
        ready, _, _ = select.select([lifeline], [], [], poll)
        if ready:
            data = os.read(lifeline, 64)
            if not data:
                return "lifeline closed"
            if RELEASE in data:
                return None
        if not owner_alive(pid, start):
            return "owner gone"


@contextmanager
def clusters_lock(cluster_dir: Path) -> Iterator[bool]:
    """The lock ``Cluster.up`` claims directories under; yields False if there is no state left."""
    try:
        fd = os.open(cluster_dir.parent, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def still_ours(cluster_dir: Path, pid: int, start: int | None) -> bool:
    try:
        rec: dict[str, Any] = json.loads((cluster_dir / "cluster.json").read_text())
    except (OSError, ValueError):
        return False
    return rec.get("owner_pid") == pid and rec.get("owner_start") == start


def reap(cluster_dir: Path, cluster_id: str, backend: str, pid: int, start: int | None) -> str:
    """Kill what the dead owner's cluster left and remove its state; a summary in words."""
    with clusters_lock(cluster_dir) as locked:
        if not locked or not still_ours(cluster_dir, pid, start):
            return "nothing to do (cluster gone or claimed by another owner)"
        pids = cluster_dir / "pids"
        groups = reap_pidfiles(sorted(pids.glob("*.json")) if pids.exists() else [], GRACE_S)
        groups += kill_marked(cluster_dir)  # spawned, but killed before its pidfile was written
        containers = 0
        if backend == "docker":
            from harness.services.docker import sweep

            containers = sweep(cluster_id)
        namespace = ""
        if backend == "external":  # the dead run's keys and schema on the user's servers
            from harness.services.external import reap_namespace

            namespace = reap_namespace(cluster_dir)
        shutil.rmtree(cluster_dir, ignore_errors=True)
    return f"killed {groups} process group(s), removed {containers} container(s) and {cluster_dir}{namespace}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.reaper", description=__doc__.splitlines()[0])
    p.add_argument("--owner-pid", type=int, required=True)
    p.add_argument("--owner-start", type=lambda s: None if s == "None" else int(s), required=True)
    p.add_argument("--cluster-dir", type=Path, required=True)
    p.add_argument("--cluster-id", required=True)
    p.add_argument("--backend", default="local")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    why = watch(sys.stdin.fileno(), a.owner_pid, a.owner_start)
    if why is None:
        return 0
    t0 = time.monotonic()
    done = reap(a.cluster_dir, a.cluster_id, a.backend, a.owner_pid, a.owner_start)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {a.cluster_id}: owner {a.owner_pid} died ({why}); {done} in "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
