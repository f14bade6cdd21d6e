"""The neutron driver against a real neutron-server (Debian's, ML2 on SQLite, no Keystone) on loopback.

The tests look at Neutron through its HTTP API directly, not through openstacksdk, so
that what the driver did is seen independently of the library it did it with.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Proc
from isthmus.agent.journal import Journal
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import DesiredState
from isthmus.coordinator.etcd import free_port
from isthmus.core import model as m
from isthmus.drivers.base import DriverContext, DriverError
from isthmus.drivers.fake import FakeDriver
from isthmus.drivers.neutron import NeutronDriver

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's neutron lives in the system interpreter, not the venv
PROJECT = "isthmus-test-project"
HEADERS = {"X-Project-Id": PROJECT, "X-Roles": "admin", "Content-Type": "application/json"}
VNI_RANGE = (1000, 1999)  # Neutron's own range; the VNIs of peerings are chosen outside it as in real sites

# neutron-db-manage cannot migrate SQLite; the tables are made from the models instead.
SCHEMA = """
import sys
import sqlalchemy
from neutron.db.migration.models import head  # noqa: F401 (registers every table)
from neutron_lib.db import model_base
model_base.BASEV2.metadata.create_all(sqlalchemy.create_engine("sqlite:///" + sys.argv[1]))
"""

NEUTRON_CONF = """\
[DEFAULT]
auth_strategy = noauth
core_plugin = ml2
service_plugins =
bind_host = 127.0.0.1
bind_port = {port}
transport_url = fake://
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
state_path = {base}
[database]
connection = sqlite:///{base}/neutron.db
[oslo_concurrency]
lock_path = {base}/lock
"""

ML2_INI = """\
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers =
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199
[ml2_type_vxlan]
vni_ranges = {vni_low}:{vni_high}
"""


@dataclass
class NeutronServer:
    endpoint: str
    proc: Proc

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request to the v2.0 API as an admin of PROJECT; the decoded answer (None for 204)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.endpoint}v2.0/{path}", data=data, headers=HEADERS, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def networks(self, **query: str) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return list(self.api("GET", f"networks?{q}")["networks"])

    def network(self, name: str) -> dict[str, Any]:
        found = self.networks(name=name)
        assert len(found) == 1, f"{len(found)} networks named {name}: {found}"
        return found[0]

    def subnets(self, **query: str) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return list(self.api("GET", f"subnets?{q}")["subnets"])

    def create_network(self, name: str, tags: list[str] | None = None, **attrs: Any) -> dict[str, Any]:
        """A network made behind isthmus's back (optionally tagged)."""
        net: dict[str, Any] = self.api("POST", "networks",
                                       {"network": {"name": name, "project_id": PROJECT, **attrs}})["network"]
        if tags:
            self.api("PUT", f"networks/{net['id']}/tags", {"tags": tags})
        return net

    def wipe(self) -> None:
        for net in self.networks():
            self.api("DELETE", f"networks/{net['id']}")


