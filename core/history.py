"""The history: the append-only record of every operation in a run.

Why this module exists: everything cachecert concludes comes from the history, so it must survive
anything the run does to itself. Ops are written as JSON lines *while the run goes*; a background
flusher pushes the buffer to disk at least every 100 ms, so a run killed with SIGKILL still leaves a
readable prefix that the checkers can judge.

One operation record (plain dict, one JSON object per line)::

    {"index": 7, "time_ns": 1234567, "process": 3, "type": "invoke"|"ok"|"fail"|"info",
     "f": "read"|"write"|..., "key": "k1", "value": ..., "error": "..."}

plus free fields a strategy or workload reports on completions: ``source`` ("cache"|"db"),
``version`` (DB-assigned, increasing per key in commit order), ``hit`` (bool), ``db_load`` (bool:
this op queried the DB to fill the cache), ``phase`` ("setup"|"load"|"heal"|"quiesce"|"final"),
``node`` (application node id).  The nemesis writes its own ops with ``process: "nemesis"``,
``type: "info"``, ``f: "start"|"stop"``, ``value: {"fault": name, ...}``.

Rules: ``time_ns`` is ``time.monotonic_ns()`` minus the run's start, taken right before the call
(invoke) and right after it (completion). A process has at most one outstanding op; a process that
got ``info`` never invokes again. ``info`` = indeterminate (may or may not have taken effect);
``fail`` = certainly did not happen.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

Op = dict[str, Any]

TYPES = ("invoke", "ok", "fail", "info")
REQUIRED = ("index", "time_ns", "process", "type", "f")
FLUSH_INTERVAL_S = 0.05


class HistoryError(ValueError):
    """A history file that is not a valid history; the message names the file and line."""


class HistoryWriter:
    """Thread-safe JSON-lines writer. Ops get their ``index`` here, in append order.

    Appends go to an in-memory buffer; a daemon thread flushes it every 50 ms (and ``close``
    flushes the rest), so the file lags the run by at most ~100 ms even under SIGKILL.
    """

    def __init__(self, path: str | os.PathLike[str], t0_ns: int | None = None, invokes_through: bool = False) -> None:
        """``invokes_through``: an invoke reaches the file (the kernel) before ``append`` returns, so an
        op whose effect the process may have caused is on record even if the process is then
        SIGKILLed (a worker process: harness/procs.py); completions still go every 50 ms."""
        self.path = Path(path)
        self.invokes_through = invokes_through
        self.t0_ns = time.monotonic_ns() if t0_ns is None else t0_ns
        self._file = open(self.path, "ab", buffering=1 << 16)  # noqa: SIM115
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._index = 0
        self._closed = False
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="history-flush", daemon=True)
        self._flusher.start()

    def now(self) -> int:
        """Nanoseconds since the run started (monotonic)."""
        return time.monotonic_ns() - self.t0_ns

    def append(self, op: Op) -> Op:
        """Record ``op`` (setting ``index``, and ``time_ns`` if absent) and return it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("history is closed")
            op["index"] = self._index
            self._index += 1
            if "time_ns" not in op:
                op["time_ns"] = time.monotonic_ns() - self.t0_ns
            self._buf.append(orjson.dumps(op, default=_jsonable, option=orjson.OPT_NON_STR_KEYS))
            if self.invokes_through and op.get("type") == "invoke":
                lines, self._buf = self._buf, []
                self._file.write(b"\n".join(lines) + b"\n")
                self._file.flush()
        return op

    def flush(self) -> None:
        with self._lock:
            if not self._buf or self._closed:
                return
            lines, self._buf = self._buf, []
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            try:
                self.flush()
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self._stop.set()
        self.flush()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(x: Any) -> Any:
    if isinstance(x, (set, frozenset, tuple)):
        return list(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return str(x)


def validate(op: Any, where: str) -> Op:
    """Check one record's shape; raise HistoryError naming ``where`` (file:line)."""
    if not isinstance(op, dict):
        raise HistoryError(f"{where}: expected a JSON object, got {type(op).__name__}")
    for field in REQUIRED:
        if field not in op:
            raise HistoryError(f"{where}: missing field {field!r}")
    if op["type"] not in TYPES:
        raise HistoryError(f"{where}: unknown op type {op['type']!r} (expected one of {', '.join(TYPES)})")
    if not isinstance(op["process"], (int, str)) or isinstance(op["process"], bool):
        raise HistoryError(f"{where}: process must be an integer or a string, got {op['process']!r}")
    if not isinstance(op["f"], str):
        raise HistoryError(f"{where}: f must be a string, got {op['f']!r}")
    if not isinstance(op["time_ns"], int) or isinstance(op["time_ns"], bool):
        raise HistoryError(f"{where}: time_ns must be an integer, got {op['time_ns']!r}")
    if not isinstance(op["index"], int) or isinstance(op["index"], bool):
        raise HistoryError(f"{where}: index must be an integer, got {op['index']!r}")
    if not isinstance(op["process"], (int, str)) or isinstance(op["process"], bool):
        raise HistoryError(f"{where}: process must be an integer or a name, got {op['process']!r}")
    return op


def truncation(path: str | os.PathLike[str], lines: int, records: int) -> dict[str, Any]:
    """What a history cut mid-record says about itself (results.json ``history_truncated``)."""
    return {"after_line": lines, "complete_records": records,
            "message": f"history ends mid-record after line {lines} (the run was killed); "
                       f"checked the {records} complete records"}


SHARED_FIELDS = ("type", "f", "key", "source", "phase")


def read_history(
    path: str | os.PathLike[str], *, allow_truncated_tail: bool = True, check_pairs: bool = True,
    tail: dict[str, Any] | None = None,
) -> Iterator[Op]:
    """Stream and validate a history file, one op at a time.

    A final line without its newline that does not parse (a run killed mid-write) is dropped when
    ``allow_truncated_tail``, and ``tail`` (if given) gets ``tail["truncated"] = truncation(...)``
    so the caller can say so; any other bad line raises HistoryError with the line number.
    With ``check_pairs``, a completion without an outstanding invoke on its process, or a second
    invoke while one is outstanding, is an error too.
    """
    p = Path(path)
    try:
        f = open(p, "rb")  # noqa: SIM115
    except OSError as e:
        raise HistoryError(f"{p}: cannot open history: {e.strerror}") from e
    outstanding: dict[Any, int] = {}
    loads = orjson.loads
    # one str object per distinct type / f / key / source / phase: a history repeats a few hundred
    # such strings millions of times, and a fresh object per record was ~30% of a loaded history
    pool: dict[str, str] = {}
    share = pool.setdefault
    with f:
        lineno = records = 0
        for raw in f:
            lineno += 1
            if not raw.endswith(b"\n") and allow_truncated_tail and raw.strip():
                try:
                    loads(raw)
                except ValueError:  # torn last line of a killed run: the prefix stands, and says so
                    if tail is not None:
                        tail["truncated"] = truncation(p, lineno - 1, records)
                    return
            line = raw.strip()
            if not line:
                continue
            try:
                op = loads(line)
            except ValueError as e:
                raise HistoryError(f"{p}:{lineno}: not valid JSON ({str(e).split(':')[0]})") from None
            validate(op, f"{p}:{lineno}")
            for k in SHARED_FIELDS:
                v = op.get(k)
                if v.__class__ is str:
                    op[k] = share(v, v)
            if check_pairs and op["process"] != "nemesis":
                proc = op["process"]
                if op["type"] == "invoke":
                    if proc in outstanding:
                        raise HistoryError(
                            f"{p}:{lineno}: process {proc} invokes while its op from line "
                            f"{outstanding[proc]} is still outstanding"
                        )
                    outstanding[proc] = lineno
                elif outstanding.pop(proc, None) is None:
                    raise HistoryError(f"{p}:{lineno}: {op['type']} completion without an invoke on process {proc}")
            records += 1
            yield op


def load_history(path: str | os.PathLike[str], **kw: Any) -> list[Op]:
    return list(read_history(path, **kw))


def load_history_tail(path: str | os.PathLike[str], **kw: Any) -> tuple[list[Op], dict[str, Any] | None]:
    """The history and, if it was cut mid-record, its ``truncation`` record (else None)."""
    tail: dict[str, Any] = {}
    ops = list(read_history(path, tail=tail, **kw))
    return ops, tail.get("truncated")


def write_history(path: str | os.PathLike[str], ops: Iterable[Op]) -> None:
    """Write a complete history in one go (tests, converters, synthetic benchmarks)."""
    with open(path, "w", encoding="utf-8") as f:
        buf = io.StringIO()
        for op in ops:
            buf.write(json.dumps(op, separators=(",", ":"), default=_jsonable))
            buf.write("\n")
        f.write(buf.getvalue())
