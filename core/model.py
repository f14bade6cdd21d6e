"""The domain model shared by coordinator, agent and drivers, with field validation.

Protobuf messages stop at the gRPC edge (see ``isthmus.convert``); everything
else works on these dataclasses. ``validate_*`` check one object on its own
(ranges, formats, defaults) and raise ``InvalidArgument`` naming the field;
checks across objects (existence, uniqueness) live in the coordinator's registry.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from isthmus.core import checks
from isthmus.core.errors import InvalidArgument


class SiteKind(enum.StrEnum):
    REGION = "region"
    CELL = "cell"
    INSTANCE = "instance"
    EXTERNAL = "external"  # a router or cloud that runs no isthmus agent: remote endpoints only


class EndpointRole(enum.StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class ConnectionType(enum.StrEnum):
    BGP = "bgp"
    VXLAN = "vxlan"


class AdminState(enum.StrEnum):
    UP = "up"
    DOWN = "down"


class PeeringState(enum.StrEnum):
    ESTABLISHED = "established"
    CONNECTING = "connecting"
    DOWN = "down"
    ERROR = "error"


ADDRESS_FAMILIES = ("ipv4-unicast", "ipv6-unicast", "l2vpn-evpn")
DEFAULT_HOLD_TIME = 90
# The one hold-time rule (RFC 4271 4.2), for the API, the CLI and every driver: 0 (no keepalives) or 3..65535 s.
HOLD_TIME_RULE = "0 or 3..65535 seconds (RFC 4271)"
DEFAULT_GRACEFUL_RESTART = 120  # seconds peers keep a restarting speaker's routes
MAX_GRACEFUL_RESTART = 4095  # the capability's 12-bit field
DEFAULT_VXLAN_PORT = 4789
DEFAULT_VXLAN_MTU = 1450
MAX_VNI = 16_777_215
# Endpoint property: comma-separated prefixes the endpoint's BGP speaker advertises.
ADVERTISE_PROPERTY = "bgp.advertise"
# Local endpoint property: "false" keeps the routes its BGP speaker learns out of the host's routing table
# (an endpoint that only advertises); default "true".
INSTALL_PROPERTY = "bgp.install"
# Local endpoint property: the bridge a VXLAN peering's device joins (overrides the vxlan driver's bridge option).
VXLAN_BRIDGE_PROPERTY = "vxlan.bridge"

_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SECRET_REF_RE = re.compile(r"^(file:/\S+|env:[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Site:
    name: str
    kind: SiteKind
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    version: int = 0


@dataclass(frozen=True)
class Endpoint:
    site: str
    name: str
    address: str
    asn: int
    role: EndpointRole = EndpointRole.LOCAL
    router_id: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    version: int = 0

    @property
    def ref(self) -> EndpointRef:
        return EndpointRef(self.site, self.name)


@dataclass(frozen=True, order=True)
class EndpointRef:
    site: str
    name: str

    def __str__(self) -> str:
        return f"{self.site}/{self.name}"

    @classmethod
    def parse(cls, text: str, field_name: str) -> EndpointRef:
        site, sep, name = text.partition("/")
        if not sep or not site or not name:
            raise InvalidArgument(f"{text!r} is not SITE/ENDPOINT", field_name)
        return cls(site, name)


@dataclass(frozen=True)
class BgpParams:
    hold_time: int = DEFAULT_HOLD_TIME
    password_ref: str = ""
    address_families: tuple[str, ...] = ()
    import_prefixes: tuple[str, ...] = ()  # ImportRule texts, canonical after validation; empty: all but default
    max_prefixes: int = 0  # 0: no limit
    graceful_restart: int = DEFAULT_GRACEFUL_RESTART  # seconds (RFC 4724 restart time), 0: not offered
    # Route reflection: the site of the end that reflects routes; the other end is its client. "": none.
    reflector: str = ""


@dataclass(frozen=True)
class ImportRule:
    """One rule of a BGP import policy: routes inside ``network`` whose length is in ``ge``..``le``."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ge: int
    le: int

    @classmethod
    def parse(cls, text: str) -> ImportRule:
        """``PREFIX [ge N] [le N]`` as in a prefix list; raises ValueError saying what is wrong."""
        words = text.split()
        if not words:
            raise ValueError("an empty rule")
        try:
            network = ipaddress.ip_network(words[0], strict=True)
        except ValueError as exc:
            raise ValueError(f"{words[0]!r} is not a prefix: {exc}") from None
        bounds: dict[str, int] = {}
        rest = words[1:]
        while rest:
            if len(rest) < 2 or rest[0] not in ("ge", "le") or rest[0] in bounds or not rest[1].isdigit():
                raise ValueError(f"{text!r}: expected PREFIX [ge N] [le N]")
            bounds[rest[0]] = int(rest[1])
            rest = rest[2:]
        top = network.max_prefixlen
        ge = bounds.get("ge", network.prefixlen)
        le = bounds.get("le", top if "ge" in bounds else ge)
        if not network.prefixlen <= ge <= le <= top:
            raise ValueError(f"{text!r}: needs {network.prefixlen} <= ge <= le <= {top}")
        return cls(network, ge, le)

    def __str__(self) -> str:
        """The canonical text: parses back to the same rule, naming no bound that is the default."""
        text = str(self.network)
        ge_named = self.ge != self.network.prefixlen
        if ge_named:
            text += f" ge {self.ge}"
        if self.le != (self.network.max_prefixlen if ge_named else self.network.prefixlen):
            text += f" le {self.le}"
        return text

    def matches(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return (prefix.version == self.network.version and self.ge <= prefix.prefixlen <= self.le
                and prefix.subnet_of(self.network))  # type: ignore[arg-type]


def import_accepts(rules: tuple[ImportRule, ...], prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """The import policy ``rules`` accepts ``prefix``: no rules accept all but a default route."""
    if not rules:
        return prefix.prefixlen != 0
    return any(rule.matches(prefix) for rule in rules)


@dataclass(frozen=True)
class VxlanParams:
    vni: int = 0
    udp_port: int = DEFAULT_VXLAN_PORT
    mtu: int = DEFAULT_VXLAN_MTU


@dataclass(frozen=True)
class Connection:
    name: str
    a: EndpointRef
    b: EndpointRef
    type: ConnectionType
    bgp: BgpParams | None = None
    vxlan: VxlanParams | None = None
    admin_state: AdminState = AdminState.UP
    description: str = ""
    policy: str = ""  # the topology policy that made it (only the coordinator sets it), "": written by hand
    version: int = 0

    @property
    def ends(self) -> tuple[EndpointRef, EndpointRef]:
        return (self.a, self.b)

    def pair_key(self) -> str:
        """Identity of the (endpoint pair, type) that must be unique."""
        x, y = sorted((self.a, self.b))
        return f"{self.type}/{x}/{y}"


@dataclass(frozen=True)
class DesiredPeering:
    """What one site's agent must realize for one connection (id: the connection name)."""

    connection: str
    type: ConnectionType
    local: Endpoint
    remote: Endpoint
    bgp: BgpParams | None = None
    vxlan: VxlanParams | None = None
    admin_state: AdminState = AdminState.UP


@dataclass(frozen=True)
class ObservedPeering:
    """What one site's agent sees for one peering."""

    connection: str
    state: PeeringState
    error: str = ""
    since_ms: int = 0
    driver: str = ""
    received_prefixes: tuple[str, ...] = ()


class OverrideKind(enum.StrEnum):
    DISABLE = "disable"  # a desired peering held DOWN locally
    ADD = "add"  # a peering added locally, unknown to the coordinator


@dataclass(frozen=True)
class Override:
    """A change made at the site through the admin socket; wins over the coordinator until removed or expired."""

    connection: str
    kind: OverrideKind
    peering: DesiredPeering | None = None  # ADD: what to realize
    reason: str = ""
    created_ms: int = 0
    expires_ms: int = 0  # 0: until removed

    def expired(self, now_ms: int) -> bool:
        return bool(self.expires_ms) and now_ms >= self.expires_ms


EVENT_LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    time_ms: int
    kind: str  # link, desired, peering, override, agent, sync, quota, error
    connection: str = ""
    message: str = ""
    level: str = "info"  # one of EVENT_LEVELS


# ---------------------------------------------------------------- JSON (etcd values, agent disk)


_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}  # a dataclass's stored field names, looked up once per class


def to_json(obj: Any) -> Any:
    """A plain JSON-able structure from a model object (version is not stored).

    On the hot paths of the coordinator (status records, peering digests): the field names of each class are
    looked up once, and plain values return at once.
    """
    kind = type(obj)
    if kind in _PLAIN:
        return obj
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(obj) if f.name != "version")
    if names is not None:
        return {name: to_json(getattr(obj, name)) for name in names}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def site_from_json(d: dict[str, Any], version: int = 0) -> Site:
    return Site(
        name=d["name"],
        kind=SiteKind(d["kind"]),
        parent=d.get("parent", ""),
        labels=dict(d.get("labels", {})),
        description=d.get("description", ""),
        version=version,
    )


