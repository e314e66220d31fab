"""The run store: one directory per run, everything needed to understand and re-run it.

``reports/<workload>/<strategy>/<timestamp>/`` holds ``config.json`` (the resolved configuration,
seed, fault schedule and the exact command), ``history.jsonl``, ``results.json``, ``harness.log`` and
``logs/<service>.log``; ``reports/<workload>/<strategy>/latest`` points at the newest run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from harness import paths


def new_run_dir(workload: str, strategy: str, root: Path | None = None) -> Path:
    base = (root or paths.reports_dir()) / _safe(workload) / _safe(strategy)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        d = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory under {base}")


def link_latest(run_dir: Path) -> None:
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name)
        tmp.replace(link)
    except OSError:
        pass


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def list_runs(root: Path | None = None) -> list[Path]:
    root = root or paths.reports_dir()
    return sorted((p.parent for p in root.glob("*/*/*/config.json") if not p.parent.is_symlink()),
                  key=lambda p: p.name)
