"""harness/dbreads.parse: PostgreSQL's statement log read back into DB loads (the DB-side count a
black-box service's herd is judged on). Real log lines of the embedded PostgreSQL 15, both query
protocols; everything that is not a one-key read of kv is left out."""

from __future__ import annotations

from datetime import UTC, datetime

from harness.dbreads import parse

T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC).timestamp()
LOG = """\
2026-12-05 08:00:01.250 UTC [101] LOG:  execute stmtcache_9f1: select value, version from kv where key = $1
2026-12-05 08:00:01.250 UTC [101] DETAIL:  parameters: $1 = 'k0'
2026-12-05 08:00:01.300 UTC [102] LOG:  statement: SELECT value, version FROM kv WHERE key = 'k1'
2026-12-05 08:00:01.400 UTC [103] LOG:  execute <unnamed>: insert into kv (key, value, version) values ($1, $2, 1)
\t on conflict (key) do update set value = excluded.value returning version
2026-12-05 08:00:01.400 UTC [103] DETAIL:  parameters: $1 = 'k0', $2 = '5'
2026-12-05 08:00:01.500 UTC [104] LOG:  execute s1: select v.value, v.version
\t from kv v where v.version > $1 and key = $2
2026-12-05 08:00:01.500 UTC [104] DETAIL:  parameters: $1 = '0', $2 = 'it''s'
2026-12-05 08:00:01.600 UTC [105] LOG:  statement: select 1
2026-12-05 08:00:01.700 UTC [106] LOG:  statement: select * from kv_log where key = 'k0'
"""


def test_one_key_reads_of_kv_with_the_servers_time() -> None:
    assert parse(LOG, T0) == [[1.25, "k0"], [1.3, "k1"], [1.5, "it's"]]


def test_nothing_to_read_is_an_empty_list() -> None:
    assert parse("", T0) == []
    assert parse("2026-12-05 08:00:01.250 UTC [1] WARNING:  something\n", T0) == []
