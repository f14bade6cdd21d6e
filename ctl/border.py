"""isthmusctl's ``gateway-device``, ``l2-gateway`` and ``l2-gateway-connection``: the border gateways that
stretch a tenant network across sites."""

from __future__ import annotations

import argparse
import dataclasses
import time
from argparse import Namespace
from collections.abc import Iterable

import grpc

from isthmus.core import border
from isthmus.core.wire import border as border_wire
from isthmus.core.wire import network as wire
from isthmus.ctl.client import WAIT_POLL_SECONDS, Command, Ctl, CtlError, all_pages
from isthmus.ctl.flags import (
    Parsers,
    Subparsers,
    add_pairs,
    add_version,
    device_segment,
    endpoint_ref,
    given,
    merged,
    seconds,
    uint32,
)
from isthmus.ctl.render import describe_rpc_error, format_age, format_table, one_line, pairs
from isthmus.v1 import l2gw_pb2, types_pb2

# ---------------------------------------------------------------- objects from flags (pure, tested)


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


def device_refs(devices: Iterable[tuple[str, int | None]], segmentation_id: int | None) -> list[border.DeviceRef]:
    """The devices of --device / --add-device flags; a device given without =SEGID takes --segmentation-id."""
    return [border.DeviceRef(device, segid if segid is not None else segmentation_id or 0)
            for device, segid in devices]


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


def device_flags_error(args: Namespace) -> str | None:
    """The usage error of an `l2-gateway create` or `update` given a device without =SEGID and no --segmentation-id,
    if it is one."""
    if args.command not in ("l2-gateway create", "l2-gateway update"):
        return None
    flag, devices = ("--device", args.device) if args.command == "l2-gateway create" else (
        "--add-device", args.add_device or [])
    bare = [device for device, segid in devices if segid is None]
    if bare and args.segmentation_id is None:
        return f"{flag} {bare[0]}: give DEVICE_ID=SEGID, or --segmentation-id for all without one"
    return None


# ---------------------------------------------------------------- text output


GATEWAY_DEVICE_COLUMNS = ("ID", "SITE", "NAME", "TYPE", "TUNNEL-IPS", "MANAGEMENT", "VERSION")
L2_GATEWAY_COLUMNS = ("ID", "NAME", "PROJECT", "DEVICES", "VERSION")
L2_CONNECTION_COLUMNS = ("ID", "L2-GATEWAY", "NETWORK", "SEGMENTATION-ID", "PROJECT", "VERSION")
TUNNEL_COLUMNS = ("SITE", "AGENT", "LOCAL-DEVICE", "REMOTE", "OBSERVED", "ERROR", "SINCE", "PEERING")


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


# ---------------------------------------------------------------- commands


def gateway_device_create(ctl: Ctl, args: Namespace) -> None:
    request = border_wire.device_to_pb(new_gateway_device(args))
    ctl.show_one(ctl.border().CreateGatewayDevice(request, timeout=ctl.timeout), GATEWAY_DEVICE_COLUMNS,
                 gateway_device_row)


def gateway_device_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.border().GetGatewayDevice(l2gw_pb2.GetByIdRequest(id=args.id), timeout=ctl.timeout)
    ctl.show_one(reply, GATEWAY_DEVICE_COLUMNS, gateway_device_row)


def gateway_device_list(ctl: Ctl, args: Namespace) -> None:
    request = l2gw_pb2.ListGatewayDevicesRequest(site=args.site or "")
    devices = all_pages(ctl.border().ListGatewayDevices, request, "devices", ctl.timeout)
    ctl.show(sorted(devices, key=lambda d: (d.site, d.name)), GATEWAY_DEVICE_COLUMNS, gateway_device_row)


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
    gateways = all_pages(ctl.border().ListL2Gateways, request, "l2_gateways", ctl.timeout)
    ctl.show(sorted(gateways, key=lambda g: (g.name, g.id)), L2_GATEWAY_COLUMNS, l2_gateway_row)


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
    conns = all_pages(ctl.border().ListL2GatewayConnections, request, "l2_gateway_connections", ctl.timeout)
    ctl.show(sorted(conns, key=lambda c: (c.network_id, c.id)), L2_CONNECTION_COLUMNS,
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


COMMANDS: dict[str, Command] = {
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
}


# ---------------------------------------------------------------- command line

EPILOGS = {
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
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top, EPILOGS)
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
