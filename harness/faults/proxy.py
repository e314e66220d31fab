"""Network faults on a service's proxy: Toxiproxy toxics, a downed proxy, a black-hole partition.

``down`` disables the proxy: connections are refused or closed at once, like a crashed peer.
``partition`` adds a ``timeout 0`` toxic on both directions: bytes vanish and calls hang until the
client's own timeout, like a real network partition. ``timeout`` on one direction (``stream``) is
the ambiguous-commit maker: with ``stream=downstream`` the DB receives and commits the statement,
but the acknowledgement never comes back.

Probes judge what a client of the proxy sees (probe.py): a latency is verified when round trips
through the proxy are slower than through a toxic-free proxy to the same server by at least what
the toxic promises (``ms - jitter``, or half the mean delay when jitter makes the lower bound ~0),
or when a request was held until the fault ended (a latency longer than the fault's window); a
black hole when nothing answers; ``down`` when connections are refused. Toxics whose effect one
small request cannot show (bandwidth, slicer, ...) are verified by Toxiproxy listing them on the
proxy, and say so.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.faults import _alias as alias
from harness.faults.base import BaseFault, FaultContext, FaultError, Kind, Param, RunContext
from harness.faults.probe import HOLD_MIN_MS, expect_silence, held_ms, probe_silence, roundtrip, sample_pairs
from harness.services.base import free_port
from harness.toxiproxy import TOXIC_TYPES, ToxiproxyError

# attribute names Toxiproxy expects, per toxic, with the friendlier param names we accept
TOXIC_ATTRS: dict[str, dict[str, str]] = {
    "latency": {"ms": "latency", "jitter": "jitter"},
    "bandwidth": {"kbps": "rate"},
    "slow_close": {"ms": "delay"},
    "timeout": {"ms": "timeout"},
    "reset_peer": {"ms": "timeout"},
    "slicer": {"size": "average_size", "variation": "size_variation", "delay_us": "delay"},
    "limit_data": {"bytes": "bytes"},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "latency": {"ms": 200}, "bandwidth": {"kbps": 10}, "slow_close": {"ms": 1000}, "timeout": {"ms": 0},
    "reset_peer": {"ms": 0}, "slicer": {"size": 16, "delay_us": 1000}, "limit_data": {"bytes": 64},
}

# what each toxic does and its colour in reports
TOXIC_TEXT: dict[str, tuple[str, str]] = {
    "latency": ("adds latency to every byte through the service's proxy", "#f2b134"),
    "bandwidth": ("limits the proxy's bandwidth", "#e8a0bf"),
    "slow_close": ("delays closing connections", "#c9a0e8"),
    "timeout": ("stops all data and closes the connection after ms (0: never; ambiguous commits with "
                "stream=downstream)", "#e86f5b"),
    "reset_peer": ("resets connections (TCP RST) after ms", "#d35400"),
    "slicer": ("slices data into small packets with delays between them", "#b0c4de"),
    "limit_data": ("closes the connection after bytes have passed", "#a3d9a5"),
}
STREAM = Param("downstream", choices=("downstream", "upstream", "both"), omit_default=True)

FLOOR_MIN_MS = 20  # lowest delay (ms) from which "no round trip faster than it" alone confirms the toxic
# lowest delay (ms) one answer alone confirms when it took at least that long: a loopback round trip to a
# running server is not that slow by chance (used only when the toxic-free partner could not be sampled)
ONE_ANSWER_MIN_MS = 200


NODE_LINK = re.compile(r"^(?P<svc>[a-z]+)\.node(?P<i>\d+)$")


@dataclass
class ProxyFault(BaseFault):
    """What the proxy faults share: a fault on a service reaches every link to it that the run's
    clients use — the shared proxy and, with app nodes, each node's own (``redis.node1``); a fault on
    one node's link (``node1/redis``, stored as ``redis.node1``) only that one. The probe looks where
    the clients are: at node 0's link when the run has app nodes."""

    targets: ClassVar[str] = "proxy"

    def validate(self, run: RunContext) -> None:
        m = NODE_LINK.match(self.target)
        if m is None:
            return
        app = getattr(run.config, "app", None) or getattr(run.config, "app_file", None)
        if not app:
            raise FaultError(f"{self.kind}:{self.target} is one app node's link: it needs --app/--app-file")
        if int(m["i"]) >= (run.config.nodes or 1):
            raise FaultError(f"{self.kind}:{self.target}: the run has {run.config.nodes} app node(s) "
                             f"(node0..node{(run.config.nodes or 1) - 1})")

    def links(self, ctx: FaultContext) -> list[str]:
        target = alias.resolve(self, ctx, "proxy")  # redis-primary: the primary's cluster side (_alias.py)
        if "." in target:
            return [target]
        return [target] + sorted(p for p in ctx.cluster.proxies if NODE_LINK.match(p) and
                                 p.startswith(f"{target}.") and _is_app_link(ctx, p))

    def probe_target(self, ctx: FaultContext) -> str:
        links = self.links(ctx)
        return links[1] if len(links) > 1 else links[0]

    def describe(self) -> dict[str, Any]:
        return super().describe() | alias.note(self)


