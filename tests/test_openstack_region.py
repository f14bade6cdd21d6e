"""isthmus.cloud's keypairs, security_groups and images against the real two-region OpenStack of
openstack_cloud.py: keypairs, security groups and images made to exist in one region from a spec or from the
other region, faults included."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack.connection
import pytest

from isthmus.cloud.images import copy_image, get_image, list_images, remove_image
from isthmus.cloud.keypairs import ensure_keypair, keypair_fingerprint, remove_keypair
from isthmus.cloud.outcome import CONFLICT, IN_SYNC, Outcome
from isthmus.cloud.security_groups import GroupSpec, ensure_security_group, remove_security_group
from isthmus.cloud.session import CloudError, CopyError, SpecError, open_region
from isthmus.core.sync import RuleSpec
from openstack_cloud import ADMIN_CLOUD, ADMIN_PROJECT, REGIONS, TwoRegionCloud

# openstacksdk 4.x warns about its own internals on every connection and resource, whatever the caller does
# (an InfluxDB notice without InfluxDB configured, ...): ignored where raised inside openstacksdk only, as the
# agent and the neutron driver do (cloud/session.py, quiet_openstacksdk).
pytestmark = [pytest.mark.filterwarnings(f"ignore::openstack.warnings.RemovedInSDK{v}0Warning:openstack")
              for v in (5, 6)]

ONE, TWO = REGIONS


def unique(what: str) -> str:
    return f"isthmus-test-{what}-{uuid.uuid4().hex[:8]}"


def ssh_public_key(folder: Path, comment: str = "isthmus-test") -> str:
    """A real ed25519 public key line (nova refuses made-up ones)."""
    path = folder / f"id-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


@pytest.fixture(scope="module")
def conns(two_region_cloud: TwoRegionCloud) -> Iterator[dict[str, Any]]:
    """A connection per region, opened the way the agent opens them."""
    opened = {r: open_region(ADMIN_CLOUD, r, str(two_region_cloud.clouds_yaml)) for r in REGIONS}
    yield opened
    for conn in opened.values():
        conn.close()


@dataclass
class Leftovers:
    """What a test made, removed after it whatever happened (``first``: run before, e.g. restart a service)."""

    first: list[Callable[[], None]] = field(default_factory=list)
    image_names: set[str] = field(default_factory=set)
    groups: list[tuple[str, str]] = field(default_factory=list)  # (region, id)
    keypairs: list[tuple[str, str, str]] = field(default_factory=list)  # (region, name, user id)
    users: list[str] = field(default_factory=list)


@pytest.fixture
def leftovers(conns: dict[str, Any]) -> Iterator[Leftovers]:
    made = Leftovers()
    yield made
    for undo in made.first:
        undo()
    for region, conn in conns.items():
        for image in list_images(conn):
            if image.name in made.image_names:
                conn.image.delete_image(image.id, ignore_missing=True)
        for name, user_id in ((n, u) for r, n, u in made.keypairs if r == region):
            conn.compute.delete_keypair(name, ignore_missing=True, user_id=user_id or None)
        for group_id in (g for r, g in made.groups if r == region):
            conn.network.delete_security_group(group_id, ignore_missing=True)
    for user in made.users:
        conns[ONE].identity.delete_user(user, ignore_missing=True)


# ---------------------------------------------------------------- connections


def test_open_region_opens_the_named_region(two_region_cloud: TwoRegionCloud, conns: dict[str, Any]) -> None:
    for region, conn in conns.items():
        assert conn.config.region_name == region
        assert conn.image.get_endpoint().rstrip("/").removesuffix("/v2") == two_region_cloud.region(region) \
            .endpoints["image"]
    clouds = str(two_region_cloud.clouds_yaml)
    with pytest.raises(SpecError, match="no-such-cloud"):
        open_region("no-such-cloud", ONE, clouds)
    with pytest.raises(SpecError, match="RegionThree"):
        open_region(ADMIN_CLOUD, "RegionThree", clouds)
    with pytest.raises(SpecError, match="no such file"):
        open_region(ADMIN_CLOUD, ONE, clouds + ".missing")


# ---------------------------------------------------------------- keypairs


def test_keypair_fingerprint_is_novas(conns: dict[str, Any], leftovers: Leftovers, tmp_path: Path) -> None:
    conn, key, name = conns[TWO], ssh_public_key(tmp_path), unique("key")
    leftovers.keypairs.append((TWO, name, ""))
    made = conn.compute.create_keypair(name=name, public_key=key)
    assert keypair_fingerprint(key) == made.fingerprint
    for bad in ("", "ssh-ed25519", "ssh-ed25519 not-base64!", f"ssh-rsa {key.split()[1]}"):
        with pytest.raises(SpecError):
            keypair_fingerprint(bad)


def test_keypair_create_idempotent_conflict_rekey_and_remove(conns: dict[str, Any], leftovers: Leftovers,
                                                             tmp_path: Path) -> None:
    conn, name = conns[TWO], unique("key")
    key_a, key_b = ssh_public_key(tmp_path, "a"), ssh_public_key(tmp_path, "b")
    leftovers.keypairs.append((TWO, name, ""))

    assert ensure_keypair(conn, name, key_a, "", replace=False, owned=False) == \
        Outcome(IN_SYNC, "created", name, True, changed=True)
    # The same key under another comment is the same key; created says what the caller's records say.
    same = " ".join([*key_a.split()[:2], "another-comment"])
    out = ensure_keypair(conn, name, same, "", replace=False, owned=False)
    assert (out.state, out.created, out.detail) == (IN_SYNC, False, "already present with the same key")
    assert ensure_keypair(conn, name, key_a, "", replace=False, owned=True).created

    # Another key, not ours and no replace: nothing touched.
    out = ensure_keypair(conn, name, key_b, "", replace=False, owned=False)
    assert (out.state, out.created) == (CONFLICT, False)
    assert keypair_fingerprint(key_a) in out.detail and keypair_fingerprint(key_b) in out.detail
    assert conn.compute.get_keypair(name).public_key == key_a

    # Ours: re-keyed.
    out = ensure_keypair(conn, name, key_b, "", replace=False, owned=True)
    assert (out.state, out.created, out.changed) == (IN_SYNC, True, True) and "re-created" in out.detail
    assert conn.compute.get_keypair(name).public_key == key_b

    assert not remove_keypair(conn, name, "", key_a)  # not the key isthmus gave it
    assert conn.compute.get_keypair(name).public_key == key_b
    assert remove_keypair(conn, name, "", key_b)
    assert conn.compute.find_keypair(name) is None
    assert not remove_keypair(conn, name, "", key_b)


def test_keypair_replace_takes_over_a_foreign_one(conns: dict[str, Any], leftovers: Leftovers,
                                                  tmp_path: Path) -> None:
    conn, name = conns[TWO], unique("key")
    theirs, ours = ssh_public_key(tmp_path), ssh_public_key(tmp_path)
    leftovers.keypairs.append((TWO, name, ""))
    conn.compute.create_keypair(name=name, public_key=theirs)
    out = ensure_keypair(conn, name, ours, "", replace=True, owned=False)
    assert (out.state, out.created) == (IN_SYNC, True)
    assert conn.compute.get_keypair(name).fingerprint == keypair_fingerprint(ours)


def test_keypair_of_another_user(conns: dict[str, Any], leftovers: Leftovers, tmp_path: Path) -> None:
    conn, name, key = conns[TWO], unique("key"), ssh_public_key(tmp_path)
    user = conns[ONE].identity.create_user(name=unique("user"), domain_id="default",
                                           password=secrets.token_urlsafe(16))
    leftovers.users.append(user.id)
    leftovers.keypairs.append((TWO, name, user.id))

    assert ensure_keypair(conn, name, key, user.id, replace=False, owned=False).created
    assert conn.compute.get_keypair(name, user_id=user.id).user_id == user.id
    assert name not in {k.name for k in conn.compute.keypairs()}  # not the admin's
    assert ensure_keypair(conn, name, key, user.id, replace=False, owned=True).detail == \
        "already present with the same key"
    assert not remove_keypair(conn, name, "", key)  # the admin has no keypair of that name
    assert remove_keypair(conn, name, user.id, key)
    assert name not in {k.name for k in conn.compute.keypairs(user_id=user.id)}


# ---------------------------------------------------------------- security groups


def rules_of(conn: Any, group_id: str) -> set[tuple[Any, ...]]:
    return {(r["direction"], r["ethertype"], r["protocol"], r["port_range_min"], r["port_range_max"],
             r["remote_ip_prefix"], r["remote_group_id"], r["description"] or "")
            for r in conn.network.get_security_group(group_id).security_group_rules}


def group_named(conn: Any, name: str) -> Any:
    found = list(conn.network.security_groups(name=name))
    assert len(found) == 1, found
    return found[0]


def test_security_group_created_with_exactly_its_rules(conns: dict[str, Any], leftovers: Leftovers) -> None:
    conn = conns[ONE]
    web, db = unique("web"), unique("db")
    web_intent, db_intent = unique("intent"), unique("intent")
    web_spec = GroupSpec(web, "web servers", "", (
        RuleSpec(protocol="tcp", port_range_min=443, port_range_max=443, remote_ip_prefix="192.0.2.7/24",
                 description="https"),
        RuleSpec(ethertype="IPv6", protocol="tcp", port_range_min=443, port_range_max=443,
                 remote_ip_prefix="2001:db8::/32"),
        RuleSpec(protocol="udp", port_range_min=4789, port_range_max=4789, remote_ip_prefix="198.51.100.0/24"),
        RuleSpec(protocol="icmp", port_range_min=8, port_range_max=0),
        RuleSpec(ethertype="IPv6", protocol="icmpv6"),
        RuleSpec(protocol="tcp", port_range_min=22, port_range_max=22, remote_group=web),  # itself
        RuleSpec(protocol="tcp", port_range_min=8080, port_range_max=8080, remote_group=db),
        RuleSpec(direction="egress", protocol="tcp", port_range_min=1, port_range_max=65535),
    ))
    db_spec = GroupSpec(db, "databases", "", (
        RuleSpec(protocol="tcp", port_range_min=5432, port_range_max=5432, remote_group=web),
    ))
    # db names web, which is not synced yet: the caller retries later. Its group exists (and is found again).
    with pytest.raises(CloudError, match=f"remote group {web} is not in {ONE} yet"):
        ensure_security_group(conn, db_intent, db_spec, replace=False)
    db_id = group_named(conn, db).id
    leftovers.groups.append((ONE, db_id))

    out = ensure_security_group(conn, web_intent, web_spec, replace=False)
    leftovers.groups.append((ONE, out.target_id))
    assert (out.state, out.created) == (IN_SYNC, True)
    assert out.detail == "created; 8 rules added, 2 removed"  # the two egress rules Neutron adds are gone
    web_id = out.target_id
    assert rules_of(conn, web_id) == {
        ("ingress", "IPv4", "tcp", 443, 443, "192.0.2.0/24", None, "https"),
        ("ingress", "IPv6", "tcp", 443, 443, "2001:db8::/32", None, ""),
        ("ingress", "IPv4", "udp", 4789, 4789, "198.51.100.0/24", None, ""),
        ("ingress", "IPv4", "icmp", 8, 0, None, None, ""),
        ("ingress", "IPv6", "ipv6-icmp", None, None, None, None, ""),
        ("ingress", "IPv4", "tcp", 22, 22, None, web_id, ""),
        ("ingress", "IPv4", "tcp", 8080, 8080, None, db_id, ""),
        ("egress", "IPv4", "tcp", None, None, None, None, ""),  # Neutron stores ports 1-65535 as none
    }
    group = conn.network.get_security_group(web_id)
    assert group.tags == [f"isthmus-sync:{web_intent}"] and group.description == "web servers"

    out = ensure_security_group(conn, db_intent, db_spec, replace=False)
    assert out == Outcome(IN_SYNC, "1 rule added, 2 removed", db_id, True, changed=True)
    assert rules_of(conn, db_id) == {("ingress", "IPv4", "tcp", 5432, 5432, None, web_id, "")}

    # Normalized comparison: nothing to do the second time, and the other region has nothing of it.
    assert ensure_security_group(conn, web_intent, web_spec, replace=False) == \
        Outcome(IN_SYNC, "in sync", web_id, True)
    assert not list(conns[TWO].network.security_groups(name=web))


def test_security_group_drift_is_repaired(conns: dict[str, Any], leftovers: Leftovers) -> None:
    conn, name, intent = conns[ONE], unique("sg"), unique("intent")
    rules = (RuleSpec(protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="10.0.0.0/8"),
             RuleSpec(protocol="udp", port_range_min=53, port_range_max=53),
             RuleSpec(direction="egress", ethertype="IPv6"))
    spec = GroupSpec(name, "drift", "", rules)
    group_id = ensure_security_group(conn, intent, spec, replace=False).target_id
    leftovers.groups.append((ONE, group_id))
    synced = rules_of(conn, group_id)

    ssh = next(r for r in conn.network.get_security_group(group_id).security_group_rules if r["port_range_min"] == 22)
    conn.network.delete_security_group_rule(ssh["id"])
    assert ensure_security_group(conn, intent, spec, replace=False).detail == "1 rule added"
    assert rules_of(conn, group_id) == synced

    conn.network.create_security_group_rule(security_group_id=group_id, direction="ingress", ethertype="IPv4",
                                            protocol="tcp", port_range_min=3306, port_range_max=3306)
    conn.network.update_security_group(group_id, name=f"{name}-renamed", description="changed by hand")
    assert ensure_security_group(conn, intent, spec, replace=False).detail == \
        "name and description updated; 1 rule removed"
    assert rules_of(conn, group_id) == synced
    assert conn.network.get_security_group(group_id).name == name

    # A rule that differs in its description only is replaced (Neutron refuses both at once).
    described = GroupSpec(name, "drift", "", (rules[0], RuleSpec(protocol="udp", port_range_min=53,
                                                                 port_range_max=53, description="dns")))
    assert ensure_security_group(conn, intent, described, replace=False).detail == "1 rule added, 2 removed"
    assert {r[-1] for r in rules_of(conn, group_id)} == {"", "dns"} and len(rules_of(conn, group_id)) == 2


def test_security_group_conflict_adopt_and_remove(conns: dict[str, Any], leftovers: Leftovers) -> None:
    conn, name, intent, other_intent = conns[ONE], unique("sg"), unique("intent"), unique("intent")
    theirs = conn.network.create_security_group(name=name, description="made by hand")
    leftovers.groups.append((ONE, theirs.id))
    conn.network.create_security_group_rule(security_group_id=theirs.id, direction="ingress", ethertype="IPv4",
                                            protocol="tcp", port_range_min=25, port_range_max=25)
    before = rules_of(conn, theirs.id)
    spec = GroupSpec(name, "adopted", "", (RuleSpec(protocol="tcp", port_range_min=80, port_range_max=80),))

    out = ensure_security_group(conn, intent, spec, replace=False)
    assert (out.state, out.target_id, out.created) == (CONFLICT, theirs.id, False)
    assert "not made by isthmus" in out.detail
    assert rules_of(conn, theirs.id) == before and not conn.network.get_security_group(theirs.id).tags

    out = ensure_security_group(conn, intent, spec, replace=True)
    assert (out.state, out.target_id, out.created) == (IN_SYNC, theirs.id, False)
    assert out.detail == "adopted; description updated; 1 rule added, 3 removed"
    assert rules_of(conn, theirs.id) == {("ingress", "IPv4", "tcp", 80, 80, None, None, "")}
    # Found by its tag from now on, still not isthmus's to delete.
    assert ensure_security_group(conn, intent, spec, replace=False) == \
        Outcome(IN_SYNC, "in sync", theirs.id, False)
    out = ensure_security_group(conn, other_intent, spec, replace=False)
    assert out.state == CONFLICT and f"was made for intent {intent}" in out.detail

    assert not remove_security_group(conn, intent, name, "")
    assert not conn.network.get_security_group(theirs.id).tags  # untagged, not deleted


def test_remove_security_group_removes_only_its_own(conns: dict[str, Any], leftovers: Leftovers) -> None:
    conn, name, intent = conns[ONE], unique("sg"), unique("intent")
    spec = GroupSpec(name, "ours", "", ())
    ours = ensure_security_group(conn, intent, spec, replace=False).target_id
    leftovers.groups.append((ONE, ours))
    assert rules_of(conn, ours) == set()  # no rules at all: not even the default egress ones
    theirs = conn.network.create_security_group(name=name, description="same name, made by hand")
    leftovers.groups.append((ONE, theirs.id))

    assert not remove_security_group(conn, unique("intent"), name, "")
    assert not remove_security_group(conn, intent, unique("sg"), "")
    assert conn.network.find_security_group(ours) is not None
    assert remove_security_group(conn, intent, name, conn.current_project_id)
    assert conn.network.find_security_group(ours) is None
    assert conn.network.find_security_group(theirs.id) is not None
    assert not remove_security_group(conn, intent, name, "")


def test_security_group_spec_errors(conns: dict[str, Any], leftovers: Leftovers) -> None:
    conn, name, intent = conns[ONE], unique("sg"), unique("intent")
    for rule, why in ((RuleSpec(ethertype="IPv4", remote_ip_prefix="2001:db8::/32"), "is not IPv4"),
                      (RuleSpec(protocol="tls"), "protocol 'tls'"),
                      (RuleSpec(remote_ip_prefix="10.0.0.0/8", remote_group=name), "not both"),
                      (RuleSpec(direction="inbound"), "direction")):
        with pytest.raises(SpecError, match=why):
            ensure_security_group(conn, intent, GroupSpec(name, "", "", (rule,)), replace=False)
    with pytest.raises(SpecError, match="the same rule as rule 1"):
        ensure_security_group(conn, intent, GroupSpec(name, "", "", (
            RuleSpec(protocol="tcp", remote_ip_prefix="0.0.0.0/0"), RuleSpec(protocol="6"))), replace=False)
    with pytest.raises(SpecError, match="without commas"):
        ensure_security_group(conn, "a,b", GroupSpec(name, "", "", ()), replace=False)
    assert not list(conn.network.security_groups(name=name))  # all of that before any call
    # What only Neutron knows to refuse (port 0): a SpecError naming the rule.
    with pytest.raises(SpecError, match="rule ingress IPv4 tcp 0-80"):
        try:
            ensure_security_group(conn, intent, GroupSpec(name, "", "", (
                RuleSpec(protocol="tcp", port_range_min=0, port_range_max=80),)), replace=False)
        finally:
            leftovers.groups += [(ONE, g.id) for g in conn.network.security_groups(name=name)]


# ---------------------------------------------------------------- images


def upload(conn: Any, name: str, data: bytes, **attrs: Any) -> str:
    """An active image in ``conn``'s region: a raw create and upload, as a person or another tool makes one."""
    body = {"name": name, "disk_format": "raw", "container_format": "bare", **attrs}
    image_id = str(conn.image.post("/images", json=body, raise_exc=True).json()["id"])
    conn.image.put(f"/images/{image_id}/file", data=data, headers={"Content-Type": "application/octet-stream"},
                   raise_exc=True)
    return image_id


