"""isthmus.cloud's views of a region (usage, addresses) against the real two-region OpenStack of
openstack_cloud.py: a project's quota usage and limits (enforcement included), the region's capacity and its
addresses."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openstack.config
import openstack.connection
import pytest
import requests
from openstack import exceptions as os_exceptions

from isthmus.cloud.addresses import list_addresses
from isthmus.cloud.session import CloudError, SpecError
from isthmus.cloud.usage import (
    NEUTRON_QUOTA_RESOURCES,
    NOVA_QUOTA_RESOURCES,
    capacity,
    project_usage,
    set_project_limits,
)
from isthmus.coordinator.multisite.addresses import check_record
from openstack_cloud import ADMIN_CLOUD, REGIONS, TwoRegionCloud

# openstacksdk 4.x warns about its own internals on every connection and resource, whatever the caller does
# (an InfluxDB notice without InfluxDB configured, ...): ignored where raised inside openstacksdk only, as the
# agent and the neutron driver do (cloud/session.py, quiet_openstacksdk).
pytestmark = [pytest.mark.filterwarnings(f"ignore::openstack.warnings.RemovedInSDK{v}0Warning:openstack")
              for v in (5, 6)]

ONE, TWO = REGIONS
L3_RESOURCES = ("floatingips", "routers")


def unique(what: str) -> str:
    return f"isthmus-test-{what}-{uuid.uuid4().hex[:8]}"


def has_l3(conn: Any) -> bool:
    return "router" in {e.alias for e in conn.network.extensions()}


# ---------------------------------------------------------------- a connection that records its requests


@dataclass(frozen=True)
class Call:
    service: str  # compute, network, placement
    method: str
    path: str  # without the query
    body: Any  # the JSON body sent
    query: str = field(default="", compare=False)

    def fields(self) -> list[str]:
        return urllib.parse.parse_qs(self.query).get("fields", [])


def response(status: int, body: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    resp.headers["Content-Type"] = "application/json"
    return resp


@dataclass
class Recorder:
    """A real connection whose requests to compute, network and placement are recorded. ``answers`` stand in
    for what this cloud cannot answer (hypervisors, Placement), by (service, path): (status, JSON body);
    ``catalog`` overrides what ``endpoint_for`` finds (None: the service is missing); ``after`` sees each
    real request's call and response body."""

    conn: Any
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    catalog: dict[str, str | None] = field(default_factory=dict)
    after: Callable[[Call, Any], None] | None = None
    calls: list[Call] = field(default_factory=list)

    @property
    def config(self) -> Any:
        return self.conn.config

    def endpoint_for(self, service_type: str, interface: str | None = None,
                     region_name: str | None = None) -> str | None:
        if service_type in self.catalog:
            return self.catalog[service_type]
        found: str | None = self.conn.endpoint_for(service_type, interface, region_name)
        return found

    def __getattr__(self, name: str) -> Any:
        if name in ("compute", "network", "placement"):
            return _RecordingProxy(self, name)
        return getattr(self.conn, name)

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method != "GET"]


@dataclass
class _RecordingProxy:
    recorder: Recorder
    service: str

    def request(self, path: str, method: str, **kwargs: Any) -> Any:
        path_only, _, query = path.partition("?")
        call = Call(self.service, method, path_only, kwargs.get("json"), query)
        self.recorder.calls.append(call)
        if (self.service, call.path) in self.recorder.answers:
            return response(*self.recorder.answers[self.service, call.path])
        resp = getattr(self.recorder.conn, self.service).request(path, method, **kwargs)
        if self.recorder.after is not None:
            self.recorder.after(call, resp.json() if resp.content else None)
        return resp


# ---------------------------------------------------------------- fixtures


@dataclass
class Project:
    """A Keystone project made for one test. ``regions``: where the test makes things for it (removed after the
    test: Keystone does not); ``scoped``: an admin connection scoped to it, per region."""

    id: str
    name: str
    regions: set[str] = field(default_factory=lambda: {TWO})
    scoped: dict[str, Any] = field(default_factory=dict)