@pytest.fixture(scope="session")
def neutron_server() -> Iterator[NeutronServer]:
    """Debian's neutron-server with ML2 (flat, vlan on physnet1, vxlan) on SQLite, noauth, on a loopback port."""
    binary = shutil.which("neutron-server")
    if binary is None:
        pytest.skip("neutron-server is not installed (Debian package neutron-server)")
    # SQLite syncs on every commit: on tmpfs, where there is one, requests are several times faster.
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="isthmus-neutron-", dir=shm if shm.is_dir() else None))
    proc: Proc | None = None
    try:
        res = subprocess.run([SYSTEM_PYTHON, "-c", SCHEMA, str(base / "neutron.db")], capture_output=True,
                             text=True, timeout=120)
        if res.returncode != 0:
            pytest.fail(f"creating Neutron's tables failed ({res.returncode}): {res.stderr[-2000:]}")
        port = free_port()
        (base / "neutron.conf").write_text(NEUTRON_CONF.format(port=port, base=base))
        (base / "ml2.ini").write_text(ML2_INI.format(vni_low=VNI_RANGE[0], vni_high=VNI_RANGE[1]))
        proc = Proc("neutron-server", [binary, "--config-file", str(base / "neutron.conf"),
                                       "--config-file", str(base / "ml2.ini")], base / "neutron-server.log")
        server = NeutronServer(f"http://127.0.0.1:{port}/", proc)
        deadline = time.monotonic() + 60
        last: object = None
        while True:
            if not proc.alive():
                pytest.fail(f"neutron-server exited ({proc.proc.returncode}): {proc.output()[-3000:]}")
            try:
                server.networks()
                break
            except (OSError, urllib.error.URLError) as exc:
                last = exc
            if time.monotonic() > deadline:
                pytest.fail(f"neutron-server did not answer on port {port} within 60 s; last seen: {last!r}; "
                            f"log: {proc.output()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def neutron(neutron_server: NeutronServer) -> NeutronServer:
    """The session's neutron-server without any network."""
    neutron_server.wipe()
    return neutron_server


def noauth(server: NeutronServer, **opts: str) -> dict[str, str]:
    return {"auth": "none", "endpoint": server.endpoint, "project_id": PROJECT, **opts}


@contextlib.asynccontextmanager
async def opened(site: str, state: Path, opts: dict[str, str]) -> AsyncIterator[NeutronDriver]:
    driver = NeutronDriver(DriverContext(site, state, opts))
    try:
        yield driver
    finally:
        await driver.close()


def peering(name: str, vni: int = 0, site: str = "r1", **props: str) -> m.DesiredPeering:
    """A VXLAN peering with VNI ``vni``, or a BGP one without; ``props`` on the local endpoint."""
    local = m.Endpoint(site, "gw", "192.0.2.1", 65001, properties=dict(props))
    remote = m.Endpoint("r2", "gw", "192.0.2.2", 65002)
    if vni:
        return m.DesiredPeering(name, m.ConnectionType.VXLAN, local, remote, vxlan=m.VxlanParams(vni=vni))
    return m.DesiredPeering(name, m.ConnectionType.BGP, local, remote, bgp=m.BgpParams())


def states(observed: dict[str, m.ObservedPeering]) -> dict[str, str]:
    return {n: o.state.value for n, o in observed.items()}


# ---------------------------------------------------------------- options (no server)


@pytest.mark.parametrize(("opts", "error"), [
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/", "project_id": "p", "colour": "red"}, "neutron.colour"),
    ({}, "neutron.cloud: required"),
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/"}, "needs neutron.endpoint and neutron.project_id"),
    ({"auth": "keystone", "cloud": "x"}, "neutron.auth"),
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/", "project_id": "p", "network_type": "flat"},
     "physical network"),
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/", "project_id": "p", "physical_network": "physnet1"},
     "a vxlan network has no physical network"),
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/", "project_id": "p", "bgp.network_type": "vlan",
      "bgp.segmentation_id": "4095"}, "neutron.bgp.segmentation_id: 4095 is out of range 1..4094"),
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/", "project_id": "p", "shared": "maybe"}, "neutron.shared"),
    ({"auth": "none", "endpoint": "http://127.0.0.1:1/", "project_id": "p", "network_type": "ipx"}, "ipx"),
])
def test_unusable_options_are_terminal_errors_naming_the_option(tmp_path: Path, opts: dict[str, str],
                                                                 error: str) -> None:
    with pytest.raises(DriverError, match=error) as info:
        NeutronDriver(DriverContext("r1", tmp_path, opts))
    assert info.value.terminal


def test_a_cloud_missing_from_clouds_yaml_is_a_terminal_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  lab:\n    auth_type: none\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    with pytest.raises(DriverError, match="cannot use cloud 'elsewhere'") as info:
        NeutronDriver(DriverContext("r1", tmp_path, {"cloud": "elsewhere"}))
    assert info.value.terminal


# ---------------------------------------------------------------- against neutron-server


async def test_vxlan_peering_gets_a_tagged_provider_network_with_its_vni(neutron: NeutronServer,
                                                                        tmp_path: Path) -> None:
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({"c1": peering("c1", vni=5001)})
        observed = await driver.observe()
    assert states(observed) == {"c1": "established"} and observed["c1"].driver == "neutron"
    net = neutron.network("isthmus-r1-c1")
    assert net["provider:network_type"] == "vxlan" and net["provider:segmentation_id"] == 5001
    assert sorted(net["tags"]) == ["isthmus-connection:c1", "isthmus:r1"]
    assert net["project_id"] == PROJECT and not net["shared"] and not net["router:external"]
    assert "VXLAN connection c1 (VNI 5001) of site r1 to r2/gw" in net["description"]
    assert net["subnets"] == []


