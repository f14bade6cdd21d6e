"""isthmusctl: the command line client of the coordinator's API and of an agent's local admin socket."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from argparse import Namespace
from collections.abc import Iterable, Sequence

import grpc

from isthmus.core import border
from isthmus.core import model as m
from isthmus.core.errors import IsthmusError
from isthmus.core.flags import duration
from isthmus.core.wire import border as border_wire
from isthmus.core.wire import network as wire
from isthmus.ctl import events as ctl_events
from isthmus.ctl import sync as ctl_sync
from isthmus.ctl import views as ctl_views
from isthmus.ctl.client import (
    DEFAULT_ADMIN_SOCKET,
    DEFAULT_COORDINATOR,
    DEFAULT_TIMEOUT,
    ENV_ADMIN_SOCKET,
    ENV_COORDINATOR,
    ENV_TOKEN,
    WAIT_POLL_SECONDS,
    Command,
    Ctl,
    CtlError,
    all_pages,
    follow,
)
from isthmus.ctl.flags import (
    Parsers,
    add_pairs,
    add_peering_params,
    add_version,
    bgp_params,
    bounded_int,
    device_segment,
    endpoint_ref,
    given,
    int64,
    merged,
    seconds,
    uint32,
    vxlan_params,
)
from isthmus.ctl.render import (
    OVERRIDE_COLUMNS,
    PEERING_COLUMNS,
    describe_rpc_error,
    format_age,
    format_fields,
    format_journal,
    format_table,
    one_line,
    override_row,
    pairs,
    peering_name,
    peering_row,
)
from isthmus.v1 import admin_pb2, api_pb2, l2gw_pb2, types_pb2

# ---------------------------------------------------------------- objects from flags (pure, tested)


def new_site(args: Namespace) -> m.Site:
    return m.Site(name=args.name, kind=m.SiteKind(args.kind), parent=args.parent or "",
                  labels=dict(args.label or ()), description=args.description or "")


def updated_site(current: m.Site, args: Namespace) -> m.Site:
    """What to send to UpdateSite: current with the flags applied, at --version or the version read."""
    return dataclasses.replace(
        current,
        labels=merged(current.labels, args.label, args.remove_label),
        description=given(args.description, current.description),
        version=given(args.version, current.version),
    )


def new_endpoint(args: Namespace) -> m.Endpoint:
    return m.Endpoint(site=args.ref.site, name=args.ref.name, address=args.address, asn=args.asn,
                      role=m.EndpointRole(args.role), router_id=args.router_id or "",
                      properties=dict(args.property or ()))


def updated_endpoint(current: m.Endpoint, args: Namespace) -> m.Endpoint:
    """What to send to UpdateEndpoint: current with the flags applied, at --version or the version read."""
    router_id = given(args.router_id, current.router_id)
    if args.address is not None and args.router_id is None and current.router_id == current.address:
        router_id = ""  # it was derived from the old address: let the coordinator derive it again
    return dataclasses.replace(
        current,
        address=given(args.address, current.address),
        asn=given(args.asn, current.asn),
        router_id=router_id,
        properties=merged(current.properties, args.property, args.remove_property),
        version=given(args.version, current.version),
    )


def new_connection(args: Namespace) -> m.Connection:
    return m.Connection(name=args.name, a=args.a, b=args.b, type=m.ConnectionType(args.type),
                        bgp=bgp_params(None, args), vxlan=vxlan_params(None, args),
                        admin_state=m.AdminState(args.admin_state or "up"),
                        description=args.description or "")


def updated_connection(current: m.Connection, args: Namespace) -> m.Connection:
    """What to send to UpdateConnection: current with the flags applied, at --version or the version read."""
    return dataclasses.replace(
        current,
        bgp=bgp_params(current.bgp, args),
        vxlan=vxlan_params(current.vxlan, args),
        admin_state=m.AdminState(given(args.admin_state, current.admin_state)),
        description=given(args.description, current.description),
        version=given(args.version, current.version),
    )


def new_gateway_device(args: Namespace) -> border.GatewayDevice:
    return border.GatewayDevice(id="", site=args.ref.site, name=args.ref.name, type=border.DeviceType(args.type),
                                tunnel_ips=tuple(args.tunnel_ip), management=dict(args.management or ()))


def updated_gateway_device(current: border.GatewayDevice, args: Namespace) -> border.GatewayDevice:
    """What to send to UpdateGatewayDevice (which replaces both): tunnel IPs and management with the flags applied."""
    return dataclasses.replace(
        current,
        tunnel_ips=tuple(args.tunnel_ip) if args.tunnel_ip else current.tunnel_ips,
        management=merged(current.management, args.management, args.remove_management),
        version=given(args.version, current.version),
    )


def device_refs(pairs: Iterable[tuple[str, int | None]], segmentation_id: int | None) -> list[border.DeviceRef]:
    """The devices of --device / --add-device flags; a device given without =SEGID takes --segmentation-id."""
    return [border.DeviceRef(device, segid if segid is not None else segmentation_id or 0)
            for device, segid in pairs]


def new_l2_gateway(args: Namespace) -> border.L2Gateway:
    return border.L2Gateway(id="", name=args.name, project_id=args.project,
                            devices=tuple(device_refs(args.device, args.segmentation_id)))


def updated_l2_gateway(current: border.L2Gateway, args: Namespace) -> border.L2Gateway:
    """What to send to UpdateL2Gateway: current without the removed devices, with the added ones (an added device
    already there takes the new segmentation id in place), at --version or the version read."""
    removed = set(args.remove_device or ())
    unknown = sorted(removed - {ref.device_id for ref in current.devices})
    if unknown:
        raise CtlError(f"--remove-device: l2-gateway {current.id} has no device {', '.join(unknown)}")
    devices = [ref for ref in current.devices if ref.device_id not in removed]
    for ref in device_refs(args.add_device or (), args.segmentation_id):
        at = next((i for i, d in enumerate(devices) if d.device_id == ref.device_id), None)
        if at is None:
            devices.append(ref)
        else:
            devices[at] = dataclasses.replace(devices[at], segmentation_id=ref.segmentation_id)
    return dataclasses.replace(current, name=given(args.name, current.name), devices=tuple(devices),
                               version=given(args.version, current.version))


def new_l2_connection(args: Namespace) -> border.L2GatewayConnection:
    """0 as segmentation id: the one the gateway's devices share (the coordinator picks it)."""
    return border.L2GatewayConnection(id="", l2_gateway_id=args.gateway, network_id=args.network,
                                      segmentation_id=args.segmentation_id or 0, project_id=args.project or "",
                                      explicit_segmentation_id=bool(args.segmentation_id))