def named(conn: Any, name: str) -> list[Any]:
    return [i for i in list_images(conn) if i.name == name]


def test_copy_image_keeps_what_makes_the_image(conns: dict[str, Any], leftovers: Leftovers) -> None:
    one, two, name, intent = conns[ONE], conns[TWO], unique("image"), unique("intent")
    leftovers.image_names.add(name)
    data = bytes(512) + secrets.token_bytes(96 * 1024 - 512)
    source_id = upload(one, name, data, disk_format="qcow2", container_format="ovf", visibility="public",
                       min_disk=1, min_ram=128, tags=["isthmus-test", "linux"], os_distro="cirros",
                       note="made for the copy test")
    seen: list[tuple[int, int]] = []

    out = copy_image(one, two, source_id, intent, rollout="r1", progress=lambda d, t: seen.append((d, t)),
                     chunk_size=16 * 1024)
    assert (out.state, out.created, out.changed) == (IN_SYNC, True, True)
    assert out.detail.startswith(f"copied {len(data)} bytes")
    assert seen == [(16 * 1024 * i, len(data)) for i in range(1, 7)]
    source, copy = get_image(one, source_id), get_image(two, out.target_id)
    assert source is not None and copy is not None
    assert (copy.name, copy.status, copy.disk_format, copy.container_format, copy.visibility, copy.tags) == \
        (name, "active", "qcow2", "ovf", "public", ("isthmus-test", "linux"))
    assert (copy.size, copy.checksum, copy.hash_algo, copy.hash_value) == \
        (len(data), hashlib.md5(data, usedforsecurity=False).hexdigest(), "sha512", hashlib.sha512(data).hexdigest())
    assert (source.checksum, source.hash_value) == (copy.checksum, copy.hash_value)
    assert {k: copy.properties[k] for k in ("os_distro", "note", "isthmus_sync", "isthmus_source",
                                            "isthmus_rollout")} == {
        "os_distro": "cirros", "note": "made for the copy test", "isthmus_sync": intent,
        "isthmus_source": f"{ONE}/{source_id}", "isthmus_rollout": "r1"}
    raw = two.image.get(f"/images/{copy.id}", raise_exc=True).json()
    assert (raw["min_disk"], raw["min_ram"]) == (1, 128)
    assert two.image.get(f"/images/{copy.id}/file", raise_exc=True).content == data

    # Done already: no second upload.
    again = copy_image(one, two, source_id, intent, rollout="r1", progress=lambda d, t: seen.append((d, t)))
    assert again == Outcome(IN_SYNC, f"already copied ({copy.id})", copy.id, True) and len(seen) == 6
    assert [i.id for i in named(two, name)] == [copy.id]

    assert remove_image(two, intent, name, rollout="r2") == 0
    assert remove_image(two, unique("intent"), name) == 0
    assert remove_image(two, intent, name) == 1
    assert get_image(two, copy.id) is None and get_image(one, source_id) is not None


