"""Global views on the real two-region OpenStack: quotas under a global limit while both regions grow, capacity,
and the address view with real Neutron ports, subnets and routing domains."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openstack.exceptions
import pytest
from test_sync_openstack import SyncLab, running_lab

from conftest import wait_for
from openstack_cloud import TwoRegionCloud

pytestmark = [pytest.mark.filterwarnings(f"ignore::openstack.warnings.RemovedInSDK{v}0Warning:openstack")
              for v in (5, 6)]


@pytest.fixture(scope="module")
def lab(two_region_cloud: TwoRegionCloud, regions: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncLab]:
    with running_lab(two_region_cloud, regions, tmp_path_factory.mktemp("views")) as lab:
        yield lab


@pytest.fixture
def project(lab: SyncLab) -> Iterator[str]:
    """A Keystone project of its own (quotas are per project), removed with what the test made in it."""
    admin = lab.regions["one"]
    made = admin.identity.create_project(name=f"it-{uuid.uuid4().hex[:8]}", domain_id="default")
    yield made.id
    for conn in lab.regions.values():
        for group in conn.network.security_groups(project_id=made.id):
            conn.network.delete_security_group(group, ignore_missing=True)
        conn.network.delete_quota(made.id, ignore_missing=True)
    admin.identity.delete_project(made, ignore_missing=True)


def sg_limit(conn: Any, project: str) -> int:
    return int(conn.network.get_quota(project).security_groups)


def sg_count(conn: Any, project: str) -> int:
    return len(list(conn.network.security_groups(project_id=project)))


def test_regional_limits_stay_within_the_global_limit_while_both_regions_grow(lab: SyncLab, project: str) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    hard = 12
    for conn in (one, two):  # the project's default group exists from here on: usage starts at 1 per region
        conn.network.create_security_group(name="seed", project_id=project)
    lab.ctl("quota", "set", project, "security_groups", "--hard", str(hard), "--soft", "8")

    def limits() -> tuple[int, int]:
        return sg_limit(one, project), sg_limit(two, project)

    # Neutron's default (10 per region, 20 together) is lowered first; then the headroom is shared out exactly.
    wait_for(lambda: sum(limits()) == hard and all(x >= 2 for x in limits()), 60,
             f"regional limits adding up to {hard}")

    sums: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sums.append(sum(limits()))
            time.sleep(0.1)

    def grow(conn: Any, region: str) -> None:
        refused = 0
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline and refused < 15:
            try:
                conn.network.create_security_group(name=f"grow-{region}-{uuid.uuid4().hex[:6]}", project_id=project)
            except openstack.exceptions.ConflictException:  # 409 Quota exceeded: wait for a new share
                refused += 1
                time.sleep(0.3)
            else:
                time.sleep(0.05)

    threads = [threading.Thread(target=sample)] + [threading.Thread(target=grow, args=(c, r))
                                                   for r, c in (("one", one), ("two", two))]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(60)
    stop.set()
    threads[0].join(10)
    assert len(sums) > 20 and max(sums) <= hard, f"the regional limits added up to {max(sums)} > {hard}: {sums}"
    counts = {"one": sg_count(one, project), "two": sg_count(two, project)}
    assert sum(counts.values()) <= hard and sum(counts.values()) >= hard - 2, counts  # grew to (nearly) the limit

    # The view sums what each region reports, and the soft limit crossing was one event.
    def view() -> dict[str, Any]:
        return json.loads(lab.ctl("quota", "show", project, "-o", "json").stdout)["resources"][0]  # type: ignore

    got = wait_for(lambda: (v := view()) and {r["region"]: int(r.get("usage", 0)) for r in v["regions"]} == counts
                   and v, 30, f"usage per region {counts} in the view")
    assert int(got["total"]) == sum(counts.values()) and int(got["hard"]) == hard and got.get("soft_exceeded")
    assert int(got.get("headroom", 0)) == hard - sum(counts.values())  # JSON leaves out zeros
    events = lab.ctl("events", "--kind", "quota.soft-limit", "-o", "json").stdout
    assert project in events
    text = lab.ctl("quota", "show", project).stdout
    assert "SOFT LIMIT REACHED" in text and "security_groups" in text
    # Unset says what the regions keep, and what is left globally.
    regional = {r["region"]: int(r.get("limit", 0)) for r in view()["regions"]}
    unset = lab.ctl("quota", "unset", project).stdout
    assert "removed 1 global limit of project" in unset and "(security_groups)" in unset, unset
    assert all(f"{region} security_groups {limit}" in unset for region, limit in regional.items()), unset
    assert f"global limits left for project {project}: none" in unset
    if not json.loads(lab.ctl("quota", "list", "-o", "json").stdout):
        assert lab.ctl("quota", "list").stdout.startswith("no global quota limits")


def test_a_regional_limit_changed_by_hand_is_set_back_and_is_a_central_event(lab: SyncLab, project: str) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    lab.ctl("quota", "set", project, "security_groups", "--hard", "12")
    try:
        wait_for(lambda: sg_limit(one, project) + sg_limit(two, project) == 12, 60, "the regional limits set")
        two.network.update_quota(project, security_groups=99)  # drift, by hand
        wait_for(lambda: sg_limit(one, project) + sg_limit(two, project) == 12, 60, "the hand-made limit set back")
        def repaired() -> bool:
            events = json.loads(lab.ctl("events", "--site", "two", "--kind", "quota", "-o", "json").stdout)
            return any(project in e["message"] and "security_groups 99 ->" in e["message"] for e in events)

        wait_for(repaired, 30, "the repair as a central event")
    finally:
        lab.ctl("quota", "unset", project)


def test_capacity_is_reported_per_region_and_summed(lab: SyncLab) -> None:
    def capacity() -> dict[str, Any]:
        return json.loads(lab.ctl("capacity", "-o", "json").stdout)  # type: ignore[no-any-return]

    cap = wait_for(lambda: (c := capacity()) and len(c.get("regions", [])) == 2 and c, 30, "both regions' capacity")
    for region in cap["regions"]:
        assert not region.get("compute_known") and region["source"] == "unknown"  # no compute nodes here
        assert "networks" in region["network_objects"]
    total = sum(int(r["network_objects"].get("networks", 0)) for r in cap["regions"])
    assert int(cap["total"]["network_objects"].get("networks", 0)) == total
    assert "unknown" in lab.ctl("capacity").stdout


def test_address_view_with_real_ports_and_routing_domains(lab: SyncLab) -> None:
    one, two = lab.regions["one"], lab.regions["two"]
    tag = uuid.uuid4().hex[:6]
    v4, v6 = "10.77.0.10", "2001:db8:77::10"
    mac = "fa:16:3e:77:" + tag[:2] + ":" + tag[2:4]
    made: list[tuple[Any, Any]] = []

    def network(conn: Any, name: str, with_mac: bool = True) -> tuple[Any, Any]:
        net = conn.network.create_network(name=f"it-{name}-{tag}")
        made.append((conn, net))
        s4 = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.77.0.0/24", enable_dhcp=False)
        s6 = conn.network.create_subnet(network_id=net.id, ip_version=6, cidr="2001:db8:77::/64",
                                        enable_dhcp=False)
        port = conn.network.create_port(network_id=net.id, fixed_ips=[
            {"subnet_id": s4.id, "ip_address": v4}, {"subnet_id": s6.id, "ip_address": v6}],
            **({"mac_address": mac} if with_mac else {}))
        return net, port

    try:
        net_a, port_a = network(one, "a")
        net_b, port_b = network(two, "b")
        net_c, port_c = network(two, "c", with_mac=False)

        def holders(query: str) -> set[tuple[str, str]]:
            out = json.loads(lab.ctl("address", "lookup", query, "-o", "json").stdout)
            return {(r["region"], r["id"]) for r in out}

        wait_for(lambda: holders(v4) >= {("one", port_a.id), ("two", port_b.id), ("two", port_c.id)}, 30,
                 "the ports of both regions in the address view")
        assert holders(v6) >= {("one", port_a.id), ("two", port_b.id), ("two", port_c.id)}
        assert holders(mac.upper()) == {("one", port_a.id), ("two", port_b.id)}
        # The table fits a terminal: the network's name, ids shortened; --long gives them whole.
        table = lab.ctl("address", "lookup", mac).stdout
        row = next(x for x in table.splitlines() if port_a.id[:8] in x)
        assert f"it-a-{tag}" in row and port_a.id not in row and net_a.id not in row, table
        assert "NAME" in table.splitlines()[0]
        assert port_a.id in lab.ctl("address", "lookup", mac, "--long").stdout
        assert json.loads(lab.ctl("address", "lookup", mac, "-o", "json").stdout)[0]["network_name"].startswith("it-")

        def conflicts() -> list[dict[str, Any]]:
            return [c for c in json.loads(lab.ctl("address", "conflicts", "-o", "json").stdout)
                    if any(r["network"] in (net_a.id, net_b.id, net_c.id) for r in c["records"])]

        assert conflicts() == []  # the same addresses, but no domain joins the networks
        lab.ctl("routing-domain", "create", f"corp-{tag}", "--network", f"one:{net_a.id}",
                "--network", f"two:{net_b.id}")
        found = {(c["kind"], c["value"]): {r["id"] for r in c["records"]} for c in conflicts()}
        pair = {port_a.id, port_b.id}
        assert found[("duplicate_ip", v4)] == pair and found[("duplicate_ip", v6)] == pair
        assert found[("duplicate_mac", mac)] == pair
        assert ("overlapping_cidr", "10.77.0.0/24 ~ 10.77.0.0/24") in found
        assert ("overlapping_cidr", "2001:db8:77::/64 ~ 2001:db8:77::/64") in found
        assert all(port_c.id not in ids for ids in found.values())  # net-c is in no domain with the others
        # A port deleted in region two leaves the view by a delta: its clashes go, the subnets' stay.
        two.network.delete_port(port_b)
        wait_for(lambda: {c["kind"] for c in conflicts()} == {"overlapping_cidr"}, 30, "the port's clashes gone")
        lab.ctl("routing-domain", "delete", f"corp-{tag}")
    finally:
        for conn, net in reversed(made):
            for port in conn.network.ports(network_id=net.id):
                conn.network.delete_port(port, ignore_missing=True)
            conn.network.delete_network(net, ignore_missing=True)
