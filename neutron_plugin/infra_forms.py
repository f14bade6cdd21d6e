"""The infrastructure API's objects in their two forms: Neutron's REST dicts and the coordinator's messages.

The coordinator's form is a dict with the .proto's field names (``client.Coordinator.call``); the REST form
uses lower-case enum values (``"kind": "region"``), ids that fit in a URL (a site's and a connection's id is
its name, an endpoint's ``SITE:NAME``), ``admin_state_up`` as every Neutron resource has, and read-only
attributes of what the sites' agents observe. Only the standard library is used here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

SEPARATOR = ":"

# The observed state of one end of a connection, and the connection's summary (``status``), in the order
# the summary picks them: the first state any LOCAL end is in, unless every LOCAL end is ESTABLISHED.
ESTABLISHED, CONNECTING, PENDING, DOWN, ERROR = "ESTABLISHED", "CONNECTING", "PENDING", "DOWN", "ERROR"
DISCONNECTED = "DISCONNECTED"  # the end's site has no agent connected: nothing is observed there
REMOTE = "REMOTE"              # a REMOTE endpoint: no agent realizes it, nothing to observe
SUMMARY_ORDER = (ERROR, DOWN, DISCONNECTED, CONNECTING, PENDING)


def _enum(value: Any, prefix: str) -> str:
    """``"SITE_KIND_REGION"`` -> ``"region"``; unset -> ``""``."""
    text = str(value or "")
    return "" if text.endswith("UNSPECIFIED") else text.removeprefix(prefix).lower()


def _int(value: Any) -> int:
    return int(value or 0)  # int64 fields come as strings from the JSON mapping


def endpoint_id(site: str, name: str) -> str:
    return f"{site}{SEPARATOR}{name}"


def split_endpoint_id(value: str) -> tuple[str, str]:
    """``SITE:NAME`` -> (SITE, NAME); ValueError naming the form otherwise."""
    site, sep, name = value.partition(SEPARATOR)
    if not sep or not site or not name or SEPARATOR in name:
        raise ValueError(f"{value!r} is not an endpoint id: give SITE{SEPARATOR}NAME")
    return site, name


# ---------------------------------------------------------------- sites


def site_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """CreateSite's request from a POSTed site."""
    return {"name": body["name"], "kind": f"SITE_KIND_{body['kind'].upper()}", "parent": body.get("parent") or "",
            "labels": dict(body.get("labels") or {}), "description": body.get("description") or ""}


def site_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateSite's request: the stored labels and description with the PUT's changes, at the version read."""
    return {"name": current["name"],
            "labels": dict(changes["labels"] if "labels" in changes else current.get("labels") or {}),
            "description": changes.get("description", current.get("description", "")),
            "version": current.get("version", 0)}


def site_view(site: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A site in the REST form; with its status (GetSiteStatus' answer) when given."""
    kind = _enum(site.get("kind"), "SITE_KIND_")
    view = {"id": site["name"], "name": site["name"], "kind": kind, "parent": site.get("parent", ""),
            "labels": dict(site.get("labels") or {}), "description": site.get("description", ""),
            "version": _int(site.get("version"))}
    if status is not None:
        view.update(site_status_view(status, kind))
    return view


def with_all_rows(status: dict[str, Any], next_page: Callable[[str], Mapping[str, Any]]) -> dict[str, Any]:
    """A GetSiteStatus or ListSiteStatus answer's site status with every peering row: a site with many names
    the next ones in ``next_page_token``; ``next_page(token)`` is GetSiteStatus with that page_token."""
    token = status.pop("next_page_token", "")
    while token:
        more = next_page(token)
        status.setdefault("peerings", []).extend(more.get("peerings", []))
        status.setdefault("overrides", []).extend(more.get("overrides", []))
        token = more.get("next_page_token", "")
    return status