def _is_app_link(ctx: FaultContext, proxy: str) -> bool:
    """A node link of this run's app nodes (a shared cluster keeps the links of earlier runs)."""
    m = NODE_LINK.match(proxy)
    n = len(ctx.nodes) if ctx.nodes is not None and hasattr(ctx.nodes, "spec") else 0
    return m is not None and int(m["i"]) < n


@dataclass
class ToxicFault(ProxyFault):
    """Any Toxiproxy toxic on one proxy. ``stream``: downstream, upstream or both."""

    kinds: ClassVar[dict[str, Kind]] = {
        t: Kind(TOXIC_TEXT[t][0], TOXIC_TEXT[t][1],
                {**{p: Param(DEFAULTS.get(t, {}).get(p)) for p in TOXIC_ATTRS[t]}, "stream": STREAM},
                example="postgres" if t == "timeout" else "redis")
        for t in TOXIC_TYPES}

    def _streams(self) -> list[str]:
        s = self.params["stream"]
        return ["downstream", "upstream"] if s == "both" else [s]

    def start(self, ctx: FaultContext) -> None:
        attrs = {TOXIC_ATTRS[self.kind][k]: v for k, v in self.params.items() if k != "stream"}
        for link in self.links(ctx):
            for stream in self._streams():
                ctx.cluster.toxiproxy.add_toxic(link, self.kind, name=f"cc_{self.kind}_{stream}",
                                                stream=stream, **attrs)

    def stop(self, ctx: FaultContext) -> None:
        for link in self.links(ctx):
            for stream in self._streams():
                try:
                    ctx.cluster.toxiproxy.remove_toxic(link, f"cc_{self.kind}_{stream}")
                except Exception:  # noqa: BLE001 - already gone (a reset healed it)
                    pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        t = self.probe_target(ctx)
        port = ctx.cluster.proxies[t]
        if self.kind == "latency":
            return self._probe_latency(ctx, t, port)
        if self.kind in ("timeout", "reset_peer"):
            return self._probe_cut(ctx, t, port)
        return self._probe_installed(ctx, t, port)

    # -- latency ------------------------------------------------------------------------------
    def expected_ms(self) -> tuple[float, float, float]:
        """(lowest, highest, mean) delay a round trip gets, over every faulted stream.

        Toxiproxy delays each chunk by ``ms + randint(-jitter, jitter - 1)`` whole ms, and a
        negative delay is none."""
        ms, jitter = int(self.params["ms"]), int(self.params.get("jitter", 0))
        delays = [max(0, d) for d in range(ms - jitter, ms + jitter)] if jitter > 0 else [ms]
        k = len(self._streams())
        return k * min(delays), k * max(delays), k * statistics.fmean(delays)

    def _probe_latency(self, ctx: FaultContext, target: str, port: int) -> tuple[bool, str]:
        lo, hi, mean = self.expected_ms()
        expected = f"+{lo:g} ms" if lo == hi else f"+{lo:g}..{hi:g} ms, {mean:.1f} on average"
        if mean <= 0:
            return False, "a 0 ms latency toxic delays nothing: nothing to observe"
        need = max(lo - max(1.0, 0.05 * lo), mean / 2)  # timers never fire early; jitter pulls lo to ~0
        with baseline_proxy(ctx, target) as (base_port, base_what):
            s = sample_pairs(target, port, base_port, ctx.window, timeout=hi / 1000 * 1.5 + 2)
        if s.faulted:
            added = s.added_ms
            n = len(s.faulted)
            what = (f"a round trip took {s.faulted[0]:.1f} ms through the proxy vs {s.baseline[0]:.1f} ms through "
                    f"{base_what}" if n == 1 else
                    f"median round trip {statistics.median(s.faulted):.1f} ms through the proxy vs "
                    f"{statistics.median(s.baseline):.1f} ms through {base_what} ({n} each)")
            if added >= need:
                return True, f"{what}: {added:+.1f} ms (expected {expected}, verified at >= +{need:.1f} ms)"
            # a loaded machine can inflate the baseline's median; but a delay timer never fires early, so
            # with the toxic on, no round trip is faster than its lowest delay (sound from ~20 ms up, where
            # a loopback round trip without the toxic is not that slow every time)
            floor = min(s.faulted)
            if lo >= FLOOR_MIN_MS and n >= 3 and floor >= lo - 1:
                return True, (f"{what}: {added:+.1f} ms, but every round trip through the proxy took >= "
                              f"{floor:.1f} ms (expected {expected}; no round trip is faster with the toxic on)")
            return False, f"{what}: {added:+.1f} ms (expected {expected}, verified at >= +{need:.1f} ms)"
        assert s.stopped is not None
        if s.unpaired and lo >= ONE_ANSWER_MIN_MS and min(s.unpaired) >= lo - 1:
            return True, (f"a round trip took {s.unpaired[0]:.0f} ms through the proxy (expected {expected}); the "
                          f"toxic-free one after it could not be sampled ({s.stopped}), but an answer from a "
                          f"running server is not held >= {lo:g} ms by chance")
        held = held_ms(s.stopped, ctx.window)
        if held is None:
            return False, f"{s.stopped} (expected an answer delayed {expected})"
        if held < HOLD_MIN_MS:
            return False, (f"the fault ended {held:.0f} ms into the probe, too soon to observe its latency "
                           f"(expected {expected})")
        cut = " (the fault ended before its latency had passed)" if held < lo else ""
        return True, f"no answer in {held:.0f} ms, until the fault ended{cut} (expected {expected})"

    # -- black holes and resets ---------------------------------------------------------------
    def _probe_cut(self, ctx: FaultContext, target: str, port: int) -> tuple[bool, str]:
        wait_ms = self.params["ms"]
        if self.kind == "timeout" and wait_ms == 0:
            return probe_silence(target, port, ctx.window)
        p = roundtrip(target, port, timeout=wait_ms / 1000 + 1, window=ctx.window)
        expect = ("reset", "closed") if self.kind == "reset_peer" else ("closed", "reset", "timeout")
        if p.outcome in expect:
            return True, f"{p} (expected {' or '.join(expect)} after {wait_ms:g} ms)"
        silent, text = expect_silence(p, ctx.window)  # the toxic swallowed the request until it was removed
        return silent, text if silent else f"{p} (expected {' or '.join(expect)} after {wait_ms:g} ms)"

    # -- toxics one small request cannot show -------------------------------------------------
    def _probe_installed(self, ctx: FaultContext, target: str, port: int) -> tuple[bool, str]:
        names = {f"cc_{self.kind}_{stream}" for stream in self._streams()}
        try:
            listed = {t.get("name") for t in ctx.cluster.toxiproxy.toxics(target)}
        except ToxiproxyError as e:
            return False, f"could not list the proxy's toxics: {e}"
        p = roundtrip(target, port, timeout=2.0, window=ctx.window)
        missing = sorted(names - listed)
        if missing:
            return False, f"Toxiproxy does not list {', '.join(missing)} on {target}; a request: {p}"
        return True, (f"Toxiproxy lists the {self.kind} toxic on {target} (one small request cannot show "
                      f"its effect: {p})")


