"""isthmus inside Neutron: networking-l2gw's REST API through isthmus' service driver, on a real neutron-server.

A second neutron-server of RegionOne (Debian's, with python3-networking-l2gw) loads isthmus by configuration
only; each test starts a coordinator on the unix socket that neutron-server is configured to reach (the
``neutron`` and ``neutron_coordinator`` fixtures in conftest.py, shared with test_neutron_infra.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from isthmus.v1 import l2gw_pb2 as l2
from isthmus.v1 import l2gw_pb2_grpc
from neutron_isthmus import REGION, NeutronIsthmus
from openstack_cloud import REGION_CLOUDS, TwoRegionCloud, _token


@dataclass
class Coordinator:
    address: str
    proc: Proc
    restart: Callable[[], str]

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ctl("--coordinator", self.address, *args, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "-o", "json").stdout)


@pytest.fixture
def coordinator(etcd: str, neutron: NeutronIsthmus, tmp_path: Path, procs: Callable[..., Proc]) -> Coordinator:
    """A coordinator on the session's (emptied) etcd, on loopback and on the socket neutron-server reaches."""
    runs = iter(range(1, 100))

    def start() -> tuple[str, Proc]:
        n = next(runs)
        neutron.socket.unlink(missing_ok=True)
        ready = tmp_path / f"addr{n}"
        cmd = coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd)
        cmd[cmd.index("--listen") + 1] += f",unix:{neutron.socket}"
        proc = procs("coordinator", cmd, tmp_path / f"coord{n}.log")
        return str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator")), proc

    address, proc = start()
    coord = Coordinator(address, proc, lambda: "")

    def restart() -> str:
        coord.address, coord.proc = start()
        return coord.address

    coord.restart = restart
    return coord


def seed_devices(coord: Coordinator, kind: str = "router_vtep") -> dict[str, str]:
    """Two regions with a gateway device each; their ids."""
    ids = {}
    for n, site in enumerate(("region-one", "region-two"), start=1):
        coord.ctl("site", "create", site, "--kind", "region")
        ids[site] = coord.json("gateway-device", "create", f"{site}/gw", "--type", kind,
                               "--tunnel-ip", f"192.0.2.{n}")["id"]
    return ids


def border_body(ids: dict[str, str], seg: Any = 5000, name: str = "border") -> dict[str, Any]:
    return {"l2_gateway": {"name": name, "devices": [{"device_id": ids[s], "segmentation_id": seg}
                                                     for s in ("region-one", "region-two")]}}


def network(neutron: NeutronIsthmus, name: str, token: str | None = None) -> dict[str, Any]:
    made = neutron.request("POST", "/networks", {"network": {"name": name}}, token=token)
    assert made.status == 201, made.error
    return made.body["network"]  # type: ignore[no-any-return]


def neutron_gateways(neutron: NeutronIsthmus) -> list[dict[str, Any]]:
    answer = neutron.request("GET", "/l2-gateways")
    assert answer.status == 200, answer.error
    return answer.body["l2_gateways"]  # type: ignore[no-any-return]


def isthmus_gateways(coord: Coordinator) -> list[dict[str, Any]]:
    return coord.json("l2-gateway", "list")  # type: ignore[no-any-return]


@pytest.fixture
def cleanup(neutron: NeutronIsthmus) -> Iterator[None]:
    """Neutron's database outlives a test's etcd: remove the l2-gateways (and their connections) a test made."""
    yield
    for conn in neutron.request("GET", "/l2-gateway-connections").body.get("l2_gateway_connections", []):
        neutron.request("DELETE", f"/l2-gateway-connections/{conn['id']}")
    for gw in neutron.request("GET", "/l2-gateways").body.get("l2_gateways", []):
        neutron.request("DELETE", f"/l2-gateways/{gw['id']}")