def test_copy_image_over_a_same_named_image(conns: dict[str, Any], leftovers: Leftovers) -> None:
    one, two, name, intent = conns[ONE], conns[TWO], unique("image"), unique("intent")
    leftovers.image_names.add(name)
    data = secrets.token_bytes(8192)
    source_id = upload(one, name, data)

    theirs = upload(two, name, secrets.token_bytes(8192))
    for replace in (False, True):  # never deleted: isthmus did not make it
        out = copy_image(one, two, source_id, intent, replace=replace)
        assert (out.state, out.target_id, out.created) == (CONFLICT, theirs, False)
        assert "has other data" in out.detail and "not made by isthmus" in out.detail
    assert [i.id for i in named(two, name)] == [theirs]
    two.image.delete_image(theirs)

    same = upload(two, name, data)
    out = copy_image(one, two, source_id, intent)
    assert out == Outcome(IN_SYNC, f"already present, not isthmus's ({same})", same, False)
    assert remove_image(two, intent, name) == 0
    assert [i.id for i in named(two, name)] == [same]


def test_copy_image_new_data_rollouts_and_other_intents(conns: dict[str, Any], leftovers: Leftovers) -> None:
    one, two, name = conns[ONE], conns[TWO], unique("image")
    intent, other_intent = unique("intent"), unique("intent")
    leftovers.image_names.add(name)
    first, second = upload(one, name, secrets.token_bytes(4096)), upload(one, name, secrets.token_bytes(4096))

    old = copy_image(one, two, first, intent).target_id
    # The source changed (same name, other data): the earlier copy of this intent goes.
    out = copy_image(one, two, second, intent)
    assert out.created and out.detail.startswith(f"deleted an earlier copy ({old}: checksum")
    assert [i.id for i in named(two, name)] == [out.target_id]

    # Another intent's copy is a conflict; replace deletes it as isthmus made it.
    out = copy_image(one, two, first, other_intent)
    assert out.state == CONFLICT and f"made by isthmus for intent {intent}; replace deletes it" in out.detail
    out = copy_image(one, two, first, other_intent, replace=True)
    assert out.state == IN_SYNC and out.created and f"of intent {intent}" in out.detail
    assert [i.properties["isthmus_sync"] for i in named(two, name)] == [other_intent]

    # A rollout labels its copy: a later rollout reuses a copy with its data, or replaces it.
    name = unique("image")
    leftovers.image_names.add(name)
    first, second = upload(one, name, secrets.token_bytes(4096)), upload(one, name, secrets.token_bytes(4096))
    r1 = copy_image(one, two, first, intent, rollout="r1").target_id
    assert copy_image(one, two, first, intent, rollout="r2") == Outcome(IN_SYNC, f"already copied ({r1})", r1, True)
    r2 = copy_image(one, two, second, intent, rollout="r2").target_id
    assert [(i.id, i.properties["isthmus_rollout"]) for i in named(two, name)] == [(r2, "r2")]
    assert remove_image(two, intent, name, rollout="r1") == 0
    assert remove_image(two, intent, name, rollout="r2") == 1 and named(two, name) == []


