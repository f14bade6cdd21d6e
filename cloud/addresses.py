"""The region's addresses (Neutron): ports, floating IPs, router gateways and subnets, as the address view
takes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from openstack.connection import Connection

from isthmus.cloud.neutron import NEUTRON_PAGE_SIZE, list_items
from isthmus.cloud.session import calls, field_text, has_service

_PORT_FIELDS = ("project_id", "network_id", "fixed_ips", "mac_address", "device_owner", "device_id", "name")
_FLOATING_IP_FIELDS = ("project_id", "floating_network_id", "floating_ip_address", "port_id")
_ROUTER_FIELDS = ("project_id", "external_gateway_info", "name")
_SUBNET_FIELDS = ("project_id", "network_id", "cidr", "name")


def _address(kind: str, item: Mapping[str, Any], network: str, *, ips: Iterable[Any] = (), mac: str = "",
             cidr: str = "", device: str = "", name: str = "") -> dict[str, Any]:
    """One record of list_addresses: ``item``'s id and project, and the rest as given."""
    return {"kind": kind, "id": field_text(item, "id"), "project": field_text(item, "project_id"),
            "network": network, "ips": [str(ip) for ip in ips if ip], "mac": mac.lower(), "cidr": cidr,
            "device": device, "name": name, "network_name": ""}


def list_addresses(conn: Connection, *, page_size: int = NEUTRON_PAGE_SIZE) -> list[dict[str, Any]]:
    """Every port, floating IP, router gateway and subnet of the region (every project's, for an admin), as
    records coordinator/addresses.py ``check_record`` takes once given a region.

    Each record has kind ("port" | "floating_ip" | "router_gateway" | "subnet"), id, project, network, ips,
    mac, cidr, device, name and network_name (the network's name; "" or [] where they do not apply):
      port            ips: its fixed IPs; mac in lower case; device: its device_owner, or its device_id
      floating_ip     ips: [floating_ip_address]; network: floating_network_id; device: its port_id or ""
      router_gateway  id: the router's; network and ips: external_gateway_info's network_id and external
                      fixed IPs (routers without a gateway are left out); name: the router's
      subnet          cidr; network: network_id
    A gateway's and a floating IP's own ports (device_owner network:router_gateway, network:floatingip; no
    project) are listed as ports too. Only the fields needed are fetched (``fields=``), ``page_size`` items
    per request; without Neutron's L3 plugin there are no floating IPs or router gateways; a region without
    Neutron has no records.

    Raises CloudError when Neutron fails or cannot be reached (or deletes faster than the listing pages);
    SpecError when the credentials are refused.
    """
    records: list[dict[str, Any]] = []
    with calls(conn, "addresses"):
        if not has_service(conn, "network"):
            return records
        for port in list_items(conn, "ports", _PORT_FIELDS, page_size):
            records.append(_address("port", port, field_text(port, "network_id"),
                                    ips=(f.get("ip_address") for f in port.get("fixed_ips") or ()),
                                    mac=field_text(port, "mac_address"),
                                    device=field_text(port, "device_owner") or field_text(port, "device_id"),
                                    name=field_text(port, "name")))
        for fip in list_items(conn, "floatingips", _FLOATING_IP_FIELDS, page_size, optional=True):
            records.append(_address("floating_ip", fip, field_text(fip, "floating_network_id"),
                                    ips=[field_text(fip, "floating_ip_address")], device=field_text(fip, "port_id")))
        for router in list_items(conn, "routers", _ROUTER_FIELDS, page_size, optional=True):
            gateway = router.get("external_gateway_info") or {}
            if not gateway.get("network_id"):
                continue
            records.append(_address("router_gateway", router, field_text(gateway, "network_id"),
                                    ips=(f.get("ip_address") for f in gateway.get("external_fixed_ips") or ()),
                                    name=field_text(router, "name")))
        for subnet in list_items(conn, "subnets", _SUBNET_FIELDS, page_size):
            records.append(_address("subnet", subnet, field_text(subnet, "network_id"),
                                    cidr=field_text(subnet, "cidr"), name=field_text(subnet, "name")))
        # Names for people: tables show them where the ids are 36 characters each.
        names = {field_text(n, "id"): field_text(n, "name") for n in list_items(conn, "networks", ("name",),
                                                                                 page_size)}
        for record in records:
            record["network_name"] = names.get(record["network"], "")
    return records
