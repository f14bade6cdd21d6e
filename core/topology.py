"""Topology policies and what they expand to, and the per-site peerings any set of connections asks for.

Pure functions shared by the coordinator (its leader expands policies into connections, its planner serves
agents the peerings) and isthmusctl (``plan`` shows the peering changes a file set would make before it is
applied), so that both compute the same thing with the same code.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument


class PolicyKind(enum.StrEnum):
    FULL_MESH = "full-mesh"
    HUB_AND_SPOKE = "hub-and-spoke"
    ROUTE_REFLECTOR = "route-reflector"


@dataclass(frozen=True)
class VxlanPool:
    """The VXLAN parameters of a policy's tunnels; each tunnel gets its own VNI in vni_first..vni_last."""

    vni_first: int = 0
    vni_last: int = 0
    udp_port: int = m.DEFAULT_VXLAN_PORT
    mtu: int = m.DEFAULT_VXLAN_MTU


@dataclass(frozen=True)
class Policy:
    name: str
    kind: PolicyKind
    endpoint: str  # the endpoint of each member site the connections join
    sites: tuple[str, ...] = ()  # members by name
    selector: dict[str, str] = field(default_factory=dict)  # members by labels (all of them)
    hubs: tuple[str, ...] = ()  # HUB_AND_SPOKE
    reflectors: tuple[str, ...] = ()  # ROUTE_REFLECTOR
    types: tuple[m.ConnectionType, ...] = (m.ConnectionType.BGP,)
    bgp: m.BgpParams | None = None
    vxlan: VxlanPool | None = None
    admin_state: m.AdminState = m.AdminState.UP
    description: str = ""
    version: int = 0


MAX_MEMBERS_NAMED = 1000  # names in sites, hubs or reflectors


def _check_names(values: tuple[str, ...], field_name: str) -> None:
    if len(values) > MAX_MEMBERS_NAMED:
        raise InvalidArgument(f"names {len(values)} sites; the budget is {MAX_MEMBERS_NAMED}", field_name)
    for i, name in enumerate(values):
        m.check_name(name, f"{field_name}[{i}]")
    if len(set(values)) != len(values):
        raise InvalidArgument("names a site twice", field_name)


def validate_policy(p: Policy) -> Policy:
    """``p`` checked on its own, with defaults filled in; raises InvalidArgument naming the field."""
    m.check_name(p.name, "name")
    m.check_name(p.endpoint, "endpoint")
    _check_names(p.sites, "sites")
    _check_names(p.hubs, "hubs")
    _check_names(p.reflectors, "reflectors")
    checks.check_map(p.selector, "selector")
    if not p.sites and not p.selector:
        raise InvalidArgument("a policy names its sites, or selects them by labels (selector), or both", "sites")
    if p.kind == PolicyKind.HUB_AND_SPOKE and not p.hubs:
        raise InvalidArgument("a hub-and-spoke policy names at least one hub", "hubs")
    if p.kind != PolicyKind.HUB_AND_SPOKE and p.hubs:
        raise InvalidArgument(f"only a hub-and-spoke policy has hubs, not a {p.kind} one", "hubs")
    if p.kind == PolicyKind.ROUTE_REFLECTOR and not p.reflectors:
        raise InvalidArgument("a route-reflector policy names at least one reflector", "reflectors")
    if p.kind != PolicyKind.ROUTE_REFLECTOR and p.reflectors:
        raise InvalidArgument(f"only a route-reflector policy has reflectors, not a {p.kind} one", "reflectors")
    if not p.types:
        raise InvalidArgument("names at least one connection type (bgp, vxlan)", "types")
    if len(set(p.types)) != len(p.types):
        raise InvalidArgument("names a type twice", "types")
    if p.kind == PolicyKind.ROUTE_REFLECTOR and m.ConnectionType.BGP not in p.types:
        raise InvalidArgument("route reflectors reflect BGP routes: the types include bgp", "types")
    bgp, vxlan = p.bgp, p.vxlan
    if m.ConnectionType.BGP in p.types:
        bgp, _ = m.validate_params(m.ConnectionType.BGP, bgp or m.BgpParams(), None)
        if bgp is not None and bgp.reflector:
            raise InvalidArgument("is set by the policy (route-reflector kind), not given", "bgp.reflector")
    elif bgp is not None:
        raise InvalidArgument("is only for policies whose types include bgp", "bgp")
    if m.ConnectionType.VXLAN in p.types:
        if vxlan is None or not vxlan.vni_first:
            raise InvalidArgument("a VXLAN policy needs a VNI pool", "vxlan.vni_first")
        if not 1 <= vxlan.vni_first <= vxlan.vni_last <= m.MAX_VNI:
            raise InvalidArgument(f"{vxlan.vni_first}..{vxlan.vni_last} is not a range in 1..{m.MAX_VNI}",
                                  "vxlan.vni_last")
        m.validate_params(m.ConnectionType.VXLAN, None, m.VxlanParams(vxlan.vni_first, vxlan.udp_port, vxlan.mtu))
    elif vxlan is not None:
        raise InvalidArgument("is only for policies whose types include vxlan", "vxlan")
    checks.check_text(p.description, "description", checks.DESCRIPTION)
    return dataclasses.replace(p, bgp=bgp, vxlan=vxlan)


