"""Process plumbing shared by the local backend: process groups, pidfiles, health waits.

Every service process is started in its own session (hence its own process group) so that kill,
pause and resume act on the whole tree (PostgreSQL forks a backend per connection), and so that a
Ctrl-C in the terminal reaches the harness, which then heals and tears down in order, instead of
reaching the servers directly. Each process is recorded in a pidfile (pid, pgid and the kernel's
start time) in the cluster directory: the cluster's reaper (harness/reaper.py) and `cachecert down`
reap by pidfile after a killed run, and the start time guards against killing an unrelated process
that reused the pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A service failed to start, stay up or stop; the message names it and shows its log tail."""


_ISSUED: set[int] = set()  # ports handed out by this process: bind(0) may hand the same one out again once
_ISSUED_LOCK = threading.Lock()  # it is released, and a proxy or an app node may not have bound it yet


def free_port() -> int:
    """A free 127.0.0.1 port this process has not handed out before (200 app nodes and their 400
    proxies ask for ports in parallel; without this, two of them were once given the same one)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _ISSUED_LOCK:
            if port not in _ISSUED:
                _ISSUED.add(port)
                return port
    return port


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def tcp_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join("    " + t for t in tail) or "(empty log)"


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # field 22, counted after the parenthesised command name (which may contain spaces)
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class PidRecord:
    name: str
    pid: int
    pgid: int
    start_time: int | None
    cmd: list[str] = field(default_factory=list)

    def matches(self) -> bool:
        """True while the recorded process still runs (same pid *and* same start time)."""
        return alive(self.pid) and proc_start_time(self.pid) == self.start_time


def write_pidfile(path: Path, rec: PidRecord) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec.__dict__))
    tmp.replace(path)


def read_pidfile(path: Path) -> PidRecord | None:
    try:
        return PidRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def reap_pidfile(path: Path, grace: float = 3.0) -> bool:
    """Terminate the process group a pidfile names (if it is still that process). True if one was."""
    return reap_pidfiles([path], grace) == 1


# every server we start carries its cluster's directory in its environment, so a server whose
# pidfile was never written (its starter killed between spawn and write) can still be found
CLUSTER_MARK = "CACHECERT_CLUSTER"


def marked_groups(cluster_dir: Path) -> list[int]:
    """Process groups of live processes whose environment names ``cluster_dir`` (see CLUSTER_MARK)."""
    mark = f"{CLUSTER_MARK}={cluster_dir}".encode() + b"\0"
    groups: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if mark in (proc / "environ").read_bytes() + b"\0":
                groups.add(os.getpgid(int(proc.name)))
        except (OSError, ProcessLookupError):
            continue
    return sorted(groups)


def kill_marked(cluster_dir: Path) -> int:
    """SIGKILL (after SIGCONT) every process group still marked as ``cluster_dir``'s; how many."""
    groups = marked_groups(cluster_dir)
    for g in groups:
        kill_group(g, signal.SIGCONT)
        kill_group(g, signal.SIGKILL)
    return len(groups)


def reap_pidfiles(paths: list[Path], grace: float = 3.0) -> int:
    """Terminate the process groups these pidfiles name, all at once, and remove the pidfiles.

    Only a group whose recorded leader still runs (same pid *and* start time) is signalled: SIGCONT
    (a paused group cannot act on SIGTERM), SIGTERM, up to ``grace`` seconds for the leaders to
    exit, then SIGKILL for the whole group (what did not exit, and stragglers such as PostgreSQL
    backends). Returns how many were running. The deadline is shared, so reaping a whole cluster
    takes at most about ``2 * grace`` seconds, however many services it has.
    """
    recs = [r for r in map(read_pidfile, paths) if r is not None and r.matches()]
    for rec in recs:
        kill_group(rec.pgid, signal.SIGCONT)
        kill_group(rec.pgid, signal.SIGTERM)
    if not wait_until(lambda: not any(alive(r.pid) for r in recs), grace):
        for rec in recs:
            kill_group(rec.pgid, signal.SIGKILL)
        wait_until(lambda: not any(alive(r.pid) for r in recs), grace)
    for rec in recs:  # stragglers of the group after the leader is gone
        kill_group(rec.pgid, signal.SIGKILL)
    for path in paths:
        path.unlink(missing_ok=True)
    return len(recs)


class ProcessService:
    """A server run as a local child process in its own process group.

    Subclasses set ``name``, implement ``command()`` and ``healthy()``, and may override
    ``prepare()`` (one-time data directory set-up) and ``run_as`` (a user name).
    """

    name = "service"
    run_as: str | None = None
    start_timeout = 20.0
    stop_timeout = 10.0
    stop_signal = signal.SIGTERM  # the server's "shut down cleanly and promptly" signal

    def __init__(self, cluster_dir: Path, port: int) -> None:
        self.dir = cluster_dir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log_path = self.dir / f"{self.name}.log"
        self.pidfile = cluster_dir / "pids" / f"{self.name}.json"
        self.cluster_dir = cluster_dir
        self.pidfile.parent.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.prepared = False
        # set by the cluster when a start is abandoned (another service failed, Ctrl-C): a start in
        # progress stops waiting, kills what it spawned, and one not yet begun spawns nothing
        self.cancel: threading.Event | None = None

    # -- to implement ------------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create data directories etc. Runs once, before the first start."""

    def env(self) -> dict[str, str] | None:
        return None

    # -- the service interface ---------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        if self.running():
            raise ServiceError(f"{self.name}: already running (pid {self.proc.pid})")  # type: ignore[union-attr]
        if port_in_use(self.port):
            raise ServiceError(f"{self.name}: port {self.port} on 127.0.0.1 is already in use")
        if not self.prepared:
            self.prepare()
            self.prepared = True
        cmd = self.command()
        self._check_cancel()
        log = open(self.log_path, "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.dir, env={**(self.env() or os.environ), CLUSTER_MARK: str(self.cluster_dir)},
                start_new_session=True, user=self.run_as,
            )
        except OSError as e:
            raise ServiceError(f"{self.name}: cannot start {cmd[0]}: {e.strerror}") from None
        finally:
            log.close()
        write_pidfile(self.pidfile, PidRecord(self.name, self.proc.pid, self.proc.pid,
                                              proc_start_time(self.proc.pid), cmd))
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float | None = None) -> None:
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                self._reap_group()
                raise ServiceError(
                    f"{self.name}: exited with code {code} during start; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            self._check_cancel()
            try:
                if self.healthy():
                    return
            except Exception:  # noqa: BLE001 - any failure of a probe means "not yet"
                pass
            time.sleep(0.05)
        self.kill()
        raise ServiceError(
            f"{self.name}: not healthy after {timeout:g} s; log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            self.kill()
            raise ServiceError(f"{self.name}: start cancelled")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid, sig)

    def stop(self) -> None:
        """Graceful stop (``stop_signal``, then SIGKILL after ``stop_timeout``)."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(self.stop_signal)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._sigkill_and_wait()
        self._reap_group()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no chance to flush anything."""
        if self.proc is None:
            return
        self._sigkill_and_wait()
        self._reap_group()

    def _sigkill_and_wait(self) -> None:
        assert self.proc is not None
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _reap_group(self) -> None:
        assert self.proc is not None
        kill_group(self.proc.pid, signal.SIGKILL)  # stragglers (forked children)
        self.pidfile.unlink(missing_ok=True)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP the group: the process holds its sockets but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, kill: bool = False) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "endpoint": self.endpoint, "log": str(self.log_path),
                "pid": self.proc.pid if self.proc else None}
