"""The nemesis: plays a fault schedule against the cluster and always heals.

It runs in its own thread next to the workers. Every fault start and stop is written to the
history as a ``nemesis`` op (``type: info``, ``f: start|stop``, value = the fault's description),
and each start is followed by a ``probe`` op that says whether the fault was observed to take
effect. ``heal`` stops every active fault, then resets Toxiproxy, resumes paused services and
restarts killed ones and crashed nodes: it runs at the end of the load phase, on any exception and
on Ctrl-C, and is idempotent.

Probes run in their own threads, so one that must wait (a 5 s latency) never delays the schedule.
Each gets its fault's window, ended just before the fault is stopped, so it stops waiting then.
``heal`` waits (bounded) for the probes still running, so every result lands in the history before
it is judged; every scheduled fault ends up with exactly one probe record — one that could not
start, whose probe did not finish, or that never started because the load phase ended first is
recorded as not verified, never left out.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from core.history import HistoryWriter
from harness.faults import FaultContext, Scheduled
from harness.faults.base import FaultWindow
from harness.services.redis_ha import PrimaryWatch

log = logging.getLogger("cachecert.nemesis")
PROBE_GRACE = 10.0  # s heal waits for probes still running once every fault has ended


class Nemesis:
    def __init__(self, schedule: list[Scheduled], ctx: FaultContext, history: HistoryWriter) -> None:
        self.schedule = sorted(schedule, key=lambda s: s.at)
        self.ctx = ctx
        self.history = history
        self.active: list[Scheduled] = []
        self.probes: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        self._begun: set[int] = set()  # id() of the scheduled items whose start was attempted
        self._settled: set[int] = set()  # ... that have their probe record
        self._windows: dict[int, FaultWindow] = {}
        self._probing: dict[int, tuple[Scheduled, threading.Thread]] = {}
        self._watch: PrimaryWatch | None = None  # redis=sentinel: a "primary" record per change of primary

    def _record(self, f: str, s: Scheduled, **extra: Any) -> None:
        self.history.append({"process": "nemesis", "type": "info", "f": f,
                             "value": s.fault.describe() | extra})  # type: ignore[attr-defined]

    # -- playing the schedule ---------------------------------------------------------------
    def start(self, t0: float) -> None:
        """Play the schedule relative to monotonic time ``t0`` (the start of the load phase)."""
        self._thread = threading.Thread(target=self._play, args=(t0,), name="nemesis", daemon=True)
        self._thread.start()
        self._watch = PrimaryWatch.start_for(self.ctx.cluster, lambda v: self.history.append(
            {"process": "nemesis", "type": "info", "f": "primary", "value": v}))

    def _play(self, t0: float) -> None:
        events: list[tuple[float, int, str, Scheduled]] = []
        for i, s in enumerate(self.schedule):
            events.append((s.at, i, "start", s))
            events.append((s.end, i, "stop", s))
        events.sort(key=lambda e: (e[0], e[2] == "start", e[1]))  # stops before starts at equal times
        for at, _, what, s in events:
            if self._stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            try:
                self.begin(s) if what == "start" else self.end(s)
            except Exception as e:  # noqa: BLE001 - a fault that fails must not kill the nemesis
                msg = f"{what} {s.fault.name} failed: {type(e).__name__}: {e}"
                log.error(msg)
                self.errors.append(msg)
                if what == "start":
                    self._settle(s, False, f"the fault did not start: {type(e).__name__}: {e}")

    def begin(self, s: Scheduled) -> None:
        with self._lock:
            self._begun.add(id(s))
            s.fault.start(self.ctx)
            self.active.append(s)
            self._record("start", s)
            window = self._windows[id(s)] = FaultWindow()
            t = threading.Thread(target=self._probe, args=(s, window), name="probe", daemon=True)
            self._probing[id(s)] = (s, t)
        t.start()

    def _probe(self, s: Scheduled, window: FaultWindow) -> None:
        try:
            ok, observed = s.fault.probe(dataclasses.replace(self.ctx, window=window))
        except Exception as e:  # noqa: BLE001
            ok, observed = False, f"probe failed: {type(e).__name__}: {e}"
        self._settle(s, ok, observed)

    def _settle(self, s: Scheduled, ok: bool, observed: str) -> None:
        """The one probe record of ``s`` (a late second one, after heal gave up waiting, is dropped)."""
        with self._lock:
            if id(s) in self._settled:
                return
            self._settled.add(id(s))
            still_on = s in self.active
            self.probes.append({"fault": s.fault.name, "at": round(s.at, 3), "verified": ok, "observed": observed})
            self._record("probe", s, verified=ok, observed=observed, during_fault=still_on)
        (log.info if ok else log.warning)("probe %s: %s (%s)", s.fault.name,
                                          "took effect" if ok else "NOT verified", observed)

    def end(self, s: Scheduled) -> None:
        with self._lock:
            if s not in self.active:
                return
            window = self._windows.get(id(s))
            if window is not None:
                window.end()  # before the stop: the probe knows that what follows is the fault's end
            try:
                s.fault.stop(self.ctx)
            finally:
                self.active.remove(s)
                self._record("stop", s)

    # -- healing ----------------------------------------------------------------------------
    def heal(self) -> None:
        """Stop the schedule and undo everything. Safe to call more than once, from any path."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        for s in reversed(list(self.active)):
            try:
                self.end(s)
            except Exception as e:  # noqa: BLE001 - keep healing the rest
                self.errors.append(f"heal {s.fault.name}: {e}")
        heal_cluster(self.ctx)
        self._await_probes(PROBE_GRACE)
        for s in self.schedule:
            if id(s) not in self._begun:
                self._settle(s, False, "never started: the load phase ended first")
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _await_probes(self, grace: float) -> None:
        """Every fault has ended, so every probe is finishing: wait for them, bounded."""
        deadline = time.monotonic() + grace
        with self._lock:
            probing = list(self._probing.values())
        for s, t in probing:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self._settle(s, False, f"the probe did not finish within {grace:g} s after the heal")


def heal_cluster(ctx: FaultContext) -> None:
    """Belt and braces after the per-fault stops: no toxic, every proxy on, every service up."""
    cluster = ctx.cluster
    try:
        cluster.toxiproxy.reset()
    except Exception as e:  # noqa: BLE001
        log.error("toxiproxy reset failed: %s", e)
    for svc in cluster.svc.values():
        try:
            svc.resume()
            if not svc.running():
                svc.start()
        except Exception as e:  # noqa: BLE001
            log.error("could not bring %s back: %s", svc.name, e)
    if ctx.nodes is not None:
        ctx.nodes.restart_all()
