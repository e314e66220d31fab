"""Run the test suite N times in a row and print how often each test failed.

    python scripts/flake.py -n 10                  # the whole suite, 10 times (`make flake N=10`)
    python scripts/flake.py -n 5 -- -m cluster     # only the tests on real services
    python scripts/flake.py -n 3 -- tests/test_scenario_herd.py

Why: the suite runs real services under faults, so a test whose assertion leans on one machine's
timing fails now and then, and one red run says little. Each run writes JUnit XML; the table lists
every test that failed or errored at least once, as failures/N, with the first line of its last
failure. Exit status: 0 if every run passed, 1 otherwise (2 if pytest itself could not run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Tally:
    runs: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    last_error: dict[str, str] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)


def test_id(case: ET.Element) -> str:
    """`tests/test_x.py::Class::test_y[param]` from a JUnit testcase's classname and name."""
    parts = (case.get("classname") or "").split(".")
    for i in range(len(parts), 0, -1):
        module = Path(*parts[:i]).with_suffix(".py")
        if (REPO / module).exists():
            return "::".join([module.as_posix(), *parts[i:], case.get("name") or "?"])
    return "::".join([*parts, case.get("name") or "?"])


def outcomes(junit: Path) -> dict[str, tuple[bool, str]]:
    """test id -> (failed or errored, first line of the message)."""
    out: dict[str, tuple[bool, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if case.find("skipped") is not None and bad is None:
            continue
        msg = "" if bad is None else (bad.get("message") or bad.text or "").strip().splitlines()[:1]
        out[test_id(case)] = (bad is not None, msg[0][:160] if msg else "")
    return out


def run_once(i: int, n: int, pytest_args: list[str], tmp: Path, tally: Tally) -> int:
    junit = tmp / f"run-{i}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.monotonic() - t0
    tally.durations.append(took)
    if not junit.exists():
        print(proc.stdout[-3000:], file=sys.stderr)
        print(f"run {i}/{n}: pytest exited {proc.returncode} without a report", file=sys.stderr)
        return 2
    tally.runs += 1
    failed = []
    for tid, (bad, msg) in outcomes(junit).items():
        tally.seen[tid] += 1
        if bad:
            tally.failures[tid] += 1
            tally.last_error[tid] = msg
            failed.append(tid)
    print(f"run {i}/{n}: {len(failed)} failed of {len(tally.seen)} ({took:.0f} s)"
          + "".join(f"\n    {t}" for t in failed), flush=True)
    return 0


def print_table(tally: Tally) -> None:
    n = tally.runs
    total = sum(tally.durations)
    print(f"\n{n} run(s) of {len(tally.seen)} tests, {total / 60:.1f} min in all, "
          f"{(total / max(len(tally.durations), 1)) / 60:.1f} min per run")
    if not tally.failures:
        print("no test failed")
        return
    width = max(len(t) for t in tally.failures)
    print(f"{'test':<{width}}  failures/runs  last failure")
    for tid, k in tally.failures.most_common():
        print(f"{tid:<{width}}  {k:>4}/{tally.seen[tid]:<8}  {tally.last_error.get(tid, '')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=10, help="how many times to run the suite (default 10)")
    ap.add_argument("--keep", metavar="DIR", help="keep each run's JUnit XML in DIR")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest after `--` (e.g. -- -m cluster)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="flake-") as t:
        tmp = Path(args.keep) if args.keep else Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(1, args.runs + 1):
                if run_once(i, args.runs, args.pytest_args, tmp, tally):
                    return 2
        except KeyboardInterrupt:
            print(f"\ninterrupted after {tally.runs} run(s)", file=sys.stderr)
        print_table(tally)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
