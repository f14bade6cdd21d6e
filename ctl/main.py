"""isthmusctl: the command line client of the coordinator's API and of an agent's local admin socket."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from isthmus.core import border
from isthmus.core import model as m
from isthmus.core.errors import IsthmusError
from isthmus.core.flags import duration
from isthmus.core.wire import border as border_wire
from isthmus.core.wire import network as wire
from isthmus.ctl import events as ctl_events
from isthmus.ctl import sync as ctl_sync
from isthmus.ctl import views as ctl_views
from isthmus.v1 import admin_pb2, admin_pb2_grpc, api_pb2, api_pb2_grpc, l2gw_pb2, l2gw_pb2_grpc, types_pb2

ENV_COORDINATOR = "ISTHMUS_COORDINATOR"
ENV_TOKEN = "ISTHMUS_TOKEN"
ENV_ADMIN_SOCKET = "ISTHMUS_ADMIN_SOCKET"
DEFAULT_COORDINATOR = "127.0.0.1:7800"
DEFAULT_ADMIN_SOCKET = "/run/isthmus/agent.sock"
DEFAULT_TIMEOUT = 10.0
WAIT_POLL_SECONDS = 0.5

T = TypeVar("T")
Namespace = argparse.Namespace
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # argparse has no public name


class CtlError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


# ---------------------------------------------------------------- flag values (usage errors: exit 2)


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE of a --label or --property flag."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def endpoint_ref(text: str) -> m.EndpointRef:
    """SITE/NAME naming an endpoint."""
    site, sep, name = text.partition("/")
    if not sep or not site or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected SITE/NAME, got {text!r}")
    return m.EndpointRef(site, name)


def _bounded_int(limit: int) -> Callable[[str], int]:
    # Values protobuf cannot hold are usage errors here; the coordinator checks the real
    # ranges (asn 1.., hold time 0 or 3..) and its error names the field.
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError(f"{value} is out of range 0..{limit}")
        return value

    return parse


uint32 = _bounded_int(2**32 - 1)
int64 = _bounded_int(2**63 - 1)


def device_segment(text: str) -> tuple[str, int | None]:
    """DEVICE_ID=SEGID or DEVICE_ID of a --device flag (None: the --segmentation-id applies)."""
    device, sep, segid = text.partition("=")
    if not device:
        raise argparse.ArgumentTypeError(f"expected DEVICE_ID or DEVICE_ID=SEGID, got {text!r}")
    if not sep:
        return device, None
    try:
        return device, uint32(segid)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"segmentation id of {device}: {exc}") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0")
    return value


# ---------------------------------------------------------------- objects from flags (pure, tested)


def _given(value: T | None, current: T) -> T:
    return current if value is None else value


def merged(current: dict[str, str], add: Iterable[tuple[str, str]] | None, remove: Iterable[str] | None
           ) -> dict[str, str]:
    """current without the keys in remove, then with the pairs in add."""
    removed = set(remove or ())
    out = {k: v for k, v in current.items() if k not in removed}
    out.update(add or ())
    return out


def bgp_params(base: m.BgpParams | None, args: Namespace) -> m.BgpParams | None:
    """base with the BGP flags given applied; base itself when none was given."""
    if args.hold_time is None and args.password_ref is None and not args.address_family:
        return base
    b = base or m.BgpParams()
    families = tuple(args.address_family) if args.address_family else b.address_families
    hold_time, password_ref = _given(args.hold_time, b.hold_time), _given(args.password_ref, b.password_ref)
    return m.BgpParams(hold_time, password_ref, families)


def vxlan_params(base: m.VxlanParams | None, args: Namespace) -> m.VxlanParams | None:
    """base with the VXLAN flags given applied; base itself when none was given."""
    if args.vni is None and args.udp_port is None and args.mtu is None:
        return base
    v = base or m.VxlanParams()
    return m.VxlanParams(_given(args.vni, v.vni), _given(args.udp_port, v.udp_port), _given(args.mtu, v.mtu))


def new_site(args: Namespace) -> m.Site:
    return m.Site(name=args.name, kind=m.SiteKind(args.kind), parent=args.parent or "",
                  labels=dict(args.label or ()), description=args.description or "")


def updated_site(current: m.Site, args: Namespace) -> m.Site:
    """What to send to UpdateSite: current with the flags applied, at --version or the version read."""
    return dataclasses.replace(
        current,
        labels=merged(current.labels, args.label, args.remove_label),
        description=_given(args.description, current.description),
        version=_given(args.version, current.version),
    )


def new_endpoint(args: Namespace) -> m.Endpoint:
    return m.Endpoint(site=args.ref.site, name=args.ref.name, address=args.address, asn=args.asn,
                      role=m.EndpointRole(args.role), router_id=args.router_id or "",
                      properties=dict(args.property or ()))


def updated_endpoint(current: m.Endpoint, args: Namespace) -> m.Endpoint:
    """What to send to UpdateEndpoint: current with the flags applied, at --version or the version read."""
    router_id = _given(args.router_id, current.router_id)
    if args.address is not None and args.router_id is None and current.router_id == current.address:
        router_id = ""  # it was derived from the old address: let the coordinator derive it again
    return dataclasses.replace(
        current,
        address=_given(args.address, current.address),
        asn=_given(args.asn, current.asn),
        router_id=router_id,
        properties=merged(current.properties, args.property, args.remove_property),
        version=_given(args.version, current.version),
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
        admin_state=m.AdminState(_given(args.admin_state, current.admin_state)),
        description=_given(args.description, current.description),
        version=_given(args.version, current.version),
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
        version=_given(args.version, current.version),
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
    return dataclasses.replace(current, name=_given(args.name, current.name), devices=tuple(devices),
                               version=_given(args.version, current.version))


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


def format_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; an empty cell shows as '-' so every row has every column."""
    cells = [list(columns)] + [[str(c) or "-" for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def format_fields(pairs: Sequence[tuple[str, str]]) -> str:
    """'key: value' lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return "\n".join(f"{k + ':':<{width}} {v}".rstrip() for k, v in pairs)


def format_age(age_seconds: float) -> str:
    """An age in its largest whole unit: '5s', '3m', '2h', '4d' (clock skew shows as '0s')."""
    s = max(0, int(age_seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def format_clock(unix_ms: int) -> str:
    """A Unix time in milliseconds as local 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_ms / 1000))


