"""The border-gateway domain: gateway devices, l2-gateways, l2-gateway-connections.

Follows networking-l2gw's model with the border-gateway relaxation: a device is
given with a segmentation id and no interface name, because the scope of the
segmentation id is global. Checks of single objects live here; checks across
objects (existence, the global binding of a segmentation id to one network)
live in the coordinator's border registry.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument, NotFound

MAX_VLAN = 4094
DEFAULT_SEGMENT_BRIDGE = "brs{segmentation_id}"
TEMPLATE_NAMES = ("segmentation_id", "network_id")  # what a segment_bridge template may name
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
_OWNER_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")


class DeviceType(enum.StrEnum):
    HW_VTEP = "hw_vtep"
    ROUTER_VTEP = "router_vtep"
    NETWORK_VLAN = "network_vlan"

    @property
    def max_segmentation_id(self) -> int:
        return MAX_VLAN if self == DeviceType.NETWORK_VLAN else m.MAX_VNI

    @property
    def id_kind(self) -> str:
        return "VLAN id" if self == DeviceType.NETWORK_VLAN else "VXLAN VNI"


@dataclass(frozen=True)
class GatewayDevice:
    id: str
    site: str
    name: str
    type: DeviceType
    tunnel_ips: tuple[str, ...] = ()
    management: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def segment_bridge(self, segmentation_id: int, network_id: str) -> str:
        """Name of the bridge of the local tenant segment this device joins for a connection."""
        template = self.management.get("segment_bridge", DEFAULT_SEGMENT_BRIDGE)
        return checks.render(template, {"segmentation_id": str(segmentation_id), "network_id": network_id})


@dataclass(frozen=True)
class GatewayInterface:
    name: str
    segmentation_id: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeviceRef:
    device_id: str
    segmentation_id: int = 0
    interfaces: tuple[GatewayInterface, ...] = ()


@dataclass(frozen=True)
class L2Gateway:
    id: str
    name: str
    project_id: str
    devices: tuple[DeviceRef, ...] = ()
    version: int = 0
    owner: str = ""  # who made it: "neutron" through Neutron's API; fixed at creation


@dataclass(frozen=True)
class L2GatewayConnection:
    id: str
    l2_gateway_id: str
    network_id: str
    segmentation_id: int = 0  # as stored: always the effective id
    project_id: str = ""
    explicit_segmentation_id: bool = False  # given by the client, not taken from the devices
    version: int = 0
    owner: str = ""  # as L2Gateway.owner


# ---------------------------------------------------------------- JSON


def device_from_json(d: dict[str, Any], version: int = 0) -> GatewayDevice:
    return GatewayDevice(d["id"], d["site"], d["name"], DeviceType(d["type"]), tuple(d.get("tunnel_ips", ())),
                         dict(d.get("management", {})), version)


def gateway_from_json(d: dict[str, Any], version: int = 0) -> L2Gateway:
    devices = tuple(
        DeviceRef(x["device_id"], int(x.get("segmentation_id", 0)),
                  tuple(GatewayInterface(i["name"], tuple(i.get("segmentation_id", ())))
                        for i in x.get("interfaces", ())))
        for x in d.get("devices", ())
    )
    return L2Gateway(d["id"], d["name"], d["project_id"], devices, version, d.get("owner", ""))


def connection_from_json(d: dict[str, Any], version: int = 0) -> L2GatewayConnection:
    return L2GatewayConnection(d["id"], d["l2_gateway_id"], d["network_id"], int(d["segmentation_id"]),
                               d.get("project_id", ""), bool(d.get("explicit_segmentation_id", False)), version,
                               d.get("owner", ""))


# ---------------------------------------------------------------- validation


def _check_id(value: str, field_name: str) -> None:
    if not value:
        raise InvalidArgument("is required", field_name)
    if not _ID_RE.fullmatch(value):
        raise InvalidArgument(f"{checks.shown(value)} must be 1-255 of A-Z a-z 0-9 _ . : -", field_name)


def validate_device(dev: GatewayDevice) -> GatewayDevice:
    m.check_name(dev.site, "site")
    m.check_name(dev.name, "name")
    if not dev.tunnel_ips:
        raise InvalidArgument("give at least one VTEP address", "tunnel_ips")
    ips = tuple(str(m.parse_address(ip, f"tunnel_ips[{i}]")) for i, ip in enumerate(dev.tunnel_ips))
    checks.check_map(dev.management, "management")
    template = dev.management.get("segment_bridge", DEFAULT_SEGMENT_BRIDGE)
    checks.template_names(template, TEMPLATE_NAMES, "management.segment_bridge")
    # The worst case the device can be filled with: its largest segmentation id and the shortest network id
    # (a longer network id is checked against the template when a connection names it).
    top = dev.type.max_segmentation_id
    checks.interface_name(dev.segment_bridge(top, "n"), "management.segment_bridge",
                          f"the template, for segmentation id {top},")
    return dataclasses.replace(dev, tunnel_ips=ips)


def check_bridges(network_id: str, segmentation_id: int, devices: Iterable[GatewayDevice]) -> None:
    """Every device's segment bridge for this network and segmentation id is a name Linux can create."""
    for dev in devices:
        checks.interface_name(dev.segment_bridge(segmentation_id, network_id), "network_id",
                              f"the segment_bridge template of device {dev.id}, filled with this network id,")


def check_owner(owner: str) -> None:
    if owner and not _OWNER_RE.fullmatch(owner):
        raise InvalidArgument(f"{owner[:40]!r} must be 1-32 of a-z 0-9 -, starting with a letter", "owner")