def endpoint_from_json(d: dict[str, Any], version: int = 0) -> Endpoint:
    return Endpoint(
        site=d["site"],
        name=d["name"],
        address=d["address"],
        asn=int(d["asn"]),
        role=EndpointRole(d.get("role", "local")),
        router_id=d.get("router_id", ""),
        properties=dict(d.get("properties", {})),
        version=version,
    )


def _ref_from_json(d: dict[str, Any]) -> EndpointRef:
    return EndpointRef(d["site"], d["name"])


def _bgp_from_json(d: dict[str, Any] | None) -> BgpParams | None:
    if d is None:
        return None
    return BgpParams(
        hold_time=int(d.get("hold_time", DEFAULT_HOLD_TIME)),
        password_ref=d.get("password_ref", ""),
        address_families=tuple(d.get("address_families", ())),
        import_prefixes=tuple(d.get("import_prefixes", ())),
        max_prefixes=int(d.get("max_prefixes", 0)),
        graceful_restart=int(d.get("graceful_restart", DEFAULT_GRACEFUL_RESTART)),
        reflector=d.get("reflector", ""),
    )


def _vxlan_from_json(d: dict[str, Any] | None) -> VxlanParams | None:
    if d is None:
        return None
    return VxlanParams(
        vni=int(d["vni"]),
        udp_port=int(d.get("udp_port", DEFAULT_VXLAN_PORT)),
        mtu=int(d.get("mtu", DEFAULT_VXLAN_MTU)),
    )


