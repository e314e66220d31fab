"""JUnit XML from run results: what CI systems (GitHub Actions reporters, Jenkins, GitLab) read.

Why: nightly CI shows a test per guarantee, not a log to grep. One ``<testsuite>`` per run
(workload/strategy [fault plan]), one ``<testcase>`` per checker: a checker that found anomalies is
a ``<failure>`` (message = the first explanation, body = the first anomalies), a checker that could
not decide is an ``<error type="unknown">`` (never a pass), and a run that crashed gets a
``harness`` test case with an ``<error>``. Counts, times and properties (seed, run directory,
report path) follow the common JUnit schema (testsuites > testsuite > testcase > failure|error).
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from core.verdict import Verdict

MAX_BODY_ANOMALIES = 20


def _text(x: Any, limit: int = 2000) -> str:
    s = "" if x is None else str(x)
    s = "".join(c for c in s if c in "\t\n\r" or ord(c) >= 32)  # XML 1.0 forbids other controls
    return s if len(s) <= limit else s[: limit - 1] + "…"


def suite_for(results: dict[str, Any], label: str | None = None) -> ET.Element:
    wl, st = results.get("workload", "?"), results.get("strategy", "?")
    name = label or f"{wl}/{st}"
    suite = ET.Element("testsuite", name=name, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       hostname=socket.gethostname())
    props = ET.SubElement(suite, "properties")
    run_dir = results.get("run_dir")
    for k, v in (("workload", wl), ("strategy", st), ("seed", results.get("seed")), ("run_dir", run_dir),
                 ("report", str(Path(run_dir) / "report.html") if run_dir else None),
                 ("verdict", results.get("valid")), ("exit_code", results.get("exit_code"))):
        if v is not None:
            ET.SubElement(props, "property", name=k, value=_text(v))
    classname = f"cachecert.{wl}.{st}"
    tests = failures = errors = 0
    checkers = results.get("checkers") or {}
    for cname, r in checkers.items():
        tests += 1
        tc = ET.SubElement(suite, "testcase", classname=classname, name=cname,
                           time=f"{float(r.get('time_s', 0) or 0):.3f}")
        verdict = Verdict.of(r.get("valid"))
        anomalies = [a for a in r.get("anomalies") or [] if isinstance(a, dict)]
        if verdict is Verdict.INVALID:
            failures += 1
            first = anomalies[0] if anomalies else {}
            msg = f"{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}"
            if first:
                msg += f"; first: {first.get('explanation') or first.get('type')}"
            body = "\n".join(f"[{a.get('type')}] key={a.get('key')} ops={a.get('ops')}: {a.get('explanation', '')}"
                             for a in anomalies[:MAX_BODY_ANOMALIES])
            if len(anomalies) > MAX_BODY_ANOMALIES:
                body += f"\n... and {len(anomalies) - MAX_BODY_ANOMALIES} more (see the report)"
            el = ET.SubElement(tc, "failure", message=_text(msg, 500),
                               type=_text(first.get("type", "anomaly") if first else "invalid"))
            el.text = _text(body, 20000)
        elif verdict is Verdict.UNKNOWN:
            errors += 1
            el = ET.SubElement(tc, "error", type="unknown",
                               message=_text(f"verdict unknown: {r.get('error') or 'the checker could not decide'}",
                                             500))
    if results.get("error") or not checkers:
        tests += 1
        errors += 1
        tc = ET.SubElement(suite, "testcase", classname=classname, name="harness")
        why = results.get("error") or results.get("note") or "no checker produced a verdict"
        ET.SubElement(tc, "error", type="harness", message=_text(why, 500))
    if run_dir:
        ET.SubElement(suite, "system-out").text = f"report: {Path(run_dir) / 'report.html'}"
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{float(results.get('wall_s', 0) or 0):.3f}")
    return suite


def to_xml(runs: list[dict[str, Any]], labels: list[str | None] | None = None, name: str = "cachecert") -> bytes:
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for i, r in enumerate(runs):
        s = suite_for(r, labels[i] if labels else None)
        root.append(s)
        for k in totals:
            totals[k] += int(s.get(k, "0"))
        total_time += float(s.get("time", "0"))
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: str | Path, runs: list[dict[str, Any]], labels: list[str | None] | None = None,
                name: str = "cachecert") -> Path:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(to_xml(runs, labels, name))
    return p
