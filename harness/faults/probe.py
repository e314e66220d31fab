"""Protocol-level round trips to a service, to verify that a fault really took effect.

A toxic that Toxiproxy accepted is not yet a fault that clients feel (wrong proxy, wrong
direction, added after the connection it should affect...). So after starting a fault, the nemesis
sends tiny requests that the real server answers (Redis PING, PostgreSQL SSLRequest, Kafka
ApiVersions) and classifies what happened: answered after how long, refused, reset, closed, no
answer at all, or no answer until the fault ended.

Why the fault's window matters: a probe may have to wait long (a 5000 ms latency), and the fault
may end first. Toxiproxy then releases what the toxic held (a latency toxic forwards the delayed
bytes at once when removed), so "answered after 4000 ms" under a 5000 ms latency that lasted 4 s is
not a latency that failed to show: the request was held for as long as the fault was on. Every wait
here watches the window (``FaultWindow``) and reports ``ended`` when the fault ended first; the
probes in proxy.py and process.py judge that against how long the request was held.

Why samples against a baseline: a latency of a few milliseconds, or one with jitter (2±2 ms is
0..3 ms per chunk), cannot be told from scheduling noise by one round trip on a loaded machine. So
small latencies are measured as many round trips through the faulted proxy, interleaved with as
many through a toxic-free proxy to the same server, and judged on the difference of the medians.
"""

from __future__ import annotations

import socket
import statistics
import struct
import time
from dataclasses import dataclass, field

from harness.faults.base import FaultWindow
from harness.topology import protocol

_KAFKA_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, 9) + b"cachecert"  # api 18 v0, correlation 1, client id
REQUESTS: dict[str, bytes] = {
    "redis": b"PING\r\n",
    "postgres": struct.pack(">ii", 8, 80877103),  # SSLRequest: the server answers one byte, 'N'
    "kafka": struct.pack(">i", len(_KAFKA_API_VERSIONS)) + _KAFKA_API_VERSIONS,
}
SLICE = 0.05  # s: how often a wait looks at the fault's window
HOLD_MIN_MS = 20.0  # a request held less than this until the fault ended says nothing either way
# a request that got no answer for this long and then lost its connection was held: the server (or a
# later fault: the broker killed behind a partitioned link) closed it, not the fault failing to bite
QUIET_THEN_CLOSED_MS = 500.0


@dataclass
class Probe:
    outcome: str  # "ok" | "refused" | "reset" | "closed" | "timeout" | "ended" (the fault ended first)
    seconds: float
    t0: float = 0.0  # monotonic time the round trip began
    t1: float = 0.0  # ... and ended

    @property
    def ms(self) -> float:
        return self.seconds * 1000

    def __str__(self) -> str:
        shown = f"{self.ms:.1f}" if self.ms < 10 else f"{self.ms:.0f}"
        if self.outcome == "ended":
            return f"no answer in {shown} ms, until the fault ended"
        if self.outcome == "timeout":
            return f"no answer within {shown} ms"
        return f"{self.outcome} after {shown} ms"


def base_service(target: str) -> str:
    """The protocol a proxy or server speaks: ``redis.bus3`` (one node's link), ``redis-2`` and
    ``sentinel-1`` speak redis, ``postgres.replica`` postgres (harness/topology.py)."""
    return protocol(target)


class Pinger:
    """Round trips to one port. Redis answers PING after PING on one connection, which keeps the
    connection set-up out of the measurement; PostgreSQL answers one SSLRequest per connection and
    a Kafka answer is long, so those get a fresh connection per round trip."""

    def __init__(self, service: str, port: int, window: FaultWindow | None = None) -> None:
        self.service = base_service(service)
        self.port = port
        self.window = window
        self.persistent = self.service == "redis"
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def once(self, timeout: float) -> Probe:
        t0 = time.monotonic()
        outcome = self._roundtrip(t0 + timeout)
        if outcome != "ok" or not self.persistent:
            self.close()
        t1 = time.monotonic()
        return Probe(outcome, t1 - t0, t0, t1)

    def _roundtrip(self, deadline: float) -> str:
        if self.sock is None:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port),
                                                     timeout=max(0.01, deadline - time.monotonic()))
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                return "timeout"
            except OSError:
                return "reset"
        try:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            self.sock.sendall(REQUESTS.get(self.service, b"\r\n"))
        except TimeoutError:
            return "timeout"
        except OSError:
            return "reset"
        return self._await(self.sock, deadline)

    def _await(self, s: socket.socket, deadline: float) -> str:
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            s.settimeout(min(left, SLICE) if self.window is not None else left)
            try:
                data = s.recv(4096)
            except TimeoutError:
                # only after a quiet slice: an answer that is already here still counts as one
                if self.window is not None and self.window.over():
                    return "ended"
                continue
            except OSError:
                return "reset"
            if not data:
                return "closed"
            buf += data
            if not self.persistent or buf.endswith(b"\r\n"):
                return "ok"


