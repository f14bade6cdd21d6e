"""Keypairs, security groups and images made to exist in one OpenStack region, from a spec or from another region;
the region's project quotas, capacity and addresses as isthmus's views and global quotas see them.

The blocking openstacksdk calls of the agent's multisite sync and views (it runs them in threads). Every failure leaves
this module as one of::

    CloudError      a call failed in a way retrying may fix (HTTP 5xx, 408/409/429, refused, timeout)
     └ CopyError    an image copy failed or did not verify; the partial target image was removed
    SpecError       retrying cannot fix it (a 4xx such as a rule Neutron refuses, an unknown cloud, a bad key)

What isthmus owns, and the only things it updates or deletes:
  keypair         the caller says so (``owned``); a keypair is removed only while it still has the key isthmus gave it
  security group  tagged ``isthmus-sync:<intent>``; one adopted with ``replace`` also carries
                  ``isthmus-adopted:<intent>`` and is never deleted (only untagged)
  image           property ``isthmus_sync=<intent>`` (plus ``isthmus_source``, ``isthmus_rollout``), set in the
                  create itself, so even a copy cut short is recognised and cleaned up by the next copy
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import openstack
import openstack.config
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.drivers.neutron import _quiet_openstacksdk

log = logging.getLogger(__name__)

IN_SYNC = "IN_SYNC"
CONFLICT = "CONFLICT"

# Security groups are marked with Neutron tags (the standard-attr-tag extension, in every Neutron since Queens
# and in Debian 12's Zed the tests run), not with a marker in the description, which people edit.
SYNC_TAG = "isthmus-sync:"  # + intent: a security group this sync made (or adopted)
ADOPTED_TAG = "isthmus-adopted:"  # + intent: ... that existed before and is not isthmus's to delete
MAX_TAG_LENGTH = 255  # Neutron's limit
SYNC_PROPERTY = "isthmus_sync"
SOURCE_PROPERTY = "isthmus_source"
ROLLOUT_PROPERTY = "isthmus_rollout"
MAX_PROPERTY_LENGTH = 255  # Glance's limit for a property value

API_TIMEOUT = 60.0  # seconds one API call of a connection from open_region may take
CONNECT_TIMEOUT = 10.0  # image data streams: to connect, and for each blocked send of the upload
DATA_TIMEOUT = 300.0  # image data streams: without a byte from the other side
ACTIVE_TIMEOUT = 120.0  # an uploaded image becomes active
PAGE_SIZE = 200  # images per Glance list request

KEYPAIR_USER_MICROVERSION = (2, 10)  # Nova takes a user_id for keypairs from this microversion on

# Glance's own image attributes; everything else on an image is a custom property.
BASE_IMAGE_ATTRIBUTES = frozenset({
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum", "os_hash_algo", "os_hash_value",
    "owner", "size", "virtual_size", "container_format", "disk_format", "created_at", "updated_at", "tags",
    "direct_url", "locations", "min_ram", "min_disk", "self", "file", "schema", "stores",
})
RESERVED_PROPERTY_PREFIX = "os_glance_"  # Glance sets these itself and refuses them in a create
ISTHMUS_PROPERTIES = frozenset({SYNC_PROPERTY, SOURCE_PROPERTY, ROLLOUT_PROPERTY})
# Neutron stores a rule on these protocols with ports 1-65535 as one without ports (neutron-lib SG_PORT_PROTO_NUMS).
PORT_PROTOCOLS = frozenset({"6", "17", "33", "132", "136"})
IP_PROTOCOLS = {  # neutron-lib's IP_PROTOCOL_MAP: the names Neutron accepts
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2, "ip": 0, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136,
    "vrrp": 112,
}
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # 4xx that may pass on a later try


class CloudError(Exception):
    """A call failed in a way retrying may fix (HTTP 5xx, connection refused, timeout); the message names the
    region, the kind of resource and its name."""


class CopyError(CloudError):
    """An image copy failed or did not verify; the partial target image was removed (or, when the target
    could not be reached to remove it, the next copy of the same intent removes it)."""


class SpecError(Exception):
    """Retrying cannot fix it: the spec, the credentials or the cloud's configuration must change."""


@dataclass(frozen=True)
class Outcome:
    """What an ensure or copy found or did in one region."""

    state: str  # IN_SYNC or CONFLICT
    detail: str  # a sentence for people: "created", "in sync", why it conflicts, ...
    target_id: str  # the resource's id in this region (a keypair's name); "" when there is none
    created: bool  # isthmus created (or re-created) it: it is isthmus's to delete later


# ---------------------------------------------------------------- connections and errors


def open_region(cloud: str, region: str, config_file: str | None = None) -> Connection:
    """An openstacksdk Connection to region ``region`` of clouds.yaml entry ``cloud``.

    ``config_file``: that clouds.yaml and nothing else (no OS_* variables); None: openstacksdk's usual search
    ($OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack, /etc/openstack). Each API call may take
    API_TIMEOUT seconds. Nothing is sent yet: a wrong password, or a region the catalog lacks, is the first
    call's SpecError.

    Raises SpecError when the file or the cloud is unknown, or the region is not in the cloud's ``regions``.
    """
    _quiet_openstacksdk()
    try:
        if config_file is not None:
            if not os.path.isfile(config_file):
                raise SpecError(f"clouds.yaml {config_file}: no such file")
            config = openstack.config.OpenStackConfig(config_files=[config_file], load_envvars=False)
            return Connection(config=config.get_one(cloud=cloud, region_name=region, api_timeout=API_TIMEOUT))
        return openstack.connect(cloud=cloud, region_name=region, api_timeout=API_TIMEOUT)
    except (os_exceptions.SDKException, ks_exceptions.ClientException) as exc:
        raise SpecError(f"cloud {cloud!r} region {region!r}: {exc}") from exc


def _region(conn: Connection) -> str:
    return conn.config.region_name or "the default region"


def _text(exc: os_exceptions.HttpException) -> str:
    """The service's own message and the HTTP status."""
    text = exc.details or exc.message or str(exc)
    return f"{text} (HTTP {exc.status_code})" if exc.status_code else text


