"""Durability: every acknowledged write is in the DB at the end.

Why this module exists: write-behind buffers and cache-first writes can acknowledge a write that
never reaches the DB. After the run heals and quiesces, the harness reads every key straight from
the DB (final reads with ``source: "db"``); an acknowledged write is *lost* if the DB's final value
is older than it: written by nobody (still the initial value, or a value nobody wrote), written by
a write that completed before the acknowledged one began, or carrying a lower version.
"""

from __future__ import annotations

from typing import Any

from core.ops import (
    Op,
    Who,
    anomaly,
    hashable,
    key_versions,
    pair,
    read_version,
    secs,
    verdict,
    vtext,
    who,
)


def check(history: list[dict[str, Any]], *, initial: Any = None, initial_version: int = 0,
          max_anomalies: int = 100, **_: Any) -> dict[str, Any]:
    """Result: ``acknowledged`` (ok writes), ``lost`` (count), ``keys_checked``, ``unchecked_keys``
    (written keys without a final DB read), ``anomalies`` of type ``lost-write``. Nothing to judge
    (unknown, with the reason) without acknowledged writes, or without a final DB read of a written key."""
    paired = pair(history)
    kvs = key_versions(paired, initial=initial, initial_version=initial_version)
    init_h = hashable(initial)
    acked = lost = checked = 0
    unchecked: list[Any] = []
    anomalies: list[dict[str, Any]] = []
    for key, kv in kvs.items():
        oks = [w for w in kv.writes if w.type == "ok"]
        if not oks:
            continue
        acked += len(oks)
        if not kv.final_db:
            unchecked.append(key)
            continue
        checked += 1
        fin = max(kv.final_db, key=lambda o: o.t0)
        fh = hashable(fin.value)
        fv = read_version(kv, fin)
        writer = kv.writer.get(fh)
        for w in oks:
            wh = hashable(w.value)
            if wh == fh:
                continue
            wv = read_version(kv, w)
            why = _lost_because(w, wv, fin, fv, writer, fh == init_h)
            if why is None:
                continue
            lost += 1
            if len(anomalies) < max_anomalies:
                anomalies.append(anomaly(
                    "lost-write", key, [w, fin] + ([writer] if writer is not None else []),
                    f"{Who(w)}'s write of {key} = {vtext(w.value, wv)} was acknowledged at "
                    f"{secs(w.t1)}, but at the end (final DB read at {secs(fin.t0)}) {why}: an acknowledged "
                    f"write was lost."))
    out: dict[str, Any] = {"acknowledged": acked, "lost": lost, "keys_checked": checked,
                           "unchecked_keys": len(unchecked)}
    out["anomaly_count"] = lost
    nothing = ("no acknowledged writes" if not acked else
               "no final reads of the DB (of any written key)" if not checked else None)
    partial = (f"{len(unchecked)} written key(s) have no final DB read (e.g. {unchecked[0]!r}): "
               "durability cannot be judged for them") if unchecked else None
    return verdict(out, anomalies, invalid=bool(lost), nothing=nothing, partial=partial)


def _lost_because(w: Op, wv: Any, fin: Op, fv: Any, writer: Op | None, initial: bool) -> str | None:
    """Why the acknowledged write ``w`` (of version ``wv``) is lost, given the DB's final read ``fin``
    (of version ``fv``, written by ``writer``; ``initial``: it is the initial value); None if not lost."""
    if writer is None:
        return ("the DB still holds the initial value " + vtext(fin.value, fv)) if initial else \
               f"the DB holds {vtext(fin.value, fv)}, which nobody wrote"
    if writer.t1 < w.t0:
        return (f"the DB holds {vtext(fin.value, fv)}, written by {who(writer)} whose write "
                f"completed at {secs(writer.t1)}, before the lost write began")
    if fv is not None and wv is not None and fv < wv:
        return f"the DB holds {vtext(fin.value, fv)}, an older version"
    return None
