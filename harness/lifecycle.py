"""Making sure faults are healed and processes reaped however the harness exits.

SIGINT already raises KeyboardInterrupt; SIGTERM (CI cancelling a job, `timeout`) and SIGHUP
(a closed terminal) would by default kill the interpreter without running ``finally`` blocks, and
leave toxics on and servers running. ``graceful_signals`` turns them into an exception so the same
cleanup path runs for every kind of exit. SIGKILL cannot be caught: that case is covered by
pidfiles and `cachecert down`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM or SIGHUP."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"received {signal.Signals(signum).name}")


@contextmanager
def graceful_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
