"""The global views' gRPC face (GlobalViewService): each method converts the request with the wire module,
calls one operation of the views registry and converts the answer back."""

from __future__ import annotations

from typing import Any

from isthmus.coordinator.multisite.views_planner import ViewsPlanner
from isthmus.coordinator.multisite.views_registry import ViewsRegistry
from isthmus.coordinator.store import Store
from isthmus.core.edge import grpc_errors
from isthmus.core.wire import pieces
from isthmus.core.wire import views as wire
from isthmus.v1 import views_pb2 as vpb
from isthmus.v1 import views_pb2_grpc


class GlobalViewService(views_pb2_grpc.GlobalViewServiceServicer):
    def __init__(self, store: Store, views: ViewsPlanner) -> None:
        self.registry = ViewsRegistry(store, views)

    @grpc_errors
    async def SetQuota(self, request: vpb.QuotaLimit, context: Any) -> vpb.QuotaLimit:  # noqa: N802
        return wire.quota_limit_to_pb(await self.registry.set_quota(wire.quota_limit_from_pb(request)))

    @grpc_errors
    async def UnsetQuota(self, request: vpb.UnsetQuotaRequest, context: Any) -> vpb.UnsetQuotaResponse:  # noqa: N802
        rev, removed = await self.registry.unset_quota(request.project, request.resource)
        return vpb.UnsetQuotaResponse(revision=rev, removed=removed)

    @grpc_errors
    async def ListQuotas(self, request: vpb.ListQuotasRequest, context: Any) -> vpb.ListQuotasResponse:  # noqa: N802
        limits = [wire.quota_limit_to_pb(x) for x in self.registry.quota_limits()]
        chunk, token = pieces.page(limits, lambda x: f"{x.project}\0{x.resource}", request.page_size,
                                   request.page_token, pieces.byte_size)
        return vpb.ListQuotasResponse(limits=chunk, next_page_token=token)

    @grpc_errors
    async def GetQuota(self, request: vpb.GetQuotaRequest, context: Any) -> vpb.ProjectQuota:  # noqa: N802
        return wire.project_quota_to_pb(self.registry.project_quota(request.project))

    @grpc_errors
    async def GetCapacity(self, request: vpb.GetCapacityRequest, context: Any) -> vpb.Capacity:  # noqa: N802
        return wire.capacity_to_pb(self.registry.capacity())

    @grpc_errors
    async def ListAddresses(  # noqa: N802
        self, request: vpb.ListAddressesRequest, context: Any
    ) -> vpb.ListAddressesResponse:
        found = [wire.address_record_to_pb(x.to_json()) for x in self.registry.lookup(request.query)]
        chunk, token = pieces.page(found, lambda x: f"{x.region}\0{x.kind}\0{x.id}", request.page_size,
                                   request.page_token, pieces.byte_size)
        return vpb.ListAddressesResponse(records=chunk, next_page_token=token)

    @grpc_errors
    async def ListAddressConflicts(  # noqa: N802
        self, request: vpb.ListAddressConflictsRequest, context: Any
    ) -> vpb.ListAddressConflictsResponse:
        found = [wire.address_conflict_to_pb(c.to_json()) for c in self.registry.conflicts()]
        chunk, token = pieces.page(found, lambda c: f"{c.kind}\0{c.domain}\0{c.value}", request.page_size,
                                   request.page_token, pieces.byte_size)
        return vpb.ListAddressConflictsResponse(conflicts=chunk, next_page_token=token)

    @grpc_errors
    async def CreateRoutingDomain(self, request: vpb.RoutingDomain, context: Any) -> vpb.RoutingDomain:  # noqa: N802
        return wire.routing_domain_to_pb(await self.registry.create_domain(wire.routing_domain_from_pb(request)))

    @grpc_errors
    async def UpdateRoutingDomain(self, request: vpb.RoutingDomain, context: Any) -> vpb.RoutingDomain:  # noqa: N802
        return wire.routing_domain_to_pb(await self.registry.update_domain(wire.routing_domain_from_pb(request)))

    @grpc_errors
    async def GetRoutingDomain(  # noqa: N802
        self, request: vpb.GetRoutingDomainRequest, context: Any
    ) -> vpb.RoutingDomain:
        return wire.routing_domain_to_pb(self.registry.get_domain(request.name))

    @grpc_errors
    async def ListRoutingDomains(  # noqa: N802
        self, request: vpb.ListRoutingDomainsRequest, context: Any
    ) -> vpb.ListRoutingDomainsResponse:
        domains = [wire.routing_domain_to_pb(d) for d in self.registry.list_domains()]
        chunk, token = pieces.page(domains, lambda d: d.name, request.page_size, request.page_token, pieces.byte_size)
        return vpb.ListRoutingDomainsResponse(domains=chunk, next_page_token=token)

    @grpc_errors
    async def DeleteRoutingDomain(  # noqa: N802
        self, request: vpb.DeleteRoutingDomainRequest, context: Any
    ) -> vpb.DeleteRoutingDomainResponse:
        return vpb.DeleteRoutingDomainResponse(revision=await self.registry.delete_domain(request.name,
                                                                                          request.version))
