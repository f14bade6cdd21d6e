"""One rule per kind of field, for every object: budgets, text, names, addresses, AS numbers, templates.

The budgets keep every object, and so every message built from objects, far below the 4 MiB gRPC message
limit: an endpoint is at most about 17 KiB whatever is written into it (a peering carries two), a site
or connection at most about 10 KiB. Where many of them meet in one message (a site's desired state, a
status answer), the message is sent or answered in pieces (docs/api.md, "Budgets and rules"); what an
agent reports of its site is bounded by the connections a site may have.

Errors name the field and show at most the first ``ECHO`` characters of a bad value.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from isthmus.core.errors import InvalidArgument

MAP_ENTRIES = 64          # labels, properties, a gateway device's management
MAP_KEY = 128             # characters of a key
MAP_VALUE = 1024          # characters of a value
MAP_BYTES = 8192          # UTF-8 bytes of all keys and values of one map
DESCRIPTION = 1024        # characters of a description
TEXT_NAME = 255           # characters of a free-form name (an l2-gateway's)
ECHO = 40                 # characters of a bad value an error shows
TEMPLATE = 64             # characters of a name template
# Connections with an end at one site: what its agent reports about them (its observed peerings, a few hundred
# bytes each) must fit in one message and its status record in one etcd value (1.5 MiB).
MAX_CONNECTIONS_PER_SITE = 5000

# IANA-reserved AS numbers that can be no peer's AS (documentation ASNs, like documentation addresses, are
# accepted: labs use them).
RESERVED_ASNS: tuple[tuple[int, int, str], ...] = (
    (0, 0, "reserved (RFC 7607)"),
    (23456, 23456, "AS_TRANS (RFC 6793)"),
    (65535, 65535, "reserved (RFC 7300)"),
    (65552, 131071, "reserved by IANA"),
    (4_294_967_295, 4_294_967_295, "reserved (RFC 7300)"),
)
MAX_ASN = 4_294_967_295

_KEY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:/-]{0,126}[A-Za-z0-9])?")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # what Linux takes as an interface name (and not . or ..)


def shown(value: object) -> str:
    """A bad value as an error shows it: its repr, cut to ECHO characters."""
    text = repr(value)
    return text if len(text) <= ECHO else f"{text[:ECHO]}... ({len(str(value))} characters)"


def _bad_character(value: str, allow_space: bool) -> str | None:
    for c in value:
        category = unicodedata.category(c)
        if category[0] == "C" or category in ("Zl", "Zp") or (not allow_space and c.isspace()):
            return c
    return None


def check_text(value: str, field_name: str, limit: int, *, allow_space: bool = True) -> None:
    """Free text (descriptions, label and property values, names people give): at most ``limit`` characters,
    no control or format characters (and no whitespace at all where ``allow_space`` is false)."""
    if len(value) > limit:
        raise InvalidArgument(f"is {len(value)} characters long; the budget is {limit}", field_name)
    bad = _bad_character(value, allow_space)
    if bad is not None:
        what = "whitespace" if bad.isspace() and bad.isprintable() else "a control character"
        raise InvalidArgument(f"{shown(value)} holds {what} ({bad!r})", field_name)


def check_map(values: dict[str, str], field_name: str) -> None:
    """Labels, properties, management: at most MAP_ENTRIES entries, keys of ``_KEY_RE``, values of free
    text up to MAP_VALUE characters, MAP_BYTES in all."""
    if len(values) > MAP_ENTRIES:
        raise InvalidArgument(f"has {len(values)} entries; the budget is {MAP_ENTRIES}", field_name)
    total = 0
    for key, value in values.items():
        if not _KEY_RE.fullmatch(key):
            raise InvalidArgument(f"key {shown(key)} must be 1-{MAP_KEY} of A-Z a-z 0-9 _ . : / -, starting and "
                                  "ending with a letter or digit", field_name)
        check_text(value, f"{field_name}.{key}", MAP_VALUE)
        total += len(key.encode()) + len(value.encode())
    if total > MAP_BYTES:
        raise InvalidArgument(f"holds {total} bytes of keys and values; the budget is {MAP_BYTES}", field_name)


def check_asn(asn: int, field_name: str = "asn") -> None:
    if not 1 <= asn <= MAX_ASN:
        raise InvalidArgument(f"{asn} is out of range 1..{MAX_ASN}", field_name)
    for low, high, why in RESERVED_ASNS:
        if low <= asn <= high:
            raise InvalidArgument(f"{asn} is {why} and cannot be a peer's AS", field_name)


def unicast_address(value: str, field_name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address that can be a BGP peer's or a tunnel's end across sites: a global or private unicast
    address (documentation ranges included), not unspecified, loopback, link-local, multicast, broadcast,
    reserved, or an IPv4-mapped IPv6 address."""
    if not value:
        raise InvalidArgument("is required", field_name)
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(f"{shown(value)} is not an IPv4 or IPv6 address", field_name) from None
    if getattr(addr, "scope_id", None):
        raise InvalidArgument(f"{shown(value)} has a zone (%...); give the address alone", field_name)
    why = ("unspecified" if addr.is_unspecified else "multicast" if addr.is_multicast
           else "loopback" if addr.is_loopback else "link-local" if addr.is_link_local else "")
    if isinstance(addr, ipaddress.IPv4Address):
        if addr == ipaddress.IPv4Address("255.255.255.255"):
            why = "the broadcast address"
        elif addr in ipaddress.IPv4Network("0.0.0.0/8"):
            why = "in 0.0.0.0/8 (this network)"
        elif addr in ipaddress.IPv4Network("240.0.0.0/4"):
            why = "in 240.0.0.0/4 (reserved)"
    elif addr.ipv4_mapped is not None:
        why = "an IPv4-mapped IPv6 address (give the IPv4 address)"
    if why:
        raise InvalidArgument(f"{addr} is {why}, not a unicast address a peer or tunnel can have", field_name)
    return addr


