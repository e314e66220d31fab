"""DB loads counted on the DB side: what a black-box service cannot be trusted to report.

An in-process herd strategy reports each DB load (and the fill it refills) on its read; a user's
service reports what it likes. So for app-node runs of a workload that counts DB loads
(thundering-herd), PostgreSQL itself is asked: for the length of the load phase the database logs
every statement (``ALTER DATABASE ... SET log_statement = 'all'``: new sessions only, so the app
nodes, which connect after it is set, and not the harness's own set-up connection), and afterwards
the server log is read back from where it stood: every ``SELECT ... FROM kv`` with its key (a
literal in the text, or the ``$n`` parameter ``key = $n`` names, from the DETAIL line) and the
server's own timestamp. The record goes into the history as a nemesis ``db-reads`` op, on the
history's clock, for checkers such as ``herd-db``.

Only a backend whose PostgreSQL log is a local file can do this; elsewhere the record says why not
and the checker answers "nothing to judge" (unknown), never a guess.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("cachecert.dbreads")
LINE = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+) \[(?P<pid>\d+)\] (?P<level>[A-Z]+):\s+(?P<msg>.*)$")
STATEMENT = re.compile(r"^(?:statement|execute [^:]*):\s*(?P<sql>.*)$", re.S)
SELECT_KV = re.compile(r"^\s*select\b.*\bfrom\s+(?:public\.)?kv\b", re.I | re.S)
KEY_LITERAL = re.compile(r"\bkey\s*=\s*'((?:[^']|'')*)'", re.I)
KEY_PARAM = re.compile(r"\bkey\s*=\s*\$(\d+)", re.I)
PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")


class StatementLog:
    """Log every statement of new sessions for a while, then read the kv reads back."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.path: Path | None = None
        self.offset = 0
        self.why_not: str | None = None
        self.on = False

    def start(self) -> None:
        path = (self.cluster.logs() or {}).get("postgres")
        if path is None or not Path(path).exists():
            self.why_not = "this backend's PostgreSQL log is not a local file"
            return
        self.path = Path(path)
        self.offset = self.path.stat().st_size
        self._set("set log_statement = 'all'")
        self.on = True

    def stop(self) -> None:
        if self.on:
            self.on = False
            try:
                self._set("reset log_statement")
            except Exception as e:  # noqa: BLE001 - a DB that is down now: the next start resets it
                log.warning("could not reset log_statement: %s", e)

    def _set(self, clause: str) -> None:
        from core.clients import Pg

        pg = Pg(self.cluster.direct["postgres"], timeout=10)
        try:
            pg.execute(f"alter database postgres {clause}")
        finally:
            pg.close()

    def reads(self, wall_t0: float) -> dict[str, Any]:
        """The record: kv reads as [seconds since ``wall_t0``, key], or why there are none."""
        if self.path is None:
            return {"loads": [], "unavailable": self.why_not or "statement log not started"}
        time.sleep(0.2)  # the server writes its log asynchronously to our reading
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        return {"loads": parse(text, wall_t0), "source": "postgres statement log"}


def parse(text: str, wall_t0: float) -> list[list[Any]]:
    """[[t_s, key], ...] of every SELECT on kv that names one key, in log order."""
    out: list[list[Any]] = []
    pending: dict[str, tuple[float, str]] = {}  # pid -> (t, "$n") awaiting its DETAIL parameters
    entries: list[tuple[str, str, str, str]] = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            entries.append((m["ts"], m["pid"], m["level"], m["msg"]))
        elif entries:  # a statement continued on the next line
            ts, pid, level, msg = entries[-1]
            entries[-1] = (ts, pid, level, f"{msg}\n{line.strip()}")
    for ts, pid, level, msg in entries:
        if level == "DETAIL" and pid in pending:
            t, n = pending.pop(pid)
            params = {p[0]: p[1] for p in PARAM.findall(msg)}
            value = params.get(n)
            if value and value != "NULL":
                out.append([round(t, 6), value[1:-1].replace("''", "'")])
            continue
        if level != "LOG":
            continue
        st = STATEMENT.match(msg)
        if st is None or not SELECT_KV.match(st["sql"]):
            continue
        t = _wall(ts) - wall_t0
        lit = KEY_LITERAL.search(st["sql"])
        if lit:
            out.append([round(t, 6), lit.group(1).replace("''", "'")])
        elif (p := KEY_PARAM.search(st["sql"])) is not None:
            pending[pid] = (t, p.group(1))
    return out


def _wall(ts: str) -> float:
    """The server's timestamp (log_timezone=UTC, as the embedded PostgreSQL runs) in epoch seconds."""
    stamp, _, zone = ts.rpartition(" ")
    if zone not in ("UTC", "GMT"):
        raise ValueError(f"PostgreSQL logs in {zone}; the statement log needs log_timezone=UTC")
    return datetime.strptime(stamp + " +0000", "%Y-%m-%d %H:%M:%S.%f %z").timestamp()
