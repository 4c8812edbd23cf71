"""Page cursors of listings (jobs, the audit log): the ``seq`` of the last row of the previous page."""

from __future__ import annotations

from tierserve.errors import InvalidInput

MAX_CURSOR = 2**63 - 1  # the stores' integer columns are signed 64-bit


def parse_cursor(raw: str | None) -> int | None:
    """``next_cursor`` of a previous page as the integer the stores compare with; 400 for anything
    else ("²" is a digit to ``str.isdigit`` but not to ``int``; 10**23 overflows SQLite)."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_CURSOR:
        raise InvalidInput(f"invalid cursor '{raw[:40]}': use the next_cursor of the previous page")
    return int(raw)