def connection_from_json(d: dict[str, Any], version: int = 0) -> Connection:
    return Connection(
        name=d["name"],
        a=_ref_from_json(d["a"]),
        b=_ref_from_json(d["b"]),
        type=ConnectionType(d["type"]),
        bgp=_bgp_from_json(d.get("bgp")),
        vxlan=_vxlan_from_json(d.get("vxlan")),
        admin_state=AdminState(d.get("admin_state", "up")),
        description=d.get("description", ""),
        policy=d.get("policy", ""),
        version=version,
    )


def peering_from_json(d: dict[str, Any]) -> DesiredPeering:
    return DesiredPeering(
        connection=d["connection"],
        type=ConnectionType(d["type"]),
        local=endpoint_from_json(d["local"]),
        remote=endpoint_from_json(d["remote"]),
        bgp=_bgp_from_json(d.get("bgp")),
        vxlan=_vxlan_from_json(d.get("vxlan")),
        admin_state=AdminState(d.get("admin_state", "up")),
    )


def observed_from_json(d: dict[str, Any]) -> ObservedPeering:
    return ObservedPeering(
        connection=d["connection"],
        state=PeeringState(d["state"]),
        error=d.get("error", ""),
        since_ms=int(d.get("since_ms", 0)),
        driver=d.get("driver", ""),
        received_prefixes=tuple(d.get("received_prefixes", ())),
    )


def override_from_json(d: dict[str, Any]) -> Override:
    peering = d.get("peering")
    return Override(
        connection=d["connection"],
        kind=OverrideKind(d["kind"]),
        peering=peering_from_json(peering) if peering else None,
        reason=d.get("reason", ""),
        created_ms=int(d.get("created_ms", 0)),
        expires_ms=int(d.get("expires_ms", 0)),
    )


