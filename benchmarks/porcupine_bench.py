"""cachecert's linearizability search against Porcupine, side by side, on Porcupine's own corpus.

    python -m benchmarks.porcupine_bench [--repeats 3] [--files 102]

Why this exists: issue 17 set the target as a ratio to Porcupine (Go), "half of Porcupine's time on
its etcd corpus". This module measures it in one run on one machine instead of quoting a number
measured elsewhere:

* **the corpus**: the 102 Jepsen etcd logs Porcupine ships in its module
  (``test_data/jepsen/etcd_NNN.log``, fetched by ``go mod download`` from the module proxy), with the
  verdict Porcupine's own test expects of each (``checkJepsen(t, N, bool)`` in porcupine_test.go);
* **Porcupine**: ``benchmarks/porcupine/main.go`` checks each log exactly as Porcupine's test does
  (its parser and etcd model) and prints its verdict, CPU and wall time;
* **cachecert**: the same logs parsed into our history format (``parse_jepsen_log``: Porcupine's
  reading, op for op), checked by ``checkers.linearizable.check`` with the cas-register model, in
  history order (Jepsen's convention), with the compiled loop and with the pure-Python loop.

Semantics, where the two differ: Porcupine keeps a failed cas as an op that saw a different value;
cachecert drops a failed op (Knossos: it did not happen). A timed-out read and an invoke without a
completion are pending for both. The verdicts are compared file by file and printed.

CPU (user + system) and wall seconds per file, median of ``--repeats``, summed; parsing excluded on both
sides. The "before issue 17" search is the verbatim copy kept in ``linearizable_bench``.
Figures, never asserts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.linearizable_bench import run_as
from checkers import corpus, wgl
from core.ops import clear_memo, pair

HERE = Path(__file__).resolve().parent / "porcupine"
BIN = HERE / "bin" / "porcupine-etcd"
MODULE = "github.com/anishathalye/porcupine@v1.3.1"
CHECK = {"model": "cas-register", "initial": None, "order": "index"}
TIME_LIMIT_S = 120.0

_LINE = re.compile(r"^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*)$")


def parse_jepsen_log(path: Path) -> list[dict[str, Any]]:
    """A Jepsen etcd log as a cachecert history (invoke and completion records in log order).
    Porcupine's reading: a ``:fail :read :timed-out`` is a read of unknown value; ``:info`` lines
    and invokes never completed are pending (recorded here as ``info`` completions)."""
    out: list[dict[str, Any]] = []
    open_: dict[int, tuple[str, Any]] = {}  # process -> (f, the invoke's value)

    def rec(p: int, typ: str, f: str, value: Any) -> None:
        out.append({"process": p, "type": typ, "f": f, "value": value, "index": len(out), "time_ns": len(out)})

    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        p, typ, f, arg = int(m[1]), m[2], m[3], m[4].strip()
        if typ == "invoke":
            value: Any = None if f == "read" else int(arg) if f == "write" else [int(x) for x in arg[1:-1].split()]
            rec(p, "invoke", f, value)
            open_[p] = (f, value)
        elif p in open_:
            f, value = open_.pop(p)
            if typ == "ok" and f == "read":
                rec(p, "ok", f, None if arg == "nil" else int(arg))
            elif typ == "fail" and f == "read":  # :timed-out: a read of unknown value
                rec(p, "info", f, None)
            else:  # ok, fail or info (:timed-out) of a write or cas: the invoke's value
                rec(p, typ, f, value)
    for p, (f, value) in sorted(open_.items()):
        rec(p, "info", f, value)
    return out


def module_dir() -> Path:
    """Porcupine's module directory (downloaded from the Go module proxy on first use)."""
    got = subprocess.run(["go", "mod", "download", "-json", MODULE], cwd=HERE, capture_output=True, text=True,
                         timeout=300, check=False)
    if got.returncode != 0:
        raise SystemExit(f"porcupine_bench: go mod download {MODULE} failed: {got.stderr.strip() or got.stdout}")
    return Path(json.loads(got.stdout)["Dir"])