def test_border_form_over_rest_creates_the_gateway_in_isthmus_under_neutrons_id(
        neutron: NeutronIsthmus, coordinator: Coordinator, cleanup: None) -> None:
    ids = seed_devices(coordinator)
    made = neutron.request("POST", "/l2-gateways", border_body(ids))
    assert made.status == 201, made.error
    gw = made.body["l2_gateway"]
    # Neutron stores the border device as networking-l2gw's form: one interface without a name.
    stored = sorted((d["device_name"], [(i["name"], [int(x) for x in i["segmentation_id"]]) for i in d["interfaces"]])
                    for d in gw["devices"])
    assert stored == sorted((ids[s], [("", [5000])]) for s in ("region-one", "region-two"))
    there = coordinator.json("l2-gateway", "get", gw["id"])
    assert there["owner"] == "neutron" and there["project_id"] == gw["tenant_id"]
    # The coordinator's audit names the Keystone user and project behind neutron-server's call.
    audit = wait_for(lambda: [e for e in coordinator.json("audit") if e["method"].endswith("/CreateL2Gateway")],
                     10, "the audit event of the create")
    assert f"project={gw['tenant_id']}" in audit[0]["on_behalf_of"] and "keystone user=" in audit[0]["on_behalf_of"]
    assert sorted((d["device_id"], d["segmentation_id"]) for d in there["devices"]) == sorted(
        (ids[s], 5000) for s in ("region-one", "region-two"))

    net = network(neutron, "blue")
    conn = neutron.request("POST", "/l2-gateway-connections",
                           {"l2_gateway_connection": {"l2_gateway_id": gw["id"], "network_id": net["id"]}})
    assert conn.status == 201, conn.error
    cid = conn.body["l2_gateway_connection"]["id"]
    there = coordinator.json("l2-gateway-connection", "get", cid)
    assert (there["network_id"], there["segmentation_id"], there["owner"]) == (net["id"], 5000, "neutron")

    # Deleting through Neutron deletes in isthmus; a gateway with a connection cannot go first (409, kept).
    refused = neutron.request("DELETE", f"/l2-gateways/{gw['id']}")
    assert refused.status == 409, refused.error
    assert [g["id"] for g in isthmus_gateways(coordinator)] == [gw["id"]]
    assert neutron.request("DELETE", f"/l2-gateway-connections/{cid}").status == 204
    assert coordinator.json("l2-gateway-connection", "list") == []
    assert neutron.request("DELETE", f"/l2-gateways/{gw['id']}").status == 204
    assert isthmus_gateways(coordinator) == [] and neutron_gateways(neutron) == []