def journal_from_json(d: dict[str, Any]) -> JournalEntry:
    return JournalEntry(int(d["seq"]), int(d["time_ms"]), d["kind"], d.get("connection", ""), d.get("message", ""),
                        event_level(d["kind"], d.get("level", "")))


def event_level(kind: str, level: str = "") -> str:
    """The level of a journal entry: the one given if known, else from its kind (error: error, gap: warning)."""
    if level in EVENT_LEVELS:
        return level
    return {"error": "error", "gap": "warning"}.get(kind, "info")


# ---------------------------------------------------------------- validation


def check_name(value: str, field_name: str) -> None:
    """The one rule for the names of sites, endpoints, connections, gateway devices and sync intents."""
    if not value:
        raise InvalidArgument("is required", field_name)
    if not _LABEL_RE.fullmatch(value):
        raise InvalidArgument(
            f"{checks.shown(value)} is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-')",
            field_name,
        )


def _check_description(value: str) -> None:
    checks.check_text(value, "description", checks.DESCRIPTION)


def validate_site(site: Site) -> Site:
    check_name(site.name, "name")
    if site.kind == SiteKind.CELL:
        if not site.parent:
            raise InvalidArgument("a cell names its region", "parent")
        check_name(site.parent, "parent")
        if site.parent == site.name:
            raise InvalidArgument("a site cannot be its own parent", "parent")
    elif site.parent:
        raise InvalidArgument(f"only a cell has a parent, not a {site.kind}", "parent")
    checks.check_map(site.labels, "labels")
    _check_description(site.description)
    return site


