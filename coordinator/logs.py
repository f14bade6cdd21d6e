"""LogService: a site's OpenStack logs read through its agent's stream, one page at a time.

The next page is asked for only once the last one is written (gRPC's flow control holds the write while the
client does not read), so a slow client slows its own stream and nothing else: the agent reads nothing it was
not asked for. Nothing is kept here or in etcd. Reading needs the operator role (the name ReadLogs is not a
read prefix of ``auth.required_role``); each stream is audited once, with what it asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from isthmus.coordinator import registry as r
from isthmus.coordinator.agents import AgentService, AgentSession, AgentStatusRecord
from isthmus.coordinator.auth import Auth, on_behalf_of
from isthmus.core import logs as q
from isthmus.core import model as m
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import FailedPrecondition, IsthmusError, Unavailable
from isthmus.v1 import agent_pb2 as apb
from isthmus.v1 import logs_pb2 as lpb
from isthmus.v1 import logs_pb2_grpc

ANSWER_WITHIN = 30.0  # seconds an agent has to answer one page (it reads at most SCAN_SECONDS of matching)
STREAMS_PER_SITE = 4  # ReadLogs streams reading from one agent at once
METHOD = "/isthmus.v1.LogService/ReadLogs"


class ResourceExhausted(IsthmusError):
    code_name = "RESOURCE_EXHAUSTED"


class LogService(logs_pb2_grpc.LogServiceServicer):
    def __init__(self, agents: AgentService, auth: Auth, follow_every: float = 1.0) -> None:
        self.agents = agents
        self.auth = auth
        self.follow_every = follow_every

    async def _session(self, site: str) -> AgentSession:
        """The site's agent session on this coordinator; else why not, naming the coordinator that has it."""
        m.check_name(site, "site")
        session = self.agents.sessions.get(site)
        if session is not None and not session.closed:
            return session
        kv = await self.agents.store.get(r.status_key(site))
        holder = AgentStatusRecord.decode(kv.value).coordinator if kv is not None else ""
        if holder == self.agents.advertise:
            raise Unavailable(f"site {site}: its agent disconnected from this coordinator")
        if holder:
            raise FailedPrecondition(f"site {site}: its agent is connected to coordinator {holder}; ask that one "
                                     f"(isthmusctl --coordinator {holder} logs ...)")
        raise Unavailable(f"site {site}: no agent connected; on the site's host, isthmusctl local logs reads "
                          "the same through the agent's admin socket")

    @grpc_errors
    async def ListLogSources(  # noqa: N802
        self, request: lpb.ListLogSourcesRequest, context: Any
    ) -> lpb.ListLogSourcesResponse:
        session = await self._session(request.site)
        answer = await session.ask(apb.LogRequest(list_sources=True), ANSWER_WITHIN)
        _raise(answer)
        return answer.sources

    async def ReadLogs(  # noqa: N802
        self, request: lpb.LogQuery, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[lpb.LogPage]:
        try:
            q.check_query(list(request.services), request.grep, request.level, request.limit)
            session = await self._session(request.site)
            if session.log_streams >= STREAMS_PER_SITE:
                raise ResourceExhausted(f"site {request.site}: {STREAMS_PER_SITE} log streams read from its agent "
                                        "already; wait for one to end")
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), str(exc))
        who = self.auth.principal(context)
        if who is not None:
            await self.auth.audit(who, METHOD, True, _describe(request), on_behalf_of(context))
        session.log_streams += 1
        try:
            async for page in self._pages(request):
                yield page
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), str(exc))
        finally:
            session.log_streams -= 1

    async def _pages(self, request: lpb.LogQuery) -> AsyncIterator[lpb.LogPage]:
        query = lpb.LogQuery()
        query.CopyFrom(request)
        query.follow = False
        while True:
            session = await self._session(request.site)  # a reconnected agent: its new session
            answer = await session.ask(apb.LogRequest(query=query), ANSWER_WITHIN)
            _raise(answer)
            page = answer.page
            if page.lines or page.notes or not request.follow:
                yield page
            query.cursor = page.cursor
            if page.more:
                continue
            if not request.follow:
                return
            await asyncio.sleep(self.follow_every)


def _raise(answer: apb.LogAnswer) -> None:
    if answer.error:
        error = IsthmusError(answer.error)
        error.code_name = answer.code if hasattr(grpc.StatusCode, answer.code) else "UNAVAILABLE"
        raise error


def _describe(request: lpb.LogQuery) -> str:
    parts = [f"site={request.site}", f"services={','.join(request.services) or '(all)'}"]
    if request.grep:
        parts.append(f"grep={request.grep!r}")
    if request.level:
        parts.append(f"level={request.level}")
    if request.since_unix_ms:
        parts.append(f"since_unix_ms={request.since_unix_ms}")
    if request.follow:
        parts.append("follow")
    return " ".join(parts)