def router_id(value: str, field_name: str = "router_id") -> str:
    """A BGP identifier: a dotted quad, not 0.0.0.0 (RFC 6286) nor 255.255.255.255."""
    try:
        rid = ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidArgument(f"{shown(value)} is not a dotted-quad router id", field_name) from None
    if int(rid) in (0, 0xFFFFFFFF):
        raise InvalidArgument(f"{rid} cannot be a BGP identifier (RFC 6286)", field_name)
    return str(rid)


# ---------------------------------------------------------------- name templates


def template_names(template: str, allowed: tuple[str, ...], field_name: str) -> set[str]:
    """The placeholders of a name template: only plain ``{name}`` of ``allowed``, no format spec, no other
    brace; at most TEMPLATE characters."""
    check_text(template, field_name, TEMPLATE, allow_space=False)
    names = set()
    for match in _PLACEHOLDER_RE.finditer(template):
        if match.group(1) not in allowed:
            raise InvalidArgument(f"{shown(match.group(0))} is not one of "
                                  f"{', '.join('{' + a + '}' for a in allowed)} (no format specs)", field_name)
        names.add(match.group(1))
    if "{" in _PLACEHOLDER_RE.sub("", template) or "}" in _PLACEHOLDER_RE.sub("", template):
        raise InvalidArgument(f"{shown(template)} has a brace outside a placeholder", field_name)
    return names


def render(template: str, values: dict[str, str]) -> str:
    """Plain substitution of ``{name}`` placeholders (checked by ``template_names`` first)."""
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def interface_name(name: str, field_name: str, what: str) -> str:
    """``name`` if Linux can create an interface of that name: 1-15 of A-Z a-z 0-9 _ . -, not . or ..;
    ``what`` says where it came from in the error."""
    if not IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidArgument(f"{what} gives {shown(name)}, which is no Linux interface name "
                              "(1-15 of A-Z a-z 0-9 _ . -)", field_name)
    return name