def policy_from_json(d: dict[str, Any], version: int = 0) -> Policy:
    bgp = m._bgp_from_json(d.get("bgp"))
    vx = d.get("vxlan")
    return Policy(
        name=d["name"],
        kind=PolicyKind(d["kind"]),
        endpoint=d["endpoint"],
        sites=tuple(d.get("sites", ())),
        selector=dict(d.get("selector", {})),
        hubs=tuple(d.get("hubs", ())),
        reflectors=tuple(d.get("reflectors", ())),
        types=tuple(m.ConnectionType(t) for t in d.get("types", ("bgp",))),
        bgp=bgp,
        vxlan=VxlanPool(int(vx["vni_first"]), int(vx["vni_last"]), int(vx.get("udp_port", m.DEFAULT_VXLAN_PORT)),
                        int(vx.get("mtu", m.DEFAULT_VXLAN_MTU))) if vx is not None else None,
        admin_state=m.AdminState(d.get("admin_state", "up")),
        description=d.get("description", ""),
        version=version,
    )


# ---------------------------------------------------------------- expansion


def members(policy: Policy, sites: Iterable[m.Site]) -> list[str]:
    """The member sites of ``policy`` that exist, sorted: named, selected by labels, hubs and reflectors."""
    named = set(policy.sites) | set(policy.hubs) | set(policy.reflectors)
    out = []
    for site in sites:
        selected = bool(policy.selector) and all(site.labels.get(k) == v for k, v in policy.selector.items())
        if site.name in named or selected:
            out.append(site.name)
    return sorted(out)


def pairs(policy: Policy, member_names: list[str]) -> list[tuple[str, str, str]]:
    """(site x, site y, reflector site or "") for each pair the policy joins; x is the hub or reflector."""
    centres = policy.hubs if policy.kind == PolicyKind.HUB_AND_SPOKE else policy.reflectors
    present = set(member_names)
    if policy.kind == PolicyKind.FULL_MESH:
        return [(x, y, "") for i, x in enumerate(member_names) for y in member_names[i + 1:]]
    hubs = sorted(h for h in centres if h in present)
    out = [(x, y, "") for i, x in enumerate(hubs) for y in hubs[i + 1:]]
    reflects = policy.kind == PolicyKind.ROUTE_REFLECTOR
    for hub in hubs:
        out += [(hub, s, hub if reflects else "") for s in member_names if s not in centres]
    return out


def connection_name(policy: str, x: str, y: str, ctype: m.ConnectionType, several_types: bool) -> str:
    """The name of the policy's connection between sites x and y: readable, or a digest when that is too long."""
    name = f"{policy}-{x}-{y}" + (f"-{ctype}" if several_types else "")
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(f"{x}/{y}/{ctype}".encode()).hexdigest()[:16]
    return f"{policy[:46]}-{digest}"