async def test_reapplying_changes_nothing_even_after_a_restart(neutron: NeutronServer, tmp_path: Path) -> None:
    want = {"c1": peering("c1", vni=5002, **{"neutron.subnet": "10.70.0.0/24"})}
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply(want)
        before = neutron.network("isthmus-r1-c1")
        (sub_before,) = neutron.subnets(network_id=before["id"])
        time.sleep(1.1)  # updated_at has a resolution of one second
        await driver.apply(want)
        assert states(await driver.observe()) == {"c1": "established"}
    async with opened("r1", tmp_path, noauth(neutron)) as restarted:  # no memory of what it did
        await restarted.apply(want)
        assert states(await restarted.observe()) == {"c1": "established"}
    after = neutron.network("isthmus-r1-c1")
    (sub_after,) = neutron.subnets(network_id=after["id"])
    assert (after["id"], after["revision_number"], after["updated_at"]) == (
        before["id"], before["revision_number"], before["updated_at"])
    assert (sub_after["id"], sub_after["revision_number"]) == (sub_before["id"], sub_before["revision_number"])


async def test_subnet_follows_the_endpoint_properties(neutron: NeutronServer, tmp_path: Path) -> None:
    props = {"neutron.subnet": "10.71.0.0/24", "neutron.gateway": "10.71.0.1",
             "neutron.allocation_pool": "10.71.0.10-10.71.0.99"}
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({"c1": peering("c1", vni=5003, **props)})
        assert states(await driver.observe()) == {"c1": "established"}
        net = neutron.network("isthmus-r1-c1")
        (sub,) = neutron.subnets(network_id=net["id"])
        assert (sub["name"], sub["cidr"], sub["gateway_ip"], sub["enable_dhcp"]) == (
            "isthmus-r1-c1", "10.71.0.0/24", "10.71.0.1", False)
        assert sub["allocation_pools"] == [{"start": "10.71.0.10", "end": "10.71.0.99"}]
        assert sorted(sub["tags"]) == ["isthmus-connection:c1", "isthmus:r1"]

        # Gateway and pool change in place.
        props.update({"neutron.gateway": "none", "neutron.allocation_pool": "10.71.0.100-10.71.0.120"})
        await driver.apply({"c1": peering("c1", vni=5003, **props)})
        assert states(await driver.observe()) == {"c1": "established"}
        (changed,) = neutron.subnets(network_id=net["id"])
        assert changed["id"] == sub["id"] and changed["gateway_ip"] is None
        assert changed["allocation_pools"] == [{"start": "10.71.0.100", "end": "10.71.0.120"}]

        # A new CIDR is a new subnet; an IPv6 one works alike.
        await driver.apply({"c1": peering("c1", vni=5003, **{"neutron.subnet": "fd00:71::/64"})})
        assert states(await driver.observe()) == {"c1": "established"}
        (v6,) = neutron.subnets(network_id=net["id"])
        assert v6["id"] != sub["id"] and v6["cidr"] == "fd00:71::/64" and v6["ip_version"] == 6

        # Without the property the subnet goes; the network stays.
        await driver.apply({"c1": peering("c1", vni=5003)})
        assert states(await driver.observe()) == {"c1": "established"}
        assert neutron.subnets(network_id=net["id"]) == [] and neutron.network("isthmus-r1-c1")["id"] == net["id"]


async def test_wrong_endpoint_properties_are_the_peering_error(neutron: NeutronServer, tmp_path: Path) -> None:
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({"bad": peering("bad", vni=5004, **{"neutron.subnet": "10.72.0.1/24"}),
                            "good": peering("good", vni=5005)})
        observed = await driver.observe()
        assert states(observed) == {"bad": "error", "good": "established"}
        assert "neutron.subnet: '10.72.0.1/24' is not a CIDR" in observed["bad"].error
        assert neutron.networks(name="isthmus-r1-bad") == []

        # A typo in the properties of a working peering leaves its network as it is.
        await driver.apply({"good": peering("good", vni=5005, **{"neutron.gateway": "10.72.0.1"})})
        observed = await driver.observe()
        assert states(observed) == {"good": "error"} and "needs neutron.subnet" in observed["good"].error
        assert neutron.network("isthmus-r1-good")["provider:segmentation_id"] == 5005


