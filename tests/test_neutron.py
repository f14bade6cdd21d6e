"""isthmus inside Neutron: networking-l2gw's REST API through isthmus' service driver, on a real neutron-server.

A second neutron-server of RegionOne (Debian's, with python3-networking-l2gw) loads isthmus by configuration
only; each test starts a coordinator on the unix socket that neutron-server is configured to reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Proc, coordinator_cmd, ctl, wait_for
from neutron_isthmus import REGION, NeutronIsthmus, install_plugin, neutron_conf, register_region
from openstack_cloud import REGION_CLOUDS, TwoRegionCloud, _token


@pytest.fixture(scope="session")
def neutron(two_region_cloud: TwoRegionCloud) -> NeutronIsthmus:
    if shutil.which("neutron-db-manage") is None or not Path("/usr/lib/python3/dist-packages/networking_l2gw").is_dir():
        pytest.skip("needs Debian's python3-networking-l2gw (`make test` installs it)")
    base = two_region_cloud.base
    assert base is not None
    site = install_plugin(base / "isthmus-site")
    socket = base / "isthmus" / "coordinator.sock"
    socket.parent.mkdir(exist_ok=True)
    url = two_region_cloud.add_neutron_server("RegionOne", "neutron-isthmus", neutron_conf(site, socket),
                                              env={"PYTHONPATH": str(site)}, subprojects=["networking-l2gw"])
    token = _token(two_region_cloud.auth_url, two_region_cloud.password)
    register_region(two_region_cloud.auth_url, token, url)
    return NeutronIsthmus(url, socket, site, token)


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