def test_copy_by_a_member_publishes_no_image(two_region_cloud: TwoRegionCloud, conns: dict[str, Any],
                                             leftovers: Leftovers) -> None:
    """Glance lets only admins make public images (publicize_image): a member's copy of one is shared."""
    one, name, intent = conns[ONE], unique("image"), unique("intent")
    leftovers.image_names.add(name)
    password = secrets.token_urlsafe(16)
    user = one.identity.create_user(name=unique("user"), domain_id="default", password=password)
    leftovers.users.append(user.id)
    one.identity.assign_project_role_to_user(one.current_project_id, user.id,
                                             one.identity.find_role("member", ignore_missing=False).id)
    member = openstack.connection.Connection(
        auth_url=two_region_cloud.auth_url, username=user.name, password=password, project_name=ADMIN_PROJECT,
        user_domain_name="Default", project_domain_name="Default", region_name=TWO)
    try:
        source_id = upload(one, name, secrets.token_bytes(4096), visibility="public")
        out = copy_image(one, member, source_id, intent)
        assert out.state == IN_SYNC and out.detail.startswith(f"visibility shared: {TWO} refused public; copied")
        copy = get_image(conns[TWO], out.target_id)
        assert copy is not None and copy.visibility == "shared"
    finally:
        member.close()


