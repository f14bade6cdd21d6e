"""isthmusctl's ``site``, ``endpoint`` and ``connection``: the network's objects in the coordinator's API."""

from __future__ import annotations

import argparse
import dataclasses
from argparse import Namespace

from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.wire import network as wire
from isthmus.ctl.client import Command, Ctl, all_pages
from isthmus.ctl.flags import (
    Parsers,
    Subparsers,
    add_pairs,
    add_peering_params,
    add_version,
    bgp_params,
    endpoint_ref,
    given,
    merged,
    uint32,
    vxlan_params,
)
from isthmus.ctl.render import pairs
from isthmus.v1 import api_pb2, types_pb2

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


# ---------------------------------------------------------------- text output


def _params_text(bgp: m.BgpParams | None, vxlan: m.VxlanParams | None) -> str:
    parts = []
    if bgp is not None:
        parts += [f"hold {bgp.hold_time}s", *bgp.address_families]
        parts += [f"password {bgp.password_ref}"] if bgp.password_ref else []
        parts += [f"import {'; '.join(bgp.import_prefixes)}"] if bgp.import_prefixes else []
        parts += [f"max {bgp.max_prefixes} prefixes"] if bgp.max_prefixes else []
        parts += [f"reflector {bgp.reflector}"] if bgp.reflector else []
    if vxlan is not None:
        parts.append(f"vni {vxlan.vni} port {vxlan.udp_port} mtu {vxlan.mtu}")
    return ", ".join(parts)


SITE_COLUMNS = ("NAME", "KIND", "PARENT", "LABELS", "DESCRIPTION", "VERSION")
ENDPOINT_COLUMNS = ("SITE", "NAME", "ADDRESS", "ASN", "ROLE", "ROUTER-ID", "PROPERTIES", "VERSION")
CONNECTION_COLUMNS = ("NAME", "TYPE", "A", "B", "ADMIN", "PARAMS", "DESCRIPTION", "POLICY", "VERSION")


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
            c.description, c.policy, str(c.version)]


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
    request = api_pb2.DeleteSiteRequest(name=args.name, version=args.version or 0, force=args.force)
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
}


def _add_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=endpoint_ref, metavar="SITE/NAME", help="the endpoint's site and name")


def _add_connection_params(p: argparse.ArgumentParser) -> None:
    add_peering_params(p)
    p.add_argument("--admin-state", choices=[a.value for a in m.AdminState], help="up (default) or down")
    p.add_argument("--description", metavar="TEXT", help="free text")


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
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
    p.add_argument("--force", action="store_true", help="even though sync intents name it: it is taken out of "
                   "their regions and waves; intents left with no region, or whose image source it is, are deleted")
    add_version(p)

    endpoint = cli.group(groups, "endpoint", "create, show, change and delete endpoints of sites")
    p = cli.command(endpoint, "endpoint create", "create an endpoint")
    _add_ref(p)
    p.add_argument("--address", required=True, metavar="IP", help="IPv4 or IPv6 address")
    p.add_argument("--asn", required=True, type=uint32, metavar="N", help=f"BGP AS number 1..{checks.MAX_ASN}")
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
