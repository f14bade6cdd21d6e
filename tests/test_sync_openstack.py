"""Multisite sync end to end on the real two-region OpenStack: isthmusctl, coordinator, agents, OpenStack APIs.

One coordinator (its own etcd) and one agent per region run as processes for
the module; sites ``one`` and ``two`` are RegionOne and RegionTwo. The rollout
test adds a third site, ``one-b``, whose agent also works in RegionOne: a second
target whose Glance the test can stop without touching RegionTwo's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, wait_for
from openstack_cloud import ADMIN_CLOUD, TwoRegionCloud

pytestmark = [pytest.mark.filterwarnings(f"ignore::openstack.warnings.RemovedInSDK{v}0Warning:openstack")
              for v in (5, 6)]

SITES = {"one": "RegionOne", "two": "RegionTwo"}


@dataclass
class SyncLab:
    cloud: TwoRegionCloud
    base: Path
    address: str
    regions: dict[str, Any]
    agents: dict[str, Proc] = field(default_factory=dict)
    others: list[Proc] = field(default_factory=list)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(BIN / "isthmusctl"), "--coordinator", self.address, *args], capture_output=True,
                             text=True, timeout=60)
        if check and res.returncode != 0:
            pytest.fail(f"isthmusctl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def start_agent(self, site: str, region: str) -> Proc:
        args = agent_cmd(site, self.address, self.base, "--os-cloud", ADMIN_CLOUD, "--os-region", region,
                         "--os-config", str(self.cloud.clouds_yaml), "--inventory-interval", "1",
                         "--sync-interval", "2", "--usage-interval", "1", "--address-interval", "1",
                         "--capacity-interval", "2")
        proc = Proc(f"agent-{site}", args, self.base / f"agent-{site}.log")
        self.agents[site] = proc
        return proc

    def create_once_listed(self, *args: str) -> None:
        """``sync create`` naming an image just uploaded: refused (NOT_FOUND) until the source agent listed it."""
        def attempt() -> bool:
            res = self.ctl("sync", "create", *args, check=False)
            assert res.returncode == 0 or "its agent's image list" in res.stderr, res.stderr
            return res.returncode == 0

        wait_for(attempt, 30, "the source agent to list the new image")

    def show(self, name: str) -> dict[str, Any]:
        return json.loads(self.ctl("sync", "show", name, "-o", "json").stdout)  # type: ignore[no-any-return]

    def states(self, name: str) -> dict[tuple[str, str], str]:
        return {(st["resource"], st["region"]): st["state"] for st in self.show(name).get("statuses", [])}

    def wait_states(self, name: str, expected: dict[tuple[str, str], str], timeout: float = 60) -> None:
        wait_for(lambda: self.states(name) == expected, timeout, f"sync {name} to reach {expected}")

    def log(self, site: str) -> str:
        return (self.base / f"agent-{site}.log").read_text()


@pytest.fixture(scope="module")
def lab(two_region_cloud: TwoRegionCloud, regions: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncLab]:
    with running_lab(two_region_cloud, regions, tmp_path_factory.mktemp("sync")) as lab:
        yield lab


@contextlib.contextmanager
def running_lab(two_region_cloud: TwoRegionCloud, regions: dict[str, Any], base: Path) -> Iterator[SyncLab]:
    """A coordinator (its own etcd) and agents of sites one and two (RegionOne, RegionTwo), as processes."""
    ready = base / "addr"
    coordinator = Proc("coordinator", coordinator_cmd(base / "coord", ready), base / "coord.log")
    lab = SyncLab(two_region_cloud, base, "", {site: regions[region] for site, region in SITES.items()},
                  others=[coordinator])
    try:
        lab.address = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 60, "the coordinator"))
        for site in [*SITES, "one-b"]:
            lab.ctl("site", "create", site, "--kind", "region")
        for site, region in SITES.items():
            lab.start_agent(site, region)
        wait_for(lambda: all(f"sync stream to {lab.address} up" in lab.log(s) for s in SITES), 60,
                 "both agents' sync streams")
        yield lab
    finally:
        for proc in [*lab.agents.values(), *lab.others]:
            proc.stop()


def unique(what: str) -> str:
    return f"it-{what}-{uuid.uuid4().hex[:6]}"


def ssh_key(folder: Path, name: str) -> str:
    path = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True,
                   capture_output=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


def keypairs(conn: Any) -> dict[str, str]:
    return {k.name: k.public_key for k in conn.compute.keypairs()}


def same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


# ---------------------------------------------------------------- keypairs


def test_keypair_create_change_conflict_catch_up_and_delete(lab: SyncLab, tmp_path: Path) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    name, clash = unique("key"), unique("clash")
    first, second, foreign = (ssh_key(tmp_path, n) for n in ("first", "second", "foreign"))
    (tmp_path / "first.pub").write_text(first)

    lab.ctl("sync", "create", name, "--kind", "keypair", "--public-key-file", str(tmp_path / "first.pub"),
            "--region", "one", "--region", "two")
    lab.wait_states(name, {(name, "one"): "IN_SYNC", (name, "two"): "IN_SYNC"})
    assert same_key(keypairs(one)[name], first) and same_key(keypairs(two)[name], first)
    view = lab.show(name)
    assert all(st.get("created") for st in view["statuses"])
    # The region's own view, through the agent's admin socket (what an operator of a cut-off site sees).
    local = lab.ctl("local", "status", "--socket", str(lab.base / "one" / "admin.sock")).stdout
    assert "region RegionOne, stream up" in local and "IN_SYNC" in local

    # A change of key is followed; region two's agent is stopped during the change and catches up after restart.
    lab.agents["two"].stop()
    lab.ctl("sync", "update", name, "--public-key", second)
    wait_for(lambda: same_key(keypairs(one).get(name, ""), second), 60, "the new key in RegionOne")
    stale = {st["region"]: st.get("stale", False) for st in lab.show(name)["statuses"]}
    assert stale == {"one": False, "two": True}
    assert same_key(keypairs(two)[name], first)  # nobody could change region two meanwhile
    lab.start_agent("two", "RegionTwo")
    wait_for(lambda: same_key(keypairs(two).get(name, ""), second), 60, "region two catching up after restart")
    lab.wait_states(name, {(name, "one"): "IN_SYNC", (name, "two"): "IN_SYNC"})

    # The same name with another key, made by someone else: CONFLICT, left alone, and never deleted by isthmus.
    two.compute.create_keypair(name=clash, public_key=foreign)
    try:
        lab.ctl("sync", "create", clash, "--kind", "keypair", "--public-key", first, "--region", "one",
                "--region", "two")
        lab.wait_states(clash, {(clash, "one"): "IN_SYNC", (clash, "two"): "CONFLICT"})
        detail = next(st for st in lab.show(clash)["statuses"] if st["region"] == "two")
        assert "another key" in detail.get("detail", "") + detail.get("error", "")
        assert same_key(keypairs(two)[clash], foreign)
        lab.ctl("sync", "delete", clash)
        wait_for(lambda: clash not in keypairs(one), 60, "the copy isthmus made removed from RegionOne")
        # The agent of two had made nothing there, so it removes nothing:
        assert same_key(keypairs(two)[clash], foreign)
    finally:
        two.compute.delete_keypair(clash, ignore_missing=True)

    lab.ctl("sync", "delete", name)
    wait_for(lambda: name not in keypairs(one) and name not in keypairs(two), 60, "copies removed in both regions")


# ---------------------------------------------------------------- security groups


def group_rules(conn: Any, name: str) -> set[tuple[Any, ...]] | None:
    groups = [g for g in conn.network.security_groups(name=name)]
    if len(groups) != 1:
        return None
    g = groups[0]
    out = set()
    for r in conn.network.security_group_rules(security_group_id=g.id):
        remote = "self" if r.remote_group_id == g.id else (r.remote_group_id or r.remote_ip_prefix or "")
        out.add((r.direction, r.ether_type, r.protocol, r.port_range_min, r.port_range_max, remote))
    return out


def test_security_group_with_all_its_rules_drift_repair_and_deletion(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    name = unique("sg")
    lab.ctl("sync", "create", name, "--kind", "security-group", "--region", "one", "--region", "two",
            "--group-description", "web tier",
            "--rule", "proto=tcp,port=22,remote=192.0.2.0/24",
            "--rule", "proto=tcp,port=8000-8080,remote=2001:db8::/32",
            "--rule", "proto=icmp,remote=0.0.0.0/0",
            "--rule", "proto=udp,port=53,remote-group=" + name,
            "--rule", "dir=egress,ethertype=IPv6")
    expected = {
        ("ingress", "IPv4", "tcp", 22, 22, "192.0.2.0/24"),
        ("ingress", "IPv6", "tcp", 8000, 8080, "2001:db8::/32"),
        ("ingress", "IPv4", "icmp", None, None, ""),  # Neutron holds 0.0.0.0/0 as "any": the same rule
        ("ingress", "IPv4", "udp", 53, 53, "self"),
        ("egress", "IPv6", None, None, None, ""),
    }
    lab.wait_states(name, {(name, "one"): "IN_SYNC", (name, "two"): "IN_SYNC"})
    assert group_rules(one, name) == expected and group_rules(two, name) == expected

    # Drift: a rule deleted by hand in region two comes back; a rule added by hand goes.
    group = next(iter(two.network.security_groups(name=name)))
    ssh = next(r for r in two.network.security_group_rules(security_group_id=group.id) if r.port_range_min == 22)
    two.network.delete_security_group_rule(ssh)
    two.network.create_security_group_rule(security_group_id=group.id, direction="ingress", ethertype="IPv4",
                                           protocol="tcp", port_range_min=23, port_range_max=23)
    wait_for(lambda: group_rules(two, name) == expected, 60, "drift repaired in RegionTwo")

    # A change of rules is followed; region two's agent is stopped during the change and catches up after.
    lab.agents["two"].stop()
    lab.ctl("sync", "update", name, "--rule", "proto=tcp,port=443,remote=0.0.0.0/0")
    wanted = {("ingress", "IPv4", "tcp", 443, 443, "")}
    wait_for(lambda: group_rules(one, name) == wanted, 60, "the new rule set in RegionOne")
    assert group_rules(two, name) == expected  # untouched while its agent is away
    lab.start_agent("two", "RegionTwo")
    wait_for(lambda: group_rules(two, name) == wanted, 60, "RegionTwo catching up after its agent restarted")

    lab.ctl("sync", "delete", name)
    wait_for(lambda: group_rules(one, name) is None and group_rules(two, name) is None
             and not list(one.network.security_groups(name=name)), 60, "the groups removed")


# ---------------------------------------------------------------- images


def upload(conn: Any, name: str, size: int = 64 * 1024, **kw: Any) -> Any:
    data = bytes(512) + secrets.token_bytes(size - 512)
    img = conn.image.create_image(name, data=data, disk_format="raw", container_format="bare", wait=True,
                                  timeout=60, validate_checksum=True, **kw)
    return conn.image.wait_for_status(img, "active", wait=60)


def copies(conn: Any, name: str) -> list[Any]:
    return [i for i in conn.image.images() if i.name == name]


def test_auto_images_follow_with_properties_and_a_different_checksum_is_a_conflict(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    tag, name, later, clash = unique("tag"), unique("img"), unique("later"), unique("clash")
    made = [upload(one, name, tags=[tag], os_distro="debian"), upload(one, clash, tags=[tag])]
    theirs = upload(two, clash)  # same name in RegionTwo, other content, not isthmus's
    try:
        lab.ctl("sync", "create", f"auto-{tag}", "--kind", "image", "--mode", "auto", "--source", "one",
                "--tag", tag, "--region", "two")
        lab.wait_states(f"auto-{tag}", {(name, "two"): "IN_SYNC", (clash, "two"): "CONFLICT"}, timeout=90)
        [copy] = copies(two, name)
        src = made[0]
        assert (copy.checksum, copy.size, copy.disk_format, copy.container_format) == \
            (src.checksum, src.size, "raw", "bare")
        assert copy.hash_value == src.hash_value and tag in copy.tags
        assert copy.properties.get("os_distro") == "debian" or getattr(copy, "os_distro", None) == "debian"
        assert [i.id for i in copies(two, clash)] == [theirs.id]
        # A new matching image follows, also when region two's agent was stopped as it appeared.
        lab.agents["two"].stop()
        made.append(upload(one, later, tags=[tag]))
        wait_for(lambda: (later, "two") in lab.states(f"auto-{tag}"), 30, "the new image listed for region two")
        assert not copies(two, later)  # nobody copies for a stopped agent
        lab.start_agent("two", "RegionTwo")
        wait_for(lambda: len(copies(two, later)) == 1 and copies(two, later)[0].status == "active", 90,
                 "the new image copied once the agent is back")
        assert copies(two, later)[0].checksum == made[-1].checksum
        lab.ctl("sync", "delete", f"auto-{tag}")
        wait_for(lambda: not copies(two, name) and not copies(two, later), 60, "copies removed")
        assert [i.id for i in copies(two, clash)] == [theirs.id]  # never a foreign image
        assert {i.id for i in made} <= {i.id for i in one.image.images()}  # nor the originals
    finally:
        for img in [*made, theirs]:
            (one if img in made else two).image.delete_image(img, ignore_missing=True)


def test_lazy_image_copied_on_first_request_with_ensure(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    name = unique("lazy")
    src = upload(one, name, size=2 * 1024 * 1024)
    try:
        lab.create_once_listed(f"lazy-{name[-6:]}", "--kind", "image", "--mode", "lazy", "--source", "one",
                               "--image", name, "--region", "two")
        lab.wait_states(f"lazy-{name[-6:]}", {(name, "two"): "PENDING"})  # listed, not copied until asked
        assert not copies(two, name)
        res = lab.ctl("image", "ensure", name, "--region", "two", "--wait-timeout", "120")
        assert f"image {name} is active in two" in res.stdout and f"{name} in two: " in res.stderr
        [copy] = copies(two, name)
        assert copy.status == "active" and copy.checksum == src.checksum
        data = two.image.download_image(copy)
        body = data if isinstance(data, bytes) else data.content
        assert hashlib.md5(body, usedforsecurity=False).hexdigest() == src.checksum
        bad = lab.ctl("image", "ensure", "no-such-image", "--region", "two", check=False)
        assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr and "image:" in bad.stderr
        lab.ctl("sync", "delete", f"lazy-{name[-6:]}")
        wait_for(lambda: not copies(two, name), 60, "the lazy copy removed")
    finally:
        one.image.delete_image(src, ignore_missing=True)


def test_controlled_rollout_stops_on_a_failing_wave_and_rolls_back_only_its_copies(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    name = unique("roll")
    intent = f"roll-{name[-6:]}"
    src = upload(one, name)
    bystander = upload(two, unique("bystander"))
    lab.start_agent("one-b", "RegionOne")
    stopped = False
    try:
        wait_for(lambda: "sync stream to" in lab.log("one-b"), 60, "the one-b agent")
        # Bad input first: an empty wave list, an unknown image, an unknown region: refused, nothing made.
        for flags, words in ((["--image", name], "image.waves"), (["--image", "nope", "--wave", "w=two"],
                                                                  "image.selector.names[0]"),
                             (["--image", name, "--wave", "w=mars"], "image.waves[0].regions[0]")):
            bad = lab.ctl("sync", "create", intent, "--kind", "image", "--mode", "controlled", "--source", "one",
                          *flags, check=False)
            assert bad.returncode == 1 and words in bad.stderr, bad.stderr
        assert intent not in lab.ctl("sync", "list").stdout

        lab.create_once_listed(intent, "--kind", "image", "--mode", "controlled", "--source", "one",
                               "--image", name, "--wave", "canary=two", "--wave", "rest=one-b",
                               "--rollback-on-failure", "--pause-between-waves")
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "PAUSED", 90, "canary done, paused before rest")
        assert lab.states(intent) == {(name, "two"): "IN_SYNC", (name, "one-b"): "HELD"}
        [copy] = copies(two, name)
        assert copy.checksum == src.checksum

        # Wave rest fails: its Glance is down. The rollout stops and rolls back.
        lab.cloud.stop_service("glance-api", "RegionOne")
        stopped = True
        lab.ctl("sync", "resume", intent)
        wait_for(lambda: lab.show(intent)["rollout"]["state"] in ("ROLLING_BACK", "ROLLED_BACK"), 120,
                 "the failure noticed")
        assert "rest" in lab.show(intent)["rollout"].get("error", "")
        wait_for(lambda: not copies(two, name), 60, "the canary copy removed")
        lab.cloud.start_service("glance-api", "RegionOne")
        stopped = False
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "ROLLED_BACK", 120, "the rollback complete")
        assert lab.states(intent) == {(name, "two"): "REMOVED", (name, "one-b"): "REMOVED"}
        assert one.image.get_image(src.id).status == "active"  # the original is untouched
        assert two.image.get_image(bystander.id).status == "active"  # and so is everything else
        assert [i.id for i in copies(one, name)] == [src.id]
        lab.ctl("sync", "delete", intent)
    finally:
        if stopped:
            lab.cloud.start_service("glance-api", "RegionOne")
        lab.agents.pop("one-b").stop()
        one.image.delete_image(src, ignore_missing=True)
        two.image.delete_image(bystander, ignore_missing=True)


def test_image_mode_none_is_shown_as_a_choice(lab: SyncLab) -> None:
    name = unique("none")
    lab.ctl("sync", "create", name, "--kind", "image", "--mode", "none", "--region", "two")
    assert lab.states(name) == {("*", "two"): "NONE"}
    assert "nothing is copied" in lab.ctl("sync", "show", name).stdout
    lab.ctl("sync", "delete", name)



def test_a_failed_rollout_resumed_completes_and_a_rollback_later_removes_every_copy(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    name = unique("resume")
    intent = f"resume-{name[-6:]}"
    src = upload(one, name)
    lab.start_agent("one-b", "RegionOne")
    stopped = False
    try:
        wait_for(lambda: "sync stream to" in lab.log("one-b"), 60, "the one-b agent")
        lab.create_once_listed(intent, "--kind", "image", "--mode", "controlled", "--source", "one",
                               "--image", name, "--wave", "canary=two", "--wave", "rest=one-b",
                               "--pause-between-waves")
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "PAUSED", 90, "canary done, paused")
        first_attempt = lab.show(intent)["rollout"]["id"]
        lab.cloud.stop_service("glance-api", "RegionOne")
        stopped = True
        lab.ctl("sync", "resume", intent)
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "FAILED", 120, "wave rest failing")
        assert len(copies(two, name)) == 1  # no rollback asked: the canary copy stays
        lab.cloud.start_service("glance-api", "RegionOne")
        stopped = False
        lab.ctl("sync", "resume", intent)  # a new attempt: the old failure does not stop it again
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "DONE", 120, "the resumed rollout done")
        assert lab.show(intent)["rollout"]["id"] != first_attempt
        assert lab.states(intent) == {(name, "two"): "IN_SYNC", (name, "one-b"): "IN_SYNC"}
        # Rolled back after the fact: the copy the canary wave made (in the first attempt) goes too.
        lab.ctl("sync", "rollback", intent)
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "ROLLED_BACK", 120, "rolled back")
        assert not copies(two, name)
        assert [i.id for i in copies(one, name)] == [src.id]  # in RegionOne the original is the only one
        lab.ctl("sync", "delete", intent)
    finally:
        if stopped:
            lab.cloud.start_service("glance-api", "RegionOne")
        lab.agents.pop("one-b").stop()
        one.image.delete_image(src, ignore_missing=True)
        for img in copies(two, name):
            two.image.delete_image(img, ignore_missing=True)


def test_a_rollback_waiting_for_sites_gone_or_never_attached_is_finished_by_the_documented_commands(
        lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    name = unique("ghost")
    intent = f"ghost-{name[-6:]}"
    gone, never = f"gone-{name[-6:]}", f"never-{name[-6:]}"
    src = upload(one, name)
    try:
        for site in (gone, never):  # sites no agent ever serves
            lab.ctl("site", "create", site, "--kind", "region")
        lab.create_once_listed(intent, "--kind", "image", "--mode", "controlled", "--source", "one",
                               "--image", name, "--wave", "canary=two", "--wave", f"rest={gone},{never}")
        wait_for(lambda: lab.show(intent)["rollout"].get("wave") == 1, 90, "canary done, waiting for wave rest")
        assert len(copies(two, name)) == 1
        # Waiting for sites that never report: pause and abort are refused naming the way out.
        stuck = lab.ctl("sync", "resume", intent, check=False)
        assert stuck.returncode == 1 and f"--skip-site {gone} --skip-site {never}" in stuck.stderr, stuck.stderr

        # A site an intent names is not deleted without --force; the refusal names the intent.
        refused = lab.ctl("site", "delete", gone, check=False)
        assert refused.returncode == 1 and intent in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert gone in lab.ctl("site", "list").stdout

        lab.ctl("sync", "rollback", intent)
        wait_for(lambda: not copies(two, name), 60, "the canary copy removed")
        assert lab.show(intent)["rollout"]["state"] == "ROLLING_BACK"  # it waits for the two silent sites
        abort = lab.ctl("sync", "abort", intent, check=False)
        assert abort.returncode == 1 and "ROLLING_BACK" in abort.stderr, abort.stderr
        assert f"isthmusctl sync rollback {intent} --skip-site {gone} --skip-site {never}" in abort.stderr

        # Deleted by force: the site leaves the intent's waves; the rollback waits for the other one only.
        lab.ctl("site", "delete", gone, "--force")
        wait_for(lambda: [w["regions"] for w in lab.show(intent)["intent"]["image"]["waves"]]
                 == [["two"], [never]], 30, "the deleted site taken out of the waves")
        abort = lab.ctl("sync", "abort", intent, check=False)
        assert f"--skip-site {never} " in abort.stderr and gone not in abort.stderr, abort.stderr

        # The documented way out: finish the rollback without the silent site.
        out = lab.ctl("sync", "rollback", intent, "--skip-site", never).stdout
        assert "finishes without them" in out
        wait_for(lambda: lab.show(intent)["rollout"]["state"] == "ROLLED_BACK", 60, "the rollback finished")
        assert lab.states(intent) == {(name, "two"): "REMOVED", (name, never): "SKIPPED"}
        assert f"ROLLED_BACK, wave 2/2 (rest), without {never} (--skip-site)" in lab.ctl("sync", "show", intent).stdout
        assert not copies(two, name) and [i.id for i in copies(one, name)] == [src.id]
        bad = lab.ctl("sync", "rollback", intent, "--skip-site", "mars", check=False)
        assert bad.returncode == 1 and "skip_sites[0]" in bad.stderr, bad.stderr
        lab.ctl("sync", "delete", intent)
    finally:
        lab.ctl("sync", "delete", intent, check=False)
        for site in (gone, never):
            lab.ctl("site", "delete", site, "--force", check=False)
        one.image.delete_image(src, ignore_missing=True)
        for img in copies(two, name):
            two.image.delete_image(img, ignore_missing=True)


# ---------------------------------------------------------------- what isthmus changed, seen centrally


def sync_events(lab: SyncLab, site: str, intent: str) -> list[str]:
    out = json.loads(lab.ctl("events", "--site", site, "--kind", "sync", "-o", "json").stdout)
    return [e["message"] for e in out if f"(sync {intent})" in e["message"]]


def test_drift_in_every_kind_is_repaired_and_a_central_event_and_a_deleted_source_settles_its_rows(
        lab: SyncLab, tmp_path: Path) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    key, group, tag = unique("dkey"), unique("dsg"), unique("dtag")
    image_intent = f"auto-{tag}"
    src = upload(one, unique("dimg"), tags=[tag])
    public = ssh_key(tmp_path, "drift")
    try:
        lab.ctl("sync", "create", key, "--kind", "keypair", "--public-key", public, "--region", "two")
        lab.ctl("sync", "create", group, "--kind", "security-group", "--region", "two",
                "--rule", "proto=tcp,port=22,remote=192.0.2.0/24")
        lab.ctl("sync", "create", image_intent, "--kind", "image", "--mode", "auto", "--source", "one",
                "--tag", tag, "--region", "two")
        lab.wait_states(key, {(key, "two"): "IN_SYNC"})
        lab.wait_states(group, {(group, "two"): "IN_SYNC"})
        lab.wait_states(image_intent, {(src.name, "two"): "IN_SYNC"}, timeout=90)
        wait_for(lambda: all(sync_events(lab, "two", x) for x in (key, group, image_intent)), 30,
                 "the first copies as central events")
        first = {x: len(sync_events(lab, "two", x)) for x in (key, group, image_intent)}

        # Hand-made drift in region two, one per kind.
        two.compute.delete_keypair(key)
        sg = next(iter(two.network.security_groups(name=group)))
        ssh = next(r for r in two.network.security_group_rules(security_group_id=sg.id) if r.port_range_min == 22)
        two.network.delete_security_group_rule(ssh)
        two.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", ethertype="IPv4",
                                               protocol="tcp", port_range_min=23, port_range_max=23)
        [copy] = copies(two, src.name)
        two.image.delete_image(copy)

        wait_for(lambda: key in keypairs(two), 60, "the keypair re-created")
        wait_for(lambda: {(r.port_range_min, r.protocol) for r in two.network.security_group_rules(
            security_group_id=sg.id) if r.direction == "ingress"} == {(22, "tcp")}, 60, "the rules repaired")
        wait_for(lambda: [i.status for i in copies(two, src.name)] == ["active"], 90, "the image copied again")
        wait_for(lambda: all(len(sync_events(lab, "two", x)) > first[x] for x in first), 30,
                 "every repair as a central event")

        # The rule was deleted and the other added in two calls: a check between them repairs each on its own
        # ("1 rule added", then "1 rule removed"), one after both repairs them together ("1 rule added, 1 removed").
        def rule_repairs() -> list[str]:
            return sync_events(lab, "two", group)[first[group]:]

        def both_repaired() -> bool:
            text = " | ".join(rule_repairs())
            return "1 rule added" in text and ("1 removed" in text or "1 rule removed" in text)

        wait_for(both_repaired, 30, "both rule repairs as central events")
        assert all(f"security-group {group} in RegionTwo" in repair for repair in rule_repairs()), rule_repairs()
        assert "created" in sync_events(lab, "two", key)[-1]
        assert "copied" in sync_events(lab, "two", image_intent)[-1]
        # The row shows the newest change with its time; sync show lists the history.
        def row_shows_the_newest() -> bool:
            [row] = lab.show(group)["statuses"]
            return bool(row["action"]) and row["action"] in rule_repairs()[-1] and int(row["action_unix_ms"]) > 0

        wait_for(row_shows_the_newest, 30, "the row showing the newest repair with its time")
        shown = lab.ctl("sync", "show", group).stdout
        assert "LAST CHANGE" in shown and "recent changes in the regions" in shown
        assert shown.count(f"(sync {group})") >= 2, shown

        # The source image deleted: the copy goes, the row settles as SOURCE_GONE (not FAILED), and the delete is
        # an event too.
        one.image.delete_image(src)
        wait_for(lambda: not copies(two, src.name), 60, "the copy removed with its source")
        lab.wait_states(image_intent, {(src.name, "two"): "SOURCE_GONE"})
        listed = lab.ctl("sync", "list").stdout
        line = next(x for x in listed.splitlines() if x.startswith(image_intent))
        assert "SOURCE_GONE" in line and "FAILED" not in line, line
        wait_for(lambda: "deleted" in sync_events(lab, "two", image_intent)[-1], 30, "the delete as an event")
    finally:
        for name in (key, group, image_intent):
            lab.ctl("sync", "delete", name, check=False)
        one.image.delete_image(src, ignore_missing=True)


# ---------------------------------------------------------------- intents that follow a source region


def test_keypair_and_group_follow_a_source_region_and_all_regions_covers_a_region_attaching_later(
        lab: SyncLab, tmp_path: Path) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    tag = uuid.uuid4().hex[:6]
    src_key, src_group, key, group, late = f"it-srck-{tag}", f"it-srcg-{tag}", f"fk-{tag}", f"fg-{tag}", f"late-{tag}"
    first, second = ssh_key(tmp_path, "first"), ssh_key(tmp_path, "second")
    one.compute.create_keypair(name=src_key, public_key=first)
    sg = one.network.create_security_group(name=src_group, description="followed")
    one.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", ethertype="IPv4",
                                           protocol="tcp", port_range_min=22, port_range_max=22,
                                           remote_ip_prefix="192.0.2.0/24")
    late_agent = None
    try:
        bad = lab.ctl("sync", "create", key, "--kind", "keypair", "--source", "one", "--public-key", first,
                      "--all-regions", check=False)
        assert bad.returncode == 1 and "keypair.public_key" in bad.stderr, bad.stderr
        lab.ctl("sync", "create", key, "--kind", "keypair", "--from-region", "one", "--source-name", src_key,
                "--all-regions")
        lab.ctl("sync", "create", group, "--kind", "security-group", "--source", "one", "--source-name", src_group,
                "--all-regions")
        assert "all regions" in lab.ctl("sync", "list").stdout
        wait_for(lambda: lab.states(key).get((key, "two")) == "IN_SYNC"
                 and lab.states(group).get((group, "two")) == "IN_SYNC", 60, "the followed copies in region two")
        assert ("one" not in {r for _, r in lab.states(key)})  # never the source itself
        assert same_key(keypairs(two)[key], first)
        wanted = group_rules(one, src_group)
        assert wanted and ("ingress", "IPv4", "tcp", 22, 22, "192.0.2.0/24") in wanted
        assert group_rules(two, group) == wanted

        # The source changes: a key replaced, a rule added; the copies follow.
        one.compute.delete_keypair(src_key)
        one.compute.create_keypair(name=src_key, public_key=second)
        one.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", ethertype="IPv4",
                                               protocol="tcp", port_range_min=443, port_range_max=443)
        wait_for(lambda: same_key(keypairs(two).get(key, ""), second), 60, "the replaced key followed")
        wait_for(lambda: group_rules(two, group) == group_rules(one, src_group), 60, "the new rule followed")
        assert "re-created with the new key" in sync_events(lab, "two", key)[-1]

        # A region that attaches later is covered too (a second agent in RegionTwo, as site late).
        lab.ctl("site", "create", late, "--kind", "region")
        late_agent = lab.start_agent(late, "RegionTwo")
        wait_for(lambda: lab.states(key).get((key, late)) == "IN_SYNC"
                 and lab.states(group).get((group, late)) == "IN_SYNC", 60, "the later region covered")
        late_agent.stop()
        late_agent = None
        lab.ctl("site", "delete", late)  # nothing names it: --all-regions covers whatever attaches
        wait_for(lambda: (key, late) not in lab.states(key), 30, "the deleted region's row gone")

        # The source deleted: the copy goes, the row says SOURCE_GONE.
        one.compute.delete_keypair(src_key)
        wait_for(lambda: key not in keypairs(two), 60, "the copy removed with its source")
        wait_for(lambda: lab.states(key).get((key, "two")) == "SOURCE_GONE", 30, "the row settled")
        assert "FAILED" not in next(x for x in lab.ctl("sync", "list").stdout.splitlines() if x.startswith(key))
    finally:
        if late_agent is not None:
            late_agent.stop()
        lab.agents.pop(late, None)
        lab.ctl("site", "delete", late, "--force", check=False)
        for name in (key, group):
            lab.ctl("sync", "delete", name, check=False)
        one.compute.delete_keypair(src_key, ignore_missing=True)
        wait_for(lambda: not list(two.network.security_groups(name=group)), 60, "the group copy removed")
        one.network.delete_security_group(sg, ignore_missing=True)


def test_image_list_and_ensure_waiting_for_an_image_the_source_list_has_not_caught_up_with(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    tag = unique("wtag")
    name, intent = unique("wimg"), f"lazy-{tag[-6:]}"
    src = None
    try:
        lab.ctl("sync", "create", intent, "--kind", "image", "--mode", "lazy", "--source", "one", "--tag", tag,
                "--region", "two")
        lab.wait_states(intent, {("*", "two"): "PENDING"})  # a row, not an empty table
        assert "matches the selector yet" in lab.show(intent)["statuses"][0]["detail"]

        # The source's agent is away while the image is uploaded: the coordinator's list has not caught up.
        lab.agents["one"].stop()
        src = upload(one, name, tags=[tag])
        now = lab.ctl("image", "ensure", name, "--region", "two", check=False)
        assert now.returncode == 1 and "NOT_FOUND" in now.stderr and "--wait" in now.stderr, now.stderr
        assert name not in lab.ctl("image", "list", "--region", "one").stdout
        waiting = subprocess.Popen([str(BIN / "isthmusctl"), "--coordinator", lab.address, "image", "ensure", name,
                                    "--region", "two", "--wait", "90s", "--wait-timeout", "120"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lab.start_agent("one", "RegionOne")
        out, err = waiting.communicate(timeout=240)
        assert waiting.returncode == 0 and f"image {name} is active in two" in out, err
        assert [i.status for i in copies(two, name)] == ["active"]

        listed = lab.ctl("image", "list", "--region", "one").stdout
        line = next(x for x in listed.splitlines() if x.startswith(name))
        assert src.id[:8] in line and src.id not in line and "RegionOne" in listed
        assert src.id in lab.ctl("image", "list", "--region", "one", "--long").stdout
        images = json.loads(lab.ctl("image", "list", "--region", "one", "-o", "json").stdout)["images"]
        assert src.id in {i["id"] for i in images}
        unknown = lab.ctl("image", "list", "--region", "mars", check=False)
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr and "region" in unknown.stderr
        lab.ctl("sync", "delete", intent)
        wait_for(lambda: not copies(two, name), 60, "the lazy copy removed")
    finally:
        if "one" not in lab.agents or not lab.agents["one"].alive():
            lab.start_agent("one", "RegionOne")
        lab.ctl("sync", "delete", intent, check=False)
        if src is not None:
            one.image.delete_image(src, ignore_missing=True)