_PROBE_PROXIES = itertools.count(1)


@contextmanager
def baseline_proxy(ctx: FaultContext, target: str) -> Iterator[tuple[int, str]]:
    """A toxic-free proxy to the same server as ``target``, for the length of one probe: the same
    path minus the toxic, so the difference is the toxic alone. Falls back to the server's own port
    (which lacks the proxy's own small overhead) when no such proxy can be made."""
    tp = ctx.cluster.toxiproxy
    name: str | None = f"cc_probe_{next(_PROBE_PROXIES)}_{target.replace('.', '_')}"
    try:
        upstream = tp.get_proxy(target)["upstream"]
        port = free_port()
        tp.create_proxy(name, f"127.0.0.1:{port}", upstream)
    except (ToxiproxyError, KeyError, OSError):
        server = getattr(ctx.cluster, "upstream", {}).get(target, target.partition(".")[0])
        name, port = None, int(ctx.cluster.direct[server].rpartition(":")[2])
    try:
        yield port, "a toxic-free proxy" if name else "the server directly"
    finally:
        if name:
            try:
                tp.delete_proxy(name)
            except ToxiproxyError:
                pass


@dataclass
class ProxyDown(ProxyFault):
    """The proxy is disabled: new connections are refused, live ones closed (fast failure)."""

    kinds: ClassVar[dict[str, Kind]] = {
        "down": Kind("disables the proxy: connections refused at once (a crash, seen from the client)", "#7f8c8d")}

    def start(self, ctx: FaultContext) -> None:
        for link in self.links(ctx):
            ctx.cluster.toxiproxy.set_enabled(link, False)

    def stop(self, ctx: FaultContext) -> None:
        for link in self.links(ctx):
            ctx.cluster.toxiproxy.set_enabled(link, True)

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        t = self.probe_target(ctx)
        p = roundtrip(t, ctx.cluster.proxies[t], timeout=1.0, window=ctx.window)
        return p.outcome in ("refused", "reset", "closed"), f"{p} (expected refused)"


@dataclass
class Partition(ProxyFault):
    """Black hole in both directions: the link is up but nothing crosses; calls hang."""

    kinds: ClassVar[dict[str, Kind]] = {
        "partition": Kind("black hole both ways: calls hang until the client's timeout", "#c0392b")}

    def start(self, ctx: FaultContext) -> None:
        for link in self.links(ctx):
            for stream in ("downstream", "upstream"):
                ctx.cluster.toxiproxy.add_toxic(link, "timeout", name=f"cc_partition_{stream}",
                                                stream=stream, timeout=0)

    def stop(self, ctx: FaultContext) -> None:
        for link in self.links(ctx):
            for stream in ("downstream", "upstream"):
                try:
                    ctx.cluster.toxiproxy.remove_toxic(link, f"cc_partition_{stream}")
                except Exception:  # noqa: BLE001
                    pass

    def probe(self, ctx: FaultContext) -> tuple[bool, str]:
        t = self.probe_target(ctx)
        return probe_silence(t, ctx.cluster.proxies[t], ctx.window)
