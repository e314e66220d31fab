"""No cache at all: every read and write goes to PostgreSQL. The reference every strategy is
compared with (linearizable per key, 100% DB load), and a negative control for the checkers."""

from __future__ import annotations

from typing import Any, ClassVar

from strategies.base import Env, KvTable


class NoCache:
    name: ClassVar[str] = "no-cache"

    def setup(self, env: Env) -> None:
        self.db = KvTable(env.pg())

    def read(self, key: str) -> dict[str, Any]:
        value, version = self.db.read(key)
        return {"value": value, "version": version, "source": "db", "hit": False, "db_load": True}

    def write(self, key: str, value: Any) -> dict[str, Any]:
        return {"version": self.db.write(key, value)}

    def close(self) -> None:
        pass
