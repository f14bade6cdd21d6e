"""The gRPC edge shared by the coordinator's and the agent's servicers: errors become statuses here."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from isthmus.core.errors import IsthmusError

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def grpc_errors(fn: F) -> F:
    """Translate the isthmus error tree (``isthmus.errors``) into gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except IsthmusError as exc:
            code, message = exc.code_name, exc.message
        # The status is set and nothing returned, rather than raised with context.abort: an exception's traceback
        # would hold the frames (and the request, up to the 4 MiB message limit) in a reference cycle until the
        # cycle collector runs, and a stream of large refused requests would pile up in memory meanwhile.
        context.set_code(getattr(grpc.StatusCode, code))
        context.set_details(message)
        return None

    return wrapper  # type: ignore[return-value]