def format_expiry(expires_ms: int, now: float) -> str:
    """When an override ends: 'in 5m', 'never' (0: until removed), or 'expired' (not yet purged)."""
    if not expires_ms:
        return "never"
    left = math.ceil(expires_ms / 1000 - now)  # rounded up: a TTL of 15m just set shows 'in 15m'
    return f"in {format_age(left)}" if left > 0 else "expired"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _pairs(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


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
PEERING_COLUMNS = ("CONNECTION", "TYPE", "LOCAL", "REMOTE", "ADMIN", "DESIRED", "LOCAL-OVERRIDE", "OBSERVED",
                   "RECEIVED", "ERROR", "SINCE")
OVERRIDE_COLUMNS = ("CONNECTION", "KIND", "DETAIL", "REASON", "CREATED", "EXPIRES")
JOURNAL_COLUMNS = ("TIME", "KIND", "CONNECTION", "MESSAGE")
COORDINATOR_COLUMNS = ("ID", "ADDRESS", "LEADER", "AGENTS", "VERSION", "UP")
GATEWAY_DEVICE_COLUMNS = ("ID", "SITE", "NAME", "TYPE", "TUNNEL-IPS", "MANAGEMENT", "VERSION")
L2_GATEWAY_COLUMNS = ("ID", "NAME", "PROJECT", "DEVICES", "VERSION")
L2_CONNECTION_COLUMNS = ("ID", "L2-GATEWAY", "NETWORK", "SEGMENTATION-ID", "PROJECT", "VERSION")
TUNNEL_COLUMNS = ("SITE", "AGENT", "LOCAL-DEVICE", "REMOTE", "OBSERVED", "ERROR", "SINCE", "PEERING")
RECENT_EVENTS = 10  # journal entries `status SITE` shows


def site_row(msg: types_pb2.Site) -> list[str]:
    s = wire.site_from_pb(msg)
    return [s.name, s.kind.value, s.parent, _pairs(s.labels), s.description, str(s.version)]


def endpoint_row(msg: types_pb2.Endpoint) -> list[str]:
    e = wire.endpoint_from_pb(msg)
    return [e.site, e.name, e.address, str(e.asn), e.role.value, e.router_id, _pairs(e.properties),
            str(e.version)]


def connection_row(msg: types_pb2.Connection) -> list[str]:
    c = wire.connection_from_pb(msg)
    return [c.name, c.type.value, str(c.a), str(c.b), c.admin_state.value, _params_text(c.bgp, c.vxlan),
            c.description, str(c.version)]


def gateway_device_row(msg: l2gw_pb2.GatewayDevice) -> list[str]:
    d = border_wire.device_from_pb(msg)
    return [d.id, d.site, d.name, d.type.value, ",".join(d.tunnel_ips), _pairs(d.management), str(d.version)]


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
                state, error = o.state.value, _one_line(o.error)
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


def override_text(o: m.Override, now: float) -> str:
    """The LOCAL-OVERRIDE cell: 'disabled (until enabled)', 'added locally (expires in 5m)', ..."""
    what = "disabled" if o.kind == m.OverrideKind.DISABLE else "added locally"
    if not o.expires_ms:
        return f"{what} (until enabled)" if o.kind == m.OverrideKind.DISABLE else what
    left = format_expiry(o.expires_ms, now)
    return f"{what} (expired)" if left == "expired" else f"{what} (expires {left})"


def peering_row(p: api_pb2.PeeringStatus | admin_pb2.LocalPeering, now: float) -> list[str]:
    """One row of PEERING_COLUMNS; now is the current Unix time in seconds, for SINCE and expiries."""
    desired = wire.peering_from_pb(p.desired) if p.HasField("desired") else None
    observed = wire.observed_from_pb(p.observed) if p.HasField("observed") else None
    override = wire.override_from_pb(p.override) if p.HasField("override") else None
    added = override.peering if override is not None else None
    # The coordinator reports a peering added at a site without desired: show what the site realizes.
    shown = desired if desired is not None else added
    intent = ["", "", "", "", "no"]
    if shown is not None:
        local, remote = shown.local, shown.remote
        # A peering added at the site has no remote site: the agent names its ends with placeholders.
        where = "" if shown == added else f"{remote.site}/{remote.name} "
        intent = [shown.type.value, f"{local.address} AS {local.asn}", f"{where}{remote.address} AS {remote.asn}",
                  shown.admin_state.value, "yes" if desired is not None else "no"]
    local_override = ""
    if override is not None:
        local_override = override_text(override, now)
        if added is not None and desired is not None and desired != added:
            local_override += ", replacing the coordinator's"  # the coordinator desires the same name
    seen = ["", "", "", ""]
    if observed is not None:
        since = format_age(now - observed.since_ms / 1000) if observed.since_ms else ""
        # Only BGP receives prefixes: a VXLAN tunnel's count would always be a misleading 0.
        bgp = shown is None or shown.type == m.ConnectionType.BGP
        received = str(len(observed.received_prefixes)) if bgp else ""
        seen = [observed.state.value, received, _one_line(observed.error), since]
    name = desired.connection if desired else observed.connection if observed else p.override.connection
    return [name, *intent, local_override, *seen]


def override_row(msg: types_pb2.Override, now: float) -> list[str]:
    """One row of OVERRIDE_COLUMNS; now is the current Unix time in seconds."""
    o = wire.override_from_pb(msg)
    detail = ""
    if o.peering is not None:
        p = o.peering
        via = f"VNI {p.vxlan.vni}" if p.vxlan is not None else f"AS {p.remote.asn}"
        detail = f"{p.type.value} to {p.remote.address} {via}"
    created = f"{format_age(now - o.created_ms / 1000)} ago" if o.created_ms else ""
    return [o.connection, o.kind.value, detail, _one_line(o.reason), created, format_expiry(o.expires_ms, now)]


def journal_row(e: types_pb2.JournalEntry) -> list[str]:
    """One row of JOURNAL_COLUMNS: local time, kind, connection, and the message on one line."""
    return [format_clock(e.time_unix_ms), e.kind, e.connection, _one_line(e.message)]


def format_journal(entries: Iterable[types_pb2.JournalEntry]) -> str:
    """TIME  KIND  CONNECTION  MESSAGE, one line per entry, oldest first."""
    return format_table(JOURNAL_COLUMNS, [journal_row(e) for e in entries])


def coordinator_row(c: api_pb2.CoordinatorInfo, now: float) -> list[str]:
    up = format_age(now - c.started_unix_ms / 1000) if c.started_unix_ms else ""
    return [c.id, c.address, "yes" if c.leader else "", str(c.agents), c.version, up]


def _peering_name(p: api_pb2.PeeringStatus | admin_pb2.LocalPeering) -> str:
    return p.desired.connection or p.observed.connection or p.override.connection


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


def message_json(msg: Message) -> dict[str, Any]:
    data: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True)
    return data


