"""Exit codes, one meaning each, shared by every command.

0 valid · 1 anomaly found · 2 unknown (incomplete, timed out, or an unreadable history) ·
3 bad usage or configuration (nothing was run) · 255 the harness itself failed (a service would
not start, a crash). CI can tell "your strategy is wrong" (1) from "we could not tell" (2) from
"the harness or its input is broken" (3, 255).
"""

VALID = 0
INVALID = 1
UNKNOWN = 2
USAGE = 3
HARNESS = 255


def for_verdict(valid: object) -> int:
    if valid is True:
        return VALID
    if valid is False:
        return INVALID
    return UNKNOWN


class UsageError(Exception):
    """Bad options or configuration: one line, exit code 3, nothing started."""