def purge(conn: Any, project: Project) -> None:
    """Remove what ``project`` holds in ``conn``'s region, and its quotas there."""
    net, region = conn.network, conn.config.region_name
    if has_l3(conn):
        for fip in net.ips(project_id=project.id):
            net.delete_ip(fip, ignore_missing=True)
        for router in net.routers(project_id=project.id):
            for port in net.ports(device_id=router.id, device_owner="network:router_interface"):
                net.remove_interface_from_router(router, port=port.id)
            net.delete_router(router, ignore_missing=True)
    for port in net.ports(project_id=project.id):
        net.delete_port(port, ignore_missing=True)
    for network in net.networks(project_id=project.id):
        net.delete_network(network, ignore_missing=True)
    for group in net.security_groups(project_id=project.id):
        net.delete_security_group(group, ignore_missing=True)
    if region in project.scoped:  # server groups are made through it only
        for group in project.scoped[region].compute.get("/os-server-groups").json()["server_groups"]:
            project.scoped[region].compute.delete(f"/os-server-groups/{group['id']}")
    conn.network.delete(f"/quotas/{project.id}")
    conn.compute.delete(f"/os-quota-sets/{project.id}")


@pytest.fixture
def project(regions: dict[str, Any]) -> Iterator[Project]:
    made = regions[ONE].identity.create_project(name=unique("project"), domain_id="default")
    project = Project(made.id, made.name)
    try:
        yield project
    finally:
        for region in sorted(project.regions | set(project.scoped)):
            purge(regions[region], project)
        for conn in project.scoped.values():
            conn.close()
        regions[ONE].identity.delete_project(project.id)


def scoped(admin: Any, project: Project) -> Any:
    """An admin connection to ``admin``'s region scoped to ``project``: what Nova counts a project's server
    groups by (they belong to the project of the request)."""
    region = admin.config.region_name
    if region not in project.scoped:
        admin.identity.assign_project_role_to_user(project.id, admin.current_user_id,
                                                   admin.identity.find_role("admin", ignore_missing=False))
        project.scoped[region] = admin.connect_as(project_id=project.id)
    return project.scoped[region]


@pytest.fixture(scope="module")
def l3_region(regions: dict[str, Any]) -> Any:
    """RegionOne's connection; the cloud's Neutron runs its L3 plugin (routers, floating IPs)."""
    conn = regions[ONE]
    assert has_l3(conn), "the cloud's Neutron has no L3 plugin (service_plugins = router in openstack_cloud.py)"
    return conn


# ---------------------------------------------------------------- project usage


def test_usage_follows_what_the_project_makes(regions: dict[str, Any], project: Project) -> None:
    conn, other = regions[TWO], regions[ONE]
    everything = (*NOVA_QUOTA_RESOURCES, *NEUTRON_QUOTA_RESOURCES, "no-such-resource")
    counted = {r for r in everything if r != "no-such-resource" and r != "key_pairs"
               and (r not in L3_RESOURCES or has_l3(conn))}

    # A new project: nothing in use, the default limits. Without compute nodes Nova still counts instances,
    # cores and ram (from its cell database: 0) and enforces their limits; key pairs it does not count.
    usage = project_usage(conn, project.id, everything)
    assert set(usage) == counted
    assert {k: v for k, v in usage.items() if k in NOVA_QUOTA_RESOURCES} == {
        "instances": (0, 10), "cores": (0, 20), "ram": (0, 51200), "server_groups": (0, 10)}
    assert usage["networks"] == (0, 100) and usage["ports"] == (0, 500) and usage["security_groups"] == (0, 10)

    net = conn.network
    networks = [net.create_network(name=unique("net"), project_id=project.id) for _ in range(2)]
    subnet = net.create_subnet(network_id=networks[0].id, project_id=project.id, ip_version=4, cidr="10.9.0.0/24")
    net.create_port(network_id=networks[0].id, project_id=project.id, fixed_ips=[{"subnet_id": subnet.id}])
    net.create_security_group(name=unique("sg"), project_id=project.id)  # and Neutron makes the default group
    scoped(conn, project).compute.post("/os-server-groups", json={
        "server_group": {"name": unique("group"), "policies": ["anti-affinity"]}}).raise_for_status()
    groups = list(net.security_groups(project_id=project.id))
    rules = list(net.security_group_rules(project_id=project.id))
    expected = {"networks": 2, "subnets": 1, "ports": 1, "security_groups": len(groups),
                "security_group_rules": len(rules), "server_groups": 1, "instances": 0}
    usage = project_usage(conn, project.id, expected)  # counted at the request: no waiting
    assert usage == {k: (v, usage[k][1]) for k, v in expected.items()}, usage
    assert len(groups) == 2 and len(rules) >= 4

    # The same project in the other region: nothing there.
    assert project_usage(other, project.id, ("networks", "security_groups", "server_groups")) == {
        "networks": (0, 100), "security_groups": (0, 10), "server_groups": (0, 10)}
    assert project_usage(conn, project.id, ()) == {}
    assert project_usage(conn, project.id, ["no-such-resource"]) == {}


