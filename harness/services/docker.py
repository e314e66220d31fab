"""The `docker` backend: the same services, each in its own container, through the docker SDK.

Each service keeps its local definition (command line, data directory preparation, health probe)
and only the *process* moves into a container: so a workload, its faults and its checkers run
unchanged, and `kill` / `pause` / `restart` become `docker kill` / `docker pause` / `docker restart`
(the cgroup freezer instead of SIGSTOP).

Images. On machines without an image registry (like our CI), the default image is a local stand-in
built by ``ensure_host_image``: an empty root filesystem imported with ``docker import``, into which
the host's ``/usr`` and ``/etc`` and the repo's ``.cache`` (Kafka jars, Toxiproxy) are bind-mounted
read-only, running with host networking on 127.0.0.1. ``--docker-image SERVICE=IMAGE`` overrides
the image per service; such an image must provide the same binaries at the same paths.

Every container carries the label ``cachecert.cluster=<cluster id>``; ``sweep`` removes what a
killed run left behind, by label, never by name.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

from harness import paths
from harness.services.base import ProcessService, ServiceError, log_tail, port_in_use

HOST_IMAGE = "cachecert/host:local"
LABEL = "cachecert.cluster"


def client() -> Any:
    """A docker client, or a one-line ServiceError that names the alternative."""
    try:
        import docker
    except ImportError:
        raise ServiceError("docker backend: the `docker` Python package is missing; "
                           "run `make bootstrap` or use --backend local") from None
    try:
        c = docker.from_env(timeout=30)
        c.ping()
        return c
    except Exception as e:  # noqa: BLE001 - any failure here means "no usable daemon"
        reason = str(e).splitlines()[0][:160]
        raise ServiceError(f"docker backend: Docker is not reachable ({reason}); "
                           "start the daemon or use --backend local") from None


def ensure_host_image(c: Any) -> str:
    """Import the stand-in image (an empty rootfs with mount points) if it is not there yet."""
    try:
        c.images.get(HOST_IMAGE)
        return HOST_IMAGE
    except Exception:  # noqa: BLE001 - not found: build it below
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("usr", "etc", "tmp", "proc", "sys", "dev", "root", "run", "var", "var/run", "work"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for link in ("bin", "lib", "lib64", "sbin"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
    repo, tag = HOST_IMAGE.split(":")
    c.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return HOST_IMAGE


class ContainerService:
    """A service whose process runs in a container; everything else comes from its local definition."""

    def __init__(self, inner: ProcessService, docker_client: Any, image: str, cluster_id: str,
                 mounts: list[Path]) -> None:
        self.inner = inner
        self.name = inner.name
        self.log_path = inner.log_path
        self.c = docker_client
        self.image = image
        self.cluster_id = cluster_id
        self.mounts = mounts
        self.container: Any = None

    def __getattr__(self, attr: str) -> Any:  # client(), port, dir, ... of the local definition
        return getattr(self.inner, attr)

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    def healthy(self) -> bool:
        return self.inner.healthy()

    def running(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - gone
            return False
        return self.container.status in ("running", "paused")

    def start(self, wait: bool = True) -> None:
        if self.running():
            raise ServiceError(f"{self.name}: already running (container {self.container.short_id})")
        if port_in_use(self.inner.port):
            raise ServiceError(f"{self.name}: port {self.inner.port} on 127.0.0.1 is already in use")
        if not self.inner.prepared:
            self.inner.prepare()
            self.inner.prepared = True
        cmd = self.inner.command()
        volumes = {str(m): {"bind": str(m), "mode": "ro" if m in (Path("/usr"), Path("/etc"), paths.CACHE) else "rw"}
                   for m in self.mounts}
        try:
            self.container = self.c.containers.run(
                self.image, command=["/bin/sh", "-c", f'exec "$@" >>{self.log_path} 2>&1', "sh", *cmd],
                detach=True, network_mode="host", user=_numeric_user(self.inner.run_as), volumes=volumes,
                working_dir=str(self.inner.dir), environment=self.inner.env() or {},
                labels={LABEL: self.cluster_id, "cachecert.service": self.name, "cachecert.state": str(paths.STATE),
                        "cachecert.owner": _owner()},
                name=f"cachecert-{self.cluster_id}-{self.name}-{int(time.time() * 1000) % 100000}",
            )
        except Exception as e:  # noqa: BLE001 - image missing, daemon error: one line
            msg = str(e).splitlines()[0][:200]
            hint = f"; image {self.image!r} missing? (`docker images`)" if "No such image" in msg else ""
            raise ServiceError(f"{self.name}: cannot start container: {msg}{hint}") from None
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float | None = None) -> None:
        timeout = self.inner.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = self.container.attrs.get("State", {}).get("ExitCode") if self.container else None
                raise ServiceError(f"{self.name}: container exited with code {code} during start; "
                                   f"log {self.log_path}:\n{log_tail(self.log_path)}")
            try:
                if self.inner.healthy():
                    return
            except Exception:  # noqa: BLE001 - not yet
                pass
            time.sleep(0.1)
        self.kill()
        raise ServiceError(f"{self.name}: not healthy after {timeout:.0f} s; log {self.log_path}:\n"
                           f"{log_tail(self.log_path)}")

    def _remove(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.container = None

    def stop(self) -> None:
        if self.container is None:
            return
        try:
            self.resume()
            self.container.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        self._remove()

    def kill(self) -> None:
        if self.container is None:
            return
        try:
            self.container.kill()
        except Exception:  # noqa: BLE001 - not running
            pass
        self._remove()

    def pause(self) -> None:
        if self.container is not None:
            self.container.pause()

    def resume(self) -> None:
        if self.container is None:
            return
        self.container.reload()
        if self.container.status == "paused":
            self.container.unpause()

    def restart(self, kill: bool = False) -> None:
        self.kill() if kill else self.stop()
        self.start()


def _numeric_user(name: str | None) -> str:
    """uid:gid on the host: Docker resolves user names in the image, which has no /etc/passwd."""
    import os
    import pwd

    if name is None:
        return f"{os.getuid()}:{os.getgid()}"
    pw = pwd.getpwnam(name)
    return f"{pw.pw_uid}:{pw.pw_gid}"


def sweep(cluster_id: str | None = None) -> int:
    """Remove containers labelled for ``cluster_id`` (or every cachecert container). Returns how many."""
    c = _client_or_none()
    if c is None:
        return 0
    label = f"{LABEL}={cluster_id}" if cluster_id else LABEL
    return _remove(c.containers.list(all=True, filters={"label": label}))


def _remove(containers: list[Any]) -> int:
    """Force-remove containers; how many went."""
    n = 0
    for ctr in containers:
        try:
            ctr.remove(force=True)
            n += 1
        except Exception:  # noqa: BLE001 - already gone
            pass
    return n


def _client_or_none() -> Any:
    try:
        import docker

        c = docker.from_env(timeout=10)
        c.ping()
        return c
    except Exception:  # noqa: BLE001 - no daemon: nothing to sweep
        return None


def running_containers(cluster_id: str) -> list[Any]:
    c = _client_or_none()
    return [] if c is None else c.containers.list(filters={"label": f"{LABEL}={cluster_id}"})


def sweep_orphans(known: set[str]) -> int:
    """Remove cachecert containers of this state dir that no cluster record covers (``known``) and
    whose owning process is gone: what a killed run left behind. Other state dirs' containers and
    live runs' containers are never touched."""
    c = _client_or_none()
    if c is None:
        return 0
    mine = c.containers.list(all=True, filters={"label": f"cachecert.state={paths.STATE}"})
    return _remove([ctr for ctr in mine if ctr.labels.get(LABEL) not in known
                    and not _owner_alive(ctr.labels.get("cachecert.owner", ""))])


def _owner() -> str:
    import os

    from harness.services.base import proc_start_time

    return f"{os.getpid()}:{proc_start_time(os.getpid())}"


def _owner_alive(owner: str) -> bool:
    from harness.services.base import alive, proc_start_time

    pid, _, start = owner.partition(":")
    return pid.isdigit() and alive(int(pid)) and str(proc_start_time(int(pid))) == start