def _by_status(where: str, status: int | None, text: str) -> Exception:
    if status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS:
        return SpecError(f"{where}: {text}")
    return CloudError(f"{where}: {text}")


@contextlib.contextmanager
def _calls(conn: Connection, what: str) -> Iterator[None]:
    """openstacksdk's and keystoneauth's failures inside as CloudError or SpecError naming the region and ``what``."""
    where = f"{_region(conn)}: {what}"
    try:
        yield
    except (CloudError, SpecError):
        raise
    except os_exceptions.HttpException as exc:
        raise _by_status(where, exc.status_code, _text(exc)) from exc
    except (os_exceptions.ConfigException, os_exceptions.EndpointNotFound, ks_exceptions.CatalogException,
            ks_exceptions.AuthPluginException) as exc:
        raise SpecError(f"{where}: {exc}") from exc
    except ks_exceptions.HttpError as exc:
        raise _by_status(where, exc.http_status, str(exc)) from exc
    # NotSupported also says "the service has no supported versions" when its version discovery failed (it
    # is down). OSError: what requests raises from inside a data stream (ConnectionError, ...).
    except (os_exceptions.SDKException, ks_exceptions.ClientException, OSError) as exc:
        raise CloudError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------- keypairs (Nova)


def _key_blob(public_key: str) -> tuple[str, bytes]:
    """The type and the decoded key of an OpenSSH public key line; raises SpecError naming what is wrong."""
    parts = public_key.split()
    if len(parts) < 2:
        raise SpecError("not an OpenSSH public key line (TYPE BASE64 [COMMENT])")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise SpecError(f"public key of type {parts[0]}: the key is not base64 ({exc})") from None
    # The key starts with its type as an SSH string: a line whose two parts disagree is no key.
    size = int.from_bytes(blob[:4], "big")
    if blob[4:4 + size] != parts[0].encode():
        raise SpecError(f"public key of type {parts[0]}: the key is not one of that type")
    return parts[0], blob


