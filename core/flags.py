"""Command-line value types shared by isthmusctl and the daemons (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import re

_DURATION = re.compile(r"(\d+)([smhd]?)", re.ASCII)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_DAYS = 3650


def duration(text: str) -> int:
    """Whole seconds of a --ttl: '90' or '30s', '15m', '2h', '1d'; 0 means no expiry."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected seconds or a duration like 30s, 15m, 2h, 1d, got {text!r}")
    value = int(match[1]) * _DURATION_UNITS[match[2]]
    # The agent keeps expiry times in int64 milliseconds; a bound far below that keeps them valid.
    if value > MAX_TTL_DAYS * 86400:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_TTL_DAYS}d; use 0 for no expiry")
    return value