def site_status_view(status: Mapping[str, Any], kind: str = "") -> dict[str, Any]:
    """A site's observed attributes: its agent's session and its peerings desired / established."""
    if status.get("external") or kind == "external":
        state = "external"
    else:
        state = "connected" if status.get("connected") else "disconnected"
    desired = [p for p in status.get("peerings", []) if p.get("desired")]
    established = [p for p in desired if (p.get("observed") or {}).get("state") == "PEERING_STATE_ESTABLISHED"]
    return {"agent_state": state, "agent_host": status.get("agent_host", ""),
            "agent_version": status.get("agent_version", ""), "driver": status.get("driver", ""),
            "desired_revision": _int(status.get("desired_revision")),
            "applied_revision": _int(status.get("applied_revision")),
            "peerings_desired": len(desired), "peerings_established": len(established)}


# ---------------------------------------------------------------- endpoints


def endpoint_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """CreateEndpoint's request from a POSTed endpoint."""
    return {"site": body["site"], "name": body["name"], "address": body["address"], "asn": int(body["asn"]),
            "role": f"ENDPOINT_ROLE_{(body.get('role') or 'local').upper()}", "router_id": body.get("router_id") or "",
            "properties": dict(body.get("properties") or {})}


def endpoint_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateEndpoint's request: address, asn, router_id and properties (stored ones unless changed)."""
    merged = {key: changes.get(key, current.get(key)) for key in ("address", "asn", "router_id", "properties")}
    if "address" in changes and "router_id" not in changes and current.get("router_id") == current.get("address"):
        merged["router_id"] = ""  # it was derived from the old address: let isthmus derive it again
    return {"site": current["site"], "name": current["name"], "address": merged["address"],
            "asn": int(merged["asn"] or 0), "router_id": merged["router_id"] or "",
            "properties": dict(merged["properties"] or {}), "version": current.get("version", 0)}


def endpoint_view(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": endpoint_id(endpoint["site"], endpoint["name"]), "site": endpoint["site"],
            "name": endpoint["name"], "address": endpoint.get("address", ""), "asn": _int(endpoint.get("asn")),
            "role": _enum(endpoint.get("role"), "ENDPOINT_ROLE_") or "local",
            "router_id": endpoint.get("router_id", ""), "properties": dict(endpoint.get("properties") or {}),
            "version": _int(endpoint.get("version"))}


# ---------------------------------------------------------------- connections


def _ref(value: str) -> dict[str, str]:
    site, name = split_endpoint_id(value)
    return {"site": site, "name": name}


def _bgp_request(bgp: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"password_ref": bgp.get("password_ref") or "",
                           "address_families": list(bgp.get("address_families") or [])}
    if bgp.get("hold_time") is not None:
        out["hold_time"] = int(bgp["hold_time"])
    return out


def _vxlan_request(vxlan: Mapping[str, Any]) -> dict[str, Any]:
    return {key: int(vxlan.get(key) or 0) for key in ("vni", "udp_port", "mtu")}


def _admin_state(up: Any) -> str:
    return "ADMIN_STATE_UP" if up else "ADMIN_STATE_DOWN"


def connection_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """CreateConnection's request from a POSTed connection (``a``/``b`` already checked as SITE:NAME)."""
    out: dict[str, Any] = {"name": body["name"], "type": f"CONNECTION_TYPE_{body['type'].upper()}",
                           "a": _ref(body["a"]), "b": _ref(body["b"]),
                           "admin_state": _admin_state(body.get("admin_state_up", True)),
                           "description": body.get("description") or ""}
    if body.get("bgp") is not None:
        out["bgp"] = _bgp_request(body["bgp"])
    if body.get("vxlan") is not None:
        out["vxlan"] = _vxlan_request(body["vxlan"])
    return out