def build() -> None:
    BIN.parent.mkdir(exist_ok=True)
    subprocess.run(["go", "build", "-buildvcs=false", "-o", str(BIN), "."], cwd=HERE, check=True, timeout=600)


def expected_verdicts(mod: Path) -> dict[int, bool]:
    text = (mod / "porcupine_test.go").read_text()
    return {int(n): v == "true" for n, v in re.findall(r"checkJepsen\(t,\s*(\d+),\s*(true|false)\)", text)}


def run_porcupine(files: list[Path], repeats: int) -> dict[str, dict[str, Any]]:
    got = subprocess.run([str(BIN), f"-repeats={repeats}", f"-timeout={TIME_LIMIT_S:g}s", *map(str, files)],
                         capture_output=True, text=True, check=True, timeout=7200)
    rows = [json.loads(line) for line in got.stdout.splitlines() if line.strip()]
    return {Path(r["file"]).name: r for r in rows}


def run_ours(name: str, h: list[dict[str, Any]], which: str, repeats: int) -> tuple[Any, float, float, str]:
    """(verdict, CPU s, wall s, reason if unknown) of ``which`` search: the one before issue 17
    ("old"), today's with its compiled loop or with its Python loop; medians of ``repeats``."""
    cpu, wall, res = [], [], {}
    for _ in range(repeats):
        clear_memo()
        t, w = time.process_time(), time.perf_counter()
        res = run_as(which, (name, h, CHECK), TIME_LIMIT_S)
        cpu.append(time.process_time() - t)
        wall.append(time.perf_counter() - w)
    return res["valid"], statistics.median(cpu), statistics.median(wall), res.get("reason") or res.get("error", "")


def to_jepsen_log(h: list[dict[str, Any]]) -> str:
    """A generated etcd-shaped history (``corpus.etcd_history``: register starting at 0, timeouts as
    info) as a Jepsen etcd log Porcupine reads: a first write of 0 (Porcupine's register starts
    empty), a timed-out read as ``:fail :read :timed-out``, a timed-out write or cas as ``:info``.
    A failed cas is left out (invoke and completion): cachecert drops it as not having happened,
    Porcupine would have to place it, so both search the same ops."""
    def arg(f: str, v: Any) -> str:
        return "nil" if v is None else f"[{v[0]} {v[1]}]" if f == "cas" else str(v)

    lines = ["INFO  jepsen.util - 99999\t:invoke\t:write\t0", "INFO  jepsen.util - 99999\t:ok\t:write\t0"]
    skip = {i for op in pair(h).ops if op.type == "fail" for i in (op.index, op.cindex)}
    for i, r in enumerate(h):
        typ, f, v = r["type"], r["f"], r["value"]
        if i in skip:
            continue
        if typ == "info":
            typ, text = "fail" if f == "read" else "info", ":timed-out"
        else:
            text = arg(f, v)
        lines.append(f"INFO  jepsen.util - {r['process']}\t:{typ}\t:{f}\t{text}")
    return "\n".join(lines) + "\n"


LABEL = {"old": "cachecert before issue 17", "compiled": "cachecert, compiled loop", "python": "cachecert, Python loop"}


