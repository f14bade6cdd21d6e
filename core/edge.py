"""The gRPC edge shared by the coordinator's and the agent's servicers: errors become statuses here.

It also hands the code below the edge what it needs to know of the call: the caller's request id (metadata
``x-isthmus-request-id``: a write that carries one is recognised when the same request comes again, see the
coordinator's registry) and the time by which the answer is due (the coordinator's etcd store gives up then).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from isthmus.core.errors import InvalidArgument, IsthmusError

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

REQUEST_ID_KEY = "x-isthmus-request-id"
# Trailing metadata on every error this edge answers: the client can tell the answer of a server (an etcd
# failure reported by a coordinator, say) from a server it could not reach (gRPC's own UNAVAILABLE).
ANSWERED_BY_KEY = "x-isthmus-error"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")

# A unary call is answered within this many seconds, or by the caller's deadline if that is sooner (less a
# margin to get the answer back): well under isthmusctl's default deadline of 10 s.
ANSWER_WITHIN = 6.0
DEADLINE_MARGIN = 0.5


@dataclass(frozen=True)
class _Call:
    """What the edge knows of the call being served, for the task that serves it."""

    task: asyncio.Task[Any] | None
    answer_by: float  # time.monotonic() by which it is to be answered
    request: tuple[str, str] | None  # (request id, servicer method) when the caller gave an id


_call: ContextVar[_Call | None] = ContextVar("isthmus_call", default=None)


def _current() -> _Call | None:
    call = _call.get()
    # A task started while serving a call inherits the context; it is not serving the call.
    return call if call is not None and call.task is asyncio.current_task() else None


def answer_by() -> float | None:
    """The time (``time.monotonic()``) by which the call being served is to be answered (None: not serving one)."""
    call = _current()
    return call.answer_by if call else None


def current_request() -> tuple[str, str] | None:
    """The request id the caller gave and the method it called, or None (no id given, or not in a request)."""
    call = _current()
    return call.request if call else None


@dataclass
class AuditSlot:
    """The audit record of the write being served, for the code below the edge to commit with the write.

    The coordinator's authorization fills it in (``make``: the record's etcd key and value); a write that
    commits it in its own transaction sets ``written``, and no separate audit write follows.
    """

    task: asyncio.Task[Any] | None
    make: Callable[[], tuple[str, bytes]]
    written: bool = False


_audit: ContextVar[AuditSlot | None] = ContextVar("isthmus_audit", default=None)


def audit_slot() -> AuditSlot | None:
    """The audit record the call being served wants written with its write (None: none, or another task)."""
    slot = _audit.get()
    return slot if slot is not None and slot.task is asyncio.current_task() else None


@contextlib.contextmanager
def auditing(slot: AuditSlot) -> Iterator[AuditSlot]:
    """Offer ``slot`` to the writes made while serving the call (in this task)."""
    token = _audit.set(slot)
    try:
        yield slot
    finally:
        _audit.reset(token)


def request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's request id ("" when none); INVALID_ARGUMENT for one that is not 8..64 of [A-Za-z0-9._:-]."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            if not _REQUEST_ID.fullmatch(text):
                raise InvalidArgument("must be 8 to 64 letters, digits or ._:- (a UUID will do)", REQUEST_ID_KEY)
            return text
    return ""


def grpc_errors(fn: F) -> F:
    """Translate the isthmus error tree (``isthmus.errors``) into gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        remaining = context.time_remaining()
        within = ANSWER_WITHIN if remaining is None else min(ANSWER_WITHIN, remaining - DEADLINE_MARGIN)
        by, task = time.monotonic() + within, asyncio.current_task()
        token = _call.set(_Call(task, by, None))
        try:
            rid = request_id(context)
            if rid:
                _call.set(_Call(task, by, (rid, fn.__qualname__)))
            return await fn(self, request, context)
        except IsthmusError as exc:
            code, message = exc.code_name, exc.message
        finally:
            _call.reset(token)
        # The status is set and nothing returned, rather than raised with context.abort: an exception's traceback
        # would hold the frames (and the request, up to the 4 MiB message limit) in a reference cycle until the
        # cycle collector runs, and a stream of large refused requests would pile up in memory meanwhile.
        context.set_trailing_metadata(((ANSWERED_BY_KEY, code),))
        context.set_code(getattr(grpc.StatusCode, code))
        context.set_details(message)
        return None

    return wrapper  # type: ignore[return-value]