def connection_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateConnection's request: admin state and description (stored unless changed); ``bgp``/``vxlan``
    replaced as a whole when the PUT gives them, kept otherwise."""
    out: dict[str, Any] = {"name": current["name"],
                           "admin_state": _admin_state(changes.get("admin_state_up", current.get("admin_state_up"))),
                           "description": changes.get("description", current.get("description", "")),
                           "version": current.get("version", 0)}
    if changes.get("bgp") is not None:
        out["bgp"] = _bgp_request(changes["bgp"])
    if changes.get("vxlan") is not None:
        out["vxlan"] = _vxlan_request(changes["vxlan"])
    return out


def connection_view(conn: Mapping[str, Any]) -> dict[str, Any]:
    """A connection in the REST form, without its observed state (``with_observed`` adds it)."""
    bgp = conn.get("bgp")
    vxlan = conn.get("vxlan")
    return {
        "id": conn["name"], "name": conn["name"], "type": _enum(conn.get("type"), "CONNECTION_TYPE_"),
        "a": endpoint_id(conn["a"]["site"], conn["a"]["name"]), "b": endpoint_id(conn["b"]["site"], conn["b"]["name"]),
        "bgp": None if bgp is None else {
            "hold_time": None if bgp.get("hold_time") is None else int(bgp["hold_time"]),
            "password_ref": bgp.get("password_ref", ""), "address_families": list(bgp.get("address_families", []))},
        "vxlan": None if vxlan is None else {key: _int(vxlan.get(key)) for key in ("vni", "udp_port", "mtu")},
        "admin_state_up": conn.get("admin_state") != "ADMIN_STATE_DOWN",
        "description": conn.get("description", ""), "version": _int(conn.get("version")),
    }


def end_view(connection: str, endpoint: str, role: str, status: Mapping[str, Any] | None) -> dict[str, Any]:
    """What is observed at one end of ``connection``: its site's agent's report of the peering."""
    site, _ = split_endpoint_id(endpoint)
    out: dict[str, Any] = {"site": site, "endpoint": endpoint, "role": role}
    if role == "remote":
        return out | {"state": REMOTE}
    connected = bool(status and status.get("connected"))
    peering = next((p for p in (status or {}).get("peerings", [])
                    if (p.get("desired") or p.get("observed") or {}).get("connection") == connection), None)
    observed = (peering or {}).get("observed")
    if not connected:
        state = DISCONNECTED
    elif not observed:
        state = PENDING
    else:
        state = _enum(observed.get("state"), "PEERING_STATE_").upper() or PENDING
    observed = observed or {}
    return out | {"state": state, "agent_connected": connected, "error": observed.get("error", ""),
                  "since_unix_ms": _int(observed.get("since_unix_ms"))}


def summary(admin_state_up: bool, ends: Iterable[Mapping[str, Any]]) -> str:
    """The connection's ``status``: ESTABLISHED when every LOCAL end is; else the worst state of an end."""
    if not admin_state_up:
        return DOWN
    states = [e["state"] for e in ends if e["state"] != REMOTE]
    if states and all(s == ESTABLISHED for s in states):
        return ESTABLISHED
    return next((s for s in SUMMARY_ORDER if s in states), PENDING)


def with_observed(view: dict[str, Any], roles: Mapping[str, str], statuses: Mapping[str, Mapping[str, Any]]) -> None:
    """Add ``observed`` (per end) and ``status`` to a connection's view; ``roles`` by endpoint id, ``statuses``
    (GetSiteStatus answers) by site."""
    ends = {}
    for end in ("a", "b"):
        endpoint = view[end]
        site, _ = split_endpoint_id(endpoint)
        ends[end] = end_view(view["name"], endpoint, roles.get(endpoint, "local"), statuses.get(site))
    view["observed"] = ends
    view["status"] = summary(view["admin_state_up"], ends.values())


# ---------------------------------------------------------------- lists: filters and fields, as Neutron does


def _normal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower() if str(value).lower() in ("true", "false") else str(value)


def matches(view: Mapping[str, Any], filters: Mapping[str, Iterable[Any]] | None) -> bool:
    """Neutron's filter semantics: every filtered attribute equals one of its given values. A filter on
    something that is no scalar attribute is ignored, as Neutron's own resources ignore it when its
    filter validation is off (when on, Neutron refuses it before asking the plugin)."""
    for key, wanted in (filters or {}).items():
        value = view.get(key)
        if value is None or isinstance(value, (dict, list)):
            continue
        if _normal(value) not in {_normal(w) for w in wanted}:
            return False
    return True


def only(view: dict[str, Any], fields: Iterable[str] | None) -> dict[str, Any]:
    """``fields=`` as Neutron applies it: the named attributes only (all when none are named)."""
    names = [f for f in fields or () if f]
    return {k: v for k, v in view.items() if k in names} if names else view
