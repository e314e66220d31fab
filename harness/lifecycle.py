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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


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



class Interrupts:
    """Ctrl-C, SIGTERM and SIGHUP over a whole run, in three modes.

    ``run`` (the load phase): the first signal raises ``KeyboardInterrupt`` (SIGINT) or
    ``Terminated`` and switches to ``shield`` itself, so a second one cannot cut the clean-up that
    follows. ``shield`` (healing, stopping services, writing results): a signal is only counted.
    ``skip`` (judging, rendering: worth giving up for a prompt exit): a signal is counted and raises
    ``KeyboardInterrupt``. ``count`` is the number of signals received after the run stopped or ended;
    ``first_ns`` the monotonic time of the first signal. Handlers exist only on the main thread
    (signals are delivered nowhere else; elsewhere the modes change nothing), and not for a signal
    the process was started ignoring (``nohup``, a background job of a script).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.mode = "run"
        self.count = 0
        self.first_ns: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.first_ns is None:
            self.first_ns = time.monotonic_ns()
        name = signal.Signals(signum).name
        if self.mode == "run":
            self.mode = "shield"
            raise KeyboardInterrupt("Ctrl-C") if signum == signal.SIGINT else Terminated(f"received {name}")
        self.count += 1
        if self.mode == "skip":
            raise KeyboardInterrupt(f"received {name} again")

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is threading.main_thread():  # an ignored signal stays ignored (nohup)
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS
                         if signal.getsignal(s) is not signal.SIG_IGN}
        try:
            yield self
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)
            self._old = {}

    def shield(self) -> None:
        self.mode = "shield"

    @contextmanager
    def skippable(self) -> Iterator[None]:
        """A signal inside raises KeyboardInterrupt; afterwards signals are only counted again."""
        self.mode = "skip"
        try:
            yield
        finally:
            self.mode = "shield"