@dataclass
class Expansion:
    """What a policy asks for now: its connections by name, its members, and the pairs it skips and why."""

    connections: dict[str, m.Connection] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def expand(
    policy: Policy,
    sites: Iterable[m.Site],
    endpoints: Mapping[m.EndpointRef, m.Endpoint],
    connections: Iterable[m.Connection],
    reserved_vnis: Iterable[int] = (),
) -> Expansion:
    """The connections ``policy`` makes from the given configuration (the stored connections decide which
    pairs an explicit connection holds and which VNIs are taken; the policy's own keep their VNIs)."""
    out = Expansion(members=members(policy, sites))
    existing = list(connections)
    by_name = {c.name: c for c in existing}
    held = {c.pair_key(): c for c in existing if c.policy != policy.name}
    used_vnis = {c.vxlan.vni for c in existing if c.vxlan is not None and c.policy != policy.name}
    used_vnis |= set(reserved_vnis)
    wanted: list[m.Connection] = []
    for x, y, reflector in pairs(policy, out.members):
        ex, ey = endpoints.get(m.EndpointRef(x, policy.endpoint)), endpoints.get(m.EndpointRef(y, policy.endpoint))
        missing = [s for s, e in ((x, ex), (y, ey)) if e is None]
        if missing or ex is None or ey is None:
            out.notes.append(f"{x} - {y}: site {', '.join(missing)} has no endpoint {policy.endpoint}")
            continue
        if ex.role == m.EndpointRole.REMOTE and ey.role == m.EndpointRole.REMOTE:
            out.notes.append(f"{x} - {y}: both endpoints are remote")
            continue
        if ipaddress.ip_address(ex.address).version != ipaddress.ip_address(ey.address).version:
            out.notes.append(f"{x} - {y}: the endpoints' addresses are of different IP versions")
            continue
        for ctype in policy.types:
            conn = _connection(policy, ctype, ex, ey, reflector)
            holder = held.get(conn.pair_key())
            if holder is not None and holder.policy:
                out.notes.append(f"{x} - {y}: {ctype} connection {holder.name} of policy {holder.policy} joins "
                                 "these endpoints")
                continue
            if holder is not None:
                out.notes.append(f"{x} - {y}: explicit {ctype} connection {holder.name} joins these endpoints and "
                                 "wins over the policy")
                continue
            taken = by_name.get(conn.name)
            if taken is not None and taken.policy != policy.name:
                out.notes.append(f"{x} - {y}: the name {conn.name} is taken by connection {taken.name}"
                                 f"{' of policy ' + taken.policy if taken.policy else ''}")
                continue
            wanted.append(conn)
    _assign_vnis(policy, wanted, by_name, used_vnis, out)
    return out


def _connection(policy: Policy, ctype: m.ConnectionType, ex: m.Endpoint, ey: m.Endpoint,
                reflector: str) -> m.Connection:
    name = connection_name(policy.name, ex.site, ey.site, ctype, len(policy.types) > 1)
    bgp = None
    if ctype == m.ConnectionType.BGP:
        bgp = policy.bgp or m.BgpParams()
        # Filled in as the registry fills them in, so that what is stored compares equal to what is expanded.
        families = bgp.address_families or m.default_address_families(ex.address)
        bgp = dataclasses.replace(bgp, address_families=families, reflector=reflector)
    return m.Connection(name=name, a=ex.ref, b=ey.ref, type=ctype, bgp=bgp, admin_state=policy.admin_state,
                        description=policy.description, policy=policy.name)


def _assign_vnis(policy: Policy, wanted: list[m.Connection], by_name: Mapping[str, m.Connection],
                 used: set[int], out: Expansion) -> None:
    """Give each VXLAN connection a VNI of the pool: the one it has if still in the pool, else the lowest free."""
    pool = policy.vxlan
    kept: dict[str, int] = {}
    for conn in wanted:
        old = by_name.get(conn.name)
        if (conn.type == m.ConnectionType.VXLAN and pool is not None and old is not None and old.vxlan is not None
                and pool.vni_first <= old.vxlan.vni <= pool.vni_last and old.vxlan.vni not in used):
            kept[conn.name] = old.vxlan.vni
            used.add(old.vxlan.vni)
    free = pool.vni_first if pool is not None else 0
    for conn in wanted:
        if conn.type != m.ConnectionType.VXLAN or pool is None:
            out.connections[conn.name] = conn
            continue
        vni = kept.get(conn.name, 0)
        while not vni and free <= pool.vni_last:
            if free not in used:
                vni = free
                used.add(vni)
            free += 1
        if not vni:
            out.notes.append(f"{conn.a.site} - {conn.b.site}: the VNI pool {pool.vni_first}..{pool.vni_last} "
                             "is used up")
            continue
        out.connections[conn.name] = dataclasses.replace(conn, vxlan=m.VxlanParams(vni, pool.udp_port, pool.mtu))


