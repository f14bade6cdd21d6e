"""Neutron's l2-gateways and connections in isthmus' terms (the BorderGatewayService's messages, as dicts)."""

from __future__ import annotations

from typing import Any

from networking_l2gw.services.l2gateway.common import constants as l2gw_const

BORDER_INTERFACE = ""  # the stored form of a border device: one interface with this name


def is_border(device: dict[str, Any]) -> bool:
    """A device networking-l2gw stores for the border form: every interface has the empty name."""
    interfaces = device.get("interfaces") or []
    return bool(interfaces) and all(i.get("name") == BORDER_INTERFACE for i in interfaces)



def _seg_ids(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        for part in str(item).replace("[", " ").replace("]", " ").replace(",", " ").split():
            out.append(int(part))
    return out


def gateway_request(gw: dict[str, Any]) -> dict[str, Any]:
    """An isthmus L2Gateway (dict) from Neutron's l2-gateway (request body or stored dict)."""
    devices = []
    for device in gw.get("devices") or []:
        interfaces = device.get("interfaces") or []
        if is_border(device):
            seg = _seg_ids(interfaces[0].get(l2gw_const.SEG_ID))
            devices.append({"device_id": device["device_name"], "segmentation_id": seg[0] if seg else 0})
        else:
            ifaces = [{"name": i.get("name", ""), "segmentation_id": _seg_ids(i.get(l2gw_const.SEG_ID) or [])}
                      for i in interfaces]
            ref: dict[str, Any] = {"device_id": device["device_name"], "interfaces": ifaces}
            shared = {sid for i in ifaces for sid in i["segmentation_id"]}
            if len(shared) == 1:  # the device's segment: what a connection without its own id joins
                ref["segmentation_id"] = shared.pop()
            devices.append(ref)
    return {"id": gw["id"], "name": gw.get("name") or gw["id"],
            "project_id": gw.get("tenant_id") or gw.get("project_id") or "", "devices": devices}


def connection_request(conn: dict[str, Any]) -> dict[str, Any]:
    seg = conn.get(l2gw_const.SEG_ID)
    return {"id": conn["id"], "l2_gateway_id": conn["l2_gateway_id"], "network_id": conn["network_id"],
            "segmentation_id": int(seg) if seg not in (None, "") else 0,
            "project_id": conn.get("tenant_id") or conn.get("project_id") or ""}
