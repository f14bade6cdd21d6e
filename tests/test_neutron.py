"""isthmus inside Neutron: networking-l2gw's REST API through isthmus' service driver, on a real neutron-server.

A second neutron-server of RegionOne (Debian's, with python3-networking-l2gw) loads isthmus by configuration
only; each test starts a coordinator on the unix socket that neutron-server is configured to reach.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from neutron_isthmus import NeutronIsthmus, install_plugin, neutron_conf
from openstack_cloud import TwoRegionCloud, _token

from conftest import Proc, coordinator_cmd, ctl, wait_for


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
    return NeutronIsthmus(url, socket, site, _token(two_region_cloud.auth_url, two_region_cloud.password))


@pytest.fixture
def coordinator(etcd: str, neutron: NeutronIsthmus, tmp_path: Path, procs: Callable[..., Proc]) -> str:
    """A coordinator on the session's (emptied) etcd, on loopback and on the socket neutron-server reaches."""
    neutron.socket.unlink(missing_ok=True)
    ready = tmp_path / "addr"
    cmd = coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd)
    cmd[cmd.index("--listen") + 1] += f",unix:{neutron.socket}"
    procs("coordinator", cmd, tmp_path / "coord.log")
    return str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator"))


def seed_devices(c: tuple[str, ...]) -> dict[str, str]:
    """Two regions with a VTEP gateway device each; their ids."""
    ids = {}
    for n, site in enumerate(("region-one", "region-two"), start=1):
        ctl(*c, "site", "create", site, "--kind", "region")
        out = ctl(*c, "gateway-device", "create", f"{site}/gw", "--type", "router_vtep", "--tunnel-ip",
                  f"192.0.2.{n}", "-o", "json").stdout
        import json
        ids[site] = json.loads(out)["id"]
    return ids


def test_border_form_over_rest_creates_the_gateway_in_isthmus(neutron: NeutronIsthmus, coordinator: str) -> None:
    c = ("--coordinator", coordinator)
    ids = seed_devices(c)
    body = {"l2_gateway": {"name": "border", "devices": [
        {"device_id": ids["region-one"], "segmentation_id": 5000},
        {"device_id": ids["region-two"], "segmentation_id": 5000}]}}
    made = neutron.request("POST", "/l2-gateways", body)
    assert made.status == 201, made.error
    gw = made.body["l2_gateway"]
    listed = ctl(*c, "l2-gateway", "get", gw["id"], "-o", "json").stdout
    assert ids["region-one"] in listed and "5000" in listed