def describe_rpc_error(exc: grpc.RpcError, unavailable_hint: str = "") -> str:
    """'<CODE>: <details>' on one line, with a hint where the code alone does not say what to do."""
    code = exc.code()
    text = f"{code.name}: {' '.join((exc.details() or '').split())}"
    if code == grpc.StatusCode.UNAVAILABLE and unavailable_hint:
        text += f" ({unavailable_hint})"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        text += " (no answer in time; see --timeout)"
    return text


# ---------------------------------------------------------------- the session of one command


def _stub(factory: Any, channel: Any) -> Any:
    # The generated *_pb2_grpc modules have no type stubs; calling through Any keeps mypy strict quiet.
    return factory(channel)


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CtlError(f"{flag}: cannot read {path}: {exc.strerror}") from exc


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer TOKEN`` to every call."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.metadata])

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)


@dataclass
class Ctl:
    """What every command needs: where to connect, how to print, and the one channel it opens."""

    coordinator: str = DEFAULT_COORDINATOR
    admin_socket: str = DEFAULT_ADMIN_SOCKET
    output: str = "table"
    timeout: float = DEFAULT_TIMEOUT
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    unavailable_hint: str = ""  # names the address tried, once a channel is open
    _channel: Any = None

    def _coordinator_channel(self) -> Any:
        if self._channel is None:
            self.unavailable_hint = (f"is a coordinator running at {self.coordinator}? "
                                     f"set --coordinator or ${ENV_COORDINATOR}")
            if self.tls_ca is None:
                self._channel = grpc.insecure_channel(self.coordinator)
            else:
                creds = grpc.ssl_channel_credentials(
                    root_certificates=_read(self.tls_ca, "--tls-ca"),
                    private_key=_read(self.tls_key, "--tls-key") if self.tls_key else None,
                    certificate_chain=_read(self.tls_cert, "--tls-cert") if self.tls_cert else None,
                )
                # A unix socket has no host name; the coordinator's certificate names localhost.
                options = ([("grpc.ssl_target_name_override", "localhost")]
                           if self.coordinator.startswith("unix:") else [])
                self._channel = grpc.secure_channel(self.coordinator, creds, options=options)
            if self.token:
                self._channel = grpc.intercept_channel(self._channel, BearerToken(self.token))
        return self._channel

    def sites(self) -> Any:
        return _stub(api_pb2_grpc.SiteServiceStub, self._coordinator_channel())

    def endpoints(self) -> Any:
        return _stub(api_pb2_grpc.EndpointServiceStub, self._coordinator_channel())

    def connections(self) -> Any:
        return _stub(api_pb2_grpc.ConnectionServiceStub, self._coordinator_channel())

    def status(self) -> Any:
        return _stub(api_pb2_grpc.StatusServiceStub, self._coordinator_channel())

    def border(self) -> Any:
        return _stub(l2gw_pb2_grpc.BorderGatewayServiceStub, self._coordinator_channel())

    def stub(self, factory: Any) -> Any:
        return _stub(factory, self._coordinator_channel())

    def admin(self) -> Any:
        if self._channel is None:
            self.unavailable_hint = (f"is the agent running with admin socket {self.admin_socket}? "
                                     f"set --socket or ${ENV_ADMIN_SOCKET}")
            self._channel = grpc.insecure_channel("unix:" + self.admin_socket)
        return _stub(admin_pb2_grpc.AgentAdminStub, self._channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def print_json(self, value: Message | Sequence[Message]) -> None:
        data = message_json(value) if isinstance(value, Message) else [message_json(v) for v in value]
        print(json.dumps(data, indent=2))

    def show(self, items: Sequence[Any], columns: Sequence[str], row: Callable[[Any], list[str]]) -> None:
        """A list of objects: a table, or a JSON array."""
        if self.output == "json":
            self.print_json(items)
        else:
            print(format_table(columns, [row(i) for i in items]))

    def show_one(self, item: Any, columns: Sequence[str], row: Callable[[Any], list[str]]) -> None:
        """One object: a one-row table, or a JSON object."""
        if self.output == "json":
            self.print_json(item)
        else:
            print(format_table(columns, [row(item)]))

    def show_deleted(self, what: str, reply: api_pb2.DeleteResponse | l2gw_pb2.DeleteByIdResponse) -> None:
        if self.output == "json":
            self.print_json(reply)
        else:
            print(f"deleted {what} at revision {reply.revision}")


# ---------------------------------------------------------------- commands


def site_create(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.sites().CreateSite(wire.site_to_pb(new_site(args)), timeout=ctl.timeout)
    ctl.show_one(reply, SITE_COLUMNS, site_row)


def site_get(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.sites().GetSite(api_pb2.GetSiteRequest(name=args.name), timeout=ctl.timeout)
    ctl.show_one(reply, SITE_COLUMNS, site_row)


def all_pages(call: Callable[..., Any], request: Any, field: str, timeout: float) -> list[Any]:
    """Every item of a paged List call, following next_page_token."""
    items: list[Any] = []
    while True:
        reply = call(request, timeout=timeout)
        items += list(getattr(reply, field))
        if not reply.next_page_token:
            return items
        request.page_token = reply.next_page_token


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
        for p in sorted(st.peerings, key=_peering_name):
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
    peerings = sorted(st.peerings, key=_peering_name)
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


def follow(ctl: Ctl, call: Any, header: str, line: Callable[[Any], str], resume_flag: str) -> None:
    """Print a server stream as it comes (no deadline: until stopped); a broken one says where to resume."""
    last = 0
    try:
        if ctl.output == "table":
            print(header, flush=True)
        for item in call:
            last = item.revision
            print(json.dumps(message_json(item)) if ctl.output == "json" else line(item), flush=True)
    except KeyboardInterrupt:
        call.cancel()
    except grpc.RpcError as exc:
        if not last:
            raise
        # Replaying the last revision may repeat an item but never skips one.
        raise CtlError(describe_rpc_error(exc, ctl.unavailable_hint) + f"; resume with {resume_flag} {last}") from exc


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
        ("last-error", _one_line(st.last_error)),
        ("sync", (f"region {st.sync_region}, stream {'up' if st.sync_connected else 'down'}; "
                  + (", ".join(f"{n} {state}" for state, n in sorted(st.sync_states.items())) or "nothing to do"))
         if st.sync_enabled else "off (no --os-cloud)"),
    ]


def local_peerings(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().ListPeerings(admin_pb2.ListPeeringsRequest(), timeout=ctl.timeout)
    peerings = sorted(reply.peerings, key=_peering_name)
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
COMMANDS: dict[str, Callable[[Ctl, Namespace], None]] = {
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

_EPILOGS = {
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
_EPILOGS.update(ctl_sync.EPILOGS)
_EPILOGS.update(ctl_views.EPILOGS)


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


def _group(subs: Subparsers, name: str, help: str, parents: list[argparse.ArgumentParser]) -> Subparsers:
    p = subs.add_parser(name, help=help, description=help, parents=parents, allow_abbrev=False)
    return p.add_subparsers(dest="action", metavar="ACTION", required=True)


def _command(subs: Subparsers, command: str, help: str, parents: list[argparse.ArgumentParser]
             ) -> argparse.ArgumentParser:
    p = subs.add_parser(command.split()[-1], help=help, description=help, parents=parents,
                        epilog=_EPILOGS.get(command), formatter_class=argparse.RawDescriptionHelpFormatter,
                        allow_abbrev=False)
    p.set_defaults(command=command)
    return p


def _add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int64, metavar="N", help="only if the stored version is N, else ABORTED")


def _add_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=endpoint_ref, metavar="SITE/NAME", help="the endpoint's site and name")


def _add_pairs(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    p.add_argument(flag, type=key_value, action="append", metavar="K=V", help=help)


def _add_connection_params(p: argparse.ArgumentParser) -> None:
    _add_peering_params(p)
    p.add_argument("--admin-state", choices=[a.value for a in m.AdminState], help="up (default) or down")
    p.add_argument("--description", metavar="TEXT", help="free text")


def _add_override_flags(p: argparse.ArgumentParser, until: str) -> None:
    p.add_argument("--ttl", type=duration, metavar="DURATION",
                   help=f"remove the override after this long: seconds, or 30s, 15m, 2h, 1d "
                   f"(0 or absent: until {until})")
    p.add_argument("--reason", metavar="TEXT", help="why, for the overrides list and the journal")


def _add_peering_params(p: argparse.ArgumentParser) -> None:
    families = ", ".join(m.ADDRESS_FAMILIES)
    p.add_argument("--hold-time", type=uint32, metavar="S", help="BGP hold time in seconds: 0 or 3..65535")
    p.add_argument("--password-ref", metavar="REF", help="BGP password reference: file:/PATH or env:NAME")
    p.add_argument("--address-family", action="append", choices=m.ADDRESS_FAMILIES, metavar="F",
                   help=f"BGP address family, repeatable; replaces the list: {families}")
    p.add_argument("--vni", type=uint32, metavar="N", help=f"VXLAN network identifier 1..{m.MAX_VNI}")
    p.add_argument("--udp-port", type=uint32, metavar="P",
                   help=f"VXLAN UDP port (default {m.DEFAULT_VXLAN_PORT})")
    p.add_argument("--mtu", type=uint32, metavar="M", help=f"VXLAN MTU (default {m.DEFAULT_VXLAN_MTU})")


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    top = [common]
    parser = argparse.ArgumentParser(prog="isthmusctl", description=__doc__, parents=top, allow_abbrev=False,
                                     epilog="Run 'isthmusctl COMMAND --help' for the flags of each command.")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    site = _group(groups, "site", "create, show, change and delete sites (regions, cells, instances, external peers)",
                  top)
    p = _command(site, "site create", "create a site", top)
    p.add_argument("name", metavar="NAME", help="site name: a DNS label, unique")
    p.add_argument("--kind", required=True, choices=[k.value for k in m.SiteKind],
                   help="what the site is: region, cell (of --parent), instance, or external (a router or cloud "
                        "that runs no isthmus agent; it holds remote endpoints only)")
    p.add_argument("--parent", metavar="REGION", help="the region a cell belongs to (cells only)")
    _add_pairs(p, "--label", "label, repeatable")
    p.add_argument("--description", metavar="TEXT", help="free text")
    _command(site, "site get", "show one site", top).add_argument("name", metavar="NAME", help="site name")
    _command(site, "site list", "list all sites", top)
    p = _command(site, "site update", "change a site's labels or description (read, modify, write)", top)
    p.add_argument("name", metavar="NAME", help="site name")
    _add_pairs(p, "--label", "set a label, repeatable")
    p.add_argument("--remove-label", action="append", metavar="K", help="remove a label, repeatable")
    p.add_argument("--description", metavar="TEXT", help="replace the description")
    _add_version(p)
    p = _command(site, "site delete", "delete a site", top)
    p.add_argument("name", metavar="NAME", help="site name")
    _add_version(p)

    endpoint = _group(groups, "endpoint", "create, show, change and delete endpoints of sites", top)
    p = _command(endpoint, "endpoint create", "create an endpoint", top)
    _add_ref(p)
    p.add_argument("--address", required=True, metavar="IP", help="IPv4 or IPv6 address")
    p.add_argument("--asn", required=True, type=uint32, metavar="N", help=f"BGP AS number 1..{m.MAX_ASN}")
    p.add_argument("--role", choices=[r.value for r in m.EndpointRole], default="local",
                   help="local: realized by the site's agent (default); remote: an external peer")
    p.add_argument("--router-id", metavar="A.B.C.D", help="BGP router id (default: the IPv4 address)")
    _add_pairs(p, "--property", "property, repeatable")
    _add_ref(_command(endpoint, "endpoint get", "show one endpoint", top))
    p = _command(endpoint, "endpoint list", "list endpoints", top)
    p.add_argument("--site", metavar="S", help="only the endpoints of site S")
    p = _command(endpoint, "endpoint update", "change an endpoint (read, modify, write)", top)
    _add_ref(p)
    p.add_argument("--address", metavar="IP", help="new IPv4 or IPv6 address")
    p.add_argument("--asn", type=uint32, metavar="N", help="new BGP AS number")
    p.add_argument("--router-id", metavar="A.B.C.D", help="new BGP router id")
    _add_pairs(p, "--property", "set a property, repeatable")
    p.add_argument("--remove-property", action="append", metavar="K", help="remove a property, repeatable")
    _add_version(p)
    p = _command(endpoint, "endpoint delete", "delete an endpoint that no connection uses", top)
    _add_ref(p)
    _add_version(p)

    conn = _group(groups, "connection", "create, show, change and delete connections between sites", top)
    p = _command(conn, "connection create", "create a connection between endpoints of two sites", top)
    p.add_argument("name", metavar="NAME", help="connection name: a DNS label, unique")
    p.add_argument("--a", required=True, type=endpoint_ref, metavar="SITE/EP", help="one end")
    p.add_argument("--b", required=True, type=endpoint_ref, metavar="SITE/EP", help="the other end")
    p.add_argument("--type", required=True, choices=[t.value for t in m.ConnectionType],
                   help="bgp: a BGP session; vxlan: a VXLAN tunnel")
    _add_connection_params(p)
    p = _command(conn, "connection get", "show one connection", top)
    p.add_argument("name", metavar="NAME", help="connection name")
    p = _command(conn, "connection list", "list connections", top)
    p.add_argument("--site", metavar="S", help="only connections with an end in site S")
    p = _command(conn, "connection update", "change a connection's parameters (read, modify, write)", top)
    p.add_argument("name", metavar="NAME", help="connection name")
    _add_connection_params(p)
    _add_version(p)
    p = _command(conn, "connection delete", "delete a connection", top)
    p.add_argument("name", metavar="NAME", help="connection name")
    _add_version(p)

    gdev = _group(groups, "gateway-device", "create, show, change and delete the gateway devices of sites", top)
    p = _command(gdev, "gateway-device create", "create a gateway device (a site's VTEP)", top)
    p.add_argument("ref", type=endpoint_ref, metavar="SITE/NAME", help="the site and the device's name in it")
    p.add_argument("--type", required=True, choices=[t.value for t in border.DeviceType],
                   help="hw_vtep and router_vtep: segmentation ids are VNIs; network_vlan: VLAN ids")
    p.add_argument("--tunnel-ip", required=True, action="append", metavar="IP",
                   help="VTEP address, repeatable (the first one is used)")
    _add_pairs(p, "--management", "management setting, repeatable (segment_bridge=TEMPLATE)")
    _command(gdev, "gateway-device get", "show one gateway device", top).add_argument(
        "id", metavar="ID", help="the device's id")
    p = _command(gdev, "gateway-device list", "list gateway devices", top)
    p.add_argument("--site", metavar="S", help="only the devices of site S")
    p = _command(gdev, "gateway-device update", "change a gateway device's tunnel IPs or management settings "
                 "(read, modify, write)", top)
    p.add_argument("id", metavar="ID", help="the device's id")
    p.add_argument("--tunnel-ip", action="append", metavar="IP", help="replace the VTEP addresses, repeatable")
    _add_pairs(p, "--management", "set a management setting, repeatable")
    p.add_argument("--remove-management", action="append", metavar="K", help="remove a management setting, "
                   "repeatable")
    _add_version(p)
    p = _command(gdev, "gateway-device delete", "delete a gateway device that no l2-gateway names", top)
    p.add_argument("id", metavar="ID", help="the device's id")
    _add_version(p)

    l2gw = _group(groups, "l2-gateway", "create, show, change and delete l2-gateways (devices with segmentation "
                  "ids)", top)
    p = _command(l2gw, "l2-gateway create", "create an l2-gateway", top)
    p.add_argument("name", metavar="NAME", help="the gateway's name")
    p.add_argument("--project", required=True, metavar="P", help="the owning project")
    p.add_argument("--device", required=True, action="append", type=device_segment, metavar="DEVICE_ID[=SEGID]",
                   help="a gateway device and its segmentation id, repeatable")
    p.add_argument("--segmentation-id", type=uint32, metavar="N", help="for every --device given without =SEGID")
    _command(l2gw, "l2-gateway get", "show one l2-gateway", top).add_argument(
        "id", metavar="ID", help="the gateway's id")
    p = _command(l2gw, "l2-gateway list", "list l2-gateways", top)
    p.add_argument("--project", metavar="P", help="only the gateways of project P")
    p = _command(l2gw, "l2-gateway update", "rename an l2-gateway or add and remove devices (read, modify, write)",
                 top)
    p.add_argument("id", metavar="ID", help="the gateway's id")
    p.add_argument("--name", metavar="N", help="new name")
    p.add_argument("--add-device", action="append", type=device_segment, metavar="DEVICE_ID[=SEGID]",
                   help="add a device, or change its segmentation id; repeatable")
    p.add_argument("--remove-device", action="append", metavar="DEVICE_ID", help="remove a device, repeatable")
    p.add_argument("--segmentation-id", type=uint32, metavar="N", help="for every --add-device given without =SEGID")
    _add_version(p)
    p = _command(l2gw, "l2-gateway delete", "delete an l2-gateway without connections", top)
    p.add_argument("id", metavar="ID", help="the gateway's id")
    _add_version(p)

    l2c = _group(groups, "l2-gateway-connection", "connect l2-gateways to tenant networks, show their tunnels",
                 top)
    p = _command(l2c, "l2-gateway-connection create", "connect an l2-gateway to a tenant network", top)
    p.add_argument("gateway", metavar="GATEWAY_ID", help="the l2-gateway's id")
    p.add_argument("--network", required=True, metavar="NETWORK_ID", help="the tenant network")
    p.add_argument("--segmentation-id", type=uint32, metavar="N",
                   help="the segmentation id (default: the one the gateway's devices share)")
    p.add_argument("--project", metavar="P", help="the project; must own the gateway (default: the gateway's)")
    _command(l2c, "l2-gateway-connection get", "show one l2-gateway-connection", top).add_argument(
        "id", metavar="ID", help="the connection's id")
    p = _command(l2c, "l2-gateway-connection list", "list l2-gateway-connections", top)
    p.add_argument("--gateway", metavar="ID", help="only the connections of this l2-gateway")
    p.add_argument("--project", metavar="P", help="only the connections of project P")
    p = _command(l2c, "l2-gateway-connection delete", "delete an l2-gateway-connection (its tunnels go)", top)
    p.add_argument("id", metavar="ID", help="the connection's id")
    _add_version(p)
    p = _command(l2c, "l2-gateway-connection status", "show each site's tunnels of a connection and whether "
                 "every site is complete", top)
    p.add_argument("id", metavar="ID", help="the connection's id")
    p.add_argument("--wait-complete", action="store_true", help="first wait until no site is missing")
    p.add_argument("--wait-timeout", type=seconds, default=60.0, metavar="S",
                   help="stop waiting after S seconds and exit 1 naming the missing sites (default 60)")

    p = _command(groups, "status", "show what each site's agent has applied and observed", top)
    p.add_argument("site", nargs="?", metavar="SITE", help="only this site, with a row per peering")
    p.add_argument("--wait-established", action="store_true",
                   help="first wait until every desired peering that is up is applied and established")
    p.add_argument("--wait-timeout", type=seconds, default=60.0, metavar="S",
                   help="stop waiting after S seconds and exit 1 (default 60)")

    _command(groups, "coordinators", "list the running coordinators, their leader and their agents", top)
    p = _command(groups, "audit", "show the audit history: writes and refused calls, who and when", top)
    p.add_argument("--limit", type=_bounded_int(10_000), default=100, metavar="N",
                   help="the last N events (default 100)")
    groups.add_parser("pki", help="create a CA and certificates for coordinators, agents and people "
                      "(isthmusctl pki --help)", add_help=False)

    p = _command(groups, "watch", "print changes as they happen, one line each, until Ctrl-C", top)
    p.add_argument("--kind", action="append", choices=("site", "endpoint", "connection", "status"),
                   help="only this kind of object, repeatable (default: all)")
    p.add_argument("--site", metavar="S", help="only objects of site S (connections: either end)")
    p.add_argument("--from-revision", type=int64, metavar="N", help="first replay changes since revision N")

    socket = argparse.ArgumentParser(add_help=False)
    socket.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"agent admin socket (default ${ENV_ADMIN_SOCKET}, else {DEFAULT_ADMIN_SOCKET})")
    with_socket = [common, socket]
    local = _group(groups, "local", "ask this host's agent on its admin socket (no coordinator used)",
                   with_socket)
    _command(local, "local status", "show the agent's coordinator session (or since when it is cut off), "
             "revisions and overrides", with_socket)
    _command(local, "local peerings", "list the agent's desired and observed peerings", with_socket)
    _command(local, "local resync", "re-observe and re-apply the desired state now", with_socket)
    p = _command(local, "local disable", "hold a desired peering down at this site (a local override)",
                 with_socket)
    p.add_argument("connection", metavar="CONNECTION", help="the peering's connection name")
    _add_override_flags(p, "'local enable'")
    p = _command(local, "local enable", "end a local disable: the coordinator's admin state applies again",
                 with_socket)
    p.add_argument("connection", metavar="CONNECTION", help="the peering's connection name")
    p = _command(local, "local add", "add a peering at this site only, for a new remote endpoint reached "
                 "while the site is cut off from the coordinator (a local override)", with_socket)
    p.add_argument("name", metavar="NAME", help="the new peering's name: a DNS label no desired peering has")
    p.add_argument("--type", required=True, choices=[t.value for t in m.ConnectionType],
                   help="bgp: a BGP session; vxlan: a VXLAN tunnel")
    p.add_argument("--local-address", required=True, metavar="IP", help="this site's address for the peering")
    p.add_argument("--local-asn", required=True, type=uint32, metavar="N", help="this site's BGP AS number")
    p.add_argument("--router-id", metavar="A.B.C.D", help="BGP router id (default: the local IPv4 address)")
    p.add_argument("--remote-address", required=True, metavar="IP", help="the remote endpoint's address")
    p.add_argument("--remote-asn", required=True, type=uint32, metavar="N",
                   help="the remote endpoint's BGP AS number")
    _add_peering_params(p)
    _add_override_flags(p, "'local remove-override'")
    _command(local, "local overrides", "list the local overrides in force at this site", with_socket)
    p = _command(local, "local remove-override", "remove a local override (disable or add) now", with_socket)
    p.add_argument("connection", metavar="CONNECTION", help="the connection name the override applies to")
    p = _command(local, "local journal", "show the agent's recent events, oldest first", with_socket)
    p.add_argument("--limit", type=_bounded_int(2**31 - 1), default=50, metavar="N",
                   help="the last N events (default 50; 0: all the agent keeps)")
    ctl_sync.add_parsers(groups, top, _group, _command, _add_version)
    ctl_events.add_parsers(groups, top, _group, _command)
    ctl_views.add_parsers(groups, top, _group, _command, _add_version)
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
