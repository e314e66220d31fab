"""One protocol-level round trip to a service, to verify that a fault really took effect.

A toxic that Toxiproxy accepted is not yet a fault that clients feel (wrong proxy, wrong
direction, added after the connection it should affect...). So after starting a fault, the nemesis
sends one tiny request that the real server answers (Redis PING, PostgreSQL SSLRequest, Kafka
ApiVersions) and classifies what happened: answered after how long, refused, reset, closed, or no
answer at all.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

_KAFKA_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, 8) + b"cachecert"
REQUESTS: dict[str, bytes] = {
    "redis": b"PING\r\n",
    "postgres": struct.pack(">ii", 8, 80877103),  # SSLRequest: the server answers one byte, 'N'
    "kafka": struct.pack(">i", len(_KAFKA_API_VERSIONS)) + _KAFKA_API_VERSIONS,
}


@dataclass
class Probe:
    outcome: str  # "ok" | "refused" | "reset" | "closed" | "timeout"
    seconds: float

    def __str__(self) -> str:
        return f"{self.outcome} after {self.seconds * 1000:.0f} ms"


def roundtrip(service: str, port: int, timeout: float = 1.0) -> Probe:
    t0 = time.monotonic()

    def done(outcome: str) -> Probe:
        return Probe(outcome, time.monotonic() - t0)

    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return done("refused")
    except TimeoutError:
        return done("timeout")
    except OSError:
        return done("reset")
    with s:
        try:
            s.settimeout(max(0.01, timeout - (time.monotonic() - t0)))
            s.sendall(REQUESTS.get(service.partition(".")[0], b"\r\n"))  # "redis.bus3" speaks redis
            data = s.recv(64)
        except TimeoutError:
            return done("timeout")
        except (ConnectionResetError, BrokenPipeError):
            return done("reset")
        except OSError:
            return done("reset")
    return done("ok" if data else "closed")
