"""What the coordinator and the agent agree on about reading logs: levels, the bounds of a query, and which
regular expressions are safe to run on another host's log lines (refused before anything is read)."""

from __future__ import annotations

import importlib
import re
from typing import Any

from isthmus.core.errors import InvalidArgument

# The parsed form of a pattern, the only way to see its structure (typeshed knows these modules only by their
# deprecated names, which warn on import).
sre_parser: Any = importlib.import_module("re._parser")
sre_constants: Any = importlib.import_module("re._constants")

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# How the services write their level; TRACE is oslo.log's level of a traceback's lines (logged at ERROR).
LEVEL_NAMES = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "WARN": "WARNING", "ERROR": "ERROR",
               "CRITICAL": "CRITICAL", "FATAL": "CRITICAL", "TRACE": "ERROR", "AUDIT": "INFO"}

DEFAULT_PAGE = 500
MAX_PAGE = 5000
DEFAULT_WINDOW_S = 3600  # without --since: the last hour
MAX_LINE = 8192  # characters of a line sent (the rest is cut, marked with "...")
MAX_MATCHED = 4096  # characters of a line the pattern runs on
MAX_GREP = 256  # characters of a pattern
MAX_UNBOUNDED = 3  # repeats without an upper bound (*, +, {n,}) in one pattern

_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT}
_REFUSED = {
    sre_constants.GROUPREF: "a backreference",
    sre_constants.GROUPREF_EXISTS: "a conditional group",
    sre_constants.ASSERT: "a lookahead or lookbehind",
    sre_constants.ASSERT_NOT: "a lookahead or lookbehind",
}


def level_rank(level: str) -> int:
    """The rank of a query's minimum level ("" or an unknown name: 0, every line)."""
    return LEVELS.get(level.lower(), 0)


def check_level(level: str) -> str:
    if level and level.lower() not in LEVELS:
        raise InvalidArgument(f"level: {level!r} is not one of {', '.join(LEVELS)}")
    return level.lower()


def check_limit(limit: int) -> int:
    if limit < 0 or limit > MAX_PAGE:
        raise InvalidArgument(f"limit: {limit} lines is not between 0 and {MAX_PAGE}")
    return limit or DEFAULT_PAGE


def compile_grep(pattern: str) -> re.Pattern[str] | None:
    """The pattern compiled, or None for "". Raises InvalidArgument (naming ``grep``) for a pattern that could
    run away on a long line: longer than MAX_GREP, a backreference, a lookaround, a repeat inside a repeat,
    an alternation inside a repeat, or more than MAX_UNBOUNDED unbounded repeats."""
    if not pattern:
        return None
    if len(pattern) > MAX_GREP:
        raise InvalidArgument(f"grep: the pattern is {len(pattern)} characters, more than {MAX_GREP}")
    try:
        parsed = sre_parser.parse(pattern)
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidArgument(f"grep: not a regular expression: {exc}") from exc
    unbounded = _walk(parsed, in_repeat=False)
    if unbounded > MAX_UNBOUNDED:
        raise InvalidArgument(f"grep: {unbounded} unbounded repeats (*, +, {{n,}}); at most {MAX_UNBOUNDED}")
    return compiled


def _walk(items: Any, in_repeat: bool) -> int:
    """Refuse what backtracks without bound; the number of unbounded repeats."""
    unbounded = 0
    for op, av in items:
        if op in _REFUSED:
            raise InvalidArgument(f"grep: {_REFUSED[op]} is not allowed (it can make matching run away)")
        if op in _REPEATS:
            low, high, body = av
            if in_repeat:
                raise InvalidArgument("grep: a repeat inside a repeat (like (a+)+) is not allowed: it can make "
                                      "matching run away")
            if high == sre_constants.MAXREPEAT:
                unbounded += 1
            elif high > 1000:
                raise InvalidArgument(f"grep: a repeat of up to {high} is more than 1000")
            unbounded += _walk(body, in_repeat=high > 1)
        elif op == sre_constants.BRANCH:
            if in_repeat:
                raise InvalidArgument("grep: an alternation inside a repeat (like (a|b)*) is not allowed: it can "
                                      "make matching run away; use a character class")
            for branch in av[1]:
                unbounded += _walk(branch, in_repeat)
        elif op == sre_constants.SUBPATTERN:
            unbounded += _walk(av[-1], in_repeat)
        elif op == sre_constants.ATOMIC_GROUP:
            unbounded += _walk(av, in_repeat)
    return unbounded


def check_query(services: list[str], grep: str, level: str, limit: int) -> None:
    """Everything a coordinator can refuse before asking the agent (InvalidArgument naming the field)."""
    for name in services:
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidArgument(f"services: {name!r} is not a log source name")
    compile_grep(grep)
    check_level(level)
    check_limit(limit)
