"""What the coordinator asks of the agent besides its desired state: a page of the host's logs, the list of its
log sources, and the region's health reports. A page is read in a thread, at most READERS at once, so the link
and the reconciler never wait on a log file."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from isthmus.core.errors import IsthmusError
from isthmus.v1 import agent_pb2 as apb

if TYPE_CHECKING:
    from isthmus.agent.logs import LogBook
    from isthmus.agent.multisite.health import RegionHealth

log = logging.getLogger(__name__)

READERS = 2  # log pages read at once


class Remote:
    def __init__(self, site: str) -> None:
        self.site = site
        self.logs: LogBook | None = None
        self.health: RegionHealth | None = None
        self._readers = asyncio.Semaphore(READERS)
        self._tasks: set[asyncio.Task[None]] = set()

    def answer(self, req: apb.LogRequest, outbox: asyncio.Queue[apb.AgentMessage]) -> None:
        task = asyncio.create_task(self._answer(req, outbox), name=f"log-request-{req.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """The stream ended: nobody waits for the answers being read."""
        for task in list(self._tasks):
            task.cancel()

    async def _answer(self, req: apb.LogRequest, outbox: asyncio.Queue[apb.AgentMessage]) -> None:
        reply = apb.LogAnswer(id=req.id)
        book = self.logs
        if book is None:
            reply.error = f"site {self.site}: its agent has no log sources (isthmus-agent --log-file, --log-unit)"
            reply.code = "FAILED_PRECONDITION"
        elif req.list_sources:
            reply.sources.CopyFrom(book.list_sources())
        else:
            async with self._readers:
                try:
                    reply.page.CopyFrom(await asyncio.to_thread(book.read, req.query))
                except IsthmusError as exc:
                    reply.error, reply.code = str(exc), exc.code_name
                except OSError as exc:
                    log.warning("site %s: reading logs failed: %s", self.site, exc)
                    reply.error, reply.code = f"site {self.site}: reading logs failed: {exc}", "UNAVAILABLE"
        outbox.put_nowait(apb.AgentMessage(log_answer=reply))

    async def send_health(self, outbox: asyncio.Queue[apb.AgentMessage]) -> None:
        """The last report on connect (if any), then each new one."""
        health = self.health
        if health is None:
            return
        while True:
            if health.report is not None:
                health.changed.clear()
                outbox.put_nowait(apb.AgentMessage(health=health.report))
            await health.changed.wait()
