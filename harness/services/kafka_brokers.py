"""Topology family: not built yet (see harness/topology.py)."""

from __future__ import annotations

from typing import Any

from harness.topology import Topology, TopologyError


def expand(cluster: Any, topology: Topology) -> None:
    raise TopologyError(f"topology {topology.text()} is not available yet on the embedded backend")
