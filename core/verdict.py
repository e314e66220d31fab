"""The verdict: three values, one merge, one set of words, one set of exit codes.

Why this module exists: "valid / invalid / unknown" is the product, and it used to be turned into
words and exit codes in ten places with ten spellings. ``Verdict`` owns all of it. In data
(results.json, checker results, history-derived dicts) a verdict stays the plain JSON value
``true | false | "unknown"`` — ``Verdict.of`` reads any of those (anything else is unknown, never
valid), ``.value`` writes it back.

Exit codes, one meaning each, shared by every command: 0 valid · 1 anomaly found · 2 unknown
(incomplete, timed out, or an unreadable history) · 3 bad usage or configuration (nothing was run) ·
255 the harness itself failed (a service would not start, a crash). CI can tell "your strategy is
wrong" (1) from "we could not tell" (2) from "the harness or its input is broken" (3, 255).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, IntEnum
from typing import Any


class Exit(IntEnum):
    VALID = 0
    INVALID = 1
    UNKNOWN = 2
    USAGE = 3
    HARNESS = 255


class Verdict(Enum):
    VALID = True
    INVALID = False
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, value: Any) -> Verdict:
        """The verdict a JSON value stands for: only ``True`` is valid, only ``False`` invalid."""
        if isinstance(value, Verdict):
            return value
        if value is True:
            return cls.VALID
        if value is False:
            return cls.INVALID
        return cls.UNKNOWN

    @classmethod
    def merge(cls, values: Iterable[Any]) -> Verdict:
        """false > unknown > true; no verdict at all is unknown."""
        seen = [cls.of(v) for v in values]
        if cls.INVALID in seen:
            return cls.INVALID
        if not seen or cls.UNKNOWN in seen:
            return cls.UNKNOWN
        return cls.VALID

    @property
    def word(self) -> str:
        """For a headline: VALID / INVALID / UNKNOWN."""
        return {True: "VALID", False: "INVALID"}.get(self.value, "UNKNOWN")  # type: ignore[arg-type]

    @property
    def short(self) -> str:
        """For a checker's line: valid / INVALID (loud on purpose) / unknown."""
        return {True: "valid", False: "INVALID"}.get(self.value, "unknown")  # type: ignore[arg-type]

    @property
    def exit_code(self) -> Exit:
        return {True: Exit.VALID, False: Exit.INVALID}.get(self.value, Exit.UNKNOWN)  # type: ignore[arg-type]


def merge(values: Iterable[Any]) -> bool | str:
    """``Verdict.merge`` as a JSON value (what results and checker dicts hold)."""
    return Verdict.merge(values).value


def word(value: Any) -> str:
    return Verdict.of(value).word


def for_verdict(value: Any) -> Exit:
    """The exit code of a JSON verdict value."""
    return Verdict.of(value).exit_code


class UsageError(Exception):
    """Bad options or configuration: one line, exit code 3, nothing started."""