def test_usage_of_a_project_nova_does_not_know(regions: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=f"{TWO}: quota usage of project 0123.*not a valid project"):
        project_usage(regions[TWO], "0123456789abcdef0123456789abcdef", ["instances", "networks"])
    # Neutron takes any project id: its default limits.
    assert project_usage(regions[TWO], "0123456789abcdef0123456789abcdef", ["networks"]) == {"networks": (0, 100)}
    with pytest.raises(SpecError, match="project id"):
        project_usage(regions[TWO], "", ["networks"])


def test_a_missing_service_is_left_out(regions: dict[str, Any], project: Project) -> None:
    no_network = Recorder(regions[TWO], catalog={"network": None})
    assert set(project_usage(no_network, project.id, ("instances", "networks"))) == {"instances"}
    assert set_project_limits(no_network, project.id, {"instances": 5, "networks": 5}) == {"instances": 5}
    assert capacity(no_network)["network_objects"] == dict.fromkeys(
        ("networks", "subnets", "ports", "routers", "floatingips", "security_groups"), 0)
    assert list_addresses(no_network) == []
    assert {c.service for c in no_network.calls} == {"compute"}

    no_compute = Recorder(regions[TWO], catalog={"compute": None})
    assert set(project_usage(no_compute, project.id, ("instances", "networks"))) == {"networks"}
    assert set_project_limits(no_compute, project.id, {"instances": 6, "networks": 5}) == {"networks": 5}
    assert capacity(no_compute)["source"] == "unknown"
    assert {c.service for c in no_compute.calls} == {"network"}


def test_a_service_that_cannot_be_reached_is_a_cloud_error(two_region_cloud: TwoRegionCloud, port: int) -> None:
    config = openstack.config.OpenStackConfig(config_files=[str(two_region_cloud.clouds_yaml)], vendor_files=[])
    conn = openstack.connection.Connection(config=config.get_one(
        cloud=ADMIN_CLOUD, region_name=TWO, network_endpoint_override=f"http://127.0.0.1:{port}/v2.0"))
    try:
        started = time.monotonic()
        for call in (lambda: project_usage(conn, conn.current_project_id, ["instances", "networks"]),
                     lambda: set_project_limits(conn, conn.current_project_id, {"networks": 100}),
                     lambda: capacity(conn), lambda: list_addresses(conn)):
            with pytest.raises(CloudError, match=TWO):
                call()
        assert time.monotonic() - started < 20
    finally:
        conn.close()


# ---------------------------------------------------------------- project limits


