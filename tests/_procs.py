"""Finding a test's own processes without going by process name.

Other tests (and other people's clusters) run Redis, PostgreSQL, Kafka and Toxiproxy on this
machine at the same time, so "is any redis-server left?" proves nothing. Two exact checks instead:

- by pidfile: the pid *and* kernel start time a cluster recorded, plus any process still in that
  process group (PostgreSQL's forked backends);
- by tag: a unique ``CACHECERT_TEST_TAG`` in the environment of the process that starts the
  cluster is inherited by every server it spawns (even across ``user=postgres``), so scanning
  ``/proc/*/environ`` for it finds every process the test started, orphans included.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from harness.services.base import PidRecord, read_pidfile

TAG_VAR = "CACHECERT_TEST_TAG"


def new_tag() -> str:
    return uuid.uuid4().hex


def tagged(tag: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live, non-zombie process whose environment carries the tag."""
    needle = f"{TAG_VAR}={tag}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if needle not in env:
                continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        out.append((int(entry), cmd))
    return out


def group_members(pgid: int) -> list[int]:
    """Live, non-zombie pids whose process group is ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def pid_records(cluster_dir: Path) -> list[PidRecord]:
    recs = [read_pidfile(p) for p in sorted((cluster_dir / "pids").glob("*.json"))]
    return [r for r in recs if r is not None]


def leftovers(records: list[PidRecord], tag: str | None = None) -> list[str]:
    """Descriptions of anything still running: recorded processes, their groups, tagged processes."""
    left = [f"{r.name} pid {r.pid}" for r in records if r.matches()]
    left += [f"{r.name} group {r.pgid} member {p}" for r in records for p in group_members(r.pgid)]
    if tag:
        left += [f"tagged pid {p}: {cmd[:120]}" for p, cmd in tagged(tag)]
    return left


def wait_gone(records: list[PidRecord], tag: str | None = None, timeout: float = 10.0) -> list[str]:
    """Wait (bounded) for everything to be gone; return what is still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(records, tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def make_state() -> Path:
    """A private state dir for one test (CACHECERT_STATE_DIR): never the user's clusters, never
    another test's. Under /tmp and mode 755, because PostgreSQL runs as the `postgres` user and
    must traverse to its data directory (pytest's tmp_path is under a mode-700 directory)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="cachecert-test-", dir="/tmp"))
    d.chmod(0o755)
    return d
