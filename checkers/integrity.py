"""Integrity of multi-field objects: no torn reads, no old-schema objects returned as valid.

Why this module exists: caches that store an object as several fields (a Redis hash) and invalidate
by deleting it can return a mix of two writes (scenario 4, the invalidation race), and a cache that
outlives a schema migration can serve the old format as if it were valid (scenario 1). Neither is
about versions of a key; both are about the *shape* of one read. A write writes a unique int w and
stores ``{field: w for each field}``; a read returns a dict field -> int|None. A read whose fields
come from different writes (or are partly missing) is torn. With ``required_fields``, an ok read
whose object lacks one of them (or has it None) — and did not flag itself ``"valid_object": false`` — is an
old-schema object returned as valid.
"""

from __future__ import annotations

from typing import Any

from core.ops import READ_FS, Who, anomaly, nothing_to_judge, pair, secs, source_words


def check(history: list[dict[str, Any]], *, required_fields: Any = None, max_anomalies: int = 100,
          **_: Any) -> dict[str, Any]:
    """Result: ``reads`` (ok object reads), ``torn``, ``old_schema``, ``anomalies`` of types
    ``torn-read`` and ``old-schema-read``. Nothing to judge (unknown, with the reason) without an
    ok read of an object (with ``required_fields``: of any value, since a non-object is old-schema)."""
    paired = pair(history)
    req = list(required_fields or [])
    n = torn = old = objects = 0
    anomalies: list[dict[str, Any]] = []
    for op in paired.ops:
        if op.type != "ok" or op.f not in READ_FS or op.final_db:
            continue
        v = op.value
        if v is None:
            continue
        n += 1
        flagged_invalid = bool(op.comp and op.comp.get("valid_object") is False)
        if isinstance(v, dict):
            objects += 1
            vals = {x for x in v.values() if x is not None}
            missing = [f for f, x in v.items() if x is None]
            # partly-missing fields are torn only when no schema is given; with required_fields a
            # None required field is an old-schema object (e.g. a field added by a migration)
            if len(vals) > 1 or (vals and missing and not req):
                torn += 1
                if len(anomalies) < max_anomalies:
                    shown = ", ".join(f"{f}: {'nil' if x is None else x}" for f, x in sorted(v.items(), key=str))
                    why = (f"its fields come from {len(vals)} different writes ({', '.join(map(str, sorted(vals, key=str)))})"
                           if len(vals) > 1 else f"field(s) {', '.join(map(str, missing))} are missing while others are set")
                    anomalies.append(anomaly(
                        "torn-read", op.key, [op],
                        f"{Who(op)} read {op.key}{source_words(op)} at {secs(op.t0)} and got {{{shown}}}: {why} "
                        f"— a torn read.", fields=v))
            if req and not flagged_invalid:
                lacking = [f for f in req if v.get(f) is None]
                if lacking:
                    old += 1
                    if len(anomalies) < max_anomalies:
                        anomalies.append(anomaly(
                            "old-schema-read", op.key, [op],
                            f"{Who(op)} read {op.key}{source_words(op)} at {secs(op.t0)} and got an object without "
                            f"the required field(s) {', '.join(map(str, lacking))} — an old-schema object returned "
                            f"as valid."))
        elif req and not flagged_invalid:
            old += 1
            if len(anomalies) < max_anomalies:
                anomalies.append(anomaly(
                    "old-schema-read", op.key, [op],
                    f"{Who(op)} read {op.key}{source_words(op)} at {secs(op.t0)} and got {v!r}, not an object with "
                    f"the required field(s) {', '.join(map(str, req))} — an old-schema value returned as valid."))
    out: dict[str, Any] = {"reads": n, "object_reads": objects, "torn": torn, "old_schema": old,
                           "required_fields": req}
    out["valid"] = not (torn or old)
    out["anomaly_count"] = torn + old
    if out["valid"] and not (n if req else objects):
        return nothing_to_judge("no ok reads of a value" if req else "no ok reads of object values", **out)
    if not out["valid"]:
        out["anomalies"] = anomalies
    return out