async def test_network_is_removed_with_its_subnet_when_the_peering_goes(neutron: NeutronServer,
                                                                       tmp_path: Path) -> None:
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({"c1": peering("c1", vni=5006, **{"neutron.subnet": "10.73.0.0/24"}),
                            "c2": peering("c2", vni=5007)})
        gone = neutron.network("isthmus-r1-c1")
        await driver.apply({"c2": peering("c2", vni=5007)})
        assert states(await driver.observe()) == {"c2": "established"}
    assert neutron.networks(name="isthmus-r1-c1") == [] and neutron.subnets(network_id=gone["id"]) == []
    assert neutron.network("isthmus-r1-c2")["provider:segmentation_id"] == 5007


async def test_networks_isthmus_does_not_own_are_never_touched(neutron: NeutronServer, tmp_path: Path) -> None:
    same_name = neutron.create_network("isthmus-r1-c1")  # no tags
    similar = neutron.create_network("isthmus-r1-c1-copy", ["isthmus:r1", "isthmus-connection:c1"])
    one_tag = neutron.create_network("isthmus-r1-c2", ["isthmus:r1"])
    other_site = neutron.create_network("isthmus-r9-c1", ["isthmus:r9", "isthmus-connection:c1"])
    foreign = [neutron.api("GET", f"networks/{n['id']}")["network"] for n in (same_name, similar, one_tag, other_site)]

    def unchanged() -> None:
        for net in foreign:
            assert neutron.api("GET", f"networks/{net['id']}")["network"] == net

    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({})
        unchanged()
        await driver.apply({"c1": peering("c1", vni=5008)})
        assert states(await driver.observe()) == {"c1": "established"}
        mine = [n for n in neutron.networks(name="isthmus-r1-c1") if n["id"] != same_name["id"]]
        assert len(mine) == 1 and mine[0]["provider:segmentation_id"] == 5008
        await driver.apply({})
        unchanged()
    assert {n["id"] for n in neutron.networks()} == {n["id"] for n in foreign}


async def test_an_owned_network_carrying_a_foreign_subnet_is_not_removed(neutron: NeutronServer,
                                                                        tmp_path: Path) -> None:
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({"c1": peering("c1", vni=5009)})
        net = neutron.network("isthmus-r1-c1")
        neutron.api("POST", "subnets", {"subnet": {"network_id": net["id"], "cidr": "10.74.0.0/24",
                                                   "ip_version": 4, "project_id": PROJECT}})
        await driver.apply({})
    assert neutron.network("isthmus-r1-c1")["id"] == net["id"] and len(neutron.subnets(network_id=net["id"])) == 1


async def test_segmentation_id_in_use_is_the_peering_error_with_neutrons_message(neutron: NeutronServer,
                                                                                tmp_path: Path) -> None:
    taken = neutron.create_network("someone-elses", **{"provider:network_type": "vxlan",
                                                       "provider:segmentation_id": 5100})
    async with opened("r1", tmp_path, noauth(neutron)) as driver:
        await driver.apply({"c1": peering("c1", vni=5100), "c2": peering("c2", vni=5101)})
        observed = await driver.observe()
    assert states(observed) == {"c1": "error", "c2": "established"}
    assert "isthmus-r1-c1: Unable to create the network. The tunnel ID 5100 is in use. (HTTP 409)" \
        == observed["c1"].error
    assert neutron.networks(name="isthmus-r1-c1") == []
    assert neutron.api("GET", f"networks/{taken['id']}")["network"]["revision_number"] == taken["revision_number"]


