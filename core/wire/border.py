"""The wire form of the border-gateway contract (l2gw.proto): protobuf <-> the border model."""

from __future__ import annotations

from isthmus.core import border
from isthmus.core.wire.network import enum_from_pb, enum_to_pb, small_map
from isthmus.v1 import l2gw_pb2 as l2pb

_DTYPE: list[tuple[l2pb.GatewayDeviceType, border.DeviceType]] = [
    (l2pb.GATEWAY_DEVICE_TYPE_HW_VTEP, border.DeviceType.HW_VTEP),
    (l2pb.GATEWAY_DEVICE_TYPE_ROUTER_VTEP, border.DeviceType.ROUTER_VTEP),
    (l2pb.GATEWAY_DEVICE_TYPE_NETWORK_VLAN, border.DeviceType.NETWORK_VLAN),
]


def device_from_pb(msg: l2pb.GatewayDevice) -> border.GatewayDevice:
    return border.GatewayDevice(msg.id, msg.site, msg.name, enum_from_pb(_DTYPE, msg.type, "type"),
                                tuple(msg.tunnel_ips), small_map(msg.management, "management"), msg.version)


def device_to_pb(d: border.GatewayDevice) -> l2pb.GatewayDevice:
    return l2pb.GatewayDevice(id=d.id, site=d.site, name=d.name, type=enum_to_pb(_DTYPE, d.type),
                              tunnel_ips=list(d.tunnel_ips), management=d.management, version=d.version)


def gateway_from_pb(msg: l2pb.L2Gateway) -> border.L2Gateway:
    devices = tuple(
        border.DeviceRef(ref.device_id, ref.segmentation_id,
                         tuple(border.GatewayInterface(i.name, tuple(i.segmentation_id)) for i in ref.interfaces))
        for ref in msg.devices
    )
    return border.L2Gateway(msg.id, msg.name, msg.project_id, devices, msg.version, msg.owner)


def gateway_to_pb(g: border.L2Gateway) -> l2pb.L2Gateway:
    return l2pb.L2Gateway(
        id=g.id, name=g.name, project_id=g.project_id, version=g.version, owner=g.owner,
        devices=[l2pb.L2GatewayDeviceRef(
            device_id=ref.device_id, segmentation_id=ref.segmentation_id,
            interfaces=[l2pb.L2GatewayInterface(name=i.name, segmentation_id=list(i.segmentation_id))
                        for i in ref.interfaces])
            for ref in g.devices],
    )


def l2conn_from_pb(msg: l2pb.L2GatewayConnection) -> border.L2GatewayConnection:
    return border.L2GatewayConnection(msg.id, msg.l2_gateway_id, msg.network_id, msg.segmentation_id,
                                      msg.project_id, bool(msg.segmentation_id), msg.version, msg.owner)


def l2conn_to_pb(c: border.L2GatewayConnection) -> l2pb.L2GatewayConnection:
    return l2pb.L2GatewayConnection(id=c.id, l2_gateway_id=c.l2_gateway_id, network_id=c.network_id,
                                    segmentation_id=c.segmentation_id, project_id=c.project_id, version=c.version,
                                    owner=c.owner)