def keypair_fingerprint(public_key: str) -> str:
    """Nova's fingerprint of an OpenSSH public key line: the MD5 of the key, colon-separated hex.

    Raises SpecError when ``public_key`` is not such a line.
    """
    digest = hashlib.md5(_key_blob(public_key)[1], usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _same_key(have: str, want: str) -> bool:
    """Same key type and key, whatever the comments."""
    return have.split()[:2] == want.split()[:2]


def _keypair_where(name: str, user_id: str) -> str:
    return f"keypair {name}" + (f" of user {user_id}" if user_id else "")


def _check_keypair_user(conn: Connection, user_id: str) -> None:
    """Below microversion 2.10 Nova ignores a user_id: the keypair would be made for the connection's user."""
    if not user_id:
        return
    data = conn.compute.get_endpoint_data()
    top = data.max_microversion if data is not None else None
    if top is None or tuple(top) < KEYPAIR_USER_MICROVERSION:
        raise SpecError(f"{_region(conn)}: keypairs of user {user_id}: Nova's API is at microversion "
                        f"{'.'.join(map(str, top)) if top else '2.1'}; acting for another user needs 2.10")


def _find_keypair(conn: Connection, name: str, user_id: str) -> Any:
    try:
        return conn.compute.get_keypair(name, user_id=user_id or None)
    except os_exceptions.NotFoundException:
        return None


def _create_keypair(conn: Connection, name: str, public_key: str, user_id: str) -> bool:
    """False when a keypair of that name appeared meanwhile (409)."""
    attrs: dict[str, Any] = {"name": name, "public_key": public_key}
    if user_id:
        attrs["user_id"] = user_id
    try:
        conn.compute.create_keypair(**attrs)
    except os_exceptions.ConflictException:
        return False
    log.info("%s: created %s", _region(conn), _keypair_where(name, user_id))
    return True


def ensure_keypair(conn: Connection, name: str, public_key: str, user_id: str, *, replace: bool,
                   owned: bool) -> Outcome:
    """Make keypair ``name`` of user ``user_id`` ("": the connection's user) exist with ``public_key``.

    Absent: created (created=True). Present with the same key type and key (comments aside): IN_SYNC,
    created=``owned``. Present with another key: deleted and re-created when ``owned`` (isthmus made it) or
    ``replace``, else CONFLICT naming both fingerprints and nothing is touched.

    Raises SpecError for a malformed key, a name Nova refuses, or a user_id on a Nova below microversion
    2.10; CloudError when Nova fails or cannot be reached.
    """
    want = keypair_fingerprint(public_key)  # a malformed key fails here, before any call
    what = _keypair_where(name, user_id)
    with _calls(conn, what):
        _check_keypair_user(conn, user_id)
        for _ in range(3):  # a create racing ours (409) or a delete racing our read: read again
            current = _find_keypair(conn, name, user_id)
            if current is None:
                if _create_keypair(conn, name, public_key, user_id):
                    return Outcome(IN_SYNC, "created", name, True)
                continue
            have = str(current.public_key or "")
            if _same_key(have, public_key):
                return Outcome(IN_SYNC, "already present with the same key", name, owned)
            have_fp = current.fingerprint or "unknown"
            if not (owned or replace):
                return Outcome(CONFLICT, f"keypair {name} has another key (fingerprint {have_fp}, expected {want})",
                               name, False)
            conn.compute.delete_keypair(name, ignore_missing=True, user_id=user_id or None)
            log.info("%s: deleted %s (fingerprint %s) to give it key %s", _region(conn), what, have_fp, want)
            if _create_keypair(conn, name, public_key, user_id):
                return Outcome(IN_SYNC, f"re-created with the new key (had fingerprint {have_fp})", name, True)
    raise CloudError(f"{_region(conn)}: {what}: created and deleted by someone else while isthmus made it")


def remove_keypair(conn: Connection, name: str, user_id: str, public_key: str) -> bool:
    """Delete keypair ``name`` of ``user_id`` ("": the connection's user) only if it has ``public_key`` (the
    copy isthmus made); whether it deleted one. Raises CloudError or SpecError (see ensure_keypair)."""
    what = _keypair_where(name, user_id)
    with _calls(conn, what):
        _check_keypair_user(conn, user_id)
        current = _find_keypair(conn, name, user_id)
        if current is None or not _same_key(str(current.public_key or ""), public_key):
            return False
        try:
            conn.compute.delete_keypair(name, ignore_missing=False, user_id=user_id or None)
        except os_exceptions.NotFoundException:
            return False
    log.info("%s: deleted %s", _region(conn), what)
    return True


# ---------------------------------------------------------------- security groups (Neutron)


@dataclass(frozen=True)
class RuleSpec:
    """One security group rule as the spec wants it."""

    direction: str = "ingress"  # ingress | egress
    ethertype: str = "IPv4"  # IPv4 | IPv6
    protocol: str = ""  # "" (any), a name Neutron knows ("tcp", "udp", "icmp", "icmpv6", ...) or a number
    port_range_min: int | None = None  # for icmp: the type
    port_range_max: int | None = None  # for icmp: the code
    remote_ip_prefix: str = ""  # a CIDR; "" = none
    remote_group: str = ""  # the NAME of a synced security group of the same project (or the group itself)
    description: str = ""


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
    region = _region(conn)
    net = conn.network
    done: list[str] = []
    with _calls(conn, f"security group {spec.name}"):
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
    return Outcome(IN_SYNC, "; ".join(done) if done else "in sync", str(group.id), created)


def _sync_rules(conn: Connection, spec: GroupSpec, group_id: str, project: str) -> tuple[int, int]:
    """Make the group's rules exactly the spec's: (rules created, rules deleted)."""
    net = conn.network
    remote_ids = {spec.name: group_id}
    for name in sorted({r.remote_group for r in spec.rules if r.remote_group} - {spec.name}):
        synced = [g for g in net.security_groups(project_id=project, name=name)
                  if any(t.startswith(SYNC_TAG) for t in _tags(g))]
        if not synced:
            raise CloudError(f"{_region(conn)}: security group {spec.name}: remote group {name} is not in "
                             f"{_region(conn)} yet")
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
            raise _by_status(f"{_region(conn)}: security group {spec.name}: rule {_describe_rule(rule)}",
                             exc.status_code, _text(exc)) from exc
        added += 1
    if added or extra:
        log.info("%s: security group %s (%s): rules added %d, removed %d", _region(conn), spec.name, group_id,
                 added, len(extra))
    return added, len(extra)


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
        log.info("%s: security group %s (%s) is no longer intent %s's; left in place", _region(conn), group.name,
                 group.id, intent)
        return False
    try:
        conn.network.delete_security_group(group.id, ignore_missing=False)
    except os_exceptions.NotFoundException:
        return False
    log.info("%s: deleted security group %s (%s) of intent %s", _region(conn), group.name, group.id, intent)
    return True


def remove_security_group(conn: Connection, intent: str, name: str, project_id: str) -> bool:
    """Delete the group ``name`` of project ``project_id`` ("": the connection's) tagged for ``intent``, and only
    that one; whether it deleted one. An adopted group, or one another intent has too, only loses this intent's
    tags. Neutron deletes the rules of other groups that name it as remote group.

    Raises CloudError when Neutron refuses (409: ports still use it) or cannot be reached; SpecError for a
    4xx retrying cannot fix.
    """
    tag = _sync_tag(intent)
    with _calls(conn, f"security group {name}"):
        project = project_id or conn.current_project_id or ""
        deleted = False
        for group in conn.network.security_groups(project_id=project, tags=tag):
            if group.name == name:
                deleted = _untag_or_delete(conn, group, intent) or deleted
        return deleted


# ---------------------------------------------------------------- images (Glance v2)


@dataclass(frozen=True)
class ImageInfo:
    """One image as Glance shows it."""

    id: str
    name: str
    status: str
    size: int
    checksum: str  # MD5
    hash_algo: str  # of hash_value (Glance's os_hash_algo, sha512 by default)
    hash_value: str
    disk_format: str
    container_format: str
    visibility: str
    owner: str
    tags: tuple[str, ...]
    properties: dict[str, str]  # the custom (non-base) properties, as strings


def _image_info(body: dict[str, Any]) -> ImageInfo:
    def text(key: str) -> str:
        return str(body.get(key) or "")

    return ImageInfo(
        id=text("id"), name=text("name"), status=text("status"), size=int(body.get("size") or 0),
        checksum=text("checksum"), hash_algo=text("os_hash_algo"), hash_value=text("os_hash_value"),
        disk_format=text("disk_format"), container_format=text("container_format"), visibility=text("visibility"),
        owner=text("owner"), tags=tuple(sorted(body.get("tags") or ())),
        properties={k: v if isinstance(v, str) else json.dumps(v)
                    for k, v in body.items() if k not in BASE_IMAGE_ATTRIBUTES},
    )


def _glance(conn: Connection, method: str, path: str, **kwargs: Any) -> Any:
    """One Glance request (``path`` below /v2); its response, HTTP errors raised as openstacksdk's."""
    resp = conn.image.request(path, method, **kwargs)
    os_exceptions.raise_from_response(resp)
    return resp


def _image_bodies(conn: Connection, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Every image matching ``params``, page by page."""
    marker = ""
    while True:
        page = _glance(conn, "GET", "/images", params={**params, "limit": str(PAGE_SIZE),
                                                        **({"marker": marker} if marker else {})}).json()
        images = page.get("images") or []
        yield from images
        following = urllib.parse.parse_qs(urllib.parse.urlsplit(page.get("next") or "").query).get("marker")
        if not images or not following or following[0] == marker:
            return
        marker = following[0]


def _images_named(conn: Connection, name: str) -> list[ImageInfo]:
    # Glance reads a name filter starting with "in:" as a list of names.
    params = {} if name.startswith("in:") else {"name": name}
    return [_image_info(b) for b in _image_bodies(conn, params) if b.get("name") == name]


def _image_body(conn: Connection, image_id: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = _glance(conn, "GET", f"/images/{urllib.parse.quote(image_id)}").json()
    except os_exceptions.NotFoundException:
        return None
    return body


def list_images(conn: Connection) -> list[ImageInfo]:
    """Every image the connection sees (all pages). Raises CloudError or SpecError."""
    with _calls(conn, "images"):
        return [_image_info(b) for b in _image_bodies(conn, {})]


def get_image(conn: Connection, image_id: str) -> ImageInfo | None:
    """Image ``image_id``, None when the connection does not see it. Raises CloudError or SpecError."""
    with _calls(conn, f"image {image_id}"):
        body = _image_body(conn, image_id)
    return _image_info(body) if body is not None else None


def _delete_image(conn: Connection, image_id: str) -> bool:
    try:
        _glance(conn, "DELETE", f"/images/{image_id}")
    except os_exceptions.NotFoundException:
        return False
    return True


def _verifies(image: ImageInfo, source: ImageInfo) -> bool:
    """Active with the source's data: size and MD5, and the multihash where both use the same algorithm."""
    return (image.status == "active" and image.size == source.size and image.checksum == source.checksum
            and (image.hash_algo != source.hash_algo or image.hash_value == source.hash_value))


def _differs(image: ImageInfo, source: ImageInfo) -> str:
    if image.status != "active":
        return f"it is {image.status}"
    return f"checksum {image.checksum or 'none'} and size {image.size}, the source's {source.checksum} and " \
           f"{source.size}"


def copy_image(source: Connection, target: Connection, image_id: str, intent: str, *, rollout: str = "",
               replace: bool = False, progress: Callable[[int, int], None] | None = None,
               chunk_size: int = 1 << 20) -> Outcome:
    """Make image ``image_id`` of ``source``'s region exist, by name and data, in ``target``'s region.

    In the target, of the images of the same name: one of ours (property isthmus_sync == ``intent``, whatever
    its rollout) that is active with the source's size, checksum and hash: IN_SYNC, created=True, nothing
    copied (it keeps the rollout that made it). Ours that are not (queued, saving, killed, other data) are
    deleted first: a new rollout's copy replaces the previous one's. Another one with the source's data:
    IN_SYNC, created=False. Another one with other data: CONFLICT; with ``replace`` it is deleted if isthmus
    made it (for another intent), never otherwise.

    Else the image is copied: a new image with the source's name, formats, visibility, min_disk, min_ram, tags
    and custom properties, plus isthmus_sync, isthmus_source (``<region>/<id>``) and isthmus_rollout (when
    given); its data streamed from the source in ``chunk_size`` pieces, never held whole, MD5 and the
    source's hash algorithm computed on the way; ``progress(done_bytes, total_bytes)`` after each piece (an
    exception from it stops the copy). The new image must become active with the size, checksum and hash of
    the source and of what was streamed.

    Raises CopyError when the upload or its verification fails (the new image is deleted); CloudError when
    the source image is not active or a region fails or cannot be reached before the copy; SpecError when the
    source image does not exist or has no name, or a region refuses in a way retrying cannot fix.
    """
    if chunk_size <= 0:
        raise SpecError(f"chunk_size {chunk_size}: must be positive")
    for key, value in ((SYNC_PROPERTY, intent), (ROLLOUT_PROPERTY, rollout)):
        if len(value) > MAX_PROPERTY_LENGTH or (key == SYNC_PROPERTY and not value):
            raise SpecError(f"{key} {value!r}: must be 1 to {MAX_PROPERTY_LENGTH} characters (an image property)")
    from_region, to_region = _region(source), _region(target)
    with _calls(source, f"image {image_id}"):
        body = _image_body(source, image_id)
    if body is None:
        raise SpecError(f"{from_region}: image {image_id} does not exist")
    src = _image_info(body)
    if src.status != "active":
        raise CloudError(f"{from_region}: image {src.name} ({src.id}) is {src.status}, not active")
    if not src.name:
        raise SpecError(f"{from_region}: image {src.id} has no name (images are copied by name)")
    notes: list[str] = []
    with _calls(target, f"image {src.name}"):
        same_name = _images_named(target, src.name)
        ours = [i for i in same_name if i.properties.get(SYNC_PROPERTY) == intent]
        for image in ours:
            if _verifies(image, src):
                return Outcome(IN_SYNC, f"already copied ({image.id})", image.id, True)
        for image in ours:
            if _delete_image(target, image.id):
                log.info("%s: deleted image %s (%s) of intent %s: %s", to_region, src.name, image.id, intent,
                         _differs(image, src))
                notes.append(f"deleted an earlier copy ({image.id}: {_differs(image, src)})")
        others = [i for i in same_name if i.properties.get(SYNC_PROPERTY) != intent]
        for image in others:
            if _verifies(image, src):
                return Outcome(IN_SYNC, f"already present, not isthmus's ({image.id})", image.id, False)
        for image in others:
            maker = image.properties.get(SYNC_PROPERTY, "")
            if not (replace and maker):
                made = f"made by isthmus for intent {maker}" if maker else "not made by isthmus"
                hint = "; replace deletes it" if maker else "; isthmus never deletes it"
                return Outcome(CONFLICT, f"image {src.name} ({image.id}) in {to_region} has other data "
                                         f"({_differs(image, src)}), {made}{hint}", image.id, False)
        for image in others:
            if _delete_image(target, image.id):
                maker = image.properties.get(SYNC_PROPERTY, "")
                log.info("%s: deleted image %s (%s) of intent %s to replace it", to_region, src.name, image.id,
                         maker)
                notes.append(f"replaced {image.id} of intent {maker}")
    return _copy(source, target, src, body, intent, rollout, progress, chunk_size, notes)


class _Transfer:
    """The source image's data on its way to the target: counted and hashed as it passes."""

    def __init__(self, chunks: Iterator[bytes], total: int, hash_algo: str,
                 progress: Callable[[int, int], None] | None) -> None:
        self._chunks = chunks
        self.total = total
        self.progress = progress
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.hasher: Any = None
        with contextlib.suppress(ValueError):  # an algorithm hashlib lacks: the target's own hash still counts
            self.hasher = hashlib.new(hash_algo) if hash_algo else None
        self.done = 0
        self.source_error: BaseException | None = None

    def body(self) -> Iterator[bytes]:
        """The upload's body. It raises when the source fails (never just ends): Glance must see a broken
        upload, not a complete short image."""
        while True:
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:
                self.source_error = exc
                raise
            if chunk is None:
                return
            if not chunk:
                continue
            self.done += len(chunk)
            if self.done > self.total:
                self.source_error = CopyError(f"the source sent more than its {self.total} bytes")
                raise self.source_error
            self.md5.update(chunk)
            if self.hasher is not None:
                self.hasher.update(chunk)
            if self.progress is not None:
                self.progress(self.done, self.total)
            yield chunk


def _copy(source: Connection, target: Connection, src: ImageInfo, body: dict[str, Any], intent: str,
          rollout: str, progress: Callable[[int, int], None] | None, chunk_size: int, notes: list[str]) -> Outcome:
    from_region, to_region = _region(source), _region(target)
    properties = {k: v for k, v in src.properties.items()
                  if k not in ISTHMUS_PROPERTIES and not k.startswith(RESERVED_PROPERTY_PREFIX)}
    properties[SYNC_PROPERTY] = intent
    properties[SOURCE_PROPERTY] = f"{from_region}/{src.id}"
    if rollout:
        properties[ROLLOUT_PROPERTY] = rollout
    record: dict[str, Any] = {
        **properties, "name": src.name, "disk_format": src.disk_format, "container_format": src.container_format,
        "visibility": src.visibility, "min_disk": int(body.get("min_disk") or 0),
        "min_ram": int(body.get("min_ram") or 0), "tags": list(src.tags),
    }
    timeout = (CONNECT_TIMEOUT, DATA_TIMEOUT)
    with _calls(source, f"image {src.name} ({src.id})"):
        download = _glance(source, "GET", f"/images/{src.id}/file", stream=True, timeout=timeout)
    try:
        with _calls(target, f"image {src.name}"):
            try:
                new_id = str(_glance(target, "POST", "/images", json=record).json()["id"])
            except os_exceptions.ForbiddenException:
                # Publishing needs the target's publicize_image / communitize_image policy (admin by default).
                if record["visibility"] not in ("public", "community"):
                    raise
                notes.append(f"visibility shared: {to_region} refused {record['visibility']}")
                record["visibility"] = "shared"
                new_id = str(_glance(target, "POST", "/images", json=record).json()["id"])
        log.info("%s: copying image %s (%s) of %s into %s (%d bytes)", to_region, src.name, src.id, from_region,
                 new_id, src.size)
        started = time.monotonic()
        transfer = _Transfer(download.iter_content(chunk_size), src.size, src.hash_algo, progress)
        uploaded = False
        try:
            _glance(target, "PUT", f"/images/{new_id}/file", data=transfer.body(),
                    headers={"Content-Type": "application/octet-stream"}, connect_retries=0, timeout=timeout)
            uploaded = True
            final = _wait_active(target, new_id)
            problems = _mismatches(src, transfer, final)
            if problems:
                raise CopyError("; ".join(problems))
        except BaseException as exc:
            cleanup = _discard(target, new_id)
            if not isinstance(exc, Exception):
                raise
            if transfer.source_error is not None:
                cause = f"reading the source failed after {transfer.done} of {src.size} bytes: " \
                        f"{_describe_error(transfer.source_error)}"
            elif isinstance(exc, CopyError):
                cause = str(exc)
            elif uploaded:
                cause = f"checking the copy failed: {_describe_error(exc)}"
            else:
                cause = f"the upload failed after {transfer.done} of {src.size} bytes: {_describe_error(exc)}"
            raise CopyError(f"{to_region}: copying image {src.name} ({src.id}) from {from_region}: {cause}; "
                            f"{cleanup}") from exc
    finally:
        download.close()
    took = time.monotonic() - started
    log.info("%s: copied image %s (%s) of %s into %s: %d bytes in %.1f s", to_region, src.name, src.id, from_region,
             new_id, src.size, took)
    return Outcome(IN_SYNC, "; ".join([*notes, f"copied {src.size} bytes in {took:.1f} s"]), new_id, True)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, os_exceptions.HttpException):
        return _text(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _wait_active(conn: Connection, image_id: str) -> ImageInfo:
    """The image once active; raises CopyError when it ends in another state or the deadline passes."""
    deadline = time.monotonic() + ACTIVE_TIMEOUT
    delay = 0.1
    while True:
        body = _image_body(conn, image_id)
        if body is None:
            raise CopyError("the new image disappeared after the upload")
        image = _image_info(body)
        if image.status == "active":
            return image
        if image.status not in ("saving", "uploading", "importing"):
            raise CopyError(f"the new image is {image.status} after the upload")
        if time.monotonic() + delay > deadline:
            raise CopyError(f"the new image is still {image.status} {ACTIVE_TIMEOUT:.0f} s after the upload")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _mismatches(src: ImageInfo, transfer: _Transfer, final: ImageInfo) -> list[str]:
    """How the copy differs from the source, and from what was streamed (empty when it verifies)."""
    problems = []
    if transfer.done != src.size:
        problems.append(f"{transfer.done} bytes streamed, the source has {src.size}")
    if src.checksum and transfer.md5.hexdigest() != src.checksum:
        problems.append(f"the streamed data's MD5 {transfer.md5.hexdigest()} is not the source's {src.checksum}")
    if transfer.hasher is not None and src.hash_value and transfer.hasher.hexdigest() != src.hash_value:
        problems.append(f"the streamed data's {src.hash_algo} is not the source's")
    if final.size != src.size:
        problems.append(f"the copy has {final.size} bytes, the source {src.size}")
    if final.checksum != src.checksum:
        problems.append(f"the copy's checksum {final.checksum} is not the source's {src.checksum}")
    if final.hash_algo == src.hash_algo and final.hash_value != src.hash_value:
        problems.append(f"the copy's {src.hash_algo} is not the source's")
    return problems


def _discard(conn: Connection, image_id: str) -> str:
    """Delete a copy that failed; says how that went."""
    region = _region(conn)
    try:
        with _calls(conn, f"image {image_id}"):
            _delete_image(conn, image_id)
    except (CloudError, SpecError) as exc:
        log.warning("%s: cannot delete the partial image %s: %s", region, image_id, exc)
        return f"the partial image {image_id} could not be deleted ({exc}); the next copy of this intent deletes it"
    log.info("%s: deleted the partial image %s", region, image_id)
    return f"the partial image {image_id} was deleted"


def remove_image(conn: Connection, intent: str, name: str, rollout: str = "") -> int:
    """Delete the images named ``name`` whose property isthmus_sync is ``intent`` (and isthmus_rollout is
    ``rollout``, when given); how many. Never touches another image. Raises CloudError or SpecError."""
    count = 0
    with _calls(conn, f"image {name}"):
        for image in _images_named(conn, name):
            if image.properties.get(SYNC_PROPERTY) != intent:
                continue
            if rollout and image.properties.get(ROLLOUT_PROPERTY, "") != rollout:
                continue
            if _delete_image(conn, image.id):
                log.info("%s: deleted image %s (%s) of intent %s", _region(conn), name, image.id, intent)
                count += 1
    return count


# ---------------------------------------------------------------- quotas, capacity and addresses (views)

NOVA_QUOTA_RESOURCES = ("instances", "cores", "ram", "key_pairs", "server_groups")
NEUTRON_QUOTA_RESOURCES = ("networks", "subnets", "ports", "floatingips", "security_groups", "security_group_rules",
                           "routers")
NETWORK_OBJECTS = ("networks", "subnets", "ports", "routers", "floatingips", "security_groups")  # capacity counts
NEUTRON_PAGE_SIZE = 1000  # items per Neutron list request
# No microversion header means 2.1 too; said anyway because os-hypervisors/detail loses vcpus, memory_mb, ... at 2.88.
NOVA_MICROVERSION = "2.1"

# Neutron's quota API names resources in the singular (and counts routers and floating IPs only with its L3 plugin).
_NEUTRON_QUOTA_NAMES = {"networks": "network", "subnets": "subnet", "ports": "port", "floatingips": "floatingip",
                        "security_groups": "security_group", "security_group_rules": "security_group_rule",
                        "routers": "router"}
# Nova's quota-set detail says 0 in use for key pairs whatever exists: they belong to users, and Nova counts them
# only when one is created (nova/quota.py, DbQuotaDriver._get_usages).
_NOVA_UNCOUNTED = frozenset({"key_pairs"})
_L3_COLLECTIONS = frozenset({"routers", "floatingips"})  # absent (404) from a Neutron without its L3 plugin
_PORT_FIELDS = ("project_id", "network_id", "fixed_ips", "mac_address", "device_owner", "device_id", "name")
_FLOATING_IP_FIELDS = ("project_id", "floating_network_id", "floating_ip_address", "port_id")
_ROUTER_FIELDS = ("project_id", "external_gateway_info", "name")
_SUBNET_FIELDS = ("project_id", "network_id", "cidr", "name")


def _request(conn: Connection, service: str, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the region's ``service`` (compute, network, placement); its JSON body ({} when empty),
    HTTP errors raised as openstacksdk's."""
    resp = getattr(conn, service).request(path, method, **kwargs)
    os_exceptions.raise_from_response(resp)
    return resp.json() if resp.content else {}


def _has(conn: Connection, service_type: str) -> bool:
    """The region's catalog (or the connection's configuration) has ``service_type``."""
    return bool(conn.endpoint_for(service_type))


def _project_path(project_id: str) -> str:
    if not project_id or not isinstance(project_id, str):
        raise SpecError(f"project id {project_id!r}: must be a non-empty string")
    return urllib.parse.quote(project_id, safe="")


def _field(item: Mapping[str, Any], key: str) -> str:
    return str(item.get(key) or "")


def _neutron_items(conn: Connection, collection: str, fields: Sequence[str], page_size: int, *,
                   optional: bool = False) -> Iterator[dict[str, Any]]:
    """Every item of Neutron's ``collection`` the connection sees (an admin sees every project's), ``id`` and
    ``fields`` of each only, ``page_size`` at a time in id order.

    ``optional``: a collection this Neutron lacks (404 on the first page: routers and floating IPs without the
    L3 plugin) has no items. Neutron answers 404 when a page's marker was deleted since the page before (busy
    clouds, long listings): the listing goes on from an earlier item of that page, skipping what it gave already.
    """
    if page_size <= 0:
        raise SpecError(f"page size {page_size}: must be positive")
    path = "/" + collection.replace("_", "-")
    query = [("fields", f) for f in ("id", *fields)] + [("sort_key", "id"), ("sort_dir", "asc"),
                                                         ("limit", str(page_size))]
    markers: list[str] = []  # the previous page's ids: any of them continues the listing
    last = ""  # the greatest id given so far
    first = True
    while True:
        marker = [("marker", markers[-1])] if markers else []
        try:
            page = _request(conn, "network", "GET", f"{path}?{urllib.parse.urlencode(query + marker)}")
        except os_exceptions.NotFoundException:
            if first:
                if optional:
                    return
                raise
            markers.pop()
            if not markers:
                raise CloudError(f"{_region(conn)}: listing {collection}: every item of a page was deleted "
                                 "while the listing went on") from None
            continue
        first = False
        items = page.get(collection) or []
        fresh = [item for item in items if _field(item, "id") > last]
        yield from fresh
        if fresh:
            last = _field(fresh[-1], "id")
        ids = [_field(item, "id") for item in items]
        if not items or not any(link.get("rel") == "next" for link in page.get(f"{collection}_links") or ()):
            return
        if ids == markers:
            raise CloudError(f"{_region(conn)}: listing {collection}: Neutron answers the same page again")
        markers = ids


def project_usage(conn: Connection, project_id: str, resources: Iterable[str]) -> dict[str, tuple[int, int]]:
    """What project ``project_id`` uses in this region, and its limits: resource -> (in use, limit), -1 unlimited.

    ``resources``: names of NOVA_QUOTA_RESOURCES (Nova's quota sets with usage, os-quota-sets/{project}/detail)
    and NEUTRON_QUOTA_RESOURCES (Neutron's quotas/{project}/details, the quota_details extension). In use is
    what the service counts plus what it has reserved (being created right now). Left out, without an error:
    unknown names; resources of a service the region's catalog lacks; resources the service does not count:
    Nova's key_pairs (its quota-set detail always says 0 in use: key pairs belong to users), Neutron's routers
    and floatingips without its L3 plugin, all Neutron resources without quota_details.

    Nova counts instances, cores and ram from its cells' databases, not from compute nodes: a region without
    compute nodes (or cells beyond cell0) says 0 in use, correctly, with the limits it enforces.

    Raises SpecError for a project Nova does not know (Nova checks ids with Keystone, HTTP 400; Neutron takes
    any id and gives the default limits) or credentials that are refused; CloudError when a service fails or
    cannot be reached.
    """
    wanted = set(resources)
    nova = [r for r in NOVA_QUOTA_RESOURCES if r in wanted and r not in _NOVA_UNCOUNTED]
    neutron = [r for r in NEUTRON_QUOTA_RESOURCES if r in wanted]
    path = _project_path(project_id)
    usage: dict[str, tuple[int, int]] = {}
    with _calls(conn, f"quota usage of project {project_id}"):
        if nova and _has(conn, "compute"):
            quota_set = _request(conn, "compute", "GET", f"/os-quota-sets/{path}/detail",
                                 microversion=NOVA_MICROVERSION).get("quota_set") or {}
            for name in nova:
                entry = quota_set.get(name)
                if isinstance(entry, dict) and "limit" in entry:
                    usage[name] = (int(entry.get("in_use") or 0) + int(entry.get("reserved") or 0),
                                   int(entry["limit"]))
        if neutron and _has(conn, "network"):
            try:
                quota = _request(conn, "network", "GET", f"/quotas/{path}/details").get("quota") or {}
            except os_exceptions.NotFoundException:  # no quota_details: a quota driver that does not count
                quota = {}
            for name in neutron:
                entry = quota.get(_NEUTRON_QUOTA_NAMES[name])
                if isinstance(entry, dict) and "limit" in entry:
                    usage[name] = (int(entry.get("used") or 0) + int(entry.get("reserved") or 0),
                                   int(entry["limit"]))
    return usage


def _check_limits(limits: Mapping[str, int]) -> None:
    known = (*NOVA_QUOTA_RESOURCES, *NEUTRON_QUOTA_RESOURCES)
    for name, value in limits.items():
        if name not in known:
            raise SpecError(f"quota resource {name!r}: not one of {', '.join(known)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise SpecError(f"quota limit {name}={value!r}: must be an integer >= -1 (-1: unlimited)")


def set_project_limits(conn: Connection, project_id: str, limits: Mapping[str, int]) -> dict[str, int]:
    """Give project ``project_id`` these quota limits in this region (-1: unlimited); what changed, name -> limit.

    Each service (NOVA_QUOTA_RESOURCES to Nova, NEUTRON_QUOTA_RESOURCES to Neutron) is read first and written
    only with the limits that differ, in one request: limits already in force cost one read and no write.
    Skipped (and not in the answer): resources of a service the catalog lacks, and resources the service has
    no quota for (Neutron's routers and floatingips without its L3 plugin).

    A limit below what is in use is set, and the region then refuses new resources of that kind (isthmus
    cuts a region's limit when a global hard limit is lowered). Neutron takes such a limit as it is (it checks
    only when asked to, with ``check_limit`` of its quota-check-limit extension) and refuses the next create
    with 409 "Quota exceeded". Nova refuses it (400 "must be greater than or equal to already used and
    reserved") unless the update says ``force``, which this one always does; Nova then refuses the next
    create with 403 "Quota exceeded". ``key_pairs`` is a per-user limit: the project's value applies to each
    of its users.

    Raises SpecError for an unknown resource name, a limit that is not an integer >= -1, or a project Nova
    does not know; CloudError when a service fails or cannot be reached (what was written before stays: a
    second call completes it).
    """
    _check_limits(limits)
    path = _project_path(project_id)
    changed: dict[str, int] = {}
    with _calls(conn, f"quota limits of project {project_id}"):
        nova = {k: v for k, v in limits.items() if k in NOVA_QUOTA_RESOURCES}
        if nova and _has(conn, "compute"):
            current = _request(conn, "compute", "GET", f"/os-quota-sets/{path}",
                               microversion=NOVA_MICROVERSION).get("quota_set") or {}
            diff = {k: v for k, v in nova.items() if k in current and int(current[k]) != v}
            if diff:
                _request(conn, "compute", "PUT", f"/os-quota-sets/{path}", json={"quota_set": {**diff, "force": True}},
                         microversion=NOVA_MICROVERSION)
                changed.update(diff)
        neutron = {k: v for k, v in limits.items() if k in NEUTRON_QUOTA_RESOURCES}
        if neutron and _has(conn, "network"):
            current = _request(conn, "network", "GET", f"/quotas/{path}").get("quota") or {}
            diff = {k: v for k, v in neutron.items()
                    if _NEUTRON_QUOTA_NAMES[k] in current and int(current[_NEUTRON_QUOTA_NAMES[k]]) != v}
            if diff:
                _request(conn, "network", "PUT", f"/quotas/{path}",
                         json={"quota": {_NEUTRON_QUOTA_NAMES[k]: v for k, v in diff.items()}})
                changed.update(diff)
    if changed:
        log.info("%s: quota limits of project %s set: %s", _region(conn), project_id,
                 ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return changed


def _hypervisor_capacity(conn: Connection) -> dict[str, Any] | None:
    """Nova's hypervisors summed, as os-hypervisors/statistics did; None when there are none (or Nova refuses:
    the policy is admin only)."""
    try:
        hypervisors = _request(conn, "compute", "GET", "/os-hypervisors/detail",
                               microversion=NOVA_MICROVERSION).get("hypervisors") or []
    except os_exceptions.ForbiddenException:
        return None
    if not hypervisors:
        return None

    def total(key: str) -> int:
        return sum(int(h.get(key) or 0) for h in hypervisors)

    return {"source": "hypervisors", "vcpus": total("vcpus"), "vcpus_used": total("vcpus_used"),
            "ram_mb": total("memory_mb"), "ram_mb_used": total("memory_mb_used"), "instances": total("running_vms")}


def _placement_capacity(conn: Connection) -> dict[str, Any] | None:
    """Placement's VCPU and MEMORY_MB inventories and allocations summed; None when no resource provider has
    them (or Placement refuses: admin only)."""
    try:
        providers = _request(conn, "placement", "GET", "/resource_providers").get("resource_providers") or []
    except os_exceptions.ForbiddenException:
        return None
    totals = dict.fromkeys(("vcpus", "vcpus_used", "ram_mb", "ram_mb_used"), 0)
    consumers: set[str] = set()
    known = False
    for provider in providers:
        uuid = urllib.parse.quote(_field(provider, "uuid"), safe="")
        inventories = _request(conn, "placement", "GET", f"/resource_providers/{uuid}/inventories") \
            .get("inventories") or {}
        if "VCPU" not in inventories and "MEMORY_MB" not in inventories:
            continue  # not a compute node (a sharing storage pool, a nested device, ...)
        known = True
        totals["vcpus"] += int((inventories.get("VCPU") or {}).get("total") or 0)
        totals["ram_mb"] += int((inventories.get("MEMORY_MB") or {}).get("total") or 0)
        allocations = _request(conn, "placement", "GET", f"/resource_providers/{uuid}/allocations") \
            .get("allocations") or {}
        for consumer, allocation in allocations.items():
            resources = allocation.get("resources") or {}
            totals["vcpus_used"] += int(resources.get("VCPU") or 0)
            totals["ram_mb_used"] += int(resources.get("MEMORY_MB") or 0)
            if resources.get("VCPU") or resources.get("MEMORY_MB"):
                consumers.add(consumer)
    if not known:
        return None
    return {"source": "placement", **totals, "instances": len(consumers)}


def capacity(conn: Connection, *, page_size: int = NEUTRON_PAGE_SIZE) -> dict[str, Any]:
    """The region's compute capacity and use, and how many network objects it holds (every project's).

    ``{"compute_known": bool, "source": "hypervisors" | "placement" | "unknown", "vcpus": n, "vcpus_used": n,
    "ram_mb": n, "ram_mb_used": n, "instances": n, "network_objects": {"networks": n, "subnets": n, "ports": n,
    "routers": n, "floatingips": n, "security_groups": n}}``.

    Compute: Nova's hypervisors summed (os-hypervisors/detail) when it has any; else Placement's compute
    resource providers when the catalog has Placement (vcpus and ram_mb: the inventories' totals, overcommit
    not applied, so used may exceed them as with hypervisors; instances: the consumers holding VCPU or
    MEMORY_MB, a migration in progress included); else compute_known False, source "unknown" and zeros (a
    Nova without compute nodes lists no hypervisors). A 403 (not admin) counts as not knowing.

    Network objects are counted by listing ids only (``fields=id``), ``page_size`` per request; a collection
    this Neutron lacks (routers and floating IPs without its L3 plugin) and a region without Neutron count 0.

    Raises CloudError when a service fails or cannot be reached; SpecError when the credentials are refused.
    """
    result: dict[str, Any] = {"compute_known": False, "source": "unknown", "vcpus": 0, "vcpus_used": 0,
                              "ram_mb": 0, "ram_mb_used": 0, "instances": 0}
    counts = dict.fromkeys(NETWORK_OBJECTS, 0)
    with _calls(conn, "capacity"):
        compute = _hypervisor_capacity(conn) if _has(conn, "compute") else None
        if compute is None and _has(conn, "placement"):
            compute = _placement_capacity(conn)
        if compute is not None:
            result.update(compute, compute_known=True)
        if _has(conn, "network"):
            for name in NETWORK_OBJECTS:
                counts[name] = sum(1 for _ in _neutron_items(conn, name, (), page_size,
                                                             optional=name in _L3_COLLECTIONS))
    result["network_objects"] = counts
    return result


def _address(kind: str, item: Mapping[str, Any], network: str, *, ips: Iterable[Any] = (), mac: str = "",
             cidr: str = "", device: str = "", name: str = "") -> dict[str, Any]:
    """One record of list_addresses: ``item``'s id and project, and the rest as given."""
    return {"kind": kind, "id": _field(item, "id"), "project": _field(item, "project_id"),
            "network": network, "ips": [str(ip) for ip in ips if ip], "mac": mac.lower(), "cidr": cidr,
            "device": device, "name": name}


def list_addresses(conn: Connection, *, page_size: int = NEUTRON_PAGE_SIZE) -> list[dict[str, Any]]:
    """Every port, floating IP, router gateway and subnet of the region (every project's, for an admin), as
    records coordinator/addresses.py ``check_record`` takes once given a region.

    Each record has kind ("port" | "floating_ip" | "router_gateway" | "subnet"), id, project, network, ips,
    mac, cidr, device and name ("" or [] where they do not apply):
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
    with _calls(conn, "addresses"):
        if not _has(conn, "network"):
            return records
        for port in _neutron_items(conn, "ports", _PORT_FIELDS, page_size):
            records.append(_address("port", port, _field(port, "network_id"),
                                    ips=(f.get("ip_address") for f in port.get("fixed_ips") or ()),
                                    mac=_field(port, "mac_address"),
                                    device=_field(port, "device_owner") or _field(port, "device_id"),
                                    name=_field(port, "name")))
        for fip in _neutron_items(conn, "floatingips", _FLOATING_IP_FIELDS, page_size, optional=True):
            records.append(_address("floating_ip", fip, _field(fip, "floating_network_id"),
                                    ips=[_field(fip, "floating_ip_address")], device=_field(fip, "port_id")))
        for router in _neutron_items(conn, "routers", _ROUTER_FIELDS, page_size, optional=True):
            gateway = router.get("external_gateway_info") or {}
            if not gateway.get("network_id"):
                continue
            records.append(_address("router_gateway", router, _field(gateway, "network_id"),
                                    ips=(f.get("ip_address") for f in gateway.get("external_fixed_ips") or ()),
                                    name=_field(router, "name")))
        for subnet in _neutron_items(conn, "subnets", _SUBNET_FIELDS, page_size):
            records.append(_address("subnet", subnet, _field(subnet, "network_id"), cidr=_field(subnet, "cidr"),
                                    name=_field(subnet, "name")))
    return records