def local_peering(args: Namespace) -> m.DesiredPeering:
    """The peering of `local add`; sites and endpoint names are left empty for the agent to fill in."""
    local = m.Endpoint(site="", name="", address=args.local_address, asn=args.local_asn,
                       role=m.EndpointRole.LOCAL, router_id=args.router_id or "")
    remote = m.Endpoint(site="", name="", address=args.remote_address, asn=args.remote_asn,
                        role=m.EndpointRole.REMOTE)
    return m.DesiredPeering(connection=args.name, type=m.ConnectionType(args.type), local=local, remote=remote,
                            bgp=bgp_params(None, args), vxlan=vxlan_params(None, args))


def add_local_peering_request(args: Namespace) -> admin_pb2.AddLocalPeeringRequest:
    return admin_pb2.AddLocalPeeringRequest(peering=wire.peering_to_pb(local_peering(args)),
                                            ttl_seconds=args.ttl or 0, reason=args.reason or "")


def disable_peering_request(args: Namespace) -> admin_pb2.DisablePeeringRequest:
    return admin_pb2.DisablePeeringRequest(connection=args.connection, ttl_seconds=args.ttl or 0,
                                           reason=args.reason or "")


# ---------------------------------------------------------------- text output


def _params_text(bgp: m.BgpParams | None, vxlan: m.VxlanParams | None) -> str:
    parts = []
    if bgp is not None:
        parts += [f"hold {bgp.hold_time}s", *bgp.address_families]
        parts += [f"password {bgp.password_ref}"] if bgp.password_ref else []
    if vxlan is not None:
        parts.append(f"vni {vxlan.vni} port {vxlan.udp_port} mtu {vxlan.mtu}")
    return ", ".join(parts)


SITE_COLUMNS = ("NAME", "KIND", "PARENT", "LABELS", "DESCRIPTION", "VERSION")
ENDPOINT_COLUMNS = ("SITE", "NAME", "ADDRESS", "ASN", "ROLE", "ROUTER-ID", "PROPERTIES", "VERSION")
CONNECTION_COLUMNS = ("NAME", "TYPE", "A", "B", "ADMIN", "PARAMS", "DESCRIPTION", "VERSION")
STATUS_COLUMNS = ("SITE", "AGENT", "DESIRED-REV", "APPLIED-REV", "PEERINGS", "DRIVER", "COORDINATOR")
COORDINATOR_COLUMNS = ("ID", "ADDRESS", "LEADER", "AGENTS", "VERSION", "UP")
GATEWAY_DEVICE_COLUMNS = ("ID", "SITE", "NAME", "TYPE", "TUNNEL-IPS", "MANAGEMENT", "VERSION")
L2_GATEWAY_COLUMNS = ("ID", "NAME", "PROJECT", "DEVICES", "VERSION")
L2_CONNECTION_COLUMNS = ("ID", "L2-GATEWAY", "NETWORK", "SEGMENTATION-ID", "PROJECT", "VERSION")
TUNNEL_COLUMNS = ("SITE", "AGENT", "LOCAL-DEVICE", "REMOTE", "OBSERVED", "ERROR", "SINCE", "PEERING")
RECENT_EVENTS = 10  # journal entries `status SITE` shows


def site_row(msg: types_pb2.Site) -> list[str]:
    s = wire.site_from_pb(msg)
    return [s.name, s.kind.value, s.parent, pairs(s.labels), s.description, str(s.version)]


def endpoint_row(msg: types_pb2.Endpoint) -> list[str]:
    e = wire.endpoint_from_pb(msg)
    return [e.site, e.name, e.address, str(e.asn), e.role.value, e.router_id, pairs(e.properties),
            str(e.version)]


def connection_row(msg: types_pb2.Connection) -> list[str]:
    c = wire.connection_from_pb(msg)
    return [c.name, c.type.value, str(c.a), str(c.b), c.admin_state.value, _params_text(c.bgp, c.vxlan),
            c.description, str(c.version)]


def gateway_device_row(msg: l2gw_pb2.GatewayDevice) -> list[str]:
    d = border_wire.device_from_pb(msg)
    return [d.id, d.site, d.name, d.type.value, ",".join(d.tunnel_ips), pairs(d.management), str(d.version)]


def l2_gateway_row(msg: l2gw_pb2.L2Gateway) -> list[str]:
    """DEVICES: DEVICE_ID=SEGID, comma-separated, as --device takes them."""
    g = border_wire.gateway_from_pb(msg)
    devices = ",".join(f"{ref.device_id}={ref.segmentation_id}" if ref.segmentation_id else ref.device_id
                       for ref in g.devices)
    return [g.id, g.name, g.project_id, devices, str(g.version)]


def l2_connection_row(msg: l2gw_pb2.L2GatewayConnection) -> list[str]:
    c = border_wire.l2conn_from_pb(msg)
    return [c.id, c.l2_gateway_id, c.network_id, str(c.segmentation_id), c.project_id, str(c.version)]


def _tunnel_up(t: l2gw_pb2.TunnelStatus) -> bool:
    return t.HasField("observed") and t.observed.state == types_pb2.PEERING_STATE_ESTABLISHED


def tunnel_rows(st: l2gw_pb2.L2GatewayConnectionStatus, now: float) -> list[list[str]]:
    """Rows of TUNNEL_COLUMNS: each tunnel of each site (a site without tunnels: one row saying so)."""
    rows = []
    for site in st.sites:
        agent = "connected" if site.agent_connected else "disconnected"
        if not site.tunnels:
            rows.append([site.site, agent, "", "", "", "no tunnels: no device of the gateway at another site", "",
                         ""])
        for t in site.tunnels:
            state, error, since = "unreported", "", ""
            if t.HasField("observed"):
                o = wire.observed_from_pb(t.observed)
                state, error = o.state.value, one_line(o.error)
                since = format_age(now - o.since_ms / 1000) if o.since_ms else ""
            rows.append([site.site, agent, t.local_device, f"{t.remote_site}/{t.remote_device}", state, error, since,
                         t.peering])
    return rows


def missing_sites(st: l2gw_pb2.L2GatewayConnectionStatus) -> list[str]:
    """Each site that is not complete, with why: 'SITE (agent disconnected)', 'SITE (to s3/gw: connecting)'."""
    by_site = {s.site: s for s in st.sites}
    out = []
    for name in st.missing_sites:
        site = by_site.get(name)
        if site is None:
            out.append(name)
            continue
        if not site.agent_connected:
            why = "agent disconnected"
        elif not site.tunnels:
            why = "no tunnels"
        else:
            why = ", ".join(
                f"to {t.remote_site}/{t.remote_device}: "
                + (wire.observed_from_pb(t.observed).state.value if t.HasField("observed") else "unreported")
                for t in site.tunnels if not _tunnel_up(t))
        out.append(f"{name} ({why})")
    return out


def format_l2_status(st: l2gw_pb2.L2GatewayConnectionStatus, now: float) -> str:
    """`l2-gateway-connection status`: the connection, its tunnels per site, then complete or what is missing."""
    missing = missing_sites(st)
    summary = f"missing sites: {', '.join(missing)}" if missing else "complete"
    return "\n\n".join([
        format_table(L2_CONNECTION_COLUMNS, [l2_connection_row(st.connection)]),
        format_table(TUNNEL_COLUMNS, tunnel_rows(st, now)),
        summary,
    ])


