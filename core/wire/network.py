"""The wire form of the network contract (types.proto, api.proto, admin.proto): protobuf <-> domain model."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument
from isthmus.v1 import types_pb2 as pb

_SITE_KIND: list[tuple[pb.SiteKind, m.SiteKind]] = [
    (pb.SITE_KIND_REGION, m.SiteKind.REGION),
    (pb.SITE_KIND_CELL, m.SiteKind.CELL),
    (pb.SITE_KIND_INSTANCE, m.SiteKind.INSTANCE),
    (pb.SITE_KIND_EXTERNAL, m.SiteKind.EXTERNAL),
]
_ROLE: list[tuple[pb.EndpointRole, m.EndpointRole]] = [
    (pb.ENDPOINT_ROLE_LOCAL, m.EndpointRole.LOCAL),
    (pb.ENDPOINT_ROLE_REMOTE, m.EndpointRole.REMOTE),
]
CONNECTION_TYPES: list[tuple[pb.ConnectionType, m.ConnectionType]] = [
    (pb.CONNECTION_TYPE_BGP, m.ConnectionType.BGP),
    (pb.CONNECTION_TYPE_VXLAN, m.ConnectionType.VXLAN),
]
ADMIN_STATES: list[tuple[pb.AdminState, m.AdminState]] = [
    (pb.ADMIN_STATE_UP, m.AdminState.UP),
    (pb.ADMIN_STATE_DOWN, m.AdminState.DOWN),
]
_PSTATE: list[tuple[pb.PeeringState, m.PeeringState]] = [
    (pb.PEERING_STATE_ESTABLISHED, m.PeeringState.ESTABLISHED),
    (pb.PEERING_STATE_CONNECTING, m.PeeringState.CONNECTING),
    (pb.PEERING_STATE_DOWN, m.PeeringState.DOWN),
    (pb.PEERING_STATE_ERROR, m.PeeringState.ERROR),
]

_OKIND: list[tuple[pb.OverrideKind, m.OverrideKind]] = [
    (pb.OVERRIDE_KIND_DISABLE, m.OverrideKind.DISABLE),
    (pb.OVERRIDE_KIND_ADD, m.OverrideKind.ADD),
]

P = TypeVar("P", bound=int)
E = TypeVar("E", bound=enum.Enum)


def small_map(values: Any, field_name: str) -> dict[str, str]:
    """A protobuf map as a dict, refused before it is copied when it has more entries than any map may hold."""
    if len(values) > checks.MAP_ENTRIES:
        raise InvalidArgument(f"has {len(values)} entries; the budget is {checks.MAP_ENTRIES}", field_name)
    return dict(values)


def enum_from_pb(pairs: list[tuple[P, E]], value: int, field_name: str, default: E | None = None) -> E:
    for pb_value, domain in pairs:
        if pb_value == value:
            return domain
    if value == 0 and default is not None:
        return default
    names = ", ".join(d.name for _, d in pairs)
    raise InvalidArgument(f"is required: one of {names}" if value == 0 else f"unknown value {value}", field_name)


def enum_to_pb(pairs: list[tuple[P, E]], value: E) -> P:
    return next(p for p, d in pairs if d == value)


# ---------------------------------------------------------------- sites


def site_from_pb(msg: pb.Site) -> m.Site:
    return m.Site(
        name=msg.name,
        kind=enum_from_pb(_SITE_KIND, msg.kind, "kind"),
        parent=msg.parent,
        labels=small_map(msg.labels, "labels"),
        description=msg.description,
        version=msg.version,
    )


def site_to_pb(site: m.Site) -> pb.Site:
    return pb.Site(
        name=site.name,
        kind=enum_to_pb(_SITE_KIND, site.kind),
        parent=site.parent,
        labels=site.labels,
        description=site.description,
        version=site.version,
    )


# ---------------------------------------------------------------- endpoints


def endpoint_from_pb(msg: pb.Endpoint) -> m.Endpoint:
    return m.Endpoint(
        site=msg.site,
        name=msg.name,
        address=msg.address,
        asn=msg.asn,
        role=enum_from_pb(_ROLE, msg.role, "role", m.EndpointRole.LOCAL),
        router_id=msg.router_id,
        properties=small_map(msg.properties, "properties"),
        version=msg.version,
    )


def endpoint_to_pb(ep: m.Endpoint) -> pb.Endpoint:
    return pb.Endpoint(
        site=ep.site,
        name=ep.name,
        address=ep.address,
        asn=ep.asn,
        role=enum_to_pb(_ROLE, ep.role),
        router_id=ep.router_id,
        properties=ep.properties,
        version=ep.version,
    )


# ---------------------------------------------------------------- connections


def _bgp_from_pb(msg: Any) -> m.BgpParams | None:
    """The BgpParams of a message with a ``bgp`` field (connection, peering, topology policy), None if unset."""
    if not msg.HasField("bgp"):
        return None
    b = msg.bgp
    return m.BgpParams(
        hold_time=b.hold_time if b.HasField("hold_time") else m.DEFAULT_HOLD_TIME,
        password_ref=b.password_ref,
        address_families=tuple(b.address_families),
        import_prefixes=tuple(b.import_prefixes),
        max_prefixes=b.max_prefixes,
        graceful_restart=b.graceful_restart if b.HasField("graceful_restart") else m.DEFAULT_GRACEFUL_RESTART,
        reflector=b.reflector,
    )


def _vxlan_from_pb(msg: pb.Connection | pb.DesiredPeering) -> m.VxlanParams | None:
    if not msg.HasField("vxlan"):
        return None
    v = msg.vxlan
    return m.VxlanParams(
        vni=v.vni, udp_port=v.udp_port or m.DEFAULT_VXLAN_PORT, mtu=v.mtu or m.DEFAULT_VXLAN_MTU
    )


def _bgp_to_pb(b: m.BgpParams | None) -> pb.BgpParams | None:
    if b is None:
        return None
    return pb.BgpParams(
        hold_time=b.hold_time, password_ref=b.password_ref, address_families=list(b.address_families),
        import_prefixes=list(b.import_prefixes), max_prefixes=b.max_prefixes, graceful_restart=b.graceful_restart,
        reflector=b.reflector,
    )


def _vxlan_to_pb(v: m.VxlanParams | None) -> pb.VxlanParams | None:
    if v is None:
        return None
    return pb.VxlanParams(vni=v.vni, udp_port=v.udp_port, mtu=v.mtu)


def connection_from_pb(msg: pb.Connection) -> m.Connection:
    return m.Connection(
        name=msg.name,
        a=m.EndpointRef(msg.a.site, msg.a.name),
        b=m.EndpointRef(msg.b.site, msg.b.name),
        type=enum_from_pb(CONNECTION_TYPES, msg.type, "type"),
        bgp=_bgp_from_pb(msg),
        vxlan=_vxlan_from_pb(msg),
        admin_state=enum_from_pb(ADMIN_STATES, msg.admin_state, "admin_state", m.AdminState.UP),
        description=msg.description,
        policy=msg.policy,
        version=msg.version,
    )


def connection_to_pb(conn: m.Connection) -> pb.Connection:
    return pb.Connection(
        name=conn.name,
        a=pb.EndpointRef(site=conn.a.site, name=conn.a.name),
        b=pb.EndpointRef(site=conn.b.site, name=conn.b.name),
        type=enum_to_pb(CONNECTION_TYPES, conn.type),
        bgp=_bgp_to_pb(conn.bgp),
        vxlan=_vxlan_to_pb(conn.vxlan),
        admin_state=enum_to_pb(ADMIN_STATES, conn.admin_state),
        description=conn.description,
        version=conn.version,
        policy=conn.policy,
    )


# ---------------------------------------------------------------- peerings


def peering_to_pb(p: m.DesiredPeering) -> pb.DesiredPeering:
    return pb.DesiredPeering(
        connection=p.connection,
        type=enum_to_pb(CONNECTION_TYPES, p.type),
        local=endpoint_to_pb(p.local),
        remote=endpoint_to_pb(p.remote),
        bgp=_bgp_to_pb(p.bgp),
        vxlan=_vxlan_to_pb(p.vxlan),
        admin_state=enum_to_pb(ADMIN_STATES, p.admin_state),
    )


def peering_from_pb(msg: pb.DesiredPeering) -> m.DesiredPeering:
    return m.DesiredPeering(
        connection=msg.connection,
        type=enum_from_pb(CONNECTION_TYPES, msg.type, "type"),
        local=endpoint_from_pb(msg.local),
        remote=endpoint_from_pb(msg.remote),
        bgp=_bgp_from_pb(msg),
        vxlan=_vxlan_from_pb(msg),
        admin_state=enum_from_pb(ADMIN_STATES, msg.admin_state, "admin_state", m.AdminState.UP),
    )


def observed_to_pb(o: m.ObservedPeering) -> pb.ObservedPeering:
    return pb.ObservedPeering(
        connection=o.connection,
        state=enum_to_pb(_PSTATE, o.state),
        error=o.error,
        since_unix_ms=o.since_ms,
        driver=o.driver,
        received_prefixes=list(o.received_prefixes),
    )


def observed_from_pb(msg: pb.ObservedPeering) -> m.ObservedPeering:
    return m.ObservedPeering(
        connection=msg.connection,
        state=enum_from_pb(_PSTATE, msg.state, "state"),
        error=msg.error,
        since_ms=msg.since_unix_ms,
        driver=msg.driver,
        received_prefixes=tuple(msg.received_prefixes),
    )


# ---------------------------------------------------------------- local overrides, journal


def override_to_pb(o: m.Override) -> pb.Override:
    return pb.Override(
        connection=o.connection,
        kind=enum_to_pb(_OKIND, o.kind),
        peering=peering_to_pb(o.peering) if o.peering is not None else None,
        reason=o.reason,
        created_unix_ms=o.created_ms,
        expires_unix_ms=o.expires_ms,
    )


def override_from_pb(msg: pb.Override) -> m.Override:
    return m.Override(
        connection=msg.connection,
        kind=enum_from_pb(_OKIND, msg.kind, "kind"),
        peering=peering_from_pb(msg.peering) if msg.HasField("peering") else None,
        reason=msg.reason,
        created_ms=msg.created_unix_ms,
        expires_ms=msg.expires_unix_ms,
    )


def journal_to_pb(e: m.JournalEntry) -> pb.JournalEntry:
    return pb.JournalEntry(seq=e.seq, time_unix_ms=e.time_ms, kind=e.kind, connection=e.connection, message=e.message,
                           level=e.level)


def journal_from_pb(msg: pb.JournalEntry) -> m.JournalEntry:
    return m.JournalEntry(msg.seq, msg.time_unix_ms, msg.kind, msg.connection, msg.message,
                          m.event_level(msg.kind, msg.level))