def parse_address(value: str, field_name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address that becomes a BGP peer or a tunnel's end (``checks.unicast_address``)."""
    return checks.unicast_address(value, field_name)


def validate_endpoint(ep: Endpoint) -> Endpoint:
    check_name(ep.site, "site")
    check_name(ep.name, "name")
    addr = parse_address(ep.address, "address")
    checks.check_asn(ep.asn)
    router_id = ep.router_id
    if router_id:
        router_id = checks.router_id(router_id)
    elif addr.version == 4:
        router_id = str(addr)
    checks.check_map(ep.properties, "properties")
    advertise = ep.properties.get(ADVERTISE_PROPERTY)
    if advertise is not None:
        ep = dataclasses.replace(
            ep, properties={**ep.properties, ADVERTISE_PROPERTY: ",".join(parse_prefixes(advertise))}
        )
    install = ep.properties.get(INSTALL_PROPERTY)
    if install is not None:
        if install.strip().lower() not in ("true", "false"):
            raise InvalidArgument(f"{install!r} is not true or false", f"properties.{INSTALL_PROPERTY}")
        ep = dataclasses.replace(ep, properties={**ep.properties, INSTALL_PROPERTY: install.strip().lower()})
    # Store the canonical text of the address so that equal addresses compare equal.
    return dataclasses.replace(ep, address=str(addr), router_id=router_id)


def validate_connection(conn: Connection) -> Connection:
    check_name(conn.name, "name")
    for label, ref in (("a", conn.a), ("b", conn.b)):
        check_name(ref.site, f"{label}.site")
        check_name(ref.name, f"{label}.name")
    if conn.a == conn.b:
        raise InvalidArgument("a connection joins two different endpoints", "b")
    if conn.a.site == conn.b.site:
        raise InvalidArgument(f"both ends are in site {conn.a.site}; a connection joins two sites", "b.site")
    _check_description(conn.description)
    bgp, vxlan = validate_params(conn.type, conn.bgp, conn.vxlan)
    if bgp is not None and bgp.reflector not in ("", conn.a.site, conn.b.site):
        raise InvalidArgument(f"{checks.shown(bgp.reflector)} is neither end's site", "bgp.reflector")
    return dataclasses.replace(conn, bgp=bgp, vxlan=vxlan)


def parse_prefixes(text: str, field_name: str = f"properties.{ADVERTISE_PROPERTY}") -> list[str]:
    """Comma-separated IPv4/IPv6 prefixes in canonical form."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError as exc:
            raise InvalidArgument(f"{item!r} is not a prefix ({exc})", field_name) from None
    return out


def valid_hold_time(seconds: int) -> bool:
    """``seconds`` follows HOLD_TIME_RULE: 0 (no keepalives, no hold timer) or 3..65535."""
    return seconds == 0 or 3 <= seconds <= 65535


def validate_params(
    ctype: ConnectionType, bgp: BgpParams | None, vxlan: VxlanParams | None
) -> tuple[BgpParams | None, VxlanParams | None]:
    """The parameters of a connection of type ``ctype``, with defaults filled in."""
    if ctype == ConnectionType.BGP:
        if vxlan is not None:
            raise InvalidArgument("is only for VXLAN connections", "vxlan")
        bgp = bgp or BgpParams()
        if not valid_hold_time(bgp.hold_time):
            raise InvalidArgument(f"{bgp.hold_time} must be {HOLD_TIME_RULE}", "bgp.hold_time")
        if bgp.password_ref and not _SECRET_REF_RE.match(bgp.password_ref):
            raise InvalidArgument(
                "must be a secret reference 'file:/ABSOLUTE/PATH' or 'env:NAME', never the password itself",
                "bgp.password_ref",
            )
        for family in bgp.address_families:
            if family not in ADDRESS_FAMILIES:
                raise InvalidArgument(
                    f"{family!r} is not one of {', '.join(ADDRESS_FAMILIES)}", "bgp.address_families"
                )
        if len(set(bgp.address_families)) != len(bgp.address_families):
            raise InvalidArgument("lists a family twice", "bgp.address_families")
        rules = []
        for text in bgp.import_prefixes:
            try:
                rules.append(str(ImportRule.parse(text)))
            except ValueError as exc:
                raise InvalidArgument(str(exc), "bgp.import_prefixes") from None
        if len(set(rules)) != len(rules):
            raise InvalidArgument("lists a rule twice", "bgp.import_prefixes")
        if not 0 <= bgp.max_prefixes <= 4_294_967_295:
            raise InvalidArgument(f"{bgp.max_prefixes} is not 0 (no limit) or a count", "bgp.max_prefixes")
        if not 0 <= bgp.graceful_restart <= MAX_GRACEFUL_RESTART:
            raise InvalidArgument(f"{bgp.graceful_restart} is out of range 0 (off)..{MAX_GRACEFUL_RESTART} seconds",
                                  "bgp.graceful_restart")
        bgp = dataclasses.replace(bgp, import_prefixes=tuple(rules))
    elif ctype == ConnectionType.VXLAN:
        if bgp is not None:
            raise InvalidArgument("is only for BGP connections", "bgp")
        if vxlan is None or vxlan.vni == 0:
            raise InvalidArgument("is required for a VXLAN connection", "vxlan.vni")
        if not 1 <= vxlan.vni <= MAX_VNI:
            raise InvalidArgument(f"{vxlan.vni} is out of range 1..{MAX_VNI}", "vxlan.vni")
        if not 1 <= vxlan.udp_port <= 65535:
            raise InvalidArgument(f"{vxlan.udp_port} is out of range 1..65535", "vxlan.udp_port")
        if not 576 <= vxlan.mtu <= 9216:
            raise InvalidArgument(f"{vxlan.mtu} is out of range 576..9216", "vxlan.mtu")
    else:
        raise InvalidArgument("must be BGP or VXLAN", "type")
    return bgp, vxlan


def peering_text(peering: DesiredPeering) -> str:
    """One peering's part of ``peerings_digest`` (a planner keeps those of unchanged peerings)."""
    return json.dumps(to_json(peering), sort_keys=True, separators=(",", ":"))


def digest_of(texts: Iterable[str]) -> str:
    """``peerings_digest`` from the peerings' texts in name order: the digest of their JSON list."""
    return hashlib.sha256(("[" + ",".join(texts) + "]").encode()).hexdigest()


def peerings_digest(peerings: Mapping[str, DesiredPeering]) -> str:
    """A digest of a set of desired peerings, equal on agent and coordinator for equal sets."""
    return digest_of(peering_text(peerings[k]) for k in sorted(peerings))


def default_address_families(address: str) -> tuple[str, ...]:
    return ("ipv6-unicast",) if ipaddress.ip_address(address).version == 6 else ("ipv4-unicast",)
