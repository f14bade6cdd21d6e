"""The public API servicers: protobuf in, domain objects to the registry, protobuf out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio

from isthmus.coordinator import answers
from isthmus.coordinator import registry as r
from isthmus.coordinator.agents import JOURNAL_KEPT, AgentStatusRecord
from isthmus.coordinator.auth import AUDIT, list_audit
from isthmus.coordinator.border import BorderRegistry
from isthmus.coordinator.events import READ_PARALLEL, EventFilter, EventWriter, list_events
from isthmus.coordinator.leader import list_coordinators
from isthmus.coordinator.planner import Planner
from isthmus.coordinator.registry import Registry
from isthmus.coordinator.store import KV, Event, Store
from isthmus.core import border
from isthmus.core import model as m
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import InvalidArgument, IsthmusError, NotFound
from isthmus.core.wire import border as border_wire
from isthmus.core.wire import network as wire
from isthmus.core.wire import pieces
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc
from isthmus.v1 import l2gw_pb2 as l2pb
from isthmus.v1 import l2gw_pb2_grpc as l2_grpc
from isthmus.v1 import types_pb2 as pb

log = logging.getLogger(__name__)

LAST_STATUS_READ = 100  # keys per read of last reports (etcd allows 128 operations per transaction)



class SiteService(api_pb2_grpc.SiteServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @grpc_errors
    async def CreateSite(self, request: pb.Site, context: Any) -> pb.Site:  # noqa: N802
        return wire.site_to_pb(await self.registry.create_site(wire.site_from_pb(request)))

    @grpc_errors
    async def GetSite(self, request: api.GetSiteRequest, context: Any) -> pb.Site:  # noqa: N802
        return wire.site_to_pb(await self.registry.get_site(request.name))

    @grpc_errors
    async def ListSites(self, request: api.ListSitesRequest, context: Any) -> api.ListSitesResponse:  # noqa: N802
        sites, rev = await self.registry.list_sites()
        chunk, token = pieces.page_of(sites, lambda x: x.name, request.page_size, request.page_token, wire.site_to_pb)
        return api.ListSitesResponse(sites=chunk, revision=rev, next_page_token=token)

    @grpc_errors
    async def UpdateSite(self, request: pb.Site, context: Any) -> pb.Site:  # noqa: N802
        kind = wire.site_from_pb(request).kind if request.kind else None
        site = await self.registry.update_site(
            request.name,
            labels=dict(request.labels),
            description=request.description,
            version=request.version,
            kind=kind,
            parent=request.parent or None,
        )
        return wire.site_to_pb(site)

    @grpc_errors
    async def DeleteSite(self, request: api.DeleteSiteRequest, context: Any) -> api.DeleteResponse:  # noqa: N802
        return api.DeleteResponse(revision=await self.registry.delete_site(request.name, request.version,
                                                                            request.force))


class EndpointService(api_pb2_grpc.EndpointServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @grpc_errors
    async def CreateEndpoint(self, request: pb.Endpoint, context: Any) -> pb.Endpoint:  # noqa: N802
        return wire.endpoint_to_pb(await self.registry.create_endpoint(wire.endpoint_from_pb(request)))

    @grpc_errors
    async def GetEndpoint(self, request: api.GetEndpointRequest, context: Any) -> pb.Endpoint:  # noqa: N802
        return wire.endpoint_to_pb(await self.registry.get_endpoint(request.site, request.name))

    @grpc_errors
    async def ListEndpoints(  # noqa: N802
        self, request: api.ListEndpointsRequest, context: Any
    ) -> api.ListEndpointsResponse:
        eps, rev = await self.registry.list_endpoints(request.site)
        chunk, token = pieces.page_of(eps, lambda e: f"{e.site}/{e.name}", request.page_size, request.page_token,
                                      wire.endpoint_to_pb)
        return api.ListEndpointsResponse(endpoints=chunk, revision=rev, next_page_token=token)

    @grpc_errors
    async def UpdateEndpoint(self, request: pb.Endpoint, context: Any) -> pb.Endpoint:  # noqa: N802
        ep = wire.endpoint_from_pb(request)
        return wire.endpoint_to_pb(
            await self.registry.update_endpoint(ep, role_given=request.role != pb.ENDPOINT_ROLE_UNSPECIFIED)
        )

    @grpc_errors
    async def DeleteEndpoint(  # noqa: N802
        self, request: api.DeleteEndpointRequest, context: Any
    ) -> api.DeleteResponse:
        rev = await self.registry.delete_endpoint(request.site, request.name, request.version)
        return api.DeleteResponse(revision=rev)


class ConnectionService(api_pb2_grpc.ConnectionServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @grpc_errors
    async def CreateConnection(self, request: pb.Connection, context: Any) -> pb.Connection:  # noqa: N802
        if request.policy:
            raise InvalidArgument("is set by the coordinator on the connections a topology policy makes", "policy")
        conn = await self.registry.create_connection(wire.connection_from_pb(request))
        return wire.connection_to_pb(conn)

    @grpc_errors
    async def GetConnection(self, request: api.GetConnectionRequest, context: Any) -> pb.Connection:  # noqa: N802
        return wire.connection_to_pb(await self.registry.get_connection(request.name))

    @grpc_errors
    async def ListConnections(  # noqa: N802
        self, request: api.ListConnectionsRequest, context: Any
    ) -> api.ListConnectionsResponse:
        conns, rev = await self.registry.list_connections(request.site)
        chunk, token = pieces.page_of(conns, lambda c: c.name, request.page_size, request.page_token,
                                      wire.connection_to_pb)
        return api.ListConnectionsResponse(connections=chunk, revision=rev, next_page_token=token)

    @grpc_errors
    async def UpdateConnection(self, request: pb.Connection, context: Any) -> pb.Connection:  # noqa: N802
        type_given = request.type != pb.CONNECTION_TYPE_UNSPECIFIED
        if not type_given:
            # The type is fixed; fill it in so the message converts, the registry keeps the stored one.
            current = await self.registry.get_connection(request.name)
            request.type = wire.connection_to_pb(current).type
        conn = wire.connection_from_pb(request)
        return wire.connection_to_pb(await self.registry.update_connection(conn, type_given=type_given))

    @grpc_errors
    async def DeleteConnection(  # noqa: N802
        self, request: api.DeleteConnectionRequest, context: Any
    ) -> api.DeleteResponse:
        return api.DeleteResponse(revision=await self.registry.delete_connection(request.name, request.version))


class StatusService(api_pb2_grpc.StatusServiceServicer):
    """Desired (from the planner) next to observed (from the agents' status keys), per site."""

    WATCH_KINDS = {"site": r.SITES, "endpoint": r.ENDPOINTS, "connection": r.CONNECTIONS, "status": r.STATUS}

    def __init__(self, store: Store, planner: Planner, events: EventWriter | None = None) -> None:
        self.store = store
        self.planner = planner
        self.events = events  # this coordinator's event writer: journal entries not stored yet show too

    async def _journals(self, sites: list[str]) -> dict[str, list[m.JournalEntry]]:
        """The newest JOURNAL_KEPT journal entries of each site, from the event history (not in the status key:
        written there with every status change, they made most of etcd's growth)."""
        out: dict[str, list[m.JournalEntry]] = {}
        for start in range(0, len(sites), READ_PARALLEL):
            chunk = sites[start:start + READ_PARALLEL]
            found = await asyncio.gather(*(list_events(self.store, EventFilter(site=s), JOURNAL_KEPT) for s in chunk))
            for site, (events, _) in zip(chunk, found, strict=True):
                waiting = self.events.pending.get(site, {}) if self.events is not None else {}
                entries = {e.seq: e for e in [*events, *waiting.values()]}
                out[site] = [entries[seq].to_journal() for seq in sorted(entries)][-JOURNAL_KEPT:]
        return out

    def _site_status(self, site: str, record: AgentStatusRecord | None, after: str = "",
                     budget: int = pieces.PAGE_BYTES, last: AgentStatusRecord | None = None,
                     journal: list[m.JournalEntry] | None = None) -> api.SiteStatus:
        """The site's status with its peering rows after ``after``, as many as fit in ``budget`` bytes (at least
        one; coordinator/answers.py): from its agent's live record, or, while it has none, its last report.
        ``journal``: the site's newest journal entries, shown while its agent is connected."""
        desired, _ = self.planner.desired(site)
        out = api.SiteStatus(
            site=site,
            defined=site in self.planner.sites,
            connected=record is not None,
            external=site in self.planner.sites and self.planner.sites[site].kind == m.SiteKind.EXTERNAL,
            desired_revision=self.planner.site_revision.get(site, 0),
        )
        observed: dict[str, m.ObservedPeering] = {}
        overrides: dict[str, m.Override] = {}
        shown = record if record is not None else last
        if shown is not None:
            out.coordinator = shown.coordinator
            out.agent_version = shown.agent_version
            out.agent_host = shown.host
            out.driver = shown.driver
            out.applied_revision = shown.applied_revision
            out.connected_since_unix_ms = shown.connected_since_ms
            out.last_report_unix_ms = shown.last_report_ms
            observed = {o.connection: o for o in shown.observed}
            overrides = {o.connection: o for o in shown.overrides}
            if record is not None:
                out.journal.extend(wire.journal_to_pb(e) for e in journal or [])
            answers.cut_header(out)
        if record is None and last is not None:
            out.disconnected_since_unix_ms = last.disconnected_ms

        def rows() -> Iterator[tuple[str, api.PeeringStatus]]:
            for name in sorted(n for n in set(desired) | set(observed) | set(overrides) if n > after):
                ps = api.PeeringStatus()
                if name in desired:
                    ps.desired.CopyFrom(wire.peering_to_pb(desired[name]))
                if name in observed:
                    ps.observed.CopyFrom(wire.observed_to_pb(observed[name]))
                if name in overrides:
                    ps.override.CopyFrom(wire.override_to_pb(overrides[name]))
                yield name, answers.trim_row(ps)

        answers.add_rows(out, rows(), budget)
        return out

    @grpc_errors
    async def ListCoordinators(  # noqa: N802
        self, request: api.ListCoordinatorsRequest, context: Any
    ) -> api.ListCoordinatorsResponse:
        records, leader = await list_coordinators(self.store)
        statuses, _ = await self.store.get_prefix(r.STATUS)
        holders = [AgentStatusRecord.decode(kv.value).coordinator for kv in statuses]
        return api.ListCoordinatorsResponse(coordinators=[
            api.CoordinatorInfo(id=c.id, address=c.address, leader=c.id == leader, version=c.version,
                                started_unix_ms=c.started_ms, agents=holders.count(c.address))
            for c in records
        ])

    @grpc_errors
    async def GetSiteStatus(  # noqa: N802
        self, request: api.GetSiteStatusRequest, context: Any
    ) -> api.SiteStatus:
        m.check_name(request.site, "site")
        after = pieces.token_key(request.page_token)
        kv, last = await self.store.get_many([r.status_key(request.site), r.last_status_key(request.site)])
        if kv is None and request.site not in self.planner.sites:
            raise NotFound(f"site {request.site} is neither defined nor has a connected agent", "site")
        journal = (await self._journals([request.site]))[request.site] if kv else []
        return self._site_status(request.site, AgentStatusRecord.decode(kv.value) if kv else None, after,
                                 last=AgentStatusRecord.decode(last.value) if last else None, journal=journal)

    @grpc_errors
    async def ListSiteStatus(  # noqa: N802
        self, request: api.ListSiteStatusRequest, context: Any
    ) -> api.ListSiteStatusResponse:
        kvs, rev = await self.store.get_prefix(r.STATUS)
        records = {kv.key[len(r.STATUS):]: AgentStatusRecord.decode(kv.value) for kv in kvs}
        names, token = pieces.page(sorted(set(self.planner.sites) | set(records)), lambda n: n, request.page_size,
                            request.page_token)
        # The last reports of this page's disconnected sites (their live records are above).
        cut_off = [n for n in names if n not in records]
        lasts: list[KV | None] = []
        for start in range(0, len(cut_off), LAST_STATUS_READ):
            lasts += await self.store.get_many([r.last_status_key(n) for n in cut_off[start:start + LAST_STATUS_READ]])
        last = {n: AgentStatusRecord.decode(kv.value) for n, kv in zip(cut_off, lasts, strict=True) if kv}
        journals = await self._journals([n for n in names if n in records])
        # Sites until PAGE_BYTES of answer: a site that would pass it starts the next page, where it has the
        # whole budget; one that passes it alone shows its first rows and names the next (next_page_token).
        statuses: list[api.SiteStatus] = []
        used = 0
        for name in names:
            st = self._site_status(name, records.get(name), budget=pieces.PAGE_BYTES - used if statuses
                                   else pieces.PAGE_BYTES, last=last.get(name), journal=journals.get(name))
            cost = pieces.element_bytes(st.ByteSize())
            if statuses and (st.next_page_token or used + cost > pieces.PAGE_BYTES):
                token = pieces.page_token(statuses[-1].site)
                break
            statuses.append(st)
            used += cost
        return api.ListSiteStatusResponse(sites=statuses, revision=rev, next_page_token=token)

    @grpc_errors
    async def ListAuditEvents(  # noqa: N802
        self, request: api.ListAuditEventsRequest, context: Any
    ) -> api.ListAuditEventsResponse:
        if not 0 <= request.limit <= 10_000:
            raise InvalidArgument(f"{request.limit} is out of range 0..10000", "limit")
        limit, before = request.limit or 100, ""
        if request.page_token:
            before, limit = pieces.back_token(request.page_token, limit,
                                              lambda key: isinstance(key, str) and key.startswith(AUDIT))
        found = await list_audit(self.store, limit, before)
        taken, token = pieces.newest_that_fit([api.AuditEvent(**e) for _, e in found], [k for k, _ in found], limit)
        return api.ListAuditEventsResponse(events=taken, next_page_token=token)

    def _event(self, kind: str, e: Event, revision: int) -> api.WatchEvent | None:
        """The API event for one etcd event; a delete carries the object as it was before."""
        ev = api.WatchEvent(type=api.DELETE if e.deleted else api.PUT, revision=revision)
        if kind == "status":
            name = e.kv.key[len(r.STATUS):]
            ev.status.CopyFrom(self._site_status(name, None if e.deleted else AgentStatusRecord.decode(e.kv.value)))
            return ev
        kv = e.prev if e.deleted else e.kv
        if kv is None:
            return None  # deleted before the watch could see it (compacted prev value)
        if kind == "site":
            ev.site.CopyFrom(wire.site_to_pb(r.decode_site(kv)))
        elif kind == "endpoint":
            ev.endpoint.CopyFrom(wire.endpoint_to_pb(r.decode_endpoint(kv)))
        else:
            ev.connection.CopyFrom(wire.connection_to_pb(r.decode_connection(kv)))
        return ev

    @staticmethod
    def _site_of(kind: str, ev: api.WatchEvent) -> set[str]:
        if kind == "site":
            return {ev.site.name}
        if kind == "endpoint":
            return {ev.endpoint.site}
        if kind == "connection":
            return {ev.connection.a.site, ev.connection.b.site}
        return {ev.status.site}

    async def Watch(  # noqa: N802
        self, request: api.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api.WatchEvent]:
        kinds = list(request.kinds) or list(self.WATCH_KINDS)
        for kind in kinds:
            if kind not in self.WATCH_KINDS:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"kinds: {kind!r} is not one of {', '.join(self.WATCH_KINDS)}",
                )
        if request.site:
            try:
                m.check_name(request.site, "site")
            except InvalidArgument as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        start = request.start_revision or (await self.store.revision()) + 1
        try:
            async for revision, events in self.store.watch_prefix(r.ROOT, start, prev_kv=True):
                for e in events:
                    kind = next((k for k, p in self.WATCH_KINDS.items() if e.kv.key.startswith(p)), None)
                    if kind is None or kind not in kinds:
                        continue
                    ev = self._event(kind, e, revision)
                    if ev is None or (request.site and request.site not in self._site_of(kind, ev)):
                        continue
                    yield ev
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), exc.message)
        except asyncio.CancelledError:
            raise


