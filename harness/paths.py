"""Where things live: the repo's caches (installed binaries and jars), the cluster state dir and
the reports.

Kept in one place so the bootstrap script, the local backend and `cachecert down` agree.
The state dir is under /tmp by default because PostgreSQL runs as the `postgres` user, which must
be able to traverse to its data directory (a root home directory is usually mode 700).
Reports belong to the user, not to cachecert: they go to ``$CACHECERT_REPORTS`` or ``./reports`` of
the working directory, looked up when a run starts (never the cachecert checkout, nor site-packages
for an installed package).
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CACHECERT_CACHE", REPO / ".cache"))
STATE = Path(os.environ.get("CACHECERT_STATE_DIR", f"/tmp/cachecert-{os.getuid()}"))


def reports_dir() -> Path:
    """Where runs are stored: ``$CACHECERT_REPORTS`` if set, else ``./reports`` of the working
    directory; absolute, read at call time (a process may chdir, a test may set the variable)."""
    env = os.environ.get("CACHECERT_REPORTS")
    return Path(env).absolute() if env else Path.cwd() / "reports"


def __getattr__(name: str) -> Path:
    """``paths.REPORTS`` stays readable by older callers; it is ``reports_dir()`` at the time of use."""
    if name == "REPORTS":
        return reports_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MissingBinary(RuntimeError):
    """A required program is not installed; the message says how to install it."""


def binary_env(name: str) -> str:
    """The environment variable that overrides where ``name`` is, e.g. CACHECERT_REDIS_SERVER."""
    return "CACHECERT_" + name.upper().replace("-", "_")


def find_binary(name: str, *candidates: str) -> str:
    """``$CACHECERT_<NAME>`` if set, else the first existing path among ``candidates`` (globs
    allowed) or on PATH, else MissingBinary. The override lets a user point at a binary outside the
    usual places (and lets tests simulate a missing one)."""
    override = os.environ.get(binary_env(name))
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise MissingBinary(f"{name} not found at {override} (from ${binary_env(name)})")
    for c in candidates:
        for hit in sorted(glob.glob(c), reverse=True):
            if os.access(hit, os.X_OK):
                return hit
    found = shutil.which(name)
    if found:
        return found
    raise MissingBinary(f"{name} not found; run `make bootstrap` (scripts/bootstrap.sh) to install it")


def redis_server() -> str:
    return find_binary("redis-server", "/usr/bin/redis-server")


def pg_bin(tool: str) -> str:
    return find_binary(tool, f"/usr/lib/postgresql/*/bin/{tool}")


def toxiproxy_server() -> str:
    return find_binary("toxiproxy-server", str(CACHE / "bin" / "toxiproxy-server"))


def kafka_libs() -> Path:
    libs = CACHE / "kafka" / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise MissingBinary(f"Kafka jars not found in {libs}; run `make bootstrap` (scripts/bootstrap.sh)")
    return libs


def java() -> str:
    return find_binary("java", "/usr/lib/jvm/java-17-openjdk-*/bin/java")