async def test_bgp_vlan_settings_update_in_place_and_a_new_vni_replaces(neutron: NeutronServer,
                                                                       tmp_path: Path) -> None:
    vlan = {"bgp.network_type": "vlan", "bgp.physical_network": "physnet1", "bgp.segmentation_id": "150"}
    want = {"b1": peering("b1"), "v1": peering("v1", vni=5010)}
    async with opened("r1", tmp_path, noauth(neutron, **vlan)) as driver:
        await driver.apply(want)
        assert states(await driver.observe()) == {"b1": "established", "v1": "established"}
    b1 = neutron.network("isthmus-r1-b1")
    assert (b1["provider:network_type"], b1["provider:physical_network"], b1["provider:segmentation_id"]) == (
        "vlan", "physnet1", 150)
    assert neutron.network("isthmus-r1-v1")["provider:network_type"] == "vxlan"

    # A VLAN's id, shared and router:external change in place.
    opts = noauth(neutron, **{**vlan, "bgp.segmentation_id": "151", "shared": "true", "external": "true"})
    async with opened("r1", tmp_path, opts) as driver:
        await driver.apply(want)
        assert states(await driver.observe()) == {"b1": "established", "v1": "established"}
        now = neutron.network("isthmus-r1-b1")
        assert now["id"] == b1["id"] and now["provider:segmentation_id"] == 151
        assert now["shared"] and now["router:external"]

        # Neutron cannot change a tunnel id: a new VNI is a new network, the old one goes.
        v1 = neutron.network("isthmus-r1-v1")
        await driver.apply({**want, "v1": peering("v1", vni=5011)})
        assert states(await driver.observe()) == {"b1": "established", "v1": "established"}
    replaced = neutron.network("isthmus-r1-v1")
    assert replaced["id"] != v1["id"] and replaced["provider:segmentation_id"] == 5011


async def test_flat_network_for_bgp_peerings(neutron: NeutronServer, tmp_path: Path) -> None:
    opts = noauth(neutron, **{"bgp.network_type": "flat", "bgp.physical_network": "transit"})
    async with opened("r1", tmp_path, opts) as driver:
        await driver.apply({"b1": peering("b1")})
        assert states(await driver.observe()) == {"b1": "established"}
    net = neutron.network("isthmus-r1-b1")
    assert (net["provider:network_type"], net["provider:physical_network"]) == ("flat", "transit")


async def test_cloud_and_region_from_clouds_yaml(neutron: NeutronServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  lab:\n    auth_type: none\n    region_name: RegionOne\n"
                      f"    network_endpoint_override: {neutron.endpoint}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    opts = {"cloud": "lab", "region": "RegionOne", "project_id": PROJECT}
    async with opened("r1", tmp_path, opts) as driver:
        await driver.apply({"c1": peering("c1", vni=5012)})
        assert states(await driver.observe()) == {"c1": "established"}
    assert neutron.network("isthmus-r1-c1")["project_id"] == PROJECT


async def test_unreachable_neutron_is_a_retryable_driver_error(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    opts = {"auth": "none", "endpoint": closed, "project_id": PROJECT}
    async with opened("r1", tmp_path, opts) as driver:
        with pytest.raises(DriverError, match=f"Neutron at {closed} is unreachable") as info:
            await driver.apply({"c1": peering("c1", vni=5013)})
        assert not info.value.terminal
        with pytest.raises(DriverError, match="unreachable"):
            await driver.observe()


async def test_through_the_reconciler_after_the_dataplane_driver(neutron: NeutronServer, tmp_path: Path) -> None:
    ctx = DriverContext("r1", tmp_path / "d")
    async with opened("r1", tmp_path / "n", noauth(neutron)) as companion:
        rec = Reconciler("r1", [FakeDriver(ctx), companion], Overrides(tmp_path / "o.json", "r1"),
                         Journal(tmp_path / "j.jsonl"), interval=7)
        neutron.create_network("someone-elses", **{"provider:network_type": "vxlan",
                                                   "provider:segmentation_id": 5200})
        rec.set_desired(DesiredState("r1", 4, {"c1": peering("c1", vni=5014), "c2": peering("c2", vni=5200)}))
        assert await rec.reconcile_once() == 7
        assert neutron.network("isthmus-r1-c1")["provider:segmentation_id"] == 5014
        ok, refused = rec.observed["c1"], rec.observed["c2"]
        assert (ok.state, ok.driver) == (m.PeeringState.ESTABLISHED, "fake")
        assert (refused.state, refused.driver) == (m.PeeringState.ERROR, "fake+neutron")
        assert refused.error.startswith("neutron: isthmus-r1-c2: Unable to create the network.")
        assert rec.applied_revision == 4

        rec.set_desired(DesiredState("r1", 5, {}))
        await rec.reconcile_once()
        assert neutron.networks(name="isthmus-r1-c1") == [] and rec.observed == {}
