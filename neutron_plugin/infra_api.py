"""The infrastructure API's definition for Neutron: its resources, their attributes and validators.

Shared by the extension descriptor (``extensions/infrastructure.py``, which neutron-server loads from
``api_extensions_path`` as a file) and the service plugin (``infrastructure.py``), the way neutron_lib's
``api/definitions`` modules are. isthmus' coordinator holds the rules of each field; what is checked here
is the shape only (a string, a number, a map of strings), so a malformed request is refused by Neutron
with a message naming the field, and a well-formed one is refused by isthmus, naming the field too.
"""

from __future__ import annotations

from typing import Any

from neutron_lib.api import converters, validators

ALIAS = "isthmus-infrastructure"
NAME = "isthmus infrastructure network"
DESCRIPTION = ("The infrastructure network between OpenStack regions and cells (isthmus): sites, their "
               "endpoints and the BGP/VXLAN connections between them, with their observed state.")
UPDATED = "2025-01-01T00:00:00-00:00"
PLUGIN_TYPE = "ISTHMUS_INFRASTRUCTURE"
PATH_PREFIX = "/infra"

SITES, ENDPOINTS, CONNECTIONS = "sites", "endpoints", "connections"
SINGULAR = {SITES: "site", ENDPOINTS: "endpoint", CONNECTIONS: "connection"}

SITE_KINDS = ("region", "cell", "instance", "external")
ROLES = ("local", "remote")
CONNECTION_TYPES = ("bgp", "vxlan")
ENDPOINT_ID_SEPARATOR = ":"  # an endpoint's id is SITE:NAME ("/" cannot be part of a URL's id)

NAME_MAX = 63          # a DNS label
TEXT_MAX = 1024        # descriptions, label and property values


# ---------------------------------------------------------------- validators (messages name the field)


def validate_string_map(data: Any, valid_values: Any = None) -> str | None:
    """A JSON object of string keys and string values (labels, properties)."""
    if not isinstance(data, dict):
        return f"{data!r} is not an object of strings"
    for key, value in data.items():
        if not isinstance(value, str):
            return f"the value of {key!r} is not a string"
    return None


def validate_one_of(data: Any, valid_values: Any = None) -> str | None:
    """One of ``valid_values`` (neutron_lib's type:values does not name them in its message)."""
    if data not in (valid_values or ()):
        return f"{data!r} is not one of {', '.join(valid_values or ())}"
    return None


def validate_endpoint_id(data: Any, valid_values: Any = None) -> str | None:
    """An endpoint's id: ``SITE:NAME``."""
    if not isinstance(data, str) or data.count(ENDPOINT_ID_SEPARATOR) != 1 or \
            not all(data.split(ENDPOINT_ID_SEPARATOR)):
        return f"{data!r} is not an endpoint id: give SITE:NAME"
    return None