def compare(title: str, files: list[Path], repeats: int, expected: dict[str, bool] | None = None) -> None:
    """Porcupine and each of our searches on the same logs: totals, ratios, verdicts, slowest files."""
    histories = {f.name: parse_jepsen_log(f) for f in files}
    loops = ["old", "compiled", "python"] if wgl.available() else ["old", "python"]
    print(f"\n{title}: {len(files)} logs, {sum(len(h) for h in histories.values()) // 2:,} ops; "
          f"per file the median of {repeats}, summed")
    if "compiled" not in loops:
        print(f"  compiled loop not measured: {wgl.why_not()}")
    porc = run_porcupine(files, repeats)
    ours: dict[str, dict[str, tuple[Any, float, float, str]]] = {w: {} for w in loops}
    for name, h in histories.items():
        for w in loops:
            ours[w][name] = run_ours(name, h, w, repeats)
    p_unknown = [n for n in histories if porc[n]["linearizable"] == "unknown"]
    decided = [n for n in histories if n not in p_unknown]
    if p_unknown:
        print(f"  Porcupine did not decide {len(p_unknown)} within {TIME_LIMIT_S:g} s ({', '.join(p_unknown)}): "
              f"the totals below are over the {len(decided)} it decided")
    tot_p = [sum(porc[n]["cpu_s"] for n in decided), sum(porc[n]["wall_s"] for n in decided)]
    print(f"  {'':<28}{'CPU s':>8}{'wall s':>8}{'Porcupine CPU / its':>22}")
    print(f"  {'Porcupine (Go)':<28}{tot_p[0]:>8.3f}{tot_p[1]:>8.3f}{1.0:>21.2f}x")
    for w in loops:
        t = [sum(ours[w][n][1] for n in decided), sum(ours[w][n][2] for n in decided)]
        print(f"  {LABEL[w]:<28}{t[0]:>8.3f}{t[1]:>8.3f}{tot_p[0] / t[0] if t[0] else float('nan'):>21.2f}x")
    for n in p_unknown:
        print(f"  {n}: Porcupine undecided after {porc[n]['cpu_s']:.1f} CPU s; "
              + ", ".join(f"{LABEL[w]} {ours[w][n][0]} in {ours[w][n][1]:.2f} s" for w in loops))
    said = {True: "linearizable", False: "not", "unknown": "unknown"}
    for w in loops:
        verdicts = {n: v[0] for n, v in ours[w].items()}
        unknown = {n: ours[w][n][3] for n in histories if verdicts[n] == "unknown"}
        differ = [n for n in decided if n not in unknown and verdicts[n] != porc[n]["linearizable"]]
        same = [n for n in decided if n not in unknown and n not in differ]
        print(f"  {LABEL[w]}: same verdict as Porcupine on {len(same)} of {len(decided)} it decided"
              + (f"; differ: {', '.join(differ)}" if differ else "")
              + "".join(f"; {n} unknown ({why}; Porcupine: {said[porc[n]['linearizable']]})"
                        for n, why in unknown.items()))
    if expected is not None:
        wrong = [n for n in histories if n in expected and porc[n]["linearizable"] != expected[n]]
        print(f"  Porcupine's verdicts match its test's expectations on {len(histories) - len(wrong)} of "
              f"{len(histories)}" + (f" (not: {', '.join(wrong)})" if wrong else ""))
    slow = sorted(histories, key=lambda n: -porc[n]["cpu_s"])[:5]
    print(f"  slowest for Porcupine (CPU s: Porcupine -> {' -> '.join(loops)}):")
    for n in slow:
        print(f"    {porc[n]['cpu_s']:.4f} -> " + " -> ".join(f"{ours[w][n][1]:.4f}" for w in loops) + f"  {n}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--files", type=int, default=102, help="the first N of Porcupine's etcd logs")
    ap.add_argument("--seeds", default="0,5", help="etcd_set seeds of the generated set ('' for none)")
    ap.add_argument("--count", type=int, default=40, help="generated histories per seed")
    a = ap.parse_args()
    if shutil.which("go") is None:
        print("porcupine_bench: no go on PATH: skipped")
        return 0
    mod = module_dir()
    build()
    files = sorted((mod / "test_data" / "jepsen").glob("etcd_*.log"))[:a.files]
    expected = {f"etcd_{n:03d}.log": v for n, v in expected_verdicts(mod).items()}
    compare(f"Porcupine {MODULE.split('@')[1]}'s own etcd corpus", files, a.repeats, expected)
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    if seeds:
        with tempfile.TemporaryDirectory(prefix="porcupine-bench-") as tmp:
            gen = []
            for sd in seeds:
                for name, h in corpus.etcd_set(a.count, seed=sd):
                    path = Path(tmp) / f"{name}.log"
                    path.write_text(to_jepsen_log(h))
                    gen.append(path)
            compare(f"generated etcd-shaped (corpus.etcd_set, seeds {a.seeds}, {a.count} each)", gen, a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