def roundtrip(service: str, port: int, timeout: float = 1.0, window: FaultWindow | None = None) -> Probe:
    """One request on a fresh connection; stops waiting when ``window`` ends."""
    p = Pinger(service, port, window)
    p.persistent = False
    with p:
        return p.once(timeout)


def held_ms(p: Probe, window: FaultWindow | None) -> float | None:
    """How long the request was held by the fault, if it got no answer until the fault ended."""
    if window is None or window.ended_at is None:
        return None
    if p.outcome == "ended" or p.t1 >= window.ended_at:
        return max(0.0, (window.ended_at - p.t0) * 1000)
    return None


def expect_silence(p: Probe, window: FaultWindow | None) -> tuple[bool, str]:
    """Verdict for faults under which the server must not answer (pause, partition, black hole)."""
    if p.outcome == "timeout":
        return True, f"{p} (expected no answer)"
    if p.outcome in ("closed", "reset") and p.ms >= QUIET_THEN_CLOSED_MS:
        return True, f"no answer in {p.ms:.0f} ms, then the connection was {p.outcome} (expected no answer)"
    held = held_ms(p, window)
    if held is None:
        return False, f"{p} (expected no answer)"
    if held >= HOLD_MIN_MS:
        return True, f"no answer in {held:.0f} ms, until the fault ended (expected no answer)"
    return False, (f"the fault ended {held:.0f} ms into the probe, too soon to tell silence from a slow answer "
                   f"(needs {HOLD_MIN_MS:.0f} ms)")


def probe_silence(service: str, port: int, window: FaultWindow | None, timeout: float = 2.0,
                  tries: int = 3) -> tuple[bool, str]:
    """``expect_silence`` on fresh connections, trying again (up to ``tries`` in all) while the
    connection is dropped quickly without an answer. A drop is not an answer crossing the fault, but
    on its own it cannot tell a silent link from a server that refused the proxy's own connection
    (seen once in CI: a partitioned Kafka link closed after 217 ms on a loaded machine); the next
    connection can. An answer on any try is the fault failing to bite, and ends the probe."""
    drops: list[Probe] = []
    while True:
        p = roundtrip(service, port, timeout=timeout, window=window)
        quick_drop = p.outcome in ("closed", "reset") and p.ms < QUIET_THEN_CLOSED_MS
        if not quick_drop or len(drops) + 1 >= tries or (window is not None and window.over()):
            break
        drops.append(p)
        time.sleep(SLICE)
    silent, text = expect_silence(p, window)
    if drops:
        text += f" (on try {len(drops) + 1}; before it: {'; '.join(str(d) for d in drops)}, without an answer)"
    return silent, text


@dataclass
class Samples:
    """Round trips through the faulted proxy (``faulted``) and a toxic-free one (``baseline``), in ms."""

    faulted: list[float]
    baseline: list[float]
    stopped: Probe | None = None  # the round trip that ended sampling early (no answer, error, fault over)
    # answers through the faulted proxy whose toxic-free partner then failed (the server died: a later
    # fault of the same plan killed it), so they have no baseline to be compared with
    unpaired: list[float] = field(default_factory=list)

    @property
    def added_ms(self) -> float:
        return statistics.median(self.faulted) - statistics.median(self.baseline)


def sample_pairs(service: str, port: int, baseline_port: int, window: FaultWindow | None, timeout: float,
                 n: int = 21, budget: float = 1.5) -> Samples:
    """Up to ``n`` interleaved round trips through ``port`` and ``baseline_port`` (one each per pair),
    stopping after ``budget`` seconds (at least one pair), at the first non-answer, or when the fault
    ends (an answer released by the fault's end is not a sample of its latency)."""
    out = Samples([], [])
    stop_at = time.monotonic() + budget
    with Pinger(service, port, window) as faulted, Pinger(service, baseline_port) as base:
        for i in range(n):
            first_base = i % 2 == 1  # alternate the order, so a drift in load hits both alike
            b = base.once(2.0) if first_base else None
            p = faulted.once(timeout)
            if p.outcome != "ok" or held_ms(p, window) is not None:
                out.stopped = p
                break
            b = b or base.once(2.0)
            if b.outcome != "ok":
                out.stopped = b
                out.unpaired.append(p.ms)
                break
            out.faulted.append(p.ms)
            out.baseline.append(b.ms)
            if time.monotonic() >= stop_at:
                break
    return out