class BorderGatewayService(l2_grpc.BorderGatewayServiceServicer):
    """Gateway devices, l2-gateways and l2-gateway-connections (networking-l2gw's model)."""

    def __init__(self, registry: BorderRegistry, store: Store, planner: Planner) -> None:
        self.registry = registry
        self.store = store
        self.planner = planner

    @grpc_errors
    async def CreateGatewayDevice(self, request: l2pb.GatewayDevice, context: Any) -> l2pb.GatewayDevice:  # noqa: N802
        return border_wire.device_to_pb(await self.registry.create_device(border_wire.device_from_pb(request)))

    @grpc_errors
    async def GetGatewayDevice(self, request: l2pb.GetByIdRequest, context: Any) -> l2pb.GatewayDevice:  # noqa: N802
        return border_wire.device_to_pb(await self.registry.get_device(request.id))

    @grpc_errors
    async def ListGatewayDevices(  # noqa: N802
        self, request: l2pb.ListGatewayDevicesRequest, context: Any
    ) -> l2pb.ListGatewayDevicesResponse:
        devices = [border_wire.device_to_pb(d) for d in await self.registry.list_devices(request.site)]
        chunk, token = pieces.page(devices, lambda d: d.id, request.page_size, request.page_token, pieces.byte_size)
        return l2pb.ListGatewayDevicesResponse(devices=chunk, next_page_token=token)

    @grpc_errors
    async def UpdateGatewayDevice(self, request: l2pb.GatewayDevice, context: Any) -> l2pb.GatewayDevice:  # noqa: N802
        type_given = bool(request.type)
        if not type_given:
            request.type = l2pb.GATEWAY_DEVICE_TYPE_HW_VTEP  # the type is fixed; the stored one is kept
        device = border_wire.device_from_pb(request)
        return border_wire.device_to_pb(await self.registry.update_device(device, type_given=type_given))

    @grpc_errors
    async def DeleteGatewayDevice(  # noqa: N802
        self, request: l2pb.DeleteByIdRequest, context: Any
    ) -> l2pb.DeleteByIdResponse:
        return l2pb.DeleteByIdResponse(revision=await self.registry.delete_device(request.id, request.version))

    @grpc_errors
    async def CreateL2Gateway(self, request: l2pb.L2Gateway, context: Any) -> l2pb.L2Gateway:  # noqa: N802
        return border_wire.gateway_to_pb(await self.registry.create_gateway(border_wire.gateway_from_pb(request)))

    @grpc_errors
    async def GetL2Gateway(self, request: l2pb.GetByIdRequest, context: Any) -> l2pb.L2Gateway:  # noqa: N802
        return border_wire.gateway_to_pb(await self.registry.get_gateway(request.id))

    @grpc_errors
    async def ListL2Gateways(  # noqa: N802
        self, request: l2pb.ListL2GatewaysRequest, context: Any
    ) -> l2pb.ListL2GatewaysResponse:
        gateways = [border_wire.gateway_to_pb(g) for g in await self.registry.list_gateways(request.project_id)]
        chunk, token = pieces.page(gateways, lambda g: g.id, request.page_size, request.page_token, pieces.byte_size)
        return l2pb.ListL2GatewaysResponse(l2_gateways=chunk, next_page_token=token)

    @grpc_errors
    async def UpdateL2Gateway(self, request: l2pb.L2Gateway, context: Any) -> l2pb.L2Gateway:  # noqa: N802
        return border_wire.gateway_to_pb(await self.registry.update_gateway(border_wire.gateway_from_pb(request)))

    @grpc_errors
    async def DeleteL2Gateway(  # noqa: N802
        self, request: l2pb.DeleteByIdRequest, context: Any
    ) -> l2pb.DeleteByIdResponse:
        return l2pb.DeleteByIdResponse(revision=await self.registry.delete_gateway(request.id, request.version))

    @grpc_errors
    async def CreateL2GatewayConnection(  # noqa: N802
        self, request: l2pb.L2GatewayConnection, context: Any
    ) -> l2pb.L2GatewayConnection:
        return border_wire.l2conn_to_pb(await self.registry.create_l2conn(border_wire.l2conn_from_pb(request)))

    @grpc_errors
    async def GetL2GatewayConnection(  # noqa: N802
        self, request: l2pb.GetByIdRequest, context: Any
    ) -> l2pb.L2GatewayConnection:
        return border_wire.l2conn_to_pb(await self.registry.get_l2conn(request.id))

    @grpc_errors
    async def ListL2GatewayConnections(  # noqa: N802
        self, request: l2pb.ListL2GatewayConnectionsRequest, context: Any
    ) -> l2pb.ListL2GatewayConnectionsResponse:
        conns = [border_wire.l2conn_to_pb(c)
                 for c in await self.registry.list_l2conns(request.l2_gateway_id, request.project_id)]
        chunk, token = pieces.page(conns, lambda c: c.id, request.page_size, request.page_token, pieces.byte_size)
        return l2pb.ListL2GatewayConnectionsResponse(l2_gateway_connections=chunk, next_page_token=token)

    @grpc_errors
    async def DeleteL2GatewayConnection(  # noqa: N802
        self, request: l2pb.DeleteByIdRequest, context: Any
    ) -> l2pb.DeleteByIdResponse:
        return l2pb.DeleteByIdResponse(revision=await self.registry.delete_l2conn(request.id, request.version))

    @grpc_errors
    async def GetL2GatewayConnectionStatus(  # noqa: N802
        self, request: l2pb.GetByIdRequest, context: Any
    ) -> l2pb.L2GatewayConnectionStatus:
        conn = await self.registry.get_l2conn(request.id)
        gw = await self.registry.get_gateway(conn.l2_gateway_id)
        devices = {d.id: d for d in await self.registry.list_devices()}
        out = l2pb.L2GatewayConnectionStatus(connection=border_wire.l2conn_to_pb(conn))
        sites = sorted({devices[ref.device_id].site for ref in gw.devices if ref.device_id in devices})
        for site in sites:
            kv = await self.store.get(r.status_key(site))
            record = AgentStatusRecord.decode(kv.value) if kv else None
            observed = {o.connection: o for o in record.observed} if record else {}
            tunnels = border.plan_tunnels(site, devices, {gw.id: gw}, [conn])
            st = l2pb.SiteTunnels(site=site, agent_connected=record is not None)
            for name, p in sorted(tunnels.items()):
                t = l2pb.TunnelStatus(peering=name, local_device=p.local.name, remote_site=p.remote.site,
                                      remote_device=p.remote.name)
                if name in observed:
                    t.observed.CopyFrom(wire.observed_to_pb(observed[name]))
                st.tunnels.append(t)
            st.complete = bool(tunnels) and all(
                observed.get(n) is not None and observed[n].state == m.PeeringState.ESTABLISHED for n in tunnels)
            out.sites.append(st)
            if not st.complete:
                out.missing_sites.append(site)
        return out
