"""The Porcupine benchmark's own conversions (benchmarks/porcupine_bench.py), without Go.

Its figures mean something only if both checkers read the same histories: a generated history
written as a Jepsen etcd log and read back must get the verdict the original gets, and a log must
be read the way Porcupine's own parser reads it (timed-out reads unknown, unfinished ops pending).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.porcupine_bench import CHECK, parse_jepsen_log, to_jepsen_log
from checkers import corpus, linearizable


def test_a_generated_history_written_as_a_jepsen_log_keeps_its_verdict(tmp_path: Path) -> None:
    verdicts = []
    for name, h in corpus.etcd_set(9, seed=0, max_ops=300):
        path = tmp_path / f"{name}.log"
        path.write_text(to_jepsen_log(h))
        back = parse_jepsen_log(path)
        assert not any(r["type"] == "fail" for r in back)  # failed cas ops are left out for both checkers
        want = linearizable.check(h, **corpus.ETCD_CHECK)["valid"]
        assert linearizable.check(back, **CHECK)["valid"] == want, name
        verdicts.append(want)
    assert True in verdicts and False in verdicts  # both ways: the set holds linearizable and broken histories


def test_a_jepsen_log_is_read_as_porcupine_reads_it(tmp_path: Path) -> None:
    log = tmp_path / "etcd.log"
    log.write_text("\n".join([
        "INFO  jepsen.util - 0\t:invoke\t:write\t1",
        "INFO  jepsen.util - 0\t:ok\t:write\t1",
        "INFO  jepsen.util - 1\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 1\t:fail\t:read\t:timed-out",
        "INFO  jepsen.util - 2\t:invoke\t:cas\t[1 2]",
        "INFO  jepsen.util - 2\t:info\t:cas\t:timed-out",
        "INFO  jepsen.util - 3\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 3\t:ok\t:read\t2",
        "INFO  jepsen.util - 4\t:invoke\t:write\t5",
        "INFO :nemesis :info :start nil",
    ]))
    h = parse_jepsen_log(log)
    assert [(r["process"], r["type"], r["value"]) for r in h] == [
        (0, "invoke", 1), (0, "ok", 1), (1, "invoke", None), (1, "info", None), (2, "invoke", [1, 2]),
        (2, "info", [1, 2]), (3, "invoke", None), (3, "ok", 2), (4, "invoke", 5), (4, "info", 5)]
    assert linearizable.check(h, **CHECK)["valid"] is True  # the timed-out cas took effect before the read of 2
    log.write_text(log.read_text().replace(":ok\t:read\t2", ":ok\t:read\t7"))
    assert linearizable.check(parse_jepsen_log(log), **CHECK)["valid"] is False  # 7 was never written
