"""The border gateway's objects as declarative documents (pure; ``ctl/documents.py`` reads and checks the files,
``ctl/apply.py`` writes).

The coordinator gives gateway devices, l2-gateways and l2-gateway-connections UUIDs; files name them instead:

- a ``GatewayDevice`` by ``site`` and ``name`` (unique per site, as the coordinator keeps them);
- an ``L2Gateway`` by ``project_id`` and ``name``; it names its devices by ``{site, name}``;
- an ``L2GatewayConnection`` by ``project_id``, ``l2_gateway`` (the gateway's name) and ``network_id``.

The documents' objects keep the stored ``id`` and ``version`` (never in files); ``apply`` maps names to ids with
what it read, and with the ids the coordinator returns as it creates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from isthmus.core import border as b
from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument, IsthmusError

DEVICE, GATEWAY, L2CONN = "GatewayDevice", "L2Gateway", "L2GatewayConnection"
BORDER_KINDS = (DEVICE, GATEWAY, L2CONN)  # created in this order, deleted in reverse


@dataclass(frozen=True)
class DeviceName:
    site: str
    name: str

    def __str__(self) -> str:
        return f"{self.site}/{self.name}"


@dataclass(frozen=True)
class GatewayDeviceDoc:
    site: str
    name: str
    type: b.DeviceType
    tunnel_ips: tuple[str, ...] = ()
    management: dict[str, str] = field(default_factory=dict)
    id: str = ""
    version: int = 0


@dataclass(frozen=True)
class DeviceSlot:
    device: DeviceName
    segmentation_id: int = 0
    interfaces: tuple[b.GatewayInterface, ...] = ()


@dataclass(frozen=True)
class L2GatewayDoc:
    name: str
    project_id: str
    devices: tuple[DeviceSlot, ...] = ()
    id: str = ""
    version: int = 0


@dataclass(frozen=True)
class L2ConnectionDoc:
    project_id: str
    l2_gateway: str
    network_id: str
    segmentation_id: int = 0  # 0: the one the gateway's devices share
    id: str = ""
    version: int = 0


def ident(kind: str, obj: Any) -> str:
    if kind == DEVICE:
        return f"{obj.site}/{obj.name}"
    if kind == GATEWAY:
        return f"{obj.project_id}/{obj.name}"
    return f"{obj.project_id}/{obj.l2_gateway}/{obj.network_id}"


def gateway_key(conn: L2ConnectionDoc) -> str:
    return f"{conn.project_id}/{conn.l2_gateway}"


# ---------------------------------------------------------------- from files


def device_from_json(d: dict[str, Any]) -> GatewayDeviceDoc:
    return GatewayDeviceDoc(d["site"], d["name"], b.DeviceType(d["type"]), tuple(d.get("tunnel_ips", ())),
                            dict(d.get("management", {})))


def gateway_from_json(d: dict[str, Any]) -> L2GatewayDoc:
    slots = tuple(DeviceSlot(DeviceName(x["device"]["site"], x["device"]["name"]), int(x.get("segmentation_id", 0)),
                             tuple(b.GatewayInterface(i["name"], tuple(i.get("segmentation_id", ())))
                                   for i in x.get("interfaces", ())))
                  for x in d.get("devices", ()))
    return L2GatewayDoc(d["name"], d["project_id"], slots)


def connection_from_json(d: dict[str, Any]) -> L2ConnectionDoc:
    return L2ConnectionDoc(d["project_id"], d["l2_gateway"], d["network_id"], int(d.get("segmentation_id", 0)))


def validate_device(doc: GatewayDeviceDoc) -> GatewayDeviceDoc:
    checked = b.validate_device(device_model(doc, ""))
    return dataclasses.replace(doc, tunnel_ips=checked.tunnel_ips)


def validate_gateway(doc: L2GatewayDoc) -> L2GatewayDoc:
    """The checks of one document; those against its devices are in ``refs``."""
    if not doc.name:
        raise InvalidArgument("is required", "name")
    checks.check_text(doc.name, "name", checks.TEXT_NAME)
    if not doc.project_id:
        raise InvalidArgument("is required", "project_id")
    if not doc.devices:
        raise InvalidArgument("give at least one device", "devices")
    for i, slot in enumerate(doc.devices):
        m.check_name(slot.device.site, f"devices[{i}].device.site")
        m.check_name(slot.device.name, f"devices[{i}].device.name")
    return doc


def validate_connection(doc: L2ConnectionDoc) -> L2ConnectionDoc:
    if not doc.project_id:
        raise InvalidArgument("is required", "project_id")
    try:
        b.validate_connection(b.L2GatewayConnection("x", doc.l2_gateway, doc.network_id, doc.segmentation_id,
                                                    doc.project_id))
    except IsthmusError as exc:
        raise _renamed(exc, {"l2_gateway_id": "l2_gateway"}) from None
    return doc


def _renamed(exc: IsthmusError, fields: Mapping[str, str]) -> IsthmusError:
    """``exc`` with its field named as in the documents."""
    name = exc.field or ""
    for old, new in fields.items():
        name = name.replace(old, new)
    text = exc.message[len(exc.field) + 2:] if exc.field else exc.message
    return IsthmusError(text, name or None)


# ---------------------------------------------------------------- the set as a whole


def device_model(doc: GatewayDeviceDoc, device_id: str) -> b.GatewayDevice:
    return b.GatewayDevice(device_id, doc.site, doc.name, doc.type, doc.tunnel_ips, dict(doc.management))


def _key(ref: DeviceName) -> str:
    # The id the set checks give a device: the coordinator's id rules allow ':' but not '/'.
    return f"{ref.site}:{ref.name}"


def refs(kind: str, doc: Any, sites: Mapping[str, m.Site], devices: Mapping[str, GatewayDeviceDoc],
         gateways: Mapping[str, L2GatewayDoc]) -> list[str]:
    """The problems of one border document against the objects there will be (stored or in the files)."""
    out: list[str] = []
    if kind == DEVICE and doc.site not in sites:
        out.append(f"site: site {doc.site} is neither stored nor in the files")
    if kind == GATEWAY:
        found = {}
        for i, slot in enumerate(doc.devices):
            dev = devices.get(str(slot.device))
            if dev is None:
                out.append(f"devices[{i}].device: gateway device {slot.device} is neither stored nor in the files")
            else:
                found[_key(slot.device)] = device_model(dev, _key(slot.device))
        if not out:
            try:
                b.validate_gateway(gateway_model(doc, _key), found)
            except IsthmusError as exc:
                out.append(str(_renamed(exc, {"device_id": "device"})))
    if kind == L2CONN:
        gw = gateways.get(gateway_key(doc))
        if gw is None:
            out.append(f"l2_gateway: l2-gateway {doc.l2_gateway} of project {doc.project_id} is neither stored nor "
                       "in the files")
        elif all(str(s.device) in devices for s in gw.devices):
            found = {_key(s.device): device_model(devices[str(s.device)], _key(s.device)) for s in gw.devices}
            try:
                b.effective_segmentation_id(gateway_model(gw, _key), doc.segmentation_id, found)
            except IsthmusError as exc:
                out.append(str(exc))
    return out


def segment_errors(conns: Mapping[str, L2ConnectionDoc], gateways: Mapping[str, L2GatewayDoc]) -> dict[str, str]:
    """Connections (by ident) whose segmentation id is bound to another network by an earlier one: one
    segmentation id, one tenant network across all sites."""
    bound: dict[int, L2ConnectionDoc] = {}
    out = {}
    for key, conn in sorted(conns.items()):
        segid = effective(conn, gateways)
        if not segid:
            continue
        other = bound.setdefault(segid, conn)
        if other.network_id != conn.network_id:
            out[key] = (f"segmentation_id: {segid} is also the segmentation id of network {other.network_id} "
                        f"(l2-gateway-connection {ident(L2CONN, other)}); one segmentation id maps to one network")
    return out


def effective(conn: L2ConnectionDoc, gateways: Mapping[str, L2GatewayDoc]) -> int:
    """The connection's segmentation id: its own, else the one its gateway's devices share (0: none known)."""
    if conn.segmentation_id:
        return conn.segmentation_id
    gw = gateways.get(gateway_key(conn))
    ids = {s.segmentation_id for s in gw.devices if s.segmentation_id} if gw else set()
    return ids.pop() if len(ids) == 1 else 0


# ---------------------------------------------------------------- to and from the coordinator's objects


def gateway_model(doc: L2GatewayDoc, device_id: Callable[[DeviceName], str]) -> b.L2Gateway:
    """The coordinator's l2-gateway of a document, ``device_id(DeviceName)`` giving each device's id."""
    return b.L2Gateway(doc.id, doc.name, doc.project_id,
                       tuple(b.DeviceRef(device_id(s.device), s.segmentation_id, s.interfaces) for s in doc.devices),
                       doc.version)


def device_doc(dev: b.GatewayDevice) -> GatewayDeviceDoc:
    return GatewayDeviceDoc(dev.site, dev.name, dev.type, dev.tunnel_ips, dict(dev.management), dev.id, dev.version)


def gateway_doc(gw: b.L2Gateway, devices: Mapping[str, b.GatewayDevice]) -> L2GatewayDoc:
    """A stored gateway as a document: its devices by site and name (an id no device has: the id itself)."""
    def name(device_id: str) -> DeviceName:
        dev = devices.get(device_id)
        return DeviceName(dev.site, dev.name) if dev else DeviceName("?", device_id)

    slots = tuple(DeviceSlot(name(r.device_id), r.segmentation_id, r.interfaces) for r in gw.devices)
    return L2GatewayDoc(gw.name, gw.project_id, slots, gw.id, gw.version)


def connection_doc(conn: b.L2GatewayConnection, gateways: Mapping[str, b.L2Gateway]) -> L2ConnectionDoc:
    gw = gateways.get(conn.l2_gateway_id)
    return L2ConnectionDoc(conn.project_id, gw.name if gw else conn.l2_gateway_id, conn.network_id,
                           conn.segmentation_id, conn.id, conn.version)
