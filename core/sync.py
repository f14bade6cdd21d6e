"""The multisite sync model: intents (what exists in which regions), tasks, statuses, with validation.

An intent says "this keypair / security group / image exists in these regions".
The coordinator turns intents into per-region tasks; each region's agent does
them against its own OpenStack and reports a status per resource and region.
It holds no protobuf: ``isthmus.core.wire.sync`` converts at the edge, through the
field-for-field JSON form that etcd also stores.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument


class Kind(enum.StrEnum):
    KEYPAIR = "keypair"
    SECURITY_GROUP = "security-group"
    IMAGE = "image"


class ImageMode(enum.StrEnum):
    NONE = "none"
    AUTO = "auto"
    LAZY = "lazy"
    CONTROLLED = "controlled"


class State(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    IN_SYNC = "IN_SYNC"
    CONFLICT = "CONFLICT"
    FAILED = "FAILED"
    NONE = "NONE"          # image mode none: nothing is copied, on purpose
    HELD = "HELD"          # controlled rollout: the region's wave has not started (or the rollout stopped)
    REMOVED = "REMOVED"    # rolled back: the copy this rollout made was removed
    SOURCE_GONE = "SOURCE_GONE"  # the original was deleted in the source region: the copy went with it
    SKIPPED = "SKIPPED"    # controlled rollout: the operator told it to stop waiting for this region


class Action(enum.StrEnum):
    ENSURE = "ENSURE"
    REMOVE = "REMOVE"
    HOLD = "HOLD"


class RolloutState(enum.StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DONE = "DONE"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"


SSH_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
PROTOCOLS = ("", "tcp", "udp", "icmp", "icmpv6", "sctp", "gre", "esp", "ah", "ipv6-icmp")
VISIBILITIES = ("", "public", "private", "shared", "community")
MAX_RESOURCE_NAME = 255


@dataclass(frozen=True)
class KeypairSpec:
    name: str
    public_key: str
    user_id: str = ""
    replace: bool = False
    source_region: str = ""  # a site: follow its keypair (source_name, "" = name) instead of public_key
    source_name: str = ""


@dataclass(frozen=True)
class RuleSpec:
    """One security group rule as the spec wants it."""

    direction: str = "ingress"  # ingress | egress
    ethertype: str = "IPv4"  # IPv4 | IPv6
    protocol: str = ""  # "" (any), a protocol name ("tcp", "udp", "icmp", "icmpv6", ...) or a number
    port_range_min: int | None = None  # for icmp: the type
    port_range_max: int | None = None  # for icmp: the code
    remote_ip_prefix: str = ""  # a CIDR; "" = none
    remote_group: str = ""  # the NAME of a synced security group of the same project (or the group itself)
    description: str = ""


@dataclass(frozen=True)
class SecurityGroupSpec:
    name: str
    description: str = ""
    project_id: str = ""
    rules: tuple[RuleSpec, ...] = ()
    replace: bool = False
    source_region: str = ""  # a site: follow its group (source_name, "" = name) instead of rules
    source_name: str = ""


@dataclass(frozen=True)
class ImageSelector:
    names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    visibility: str = ""


@dataclass(frozen=True)
class Wave:
    name: str
    regions: tuple[str, ...]


@dataclass(frozen=True)
class ImageSpec:
    mode: ImageMode
    source_region: str = ""
    selector: ImageSelector = field(default_factory=ImageSelector)
    waves: tuple[Wave, ...] = ()
    rollback_on_failure: bool = False
    replace: bool = False
    pause_between_waves: bool = False


@dataclass(frozen=True)
class SyncIntent:
    name: str
    kind: Kind
    regions: tuple[str, ...] = ()
    description: str = ""
    keypair: KeypairSpec | None = None
    security_group: SecurityGroupSpec | None = None
    image: ImageSpec | None = None
    version: int = 0
    created_unix_ms: int = 0
    all_regions: bool = False  # every region whose agent has attached, now and later (not the source)

    @property
    def source(self) -> str:
        """The site the intent copies from ("" for a keypair or group given on the command line)."""
        spec = self.keypair or self.security_group or self.image
        return spec.source_region if spec is not None else ""


@dataclass(frozen=True)
class ImageInfo:
    """One image as Glance shows it (a region's inventory, a task's source image)."""

    id: str
    name: str
    status: str = ""
    size: int = 0
    checksum: str = ""  # MD5
    hash_algo: str = ""  # of hash_value (Glance's os_hash_algo, sha512 by default)
    hash_value: str = ""
    disk_format: str = ""
    container_format: str = ""
    visibility: str = ""
    owner: str = ""
    tags: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)  # the custom (non-base) properties, as strings


@dataclass(frozen=True)
class SyncTask:
    intent: str
    kind: Kind
    resource: str
    action: Action
    keypair: KeypairSpec | None = None
    security_group: SecurityGroupSpec | None = None
    source_image: ImageInfo | None = None
    source_region: str = ""
    source_site: str = ""
    rollout: str = ""
    wave: str = ""
    reason: str = ""
    replace: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.intent, self.resource


@dataclass(frozen=True)
class SyncStatus:
    intent: str
    resource: str
    region: str
    state: State
    error: str = ""
    detail: str = ""
    updated_unix_ms: int = 0
    target_id: str = ""
    created: bool = False
    bytes_done: int = 0
    bytes_total: int = 0
    attempts: int = 0
    wave: str = ""
    stale: bool = False
    rollout: str = ""
    action: str = ""  # the newest change isthmus made to this copy ("created", "1 rule added", ...)
    action_unix_ms: int = 0


@dataclass(frozen=True)
class Rollout:
    id: str
    state: RolloutState
    wave: int = 0
    error: str = ""
    updated_unix_ms: int = 0
    skipped: tuple[str, ...] = ()  # sites the rollout no longer waits for


# ---------------------------------------------------------------- JSON (what etcd stores)


def _rule(d: dict[str, Any]) -> RuleSpec:
    return RuleSpec(**{f.name: d[f.name] for f in dataclasses.fields(RuleSpec) if f.name in d})


def keypair_from_json(d: dict[str, Any] | None) -> KeypairSpec | None:
    if not d:
        return None
    return KeypairSpec(name=d.get("name", ""), public_key=d.get("public_key", ""), user_id=d.get("user_id", ""),
                       replace=bool(d.get("replace", False)), source_region=d.get("source_region", ""),
                       source_name=d.get("source_name", ""))


def group_from_json(d: dict[str, Any] | None) -> SecurityGroupSpec | None:
    if not d:
        return None
    return SecurityGroupSpec(
        name=d.get("name", ""), description=d.get("description", ""), project_id=d.get("project_id", ""),
        rules=tuple(_rule(r) for r in d.get("rules", [])), replace=bool(d.get("replace", False)),
        source_region=d.get("source_region", ""), source_name=d.get("source_name", ""))


def image_from_json(d: dict[str, Any] | None) -> ImageSpec | None:
    if not d:
        return None
    sel = d.get("selector") or {}
    mode = d.get("mode", "")
    try:
        image_mode = ImageMode(mode)
    except ValueError:
        raise InvalidArgument(f"{mode!r} is not one of {', '.join(x.value for x in ImageMode)}",
                              "image.mode") from None
    return ImageSpec(
        mode=image_mode, source_region=d.get("source_region", ""),
        selector=ImageSelector(names=tuple(sel.get("names", [])), tags=tuple(sel.get("tags", [])),
                               properties=dict(sel.get("properties", {})), visibility=sel.get("visibility", "")),
        waves=tuple(Wave(w.get("name", ""), tuple(w.get("regions", []))) for w in d.get("waves", [])),
        rollback_on_failure=bool(d.get("rollback_on_failure", False)), replace=bool(d.get("replace", False)),
        pause_between_waves=bool(d.get("pause_between_waves", False)))


def image_info_from_json(d: dict[str, Any] | None) -> ImageInfo | None:
    if not d:
        return None
    values: dict[str, Any] = {f.name: d[f.name] for f in dataclasses.fields(ImageInfo) if f.name in d}
    values["tags"] = tuple(values.get("tags", ()))
    return ImageInfo(**values)


def intent_from_json(d: dict[str, Any], version: int = 0) -> SyncIntent:
    kind = d.get("kind", "")
    try:
        k = Kind(kind)
    except ValueError:
        raise InvalidArgument(f"{kind!r} is not one of {', '.join(x.value for x in Kind)}", "kind") from None
    return SyncIntent(
        name=d.get("name", ""), kind=k, regions=tuple(d.get("regions", [])), description=d.get("description", ""),
        keypair=keypair_from_json(d.get("keypair")), security_group=group_from_json(d.get("security_group")),
        image=image_from_json(d.get("image")), version=version or int(d.get("version", 0)),
        created_unix_ms=int(d.get("created_unix_ms", 0)), all_regions=bool(d.get("all_regions", False)))


def task_from_json(d: dict[str, Any]) -> SyncTask:
    return SyncTask(
        intent=d["intent"], kind=Kind(d["kind"]), resource=d["resource"], action=Action(d["action"]),
        keypair=keypair_from_json(d.get("keypair")), security_group=group_from_json(d.get("security_group")),
        source_image=image_info_from_json(d.get("source_image")), source_region=d.get("source_region", ""),
        source_site=d.get("source_site", ""), rollout=d.get("rollout", ""), wave=d.get("wave", ""),
        reason=d.get("reason", ""), replace=bool(d.get("replace", False)))


def status_from_json(d: dict[str, Any]) -> SyncStatus:
    values = {f.name: d[f.name] for f in dataclasses.fields(SyncStatus) if f.name in d}
    values["state"] = State(values.get("state", "PENDING"))
    return SyncStatus(**values)


def rollout_from_json(d: dict[str, Any]) -> Rollout:
    return Rollout(id=d.get("id", ""), state=RolloutState(d.get("state", "RUNNING")), wave=int(d.get("wave", 0)),
                   error=d.get("error", ""), updated_unix_ms=int(d.get("updated_unix_ms", 0)),
                   skipped=tuple(d.get("skipped", ())))


def parse_public_key(text: str, field_name: str = "keypair.public_key") -> tuple[str, bytes]:
    """(key type, key blob) of an OpenSSH public key line; InvalidArgument saying what is wrong."""
    parts = text.strip().split()
    if not parts:
        raise InvalidArgument("is required (an OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... user@host')",
                              field_name)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise InvalidArgument(f"is not an OpenSSH public key: it must start with one of {', '.join(SSH_KEY_TYPES)} "
                              "followed by the base64 key", field_name)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("the key part is not valid base64", field_name) from None
    if len(blob) < 4:
        raise InvalidArgument("the key part is truncated", field_name)
    (n,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + n] != parts[0].encode():
        raise InvalidArgument(f"the key data is not a {parts[0]} key (it names another type or is damaged)", field_name)
    if len(blob) < 4 + n + 16:
        raise InvalidArgument("the key data is truncated", field_name)
    return parts[0], blob


def _check_resource_name(value: str, field_name: str) -> None:
    if not value or not value.strip():
        raise InvalidArgument("is required", field_name)
    checks.check_text(value, field_name, MAX_RESOURCE_NAME)
    if any(c in value for c in "/\\"):
        raise InvalidArgument(f"{checks.shown(value)} must be 1-{MAX_RESOURCE_NAME} characters without '/' or "
                              "'\\'", field_name)


def _check_rule(rule: RuleSpec, n: int) -> None:
    f = f"security_group.rules[{n}]"
    if rule.direction not in ("ingress", "egress"):
        raise InvalidArgument(f"{rule.direction!r} is not ingress or egress", f"{f}.direction")
    if rule.ethertype not in ("IPv4", "IPv6"):
        raise InvalidArgument(f"{rule.ethertype!r} is not IPv4 or IPv6", f"{f}.ethertype")
    if rule.protocol not in PROTOCOLS and not (rule.protocol.isdigit() and 0 <= int(rule.protocol) <= 255):
        raise InvalidArgument(f"{rule.protocol!r} is not one of {', '.join(p for p in PROTOCOLS if p)} or 0-255",
                              f"{f}.protocol")
    for name in ("port_range_min", "port_range_max"):
        value = getattr(rule, name)
        if value is None:
            continue
        if rule.protocol in ("", ) or rule.protocol.isdigit() and rule.protocol not in ("6", "17", "132"):
            raise InvalidArgument("ports need protocol tcp, udp, sctp, icmp or icmpv6", f"{f}.{name}")
        top = 255 if rule.protocol in ("icmp", "icmpv6", "ipv6-icmp") else 65535
        if not 0 <= value <= top:
            raise InvalidArgument(f"{value} is out of range 0..{top}", f"{f}.{name}")
    if rule.protocol in ("tcp", "udp", "sctp") and (rule.port_range_min is None) != (rule.port_range_max is None):
        raise InvalidArgument("give both port_range_min and port_range_max, or neither", f"{f}.port_range_max")
    if (rule.protocol in ("tcp", "udp", "sctp") and rule.port_range_min is not None
            and rule.port_range_max is not None and rule.port_range_min > rule.port_range_max):
        raise InvalidArgument(f"{rule.port_range_max} is below port_range_min {rule.port_range_min}",
                              f"{f}.port_range_max")
    if rule.remote_ip_prefix and rule.remote_group:
        raise InvalidArgument("give remote_ip_prefix or remote_group, not both", f"{f}.remote_group")
    if rule.remote_ip_prefix:
        try:
            net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        except ValueError:
            raise InvalidArgument(f"{rule.remote_ip_prefix!r} is not a CIDR", f"{f}.remote_ip_prefix") from None
        if f"IPv{net.version}" != rule.ethertype:
            raise InvalidArgument(f"{rule.remote_ip_prefix} is not an {rule.ethertype} prefix (set ethertype)",
                                  f"{f}.remote_ip_prefix")
    if rule.remote_group:
        _check_resource_name(rule.remote_group, f"{f}.remote_group")
    if len(rule.description) > 255:
        raise InvalidArgument("is longer than 255 characters", f"{f}.description")


def validate_intent(intent: SyncIntent) -> SyncIntent:
    """Check one intent on its own (regions and images are checked against the registry by the coordinator)."""
    m.check_name(intent.name, "name")
    if len(intent.description) > 1024:
        raise InvalidArgument("is longer than 1024 characters", "description")
    for i, region in enumerate(intent.regions):
        m.check_name(region, f"regions[{i}]")
    if len(set(intent.regions)) != len(intent.regions):
        raise InvalidArgument("names a region twice", "regions")
    present = {Kind.KEYPAIR: intent.keypair, Kind.SECURITY_GROUP: intent.security_group, Kind.IMAGE: intent.image}
    for kind, spec in present.items():
        fname = kind.value.replace("-", "_")
        if kind == intent.kind and spec is None:
            raise InvalidArgument(f"is required for a {kind.value} intent", fname)
        if kind != intent.kind and spec is not None:
            raise InvalidArgument(f"is not allowed in a {intent.kind.value} intent", fname)
    if intent.all_regions and intent.regions:
        raise InvalidArgument("give regions or all_regions, not both", "regions")
    if intent.keypair is not None:
        kp = intent.keypair
        _check_resource_name(kp.name, "keypair.name")
        if kp.source_region:
            _check_source(intent, kp.source_region, kp.source_name, bool(kp.public_key), "keypair", "public_key")
        else:
            parse_public_key(kp.public_key)
    if intent.security_group is not None:
        g = intent.security_group
        _check_resource_name(g.name, "security_group.name")
        if g.source_region:
            _check_source(intent, g.source_region, g.source_name, bool(g.rules), "security_group", "rules")
        if len(g.description) > 255:
            raise InvalidArgument("is longer than 255 characters", "security_group.description")
        for n, rule in enumerate(g.rules):
            _check_rule(rule, n)
        if len(set(g.rules)) != len(g.rules):
            raise InvalidArgument("lists the same rule twice", "security_group.rules")
    if intent.image is not None:
        _validate_image(intent)
    elif not intent.regions and not intent.all_regions:
        raise InvalidArgument("name at least one target region (or all_regions)", "regions")
    return intent


def _check_source(intent: SyncIntent, site: str, name: str, given: bool, spec: str, what: str) -> None:
    m.check_name(site, f"{spec}.source_region")
    if name:
        _check_resource_name(name, f"{spec}.source_name")
    if given:
        raise InvalidArgument(f"comes from the source region {site}: give {what} or source_region, not both",
                              f"{spec}.{what}")
    if site in intent.regions:
        raise InvalidArgument(f"the source region {site} cannot be a target", "regions")


def _validate_image(intent: SyncIntent) -> None:
    img = intent.image
    assert img is not None
    if img.mode != ImageMode.NONE:
        m.check_name(img.source_region, "image.source_region")
    if img.selector.visibility not in VISIBILITIES:
        raise InvalidArgument(f"{img.selector.visibility!r} is not one of {', '.join(v for v in VISIBILITIES if v)}",
                              "image.selector.visibility")
    for i, name in enumerate(img.selector.names):
        _check_resource_name(name, f"image.selector.names[{i}]")
    if img.mode in (ImageMode.AUTO, ImageMode.LAZY) and not (img.selector.names or img.selector.tags
                                                             or img.selector.properties or img.selector.visibility):
        raise InvalidArgument(f"a {img.mode.value} intent needs a selector (names, tags, properties or visibility)",
                              "image.selector")
    if intent.all_regions and img.mode in (ImageMode.CONTROLLED, ImageMode.NONE):
        raise InvalidArgument(f"a {img.mode.value} image intent names its regions", "all_regions")
    if img.mode == ImageMode.CONTROLLED:
        if not img.selector.names:
            raise InvalidArgument("a controlled rollout names the image(s) it rolls out", "image.selector.names")
        if not img.waves:
            raise InvalidArgument("a controlled rollout needs at least one wave", "image.waves")
        seen: set[str] = set()
        for i, wave in enumerate(img.waves):
            if not wave.name:
                raise InvalidArgument("is required", f"image.waves[{i}].name")
            if not wave.regions:
                raise InvalidArgument("a wave needs at least one region", f"image.waves[{i}].regions")
            for j, region in enumerate(wave.regions):
                m.check_name(region, f"image.waves[{i}].regions[{j}]")
                if region in seen:
                    raise InvalidArgument(f"region {region} is in two waves", f"image.waves[{i}].regions[{j}]")
                seen.add(region)
        if len({w.name for w in img.waves}) != len(img.waves):
            raise InvalidArgument("two waves have the same name", "image.waves")
        if intent.regions and set(intent.regions) != seen:
            raise InvalidArgument("must be the regions of the waves (or left empty)", "regions")
        if img.source_region in seen:
            raise InvalidArgument(f"the source region {img.source_region} cannot be a target", "image.waves")
    else:
        if img.waves:
            raise InvalidArgument("waves are for controlled rollouts only", "image.waves")
        if not intent.regions and not intent.all_regions:
            raise InvalidArgument("name at least one target region (or all_regions)", "regions")
        if img.source_region in intent.regions:
            raise InvalidArgument(f"the source region {img.source_region} cannot be a target", "regions")


def target_regions(intent: SyncIntent) -> tuple[str, ...]:
    if intent.image is not None and intent.image.mode == ImageMode.CONTROLLED:
        return tuple(r for w in intent.image.waves for r in w.regions)
    return intent.regions


def matches(selector: ImageSelector, image: ImageInfo) -> bool:
    """Whether an image of the source region is covered by ``selector``."""
    if selector.names and image.name not in selector.names and image.id not in selector.names:
        return False
    if any(t not in image.tags for t in selector.tags):
        return False
    if any(image.properties.get(k) != v for k, v in selector.properties.items()):
        return False
    return not (selector.visibility and image.visibility != selector.visibility)
