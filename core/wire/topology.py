"""The wire form of the topology contract (topology.proto): protobuf <-> topology policies."""

from __future__ import annotations

from isthmus.core import model as m
from isthmus.core import topology as t
from isthmus.core.wire import network as wire
from isthmus.v1 import topology_pb2 as tpb

_KIND: list[tuple[tpb.PolicyKind, t.PolicyKind]] = [
    (tpb.POLICY_KIND_FULL_MESH, t.PolicyKind.FULL_MESH),
    (tpb.POLICY_KIND_HUB_AND_SPOKE, t.PolicyKind.HUB_AND_SPOKE),
    (tpb.POLICY_KIND_ROUTE_REFLECTOR, t.PolicyKind.ROUTE_REFLECTOR),
]


def policy_from_pb(msg: tpb.TopologyPolicy) -> t.Policy:
    types = tuple(wire.enum_from_pb(wire.CONNECTION_TYPES, v, f"types[{i}]") for i, v in enumerate(msg.types))
    vx = msg.vxlan if msg.HasField("vxlan") else None
    return t.Policy(
        name=msg.name,
        kind=wire.enum_from_pb(_KIND, msg.kind, "kind"),
        endpoint=msg.endpoint,
        sites=tuple(msg.sites),
        selector=wire.small_map(msg.selector, "selector"),
        hubs=tuple(msg.hubs),
        reflectors=tuple(msg.reflectors),
        types=types or (m.ConnectionType.BGP,),
        bgp=wire._bgp_from_pb(msg),
        vxlan=t.VxlanPool(vx.vni_first, vx.vni_last, vx.udp_port or m.DEFAULT_VXLAN_PORT,
                          vx.mtu or m.DEFAULT_VXLAN_MTU) if vx is not None else None,
        admin_state=wire.enum_from_pb(wire.ADMIN_STATES, msg.admin_state, "admin_state", m.AdminState.UP),
        description=msg.description,
        version=msg.version,
    )


def policy_to_pb(p: t.Policy) -> tpb.TopologyPolicy:
    vx = p.vxlan
    return tpb.TopologyPolicy(
        name=p.name,
        kind=wire.enum_to_pb(_KIND, p.kind),
        endpoint=p.endpoint,
        sites=list(p.sites),
        selector=p.selector,
        hubs=list(p.hubs),
        reflectors=list(p.reflectors),
        types=[wire.enum_to_pb(wire.CONNECTION_TYPES, c) for c in p.types],
        bgp=wire._bgp_to_pb(p.bgp),
        vxlan=tpb.VxlanPool(vni_first=vx.vni_first, vni_last=vx.vni_last, udp_port=vx.udp_port, mtu=vx.mtu)
        if vx is not None else None,
        admin_state=wire.enum_to_pb(wire.ADMIN_STATES, p.admin_state),
        description=p.description,
        version=p.version,
    )
