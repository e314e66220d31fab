"""A tiny builder for hand-written histories in tests: ``H().op(p, "write", "k", 1, 0, 10, version=1)``."""

from __future__ import annotations

from typing import Any


class H:
    def __init__(self) -> None:
        self.events: list[tuple[int, int, dict[str, Any]]] = []

    def op(self, process: Any, f: str, key: str | None, value: Any, t0_ms: float, t1_ms: float | None,
           type: str = "ok", **extra: Any) -> H:
        """One op from t0 to t1 (ms); t1 None = never completed. ``extra`` goes on the completion
        (``inv_*`` keys go on the invoke)."""
        inv_extra = {k[4:]: v for k, v in extra.items() if k.startswith("inv_")}
        comp_extra = {k: v for k, v in extra.items() if not k.startswith("inv_")}
        inv = {"process": process, "type": "invoke", "f": f, "key": key,
               "value": None if f == "read" else value, **inv_extra}
        if "phase" in comp_extra:
            inv["phase"] = comp_extra["phase"]
        self.events.append((int(t0_ms * 1e6), 0, inv))
        if t1_ms is not None:
            comp = {"process": process, "type": type, "f": f, "key": key, "value": value, **comp_extra}
            self.events.append((int(t1_ms * 1e6), 1, comp))
        return self

    def nemesis(self, f: str, t_ms: float, name: str = "latency(redis)", value: Any = None) -> H:
        """A nemesis record; ``value`` replaces the default {fault, name} (a phase name, a target...)."""
        v = {"fault": name.split("(")[0], "name": name} if value is None else value
        self.events.append((int(t_ms * 1e6), 2, {"process": "nemesis", "type": "info", "f": f, "value": v}))
        return self

    def build(self) -> list[dict[str, Any]]:
        out = []
        for i, (t, _, rec) in enumerate(sorted(self.events, key=lambda e: (e[0], e[1]))):
            out.append(dict(rec, time_ns=t, index=i))
        return out