def test_set_project_limits_writes_only_what_differs(regions: dict[str, Any], project: Project) -> None:
    conn = regions[TWO]
    recorder = Recorder(conn)
    limits = {"instances": 4, "cores": -1, "ram": 4096, "key_pairs": 7, "server_groups": 3, "networks": 5,
              "subnets": 6, "ports": 50, "security_groups": 3, "security_group_rules": 30}
    assert set_project_limits(recorder, project.id, limits) == limits
    assert [(c.service, c.method) for c in recorder.writes()] == [("compute", "PUT"), ("network", "PUT")]
    nova = conn.compute.get(f"/os-quota-sets/{project.id}").json()["quota_set"]
    assert {k: nova[k] for k in NOVA_QUOTA_RESOURCES} == {k: limits[k] for k in NOVA_QUOTA_RESOURCES}
    neutron = conn.network.get(f"/quotas/{project.id}").json()["quota"]
    assert (neutron["network"], neutron["subnet"], neutron["port"], neutron["security_group"],
            neutron["security_group_rule"]) == (5, 6, 50, 3, 30)
    usage = project_usage(conn, project.id, limits)
    assert {k: limit for k, (_, limit) in usage.items()} == {k: v for k, v in limits.items() if k != "key_pairs"}

    # In force already: read, nothing written.
    recorder.calls.clear()
    assert set_project_limits(recorder, project.id, limits) == {}
    assert recorder.writes() == [] and {c.service for c in recorder.calls} == {"compute", "network"}

    # One change: one write, of it alone.
    recorder.calls.clear()
    assert set_project_limits(recorder, project.id, {**limits, "networks": 8}) == {"networks": 8}
    assert recorder.writes() == [Call("network", "PUT", f"/quotas/{project.id}", {"quota": {"network": 8}})]
    assert project_usage(conn, project.id, ["networks"]) == {"networks": (0, 8)}
    recorder.calls.clear()
    assert set_project_limits(recorder, project.id, {"cores": 16}) == {"cores": 16}
    assert recorder.writes() == [Call("compute", "PUT", f"/os-quota-sets/{project.id}",
                                      {"quota_set": {"cores": 16, "force": True}})]

    # Routers and floating IPs: set where Neutron has its L3 plugin, skipped where it has not.
    assert set_project_limits(conn, project.id, {"routers": 2}) == ({"routers": 2} if has_l3(conn) else {})

    # Refused before any request.
    recorder.calls.clear()
    for bad, match in (({"networks": -2}, "networks=-2"), ({"cores": 1.5}, "cores=1.5"),
                       ({"instances": True}, "instances=True"), ({"volumes": 3}, "'volumes': not one of")):
        with pytest.raises(SpecError, match=match):
            set_project_limits(recorder, project.id, bad)  # type: ignore[arg-type]
    assert recorder.calls == []


def test_limits_below_usage_are_set_and_enforced(regions: dict[str, Any], project: Project) -> None:
    conn = regions[TWO]
    net = conn.network
    net.create_security_group(name=unique("sg"), project_id=project.id)  # with the default group: 2 in use

    # Neutron takes a limit below what is in use and refuses the next group.
    assert set_project_limits(conn, project.id, {"security_groups": 1}) == {"security_groups": 1}
    assert project_usage(conn, project.id, ["security_groups"]) == {"security_groups": (2, 1)}
    with pytest.raises(os_exceptions.ConflictException, match="(?i)quota exceeded"):
        net.create_security_group(name=unique("sg"), project_id=project.id)
    assert set_project_limits(conn, project.id, {"security_groups": 3}) == {"security_groups": 3}
    net.create_security_group(name=unique("sg"), project_id=project.id)
    with pytest.raises(os_exceptions.ConflictException, match="(?i)quota exceeded"):
        net.create_security_group(name=unique("sg"), project_id=project.id)

    # Nova refuses one without force (400), which set_project_limits always says; then no new server group.
    nova = scoped(conn, project).compute
    for _ in range(2):
        nova.post("/os-server-groups", json={"server_group": {"name": unique("group"), "policies": ["affinity"]}}) \
            .raise_for_status()
    refused = conn.compute.put(f"/os-quota-sets/{project.id}", json={"quota_set": {"server_groups": 1}})
    assert refused.status_code == 400 and "greater than or equal to already used" in refused.text
    assert set_project_limits(conn, project.id, {"server_groups": 1}) == {"server_groups": 1}
    assert project_usage(conn, project.id, ["server_groups"]) == {"server_groups": (2, 1)}
    third = nova.post("/os-server-groups", json={"server_group": {"name": unique("group"), "policies": ["affinity"]}})
    assert third.status_code == 403 and "Quota exceeded" in third.text


# ---------------------------------------------------------------- capacity