class FailingSource:
    """A source connection whose image downloads break (or end early) after ``after`` chunks: everything
    else is the real connection's."""

    def __init__(self, conn: Any, after: int, truncate: bool = False) -> None:
        self._conn = conn
        self.image = _FailingImage(conn.image, after, truncate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _FailingImage:
    def __init__(self, proxy: Any, after: int, truncate: bool) -> None:
        self._proxy, self._after, self._truncate = proxy, after, truncate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)

    def request(self, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
        resp = self._proxy.request(url, method, *args, **kwargs)
        return _FailingDownload(resp, self._after, self._truncate) if url.endswith("/file") else resp


class _FailingDownload:
    def __init__(self, resp: Any, after: int, truncate: bool) -> None:
        self._resp, self._after, self._truncate = resp, after, truncate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        for i, chunk in enumerate(self._resp.iter_content(chunk_size)):
            if i == self._after:
                if self._truncate:
                    return
                raise ConnectionResetError("the source went away")
            yield chunk


@pytest.mark.parametrize("truncate", [False, True], ids=["broken", "short"])
def test_interrupted_copy_leaves_no_image(conns: dict[str, Any], leftovers: Leftovers, truncate: bool) -> None:
    one, two, name, intent = conns[ONE], conns[TWO], unique("image"), unique("intent")
    leftovers.image_names.add(name)
    source_id = upload(one, name, secrets.token_bytes(64 * 1024))
    expect = "the copy has 16384 bytes" if truncate else "reading the source failed after 16384 of 65536 bytes"
    with pytest.raises(CopyError, match=expect) as failed:
        copy_image(FailingSource(one, after=2, truncate=truncate), two, source_id, intent, chunk_size=8192)
    assert "was deleted" in str(failed.value)
    assert named(two, name) == []


def test_copy_with_the_target_glance_stopped(two_region_cloud: TwoRegionCloud, conns: dict[str, Any],
                                            leftovers: Leftovers) -> None:
    one, two, name, intent = conns[ONE], conns[TWO], unique("image"), unique("intent")
    leftovers.image_names.add(name)
    leftovers.first.append(lambda: two_region_cloud.start_service("glance-api", TWO))
    source_id = upload(one, name, secrets.token_bytes(64 * 1024))

    # Down before: nothing is made, the caller retries.
    two_region_cloud.stop_service("glance-api", TWO)
    started = time.monotonic()
    with pytest.raises(CloudError, match=TWO) as failed:
        copy_image(one, two, source_id, intent)
    assert not isinstance(failed.value, CopyError) and time.monotonic() - started < 10
    two_region_cloud.start_service("glance-api", TWO)

    # Down in the middle of the upload: a CopyError at once; the half image cannot be deleted while Glance is
    # down, the next copy deletes it.
    def stop_glance(done: int, total: int) -> None:
        if done == 8192:
            two_region_cloud.stop_service("glance-api", TWO)

    started = time.monotonic()
    with pytest.raises(CopyError, match="the upload failed after") as failed:
        copy_image(one, two, source_id, intent, progress=stop_glance, chunk_size=8192)
    assert time.monotonic() - started < 30
    assert "could not be deleted" in str(failed.value)
    assert all(s.alive() for s in two_region_cloud.services if s.name != f"glance-api ({TWO})")
    two_region_cloud.start_service("glance-api", TWO)
    (half,) = named(two, name)
    assert half.status != "active" and half.properties["isthmus_sync"] == intent

    out = copy_image(one, two, source_id, intent)
    assert (out.state, out.created) == (IN_SYNC, True) and out.detail.startswith(f"deleted an earlier copy ({half.id}")
    assert [(i.id, i.status) for i in named(two, name)] == [(out.target_id, "active")]


def test_a_large_image_is_streamed(conns: dict[str, Any], leftovers: Leftovers) -> None:
    one, two, name, intent = conns[ONE], conns[TWO], unique("image"), unique("intent")
    leftovers.image_names.add(name)
    size = 32 << 20
    data = secrets.token_bytes(size)
    checksum = hashlib.md5(data, usedforsecurity=False).hexdigest()
    source_id = upload(one, name, data)
    del data
    calls = []
    tracemalloc.start()
    try:
        out = copy_image(one, two, source_id, intent, progress=lambda d, t: calls.append(d))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.created and len(calls) >= 32 and calls[-1] == size
    assert peak < size // 4, f"{peak} bytes at the peak for a {size}-byte image"
    copy = get_image(two, out.target_id)
    assert copy is not None and (copy.size, copy.checksum) == (size, checksum)
