"""Security groups (Neutron) made to exist in one region with exactly a spec's rules.

isthmus's groups are tagged ``isthmus-sync:<intent>``; one adopted with ``replace`` also carries
``isthmus-adopted:<intent>`` and is never deleted (only untagged).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.cloud.outcome import CONFLICT, IN_SYNC, Outcome
from isthmus.cloud.session import CloudError, SpecError, by_status, calls, http_text, region_name
from isthmus.core.sync import RuleSpec

log = logging.getLogger(__name__)

# Security groups are marked with Neutron tags (the standard-attr-tag extension, in every Neutron since Queens
# and in Debian 12's Zed the tests run), not with a marker in the description, which people edit.
# Security groups are marked with Neutron tags (the standard-attr-tag extension, in every Neutron since Queens
# and in Debian 12's Zed the tests run), not with a marker in the description, which people edit.
SYNC_TAG = "isthmus-sync:"  # + intent: a security group this sync made (or adopted)
ADOPTED_TAG = "isthmus-adopted:"  # + intent: ... that existed before and is not isthmus's to delete
MAX_TAG_LENGTH = 255  # Neutron's limit
# Neutron stores a rule on these protocols with ports 1-65535 as one without ports (neutron-lib SG_PORT_PROTO_NUMS).
PORT_PROTOCOLS = frozenset({"6", "17", "33", "132", "136"})
IP_PROTOCOLS = {  # neutron-lib's IP_PROTOCOL_MAP: the names Neutron accepts
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2, "ip": 0, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136,
    "vrrp": 112,
}


@dataclass(frozen=True)
class GroupSpec:
    """A security group and exactly its rules."""

    name: str
    description: str
    project_id: str  # "" = the connection's project
    rules: tuple[RuleSpec, ...]


class _RuleKey(NamedTuple):
    """A rule as Neutron tells rules apart (so two rules with the same key cannot both exist), plus its
    description; prefixes normalized, protocols as numbers."""

    direction: str
    ethertype: str
    protocol: str  # "" or a number
    port_min: int | None
    port_max: int | None
    prefix: str  # "" for none and for 0.0.0.0/0 and ::/0 (the same to Neutron)
    remote_group_id: str
    remote_address_group_id: str
    description: str


def _protocol_number(protocol: str | None, ethertype: str) -> str:
    """"" for any protocol, else the number as text; raises ValueError for one Neutron does not know."""
    text = (protocol or "").strip().lower()
    if not text:
        return ""
    number = IP_PROTOCOLS[text] if text in IP_PROTOCOLS else int(text)
    if not 0 <= number <= 255:
        raise ValueError(text)
    if ethertype == "IPv6" and number == 1:  # Neutron stores ICMP of an IPv6 rule as ipv6-icmp
        number = 58
    return str(number)


def _prefix(text: str | None) -> str:
    if not text:
        return ""
    net = ipaddress.ip_network(text, strict=False)
    return "" if net.prefixlen == 0 else str(net)


def _ports(protocol: str, low: int | None, high: int | None) -> tuple[int | None, int | None]:
    if protocol in PORT_PROTOCOLS and (low, high) == (1, 65535):
        return None, None
    return low, high


def _spec_rule_key(rule: RuleSpec, remote_group_id: str) -> _RuleKey:
    protocol = _protocol_number(rule.protocol, rule.ethertype)
    return _RuleKey(rule.direction, rule.ethertype, protocol,
                    *_ports(protocol, rule.port_range_min, rule.port_range_max), _prefix(rule.remote_ip_prefix),
                    remote_group_id, "", rule.description)


def _neutron_rule_key(rule: dict[str, Any]) -> _RuleKey:
    ethertype = str(rule.get("ethertype") or "")
    try:
        protocol = _protocol_number(rule.get("protocol"), ethertype)
    except ValueError:  # a name this module does not know (a later Neutron's): it matches no spec rule
        protocol = str(rule.get("protocol"))
    return _RuleKey(str(rule.get("direction") or ""), ethertype, protocol,
                    *_ports(protocol, rule.get("port_range_min"), rule.get("port_range_max")),
                    _prefix(rule.get("remote_ip_prefix")), str(rule.get("remote_group_id") or ""),
                    str(rule.get("remote_address_group_id") or ""), str(rule.get("description") or ""))


def _check_group_spec(spec: GroupSpec) -> None:
    """What Neutron would refuse or take for another rule, found before any call; raises SpecError."""
    if not spec.name:
        raise SpecError("a security group needs a name")
    seen: dict[_RuleKey, int] = {}
    for i, rule in enumerate(spec.rules, 1):
        where = f"security group {spec.name}: rule {i}"
        if rule.direction not in ("ingress", "egress"):
            raise SpecError(f"{where}: direction {rule.direction!r} is not ingress or egress")
        if rule.ethertype not in ("IPv4", "IPv6"):
            raise SpecError(f"{where}: ethertype {rule.ethertype!r} is not IPv4 or IPv6")
        try:
            _protocol_number(rule.protocol, rule.ethertype)
        except ValueError:
            raise SpecError(f"{where}: protocol {rule.protocol!r} is not a protocol name Neutron knows nor a "
                            "number 0-255") from None
        if rule.remote_ip_prefix and rule.remote_group:
            raise SpecError(f"{where}: a rule has a remote IP prefix or a remote group, not both")
        if rule.remote_ip_prefix:
            try:
                net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
            except ValueError:
                raise SpecError(f"{where}: remote_ip_prefix {rule.remote_ip_prefix!r} is not a CIDR") from None
            if f"IPv{net.version}" != rule.ethertype:
                raise SpecError(f"{where}: remote_ip_prefix {rule.remote_ip_prefix} is not {rule.ethertype}")
        # Neutron refuses a rule that differs from another one in its description only.
        key = _spec_rule_key(rule, rule.remote_group)._replace(description="")
        if key in seen:
            raise SpecError(f"{where}: the same rule as rule {seen[key]} for Neutron")
        seen[key] = i


def _sync_tag(intent: str) -> str:
    tag = f"{SYNC_TAG}{intent}"
    # A comma would split the tag in Neutron's tag filters.
    if not intent or "," in intent or len(f"{ADOPTED_TAG}{intent}") > MAX_TAG_LENGTH:
        raise SpecError(f"intent {intent!r}: must be non-empty, without commas and at most "
                        f"{MAX_TAG_LENGTH - len(ADOPTED_TAG)} characters (it becomes a Neutron tag)")
    return tag


def _age(group: Any) -> tuple[str, str]:
    return str(group.created_at or ""), str(group.id)


def _tags(group: Any) -> set[str]:
    return set(group.tags or ())


def _plural(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def ensure_security_group(conn: Connection, intent: str, spec: GroupSpec, *, replace: bool) -> Outcome:
    """Make the security group of ``intent`` exist as ``spec`` says, with exactly its rules.

    The group is the one tagged ``isthmus-sync:<intent>`` in the project. None yet: a same-named group of
    the project (not made for this intent) is a CONFLICT, or with ``replace`` is adopted (tagged, its rules
    made the spec's, created=False); without one a group is created (created=True). Then missing rules are
    created and the others deleted (the egress rules Neutron gives a new group too). A rule's remote group
    is the group of that name in the project tagged for any isthmus intent, or the group itself.

    Raises SpecError for a rule Neutron would refuse or an intent that cannot be a tag; CloudError when a
    remote group is not in this region yet (retry later), or Neutron fails or cannot be reached.
    """
    tag = _sync_tag(intent)
    adopted_tag = f"{ADOPTED_TAG}{intent}"
    _check_group_spec(spec)
    region = region_name(conn)
    net = conn.network
    done: list[str] = []
    with calls(conn, f"security group {spec.name}"):
        project = spec.project_id or conn.current_project_id or ""
        mine = sorted(net.security_groups(project_id=project, tags=tag), key=_age)
        group: Any  # openstacksdk's SecurityGroup, or the Resource set_tags returns
        if mine:
            group = mine[0]
            for extra in mine[1:]:  # a create that raced ours
                gone = _untag_or_delete(conn, extra, intent)
                done.append(f"{'removed' if gone else 'untagged'} duplicate {extra.id}")
        else:
            same_name = sorted(net.security_groups(project_id=project, name=spec.name), key=_age)
            if same_name and not replace:
                other = same_name[0]
                makers = sorted(t.removeprefix(SYNC_TAG) for t in _tags(other) if t.startswith(SYNC_TAG))
                made = f"was made for intent {', '.join(makers)}" if makers else "was not made by isthmus"
                return Outcome(CONFLICT, f"security group {spec.name} ({other.id}) of project {project} {made}; "
                                         "replace adopts it", other.id, False)
            if same_name:
                group = net.set_tags(same_name[0], sorted(_tags(same_name[0]) | {tag, adopted_tag}))
                log.info("%s: adopted security group %s (%s) for intent %s", region, spec.name, group.id, intent)
                done.append("adopted")
            else:
                group = net.create_security_group(name=spec.name, description=spec.description,
                                                  project_id=project)
                try:
                    # Untagged it would look foreign to every later call.
                    group = net.set_tags(group, [tag])
                except (os_exceptions.SDKException, ks_exceptions.ClientException):
                    net.delete_security_group(group.id, ignore_missing=True)
                    raise
                log.info("%s: created security group %s (%s) for intent %s", region, spec.name, group.id, intent)
                done.append("created")
        created = adopted_tag not in _tags(group)
        changes: dict[str, Any] = {k: v for k, v in (("name", spec.name), ("description", spec.description))
                   if (getattr(group, k) or "") != v}
        if changes:  # renamed by hand (it is found by its tag), or described anew
            net.update_security_group(group, **changes)
            done.append(f"{' and '.join(changes)} updated")
        added, removed = _sync_rules(conn, spec, group.id, project)
        if added and removed:
            done.append(f"{_plural(added, 'rule')} added, {removed} removed")
        elif added or removed:
            done.append(f"{_plural(added or removed, 'rule')} {'added' if added else 'removed'}")
    return Outcome(IN_SYNC, "; ".join(done) if done else "in sync", str(group.id), created, changed=bool(done))


def _sync_rules(conn: Connection, spec: GroupSpec, group_id: str, project: str) -> tuple[int, int]:
    """Make the group's rules exactly the spec's: (rules created, rules deleted)."""
    net = conn.network
    remote_ids = {spec.name: group_id}
    for name in sorted({r.remote_group for r in spec.rules if r.remote_group} - {spec.name}):
        synced = [g for g in net.security_groups(project_id=project, name=name)
                  if any(t.startswith(SYNC_TAG) for t in _tags(g))]
        if not synced:
            raise CloudError(f"{region_name(conn)}: security group {spec.name}: remote group {name} is not in "
                             f"{region_name(conn)} yet")
        remote_ids[name] = str(min(synced, key=_age).id)
    want = {_spec_rule_key(r, remote_ids[r.remote_group] if r.remote_group else ""): r for r in spec.rules}
    have = net.get_security_group(group_id).security_group_rules or []
    keep: set[_RuleKey] = set()
    extra = []
    for rule in have:
        key = _neutron_rule_key(rule)
        if key in want and key not in keep:
            keep.add(key)
        else:
            extra.append(rule)
    # Deletions first: a rule that differs from a wanted one in its description only blocks its create.
    for rule in extra:
        try:
            net.delete_security_group_rule(rule["id"], ignore_missing=False)
        except os_exceptions.NotFoundException:
            pass
    added = 0
    for key, rule in want.items():
        if key in keep:
            continue
        attrs: dict[str, Any] = {"security_group_id": group_id, "direction": rule.direction,
                                 "ethertype": rule.ethertype, "project_id": project}
        if rule.protocol:
            attrs["protocol"] = rule.protocol.strip().lower()
        if rule.port_range_min is not None:
            attrs["port_range_min"] = rule.port_range_min
        if rule.port_range_max is not None:
            attrs["port_range_max"] = rule.port_range_max
        if key.prefix:
            attrs["remote_ip_prefix"] = key.prefix
        if key.remote_group_id:
            attrs["remote_group_id"] = key.remote_group_id
        if rule.description:
            attrs["description"] = rule.description
        try:
            net.create_security_group_rule(**attrs)
        except os_exceptions.ConflictException:  # made meanwhile by a concurrent call: there it is
            continue
        except os_exceptions.HttpException as exc:
            raise by_status(f"{region_name(conn)}: security group {spec.name}: rule {_describe_rule(rule)}",
                            exc.status_code, http_text(exc)) from exc
        added += 1
    if added or extra:
        log.info("%s: security group %s (%s): rules added %d, removed %d", region_name(conn), spec.name, group_id,
                 added, len(extra))
    return added, len(extra)


def read_security_group(conn: Connection, name: str, project_id: str) -> tuple[str, tuple[RuleSpec, ...]] | None:
    """The description and rules of the oldest group ``name`` of project ``project_id`` ("": the connection's),
    None when there is none (the source of an intent that follows another region's group). A rule's remote group
    becomes that group's name (the group itself: ``name``); rules on a remote address group are left out (an
    address group is not synced). Raises CloudError when Neutron fails or cannot be reached."""
    net = conn.network
    with calls(conn, f"security group {name}"):
        project = project_id or conn.current_project_id or ""
        groups = sorted(net.security_groups(project_id=project, name=name), key=_age)
        if not groups:
            return None
        group = groups[0]
        names = {str(group.id): name}
        rules = []
        for rule in net.get_security_group(group.id).security_group_rules or []:
            if rule.get("remote_address_group_id"):
                continue
            remote = str(rule.get("remote_group_id") or "")
            if remote and remote not in names:
                names[remote] = str(net.get_security_group(remote).name)
            rules.append(RuleSpec(
                direction=str(rule.get("direction") or "ingress"), ethertype=str(rule.get("ethertype") or "IPv4"),
                protocol=str(rule.get("protocol") or ""), port_range_min=rule.get("port_range_min"),
                port_range_max=rule.get("port_range_max"), remote_ip_prefix=str(rule.get("remote_ip_prefix") or ""),
                remote_group=names[remote] if remote else "", description=str(rule.get("description") or "")))
    return str(group.description or ""), tuple(sorted(set(rules), key=repr))


def _describe_rule(rule: RuleSpec) -> str:
    ports = "" if rule.port_range_min is None and rule.port_range_max is None else \
        f" {rule.port_range_min}-{rule.port_range_max}"
    remote = rule.remote_ip_prefix or (f"group {rule.remote_group}" if rule.remote_group else "any")
    return f"{rule.direction} {rule.ethertype} {rule.protocol or 'any'}{ports} from/to {remote}"


def _untag_or_delete(conn: Connection, group: Any, intent: str) -> bool:
    """Delete a group of ``intent``, or only take ``intent``'s tags off when it was adopted or another
    intent has it too; whether it deleted the group."""
    tags = _tags(group)
    ours = {f"{SYNC_TAG}{intent}", f"{ADOPTED_TAG}{intent}"}
    others = {t for t in tags - ours if t.startswith(SYNC_TAG)}
    if f"{ADOPTED_TAG}{intent}" in tags or others:
        conn.network.set_tags(group, sorted(tags - ours))
        log.info("%s: security group %s (%s) is no longer intent %s's; left in place", region_name(conn), group.name,
                 group.id, intent)
        return False
    try:
        conn.network.delete_security_group(group.id, ignore_missing=False)
    except os_exceptions.NotFoundException:
        return False
    log.info("%s: deleted security group %s (%s) of intent %s", region_name(conn), group.name, group.id, intent)
    return True


def remove_security_group(conn: Connection, intent: str, name: str, project_id: str) -> bool:
    """Delete the group ``name`` of project ``project_id`` ("": the connection's) tagged for ``intent``, and only
    that one; whether it deleted one. An adopted group, or one another intent has too, only loses this intent's
    tags. Neutron deletes the rules of other groups that name it as remote group.

    Raises CloudError when Neutron refuses (409: ports still use it) or cannot be reached; SpecError for a
    4xx retrying cannot fix.
    """
    tag = _sync_tag(intent)
    with calls(conn, f"security group {name}"):
        project = project_id or conn.current_project_id or ""
        deleted = False
        for group in conn.network.security_groups(project_id=project, tags=tag):
            if group.name == name:
                deleted = _untag_or_delete(conn, group, intent) or deleted
        return deleted