def test_openstack_l2gw_cli_with_a_keystone_user(two_region_cloud: TwoRegionCloud, neutron: NeutronIsthmus,
                                                 coordinator: Coordinator, tmp_path: Path, cleanup: None) -> None:
    """The real `openstack l2gw` commands (networking-l2gw's OSC plugin), standard form with interfaces."""
    ids = seed_devices(coordinator, kind="network_vlan")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON", "VIRTUAL_ENV"))}
    clouds = tmp_path / "clouds.yaml"  # the cloud's own, with RegionOne's entry naming the isthmus region
    clouds.write_text(two_region_cloud.clouds_yaml.read_text().replace('"RegionOne"', f'"{REGION}"'))
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)

    def openstack(*args: str) -> Any:
        cloud = ["--os-cloud", REGION_CLOUDS["RegionOne"]]
        res = subprocess.run(["openstack", *cloud, *args, "-f", "json"], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode == 0, f"openstack {' '.join(args)}: {res.stderr}"
        return json.loads(res.stdout)

    gw = openstack("l2gw", "create", "tor", "--device", f"name={ids['region-one']},interface_names=eth1|120",
                   "--device", f"name={ids['region-two']},interface_names=eth1|120")
    there = coordinator.json("l2-gateway", "get", gw["ID"])
    assert sorted((d["device_id"], d["segmentation_id"], d["interfaces"]) for d in there["devices"]) == sorted(
        (ids[s], 120, [{"name": "eth1", "segmentation_id": [120]}]) for s in ("region-one", "region-two"))
    net = network(neutron, "green")
    conn = openstack("l2gw", "connection", "create", gw["ID"], net["id"])
    assert coordinator.json("l2-gateway-connection", "get", conn["ID"])["segmentation_id"] == 120
    assert [c["ID"] for c in openstack("l2gw", "connection", "list")] == [conn["ID"]]


def isthmus_unchanged(coord: Coordinator) -> bool:
    return isthmus_gateways(coord) == [] and coord.json("l2-gateway-connection", "list") == []


def test_bad_input_is_400_naming_the_field_and_nothing_is_written(
        neutron: NeutronIsthmus, coordinator: Coordinator, cleanup: None) -> None:
    ids = seed_devices(coordinator)
    vlan = coordinator.json("gateway-device", "create", "region-one/tor", "--type", "network_vlan",
                            "--tunnel-ip", "192.0.2.9")["id"]
    cases = [
        # (body, what the message must say): refused by isthmus' validator at the API layer, or by isthmus itself.
        (border_body(ids, seg=16777216), "devices[0].segmentation_id: 16777216 is not in 1..16777215"),
        (border_body(ids, seg="blue"), "devices[0].segmentation_id: 'blue' is not a number"),
        ({"l2_gateway": {"name": "x", "devices": [{"device_id": ids["region-one"], "segmentation_id": 7,
                                                    "vlan": 3}]}}, "devices[0]: a border device has"),
        ({"l2_gateway": {"name": "x", "devices": [{"device_id": "no-such-device", "segmentation_id": 7}]}},
         "devices[0].device_id: gateway device no-such-device does not exist"),
        ({"l2_gateway": {"name": "x", "devices": [{"device_id": vlan, "segmentation_id": 5000}]}},
         "devices[0].segmentation_id: 5000 is out of range 1..4094"),
        ({"l2_gateway": {"name": "x", "devices": [{"device_id": ids["region-one"], "segmentation_id": 7},
                                                   {"device_id": vlan, "segmentation_id": 7}]}},
         "devices[1].device_id: devices"),
    ]
    for body, text in cases:
        answer = neutron.request("POST", "/l2-gateways", body)
        assert answer.status == 400 and text in answer.error, (body, answer)
        assert neutron_gateways(neutron) == [], f"Neutron kept a row after {answer.error}"
        assert isthmus_unchanged(coordinator), f"isthmus kept something after {answer.error}"

    # A connection between a gateway and a network of another project: 400 naming project_id.
    gw = neutron.request("POST", "/l2-gateways", border_body(ids)).body["l2_gateway"]
    other = neutron.request("POST", "/networks", {"network": {"name": "theirs", "tenant_id": "another-project"}})
    assert other.status == 201, other.error
    answer = neutron.request("POST", "/l2-gateway-connections", {"l2_gateway_connection": {
        "l2_gateway_id": gw["id"], "network_id": other.body["network"]["id"]}})
    assert answer.status == 400 and "project_id: network" in answer.error, answer
    assert neutron.request("GET", "/l2-gateway-connections").body["l2_gateway_connections"] == []
    assert coordinator.json("l2-gateway-connection", "list") == []


def test_no_token_401_and_a_member_403(two_region_cloud: TwoRegionCloud, neutron: NeutronIsthmus,
                                       coordinator: Coordinator, cleanup: None) -> None:
    ids = seed_devices(coordinator)
    assert neutron.request("POST", "/l2-gateways", border_body(ids), token="").status == 401
    member = member_token(two_region_cloud)
    answer = neutron.request("POST", "/l2-gateways", border_body(ids), token=member)
    assert answer.status == 403, answer
    assert neutron_gateways(neutron) == [] and isthmus_unchanged(coordinator)


def member_token(cloud: TwoRegionCloud) -> str:
    """A token of a user with the member role in a project of its own (made once)."""
    admin = _token(cloud.auth_url, cloud.password)
    from openstack_cloud import _api

    def get(path: str) -> Any:
        return _api("GET", f"{cloud.auth_url}{path}", token=admin)[0]

    if not get("/users?name=isthmus-member")["users"]:
        project = _api("POST", f"{cloud.auth_url}/projects", {"project": {"name": "isthmus-member-project",
                                                                          "domain_id": "default"}}, admin)[0]
        user = _api("POST", f"{cloud.auth_url}/users", {"user": {"name": "isthmus-member", "domain_id": "default",
                                                                 "password": "member-secret"}}, admin)[0]
        role = next(r for r in get("/roles")["roles"] if r["name"] in ("member", "_member_"))
        _api("PUT", f"{cloud.auth_url}/projects/{project['project']['id']}/users/{user['user']['id']}/roles/"
             f"{role['id']}", token=admin)
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "isthmus-member", "domain": {"id": "default"}, "password": "member-secret"}}},
        "scope": {"project": {"name": "isthmus-member-project", "domain": {"id": "default"}}}}}
    return _api("POST", f"{cloud.auth_url}/auth/tokens", body)[1]["X-Subject-Token"]