def check_segmentation_id(value: int, dtype: DeviceType, field_name: str) -> None:
    if not 1 <= value <= dtype.max_segmentation_id:
        raise InvalidArgument(f"{value} is out of range 1..{dtype.max_segmentation_id} for a {dtype} device "
                              f"({dtype.id_kind})", field_name)


def validate_gateway(gw: L2Gateway, devices: dict[str, GatewayDevice]) -> L2Gateway:
    """Check a gateway against the devices it names (``devices`` by id: the existing ones)."""
    if not gw.name:
        raise InvalidArgument("is required", "name")
    checks.check_text(gw.name, "name", checks.TEXT_NAME)
    check_owner(gw.owner)
    _check_id(gw.project_id, "project_id")
    if not gw.devices:
        raise InvalidArgument("give at least one device", "devices")
    seen: dict[str, int] = {}
    sites: dict[str, str] = {}
    for i, ref in enumerate(gw.devices):
        where = f"devices[{i}]"
        _check_id(ref.device_id, f"{where}.device_id")
        dev = devices.get(ref.device_id)
        if dev is None:
            raise NotFound(f"gateway device {ref.device_id} does not exist", f"{where}.device_id")
        if ref.device_id in seen:
            other = seen[ref.device_id]
            text = ("with different segmentation ids" if other != ref.segmentation_id else "twice")
            raise InvalidArgument(f"device {ref.device_id} is listed {text}", f"{where}.segmentation_id")
        seen[ref.device_id] = ref.segmentation_id
        if dev.site in sites:
            # A site realizes a segment as one VXLAN device: two gateway devices there would get every frame twice.
            raise InvalidArgument(f"devices {sites[dev.site]} and {dev.id} are both at site {dev.site}; "
                                  "an l2-gateway has one device per site", f"{where}.device_id")
        sites[dev.site] = dev.id
        if ref.segmentation_id:
            check_segmentation_id(ref.segmentation_id, dev.type, f"{where}.segmentation_id")
        elif not ref.interfaces:
            raise InvalidArgument("a border gateway device needs a segmentation id", f"{where}.segmentation_id")
        for j, iface in enumerate(ref.interfaces):
            if not iface.name or len(iface.name) > 255:
                raise InvalidArgument("is required", f"{where}.interfaces[{j}].name")
            for sid in iface.segmentation_id:
                check_segmentation_id(sid, dev.type, f"{where}.interfaces[{j}].segmentation_id")
    return gw


def effective_segmentation_id(gw: L2Gateway, given: int, devices: dict[str, GatewayDevice]) -> int:
    """The connection's global segmentation id: the one given, else the one all the gateway's devices share."""
    if given:
        for ref in gw.devices:
            check_segmentation_id(given, devices[ref.device_id].type, "segmentation_id")
        return given
    ids = sorted({ref.segmentation_id for ref in gw.devices if ref.segmentation_id})
    if len(ids) != 1:
        listed = ", ".join(map(str, ids)) or "none"
        raise InvalidArgument(f"the devices of l2-gateway {gw.name} do not share one segmentation id ({listed}); "
                              "give one", "segmentation_id")
    return ids[0]


def validate_connection(conn: L2GatewayConnection) -> L2GatewayConnection:
    _check_id(conn.l2_gateway_id, "l2_gateway_id")
    _check_id(conn.network_id, "network_id")
    if conn.project_id:
        _check_id(conn.project_id, "project_id")
    check_owner(conn.owner)
    return conn


# ---------------------------------------------------------------- realization


def plan_tunnels(
    site: str,
    devices: dict[str, GatewayDevice],
    gateways: dict[str, L2Gateway],
    connections: list[L2GatewayConnection],
) -> dict[str, m.DesiredPeering]:
    """The VXLAN peerings that realize ``connections`` at ``site``.

    For every device of the gateway at this site, one tunnel to every device of
    the gateway at another site, on the connection's segmentation id, bridged
    to the device's local segment of the tenant network.
    """
    out: dict[str, m.DesiredPeering] = {}
    for conn in connections:
        gw = gateways.get(conn.l2_gateway_id)
        if gw is None:
            continue
        members = [devices[ref.device_id] for ref in gw.devices if ref.device_id in devices]
        for mine in (d for d in members if d.site == site):
            for theirs in (d for d in members if d.site != site):
                name = tunnel_name(conn, mine, theirs)
                props = {
                    m.VXLAN_BRIDGE_PROPERTY: mine.segment_bridge(conn.segmentation_id, conn.network_id),
                    "l2gw.connection": conn.id,
                    "l2gw.network": conn.network_id,
                }
                out[name] = m.DesiredPeering(
                    connection=name,
                    type=m.ConnectionType.VXLAN,
                    local=m.Endpoint(site, mine.name, mine.tunnel_ips[0], 0, m.EndpointRole.LOCAL,
                                     properties=props),
                    remote=m.Endpoint(theirs.site, theirs.name, theirs.tunnel_ips[0], 0, m.EndpointRole.LOCAL),
                    vxlan=m.VxlanParams(vni=conn.segmentation_id),
                )
    return out


def tunnel_name(conn: L2GatewayConnection, mine: GatewayDevice, theirs: GatewayDevice) -> str:
    # The whole id: ids chosen by clients often share a prefix, and a shared name would drop a tunnel.
    return f"l2gw-{conn.id}-{mine.name}-{theirs.site}-{theirs.name}"