def expand_all(
    policies: Iterable[Policy],
    sites: Iterable[m.Site],
    endpoints: Mapping[m.EndpointRef, m.Endpoint],
    connections: Iterable[m.Connection],
    reserved_vnis: Iterable[int] = (),
) -> dict[str, Expansion]:
    """Every policy's expansion, in name order: where two policies join the same pair, the one whose connection
    is stored keeps it, else the first by name makes it (the other notes it); a VNI one policy takes is not
    offered to the next."""
    site_list, conns = list(sites), list(connections)
    explicit, owned = [c for c in conns if not c.policy], [c for c in conns if c.policy]
    reserved = set(reserved_vnis)
    out: dict[str, Expansion] = {}
    for policy in sorted(policies, key=lambda p: p.name):
        # Another policy's connections count as they will be: those already expanded in this pass, the others
        # as stored.
        others = [c for c in owned if c.policy > policy.name]
        mine = [c for c in owned if c.policy == policy.name]
        done = [c for e in out.values() for c in e.connections.values()]
        out[policy.name] = expand(policy, site_list, endpoints, explicit + others + done + mine, reserved)
    return out


# ---------------------------------------------------------------- peerings (the planner's rule)


def bare(ep: m.Endpoint) -> m.Endpoint:
    """The endpoint without its version, which is not part of what an agent realizes."""
    return m.Endpoint(ep.site, ep.name, ep.address, ep.asn, ep.role, ep.router_id, dict(ep.properties))


def plan_site(
    site: str,
    connections: Iterable[m.Connection],
    endpoints: Mapping[m.EndpointRef, m.Endpoint],
) -> dict[str, m.DesiredPeering]:
    """The desired peerings of ``site``: one per connection with a LOCAL end in the site."""
    out: dict[str, m.DesiredPeering] = {}
    for conn in connections:
        for mine, theirs in ((conn.a, conn.b), (conn.b, conn.a)):
            if mine.site != site:
                continue
            local, remote = endpoints.get(mine), endpoints.get(theirs)
            if local is None or remote is None or local.role != m.EndpointRole.LOCAL:
                continue
            out[conn.name] = m.DesiredPeering(
                connection=conn.name,
                type=conn.type,
                local=bare(local),
                remote=bare(remote),
                bgp=conn.bgp,
                vxlan=conn.vxlan,
                admin_state=conn.admin_state,
            )
    return out


def changed_fields(old: m.DesiredPeering, new: m.DesiredPeering) -> list[str]:
    """The fields of a peering that differ, dotted (``bgp.hold_time``, ``remote.address``, ``admin_state``)."""
    out = []
    for part in ("local", "remote", "bgp", "vxlan"):
        a, b = getattr(old, part), getattr(new, part)
        if a == b:
            continue
        if a is None or b is None:
            out.append(part)
            continue
        out += [f"{part}.{f.name}" for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    if old.admin_state != new.admin_state:
        out.append("admin_state")
    return out


# Fields a running session or tunnel takes in place (the bgp driver's neighbor policy, the speaker's prefixes);
# a change of any other field re-creates it (see drivers/bgp/driver.py: os-ken changes no neighbor in place).
IN_PLACE = frozenset({"bgp.import_prefixes", "bgp.max_prefixes", "local.properties", "local.version",
                      "remote.properties", "remote.role", "remote.router_id"})


def resets(old: m.DesiredPeering, new: m.DesiredPeering) -> bool:
    """Whether realizing ``new`` where ``old`` runs resets the BGP session or re-creates the tunnel."""
    return any(f not in IN_PLACE for f in changed_fields(old, new))


@dataclass(frozen=True)
class PeeringChange:
    site: str
    connection: str
    change: str  # added, removed, changed
    fields: tuple[str, ...] = ()
    reset: bool = False


def peering_changes(sites: Iterable[str], before: Iterable[m.Connection], after: Iterable[m.Connection],
                    endpoints_before: Mapping[m.EndpointRef, m.Endpoint],
                    endpoints_after: Mapping[m.EndpointRef, m.Endpoint]) -> list[PeeringChange]:
    """Per site, the peerings that going from ``before`` to ``after`` adds, removes or changes."""
    old_conns, new_conns = list(before), list(after)
    out = []
    for site in sorted(set(sites)):
        old = plan_site(site, [c for c in old_conns if site in (c.a.site, c.b.site)], endpoints_before)
        new = plan_site(site, [c for c in new_conns if site in (c.a.site, c.b.site)], endpoints_after)
        for name in sorted(set(old) | set(new)):
            if name not in new:
                out.append(PeeringChange(site, name, "removed", reset=True))
            elif name not in old:
                out.append(PeeringChange(site, name, "added"))
            elif old[name] != new[name]:
                out.append(PeeringChange(site, name, "changed", tuple(changed_fields(old[name], new[name])),
                                         resets(old[name], new[name])))
    return out