def test_capacity_without_compute_nodes_counts_network_objects(regions: dict[str, Any], project: Project) -> None:
    conn = regions[TWO]
    net = conn.network

    def defaults() -> int:  # Neutron makes a project's default group with its first group
        return sum(1 for g in net.security_groups() if g.name == "default")

    before, defaults_before = capacity(conn), defaults()
    assert {k: v for k, v in before.items() if k != "network_objects"} == {
        "compute_known": False, "source": "unknown", "vcpus": 0, "vcpus_used": 0, "ram_mb": 0, "ram_mb_used": 0,
        "instances": 0}
    listed = {"networks": len(list(net.networks())), "subnets": len(list(net.subnets())),
              "ports": len(list(net.ports())), "security_groups": len(list(net.security_groups()))}
    assert {k: before["network_objects"][k] for k in listed} == listed

    # In the test's project and in the admin's: every project's objects count.
    admin = conn.current_project_id
    for_admin: list[tuple[Callable[..., Any], Any]] = []  # the project fixture removes the test project's
    try:
        for owner in (project.id, admin):
            network = net.create_network(name=unique("net"), project_id=owner)
            if owner == admin:
                for_admin.append((net.delete_network, network))
            subnet = net.create_subnet(network_id=network.id, project_id=owner, ip_version=4, cidr="10.8.0.0/24")
            port = net.create_port(network_id=network.id, project_id=owner, fixed_ips=[{"subnet_id": subnet.id}])
            if owner == admin:
                for_admin.append((net.delete_port, port))
            group = net.create_security_group(name=unique("sg"), project_id=owner)
            if owner == admin:
                for_admin.append((net.delete_security_group, group))
        made = {"networks": 2, "subnets": 2, "ports": 2, "security_groups": 2 + defaults() - defaults_before}
        recorder = Recorder(conn)
        after = capacity(recorder, page_size=3)
        assert after["network_objects"] == {k: v + made.get(k, 0) for k, v in before["network_objects"].items()}
        lists = [c for c in recorder.calls if c.service == "network"]
        assert {c.method for c in lists} == {"GET"}
        for name in listed:  # page by page: a full page has a next one (empty after the last item)
            pages = [c for c in lists if c.path == "/" + name.replace("_", "-")]
            assert len(pages) == after["network_objects"][name] // 3 + 1, (name, pages)
        assert all(c.fields() == ["id"] for c in lists), "only ids are fetched to count"
    finally:
        for delete, made_thing in reversed(for_admin):
            delete(made_thing, ignore_missing=True)


def test_capacity_from_hypervisors_or_placement(regions: dict[str, Any]) -> None:
    """This cloud has no compute node and no Placement: their answers are stood in for, in their API's shape
    (Nova's os-hypervisors/detail at 2.1, Placement's resource providers, inventories, allocations)."""
    conn = regions[TWO]
    hypervisors = {"hypervisors": [
        {"id": 1, "hypervisor_hostname": "c1", "state": "up", "status": "enabled", "vcpus": 16, "vcpus_used": 6,
         "memory_mb": 65536, "memory_mb_used": 12800, "running_vms": 3, "local_gb": 500},
        {"id": 2, "hypervisor_hostname": "c2", "state": "up", "status": "enabled", "vcpus": 8, "vcpus_used": 0,
         "memory_mb": 32768, "memory_mb_used": 512, "running_vms": 0, "local_gb": 500}]}
    from_nova = capacity(Recorder(conn, answers={("compute", "/os-hypervisors/detail"): (200, hypervisors)}))
    assert {k: v for k, v in from_nova.items() if k != "network_objects"} == {
        "compute_known": True, "source": "hypervisors", "vcpus": 24, "vcpus_used": 6, "ram_mb": 98304,
        "ram_mb_used": 13312, "instances": 3}

    inventory = {"VCPU": {"total": 32, "reserved": 0, "allocation_ratio": 4.0, "min_unit": 1, "max_unit": 32,
                          "step_size": 1},
                 "MEMORY_MB": {"total": 131072, "reserved": 512, "allocation_ratio": 1.0, "min_unit": 1,
                               "max_unit": 131072, "step_size": 1}}
    placement = {
        ("placement", "/resource_providers"): (200, {"resource_providers": [
            {"uuid": "p-compute", "name": "c1", "generation": 3},
            {"uuid": "p-disk", "name": "shared", "generation": 1}]}),
        ("placement", "/resource_providers/p-compute/inventories"): (200, {
            "inventories": inventory, "resource_provider_generation": 3}),
        ("placement", "/resource_providers/p-compute/allocations"): (200, {"allocations": {
            "vm-1": {"resources": {"VCPU": 2, "MEMORY_MB": 4096}},
            "vm-2": {"resources": {"VCPU": 4, "MEMORY_MB": 8192}}}, "resource_provider_generation": 3}),
        ("placement", "/resource_providers/p-disk/inventories"): (200, {
            "inventories": {"DISK_GB": {"total": 2000}}, "resource_provider_generation": 1}),
    }
    expected = {"compute_known": True, "source": "placement", "vcpus": 32, "vcpus_used": 6, "ram_mb": 131072,
                "ram_mb_used": 12288, "instances": 2}
    recorder = Recorder(conn, answers=placement, catalog={"placement": "http://placement.invalid"})
    from_placement = capacity(recorder)
    assert {k: v for k, v in from_placement.items() if k != "network_objects"} == expected
    # Nova was asked first: no hypervisors (this cloud's real answer).
    assert recorder.calls[0] == Call("compute", "GET", "/os-hypervisors/detail", None)
    # Nova refusing (not admin) is not knowing, as is a Placement without compute nodes.
    refused = {("compute", "/os-hypervisors/detail"): (403, {"forbidden": {"code": 403, "message": "Policy"}})}
    assert {k: v for k, v in capacity(Recorder(conn, answers={**placement, **refused}, catalog={
        "placement": "http://placement.invalid"})).items() if k != "network_objects"} == expected
    storage_only = {**placement, ("placement", "/resource_providers"): (200, {"resource_providers": [
        {"uuid": "p-disk", "name": "shared", "generation": 1}]})}
    unknown = capacity(Recorder(conn, answers=storage_only, catalog={"placement": "http://placement.invalid"}))
    assert (unknown["compute_known"], unknown["source"], unknown["vcpus"]) == (False, "unknown", 0)