def _uint(value: Any, field: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{field}: {value!r} is not a non-negative integer"
    return None


def _object(data: Any, field: str, keys: tuple[str, ...]) -> str | None:
    if not isinstance(data, dict):
        return f"{field}: {data!r} is not an object"
    unknown = sorted(set(data) - set(keys))
    if unknown:
        return f"{field}: unknown keys {', '.join(unknown)} (known: {', '.join(keys)})"
    return None


def validate_bgp(data: Any, valid_values: Any = None) -> str | None:
    """None, or ``{"hold_time": N|null, "password_ref": "...", "address_families": ["..."]}`` (any subset)."""
    if data is None:
        return None
    error = _object(data, "bgp", ("hold_time", "password_ref", "address_families"))
    if error:
        return error
    if data.get("hold_time") is not None and (error := _uint(data["hold_time"], "bgp.hold_time")):
        return error
    if not isinstance(data.get("password_ref", ""), str):
        return f"bgp.password_ref: {data['password_ref']!r} is not a string"
    families = data.get("address_families", [])
    if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
        return f"bgp.address_families: {families!r} is not a list of strings"
    return None


def validate_vxlan(data: Any, valid_values: Any = None) -> str | None:
    """None, or ``{"vni": N, "udp_port": N, "mtu": N}`` (vni required by isthmus, the others default)."""
    if data is None:
        return None
    error = _object(data, "vxlan", ("vni", "udp_port", "mtu"))
    if error:
        return error
    for key in ("vni", "udp_port", "mtu"):
        if key in data and (error := _uint(data[key], f"vxlan.{key}")):
            return error
    return None


VALIDATORS = {
    "isthmus_one_of": validate_one_of,
    "isthmus_string_map": validate_string_map,
    "isthmus_endpoint_id": validate_endpoint_id,
    "isthmus_bgp": validate_bgp,
    "isthmus_vxlan": validate_vxlan,
}


def register_validators() -> None:
    """Make the validators known to neutron_lib (a second call with the same functions is a no-op)."""
    for name, function in VALIDATORS.items():
        validators.add_validator(name, function)


register_validators()


# ---------------------------------------------------------------- the attribute maps


def _id() -> dict[str, Any]:
    return {"allow_post": False, "allow_put": False, "is_visible": True, "primary_key": True,
            "is_filter": True, "is_sort_key": True}


def _fixed(validate: dict[str, Any], default: Any = None) -> dict[str, Any]:
    """Given on create, fixed afterwards (isthmus refuses a change: delete and re-create)."""
    spec = {"allow_post": True, "allow_put": False, "validate": validate, "is_visible": True,
            "is_filter": True, "is_sort_key": True}
    if default is not None:
        spec["default"] = default
    return spec


def _changeable(validate: dict[str, Any], default: Any = None, *, filter_and_sort: bool = True) -> dict[str, Any]:
    spec = {"allow_post": True, "allow_put": True, "validate": validate, "is_visible": True,
            "is_filter": filter_and_sort, "is_sort_key": filter_and_sort}
    if default is not None:
        spec["default"] = default
    return spec


def _observed(*, filter_and_sort: bool = True, convert_to: Any = None) -> dict[str, Any]:
    """Read only: set by isthmus (the version) or observed by the sites' agents (the status)."""
    spec = {"allow_post": False, "allow_put": False, "is_visible": True,
            "is_filter": filter_and_sort, "is_sort_key": filter_and_sort}
    if convert_to is not None:
        spec["convert_to"] = convert_to
    return spec


# Neutron's API layer fills the requester's project into every POST body and refuses unknown attributes:
# infrastructure objects belong to no project, so the owner is accepted, hidden and not stored (isthmus'
# audit records who asked instead).
_OWNER = {"allow_post": True, "allow_put": False, "validate": {"type:string": 255}, "is_visible": False}

SITE_STATUS = ("agent_state", "agent_host", "agent_version", "driver", "desired_revision", "applied_revision",
               "peerings_desired", "peerings_established")
CONNECTION_STATUS = ("status", "observed")

RESOURCE_ATTRIBUTE_MAP: dict[str, dict[str, dict[str, Any]]] = {
    SITES: {
        "id": _id(),
        "name": _fixed({"type:string": NAME_MAX}),
        "kind": _fixed({"type:isthmus_one_of": list(SITE_KINDS)}),
        "parent": _fixed({"type:string": NAME_MAX}, ""),
        "labels": _changeable({"type:isthmus_string_map": None}, {}, filter_and_sort=False),
        "description": _changeable({"type:string": TEXT_MAX}, ""),
        "version": _observed(convert_to=converters.convert_to_int),
        "agent_state": _observed(),        # connected, disconnected, external (runs no agent)
        "agent_host": _observed(),
        "agent_version": _observed(),
        "driver": _observed(),
        "desired_revision": _observed(convert_to=converters.convert_to_int),
        "applied_revision": _observed(convert_to=converters.convert_to_int),
        "peerings_desired": _observed(convert_to=converters.convert_to_int),
        "peerings_established": _observed(convert_to=converters.convert_to_int),
        "tenant_id": dict(_OWNER),
    },
    ENDPOINTS: {
        "id": _id(),
        "site": _fixed({"type:string": NAME_MAX}),
        "name": _fixed({"type:string": NAME_MAX}),
        "address": _changeable({"type:string": 64}),
        "asn": _changeable({"type:non_negative": None}),
        "role": _fixed({"type:isthmus_one_of": list(ROLES)}, "local"),
        "router_id": _changeable({"type:string": 15}, ""),
        "properties": _changeable({"type:isthmus_string_map": None}, {}, filter_and_sort=False),
        "version": _observed(convert_to=converters.convert_to_int),
        "tenant_id": dict(_OWNER),
    },
    CONNECTIONS: {
        "id": _id(),
        "name": _fixed({"type:string": NAME_MAX}),
        "type": _fixed({"type:isthmus_one_of": list(CONNECTION_TYPES)}),
        "a": _fixed({"type:isthmus_endpoint_id": None}),
        "b": _fixed({"type:isthmus_endpoint_id": None}),
        "bgp": _changeable({"type:isthmus_bgp": None}, filter_and_sort=False) | {"default": None},
        "vxlan": _changeable({"type:isthmus_vxlan": None}, filter_and_sort=False) | {"default": None},
        "admin_state_up": _changeable({"type:boolean": None}, True),
        "description": _changeable({"type:string": TEXT_MAX}, ""),
        "version": _observed(convert_to=converters.convert_to_int),
        "status": _observed(),             # ESTABLISHED, CONNECTING, PENDING, DOWN, ERROR
        "observed": _observed(filter_and_sort=False),  # per end: {"a": {...}, "b": {...}}
        "tenant_id": dict(_OWNER),
    },
}