def test_coordinator_stopped_is_503_and_nothing_is_written(neutron: NeutronIsthmus, coordinator: Coordinator,
                                                           cleanup: None) -> None:
    ids = seed_devices(coordinator)
    gw = neutron.request("POST", "/l2-gateways", border_body(ids, name="kept")).body["l2_gateway"]
    coordinator.proc.stop()
    answer = neutron.request("POST", "/l2-gateways", border_body(ids, seg=6000, name="new"))
    assert answer.status == 503 and "isthmus coordinator unavailable" in answer.error, answer
    assert [g["name"] for g in neutron_gateways(neutron)] == ["kept"]
    answer = neutron.request("DELETE", f"/l2-gateways/{gw['id']}")
    assert answer.status == 503, answer
    assert [g["name"] for g in neutron_gateways(neutron)] == ["kept"]
    coordinator.restart()
    assert [g["id"] for g in isthmus_gateways(coordinator)] == [gw["id"]], "the refused delete reached isthmus"
    assert neutron.request("DELETE", f"/l2-gateways/{gw['id']}").status == 204
    assert isthmus_gateways(coordinator) == []


def resync(neutron: NeutronIsthmus, cloud: TwoRegionCloud, *args: str) -> subprocess.CompletedProcess[str]:
    assert cloud.base is not None
    conf = cloud.base / cloud.region("RegionOne").key
    files = [f"--config-file={conf / name}" for name in ("neutron.conf", "ml2.ini", "neutron-isthmus.conf")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(neutron.site)
    return subprocess.run(["/usr/bin/python3", "-m", "isthmus.neutron_plugin.resync", *files, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_drift_behind_neutrons_back_is_reported_and_repaired(
        two_region_cloud: TwoRegionCloud, neutron: NeutronIsthmus, coordinator: Coordinator, cleanup: None) -> None:
    ids = seed_devices(coordinator)
    kept = neutron.request("POST", "/l2-gateways", border_body(ids, seg=7001, name="kept")).body["l2_gateway"]
    lost = neutron.request("POST", "/l2-gateways", border_body(ids, seg=7002, name="lost")).body["l2_gateway"]
    # Behind Neutron's back: one of its gateways deleted from isthmus, one renamed there, and a gateway made as
    # if through Neutron that Neutron never had; plus one made with isthmusctl, which is not Neutron's to touch.
    coordinator.ctl("l2-gateway", "delete", lost["id"])
    coordinator.ctl("l2-gateway", "update", kept["id"], "--name", "renamed-in-isthmus")
    channel = grpc.insecure_channel(coordinator.address)
    stray = l2gw_pb2_grpc.BorderGatewayServiceStub(channel).CreateL2Gateway(l2.L2Gateway(
        name="stray", project_id="p1", owner="neutron",
        devices=[l2.L2GatewayDeviceRef(device_id=ids["region-one"], segmentation_id=7003)]), timeout=10)
    channel.close()
    own = coordinator.json("l2-gateway", "create", "own", "--project", "p1", "--device", ids["region-two"],
                           "--segmentation-id", "7004")

    dry = resync(neutron, two_region_cloud, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"l2-gateway {stray.id}: made through Neutron, which no longer has it; reported (dry run)" in lines
    assert f"l2-gateway {lost['id']}: missing in isthmus; reported (dry run)" in lines
    assert f"l2-gateway {kept['id']}: differs in isthmus; reported (dry run)" in lines
    assert own["id"] not in dry.stdout
    assert sorted(g["name"] for g in isthmus_gateways(coordinator)) == ["own", "renamed-in-isthmus", "stray"]

    done = resync(neutron, two_region_cloud)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 differences, 0 not repaired" in done.stdout, done.stdout
    there = {g["id"]: g for g in isthmus_gateways(coordinator)}
    assert sorted(there) == sorted([kept["id"], lost["id"], own["id"]])
    assert (there[kept["id"]]["name"], there[lost["id"]]["name"], there[lost["id"]]["owner"]) == (
        "kept", "lost", "neutron")
    again = resync(neutron, two_region_cloud)
    assert again.returncode == 0 and "no drift" in again.stdout, again.stdout
    coordinator.ctl("l2-gateway", "delete", own["id"])


@pytest.mark.netns
def test_tenant_hosts_behind_two_sites_ping_once_neutron_joins_them(
        lab: Any, neutron: NeutronIsthmus, coordinator: Coordinator, tmp_path: Path, cleanup: None) -> None:
    """The border form over Neutron's REST API joins tenant segments at two sites (agents with the vxlan driver in
    network namespaces); deleting the connection through Neutron parts them again."""
    from test_border_e2e import address, build, vxlan_devices

    gateways, hosts = build(lab)  # three gateway namespaces; this test uses s1 and s2
    wait_for(lambda: gateways["s1"].ping("192.0.2.2"), 10, "the underlay to work")
    agents = []
    try:
        for site in ("s1", "s2"):
            cmd = agent_cmd(site, f"unix:{neutron.socket}", tmp_path, "--driver", "vxlan", "--reconcile-interval", "1")
            agents.append(gateways[site].popen(cmd, tmp_path / f"agent-{site}.log"))
        ids = {}
        for n, site in enumerate(("s1", "s2"), start=1):
            coordinator.ctl("site", "create", site, "--kind", "region")
            ids[site] = coordinator.json("gateway-device", "create", f"{site}/gw", "--type", "router_vtep",
                                         "--tunnel-ip", f"192.0.2.{n}")["id"]
        body = {"l2_gateway": {"name": "blue", "devices": [{"device_id": ids[s], "segmentation_id": 100}
                                                           for s in ("s1", "s2")]}}
        gw = neutron.request("POST", "/l2-gateways", body)
        assert gw.status == 201, gw.error
        net = network(neutron, "blue")
        conn = neutron.request("POST", "/l2-gateway-connections", {"l2_gateway_connection": {
            "l2_gateway_id": gw.body["l2_gateway"]["id"], "network_id": net["id"]}})
        assert conn.status == 201, conn.error
        blue1 = hosts["blue-s1"]
        wait_for(lambda: blue1.ping(address("blue", "s2")), 30, "blue-s1 to reach blue-s2 across the two sites")
        assert not blue1.ping(address("red", "s2"), count=2), "blue reaches red"

        assert neutron.request("DELETE", f"/l2-gateway-connections/{conn.body['l2_gateway_connection']['id']}"
                               ).status == 204
        wait_for(lambda: all("isx100" not in vxlan_devices(gateways[s]) for s in ("s1", "s2")), 20,
                 "the tunnel device to be removed at both sites")
        wait_for(lambda: not blue1.ping(address("blue", "s2")), 10, "blue-s1 to lose blue-s2")
    finally:
        for p in agents:
            p.terminate()
        for p in agents:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_update_through_neutron_reaches_isthmus(neutron: NeutronIsthmus, coordinator: Coordinator,
                                                cleanup: None) -> None:
    ids = seed_devices(coordinator)
    gw = neutron.request("POST", "/l2-gateways", border_body(ids, seg=7100, name="before")).body["l2_gateway"]
    renamed = neutron.request("PUT", f"/l2-gateways/{gw['id']}", {"l2_gateway": {"name": "after"}})
    assert renamed.status == 200, renamed.error
    there = coordinator.json("l2-gateway", "get", gw["id"])
    assert there["name"] == "after" and there["owner"] == "neutron"
    assert sorted(d["segmentation_id"] for d in there["devices"]) == [7100, 7100]


def test_resync_at_start_repairs_drift(two_region_cloud: TwoRegionCloud, neutron: NeutronIsthmus,
                                       coordinator: Coordinator, cleanup: None) -> None:
    """neutron-server starting (resync_on_start) makes again in isthmus what Neutron has and isthmus lost."""
    ids = seed_devices(coordinator)
    gw = neutron.request("POST", "/l2-gateways", border_body(ids, seg=7200, name="survivor")).body["l2_gateway"]
    coordinator.ctl("l2-gateway", "delete", gw["id"])
    assert isthmus_gateways(coordinator) == []
    two_region_cloud.stop_service("neutron-isthmus", "RegionOne")
    two_region_cloud.start_service("neutron-isthmus", "RegionOne")
    there = wait_for(lambda: isthmus_gateways(coordinator), 30, "the resync at start to make the gateway again")
    assert [(g["id"], g["name"], g["owner"]) for g in there] == [(gw["id"], "survivor", "neutron")]