# ---------------------------------------------------------------- addresses


def mine(records: list[dict[str, Any]], ids: set[str]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in records if r["id"] in ids}


def test_list_addresses(l3_region: Any, project: Project) -> None:
    conn, net, pid = l3_region, l3_region.network, project.id
    project.regions = {ONE}
    network = net.create_network(name=unique("net"), project_id=pid)
    v4 = net.create_subnet(network_id=network.id, project_id=pid, ip_version=4, cidr="10.7.0.0/24", name="v4")
    v6 = net.create_subnet(network_id=network.id, project_id=pid, ip_version=6, cidr="fd00:7::/64", name="v6")
    port = net.create_port(network_id=network.id, project_id=pid, name="web", device_owner="compute:nova",
                           device_id="vm-1", mac_address="FA:16:3E:0A:0B:0C",
                           fixed_ips=[{"subnet_id": v4.id, "ip_address": "10.7.0.10"},
                                      {"subnet_id": v6.id, "ip_address": "fd00:7::10"}])
    bare = net.create_port(network_id=network.id, project_id=pid, device_id="vm-2")  # no owner: the device id
    external = net.create_network(name=unique("ext"), project_id=pid, is_router_external=True)
    public = net.create_subnet(network_id=external.id, project_id=pid, ip_version=4, cidr="198.51.100.0/24")
    loose = net.create_ip(floating_network_id=external.id, project_id=pid)
    router = net.create_router(name="gw", project_id=pid, external_gateway_info={"network_id": external.id})
    lone = net.create_router(name="lone", project_id=pid)  # no gateway: no address
    net.add_interface_to_router(router, subnet=v4.id)
    bound = net.create_ip(floating_network_id=external.id, project_id=pid, port_id=port.id,
                          fixed_ip_address="10.7.0.10")
    gateway_ip = net.get_router(router).external_gateway_info["external_fixed_ips"][0]["ip_address"]

    recorder = Recorder(conn)
    records = list_addresses(recorder, page_size=4)
    for r in records:
        check_record({**r, "region": "r"})
        assert r["mac"] == r["mac"].lower()
    assert len({(r["kind"], r["id"]) for r in records}) == len(records)
    base = {"project": pid, "ips": [], "mac": "", "cidr": "", "device": "", "name": ""}
    unnamed = [{k: v for k, v in r.items() if k != "network_name"} for r in records]
    assert mine(unnamed, {port.id, bare.id, v4.id, v6.id, public.id, loose.id, bound.id, router.id, lone.id}) == {
        port.id: {**base, "kind": "port", "id": port.id, "network": network.id, "ips": ["10.7.0.10", "fd00:7::10"],
                  "mac": "fa:16:3e:0a:0b:0c", "device": "compute:nova", "name": "web"},
        bare.id: {**base, "kind": "port", "id": bare.id, "network": network.id,
                  "ips": [f["ip_address"] for f in bare.fixed_ips], "mac": bare.mac_address, "device": "vm-2"},
        v4.id: {**base, "kind": "subnet", "id": v4.id, "network": network.id, "cidr": "10.7.0.0/24", "name": "v4"},
        v6.id: {**base, "kind": "subnet", "id": v6.id, "network": network.id, "cidr": "fd00:7::/64", "name": "v6"},
        public.id: {**base, "kind": "subnet", "id": public.id, "network": external.id, "cidr": "198.51.100.0/24"},
        loose.id: {**base, "kind": "floating_ip", "id": loose.id, "network": external.id,
                   "ips": [loose.floating_ip_address]},
        bound.id: {**base, "kind": "floating_ip", "id": bound.id, "network": external.id,
                   "ips": [bound.floating_ip_address], "device": port.id},
        router.id: {**base, "kind": "router_gateway", "id": router.id, "network": external.id, "ips": [gateway_ip],
                    "name": "gw"},
    }
    # Every record names its network for people, too.
    names = {network.id: network.name, external.id: external.name}
    assert all(r["network_name"] == names[r["network"]] for r in records if r["network"] in names)
    assert len(bare.fixed_ips) == 2 and {":" in f["ip_address"] for f in bare.fixed_ips} == {True, False}
    # The router's interface, its gateway's and the floating IPs' own ports are ports too.
    devices = {r["device"]: r for r in records if r["kind"] == "port" and r["network"] in (network.id, external.id)}
    assert devices["network:router_interface"]["ips"] == ["10.7.0.1"]
    gateway_port = devices["network:router_gateway"]
    assert gateway_port["ips"] == [gateway_ip] and gateway_port["project"] == ""
    assert devices["network:floatingip"]["project"] == ""

    # Only what a record needs is fetched, each collection in pages.
    wanted = {"/ports": ["id", "project_id", "network_id", "fixed_ips", "mac_address", "device_owner", "device_id",
                         "name"],
              "/floatingips": ["id", "project_id", "floating_network_id", "floating_ip_address", "port_id"],
              "/routers": ["id", "project_id", "external_gateway_info", "name"],
              "/subnets": ["id", "project_id", "network_id", "cidr", "name"], "/networks": ["id", "name"]}
    assert {c.path for c in recorder.calls} == set(wanted) and all(c.method == "GET" for c in recorder.calls)
    assert all(c.fields() == wanted[c.path] for c in recorder.calls)
    assert len([c for c in recorder.calls if c.path == "/ports"]) > 1


