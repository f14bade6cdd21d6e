"""The gRPC edge (isthmus.core.edge): what it hands the code below it of the call it serves."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from isthmus.core import edge


class FakeContext:
    """The part of grpc.aio.ServicerContext the edge uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), remaining: float | None = None) -> None:
        self.metadata = metadata
        self.remaining = remaining
        self.aborted: tuple[Any, str] | None = None
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    def set_code(self, code: Any) -> None:
        self.aborted = (code, self.aborted[1] if self.aborted else "")

    def set_details(self, details: str) -> None:
        self.aborted = (self.aborted[0] if self.aborted else None, details)


class Servicer:
    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    @edge.grpc_errors
    async def Create(self, request: object, context: Any) -> str:  # noqa: N802
        self.seen["here"] = (edge.answer_by(), edge.current_request())

        async def background() -> None:
            self.seen["task"] = (edge.answer_by(), edge.current_request())

        await asyncio.create_task(background())
        return "done"


async def test_the_call_s_deadline_and_request_id_reach_the_serving_task_only() -> None:
    s = Servicer()
    started = time.monotonic()
    assert await s.Create(None, FakeContext(((edge.REQUEST_ID_KEY, "req-0001-abcd"),), remaining=2.0)) == "done"
    by, request = s.seen["here"]
    assert started + 2.0 - edge.DEADLINE_MARGIN - 0.1 < by <= time.monotonic() + 2.0 - edge.DEADLINE_MARGIN
    assert request == ("req-0001-abcd", "Servicer.Create")
    assert s.seen["task"] == (None, None)  # a task it starts is not serving the call
    assert edge.answer_by() is None and edge.current_request() is None  # nothing left behind

    await s.Create(None, FakeContext())
    by, request = s.seen["here"]
    assert by <= time.monotonic() + edge.ANSWER_WITHIN and request is None


async def test_a_malformed_request_id_is_invalid_argument_marked_as_the_server_s_answer() -> None:
    context = FakeContext(((edge.REQUEST_ID_KEY, "no spaces, please"),))
    # The refusal is the call's status, set without raising (see core/edge.py): the handler returns nothing.
    assert await Servicer().Create(None, context) is None
    assert context.aborted is not None and context.aborted[0].name == "INVALID_ARGUMENT"
    assert context.aborted[1].startswith("x-isthmus-request-id: must be 8 to 64")
    assert context.trailing == ((edge.ANSWERED_BY_KEY, "INVALID_ARGUMENT"),)