def _established(p: api_pb2.PeeringStatus) -> bool:
    return p.HasField("observed") and p.observed.state == types_pb2.PEERING_STATE_ESTABLISHED


def status_row(st: api_pb2.SiteStatus) -> list[str]:
    if not st.defined:
        agent = "undefined site"
    elif st.external:
        agent = "external (no agent)"
    else:
        agent = "connected" if st.connected else "disconnected"
    desired = [p for p in st.peerings if p.HasField("desired")]
    peerings = f"{sum(1 for p in desired if _established(p))}/{len(desired)}"
    return [st.site, agent, str(st.desired_revision), str(st.applied_revision), peerings, st.driver,
            st.coordinator]


def coordinator_row(c: api_pb2.CoordinatorInfo, now: float) -> list[str]:
    up = format_age(now - c.started_unix_ms / 1000) if c.started_unix_ms else ""
    return [c.id, c.address, "yes" if c.leader else "", str(c.agents), c.version, up]


def event_line(event: api_pb2.WatchEvent) -> str:
    """REV TYPE KIND NAME of one watch event, in columns matching WATCH_HEADER."""
    kind = event.WhichOneof("object") or ""
    if kind == "endpoint":
        name = f"{event.endpoint.site}/{event.endpoint.name}"
    elif kind == "status":
        name = event.status.site
    else:
        name = getattr(event, kind).name if kind else ""
    return f"{event.revision:<8} {api_pb2.EventType.Name(event.type).lower():<7} {kind:<11} {name}"


WATCH_HEADER = f"{'REV':<8} {'TYPE':<7} {'KIND':<11} NAME"


# ---------------------------------------------------------------- commands