def test_list_addresses_survives_a_deleted_page_marker(regions: dict[str, Any], project: Project) -> None:
    """Neutron answers 404 to a page whose marker (the last item of the page before) was deleted meanwhile."""
    conn, net = regions[TWO], regions[TWO].network
    network = net.create_network(name=unique("net"), project_id=project.id)
    net.create_subnet(network_id=network.id, project_id=project.id, ip_version=4, cidr="10.6.0.0/24")
    ours = [net.create_port(network_id=network.id, project_id=project.id).id for _ in range(2)]
    in_order = [p["id"] for p in conn.network.get("/ports?fields=id&sort_key=id&sort_dir=asc").json()["ports"]]
    # A page ends with one of ours when its position is a multiple of the page size: not the first port.
    position = min(in_order.index(p) + 1 for p in ours if in_order.index(p) > 0)
    deleted: list[str] = []

    def delete_the_marker(call: Call, body: Any) -> None:
        items = (body or {}).get("ports") or []
        if call.path == "/ports" and not deleted and items and items[-1]["id"] in ours:
            deleted.append(items[-1]["id"])
            net.delete_port(items[-1]["id"])

    records = list_addresses(Recorder(conn, after=delete_the_marker), page_size=position)
    listed = [r["id"] for r in records if r["kind"] == "port"]
    assert len(deleted) == 1 and len(listed) == len(set(listed))
    # The deleted port was listed on its page; every other port of the region once.
    assert set(listed) == {p.id for p in net.ports()} | set(deleted)

    # With one item a page, nothing is left to go on from: a CloudError, retried later.
    deleted.clear()
    with pytest.raises(CloudError, match="every item of a page was deleted"):
        list_addresses(Recorder(conn, after=delete_the_marker), page_size=1)
    assert len(deleted) == 1
