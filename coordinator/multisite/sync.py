"""The sync contract's gRPC face: SyncService (intents, rollouts, image ensure) and RegionAgentService (the
agents' sync stream). Each method converts with the wire modules and hands the work to ``sync_registry``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from isthmus.coordinator.auth import Auth, check_agent
from isthmus.coordinator.multisite.sync_planner import SyncPlanner
from isthmus.coordinator.multisite.sync_registry import (
    ImageNotReady,
    IntentView,
    QuotaAssignment,
    RegionSession,
    RegionSessions,
    SyncRegistry,
    TaskAssignment,
)
from isthmus.coordinator.multisite.views_planner import ViewsPlanner
from isthmus.coordinator.store import Store
from isthmus.core import model as m
from isthmus.core import sync as s
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import AlreadyExists, InvalidArgument, IsthmusError
from isthmus.core.wire import pieces
from isthmus.core.wire import sync as sync_wire
from isthmus.core.wire import views as views_wire
from isthmus.v1 import sync_pb2 as spb
from isthmus.v1 import sync_pb2_grpc
from isthmus.v1 import views_pb2 as vpb


def intent_to_pb(intent: s.SyncIntent) -> spb.SyncIntent:
    return sync_wire.to_pb(intent, spb.SyncIntent())


def status_to_pb(status: s.SyncStatus) -> spb.SyncStatus:
    return sync_wire.to_pb(status, spb.SyncStatus())


def view_to_pb(view: IntentView) -> spb.SyncView:
    out = spb.SyncView(intent=intent_to_pb(view.intent), statuses=[status_to_pb(x) for x in view.statuses])
    if view.rollout is not None:
        out.rollout.CopyFrom(sync_wire.to_pb(view.rollout, spb.Rollout()))
    return out


def assignment_to_pb(assignment: QuotaAssignment | TaskAssignment) -> spb.RegionDown:
    if isinstance(assignment, QuotaAssignment):
        return spb.RegionDown(quotas=vpb.QuotaAssignment(
            targets=[views_wire.quota_target_to_pb(x) for x in assignment.targets]))
    return spb.RegionDown(assignment=spb.Assignment(
        revision=assignment.revision, tasks=[sync_wire.to_pb(t, spb.SyncTask()) for t in assignment.tasks]))


class SyncService(sync_pb2_grpc.SyncServiceServicer):
    def __init__(self, registry: SyncRegistry) -> None:
        self.registry = registry

    @grpc_errors
    async def CreateSync(self, request: spb.SyncIntent, context: Any) -> spb.SyncIntent:  # noqa: N802
        return intent_to_pb(await self.registry.create(sync_wire.intent_from_pb(request)))

    @grpc_errors
    async def UpdateSync(self, request: spb.SyncIntent, context: Any) -> spb.SyncIntent:  # noqa: N802
        return intent_to_pb(await self.registry.update(sync_wire.intent_from_pb(request)))

    @grpc_errors
    async def GetSync(self, request: spb.GetSyncRequest, context: Any) -> spb.SyncView:  # noqa: N802
        return view_to_pb(await self.registry.show(request.name))

    @grpc_errors
    async def ListSyncs(self, request: spb.ListSyncsRequest, context: Any) -> spb.ListSyncsResponse:  # noqa: N802
        intents = await self.registry.list_intents(request.kind)
        chunk, token = pieces.page(intents, lambda i: i.name, request.page_size, request.page_token)
        views = [view_to_pb(await self.registry.view(i)) for i in chunk]
        # A view carries a row per region: the page also ends where its views reach the byte budget.
        fitted, cut = pieces.fit(views, pieces.byte_size, pieces.PAGE_BYTES)
        if cut:
            token = pieces.page_token(fitted[-1].intent.name)
        return spb.ListSyncsResponse(syncs=fitted, next_page_token=token)

    @grpc_errors
    async def DeleteSync(self, request: spb.DeleteSyncRequest, context: Any) -> spb.DeleteSyncResponse:  # noqa: N802
        return spb.DeleteSyncResponse(revision=await self.registry.delete(request.name, request.version))

    @grpc_errors
    async def ControlRollout(self, request: spb.ControlRolloutRequest, context: Any) -> spb.Rollout:  # noqa: N802
        rollout = await self.registry.control(request.name, request.action, list(request.skip_sites))
        return sync_wire.to_pb(rollout, spb.Rollout())

    @grpc_errors
    async def ListImages(self, request: spb.ListImagesRequest, context: Any) -> spb.ListImagesResponse:  # noqa: N802
        held = await self.registry.inventory(request.region)
        return spb.ListImagesResponse(region=held.site, openstack_region=held.region,
                                      updated_unix_ms=held.updated_unix_ms,
                                      images=[sync_wire.to_pb(i, spb.ImageInfo()) for i in held.images])

    async def EnsureImage(  # noqa: N802
        self, request: spb.EnsureImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.EnsureImageProgress]:
        try:
            async for status, done in self.registry.ensure_image(request.image, request.region, request.intent,
                                                                 request.timeout_seconds, request.wait_seconds):
                yield spb.EnsureImageProgress(status=status_to_pb(status), done=done)
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), exc.message)
        except ImageNotReady as exc:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))


class RegionAgentService(sync_pb2_grpc.RegionAgentServiceServicer):
    """The agents' sync stream: assignments down, statuses, image inventory and view reports up."""

    def __init__(self, store: Store, planner: SyncPlanner, auth: Auth | None = None,
                 views: ViewsPlanner | None = None, lease_ttl: int = 10) -> None:
        self.sessions = RegionSessions(store, planner, views, lease_ttl)
        self.auth = auth

    async def Attach(  # noqa: N802
        self, request_iterator: AsyncIterator[spb.RegionUp], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.RegionDown]:
        requests = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(requests.__anext__(), timeout=30)
        except (StopAsyncIteration, TimeoutError):
            first = spb.RegionUp()
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello: the agent must send RegionHello first")
        hello = first.hello
        try:
            m.check_name(hello.site, "hello.site")
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await check_agent(self.auth, context, hello.site, "/isthmus.v1.RegionAgentService/Attach")
        try:
            session = self.sessions.open(hello.site, hello.region, hello.instance_id)
        except AlreadyExists as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, exc.message)
        reader: asyncio.Task[None] | None = None
        try:
            await session.attach()
            reader = asyncio.create_task(self._read(session, requests), name=f"sync-read-{hello.site}")
            async for assignment in session.assignments(reader):
                yield assignment_to_pb(assignment)
        finally:
            # Bookkeeping first, without awaiting: a second cancellation must not leave the site claimed.
            session.release()
            if reader is not None:
                reader.cancel()
            await session.close()

    @staticmethod
    async def _read(session: RegionSession, requests: AsyncIterator[spb.RegionUp]) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("msg")
            if kind == "report":
                await session.report_statuses([sync_wire.status_from_pb(x) for x in msg.report.statuses])
            elif kind == "usage":
                await session.report_usage(views_wire.usage_from_pb(msg.usage))
            elif kind == "capacity":
                await session.report_capacity(views_wire.capacity_from_pb(msg.capacity))
            elif kind == "addresses":
                await session.report_addresses(views_wire.address_report_from_pb(msg.addresses))
            elif kind == "inventory":
                await session.report_inventory([sync_wire.image_info_from_pb(x) for x in msg.inventory.images])