def site_create(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.sites().CreateSite(wire.site_to_pb(new_site(args)), timeout=ctl.timeout)
    ctl.show_one(reply, SITE_COLUMNS, site_row)


def site_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.sites().GetSite(api_pb2.GetSiteRequest(name=args.name), timeout=ctl.timeout)
    ctl.show_one(reply, SITE_COLUMNS, site_row)


def site_list(ctl: Ctl, args: Namespace) -> None:
    sites = all_pages(ctl.sites().ListSites, api_pb2.ListSitesRequest(), "sites", ctl.timeout)
    ctl.show(sites, SITE_COLUMNS, site_row)


def site_update(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.sites()
    current = wire.site_from_pb(stub.GetSite(api_pb2.GetSiteRequest(name=args.name), timeout=ctl.timeout))
    reply = stub.UpdateSite(wire.site_to_pb(updated_site(current, args)), timeout=ctl.timeout)
    ctl.show_one(reply, SITE_COLUMNS, site_row)


def site_delete(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.DeleteSiteRequest(name=args.name, version=args.version or 0)
    ctl.show_deleted(f"site {args.name}", ctl.sites().DeleteSite(request, timeout=ctl.timeout))


def endpoint_create(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.endpoints().CreateEndpoint(wire.endpoint_to_pb(new_endpoint(args)), timeout=ctl.timeout)
    ctl.show_one(reply, ENDPOINT_COLUMNS, endpoint_row)


def endpoint_get(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.GetEndpointRequest(site=args.ref.site, name=args.ref.name)
    ctl.show_one(ctl.endpoints().GetEndpoint(request, timeout=ctl.timeout), ENDPOINT_COLUMNS, endpoint_row)


def endpoint_list(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.ListEndpointsRequest(site=args.site or "")
    endpoints = all_pages(ctl.endpoints().ListEndpoints, request, "endpoints", ctl.timeout)
    ctl.show(endpoints, ENDPOINT_COLUMNS, endpoint_row)


def endpoint_update(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.endpoints()
    key = api_pb2.GetEndpointRequest(site=args.ref.site, name=args.ref.name)
    read = stub.GetEndpoint(key, timeout=ctl.timeout)
    request = wire.endpoint_to_pb(updated_endpoint(wire.endpoint_from_pb(read), args))
    ctl.show_one(stub.UpdateEndpoint(request, timeout=ctl.timeout), ENDPOINT_COLUMNS, endpoint_row)


def endpoint_delete(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.DeleteEndpointRequest(site=args.ref.site, name=args.ref.name, version=args.version or 0)
    ctl.show_deleted(f"endpoint {args.ref}", ctl.endpoints().DeleteEndpoint(request, timeout=ctl.timeout))


def connection_create(ctl: Ctl, args: Namespace) -> None:
    request = wire.connection_to_pb(new_connection(args))
    ctl.show_one(ctl.connections().CreateConnection(request, timeout=ctl.timeout), CONNECTION_COLUMNS,
                 connection_row)


def connection_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.connections().GetConnection(api_pb2.GetConnectionRequest(name=args.name), timeout=ctl.timeout)
    ctl.show_one(reply, CONNECTION_COLUMNS, connection_row)


def connection_list(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.ListConnectionsRequest(site=args.site or "")
    connections = all_pages(ctl.connections().ListConnections, request, "connections", ctl.timeout)
    ctl.show(connections, CONNECTION_COLUMNS, connection_row)


def connection_update(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.connections()
    read = stub.GetConnection(api_pb2.GetConnectionRequest(name=args.name), timeout=ctl.timeout)
    request = wire.connection_to_pb(updated_connection(wire.connection_from_pb(read), args))
    ctl.show_one(stub.UpdateConnection(request, timeout=ctl.timeout), CONNECTION_COLUMNS, connection_row)


def connection_delete(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.DeleteConnectionRequest(name=args.name, version=args.version or 0)
    reply = ctl.connections().DeleteConnection(request, timeout=ctl.timeout)
    ctl.show_deleted(f"connection {args.name}", reply)


def gateway_device_create(ctl: Ctl, args: Namespace) -> None:
    request = border_wire.device_to_pb(new_gateway_device(args))
    ctl.show_one(ctl.border().CreateGatewayDevice(request, timeout=ctl.timeout), GATEWAY_DEVICE_COLUMNS,
                 gateway_device_row)


def gateway_device_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.border().GetGatewayDevice(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    ctl.show_one(reply, GATEWAY_DEVICE_COLUMNS, gateway_device_row)


def gateway_device_list(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.ListGatewayDevicesRequest(site=args.site or "")
    reply = ctl.border().ListGatewayDevices(request, timeout=ctl.timeout)
    ctl.show(sorted(reply.devices, key=lambda d: (d.site, d.name)), GATEWAY_DEVICE_COLUMNS, gateway_device_row)


def gateway_device_update(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.border()
    read = stub.GetGatewayDevice(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    request = border_wire.device_to_pb(updated_gateway_device(border_wire.device_from_pb(read), args))
    ctl.show_one(stub.UpdateGatewayDevice(request, timeout=ctl.timeout), GATEWAY_DEVICE_COLUMNS, gateway_device_row)


def gateway_device_delete(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.DeleteByIdRequest(id=args.id, version=args.version or 0)
    ctl.show_deleted(f"gateway device {args.id}", ctl.border().DeleteGatewayDevice(request, timeout=ctl.timeout))


def l2_gateway_create(ctl: Ctl, args: Namespace) -> None:
    request = border_wire.gateway_to_pb(new_l2_gateway(args))
    ctl.show_one(ctl.border().CreateL2Gateway(request, timeout=ctl.timeout), L2_GATEWAY_COLUMNS, l2_gateway_row)


def l2_gateway_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.border().GetL2Gateway(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    ctl.show_one(reply, L2_GATEWAY_COLUMNS, l2_gateway_row)


def l2_gateway_list(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.ListL2GatewaysRequest(project_id=args.project or "")
    reply = ctl.border().ListL2Gateways(request, timeout=ctl.timeout)
    ctl.show(sorted(reply.l2_gateways, key=lambda g: (g.name, g.id)), L2_GATEWAY_COLUMNS, l2_gateway_row)


def l2_gateway_update(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.border()
    read = stub.GetL2Gateway(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    request = border_wire.gateway_to_pb(updated_l2_gateway(border_wire.gateway_from_pb(read), args))
    ctl.show_one(stub.UpdateL2Gateway(request, timeout=ctl.timeout), L2_GATEWAY_COLUMNS, l2_gateway_row)


def l2_gateway_delete(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.DeleteByIdRequest(id=args.id, version=args.version or 0)
    ctl.show_deleted(f"l2-gateway {args.id}", ctl.border().DeleteL2Gateway(request, timeout=ctl.timeout))


def l2_connection_create(ctl: Ctl, args: Namespace) -> None:
    request = border_wire.l2conn_to_pb(new_l2_connection(args))
    ctl.show_one(ctl.border().CreateL2GatewayConnection(request, timeout=ctl.timeout), L2_CONNECTION_COLUMNS,
                 l2_connection_row)


def l2_connection_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.border().GetL2GatewayConnection(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    ctl.show_one(reply, L2_CONNECTION_COLUMNS, l2_connection_row)


def l2_connection_list(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.ListL2GatewayConnectionsRequest(l2_gateway_id=args.gateway or "", project_id=args.project or "")
    reply = ctl.border().ListL2GatewayConnections(request, timeout=ctl.timeout)
    ctl.show(sorted(reply.l2_gateway_connections, key=lambda c: (c.network_id, c.id)), L2_CONNECTION_COLUMNS,
             l2_connection_row)


def l2_connection_delete(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.DeleteByIdRequest(id=args.id, version=args.version or 0)
    reply = ctl.border().DeleteL2GatewayConnection(request, timeout=ctl.timeout)
    ctl.show_deleted(f"l2-gateway-connection {args.id}", reply)


def _wait_complete(ctl: Ctl, conn_id: str, wait_timeout: float) -> l2gw_pb2.L2GatewayConnectionStatus:
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            st: l2gw_pb2.L2GatewayConnectionStatus = ctl.border().GetL2GatewayConnectionStatus(
                l2gw_pb2.GetByIdRequest(id=conn_id), timeout=ctl.timeout)
        except grpc.RpcError as exc:
            # A coordinator that is still starting is worth waiting for; any other error is final.
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            problem = describe_rpc_error(exc, ctl.unavailable_hint)
        else:
            missing = missing_sites(st)
            if not missing:
                return st
            problem = f"missing sites: {', '.join(missing)}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CtlError(f"l2-gateway-connection {conn_id} not complete after {wait_timeout:g}s: {problem}")
        time.sleep(min(WAIT_POLL_SECONDS, remaining))


def l2_connection_status(ctl: Ctl, args: Namespace) -> None:
    if args.wait_complete:
        st = _wait_complete(ctl, args.id, args.wait_timeout)
    else:
        st = ctl.border().GetL2GatewayConnectionStatus(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(st)
    else:
        print(format_l2_status(st, time.time()))


def not_established(statuses: Sequence[api_pb2.SiteStatus]) -> list[str]:
    """What keeps these sites from being established, one item each; empty when nothing does.

    A site is established when its agent applied its latest desired revision and every desired
    peering that is administratively up is observed ESTABLISHED. A peering under a local override
    is not required: one disabled at the site is down on purpose (like admin down), one added at
    the site is not the coordinator's to wait for.
    """
    missing = []
    for st in statuses:
        if not st.defined or st.external:
            continue
        if st.applied_revision < st.desired_revision:
            missing.append(f"{st.site} (applied revision {st.applied_revision} < {st.desired_revision})")
        for p in sorted(st.peerings, key=peering_name):
            if not p.HasField("desired") or p.desired.admin_state == types_pb2.ADMIN_STATE_DOWN:
                continue
            if p.HasField("override"):
                continue
            if _established(p):
                continue
            observed = p.HasField("observed")
            state = wire.observed_from_pb(p.observed).state.value if observed else "unreported"
            missing.append(f"{st.site}/{p.desired.connection} ({state})")
    return missing


def _read_status(ctl: Ctl, site: str | None) -> list[api_pb2.SiteStatus]:
    if site:
        return [ctl.status().GetSiteStatus(api_pb2.GetSiteStatusRequest(site=site), timeout=ctl.timeout)]
    return all_pages(ctl.status().ListSiteStatus, api_pb2.ListSiteStatusRequest(), "sites", ctl.timeout)


def _wait_established(ctl: Ctl, site: str | None, wait_timeout: float) -> list[api_pb2.SiteStatus]:
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            statuses = _read_status(ctl, site)
            missing = not_established(statuses)
        except grpc.RpcError as exc:
            # A coordinator that is still starting is worth waiting for; any other error is final.
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            missing = [describe_rpc_error(exc, ctl.unavailable_hint)]
        if not missing:
            return statuses
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CtlError(f"not established after {wait_timeout:g}s: {', '.join(missing[:5])}{more}")
        time.sleep(min(WAIT_POLL_SECONDS, remaining))


def status(ctl: Ctl, args: Namespace) -> None:
    if args.wait_established:
        statuses = _wait_established(ctl, args.site, args.wait_timeout)
    else:
        statuses = _read_status(ctl, args.site)
    if ctl.output == "json":
        ctl.print_json(statuses[0] if args.site else statuses)
        return
    print(format_table(STATUS_COLUMNS, [status_row(st) for st in statuses]))
    if args.site:
        print("\n" + site_details(statuses[0], time.time()))


def site_details(st: api_pb2.SiteStatus, now: float) -> str:
    """What `status SITE` shows below the site's row: peerings, then local overrides and recent events if any."""
    peerings = sorted(st.peerings, key=peering_name)
    parts = [format_table(PEERING_COLUMNS, [peering_row(p, now) for p in peerings])]
    if st.overrides:
        overrides = sorted(st.overrides, key=lambda o: o.connection)
        parts.append(f"local overrides at {st.site}:\n"
                     + format_table(OVERRIDE_COLUMNS, [override_row(o, now) for o in overrides]))
    if st.journal:
        parts.append(f"recent events at {st.site} (from its agent):\n" + format_journal(st.journal[-RECENT_EVENTS:]))
    return "\n\n".join(parts)


def coordinators(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.status().ListCoordinators(api_pb2.ListCoordinatorsRequest(), timeout=ctl.timeout)
    now = time.time()
    ctl.show(sorted(reply.coordinators, key=lambda c: c.id), COORDINATOR_COLUMNS,
             lambda c: coordinator_row(c, now))


AUDIT_COLUMNS = ("TIME", "WHO", "ROLE", "METHOD", "ALLOWED", "DETAIL")


def audit_row(e: api_pb2.AuditEvent) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time_unix_ms / 1000))
    return [when, e.who, e.role or "-", e.method.rsplit("/", 1)[-1], "yes" if e.allowed else "REFUSED",
            e.detail or "-"]


def audit(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.status().ListAuditEvents(api_pb2.ListAuditEventsRequest(limit=args.limit), timeout=ctl.timeout)
    ctl.show(list(reply.events), AUDIT_COLUMNS, audit_row)


def watch(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.WatchRequest(
        kinds=args.kind or [], site=args.site or "", start_revision=args.from_revision or 0
    )
    follow(ctl, ctl.status().Watch(request), WATCH_HEADER, event_line, "--from-revision")


def local_status(ctl: Ctl, args: Namespace) -> None:
    st = ctl.admin().Status(admin_pb2.AgentStatusRequest(), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(st)
        return
    print(format_fields(agent_status_fields(st, time.time())))


def agent_status_fields(st: admin_pb2.AgentStatus, now: float) -> list[tuple[str, str]]:
    """The lines of `local status`; now is the current Unix time in seconds."""
    started = f"{format_age(now - st.started_unix_ms / 1000)} ago" if st.started_unix_ms else ""
    down = st.partitioned and st.link_down_since_unix_ms
    down_since = f"{format_age(now - st.link_down_since_unix_ms / 1000)} ago" if down else ""
    return [
        ("site", st.site), ("connected", "yes" if st.connected else "no"), ("coordinator", st.coordinator),
        ("partitioned", "yes" if st.partitioned else "no"), ("link-down-since", down_since),
        ("desired-revision", str(st.desired_revision)), ("applied-revision", str(st.applied_revision)),
        ("overrides", str(st.overrides)),
        ("driver", st.driver), ("agent-version", st.agent_version), ("started", started),
        ("last-error", one_line(st.last_error)),
        ("sync", (f"region {st.sync_region}, stream {'up' if st.sync_connected else 'down'}; "
                  + (", ".join(f"{n} {state}" for state, n in sorted(st.sync_states.items())) or "nothing to do"))
         if st.sync_enabled else "off (no --os-cloud)"),
    ]


def local_peerings(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().ListPeerings(admin_pb2.ListPeeringsRequest(), timeout=ctl.timeout)
    peerings = sorted(reply.peerings, key=peering_name)
    now = time.time()
    ctl.show(peerings, PEERING_COLUMNS, lambda p: peering_row(p, now))


def local_resync(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().Resync(admin_pb2.ResyncRequest(), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        print(f"resynced: applied revision {reply.applied_revision}, peerings: {reply.peerings}")


def local_disable(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().DisablePeering(disable_peering_request(args), timeout=ctl.timeout)
    now = time.time()
    ctl.show_one(reply, OVERRIDE_COLUMNS, lambda o: override_row(o, now))


def local_enable(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().EnablePeering(admin_pb2.EnablePeeringRequest(connection=args.connection),
                                      timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        print(f"enabled {reply.removed.connection}: the local disable override is removed")


def local_add(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().AddLocalPeering(add_local_peering_request(args), timeout=ctl.timeout)
    now = time.time()
    ctl.show_one(reply, OVERRIDE_COLUMNS, lambda o: override_row(o, now))


def local_overrides(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().ListOverrides(admin_pb2.ListOverridesRequest(), timeout=ctl.timeout)
    now = time.time()
    items = sorted(reply.overrides, key=lambda o: o.connection)
    ctl.show(items, OVERRIDE_COLUMNS, lambda o: override_row(o, now))


def local_remove_override(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().RemoveOverride(admin_pb2.RemoveOverrideRequest(connection=args.connection),
                                       timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        kind = wire.override_from_pb(reply.removed).kind.value
        print(f"removed the local {kind} override of {reply.removed.connection}")


def local_journal(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().Journal(admin_pb2.JournalRequest(limit=args.limit), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply.entries)
    else:
        print(format_journal(reply.entries))


# Each command prints its result; a failure is raised and becomes one line on stderr with exit status 1.
COMMANDS: dict[str, Command] = {
    "site create": site_create,
    "site get": site_get,
    "site list": site_list,
    "site update": site_update,
    "site delete": site_delete,
    "endpoint create": endpoint_create,
    "endpoint get": endpoint_get,
    "endpoint list": endpoint_list,
    "endpoint update": endpoint_update,
    "endpoint delete": endpoint_delete,
    "connection create": connection_create,
    "connection get": connection_get,
    "connection list": connection_list,
    "connection update": connection_update,
    "connection delete": connection_delete,
    "gateway-device create": gateway_device_create,
    "gateway-device get": gateway_device_get,
    "gateway-device list": gateway_device_list,
    "gateway-device update": gateway_device_update,
    "gateway-device delete": gateway_device_delete,
    "l2-gateway create": l2_gateway_create,
    "l2-gateway get": l2_gateway_get,
    "l2-gateway list": l2_gateway_list,
    "l2-gateway update": l2_gateway_update,
    "l2-gateway delete": l2_gateway_delete,
    "l2-gateway-connection create": l2_connection_create,
    "l2-gateway-connection get": l2_connection_get,
    "l2-gateway-connection list": l2_connection_list,
    "l2-gateway-connection delete": l2_connection_delete,
    "l2-gateway-connection status": l2_connection_status,
    "status": status,
    "coordinators": coordinators,
    "audit": audit,
    "watch": watch,
    "local status": local_status,
    "local peerings": local_peerings,
    "local resync": local_resync,
    "local disable": local_disable,
    "local enable": local_enable,
    "local add": local_add,
    "local overrides": local_overrides,
    "local remove-override": local_remove_override,
    "local journal": local_journal,
    **ctl_sync.COMMANDS,
    **ctl_events.COMMANDS,
    **ctl_views.COMMANDS,
}


# ---------------------------------------------------------------- command line

EPILOGS = {
    "site create": """examples:
  isthmusctl site create region-one --kind region --label az=one
  isthmusctl site create cell-a --kind cell --parent region-one --description "first cell"
""",
    "endpoint create": """examples:
  isthmusctl endpoint create region-one/gw --address 192.0.2.1 --asn 64512
  isthmusctl endpoint create dc/tor1 --address 2001:db8::1 --asn 65001 --role remote --router-id 10.0.0.1
""",
    "connection create": """examples:
  isthmusctl connection create one-two --a region-one/gw --b region-two/gw --type bgp --hold-time 30
  isthmusctl connection create l2-one-two --a region-one/vtep --b region-two/vtep --type vxlan --vni 1001
""",
    "gateway-device create": """A gateway device is a site's VTEP for border-gateway tunnels; its agent realizes
them. --management segment_bridge=TEMPLATE names the bridge of the local tenant
segment ({segmentation_id} and {network_id} are filled in; default
brs{segmentation_id}).

examples:
  isthmusctl gateway-device create region-one/gw --type router_vtep --tunnel-ip 192.0.2.1
  isthmusctl gateway-device create region-two/tor1 --type hw_vtep --tunnel-ip 2001:db8::2 \\
      --management segment_bridge=br-{network_id}
""",
    "l2-gateway create": """Every device of the gateway gets a VXLAN tunnel to every device of it at another
site, once a connection names a network. The segmentation id is the VNI of a
VTEP device (a VLAN id of a network_vlan device) and global: one id, one network.

examples:
  isthmusctl l2-gateway create blue --project p1 --device DEVICE_ID_1=100 --device DEVICE_ID_2=100
  isthmusctl l2-gateway create blue --project p1 --device DEVICE_ID_1 --device DEVICE_ID_2 --segmentation-id 100
""",
    "l2-gateway-connection create": """Connects the l2-gateway's devices to a tenant network: each site's gateway
device joins the network's local segment and tunnels to the other sites.

examples:
  isthmusctl l2-gateway-connection create GATEWAY_ID --network net-blue
  isthmusctl l2-gateway-connection create GATEWAY_ID --network net-blue --segmentation-id 100 --project p1
""",
    "l2-gateway-connection status": """Per site: whether its agent is connected, and each tunnel from its device to a
device at another site with the state the agent observes. The last line says
'complete' (every tunnel of every site established) or names the missing sites.
Exit status 0 either way, unless --wait-complete runs out of time (1).

examples:
  isthmusctl l2-gateway-connection status CONNECTION_ID
  isthmusctl l2-gateway-connection status CONNECTION_ID --wait-complete --wait-timeout 30
""",
    "local disable": """The peering stays down at this site, whatever the coordinator wants, until
'local enable' or the --ttl runs out. The override is kept across agent restarts.

examples:
  isthmusctl local disable one-two --ttl 2h --reason "replacing the uplink optics"
  isthmusctl local disable one-two
""",
    "local add": """For a new remote endpoint that must be reached while the site is cut off from the
coordinator. The peering is realized at this site only and kept (across agent
restarts too) until 'local remove-override' or the --ttl runs out; the
coordinator never removes it.

examples:
  isthmusctl local add dc-backup --type bgp --local-address 192.0.2.1 --local-asn 64512 \\
      --remote-address 198.51.100.9 --remote-asn 64999 --ttl 1d --reason "dc link while partitioned"
  isthmusctl local add l2-backup --type vxlan --local-address 192.0.2.1 --local-asn 64512 \\
      --remote-address 198.51.100.9 --remote-asn 64999 --vni 5001
""",
}


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's parser from resetting a value given before the subcommand;
    # parse_args() fills in the defaults afterwards.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options")
    s = argparse.SUPPRESS
    g.add_argument("--coordinator", metavar="ADDR", default=s,
                   help=f"coordinator host:port (default: ${ENV_COORDINATOR}, else {DEFAULT_COORDINATOR})")
    g.add_argument("-o", "--output", choices=("table", "json"), default=s, help="table (default) or json")
    g.add_argument("--timeout", type=seconds, metavar="SECONDS", default=s,
                   help=f"deadline of each call (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--tls-ca", metavar="FILE", default=s, help="CA certificates (PEM); use TLS when given")
    g.add_argument("--tls-cert", metavar="FILE", default=s, help="client certificate (PEM) for mutual TLS")
    g.add_argument("--tls-key", metavar="FILE", default=s, help="private key (PEM) of --tls-cert")
    g.add_argument("--token", metavar="TOKEN", default=s,
                   help=f"bearer token for the coordinator (default ${ENV_TOKEN}); prefer the variable, "
                   "command lines are visible to other users")
    return common


def _add_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=endpoint_ref, metavar="SITE/NAME", help="the endpoint's site and name")


def _add_connection_params(p: argparse.ArgumentParser) -> None:
    add_peering_params(p)
    p.add_argument("--admin-state", choices=[a.value for a in m.AdminState], help="up (default) or down")
    p.add_argument("--description", metavar="TEXT", help="free text")


def _add_override_flags(p: argparse.ArgumentParser, until: str) -> None:
    p.add_argument("--ttl", type=duration, metavar="DURATION",
                   help=f"remove the override after this long: seconds, or 30s, 15m, 2h, 1d "
                   f"(0 or absent: until {until})")
    p.add_argument("--reason", metavar="TEXT", help="why, for the overrides list and the journal")


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    top = [common]
    parser = argparse.ArgumentParser(prog="isthmusctl", description=__doc__, parents=top, allow_abbrev=False,
                                     epilog="Run 'isthmusctl COMMAND --help' for the flags of each command.")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    cli = Parsers(top, EPILOGS)

    site = cli.group(groups, "site", "create, show, change and delete sites (regions, cells, instances, "
                     "external peers)")
    p = cli.command(site, "site create", "create a site")
    p.add_argument("name", metavar="NAME", help="site name: a DNS label, unique")
    p.add_argument("--kind", required=True, choices=[k.value for k in m.SiteKind],
                   help="what the site is: region, cell (of --parent), instance, or external (a router or cloud "
                        "that runs no isthmus agent; it holds remote endpoints only)")
    p.add_argument("--parent", metavar="REGION", help="the region a cell belongs to (cells only)")
    add_pairs(p, "--label", "label, repeatable")
    p.add_argument("--description", metavar="TEXT", help="free text")
    cli.command(site, "site get", "show one site").add_argument("name", metavar="NAME", help="site name")
    cli.command(site, "site list", "list all sites")
    p = cli.command(site, "site update", "change a site's labels or description (read, modify, write)")
    p.add_argument("name", metavar="NAME", help="site name")
    add_pairs(p, "--label", "set a label, repeatable")
    p.add_argument("--remove-label", action="append", metavar="K", help="remove a label, repeatable")
    p.add_argument("--description", metavar="TEXT", help="replace the description")
    add_version(p)
    p = cli.command(site, "site delete", "delete a site")
    p.add_argument("name", metavar="NAME", help="site name")
    add_version(p)

    endpoint = cli.group(groups, "endpoint", "create, show, change and delete endpoints of sites")
    p = cli.command(endpoint, "endpoint create", "create an endpoint")
    _add_ref(p)
    p.add_argument("--address", required=True, metavar="IP", help="IPv4 or IPv6 address")
    p.add_argument("--asn", required=True, type=uint32, metavar="N", help=f"BGP AS number 1..{m.MAX_ASN}")
    p.add_argument("--role", choices=[r.value for r in m.EndpointRole], default="local",
                   help="local: realized by the site's agent (default); remote: an external peer")
    p.add_argument("--router-id", metavar="A.B.C.D", help="BGP router id (default: the IPv4 address)")
    add_pairs(p, "--property", "property, repeatable")
    _add_ref(cli.command(endpoint, "endpoint get", "show one endpoint"))
    p = cli.command(endpoint, "endpoint list", "list endpoints")
    p.add_argument("--site", metavar="S", help="only the endpoints of site S")
    p = cli.command(endpoint, "endpoint update", "change an endpoint (read, modify, write)")
    _add_ref(p)
    p.add_argument("--address", metavar="IP", help="new IPv4 or IPv6 address")
    p.add_argument("--asn", type=uint32, metavar="N", help="new BGP AS number")
    p.add_argument("--router-id", metavar="A.B.C.D", help="new BGP router id")
    add_pairs(p, "--property", "set a property, repeatable")
    p.add_argument("--remove-property", action="append", metavar="K", help="remove a property, repeatable")
    add_version(p)
    p = cli.command(endpoint, "endpoint delete", "delete an endpoint that no connection uses")
    _add_ref(p)
    add_version(p)

    conn = cli.group(groups, "connection", "create, show, change and delete connections between sites")
    p = cli.command(conn, "connection create", "create a connection between endpoints of two sites")
    p.add_argument("name", metavar="NAME", help="connection name: a DNS label, unique")
    p.add_argument("--a", required=True, type=endpoint_ref, metavar="SITE/EP", help="one end")
    p.add_argument("--b", required=True, type=endpoint_ref, metavar="SITE/EP", help="the other end")
    p.add_argument("--type", required=True, choices=[t.value for t in m.ConnectionType],
                   help="bgp: a BGP session; vxlan: a VXLAN tunnel")
    _add_connection_params(p)
    p = cli.command(conn, "connection get", "show one connection")
    p.add_argument("name", metavar="NAME", help="connection name")
    p = cli.command(conn, "connection list", "list connections")
    p.add_argument("--site", metavar="S", help="only connections with an end in site S")
    p = cli.command(conn, "connection update", "change a connection's parameters (read, modify, write)")
    p.add_argument("name", metavar="NAME", help="connection name")
    _add_connection_params(p)
    add_version(p)
    p = cli.command(conn, "connection delete", "delete a connection")
    p.add_argument("name", metavar="NAME", help="connection name")
    add_version(p)

    gdev = cli.group(groups, "gateway-device", "create, show, change and delete the gateway devices of sites")
    p = cli.command(gdev, "gateway-device create", "create a gateway device (a site's VTEP)")
    p.add_argument("ref", type=endpoint_ref, metavar="SITE/NAME", help="the site and the device's name in it")
    p.add_argument("--type", required=True, choices=[t.value for t in border.DeviceType],
                   help="hw_vtep and router_vtep: segmentation ids are VNIs; network_vlan: VLAN ids")
    p.add_argument("--tunnel-ip", required=True, action="append", metavar="IP",
                   help="VTEP address, repeatable (the first one is used)")
    add_pairs(p, "--management", "management setting, repeatable (segment_bridge=TEMPLATE)")
    cli.command(gdev, "gateway-device get", "show one gateway device").add_argument(
        "id", metavar="ID", help="the device's id")
    p = cli.command(gdev, "gateway-device list", "list gateway devices")
    p.add_argument("--site", metavar="S", help="only the devices of site S")
    p = cli.command(gdev, "gateway-device update", "change a gateway device's tunnel IPs or management settings "
                    "(read, modify, write)")
    p.add_argument("id", metavar="ID", help="the device's id")
    p.add_argument("--tunnel-ip", action="append", metavar="IP", help="replace the VTEP addresses, repeatable")
    add_pairs(p, "--management", "set a management setting, repeatable")
    p.add_argument("--remove-management", action="append", metavar="K", help="remove a management setting, "
                   "repeatable")
    add_version(p)
    p = cli.command(gdev, "gateway-device delete", "delete a gateway device that no l2-gateway names")
    p.add_argument("id", metavar="ID", help="the device's id")
    add_version(p)

    l2gw = cli.group(groups, "l2-gateway", "create, show, change and delete l2-gateways (devices with segmentation "
                     "ids)")
    p = cli.command(l2gw, "l2-gateway create", "create an l2-gateway")
    p.add_argument("name", metavar="NAME", help="the gateway's name")
    p.add_argument("--project", required=True, metavar="P", help="the owning project")
    p.add_argument("--device", required=True, action="append", type=device_segment, metavar="DEVICE_ID[=SEGID]",
                   help="a gateway device and its segmentation id, repeatable")
    p.add_argument("--segmentation-id", type=uint32, metavar="N", help="for every --device given without =SEGID")
    cli.command(l2gw, "l2-gateway get", "show one l2-gateway").add_argument(
        "id", metavar="ID", help="the gateway's id")
    p = cli.command(l2gw, "l2-gateway list", "list l2-gateways")
    p.add_argument("--project", metavar="P", help="only the gateways of project P")
    p = cli.command(l2gw, "l2-gateway update", "rename an l2-gateway or add and remove devices (read, modify, write)")
    p.add_argument("id", metavar="ID", help="the gateway's id")
    p.add_argument("--name", metavar="N", help="new name")
    p.add_argument("--add-device", action="append", type=device_segment, metavar="DEVICE_ID[=SEGID]",
                   help="add a device, or change its segmentation id; repeatable")
    p.add_argument("--remove-device", action="append", metavar="DEVICE_ID", help="remove a device, repeatable")
    p.add_argument("--segmentation-id", type=uint32, metavar="N", help="for every --add-device given without =SEGID")
    add_version(p)
    p = cli.command(l2gw, "l2-gateway delete", "delete an l2-gateway without connections")
    p.add_argument("id", metavar="ID", help="the gateway's id")
    add_version(p)

    l2c = cli.group(groups, "l2-gateway-connection", "connect l2-gateways to tenant networks, show their tunnels")
    p = cli.command(l2c, "l2-gateway-connection create", "connect an l2-gateway to a tenant network")
    p.add_argument("gateway", metavar="GATEWAY_ID", help="the l2-gateway's id")
    p.add_argument("--network", required=True, metavar="NETWORK_ID", help="the tenant network")
    p.add_argument("--segmentation-id", type=uint32, metavar="N",
                   help="the segmentation id (default: the one the gateway's devices share)")
    p.add_argument("--project", metavar="P", help="the project; must own the gateway (default: the gateway's)")
    cli.command(l2c, "l2-gateway-connection get", "show one l2-gateway-connection").add_argument(
        "id", metavar="ID", help="the connection's id")
    p = cli.command(l2c, "l2-gateway-connection list", "list l2-gateway-connections")
    p.add_argument("--gateway", metavar="ID", help="only the connections of this l2-gateway")
    p.add_argument("--project", metavar="P", help="only the connections of project P")
    p = cli.command(l2c, "l2-gateway-connection delete", "delete an l2-gateway-connection (its tunnels go)")
    p.add_argument("id", metavar="ID", help="the connection's id")
    add_version(p)
    p = cli.command(l2c, "l2-gateway-connection status", "show each site's tunnels of a connection and whether "
                    "every site is complete")
    p.add_argument("id", metavar="ID", help="the connection's id")
    p.add_argument("--wait-complete", action="store_true", help="first wait until no site is missing")
    p.add_argument("--wait-timeout", type=seconds, default=60.0, metavar="S",
                   help="stop waiting after S seconds and exit 1 naming the missing sites (default 60)")

    p = cli.command(groups, "status", "show what each site's agent has applied and observed")
    p.add_argument("site", nargs="?", metavar="SITE", help="only this site, with a row per peering")
    p.add_argument("--wait-established", action="store_true",
                   help="first wait until every desired peering that is up is applied and established")
    p.add_argument("--wait-timeout", type=seconds, default=60.0, metavar="S",
                   help="stop waiting after S seconds and exit 1 (default 60)")

    cli.command(groups, "coordinators", "list the running coordinators, their leader and their agents")
    p = cli.command(groups, "audit", "show the audit history: writes and refused calls, who and when")
    p.add_argument("--limit", type=bounded_int(10_000), default=100, metavar="N",
                   help="the last N events (default 100)")
    groups.add_parser("pki", help="create a CA and certificates for coordinators, agents and people "
                      "(isthmusctl pki --help)", add_help=False)

    p = cli.command(groups, "watch", "print changes as they happen, one line each, until Ctrl-C")
    p.add_argument("--kind", action="append", choices=("site", "endpoint", "connection", "status"),
                   help="only this kind of object, repeatable (default: all)")
    p.add_argument("--site", metavar="S", help="only objects of site S (connections: either end)")
    p.add_argument("--from-revision", type=int64, metavar="N", help="first replay changes since revision N")

    socket = argparse.ArgumentParser(add_help=False)
    socket.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"agent admin socket (default ${ENV_ADMIN_SOCKET}, else {DEFAULT_ADMIN_SOCKET})")
    on_socket = Parsers([common, socket], EPILOGS)
    local = on_socket.group(groups, "local", "ask this host's agent on its admin socket (no coordinator used)")
    on_socket.command(local, "local status", "show the agent's coordinator session (or since when it is cut off), "
                      "revisions and overrides")
    on_socket.command(local, "local peerings", "list the agent's desired and observed peerings")
    on_socket.command(local, "local resync", "re-observe and re-apply the desired state now")
    p = on_socket.command(local, "local disable", "hold a desired peering down at this site (a local override)")
    p.add_argument("connection", metavar="CONNECTION", help="the peering's connection name")
    _add_override_flags(p, "'local enable'")
    p = on_socket.command(local, "local enable", "end a local disable: the coordinator's admin state applies again")
    p.add_argument("connection", metavar="CONNECTION", help="the peering's connection name")
    p = on_socket.command(local, "local add", "add a peering at this site only, for a new remote endpoint "
                          "reached while the site is cut off from the coordinator (a local override)")
    p.add_argument("name", metavar="NAME", help="the new peering's name: a DNS label no desired peering has")
    p.add_argument("--type", required=True, choices=[t.value for t in m.ConnectionType],
                   help="bgp: a BGP session; vxlan: a VXLAN tunnel")
    p.add_argument("--local-address", required=True, metavar="IP", help="this site's address for the peering")
    p.add_argument("--local-asn", required=True, type=uint32, metavar="N", help="this site's BGP AS number")
    p.add_argument("--router-id", metavar="A.B.C.D", help="BGP router id (default: the local IPv4 address)")
    p.add_argument("--remote-address", required=True, metavar="IP", help="the remote endpoint's address")
    p.add_argument("--remote-asn", required=True, type=uint32, metavar="N",
                   help="the remote endpoint's BGP AS number")
    add_peering_params(p)
    _add_override_flags(p, "'local remove-override'")
    on_socket.command(local, "local overrides", "list the local overrides in force at this site")
    p = on_socket.command(local, "local remove-override", "remove a local override (disable or add) now")
    p.add_argument("connection", metavar="CONNECTION", help="the connection name the override applies to")
    p = on_socket.command(local, "local journal", "show the agent's recent events, oldest first")
    p.add_argument("--limit", type=bounded_int(2**31 - 1), default=50, metavar="N",
                   help="the last N events (default 50; 0: all the agent keeps)")
    ctl_sync.add_parsers(groups, top)
    ctl_events.add_parsers(groups, top)
    ctl_views.add_parsers(groups, top)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Namespace:
    """Parse the command line (exit 2 on a usage error) and fill in the global defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = {
        "coordinator": os.environ.get(ENV_COORDINATOR) or DEFAULT_COORDINATOR,
        "socket": os.environ.get(ENV_ADMIN_SOCKET) or DEFAULT_ADMIN_SOCKET,
        "output": "table", "timeout": DEFAULT_TIMEOUT, "tls_ca": os.environ.get("ISTHMUS_TLS_CA") or None,
        "tls_cert": os.environ.get("ISTHMUS_TLS_CERT") or None, "tls_key": os.environ.get("ISTHMUS_TLS_KEY") or None,
        "token": os.environ.get(ENV_TOKEN) or None,
    }
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is not None and args.tls_ca is None:
        parser.error("--tls-cert needs --tls-ca")
    if args.command in ("l2-gateway create", "l2-gateway update"):
        flag, pairs = ("--device", args.device) if args.command == "l2-gateway create" else (
            "--add-device", args.add_device or [])
        bare = [device for device, segid in pairs if segid is None]
        if bare and args.segmentation_id is None:
            parser.error(f"{flag} {bare[0]}: give DEVICE_ID=SEGID, or --segmentation-id for all without one")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pki"]:
        from isthmus.core import pki  # only here: it needs the cryptography package

        return pki.main(argv[1:])
    args = parse_args(argv)
    ctl = Ctl(coordinator=args.coordinator, admin_socket=args.socket, output=args.output,
              timeout=args.timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
              token=args.token)
    try:
        COMMANDS[args.command](ctl, args)
        return 0
    except grpc.RpcError as exc:
        print(f"isthmusctl: error: {describe_rpc_error(exc, ctl.unavailable_hint)}", file=sys.stderr)
    except (CtlError, IsthmusError) as exc:
        print(f"isthmusctl: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from failing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        ctl.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
